"""``coinfluence lds``: the linear datamodeling score of the predicted ΔJ against real GRPO steps."""

from __future__ import annotations

from typing import Optional

import typer

from .analyze import FROM_GRPO


def lds(
    ckpt: str = typer.Option(..., "--ckpt", help="Checkpoint to start from (RUN/sft, or RUN/grpo/step-N to resume its optimizer)."),
    run: Optional[str] = typer.Option(None, "--run", help="Run directory: train on RUN/data/rl_train, targets from RUN/data/val_id."),
    train: Optional[str] = typer.Option(None, "--train", help="Training queries (JSONL/Parquet with prompt, answer)."),
    targets: Optional[str] = typer.Option(None, "--targets", help="Target queries (JSONL/Parquet with prompt, answer)."),
    pool: int = typer.Option(16, "--pool", help="Training queries in the fixed pool the subsets are drawn from."),
    targets_n: int = typer.Option(8, "--targets-n", help="Target queries (seeded choice)."),
    subsets: int = typer.Option(16, "--subsets", help="Random subsets M, each trained separately."),
    fraction: float = typer.Option(0.5, "--fraction", help="Share of the pool in each subset."),
    steps: int = typer.Option(1, "--steps", help="GRPO steps k on each subset (every subset query in every step)."),
    num_generations: Optional[int] = typer.Option(None, "--num-generations", help=f"Rollouts per query G {FROM_GRPO}."),
    max_completion_length: Optional[int] = typer.Option(None, "--max-completion-length", help=f"Most new tokens per rollout {FROM_GRPO}."),
    target_objective: str = typer.Option("surrogate", "--target-objective", help="surrogate | reward (see analyze)."),
    bootstrap: int = typer.Option(2000, "--bootstrap", help="Bootstrap resamples of the subsets for the interval."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pool, the subsets, the rollouts and the training steps."),
    out: Optional[str] = typer.Option(None, "--out", help="Output dir (default CKPT/lds, or RUN/lds/<ckpt-name>)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
) -> None:
    """Train k real GRPO steps on each of M random subsets of a pool and rank-correlate the change of the
    target objective with the subsets' summed predicted ΔJ (plain and Adam-aware)."""
    from coinfluence.influence.lds import LDSOptions, run_lds

    opts = LDSOptions(ckpt=ckpt, run=run, train=train, targets=targets, pool=pool, targets_n=targets_n, subsets=subsets,
                      fraction=fraction, steps=steps, num_generations=num_generations,
                      max_completion_length=max_completion_length, target_objective=target_objective, bootstrap=bootstrap,
                      seed=seed, out=out)
    result = run_lds(opts, progress=not quiet)
    for kind, v in result["lds"].items():
        lo, hi = v["interval_95"]
        typer.echo(f"LDS ({kind}): {v['spearman']:.3f} [{lo:.3f}, {hi:.3f}]")
    typer.echo(f"wrote {result['out']}")
