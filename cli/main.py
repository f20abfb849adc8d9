"""Entry point of the ``coinfluence`` console script.

Each stage's commands live in their own module; errors a user can cause
(:class:`coinfluence.errors.UserError`) become one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from coinfluence.errors import UserError

from . import data as _data
from . import models as _models
from . import analyze as _analyze
from . import lds as _lds
from . import plot as _plot
from . import report as _report
from . import train as _train

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Why does RL finetuning help one model and not another? Data, training and co-influence analysis.",
)


@app.callback()
def root(threads: Optional[int] = typer.Option(
        None, "--threads", help="CPU threads for torch (default: torch's choice). On a machine busy with other jobs, "
                                "--threads 1 can be many times faster than oversubscribed cores."),
         device: str = typer.Option(
        "auto", "--device", help="where models run: auto (a CUDA GPU if torch sees one, else the CPU), cpu, cuda or cuda:N"),
         sampler: str = typer.Option(
        "auto", "--sampler", help="rollout engine of train, eval and analyze: auto (lean where the architecture allows, "
                                  "else hf), lean, hf, or static (lean with a fixed-shape decode step, replayed as CUDA "
                                  "graphs on a GPU; opt-in, its GPU speed not yet measured)")) -> None:
    from coinfluence.device import set_default_device
    from coinfluence.distributed import init_from_env
    from coinfluence.training.rollout import set_default_backend

    set_default_backend(sampler)

    set_default_device(init_from_env(device))  # under torchrun: join its process group, one GPU per local rank
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


app.command("data")(_data.data)
app.command("score")(_data.score)
app.command("train")(_train.train)
app.command("eval")(_train.eval_cmd)
app.command("analyze")(_analyze.analyze)
app.command("lds")(_lds.lds)
app.command("plot")(_plot.plot)
app.command("report")(_report.report)
app.add_typer(_models.app, name="models")


def main() -> None:
    try:
        app()
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
