"""``coinfluence report``: one self-contained HTML page of a run or an analysis.

The path is checked (``UserError``: one line, exit 2) before anything is drawn; an existing page
is replaced only with --overwrite.
"""

from pathlib import Path
from typing import Optional

import typer


def report(
    path: Path = typer.Argument(..., help="A run dir (config.json, metrics.jsonl, eval.json) or an analysis dir (summary.json, or the dir of analyze --all-checkpoints)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The HTML file [RUN/report.html; beside an analysis dir: NAME-report.html]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out when it exists."),
) -> None:
    """Figures, tables, options and the first-order check of a run or an analysis, in one HTML file readable offline."""
    from coinfluence.errors import UserError
    from coinfluence.io import check_output_file, write_text
    from coinfluence.plots.html_report import build_report, default_out

    out = out or default_out(path)  # checks the path first
    check_output_file(out, overwrite=overwrite, inputs=[path])
    if out.exists() and out.suffix != ".html":
        raise UserError(f"--out {out} exists and is not an HTML page; not replacing it")
    write_text(out, build_report(path, out))
    typer.echo(f"wrote {out}")
