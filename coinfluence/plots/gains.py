"""What RL adds: Table 1, the behaviour ablation (Fig. 4) and the injection-probability sweep.

All read RUN/eval.json, written by ``training.evaluate.evaluate_checkpoint``:
``{"checkpoints": {"sft": {"test_id": {"accuracy": ..., "num_rows": ...}, ...}, "grpo/final": {...}}}``
— the greedy accuracy of the SFT model and of the RL-finetuned one (RFT) per test split. The
RL gain is RFT − SFT accuracy of the same run; variants and seeds come from RUN/config.json
(see ``runs.run_label``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from coinfluence.plots.runs import data_config, group_runs, read_eval, read_metrics, rl_gain, run_label, run_seed
from coinfluence.plots.style import (
    VARIANT_NAMES, figure_legend, new_figure, order_variants, save_figure, theme, two_lines, unique_legend_entries,
    variant_colors,
)
from coinfluence.run import GRPO_FINAL, SFT, grpo_checkpoint_step, pass_key

SPLITS = ("test_id", "test_ood")
SPLIT_TITLES = {"test_id": "in-distribution (test_id)", "test_ood": "out-of-distribution (test_ood)",
                "val_id": "in-distribution (val_id)", "val_ood": "out-of-distribution (val_ood)"}
SPLIT_SHORT = {"test_id": "ID", "test_ood": "OOD", "val_id": "val ID", "val_ood": "val OOD"}
# The behaviour ablation: the four settings with default probabilities and no augmentation.
ABLATION = tuple((VARIANT_NAMES[b], b) for b in ("none", "explore", "exploit", "both"))
# Which behaviour settings a probability acts on.
SWEEP_BEHAVIOURS = {"p_explore": ("explore", "both"), "p_exploit": ("exploit", "both")}
SWEEP_AXIS = {"p_explore": "exploration probability p_explore", "p_exploit": "restating-probability scale p_exploit"}


METRIC_NAMES = {"accuracy": "answer accuracy", "step_accuracy": "step-verified accuracy"}


def primary_metric(run_dirs) -> str:
    """``step_accuracy`` when every evaluated run has it (runs since it exists), else ``accuracy``."""
    evaluated = [r for r in run_dirs if rl_gain(r)]
    return "step_accuracy" if evaluated and all(rl_gain(r, metric="step_accuracy") for r in evaluated) else "accuracy"


def rl_gains(run_dirs, splits=SPLITS, metric: str = "accuracy") -> pd.DataFrame:
    """One row per (run, split): variant, seed, run, split, sft, rft, gain (greedy ``metric`` as
    fractions). Runs without both an SFT and a grpo/final evaluation are left out."""
    rows = []
    for label, runs in group_runs(run_dirs).items():
        for run in runs:
            for split, acc in rl_gain(run, metric=metric).items():
                if split in splits:
                    rows.append({"variant": label, "seed": run_seed(run), "run": str(run), "split": split, **acc})
    return pd.DataFrame(rows, columns=["variant", "seed", "run", "split", "sft", "rft", "gain"])


def _fmt(mean: float, sd: float, n: int) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{100 * mean:.1f} ± {100 * sd:.1f}" if n > 1 and np.isfinite(sd) else f"{100 * mean:.1f}"


def table1(run_dirs, out_path=None, splits=SPLITS, metric: str | None = None) -> pd.DataFrame:
    """Table 1: per variant, mean (and s.d. over seeds) greedy ``metric`` (default
    :func:`primary_metric`) of SFT and RFT on each split and the RL gain. Columns
    ``variant, seeds, {sft,rft,gain}_{split}_{mean,sd}`` (fractions). With ``out_path``, writes it
    as ``.csv`` and as a ``.md`` table in percent."""
    metric = metric or primary_metric(run_dirs)
    gains = rl_gains(run_dirs, splits, metric)
    rows = []
    for label in order_variants(gains["variant"]):
        g = gains[gains["variant"] == label]
        row = {"variant": label, "seeds": int(g["run"].nunique())}
        for split in splits:
            s = g[g["split"] == split]
            for what in ("sft", "rft", "gain"):
                row[f"{what}_{split}_mean"] = s[what].mean() if len(s) else np.nan
                row[f"{what}_{split}_sd"] = s[what].std(ddof=1) if len(s) > 1 else np.nan
        rows.append(row)
    cols = ["variant", "seeds"] + [f"{w}_{s}_{m}" for s in splits for w in ("sft", "rft", "gain") for m in ("mean", "sd")]
    table = pd.DataFrame(rows, columns=cols)
    if out_path is not None:
        from coinfluence.io import atomic_path, write_text

        base = Path(out_path)
        with atomic_path(base.with_suffix(".csv")) as tmp:
            table.to_csv(tmp, index=False, float_format="%.4f")
        write_text(base.with_suffix(".md"), table1_markdown(table, splits, metric))
    return table


def table1_markdown(table: pd.DataFrame, splits=SPLITS, metric: str = "accuracy") -> str:
    """Table 1 as Markdown: ``metric`` in percent, ``mean ± s.d.`` over seeds where there are several."""
    head = ["variant", "seeds"] + [f"{SPLIT_SHORT.get(s, s)} {w}" for s in splits for w in ("SFT", "RFT", "gain")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (3 * len(splits))]
    for _, r in table.iterrows():
        cells = [str(r["variant"]), str(r["seeds"])]
        for s in splits:
            for w in ("sft", "rft", "gain"):
                text = _fmt(r[f"{w}_{s}_mean"], r[f"{w}_{s}_sd"], r["seeds"])
                cells.append(("+" if w == "gain" and np.isfinite(r[f"{w}_{s}_mean"]) and r[f"{w}_{s}_mean"] > 0 else "") + text)
        lines.append("| " + " | ".join(cells) + " |")
    what = {"accuracy": "accuracy", "step_accuracy": "step-verified accuracy (answer and every step right)"}[metric]
    return "\n".join(lines) + f"\n\nGreedy {what} (%) on the test splits; RFT = after GRPO (grpo/final); gain = RFT − SFT in points; ± is 1 s.d. over seeds.\n"


def _gain_bars(ax, gains: pd.DataFrame, labels: list[str], colors: dict, split: str) -> None:
    for x, label in enumerate(labels):
        g = 100 * gains.loc[(gains["variant"] == label) & (gains["split"] == split), "gain"]
        sd = g.std(ddof=1) if len(g) > 1 else None
        ax.bar(x, g.mean() if len(g) else np.nan, yerr=sd, width=0.6, capsize=3, color=colors[label])
        if len(g) > 1:
            ax.plot([x] * len(g), g, "o", ms=3, color="black", alpha=0.7)
    ax.axhline(0, color="black", lw=0.5)


def rl_gain_ablation(run_dirs, out_path=None, splits=SPLITS, metric: str | None = None) -> Figure:
    """Fig. 4: RL gain (points of greedy ``metric``, default :func:`primary_metric`) of the behaviour
    settings none / explore / exploit / both (default probabilities, no augmentation), one panel
    per split: bar = mean over seeds, error bar ±1 s.d., dots = seeds. Settings without runs are
    left out."""
    metric = metric or primary_metric(run_dirs)
    gains = rl_gains(run_dirs, splits, metric)
    present = [(label, b) for label, b in ABLATION if (gains["variant"] == label).any()]
    labels = [label for label, _ in present]
    colors = variant_colors(labels)
    with theme():
        fig, axes = new_figure(len(splits), panel=(3.4, 2.9), sharey=True)
        for ax, split in zip(axes[0], splits):
            _gain_bars(ax, gains, labels, colors, split)
            ax.set_xticks(range(len(present)), [two_lines(label) for label, _ in present])
            ax.set_xlabel("SFT data")
            ax.set_title(SPLIT_TITLES.get(split, split))
        axes[0, 0].set_ylabel(f"RL gain in {METRIC_NAMES[metric]}\n(RFT − SFT, points)")
        if out_path is not None:
            save_figure(fig, out_path)
    return fig


def accuracy_through_rl(run_dirs, split: str = "test_id", metric: str = "step_accuracy") -> pd.DataFrame:
    """One row per evaluation of ``split`` in each run's eval.json: variant, seed, run, sampling
    (``greedy``; for N samples at T > 0 ``mean@N`` and ``pass@N``, a query counting when any of
    its samples meets ``metric``), the GRPO step of the checkpoint (0 for SFT, N for
    grpo/step-N, :func:`final_step` for grpo/final) and the ``metric`` value."""

    rows = []
    for label, runs in group_runs(run_dirs).items():
        for run in runs:
            df = read_eval(run)
            if not len(df) or metric not in df:
                continue
            final = final_step(run)
            for r in df[df["split"] == split].to_dict("records"):
                base = r["checkpoint"].split("@", 1)[0]  # sampled evaluations are keyed CHECKPOINT@nN-tT
                step = 0 if base == SFT else final if base == GRPO_FINAL else grpo_checkpoint_step(base)
                n = int(r["n"]) if pd.notna(r.get("n")) else 1
                values = {"greedy": r[metric]} if n == 1 else {f"mean@{n}": r[metric], f"pass@{n}": r.get(pass_key(metric, n))}
                for sampling, value in values.items():
                    if step is not None and pd.notna(value):
                        rows.append({"variant": label, "seed": run_seed(run), "run": str(run),
                                     "sampling": sampling, "step": int(step), "value": float(value)})
    return pd.DataFrame(rows, columns=["variant", "seed", "run", "sampling", "step", "value"])


def final_step(run) -> int | None:
    """The GRPO step of a run's grpo/final: its configured ``max_steps``, else (configs that do
    not record it) the last GRPO step it logged."""
    from coinfluence.plots.runs import read_config

    steps = read_config(run).get("grpo", {}).get("max_steps")
    if steps is None:
        logged = read_metrics(run, "grpo")
        steps = int(logged["step"].max()) if len(logged) else None
    return steps


def rl_start_end(run_dirs, out_path=None, split: str = "test_id", metric: str | None = None) -> Figure:
    """Where RL starts and ends, per unit: ``metric`` (default :func:`primary_metric`) of ``split``
    against the GRPO step of each tested checkpoint, a thin line per seed and a thick one for the
    mean over a variant's seeds (at the steps every seed was tested), one panel per sampling
    (greedy, mean@N, pass@N). A gain alone hides where a variant started; this shows both, and
    pass@N beside mean@N shows whether RL widens what N samples solve or only sharpens them."""
    metric = metric or primary_metric(run_dirs)
    data = accuracy_through_rl(run_dirs, split, metric)
    samplings = sorted(set(data["sampling"]), key=lambda k: (k != "greedy", k.startswith("pass"), k))
    labels = order_variants(data["variant"])
    colors = variant_colors(labels)
    seeds = {label: int(n) for label, n in data.groupby("variant")["run"].nunique().items()}
    with theme():
        fig, axes = new_figure(len(samplings), panel=(3.4, 2.9), sharey=True)
        for ax, sampling in zip(axes[0], samplings):
            d = data[data["sampling"] == sampling]
            for label in labels:
                v = d[d["variant"] == label]
                for _, unit in v.groupby("run"):
                    unit = unit.sort_values("step")
                    ax.plot(unit["step"], 100 * unit["value"], color=colors[label], lw=0.8, alpha=0.45, marker="o", ms=2)
                per_step = v.groupby("step")["value"]
                full = per_step.count() == v["run"].nunique()
                means = 100 * per_step.mean()[full]
                ax.plot(means.index, means, color=colors[label], lw=2.2, marker="o", ms=4,
                        label=f"{label} ({seeds[label]} seed{'s' * (seeds[label] > 1)})")
            ax.set_xlabel("GRPO step (0 = SFT model)")
            ax.set_title(f"{sampling}, {SPLIT_TITLES.get(split, split)}")
        axes[0, 0].set_ylabel(f"{METRIC_NAMES[metric]} (%)")
        figure_legend(fig, *unique_legend_entries(axes.flat))
        if out_path is not None:
            save_figure(fig, out_path)
    return fig


def by_difficulty(run_dirs, split: str = "test_id", metric: str = "step_accuracy") -> pd.DataFrame:
    """Greedy ``metric`` of ``split`` by the steps a solution needs (eval.json's ``steps/K/...``),
    at SFT and after RL: one row per run and step count (variant, seed, run, steps, rows, sft,
    rft, gain; fractions). Runs tested before eval wrote these numbers are left out."""
    rows = []
    for label, runs in group_runs(run_dirs).items():
        for run in runs:
            df = read_eval(run)
            greedy = df[(df["split"] == split) & df["n"].fillna(1).eq(1) & df["temperature"].fillna(0).eq(0)].set_index("checkpoint")
            if SFT not in greedy.index or GRPO_FINAL not in greedy.index:
                continue
            for column in (c for c in greedy.columns if c.startswith("steps/") and c.endswith(f"/{metric}")):
                steps = int(column.split("/")[1])
                sft, rft = greedy.at[SFT, column], greedy.at[GRPO_FINAL, column]
                if pd.notna(sft) and pd.notna(rft):
                    rows.append({"variant": label, "seed": run_seed(run), "run": str(run), "steps": steps,
                                 "rows": int(greedy.at[SFT, f"steps/{steps}/num_rows"]), "sft": sft, "rft": rft, "gain": rft - sft})
    return pd.DataFrame(rows, columns=["variant", "seed", "run", "steps", "rows", "sft", "rft", "gain"])


def accuracy_by_difficulty(run_dirs, out_path=None, split: str = "test_id", metric: str | None = None) -> Figure:
    """Where RL's gain sits: greedy ``metric`` of ``split`` (default :func:`primary_metric`) against
    the steps a solution needs, at SFT (dashed, hollow) and after RL (solid), and the gain per step
    count; means over each variant's runs, thin lines for single runs in the gain panel."""
    metric = metric or primary_metric(run_dirs)
    data = by_difficulty(run_dirs, split, metric)
    labels = order_variants(data["variant"])
    colors = variant_colors(labels)
    with theme():
        fig, axes = new_figure(2, panel=(3.4, 2.9))
        level, gain = axes[0]
        for label in labels:
            v = data[data["variant"] == label]
            means = 100 * v.groupby("steps")[["sft", "rft", "gain"]].mean()
            n = v["run"].nunique()
            level.plot(means.index, means["sft"], ls="--", marker="o", mfc="white", color=colors[label])
            level.plot(means.index, means["rft"], marker="o", color=colors[label], label=f"{label} ({n} run{'s' * (n > 1)})")
            for _, run in v.groupby("run"):
                gain.plot(run["steps"], 100 * run["gain"], color=colors[label], lw=0.7, alpha=0.4)
            gain.plot(means.index, means["gain"], marker="o", lw=2, color=colors[label])
        gain.axhline(0, color="black", lw=0.8)
        for ax, ylabel in ((level, f"{METRIC_NAMES[metric]} (%)\nSFT dashed, after RL solid"), (gain, "RL gain (points)")):
            ax.set_xlabel("steps a solution needs")
            ax.set_ylabel(ylabel)
            ax.set_xticks(sorted(set(data["steps"])))
        level.set_title(SPLIT_TITLES.get(split, split))
        gain.set_title("RL gain by difficulty")
        figure_legend(fig, *unique_legend_entries([level]))
        if out_path is not None:
            save_figure(fig, out_path)
    return fig


def default_probability(param: str) -> float:
    """The injection probability a run used when its data config left ``param`` unset."""
    from coinfluence.tasks.bridge import BehaviourConfig

    return float(BehaviourConfig.__dataclass_fields__[param].default)


def sweep_points(run_dirs, param: str = "p_explore", splits=SPLITS, metric: str = "accuracy") -> pd.DataFrame:
    """RL gains of the runs whose behaviours use ``param`` (p_explore: explore/both; p_exploit:
    exploit/both), without augmentation and with the other probability at its default, with the
    probability each trained on (the recorded value, else the default) in column ``p`` and the
    behaviour setting in ``behaviours``."""
    if param not in SWEEP_BEHAVIOURS:
        raise ValueError(f"param must be one of {', '.join(SWEEP_BEHAVIOURS)}, got {param!r}")
    other = next(k for k in SWEEP_BEHAVIOURS if k != param)
    gains = rl_gains(run_dirs, splits, metric)
    rows = []
    for run, g in gains.groupby("run", sort=False):
        cfg = data_config(run)
        augmented = (cfg.get("question_aug") or 1) > 1 or (cfg.get("answer_aug") or 1) > 1
        if cfg.get("behaviours") not in SWEEP_BEHAVIOURS[param] or augmented or cfg.get(other) is not None:
            continue
        p = cfg.get(param)
        rows.append(g.assign(p=float(p) if p is not None else default_probability(param), behaviours=cfg["behaviours"]))
    if not rows:
        return pd.DataFrame(columns=[*gains.columns, "p", "behaviours"])
    return pd.concat(rows, ignore_index=True)


def rl_gain_sweep(run_dirs, param: str = "p_explore", out_path=None, splits=SPLITS, metric: str | None = None) -> Figure:
    """RL gain (greedy ``metric``, default :func:`primary_metric`) against the injection probability
    ``param`` (p_explore or p_exploit), one line per behaviour setting it acts on, one panel per
    split: mean over seeds, error bar ±1 s.d."""
    metric = metric or primary_metric(run_dirs)
    points = sweep_points(run_dirs, param, splits, metric)
    names = {b: VARIANT_NAMES[b] for b in SWEEP_BEHAVIOURS[param]}
    colors = variant_colors(names.values())
    with theme():
        fig, axes = new_figure(len(splits), panel=(3.4, 2.9), sharey=True)
        for ax, split in zip(axes[0], splits):
            for behaviours in SWEEP_BEHAVIOURS[param]:
                s = points[(points["behaviours"] == behaviours) & (points["split"] == split)]
                if not len(s):
                    continue
                stats = s.groupby("p")["gain"].agg(["mean", "std", "count"])
                sd = 100 * stats["std"].where(stats["count"] > 1).to_numpy(dtype=float)
                ax.errorbar(stats.index.to_numpy(dtype=float), 100 * stats["mean"].to_numpy(dtype=float), yerr=sd, fmt="o-", ms=4, capsize=3,
                            color=colors[names[behaviours]], label=names[behaviours])
            ax.axhline(0, color="black", lw=0.5)
            ax.set_xlabel(SWEEP_AXIS[param])
            ax.set_title(SPLIT_TITLES.get(split, split))
        axes[0, 0].set_ylabel(f"RL gain in {METRIC_NAMES[metric]}\n(RFT − SFT, points)")
        figure_legend(fig, *unique_legend_entries(axes[0]), title="mean ±1 s.d. over seeds")
        if out_path is not None:
            save_figure(fig, out_path)
    return fig


# ----------------------------------------------------------------------------- injected behaviours


def sampled_behaviours(run_dirs, split: str = "test_id", sft: str = "sft", rft: str = "grpo/final") -> pd.DataFrame:
    """The sampled evaluations (``coinfluence eval --n N --temperature T``, saved in eval.json as
    ``CKPT@nN-tT``) of the SFT and RL-finetuned checkpoints: one row per (run, stage) with the
    variant, seed, whether its SFT data had injected behaviours, stage (``SFT``/``RFT``), n,
    accuracy (mean@N), pass@n, the share of completions using
    injected behaviours, the accuracy of completions with and without them on the same
    queries (``paired_*``), and the mean lines of each kind of behaviour per completion
    (``behaviours/KIND``, the kinds the task counts). Runs without both sampled evaluations are left out."""
    keep = ["accuracy", "behaviours/frac", "paired_queries", "paired_accuracy_with_behaviours",
            "paired_accuracy_without_behaviours"]
    kinds: list[str] = []  # in the task's order, over every run read
    rows = []
    for run in map(Path, run_dirs):
        df = read_eval(run)
        if not len(df) or "behaviours/frac" not in df:
            continue
        df = df[(df["split"] == split) & df["n"].fillna(1).gt(1) & df["behaviours/frac"].notna()]
        found = {}
        for stage, base in (("SFT", sft), ("RFT", rft)):
            match = df[df["checkpoint"].str.startswith(base + "@")]
            if len(match):
                found[stage] = match.iloc[0]
        if len(found) == 2:
            kinds += [k for k in df.columns if k.startswith("behaviours/") and k not in keep and k not in kinds]
            for stage, r in found.items():
                n = int(r["n"])
                injected = data_config(run).get("behaviours", "none") != "none"
                rows.append({"variant": run_label(run), "seed": run_seed(run), "run": str(run), "injected": injected,
                             "stage": stage, "n": n,
                             "pass@n": float(r.get(pass_key("accuracy", n), np.nan)),
                             **{k: float(r[k]) if pd.notna(r.get(k)) else np.nan for k in keep + kinds}})
    return pd.DataFrame(rows, columns=["variant", "seed", "run", "injected", "stage", "n", "pass@n", *keep, *kinds])


def behaviour_kinds_panel(ax, data: pd.DataFrame, users: list[str], bar) -> None:
    """Lines of each kind of behaviour per completion (``behaviours/KIND`` of
    :func:`sampled_behaviours`), a group of bars per kind: each variant in ``users`` at SFT and
    after RL. ``bar(ax, x, values, label, stage, width, scale=)`` draws one bar."""
    kinds = [c for c in data.columns if c.startswith("behaviours/") and c != "behaviours/frac"]
    width = 0.8 / max(2 * len(users), 1)
    for x, kind in enumerate(kinds):
        for i, (label, stage) in enumerate((label, stage) for label in users for stage in ("SFT", "RFT")):
            d = data[(data["variant"] == label) & (data["stage"] == stage)]
            bar(ax, x - 0.4 + (i + 0.5) * width, d[kind], label, stage, width=width * 0.95, scale=1)
    ax.set_xticks(range(len(kinds)), [k.split("/", 1)[1] for k in kinds])
    ax.set_ylabel("lines per completion")
    ax.set_title("each kind of behaviour (solid: SFT, pale: after RL)")


def behaviour_use(run_dirs, out_path=None, split: str = "test_id") -> Figure:
    """What RL does to the injected behaviours, from sampled evaluations (see
    ``sampled_behaviours``). Top: share of sampled completions that use any injected behaviour,
    SFT vs after RL, per variant. Middle, for the variants trained on injected data: accuracy of
    the samples with and without behaviours on the same queries, SFT and after RL. Bottom, for
    the same variants: lines of each kind of behaviour per completion, SFT and after RL. Bars:
    mean over seeds, error bars ±1 s.d."""
    from matplotlib.patches import Patch

    data = sampled_behaviours(run_dirs, split)
    labels = order_variants(data["variant"].unique().tolist())
    users = [v for v in labels if data.loc[data["variant"] == v, "injected"].any()]
    colors = variant_colors(labels)
    pale = {"SFT": 1.0, "RFT": 0.45}

    def bar(ax, x, values, label, stage, width, hatch="", scale=100):
        v = scale * values.dropna()
        ax.bar(x, v.mean() if len(v) else np.nan, width=width, yerr=v.std(ddof=1) if len(v) > 1 else None, capsize=2,
               color=colors[label], alpha=pale[stage], hatch=hatch, edgecolor="black", lw=0.4)

    with theme():
        # One panel above the other, ~1.2 inches per variant so that two-line labels such as
        # "BRIDGE\n(p_explore=0.6)" fit (up to the page width: eight variants).
        fig, axes = new_figure(1, 3, panel=(max(5.0, 1.2 * len(labels)), 2.8))
        ax = axes[0, 0]
        for x, label in enumerate(labels):
            for i, stage in enumerate(("SFT", "RFT")):
                d = data[(data["variant"] == label) & (data["stage"] == stage)]
                bar(ax, x + (i - 0.5) * 0.38, d["behaviours/frac"], label, stage, width=0.36)
        ax.set_xticks(range(len(labels)), [two_lines(label) for label in labels])
        ax.set_ylabel("share of completions (%)")
        ax.set_title("use of the injected behaviours (solid: SFT, pale: after RL)")
        ax = axes[1, 0]
        offsets = {("SFT", "with"): -0.3, ("SFT", "without"): -0.1, ("RFT", "with"): 0.1, ("RFT", "without"): 0.3}
        for x, label in enumerate(users):
            for (stage, kind), dx in offsets.items():
                d = data[(data["variant"] == label) & (data["stage"] == stage)]
                bar(ax, x + dx, d[f"paired_accuracy_{kind}_behaviours"], label, stage, width=0.18,
                    hatch="//" if kind == "without" else "")
        ax.set_xticks(range(len(users)), [two_lines(label) for label in users])
        ax.set_ylabel("accuracy on the same queries (%)")
        ax.set_title("samples with vs without behaviours")
        behaviour_kinds_panel(axes[2, 0], data, users, bar)
        if users:
            figure_legend(fig, [Patch(facecolor="white", edgecolor="black"), Patch(facecolor="white", edgecolor="black", hatch="//"),
                                Patch(facecolor="grey", edgecolor="black"), Patch(facecolor="grey", alpha=pale["RFT"], edgecolor="black")],
                          ["with behaviours", "without", "SFT", "after RL"], max_columns=4)
        if out_path is not None:
            save_figure(fig, out_path)
    return fig
