"""Reading what runs and analyses left behind, and naming the variant of a run.

Nothing here draws. A *run dir* holds ``config.json``, ``metrics.jsonl`` and ``eval.json``;
an *analysis dir* holds ``summary.json`` and ``queries.parquet``; ``analyze --all-checkpoints``
writes one analysis dir per checkpoint plus ``timeseries.csv`` beside them (by default in
``RUN/analysis/``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from coinfluence.io import read_jsonl
from coinfluence.run import GRPO_FINAL, SFT, SUMMARY_FILE, TIMESERIES_FILE, Run, analysis_dir_name
from coinfluence.plots.style import VARIANT_NAMES, order_variants


def read_json_or_empty(path: Path) -> dict:
    """A JSON file's object ({} when it is absent or unreadable: results are read, never required)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def is_run_dir(path) -> bool:
    """A dir with metrics.jsonl or eval.json, or with a config.json that is a run's (an HF
    checkpoint's config.json names a ``model_type``; a checkpoint is not a run)."""
    path = Path(path)
    if not path.is_dir():
        return False
    run = Run(path)
    if run.metrics.is_file() or run.eval_json.is_file():
        return True
    config = read_json_or_empty(run.config_path) if run.config_path.is_file() else None
    return bool(config) and "model_type" not in config


def is_analysis_dir(path) -> bool:
    return (Path(path) / SUMMARY_FILE).is_file()


def is_timeseries_dir(path) -> bool:
    return (Path(path) / TIMESERIES_FILE).is_file()


def read_config(run_dir) -> dict:
    """RUN/config.json ({} when absent or unreadable)."""
    return read_json_or_empty(Run(run_dir).config_path)


def data_config(run_dir) -> dict:
    """The data options a run trained on: ``train.data_config`` of RUN/config.json (data generated
    by ``train``), else the ``data`` entry of the data dir's data_config.json (``train --data DIR``
    records no data options itself)."""
    from coinfluence.tasks.data import DATA_CONFIG

    train = read_config(run_dir).get("train") or {}
    if train.get("data_config"):
        return train["data_config"]
    candidates = [Run(run_dir).data_config]
    if train.get("data"):
        candidates.append(Path(train["data"]) / DATA_CONFIG)
    for path in candidates:
        saved = read_json_or_empty(path)
        if saved.get("data"):
            return saved["data"]
    return {}


def variant_label(cfg: dict) -> str:
    """Display name of a data configuration (``style.VARIANT_NAMES``: "vanilla", "BRIDGE", ...), with
    any non-default injection probability appended."""
    if not cfg:
        return "unknown"
    behaviours = cfg.get("behaviours", "both")
    label = VARIANT_NAMES.get(behaviours, str(behaviours))
    if behaviours == "none" and (cfg.get("question_aug") or 1) > 1:
        label = VARIANT_NAMES["question_aug"]
    elif behaviours == "none" and (cfg.get("answer_aug") or 1) > 1:
        label = VARIANT_NAMES["answer_aug"]
    elif (cfg.get("question_aug") or 1) > 1 or (cfg.get("answer_aug") or 1) > 1:
        label += " + aug."
    extras = [f"{k}={cfg[k]:g}" for k in ("p_explore", "p_exploit") if cfg.get(k) is not None]
    return f"{label} ({', '.join(extras)})" if extras else label


def run_label(run_dir) -> str:
    """The variant of a run (from its data options); the directory name when none are recorded."""
    cfg = data_config(run_dir)
    return variant_label(cfg) if cfg else Path(run_dir).resolve().name


def run_seed(run_dir) -> int | None:
    train = read_config(run_dir).get("train") or {}
    seed = train.get("seed", data_config(run_dir).get("seed"))
    return int(seed) if seed is not None else None


def read_metrics(run_dir, stage: str = "grpo") -> pd.DataFrame:
    """Rows of RUN/metrics.jsonl with ``"stage": stage``, sorted by step (empty frame if none)."""
    path = Run(run_dir).metrics
    rows = []
    if path.is_file():
        rows = [r for r in read_jsonl(path, torn_tail_ok=True) if isinstance(r, dict) and r.get("stage") == stage]
    df = pd.DataFrame(rows)
    return df.sort_values("step", kind="stable").reset_index(drop=True) if len(df) else df


def read_eval(run_dir) -> pd.DataFrame:
    """RUN/eval.json (``{"checkpoints": {ckpt: {split: {"accuracy", "num_rows", ...}}}}``) as rows
    ``checkpoint, split, accuracy, num_rows, n, temperature``."""
    saved = read_json_or_empty(Run(run_dir).eval_json).get("checkpoints", {})
    rows = [{"checkpoint": ckpt, "split": split, **res} for ckpt, splits in saved.items() for split, res in splits.items()]
    df = pd.DataFrame(rows)
    cols = ["checkpoint", "split", "accuracy", "num_rows", "n", "temperature"]
    return df.reindex(columns=list(dict.fromkeys(cols + list(df.columns))))  # the core columns even when empty


def rl_gain(run_dir, sft: str = SFT, rft: str = GRPO_FINAL, metric: str = "accuracy") -> dict[str, dict[str, float]]:
    """Greedy ``metric`` (``accuracy``, or ``step_accuracy``: answer and every step right) per split
    of the SFT and the RL-finetuned checkpoint (eval.json), and their difference:
    ``{split: {"sft", "rft", "gain"}}`` for the splits both were scored on."""
    df = read_eval(run_dir)
    if not len(df) or metric not in df:
        return {}
    greedy = df[df["n"].fillna(1).eq(1) & df["temperature"].fillna(0).eq(0)]
    acc = greedy.pivot_table(index="split", columns="checkpoint", values=metric, aggfunc="first")
    if sft not in acc or rft not in acc:
        return {}
    return {s: {"sft": float(acc.at[s, sft]), "rft": float(acc.at[s, rft]), "gain": float(acc.at[s, rft] - acc.at[s, sft])}
            for s in acc.index if pd.notna(acc.at[s, sft]) and pd.notna(acc.at[s, rft])}


def read_queries(analysis_dir, role: str = "train") -> pd.DataFrame:
    """Rows of ANALYSIS/queries.parquet with the given ``role`` (train or target)."""
    df = pd.read_parquet(Path(analysis_dir) / "queries.parquet")
    return df[df["role"] == role].reset_index(drop=True)


def read_summary(analysis_dir) -> dict:
    return read_json_or_empty(Path(analysis_dir) / SUMMARY_FILE)


def run_of_analysis(analysis_dir) -> Path | None:
    """The run an analysis belongs to: the nearest parent (two levels up at most) that is a run
    dir, else the run of the training file its summary names (RUN/data/rl_train.jsonl)."""
    path = Path(analysis_dir)
    for parent in (path.parent, path.parent.parent):
        if is_run_dir(parent):
            return parent
    subs = [path] + sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
    for sub in subs:
        train_file = read_summary(sub).get("train_file")
        if train_file and is_run_dir(Path(train_file).parent.parent):
            return Path(train_file).parent.parent
    return None


def analysis_label(analysis_dir) -> str:
    run = run_of_analysis(analysis_dir)
    return run_label(run) if run is not None else Path(analysis_dir).resolve().name


def run_analyses(run_dir) -> dict[str, Path]:
    """Analysis dirs of a run by checkpoint name: RUN/analysis/<name>/summary.json (and
    RUN/analysis itself when it is one analysis)."""
    root = Run(run_dir).analysis
    found = {p.parent.name: p.parent for p in sorted(root.glob(f"*/{SUMMARY_FILE}"))}
    if is_analysis_dir(root):
        found.setdefault(Path(read_summary(root).get("checkpoint", root.name)).name, root)
    return found


def sft_analysis(run_dir) -> Path | None:
    """The analysis of the run's SFT checkpoint (RUN/analysis/sft), if there is one."""
    return run_analyses(run_dir).get(analysis_dir_name(SFT))


def read_timeseries(path) -> pd.DataFrame:
    """``timeseries.csv`` of ``analyze --all-checkpoints`` (columns checkpoint, step,
    mean_co_influence, mean_delta_J, frac_informative, mean_alpha), given the file, its dir,
    or a run dir (RUN/analysis/timeseries.csv)."""
    path = Path(path)
    for candidate in (path, path / TIMESERIES_FILE, Run(path).timeseries):
        if candidate.is_file():
            return pd.read_csv(candidate).sort_values("step", kind="stable").reset_index(drop=True)
    raise FileNotFoundError(f"no timeseries.csv in {path}")


def group_runs(run_dirs) -> dict[str, list[Path]]:
    """Run dirs grouped by variant label (known variants first, see ``style.order_variants``),
    each group sorted by seed."""
    groups: dict[str, list[Path]] = {}
    for run in run_dirs:
        groups.setdefault(run_label(run), []).append(Path(run))
    return {v: sorted(groups[v], key=lambda r: (run_seed(r) is None, run_seed(r) or 0, str(r))) for v in order_variants(groups)}


def group_analyses(analysis_dirs) -> dict[str, list[Path]]:
    """Analysis dirs grouped by the variant of their run (known variants first)."""
    groups: dict[str, list[Path]] = {}
    for a in analysis_dirs:
        groups.setdefault(analysis_label(a), []).append(Path(a))
    return {v: groups[v] for v in order_variants(groups)}
