"""``coinfluence analyze``: co-influence analysis of a checkpoint (or of a run's trajectory).

Every path and option is checked (``UserError``: one line, exit 2) before the model runs;
the output directory appears only when complete.
"""

from typing import Optional

import typer

from .options import check_finite
from coinfluence.tasks.registry import DEFAULT_TASK, tasks_help
from coinfluence.tasks.rewards import REWARD_HELP

# Where analyze takes a GRPO knob it is not given (influence.analyze.grpo_settings).
FROM_GRPO = "(default: the checkpoint's grpo_config.json, else its run's recorded GRPO config, else GRPO's own default)"


def analyze(
    ckpt: Optional[str] = typer.Option(None, "--ckpt", help="Checkpoint dir (any AutoModelForCausalLM/AutoTokenizer dir)."),
    run: Optional[str] = typer.Option(None, "--run", "--run-dir", help="Run dir (--run-dir under torchrun, which takes --run as its own --run-path): train queries from its data's rl_train.jsonl, targets from val_id.jsonl (the data recorded in RUN/config.json, else RUN/data)."),
    train: Optional[str] = typer.Option(None, "--train", help="Training queries (prompt, answer): a .jsonl/.parquet file or a saved Hugging Face Dataset dir; with --targets."),
    targets: Optional[str] = typer.Option(None, "--targets", help="Target queries (prompt, answer), as --train; with --train."),
    queries: int = typer.Option(64, "--queries", help="Training queries to analyse (seeded choice)."),
    targets_n: int = typer.Option(32, "--targets-n", help="Target queries (seeded choice)."),
    num_generations: Optional[int] = typer.Option(None, "--num-generations", help=f"Rollouts per query G {FROM_GRPO}."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help=f"Sampling temperature {FROM_GRPO}."),
    max_completion_length: Optional[int] = typer.Option(None, "--max-completion-length", help=f"Most new tokens per rollout {FROM_GRPO}."),
    normalization: Optional[str] = typer.Option(None, "--normalization", help="seq-mean | token-sum | constant (default: the ℓ of the GRPO loss_type, taken as the other knobs)."),
    scale_rewards: Optional[str] = typer.Option(None, "--scale-rewards", help=f"group | none {FROM_GRPO}."),
    std: Optional[str] = typer.Option(None, "--std", help=f"population | unbiased {FROM_GRPO}."),
    reward: Optional[str] = typer.Option(None, "--reward", help=f"Reward of each rollout, {REWARD_HELP} (default: the GRPO config's, else the task's for data it reads and exact for other data)."),
    task: Optional[str] = typer.Option(None, "--task", help=f"Task of the data: {tasks_help()} (default: the one the data was generated for, else {DEFAULT_TASK})."),
    params: Optional[str] = typer.Option(None, "--params", help="Regex on parameter names (re.search); default all."),
    project_dim: Optional[int] = typer.Option(None, "--project-dim", help="Sketch per-rollout features to D dims (seeded Gaussian); default none."),
    kron_rank: Optional[int] = typer.Option(None, "--kron-rank", help="Per-layer Kronecker sketch: each weight gradient to K×K (layerwise engine; for large models)."),
    engine: str = typer.Option("auto", "--engine", help="Per-rollout gradients: auto (layerwise where the model allows, else vmap) | layerwise | vmap | loop."),
    precondition: str = typer.Option("none", "--precondition", help="none | adam: delta_J under one AdamW step from the checkpoint's "
                                     "saved optimizer state (a fresh one where none is saved, as GRPO starts from SFT); the kernel "
                                     "is scaled by the saved second moment."),
    target_objective: str = typer.Option("surrogate", "--target-objective", help="surrogate (the targets' advantage-weighted "
                                         "GRPO surrogate) | reward (their expected reward E[r])."),
    kernel: bool = typer.Option(True, "--kernel/--no-kernel", help="Per-rollout features for K_plus/K_minus (--no-kernel: ΔJ only, faster)."),
    save_kernel: bool = typer.Option(False, "--save-kernel", help="Write kernel.npy (rows target rollouts, cols train rollouts)."),
    features_on_device: bool = typer.Option(False, "--features-on-device", help="Keep the per-rollout features on the model's "
                                            "device (a GPU) until K_plus/K_minus are reduced there, instead of collecting them in "
                                            "host memory: faster for large runs, needs target rollouts × feature dim floats of device memory."),
    validate: int = typer.Option(0, "--validate", help="Check the first order on K informative train queries: a small SGD step, and "
                                 "the trainer's own step (its optimizer, lr, clipping, micro-batching) against lr·ΔJ."),
    validate_step: float = typer.Option(1e-4, "--validate-step", help="Relative parameter change of the validation's small SGD step."),
    validate_samples: int = typer.Option(0, "--validate-samples", help="With --validate: also measure the change of E[r] after the "
                                         "trainer's real step by sampling this many fresh rollouts per target query (0: skip)."),
    chunk_size: int = typer.Option(16, "--chunk-size", help="Rollouts per vmap chunk (memory: chunk × parameters) and per forward of the first-order check (memory: chunk × tokens × vocabulary)."),
    all_checkpoints: bool = typer.Option(False, "--all-checkpoints", help="With --run: RUN/sft and every RUN/grpo/step-*, plus timeseries.csv."),
    out: Optional[str] = typer.Option(None, "--out", help="Output dir (default CKPT/analysis, or RUN/analysis/<ckpt-name>); refused when it is not empty, unless --overwrite."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty --out, replacing the analysis files of the same name (other files stay)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the query choice, the rollouts and the projection."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Rollout accuracy, co-influence and per-step influence ΔJ of each training query."""
    check_finite(locals())
    from coinfluence.distributed import is_main
    from coinfluence.influence.analyze import AnalyzeOptions, run_analysis

    opts = AnalyzeOptions(
        ckpt=ckpt, run=run, train=train, targets=targets, queries=queries, targets_n=targets_n,
        num_generations=num_generations, temperature=temperature, max_completion_length=max_completion_length,
        normalization=normalization, scale_rewards=scale_rewards, std=std, reward=reward, params=params, project_dim=project_dim,
        kron_rank=kron_rank, engine=engine, precondition=precondition, target_objective=target_objective, kernel=kernel, save_kernel=save_kernel, features_on_device=features_on_device, validate=validate, validate_step=validate_step, validate_samples=validate_samples,
        chunk_size=chunk_size, all_checkpoints=all_checkpoints, out=out, seed=seed, overwrite=overwrite, task=task,
    )
    result = run_analysis(opts, progress=not quiet)
    if is_main():  # under torchrun rank 0 reports
        print_summaries(result)


def print_summaries(result: dict) -> None:
    """One line per analysed checkpoint, then where the files are."""
    from coinfluence.plots.html_report import report_command

    for s in result.get("checkpoints", [result]):
        v = s.get("validation") or {}
        line = (f"{s['checkpoint']}: frac_informative={s['frac_informative']:.2f} mean_alpha={s['mean_alpha']:.2f} "
                f"mean_delta_J={s['mean_delta_J']:.3g}")
        if v:
            line += f" first-order pearson(dlogp)={v['pearson_dlogp']:.3f}"
        typer.echo(line)
    typer.echo(f"wrote {result['out']}")
    typer.echo(f"report: {report_command(result['out'])}")
