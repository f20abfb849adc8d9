"""The run directory: where each stage's files go and the settings recorded in RUN/config.json
(docs/run-layout.md).

Every path inside a run is built here, so the layout is written down once; the trainers,
``eval``, ``analyze`` and the report take a :class:`Run` (or its paths) instead of joining
names of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from coinfluence.io import read_json, write_json

STEP_DIR = re.compile(r"^step-(\d+)$")
SFT_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.json"
TENSORBOARD_DIR = "tensorboard"
ANALYSIS_DIR = "analysis"
SUMMARY_FILE = "summary.json"  # an analysis dir's headline numbers, written last
TIMESERIES_FILE = "timeseries.csv"
# A run's trained checkpoints by name: their paths inside the run, and their keys in eval.json.
SFT = "sft"
GRPO_FINAL = "grpo/final"
TRAINED_CHECKPOINTS = (SFT, GRPO_FINAL)


def step_dir_name(step: int) -> str:
    """``step-NNNNNN``: a GRPO checkpoint's directory name (six digits, so names sort as steps)."""
    return f"step-{step:06d}"


def sft_checkpoint_name(step: int) -> str:
    """``checkpoint-NNNNNN``: a resumable SFT checkpoint's directory name."""
    return f"checkpoint-{step:06d}"


def analysis_dir_name(checkpoint: str) -> str:
    """The analysis dir name of a checkpoint named by its path inside the run: ``-`` for ``/``
    (``grpo/final`` -> ``grpo-final``)."""
    return checkpoint.replace("/", "-")


def checkpoint_step(ckpt: Path) -> int:
    """The optimizer step in a checkpoint's directory name (GRPO ``step-N`` or SFT
    ``checkpoint-N``); 0 for any other name (RUN/sft, an outside model)."""
    m = STEP_DIR.match(ckpt.name) or SFT_CHECKPOINT_DIR.match(ckpt.name)
    return int(m.group(1)) if m else 0


def grpo_checkpoint_step(checkpoint: str) -> int | None:
    """N for a GRPO checkpoint saved midway, named as in eval.json (``grpo/step-N``); else None."""
    head, _, name = checkpoint.rpartition("/")
    m = STEP_DIR.match(name) if head == "grpo" else None
    return int(m.group(1)) if m else None


def pass_key(metric: str, n: int) -> str:
    """eval.json's key of pass@n by ``metric``'s criterion (``accuracy``: answer right;
    ``step_accuracy``: answer and every step right): a query counts when any of its n samples does."""
    return {"accuracy": f"pass@{n}", "step_accuracy": f"step_pass@{n}"}[metric]


@dataclass(frozen=True)
class Run:
    """A run directory ``root`` and the places of its files."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def data_config(self) -> Path:
        """RUN/data/data_config.json: the generator settings of data ``train`` generated."""
        from coinfluence.tasks.data import DATA_CONFIG

        return self.data / DATA_CONFIG

    def checkpoint(self, name: str) -> Path:
        """RUN/NAME of a checkpoint named as in eval.json (``sft``, ``grpo/final``, ``grpo/step-N``)."""
        return self.root / name

    @property
    def sft(self) -> Path:
        """The final SFT model (its ``config.json`` marks the SFT stage done)."""
        return self.checkpoint(SFT)

    @property
    def sft_checkpoints(self) -> Path:
        return self.root / "sft-checkpoints"

    @property
    def grpo(self) -> Path:
        return self.root / "grpo"

    @property
    def grpo_final(self) -> Path:
        return self.checkpoint(GRPO_FINAL)

    def grpo_step(self, step: int) -> Path:
        return self.grpo / step_dir_name(step)

    def grpo_steps(self) -> list[tuple[int, Path]]:
        """``(step, RUN/grpo/step-N)`` of every GRPO step directory, in step order."""
        if not self.grpo.is_dir():
            return []
        return sorted((int(m.group(1)), p) for p in self.grpo.iterdir() if (m := STEP_DIR.match(p.name)))

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR

    @property
    def eval_json(self) -> Path:
        return self.root / EVAL_FILE

    def eval_records(self, checkpoint: str) -> Path:
        """RUN/eval/NAME.jsonl: the scored rows of ``checkpoint`` (its eval.json key, ``/`` as ``_``)."""
        return self.root / "eval" / (checkpoint.replace("/", "_") + ".jsonl")

    @property
    def analysis(self) -> Path:
        return self.root / ANALYSIS_DIR

    def analysis_of(self, checkpoint: str) -> Path:
        """RUN/analysis/NAME: the analysis of the checkpoint at RUN/``checkpoint`` (see :func:`analysis_dir_name`)."""
        return self.analysis / analysis_dir_name(checkpoint)

    def analysis_summary(self, checkpoint: str) -> Path:
        return self.analysis_of(checkpoint) / SUMMARY_FILE

    @property
    def timeseries(self) -> Path:
        """RUN/analysis/timeseries.csv, written by ``analyze --all-checkpoints``."""
        return self.analysis / TIMESERIES_FILE

    @property
    def lds(self) -> Path:
        return self.root / "lds"

    def analysis_name(self, ckpt: Path) -> str:
        """A checkpoint's analysis directory name: its path inside the run with ``-`` for ``/``
        (``sft``, ``grpo-step-000050``), else its own name."""
        try:
            return analysis_dir_name("/".join(Path(ckpt).resolve().relative_to(self.root.resolve()).parts)) or Path(ckpt).name
        except ValueError:
            return Path(ckpt).name

    def config(self) -> dict:
        """RUN/config.json, ``{}`` where there is none yet."""
        return read_json(self.config_path) if self.config_path.exists() else {}

    def record(self, key: str, value) -> None:
        """Merge ``{key: value}`` into RUN/config.json (the other stages keep their keys)."""
        config = self.config()
        config[key] = value
        write_json(self.config_path, config)

    def grpo_settings(self) -> dict:
        """The GRPO config the run recorded (``{}`` for a run older than that record, or none)."""
        try:
            return dict(self.config().get("grpo") or {})
        except ValueError:
            return {}


def run_of_checkpoint(ckpt: Path) -> Run | None:
    """The run a checkpoint of it belongs to (RUN/sft, RUN/grpo/final, RUN/grpo/step-N), when
    that directory holds a run config; else None."""
    ckpt = Path(ckpt)
    for candidate in (ckpt.parent, ckpt.parent.parent):
        run = Run(candidate)
        if run.config_path.is_file() and ckpt.resolve() in (run.sft.resolve(), run.grpo_final.resolve(),
                                                             *(p.resolve() for _, p in run.grpo_steps())):
            return run
    return None
