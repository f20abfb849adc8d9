"""benchmarks/machine.py's table writer: what it prints, and the CSV and Markdown it saves."""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def machine():
    spec = importlib.util.spec_from_file_location("bench_machine", ROOT / "benchmarks" / "machine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_publish_prints_aligned_columns_and_saves_the_rows_as_csv_and_markdown(machine, tmp_path, capsys):
    header = ["method", "score", "status"]
    rows = [{"method": "ours", "score": 0.5, "tokens": [1, 2, 3], "status": "ok"}, {"method": "a peer", "status": "failed: x, y"}]
    table = [["ours", "0.500", "ok"], ["a peer", "", "failed: x, y"]]
    machine.publish(tmp_path / "bench", header, table, rows, ["# Title\n", "Command: `x`"], align="---|---:|---")

    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "method  score  status"
    assert printed[1] == "ours    0.500  ok"
    assert printed[2] == "a peer         failed: x, y"
    with open(tmp_path / "bench.csv", newline="") as f:
        saved = list(csv.DictReader(f))
    assert saved == [{"method": "ours", "score": "0.5", "status": "ok"},
                     {"method": "a peer", "score": "", "status": "failed: x, y"}]
    assert (tmp_path / "bench.md").read_text().splitlines() == [
        "# Title", "", "Command: `x`",
        "| method | score | status |", "|---|---:|---|", "| ours | 0.500 | ok |", "| a peer |  | failed: x, y |"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.csv", "bench.md"]  # no temporaries left


def test_markdown_table_gives_every_column_the_one_separator_when_not_told_otherwise(machine):
    assert machine.markdown_table(["a", "b"], [["1", "2"]])[1] == "|---|---|"


def test_no_benchmark_writes_its_published_files_in_place():
    # A benchmark killed mid-write must leave the committed table as it was: every script saves
    # through machine.write_csv / coinfluence.io.write_text (temporary file, then rename).
    in_place = re.compile(r"""open\([^)]*["']w|\.write_text\(|csv\.(Dict)?[wW]riter\(""")
    offenders = []
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        if script.name == "machine.py":
            continue
        for number, line in enumerate(script.read_text().splitlines(), 1):
            if in_place.search(line):
                offenders.append(f"{script.name}:{number}: {line.strip()}")
    assert offenders == []
