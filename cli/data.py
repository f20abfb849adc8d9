"""``coinfluence data`` and ``coinfluence score``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from coinfluence.errors import UserError
from coinfluence.tasks.registry import DEFAULT_TASK, presets_help, tasks_help

from .options import check_finite


def _range(text: Optional[str], name: str) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    try:
        lo, _, hi = text.partition("-")
        return (int(lo), int(hi or lo))
    except ValueError:
        raise UserError(f"--{name} takes LO-HI (e.g. 2-4), got {text!r}") from None


def data(
    out: Path = typer.Option(..., "--out", help="directory for the split files"),
    task: str = typer.Option(DEFAULT_TASK, "--task", help=f"the task: {tasks_help()}"),
    preset: Optional[str] = typer.Option(None, help=f"task scale: {presets_help()}"),
    behaviours: str = typer.Option("both", help="injected behaviours: none, explore, exploit or both (BRIDGE)"),
    seed: int = typer.Option(0, help="seed of every split"),
    sft_size: Optional[int] = typer.Option(None, help="SFT problems before augmentation [preset default]"),
    rl_size: Optional[int] = typer.Option(None, help="RL training queries [preset default]"),
    eval_size: Optional[int] = typer.Option(None, help="problems in each val/test split [preset default]"),
    p_explore: Optional[float] = typer.Option(None, help="exploration probability per eligible step [0.3]"),
    p_exploit: Optional[float] = typer.Option(None, help="scale on the restating probabilities [1.0]"),
    question_aug: int = typer.Option(1, help="baseline: k random sentence orders of each SFT problem"),
    answer_aug: int = typer.Option(1, help="baseline: k random solution orders of each SFT problem"),
    op_id: Optional[str] = typer.Option(None, help="in-distribution op range LO-HI (units: conversion depth) [preset]"),
    op_ood: Optional[str] = typer.Option(None, help="out-of-distribution op range LO-HI (units: conversion depth) [preset]"),
    redundant: Optional[str] = typer.Option(None, help="redundant quantities per question LO-HI [preset]"),
    const_range: Optional[str] = typer.Option(None, help="range of the constants a question states LO-HI [preset]"),
    answer_not_stated: Optional[bool] = typer.Option(None, "--answer-not-stated/--answer-may-be-stated",
                                                     help="never ask for a number the question states [preset]"),
    solution_format: Optional[str] = typer.Option(None, help="solved steps with variable letters (variables) or quantity names (names) [preset]"),
    solution_order: Optional[str] = typer.Option(None, help="steps in a random topological order (random) or the question's order (question) [preset]"),
    possessive_tokens: Optional[bool] = typer.Option(None, "--possessive-tokens/--split-possessives",
                                                     help="tokenizers trained on this data keep \"Hen's\" as one token [preset]"),
    fixed_templates: Optional[bool] = typer.Option(None, "--fixed-templates/--varied-templates",
                                                   help="one sentence template per kind, or a random one [preset]"),
    format: str = typer.Option("jsonl", help="jsonl, parquet, or hf: a Hugging Face DatasetDict (save_to_disk; needs the hf extra)"),
    stats: bool = typer.Option(False, "--stats", help="print op, length and injection statistics"),
    overwrite: bool = typer.Option(False, "--overwrite", help="write into a non-empty --out, replacing the split files (other files stay)"),
):
    """Generate a task's splits (sft, rl_train, val/test in and out of distribution)."""
    check_finite(locals())
    from coinfluence.io import check_output_dir, remove_temporaries
    from coinfluence.tasks.data import DataConfig, dataset_files, dataset_stats, write_dataset

    cfg = DataConfig(
        task=task, preset=preset, behaviours=behaviours, seed=seed, sft_size=sft_size, rl_size=rl_size,
        eval_size=eval_size, p_explore=p_explore, p_exploit=p_exploit, question_aug=question_aug,
        answer_aug=answer_aug, op_id=_range(op_id, "op-id"), op_ood=_range(op_ood, "op-ood"),
        redundant=_range(redundant, "redundant"), const_range=_range(const_range, "const-range"),
        answer_not_stated=answer_not_stated, solution_format=solution_format, fixed_templates=fixed_templates,
        solution_order=solution_order, possessive_tokens=possessive_tokens,
    )
    cfg.validate()
    check_output_dir(out, overwrite=overwrite, writes=dataset_files(format))
    if out.is_dir():  # what a killed run of this command left half-written
        remove_temporaries(out, dataset_files(format))
    splits = write_dataset(out, cfg, fmt=format)
    counts = ", ".join(f"{s} {len(r)}" for s, r in splits.items())
    typer.echo(f"wrote {out}/ ({counts})")
    if stats:
        print_stats(dataset_stats(splits))


def print_stats(stats: dict) -> None:
    header = f"{'split':9} {'rows':>6} {'op':>22} {'q words':>8} {'a words':>8} {'attempts':>8} {'restates':>8} {'expand':>7} {'ans=0':>6}"
    typer.echo(header)
    for split, s in stats.items():
        ops = " ".join(f"{k}:{v}" for k, v in s["op"].items())
        inj = s["injected_per_row"]
        typer.echo(
            f"{split:9} {s['rows']:>6} {ops:>22} {s['prompt_words']:>8} {s['completion_words']:>8} "
            f"{inj.get('attempts', 0):>8} {inj.get('restates', 0):>8} {inj.get('expansions', 0):>7} {s['answer_zero']:>6}"
        )


def score(
    file: Path = typer.Argument(..., help="JSONL (or Parquet) rows with prompt, completion and answer"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    out: Optional[Path] = typer.Option(None, "--out", help="write per-row results (JSONL)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out file"),
    task: str = typer.Option(DEFAULT_TASK, "--task", help=f"whose step checker reads the rows: {tasks_help()}"),
):
    """Score completions: answer accuracy and step-level verdicts."""
    from coinfluence.io import check_output_file, write_jsonl
    from coinfluence.tasks.registry import get_task
    from coinfluence.tasks.score import load_rows, score_rows

    checker = get_task(task)
    if out is not None:
        check_output_file(out, overwrite=overwrite, inputs=[file])
    rows = load_rows(file)
    results, summary = score_rows(rows, checker)
    if out is not None:
        write_jsonl(out, results)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"accuracy {summary['accuracy']:.4f} over {summary['n']} rows")
    typer.echo(f"steps all correct {summary['step_accuracy']:.4f}")
    steps = sorted(int(k.split("/")[1]) for k in summary if k.startswith("steps/") and k.endswith("/num_rows"))
    if steps:
        typer.echo("steps all correct by the steps a solution needs: " + ", ".join(
            f"{k}: {summary[f'steps/{k}/step_accuracy']:.4f} of {summary[f'steps/{k}/num_rows']}" for k in steps))
    for verdict, count in summary["verdicts"].items():
        typer.echo(f"  {verdict:22} {count}")
