"""benchmarks/bench_gpu.py runs end to end (its --cpu-smoke config), so a GPU session spends its
device time measuring, not debugging; and its budget stops sections cleanly."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench_gpu"]


def rows_of(out: Path) -> list[dict]:
    with open(out / "gpu.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_cpu_smoke_run_measures_every_section(bench, tmp_path):
    out = bench.main(["--cpu-smoke", "--out", str(tmp_path)])
    rows = rows_of(out)
    assert [s for s, _ in bench.SECTIONS] == list(dict.fromkeys(r["section"] for r in rows))
    assert not [r["method"] for r in rows if r["method"].startswith(("failed", "skipped"))]
    floor = next(r for r in rows if r["method"].startswith("weights-read floor"))
    assert floor["static_same_tokens_as_lean"] == "True" and float(floor["static_max_logprob_gap"]) <= 1e-5
    assert {r["results_finite"] for r in rows if r["section"] == "analysis"} == {"True"}
    table = (out / "gpu.md").read_text()
    assert all(f"| {section} |" in table for section, _ in bench.SECTIONS)


def test_a_spent_budget_skips_the_remaining_sections_and_a_failure_is_recorded(bench, tmp_path, monkeypatch):
    def failing(model, s, table, g):
        raise MemoryError("pretend the device ran out")

    def slow(model, s, table, g):
        table.add("first", "measured", 1.0)
        bench.time.sleep(0.05)

    monkeypatch.setattr(bench, "SECTIONS", (("first", slow), ("second", failing), ("third", slow)))
    table = bench.Table(tmp_path, "header")
    bench.run_sections(None, bench.setting_of(True), table, budget_s=0.01)
    methods = [r["method"] for r in rows_of(tmp_path)]
    assert methods == ["measured", "skipped: the 0 s budget was spent", "skipped: the 0 s budget was spent"]
    table = bench.Table(tmp_path, "header")
    bench.run_sections(None, bench.setting_of(True), table, budget_s=60)
    assert [r["method"] for r in table.rows][1] == "failed: MemoryError: pretend the device ran out"


def test_without_cuda_the_gpu_run_is_refused_in_one_line(bench, capsys):
    if bench.torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args([])
    assert exit_.value.code != 0 and "--cpu-smoke" in capsys.readouterr().err
