"""The paper's claims as comparisons over seeds, each with a bootstrap interval and a verdict.

A *unit* is one (variant, seed) run; a claim compares a per-unit number (an RL gain, the
informative share at SFT, ...) between two variants. Units of different variants with the same
seed share their problems (the data generator pairs them), so a comparison is paired by seed
when both variants have that seed, and the interval resamples seeds. The decision rule, fixed
before the runs: a difference counts when its 95% bootstrap interval excludes 0; the verdict is
``reproduced`` when it excludes 0 on the paper's side, ``opposite`` on the other side, and
``not reproduced`` when it contains 0. A verdict needs ``MIN_SEEDS`` seeds: the percentile
interval of a mean of two or three values is their range, so with so few seeds "excludes 0"
only says that every seed has the same sign (one chance in four for two seeds of no effect).
"""

from __future__ import annotations

import numpy as np

from coinfluence.run import pass_key

LEVEL = 0.95
RESAMPLES = 10_000
MIN_SEEDS = 5


def bootstrap_interval(values, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean of ``values`` and the percentile interval of the mean over
    ``resamples`` resamples with replacement (NaN interval for fewer than two values)."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(x.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def difference_interval(a: dict, b: dict, **kw) -> tuple[float, float, float, int]:
    """``(mean, lo, hi, n)`` of ``a − b`` for per-seed values ``{seed: value}``: paired over the
    seeds both have (``n`` of them) when there are at least two, else the difference of two
    independent bootstrap means over all seeds of each (``n`` = 0). Missing (NaN) values are dropped."""
    a = {s: v for s, v in a.items() if v is not None and np.isfinite(v)}
    b = {s: v for s, v in b.items() if v is not None and np.isfinite(v)}
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        mean, lo, hi = bootstrap_interval([a[s] - b[s] for s in shared], **kw)
        return mean, lo, hi, len(shared)
    xa, xb = np.asarray(list(a.values()), float), np.asarray(list(b.values()), float)
    if len(xa) < 2 or len(xb) < 2:
        return (float(xa.mean() - xb.mean()) if len(xa) and len(xb) else float("nan")), float("nan"), float("nan"), 0
    level, resamples, seed = kw.get("level", LEVEL), kw.get("resamples", RESAMPLES), kw.get("seed", 0)
    rng = np.random.default_rng(seed)
    diffs = (xa[rng.integers(0, len(xa), (resamples, len(xa)))].mean(1)
             - xb[rng.integers(0, len(xb), (resamples, len(xb)))].mean(1))
    tail = (1 - level) / 2
    return float(xa.mean() - xb.mean()), float(np.quantile(diffs, tail)), float(np.quantile(diffs, 1 - tail)), 0


def verdict(lo: float, hi: float, expected_sign: int = 1, seeds: int = MIN_SEEDS) -> str:
    """The decision rule (module docstring) for an interval ``[lo, hi]`` over ``seeds`` seeds of a
    difference that the paper says is positive (``expected_sign`` 1) or negative (-1); with
    ``expected_sign`` 0 (no claim) it says whether a is higher, lower or no different."""
    if seeds < MIN_SEEDS or not (np.isfinite(lo) and np.isfinite(hi)):
        return "too few seeds"
    if expected_sign == 0:  # a comparison the paper makes no claim about
        return "higher" if lo > 0 else "lower" if hi < 0 else "no difference"
    if lo > 0 or hi < 0:
        return "reproduced" if (lo > 0) == (expected_sign > 0) else "opposite"
    return "not reproduced"


# ----------------------------------------------------------------------------- units -> numbers

SPLITS = ("test_id", "test_ood")
METRICS = ("accuracy", "step_accuracy")  # answer right; answer and every step right
SAMPLED_SUFFIX = "@n8-t1"
# How each metric is read from a checkpoint's results: greedy and mean@8 read the metric itself,
# pass@8 the share of queries with at least one of its 8 samples right (by the same criterion).
SAMPLED_TAGS = {"greedy": ("", {}), "mean@8": (SAMPLED_SUFFIX, {}),
                "pass@8": (SAMPLED_SUFFIX, {m: pass_key(m, 8) for m in METRICS})}
GUESSES = ("guess/stated", "guess/majority")  # accuracy of answering a stated number; of the commonest answer


def _eval_value(saved: dict, checkpoint: str, split: str, metric: str) -> float:
    value = saved.get(checkpoint, {}).get(split, {}).get(metric)
    return float(value) if value is not None else float("nan")


def unit_numbers(unit) -> dict:
    """The per-unit numbers the claims compare: variant, seed; for each test split and metric the
    SFT and RL (grpo/final) values and their gain, greedy, mean@8 and pass@8 (``SAMPLED_TAGS``);
    the informative share and mean co-influence at the SFT checkpoint."""
    import json
    from pathlib import Path

    from coinfluence.plots.runs import run_label, run_seed
    from coinfluence.run import GRPO_FINAL, SFT, Run

    unit = Path(unit)
    run = Run(unit)
    saved = json.loads(run.eval_json.read_text()).get("checkpoints", {}) if run.eval_json.exists() else {}
    row = {"unit": unit.name, "variant": run_label(unit), "seed": run_seed(unit)}
    for split in SPLITS:
        for metric in METRICS:
            for tag, (suffix, names) in SAMPLED_TAGS.items():
                sft, rft = (_eval_value(saved, c + suffix, split, names.get(metric, metric)) for c in (SFT, GRPO_FINAL))
                key = f"{tag}/{split}/{metric}"
                row.update({f"{key}/sft": sft, f"{key}/rft": rft, f"{key}/gain": rft - sft})
    row.update(midway_numbers(saved))
    for guess in GUESSES:
        row[f"test_id/{guess}"] = _eval_value(saved, SFT, "test_id", guess)
    summary = run.analysis_summary(SFT)
    if summary.exists():
        s = json.loads(summary.read_text())
        row["sft/frac_informative"] = s.get("frac_informative", float("nan"))
        for key in ("mean_co_influence", "mean_delta_J"):
            row[f"sft/{key}"] = s[key] if s.get(key) is not None else float("nan")
    return row


def numbers_of(units):
    """One row of :func:`unit_numbers` per unit; a frame of such rows is passed through, so a
    caller that builds several tables reads each unit once."""
    import pandas as pd

    return units if isinstance(units, pd.DataFrame) else pd.DataFrame([unit_numbers(u) for u in units])


def midway_numbers(saved: dict) -> dict:
    """Greedy values of RL checkpoints tested before the end (eval.json keys ``grpo/step-N``) and
    their gains over SFT, as ``greedy/SPLIT/METRIC/rft@N`` and ``.../gain@N``."""
    from coinfluence.run import SFT, grpo_checkpoint_step

    row = {}
    for ckpt in saved:
        step = grpo_checkpoint_step(ckpt)
        for split in SPLITS if step is not None else ():
            for metric in METRICS:
                value, key = _eval_value(saved, ckpt, split, metric), f"greedy/{split}/{metric}"
                row[f"{key}/rft@{step}"] = value
                row[f"{key}/gain@{step}"] = value - _eval_value(saved, SFT, split, metric)
    return row


# (claim as the paper makes it, column, variant a, variant b, expected sign of a − b)
CLAIMS = (
    ("RL raises step-verified accuracy (BRIDGE)", "greedy/test_id/step_accuracy/gain", "BRIDGE", None, 1),
    ("RL raises step-verified accuracy (vanilla)", "greedy/test_id/step_accuracy/gain", "vanilla", None, 1),
    ("BRIDGE gains more from RL than vanilla, ID", "greedy/test_id/step_accuracy/gain", "BRIDGE", "vanilla", 1),
    ("BRIDGE gains more from RL than vanilla, OOD", "greedy/test_ood/step_accuracy/gain", "BRIDGE", "vanilla", 1),
    ("BRIDGE gains more from RL than vanilla, ID, mean@8", "mean@8/test_id/step_accuracy/gain", "BRIDGE", "vanilla", 1),
    ("BRIDGE's SFT model leaves more queries informative", "sft/frac_informative", "BRIDGE", "vanilla", 1),
    ("BRIDGE's SFT model has larger co-influence", "sft/mean_co_influence", "BRIDGE", "vanilla", 1),
    ("both behaviours gain more than exploration alone", "greedy/test_id/step_accuracy/gain", "BRIDGE", "explore only", 1),
    ("both behaviours gain more than exploitation alone", "greedy/test_id/step_accuracy/gain", "BRIDGE", "exploit only", 1),
    ("exploration alone gains more than none", "greedy/test_id/step_accuracy/gain", "explore only", "vanilla", 1),
    ("exploitation alone gains more than none", "greedy/test_id/step_accuracy/gain", "exploit only", "vanilla", 1),
    ("BRIDGE gains more than question augmentation", "greedy/test_id/step_accuracy/gain", "BRIDGE", "question aug.", 1),
    ("BRIDGE gains more than answer augmentation", "greedy/test_id/step_accuracy/gain", "BRIDGE", "answer aug.", 1),
)

# Where the paired comparison of the gains starts and ends: a variant that starts lower has more
# headroom, so "gains more" alone does not say that it ends higher. No claim, hence sign 0.
ENDPOINTS = tuple((f"where the comparison {when}", f"{tag}/test_id/step_accuracy/{stage}", "BRIDGE", "vanilla", 0)
                  for tag in ("greedy", "mean@8") for stage, when in (("sft", "starts (SFT)"), ("rft", "ends (RL)")))

# Whether RL widens the set of problems 8 samples solve at all (step-verified pass@8) or only
# sharpens the samples on problems already solved. No claim of the paper, hence sign 0.
COVERAGE = (
    ("RL's change in step-verified pass@8 (BRIDGE)", "pass@8/test_id/step_accuracy/gain", "BRIDGE", None, 0),
    ("RL's change in step-verified pass@8 (vanilla)", "pass@8/test_id/step_accuracy/gain", "vanilla", None, 0),
    ("RL's change in step-verified pass@8, BRIDGE − vanilla", "pass@8/test_id/step_accuracy/gain", "BRIDGE", "vanilla", 0),
)

# Each claim that compares two variants' RL gain on test_id, read again at an equal start: a
# variant whose SFT model starts lower has more room to gain, so the SFT value enters as a
# covariate. A check of the claims, not one of them, hence sign 0.
START_ADJUSTED = tuple((f"{claim}, at an equal SFT start", column, a, b, 0) for claim, column, a, b, _ in CLAIMS
                       if b is not None and column.endswith("/gain") and "/test_id/" in column)


def per_seed_values(numbers, column: str) -> dict:
    """``{variant: {seed: value}}`` of one column of :func:`numbers_of`; empty where no unit has it."""
    if column not in numbers:
        return {}
    return {variant: dict(zip(group["seed"], group[column])) for variant, group in numbers.groupby("variant")}


def claims_table(units, claims=CLAIMS):
    """One row per claim whose variants have units (unit dirs, or their :func:`numbers_of`): the
    mean difference (or the mean, for a claim about one variant) over seeds, its 95% bootstrap
    interval, the seeds it rests on (0 for an unpaired difference, which gets no verdict), the
    verdict."""
    import pandas as pd

    numbers = numbers_of(units)
    rows = []
    for claim, column, a, b, sign in claims:
        per_seed = per_seed_values(numbers, column)
        if a not in per_seed or (b is not None and b not in per_seed):
            continue
        if b is None:
            mean, lo, hi = bootstrap_interval(per_seed[a].values())
            n = sum(np.isfinite(v) for v in per_seed[a].values())
        else:
            mean, lo, hi, n = difference_interval(per_seed[a], per_seed[b])
        rows.append({"claim": claim, "measure": column, "a": a, "b": b or "", "seeds": n, "mean": mean, "lo": lo, "hi": hi,
                     "verdict": verdict(lo, hi, sign, n)})
    return pd.DataFrame(rows, columns=["claim", "measure", "a", "b", "seeds", "mean", "lo", "hi", "verdict"])


def paired_units(numbers, columns: list[str], a: str, b: str):
    """The units of variants ``a`` and ``b`` that have ``columns``, in the seeds where both do."""
    units = numbers[numbers["variant"].isin([a, b])].dropna(subset=columns)
    seeds = set(units.seed[units.variant == a]) & set(units.seed[units.variant == b])
    return units[units.seed.isin(seeds)]


def start_adjusted_fit(gain, start, is_a) -> tuple[float, float]:
    """``(shift, slope)`` of the least-squares line gain = c + slope·start + shift·is_a over units
    of two variants: ``shift`` is a's gain minus b's at an equal start, ``slope`` the gain per unit
    of start that both share (negative where a weaker start leaves more headroom). NaN for a
    singular design (one variant only, or every start equal)."""
    design = np.column_stack([np.ones(len(gain)), np.asarray(start, float), np.asarray(is_a, float)])
    if np.linalg.matrix_rank(design) < 3:
        return float("nan"), float("nan")
    (_, slope, shift), *_ = np.linalg.lstsq(design, np.asarray(gain, float), rcond=None)
    return float(shift), float(slope)


def start_adjusted_table(units, comparisons=START_ADJUSTED, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0):
    """Per comparison of two variants' gains (``column``, read at SFT from the sibling ``.../sft``
    column) whose variants have units: :func:`start_adjusted_fit` over the units of the seeds both
    have, with percentile intervals of the shift and the slope from resampling those seeds (a
    resampled seed brings both its units, keeping the pairing; from ``MIN_SEEDS`` seeds on), and
    the verdict of the shift as :func:`claims_table` gives it. Columns as claims_table's, plus
    ``slope``, ``slope_lo``, ``slope_hi``."""
    import pandas as pd

    numbers, tail, rows = numbers_of(units), (1 - level) / 2, []
    for name, column, a, b, sign in comparisons:
        start = column.rsplit("/", 1)[0] + "/sft"
        if column not in numbers or start not in numbers:
            continue
        if not {a, b} <= set(numbers["variant"]):
            continue
        units_ab = paired_units(numbers, [column, start], a, b)
        seeds = sorted(set(units_ab.seed))
        gain, at_start, is_a = (units_ab[column].to_numpy(float), units_ab[start].to_numpy(float),
                                (units_ab.variant == a).to_numpy())
        shift, slope = start_adjusted_fit(gain, at_start, is_a)
        rows_of_seed = [np.flatnonzero(units_ab.seed.to_numpy() == s) for s in seeds]
        rng, draws = np.random.default_rng(seed), []
        # below MIN_SEEDS seeds most resamples of a three-parameter line are exact fits: no interval
        for picked in rng.integers(0, len(seeds), size=(resamples if len(seeds) >= MIN_SEEDS else 0, len(seeds))):
            i = np.concatenate([rows_of_seed[k] for k in picked])
            draws.append(start_adjusted_fit(gain[i], at_start[i], is_a[i]))
        draws = np.array([d for d in draws if np.isfinite(d).all()]).reshape(-1, 2)
        (lo, slope_lo), (hi, slope_hi) = (np.quantile(draws, [tail, 1 - tail], axis=0) if len(draws)
                                          else np.full((2, 2), np.nan))
        rows.append({"claim": name, "measure": column, "a": a, "b": b, "seeds": len(seeds), "mean": shift,
                     "lo": float(lo), "hi": float(hi), "verdict": verdict(lo, hi, sign, len(seeds)),
                     "slope": slope, "slope_lo": float(slope_lo), "slope_hi": float(slope_hi)})
    return pd.DataFrame(rows, columns=["claim", "measure", "a", "b", "seeds", "mean", "lo", "hi", "verdict",
                                       "slope", "slope_lo", "slope_hi"])


def paired_by_seed(units, claims=CLAIMS):
    """The per-seed values a claim's interval rests on: ``a − b`` for each seed both variants have
    (``a`` alone for a claim about one variant), points for accuracies and shares; one row per claim."""
    import pandas as pd

    numbers = numbers_of(units)
    rows = {}
    for claim, column, a, b, _ in claims:
        per_seed = per_seed_values(numbers, column)
        if a not in per_seed or (b is not None and b not in per_seed):
            continue
        scale = 100 if in_points(column) else 1
        rows[claim] = {s: scale * (v - (per_seed[b][s] if b else 0)) for s, v in per_seed[a].items()
                       if b is None or s in per_seed[b]}
    return pd.DataFrame.from_dict(rows, orient="index").sort_index(axis=1)


ACCURACY_COLUMNS = tuple(f"{tag}/{split}/{metric}/{stage}" for tag in SAMPLED_TAGS  # sampled on test_id only
                         for split in (SPLITS if tag == "greedy" else ("test_id",))
                         for metric in METRICS for stage in ("sft", "rft", "gain")) + tuple(
                             f"test_id/{g}" for g in GUESSES)


def accuracy_table(units, columns=ACCURACY_COLUMNS):
    """Per variant and column (split, metric, SFT/RL/gain, guess baselines, then any RL checkpoint
    tested midway): the mean over seeds with its 95% bootstrap interval, in percent."""
    import pandas as pd

    numbers = numbers_of(units)
    columns = [*columns, *sorted(c for c in numbers if "@" in c.rsplit("/", 1)[-1] and c not in columns)]  # midway checkpoints
    rows = []
    for variant, group in numbers.groupby("variant"):
        for column in columns:
            if column in group:
                mean, lo, hi = bootstrap_interval(group[column])
                n = int(np.isfinite(group[column].astype(float)).sum())
                rows.append({"variant": variant, "measure": column, "seeds": n,
                             "mean": 100 * mean, "lo": 100 * lo, "hi": 100 * hi})
    return pd.DataFrame(rows, columns=["variant", "measure", "seeds", "mean", "lo", "hi"])


def in_points(measure: str) -> bool:
    """Accuracies and shares are reported in points (×100); a co-influence is a raw inner product."""
    return not measure.endswith("co_influence")


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, as figures/README.md shows it."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def points(share: float, signed: bool = False) -> str:
    """A share in points to one decimal ("—" where missing), signed with a true minus if asked:
    how every table of figures/README.md writes an accuracy or a share."""
    if not np.isfinite(share):
        return "—"
    return (f"{100 * share:+.1f}" if signed else f"{100 * share:.1f}").replace("-", "−")


def claims_markdown(table, first: str = "claim") -> str:
    """The claims table as the Markdown rows figures/README.md shows: claim (or what ``first``
    names), measure, mean [95% interval] (points for accuracies and shares), seeds, verdict."""
    def cell(mean, lo, hi, in_points_):
        def fmt(v):
            return points(v, signed=True) if in_points_ else f"{v:+.1e}".replace("-", "−")
        return f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}]" if np.isfinite(lo) else fmt(mean)

    rows = [[r.claim, f"{r.measure}, {r.a} − {r.b}" if r.b else r.measure, cell(r.mean, r.lo, r.hi, in_points(r.measure)),
             str(r.seeds), r.verdict] for r in table.itertuples(index=False)]
    return markdown([first, "measure", "mean [95% interval]", "seeds", "verdict"], rows)


# Numbers of the SFT model's analysis that could tell, before RL, which models RL will help.
# The last is the baseline an analysis number must beat: a weaker SFT model has more headroom.
PREDICTORS = ("sft/mean_delta_J", "sft/mean_co_influence", "sft/frac_informative", "greedy/test_id/step_accuracy/sft")
# Below this many units a bootstrap of a rank correlation is degenerate (resamples of four units
# mostly repeat one order), so no interval is given: five seeds of two variants.
MIN_UNITS = 2 * MIN_SEEDS


def spearman(x, y) -> float:
    """Rank correlation of two paired samples (ties get their mean rank); NaN if either is constant."""
    import pandas as pd

    rx, ry = pd.Series(x, dtype=float).rank().to_numpy(), pd.Series(y, dtype=float).rank().to_numpy()
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def prediction_table(units, outcome: str = "greedy/test_id/step_accuracy/gain", predictors=PREDICTORS,
                     level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0):
    """Per predictor: Spearman's ρ over units between the SFT analysis' number and the unit's RL
    ``outcome``, with a percentile interval from resampling units (resamples whose ranks are all
    tied are skipped; none below ``MIN_UNITS`` units). ΔJ predicts one step's change of the
    targets' surrogate, not the test gain of a whole run, so this asks whether it *ranks* models
    as RL later does."""
    import pandas as pd

    numbers = numbers_of(units)
    rng, tail, rows = np.random.default_rng(seed), (1 - level) / 2, []
    for predictor in predictors:
        pair = numbers[[predictor, outcome]].astype(float).dropna() if predictor in numbers and outcome in numbers else None
        if pair is None or len(pair) < 3:
            continue
        x, y = pair[predictor].to_numpy(), pair[outcome].to_numpy()
        draws = rng.integers(0, len(x), size=(resamples, len(x)))
        rhos = np.array([spearman(x[i], y[i]) for i in draws])
        rhos = rhos[np.isfinite(rhos)]
        lo, hi = (np.quantile(rhos, tail), np.quantile(rhos, 1 - tail)) if len(rhos) and len(x) >= MIN_UNITS else (float("nan"),) * 2
        rows.append({"predictor": predictor, "outcome": outcome, "units": len(x), "rho": spearman(x, y),
                     "lo": float(lo), "hi": float(hi)})
    return pd.DataFrame(rows, columns=["predictor", "outcome", "units", "rho", "lo", "hi"])


def prediction_markdown(table) -> str:
    """:func:`prediction_table` as the Markdown rows figures/README.md shows: the SFT number, the
    units ranked, and Spearman's ρ with the RL gain and its interval (two decimals, signed)."""
    def rho(v):
        return f"{v:+.2f}".replace("-", "−") if np.isfinite(v) else "—"

    rows = [[r.predictor, str(r.units), f"{rho(r.rho)} [{rho(r.lo)}, {rho(r.hi)}]" if np.isfinite(r.lo) else rho(r.rho)]
            for r in table.itertuples(index=False)]
    return markdown(["SFT number", "units", "Spearman ρ with the RL gain [95% interval]"], rows)


# ----------------------------------------------------------------------------- the claims, drawn

VERDICT_COLORS = {"reproduced": "#1b9e77", "opposite": "#d95f02", "not reproduced": "#666666", "too few seeds": "#a6a6a6"}


def claims_in_points(units, claims=CLAIMS):
    """The rows of :func:`claims_table` measured in points that have a mean: what
    :func:`claims_figure` draws."""
    table = claims_table(units, claims)
    return table[[in_points(m) and np.isfinite(v) for m, v in zip(table["measure"], table["mean"])]]


def claims_figure(units, out_path=None, claims=CLAIMS):
    """Each claim measured in points as its mean over seeds and 95% bootstrap interval, coloured
    by its verdict, against 0 (no effect): the claims table at a glance. A claim with too few
    seeds is drawn hollow. Co-influence, a raw inner product on another scale, stays in the table."""
    from coinfluence.plots.style import new_figure, save_figure, theme

    table = claims_in_points(units, claims).iloc[::-1]  # first claim on top
    with theme():
        fig, axes = new_figure(1, panel=(7.0, 0.9 + 0.32 * len(table)))
        ax = axes[0, 0]
        ax.axvline(0, color="black", lw=0.8)
        for y, r in enumerate(table.itertuples(index=False)):
            color, hollow = VERDICT_COLORS.get(r.verdict, "black"), r.verdict == "too few seeds"
            ax.errorbar(100 * r.mean, y, xerr=[[100 * (r.mean - r.lo)], [100 * (r.hi - r.mean)]] if np.isfinite(r.lo) else None,
                        fmt="o", color=color, mfc="white" if hollow else color, ms=5, capsize=2.5, lw=1.4)
            seeds = f"{r.seeds} seeds" if r.seeds else "unpaired"
            ax.annotate(f"{r.verdict} ({seeds})", (1.01, y), xycoords=("axes fraction", "data"),
                        va="center", fontsize="small", color=color, annotation_clip=False)
        ax.set_yticks(range(len(table)), table["claim"], fontsize="small")
        ax.set_ylim(-0.6, len(table) - 0.4)
        ax.set_xlabel("mean over seeds [95% bootstrap interval], points (a − b where the claim compares two)")
        if out_path is not None:
            save_figure(fig, out_path)
    return fig


def drawn_start_adjusted(units, comparisons=START_ADJUSTED):
    """The rows of :func:`start_adjusted_table` (without intervals) that :func:`gain_against_start`
    draws: those with a fitted line on the seeds a verdict needs."""
    fits = start_adjusted_table(units, comparisons, resamples=0)
    return fits[(fits["seeds"].astype(int) >= MIN_SEEDS) & np.isfinite(fits["mean"].astype(float))]


def gain_against_start(units, out_path=None, comparisons=START_ADJUSTED):
    """Each unit's RL gain against its SFT model's value (points), one panel per comparison of
    :data:`START_ADJUSTED` with the seeds a verdict needs, a dot per unit coloured by variant
    (the compared two in full colour), with the two parallel lines of
    :func:`start_adjusted_fit` over each compared variant's starts: the gap between the lines is
    the gain difference at an equal start, their slope what a stronger start brings."""
    from coinfluence.plots.style import figure_legend, new_figure, save_figure, theme, unique_legend_entries

    numbers = numbers_of(units)
    fits = drawn_start_adjusted(numbers, comparisons)
    ncols = max(1, min(3, len(fits)))
    with theme():
        fig, axes = new_figure(ncols, nrows=max(1, -(-len(fits) // ncols)), panel=(3.6, 3.1))
        for ax in axes.flat[len(fits):]:
            ax.set_visible(False)
        for ax, fit in zip(axes.flat, fits.itertuples(index=False)):
            _gain_against_start_panel(ax, numbers, fit)
        figure_legend(fig, *unique_legend_entries(axes.flat))
        if out_path is not None:
            save_figure(fig, out_path)
    return fig


def _gain_against_start_panel(ax, numbers, fit) -> None:
    from coinfluence.plots.style import order_variants, variant_colors

    start, colors = fit.measure.rsplit("/", 1)[0] + "/sft", variant_colors(numbers["variant"])
    for variant in order_variants(numbers["variant"]):
        v = numbers[numbers["variant"] == variant].dropna(subset=[start, fit.measure])
        compared = variant in (fit.a, fit.b)
        ax.scatter(100 * v[start], 100 * v[fit.measure], s=18 if compared else 12, color=colors[variant], label=variant,
                   zorder=3 if compared else 2, alpha=1.0 if compared else 0.35)
    fitted = paired_units(numbers, [fit.measure, start], fit.a, fit.b)  # the units the line was fitted on
    # least squares with an intercept leaves residuals of mean 0: the intercept is their mean
    intercept = (fitted[fit.measure] - fit.slope * fitted[start] - fit.mean * (fitted["variant"] == fit.a)).mean()
    for variant, shift in ((fit.a, fit.mean), (fit.b, 0.0)):
        starts = fitted[fitted["variant"] == variant][start]
        xs = np.array([starts.min(), starts.max()])
        ax.plot(100 * xs, 100 * (intercept + fit.slope * xs + shift), color=colors[variant], lw=1.6)
    ax.axhline(0, color="black", lw=0.6)
    tag = fit.measure.split("/", 1)[0]
    ax.set_title(f"{fit.a} − {fit.b}, {tag}: {100 * fit.mean:+.1f}".replace("-", "−"), fontsize="medium")
    ax.set_xlabel("SFT model, step-verified test_id (%)")
    ax.set_ylabel("RL gain (points)")
