"""One self-contained HTML page for a run or an analysis (``coinfluence report``).

Everything the page shows is inside it: figures as base64 PNG, tables from the files the run
and the analysis wrote (config.json, metrics.jsonl, eval.json; summary.json, queries.parquet,
rollouts.parquet), so that it reads offline, without a server. Links between the stages of a run
are anchors in the page; links to the run's own files and directories are relative to the page.
Every string taken from those files is HTML-escaped.

A *run* dir (``train``): its data options, SFT and GRPO options and curves, test accuracy of
each checkpoint, and every analysis under RUN/analysis. An *analysis* dir (``analyze``): its
options, key numbers, the first-order check, α and ΔJ figures, the queries of largest and
smallest ΔJ with their rollouts. ``analyze --all-checkpoints``'s dir: each analysis and the
influence through training.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import os
import shlex
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from matplotlib.figure import Figure

from coinfluence.errors import UserError
from coinfluence.plots import analysis, training
from coinfluence.plots.runs import (
    data_config, is_analysis_dir, is_run_dir, is_timeseries_dir, read_config, read_eval, read_metrics, read_summary,
    read_json_or_empty, read_timeseries, run_analyses, run_label, run_of_analysis, run_seed,
)
from coinfluence.plots.style import theme
from coinfluence.run import Run

REPORT_NAME = "report.html"
FIGURE_DPI = 100  # a PAGE_WIDTH figure is then 1,000 px: the page's width
TOP_QUERIES = 5  # rows of largest and of smallest ΔJ
QUERY_COLUMNS = ("query_id", "alpha", "n_correct", "weight", "K_plus", "K_minus", "co_influence", "delta_J")
ROLLOUT_COLUMNS = ("rollout_id", "reward", "advantage", "length", "completion")
SUMMARY_KEYS = ("checkpoint", "step", "reward", "n_train_queries", "n_target_queries", "frac_informative", "mean_alpha",
                "target_accuracy", "mean_co_influence", "mean_delta_J", "num_parameters_selected", "feature_dim",
                "feature_engine", "device", "train_file", "targets_file")
VALIDATION_KEYS = ("queries", "eta", "n_pairs", "pearson_dlogp", "spearman_dlogp", "pearson_dJ", "spearman_dJ")

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1040px; margin: 0 auto; padding: 0 16px 48px; color: #222; }
nav { position: sticky; top: 0; background: #fff; padding: 6px 0; border-bottom: 1px solid #ddd; }
nav a { margin-right: 14px; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 3px; margin-top: 36px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.figures img { max-width: min(100%, 520px); }
dl.options { columns: 3 240px; column-gap: 28px; font-size: 13px; margin: 8px 0 16px; }
dl.options div { break-inside: avoid; display: flex; justify-content: space-between; gap: 8px; border-bottom: 1px dotted #ddd; padding: 1px 0; }
dl.options dt { color: #555; }
dl.options dd { margin: 0; text-align: right; overflow-wrap: anywhere; font-variant-numeric: tabular-nums; }
pre { white-space: pre-wrap; margin: 0; font-size: 12px; }
.note { color: #666; }
"""


# ----------------------------------------------------------------------------- where and what


def report_kind(path) -> str:
    """``run``, ``analysis`` (one analysis dir) or ``analyses`` (an --all-checkpoints dir);
    UserError for anything else (before any work)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"not found: {path}")
    if not path.is_dir():
        raise UserError(f"not a directory: {path} (pass a run dir or an analysis dir)")
    if is_analysis_dir(path):
        return "analysis"
    if is_timeseries_dir(path):
        return "analyses"
    if is_run_dir(path):
        return "run"
    raise UserError(f"{path} is neither a run dir (config.json, metrics.jsonl, eval.json) nor an analysis dir (summary.json)")


def default_out(path) -> Path:
    """The page's default path: RUN/report.html, or beside an analysis dir as NAME-report.html
    (``analyze`` replaces its whole output dir when run again)."""
    path = Path(os.path.abspath(path)) if Path(path).name in ("", "..") else Path(path)  # "." names no dir to put NAME-report.html beside
    return path / REPORT_NAME if report_kind(path) == "run" else path.parent / f"{path.name}-{REPORT_NAME}"


def report_command(path) -> str:
    """The command that makes the report of ``path`` (printed by ``train`` and ``analyze``)."""
    return f"coinfluence report {shlex.quote(str(path))} --out {shlex.quote(str(default_out(path)))}"


# ----------------------------------------------------------------------------- HTML pieces


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value) -> str:
    """A cell's text: floats to 4 significant digits, None/NaN as a dash, lists and dicts inline."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    return str(value)


def _cell(value) -> str:
    numeric = isinstance(value, numbers.Number) and not isinstance(value, bool)
    return ('<td class="num">' if numeric else "<td>") + esc(fmt(value)) + "</td>"


def table(rows: list[dict], columns=None) -> str:
    """An HTML table of ``rows`` (dicts), one column per key (``columns`` picks and orders them)."""
    if not rows:
        return '<p class="note">(none)</p>'
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_values(mapping: dict, keys=None) -> str:
    """``mapping`` as a list of names and values in columns (nested dicts flattened to
    ``outer.inner``); ``keys`` picks and orders them."""
    flat = flatten(mapping)
    keys = [k for k in keys if k in flat] if keys else list(flat)
    if not keys:
        return '<p class="note">(none)</p>'
    items = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(fmt(flat[k]))}</dd></div>" for k in keys)
    return f'<dl class="options">{items}</dl>'


def flatten(mapping: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (mapping or {}).items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def figure_img(fig: Figure, alt: str) -> str:
    """``fig`` as an <img> with the PNG inline (base64)."""
    buf = io.BytesIO()
    with theme():
        fig.savefig(buf, format="png", dpi=FIGURE_DPI)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def link(target: Path, base: Path | None) -> str:
    """A link to a file or directory of the run, relative to the page's directory ``base`` (the
    text is that relative path too)."""
    target = Path(target).resolve()
    if base is None:
        return f'<a href="{esc(target.as_uri())}">{esc(target)}</a>'
    relative = os.path.relpath(target, Path(base).resolve())
    return f'<a href="{esc(quote(relative))}">{esc(relative)}</a>'


def section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{"".join(parts)}</section>'


def page(title: str, nav: list[tuple[str, str]], sections: list[str]) -> str:
    links = "".join(f'<a href="#{esc(anchor)}">{esc(text)}</a>' for anchor, text in nav)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1><nav>{links}</nav>{''.join(sections)}</body></html>\n")


# ----------------------------------------------------------------------------- an analysis


def in_step_order(analyses: dict[str, Path]) -> dict[str, Path]:
    """Analyses by checkpoint name, in the order of their checkpoints' steps (SFT first)."""
    return dict(sorted(analyses.items(), key=lambda item: (read_summary(item[1]).get("step") or 0, item[0])))


def analysis_anchor(name: str) -> str:
    return "analysis-" + name.replace("/", "-")


def top_bottom_queries(queries: pd.DataFrame, n: int = TOP_QUERIES) -> pd.DataFrame:
    """The train queries of largest and of smallest ΔJ (each once), largest first."""
    train = queries[queries["role"] == "train"].sort_values("delta_J", ascending=False, kind="stable")
    return train if len(train) <= 2 * n else pd.concat([train.head(n), train.tail(n)])


def rollout_details(rollouts: pd.DataFrame, query_id: str) -> str:
    """The rollouts of one train query as a collapsed table (completions shown as text)."""
    rows = rollouts[(rollouts["query_id"] == query_id) & (rollouts["role"] == "train")]
    cols = [c for c in ROLLOUT_COLUMNS if c in rows]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td><pre>{esc(r[c])}</pre></td>" if c == "completion" else _cell(r[c]) for c in cols)
                   + "</tr>" for r in rows[cols].to_dict("records"))
    return (f"<details><summary>rollouts of {esc(query_id)} ({len(rows)})</summary>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></details>")


def analysis_section(analysis_dir, name: str, base: Path | None, stage_anchor: str | None = None) -> str:
    """Everything one analysis dir holds: key numbers, the first-order check, the α histogram and
    ΔJ by α, the queries of largest and smallest ΔJ (with their rollouts), the options."""
    analysis_dir = Path(analysis_dir)
    summary = read_summary(analysis_dir)
    parts = [f"<p>files: {link(analysis_dir, base)}"
             + (f' · checkpoint: <a href="#{esc(stage_anchor)}">{esc(summary.get("checkpoint", name))}</a>' if stage_anchor else "")
             + "</p>", key_values(summary, SUMMARY_KEYS)]
    validation = summary.get("validation")
    parts.append("<h3>First-order check</h3>")
    if validation:
        parts.append("<p>Observed against predicted change of the target rollouts' log-probabilities (dlogp) and of the "
                     "importance-weighted objective (dJ) after a real step on each chosen query.</p>")
        parts.append(key_values(validation, VALIDATION_KEYS))
    else:
        parts.append('<p class="note">not run (<code>coinfluence analyze --validate K</code>)</p>')
    queries_file, rollouts_file = analysis_dir / "queries.parquet", analysis_dir / "rollouts.parquet"
    if queries_file.is_file():
        parts.append('<div class="figures">' + figure_img(analysis.alpha_histogram(analysis_dir), "rollout accuracy α per train query")
                     + figure_img(analysis.delta_J_by_alpha(analysis_dir), "ΔJ per train query against α") + "</div>")
        shown = top_bottom_queries(pd.read_parquet(queries_file))
        columns = [c for c in QUERY_COLUMNS if c in shown] + [c for c in shown if c not in QUERY_COLUMNS and c not in ("role", "num_generations")]
        parts += ["<h3>Train queries of largest and smallest ΔJ</h3>", table(shown.to_dict("records"), columns)]
        if rollouts_file.is_file() and len(shown):
            rollouts = pd.read_parquet(rollouts_file)
            ends = list(dict.fromkeys([shown["query_id"].iloc[0], shown["query_id"].iloc[-1]]))
            parts += [rollout_details(rollouts, q) for q in ends]
    else:
        parts.append('<p class="note">queries.parquet not found</p>')
    parts += ["<h3>Options</h3>", key_values(summary.get("options") or {})]
    return section(analysis_anchor(name), f"Analysis: {name}", *parts)


def analyses_report(path, base: Path | None) -> str:
    """The page of one analysis dir, or of an --all-checkpoints dir (each analysis and the time series)."""
    path = Path(path)
    dirs = {path.name: path} if is_analysis_dir(path) else in_step_order({p.parent.name: p.parent for p in path.glob("*/summary.json")})
    run = run_of_analysis(path)
    sections = []
    if run is not None:
        sections.append(section("run", "Run", f"<p>{esc(run_label(run))}: {link(run, base)} "
                                f"(<code>{esc(report_command(run))}</code> makes its page)</p>"))
    if is_timeseries_dir(path):
        sections.append(timeseries_section(path))
    sections += [analysis_section(d, name, base) for name, d in dirs.items()]
    nav = ([("run", "run")] if run is not None else []) + ([("timeseries", "through training")] if is_timeseries_dir(path) else [])
    nav += [(analysis_anchor(name), name) for name in dirs]
    return page(f"coinfluence analysis: {path.resolve().name}", nav, sections)


def timeseries_section(path) -> str:
    table_rows = read_timeseries(path).to_dict("records")
    return section("timeseries", "Influence through training",
                   figure_img(analysis.influence_through_training([path]), "influence through training"), table(table_rows))


# ----------------------------------------------------------------------------- a run


def metric_summary(df: pd.DataFrame) -> list[dict]:
    """Each numeric metric of a stage: first and last logged value, with their steps."""
    rows = []
    for column in df.columns:
        if column in ("stage", "step", "time") or not pd.api.types.is_numeric_dtype(df[column]):
            continue
        logged = df.dropna(subset=[column])
        if len(logged):
            first, last = logged.iloc[0], logged.iloc[-1]
            rows.append({"metric": column, "first step": int(first["step"]), "first": float(first[column]),
                         "last step": int(last["step"]), "last": float(last[column])})
    return rows


def stage_options(run: Path, stage: str) -> dict:
    """A stage's options as resolved: RUN/config.json's entry, else (GRPO records them with each
    checkpoint) those of grpo/final or of the newest grpo/step-*."""
    options = read_config(run).get(stage)
    if options or stage != "grpo":
        return options or {}
    for ckpt in [Run(run).grpo_final] + [path for _, path in reversed(Run(run).grpo_steps())]:
        if (ckpt / "grpo_config.json").is_file():
            return read_json_or_empty(ckpt / "grpo_config.json")
    return {}


def stage_section(run: Path, stage: str, base: Path | None) -> str | None:
    """SFT or GRPO: where its checkpoints are, its curves, its metrics and its options."""
    metrics = read_metrics(run, stage)
    options = stage_options(run, stage)
    if not len(metrics) and not options:
        return None
    final = Run(run).sft if stage == "sft" else Run(run).grpo_final
    parts = [f"<p>checkpoint: {link(final, base)}" + ("" if final.exists() else " (not here)") + "</p>"]
    draw = training.sft_curves if stage == "sft" else training.reward_curves
    columns = training.SFT_CURVES if stage == "sft" else training.CURVES
    if len(metrics) and any(c in metrics for c, _, _ in columns):
        parts.append(figure_img(draw([run]), f"{stage} curves"))
    parts += [f"<h3>Metrics ({link(Run(run).metrics, base)})</h3>", table(metric_summary(metrics)),
              "<h3>Options</h3>", key_values(options or {})]
    return section(stage, training.STAGE_NAMES[stage], *parts)


EVAL_METRICS = (("accuracy", "answer"), ("step_accuracy", "step-verified"))


def eval_section(run: Path, base: Path | None) -> str | None:
    """eval.json: answer and step-verified accuracy per checkpoint (rows) and split (columns), and
    each result's details."""
    df = read_eval(run)
    if not len(df):
        return None
    metrics = [(m, name) for m, name in EVAL_METRICS if m in df and df[m].notna().any()]
    value = {(r.checkpoint, r.split, m): getattr(r, m) for r in df.itertuples(index=False) for m, _ in metrics}
    splits = list(dict.fromkeys(df["split"]))
    rows = [{"checkpoint": ckpt, **{f"{s} {name}": value.get((ckpt, s, m)) for s in splits for m, name in metrics}}
            for ckpt in dict.fromkeys(df["checkpoint"])]
    details = df.drop(columns=[c for c in df.columns if df[c].isna().all()]).to_dict("records")
    return section("eval", "Evaluation", f"<p>Accuracy per checkpoint and split ({link(Run(run).eval_json, base)}): "
                   "answer right, and step-verified (the answer and every step the checker reads right).</p>",
                   table(rows), "<details><summary>every number of eval.json</summary>" + table(details) + "</details>")


def run_stages(run: Path, sections: dict[str, str | None], analyses: dict[str, Path]) -> list[tuple[str, str, Path]]:
    """(name, anchor on the page, files) of each stage the run has, in the order they ran."""
    layout = Run(run)
    data = layout.data
    recorded = (read_config(run).get("train") or {}).get("data")
    if recorded and Path(recorded).exists():  # recorded relative to where `train` ran
        data = Path(recorded)
    stages = [("data", "data", data), ("SFT", "sft", layout.sft), ("GRPO", "grpo", layout.grpo), ("evaluation", "eval", layout.eval_json)]
    stages = [s for s in stages if s[1] == "data" or sections.get(s[1])]
    return stages + [(f"analysis of {name}", analysis_anchor(name), d) for name, d in analyses.items()]


def checkpoint_anchor(name: str) -> str | None:
    """The stage section an analysed checkpoint comes from (sft, grpo-step-N -> grpo)."""
    return "sft" if name == "sft" else "grpo" if name.startswith("grpo") else None


def run_report(run, base: Path | None) -> str:
    """The page of a run: its stages with links, data, SFT, GRPO, evaluation, analyses."""
    run = Path(run)
    train = read_config(run).get("train") or {}
    analyses = in_step_order(run_analyses(run))
    stages = {"sft": stage_section(run, "sft", base), "grpo": stage_section(run, "grpo", base), "eval": eval_section(run, base)}
    links = "".join(f'<tr><td><a href="#{esc(anchor)}">{esc(name)}</a></td><td>{link(files, base)}</td></tr>'
                    for name, anchor, files in run_stages(run, stages, analyses))
    overview = key_values({"dir": str(run), "variant": run_label(run), "seed": run_seed(run), "device": train.get("device")})
    sections = [section("overview", "Run", overview, f"<table><thead><tr><th>stage</th><th>files</th></tr></thead><tbody>{links}</tbody></table>"),
                section("data", "Data", key_values(data_config(run)), "<h3>Training options</h3>",
                        key_values({k: v for k, v in train.items() if k != "data_config"}))]
    sections += [s for s in stages.values() if s is not None]
    series = is_timeseries_dir(Run(run).analysis)
    if series:
        sections.append(timeseries_section(Run(run).analysis))
    sections += [analysis_section(d, name, base, checkpoint_anchor(name)) for name, d in analyses.items()]
    nav = [("overview", "run"), ("data", "data")] + [(a, training.STAGE_NAMES.get(a, "evaluation")) for a, s in stages.items() if s]
    nav += [("timeseries", "through training")] * series + [(analysis_anchor(name), f"analysis: {name}") for name in analyses]
    return page(f"coinfluence run: {run.resolve().name}", nav, sections)


def build_report(path, out_path=None) -> str:
    """The HTML page of a run dir or an analysis dir; links are relative to ``out_path``'s dir."""
    kind = report_kind(path)
    base = Path(out_path).parent if out_path is not None else None
    return run_report(path, base) if kind == "run" else analyses_report(path, base)
