"""What the benchmark tables share: the machine line (CPU model, package versions), the resident
memory now, and one writer for a table printed, saved as CSV and saved as Markdown."""

from __future__ import annotations

import csv
import io
import os
import platform
import subprocess
from pathlib import Path

from coinfluence.io import write_text


def lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def package_versions(*packages: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in packages:
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} missing")
    return ", ".join(out)


def rss_now_mib() -> float:
    """This process's resident memory, in MiB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def text_table(header: list[str], table: list[list[str]]) -> str:
    """Columns padded to their widest cell, for the terminal."""
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    lines = [header, *table]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines)


def markdown_table(header: list[str], table: list[list[str]], align: str = "---") -> list[str]:
    """A Markdown table; ``align`` is every column's separator, or one per column joined by '|'."""
    separators = align.split("|") if "|" in align else [align] * len(header)
    return ["| " + " | ".join(header) + " |", "|" + "|".join(separators) + "|",
            *["| " + " | ".join(row) + " |" for row in table]]


def write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    """The rows' ``header`` keys as CSV (missing keys empty), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def publish(stem: Path, header: list[str], table: list[list[str]], rows: list[dict], preamble: list[str],
            align: str = "---") -> None:
    """Print the table, and write ``rows`` to STEM.csv and ``preamble`` + the table to STEM.md."""
    print(text_table(header, table))
    write_csv(stem.with_suffix(".csv"), header, rows)
    write_text(stem.with_suffix(".md"), "\n".join([*preamble, *markdown_table(header, table, align)]) + "\n")
