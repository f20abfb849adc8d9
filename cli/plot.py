"""``coinfluence plot``: draw the figures that a set of run and analysis directories support.

Every path is checked (``UserError``: one line, exit 2) before anything is drawn.
"""

from pathlib import Path
from typing import List

import typer


def plot(
    paths: List[Path] = typer.Argument(..., help="Run dirs (metrics.jsonl/eval.json/config.json) and analysis dirs (summary.json, or timeseries.csv of --all-checkpoints)."),
    out: Path = typer.Option(..., "--out", help="Directory for the figures (PNG + PDF) and Table 1 (.md + .csv)."),
    reward_window: int = typer.Option(1, "--reward-window", help="Trailing mean over this many GRPO steps for the reward curve."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty --out, replacing the figures of the same name (other files stay)."),
) -> None:
    """Reward curves, α histograms, influence by α and through training, Table 1, RL-gain ablation and sweeps."""
    from coinfluence.errors import UserError
    from coinfluence.io import check_output_dir
    from coinfluence.plots.report import draw_all

    if reward_window < 1:
        raise UserError(f"--reward-window must be >= 1, got {reward_window}")
    check_output_dir(out, overwrite=overwrite, inputs=paths)
    written = draw_all(paths, out, reward_window=reward_window)  # checks every path before drawing
    if not written:
        raise UserError("nothing to draw: the directories hold no GRPO metrics, evaluations or analyses")
    for path in written:
        typer.echo(f"wrote {path}")
