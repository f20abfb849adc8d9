"""`coinfluence report`: one self-contained HTML page, checked in a real browser (headless Chromium).

The run under tests/fixtures/report/run/ is the small result of a tiny real run and of the
analysis of its SFT checkpoint with the first-order check (tests/fixtures/make_report_fixture.py).
What the page must show is recomputed here from those files.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from coinfluence.errors import UserError  # noqa: E402
from coinfluence.plots import html_report  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "report" / "run"
PLOT_RUN = Path(__file__).parent / "fixtures" / "plots" / "bridge-s0"  # has analyze --all-checkpoints output
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
# Written into a copy of the page: once it has loaded, the rendered text and every image's size.
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({text: document.body.innerText,
                                    images: [...document.images].map(i => [i.alt, i.naturalWidth, i.naturalHeight])});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    return run


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, str]:
    """A copy of the fixture run and its page (as if written to RUN/report.html), drawn once."""
    run = tmp_path_factory.mktemp("page") / "run"
    shutil.copytree(FIXTURE, run)
    return run, html_report.build_report(run, run / "report.html")


def cli(*args):
    """`coinfluence ARGS` in this process (a UserError is left in ``result.exception``)."""
    from typer.testing import CliRunner

    from coinfluence_cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def browser_view(page: Path, tmp_path: Path) -> dict:
    """Load ``page`` in headless Chromium (no network, no GPU); returns its rendered text and
    [alt, naturalWidth, naturalHeight] of each image."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    r = subprocess.run([CHROMIUM, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert found, f"no probe in the page Chromium loaded (exit {r.returncode}): {r.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")


def expected_texts(run: Path) -> list[str]:
    """What the run's page must show, from the run's own files."""
    evals = json.loads((run / "eval.json").read_text())["checkpoints"]
    summary = json.loads((run / "analysis" / "sft" / "summary.json").read_text())
    queries = pd.read_parquet(run / "analysis" / "sft" / "queries.parquet")
    train = queries[queries["role"] == "train"]
    texts = ["Run", "Data", "SFT", "GRPO", "Evaluation", "Analysis: sft", "First-order check", "BRIDGE",
             f"{html_report.fmt(summary['validation']['pearson_dlogp'])}", f"{html_report.fmt(summary['mean_delta_J'])}",
             train.loc[train["delta_J"].idxmax(), "query_id"], train.loc[train["delta_J"].idxmin(), "query_id"]]
    texts += [html_report.fmt(res["accuracy"]) for splits in evals.values() for res in splits.values()]
    texts += list(evals) + [split for splits in evals.values() for split in splits]
    return texts


@needs_chromium
def test_run_report_in_a_browser(run_dir, tmp_path):
    out = tmp_path / "page" / "report.html"
    r = cli("report", run_dir, "--out", out)
    assert r.exit_code == 0, r.output
    view = browser_view(out, tmp_path)
    missing = [t for t in expected_texts(run_dir) if t not in view["text"]]
    assert not missing, missing
    assert [alt for alt, _, _ in view["images"]] == ["sft curves", "grpo curves", "rollout accuracy α per train query",
                                                      "ΔJ per train query against α"]
    assert all(width > 0 and height > 0 for _, width, height in view["images"]), view["images"]


@needs_chromium
def test_analysis_report_in_a_browser_shows_every_checkpoint(tmp_path):
    run = tmp_path / "plots-run"
    shutil.copytree(PLOT_RUN, run)
    out = tmp_path / "analyses.html"
    assert cli("report", run / "analysis", "--out", out).exit_code == 0
    view = browser_view(out, tmp_path)
    names = sorted(p.name for p in (run / "analysis").iterdir() if (p / "summary.json").is_file())
    assert all(f"Analysis: {name}" in view["text"] for name in names) and "Influence through training" in view["text"]
    assert len(view["images"]) == 1 + 2 * len(names) and all(w > 0 for _, w, _ in view["images"])


@needs_chromium
def test_strings_from_the_files_are_shown_as_text(run_dir, tmp_path):
    hostile = '<img src="x" onerror="document.title=1"><b>bold</b> & "quoted"'
    config = json.loads((run_dir / "config.json").read_text())
    config["train"]["model"] = hostile
    (run_dir / "config.json").write_text(json.dumps(config))
    page = html_report.build_report(run_dir, tmp_path / "report.html")
    assert hostile not in page and html.escape(hostile) in page
    (tmp_path / "report.html").write_text(page)
    view = browser_view(tmp_path / "report.html", tmp_path)
    assert hostile in view["text"] and len(view["images"]) == 4  # shown as text; no image of its own


# ----------------------------------------------------------------------------- without a browser


def test_the_evaluation_table_shows_step_verified_accuracy_beside_the_answer(run_dir):
    saved = json.loads((run_dir / "eval.json").read_text())
    for k, (ckpt, splits) in enumerate(saved["checkpoints"].items()):
        for j, result in enumerate(splits.values()):
            result["step_accuracy"] = round(0.0123 + 0.1 * k + 0.01 * j, 4)  # distinct from every answer accuracy
    (run_dir / "eval.json").write_text(json.dumps(saved))
    eval_part = html_report.build_report(run_dir).split('id="eval"', 1)[1].split("<details>", 1)[0]
    for ckpt, splits in saved["checkpoints"].items():
        for split, result in splits.items():
            assert f"{split} step-verified" in eval_part and f"{split} answer" in eval_part
            assert html_report.fmt(result["step_accuracy"]) in eval_part and html_report.fmt(result["accuracy"]) in eval_part


def test_completions_are_escaped(page):
    run_dir, page = page
    completions = pd.read_parquet(run_dir / "analysis" / "sft" / "rollouts.parquet")["completion"]
    shown = [c for c in completions if html.escape(c) in page]
    assert any("<answer>" in c for c in shown)  # the task's answer markers, escaped
    assert "<answer>" not in page


def test_page_is_self_contained(page):
    _, page = page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    links = re.findall(r'href="([^"#][^"]*)"', page)
    assert links and all(not l.startswith("/") for l in links)  # run files: relative to the page


def test_stage_links_point_at_sections_that_exist(page):
    _, page = page
    anchors = set(re.findall(r'href="#([^"]+)"', page))
    ids = set(re.findall(r'id="([^"]+)"', page))
    assert {"data", "sft", "grpo", "eval", "analysis-sft"} <= anchors and anchors <= ids
    assert 'href="analysis/sft"' in page and 'href="eval.json"' in page


def test_default_out_and_the_printed_command(run_dir):
    assert html_report.default_out(run_dir) == run_dir / "report.html"
    sft = run_dir / "analysis" / "sft"
    assert html_report.default_out(sft) == run_dir / "analysis" / "sft-report.html"
    assert html_report.report_command(sft) == f"coinfluence report {sft} --out {run_dir / 'analysis' / 'sft-report.html'}"


def test_cli_report_never_overwrites_unless_asked(run_dir):
    out = run_dir / "report.html"
    first = cli("report", run_dir)
    assert first.exit_code == 0 and first.stdout.strip() == f"wrote {out}", first.output
    out.write_text("mine")
    again = cli("report", run_dir)
    assert isinstance(again.exception, UserError) and "--overwrite" in str(again.exception)
    assert out.read_text() == "mine"
    assert cli("report", run_dir, "--overwrite").exit_code == 0 and out.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "not found"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "neither a run dir"),
    (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt", "not a directory"),
])
def test_cli_report_bad_input_writes_nothing(tmp_path, make, message):
    out = tmp_path / "r.html"
    r = cli("report", make(tmp_path), "--out", out)
    assert isinstance(r.exception, UserError) and message in str(r.exception)
    assert not out.exists()


def test_cli_report_bad_input_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "coinfluence_cli.main", "report", str(tmp_path / "missing")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: not found") and len(r.stderr.strip().splitlines()) == 1, r.stderr
