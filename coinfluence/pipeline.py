"""The whole pipeline as one library call: data → SFT → GRPO → greedy test accuracy (→ analysis).

:func:`run_pipeline` is what ``coinfluence train`` runs; :func:`check_pipeline` is every check
it makes before any work, so a bad request fails before data is generated or a model is built.
Progress lines go to ``say`` (the CLI prints them on stderr); the result says what was written.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from coinfluence.errors import UserError
from coinfluence.io import RUN_LOCK
from coinfluence.run import GRPO_FINAL, SFT, Run
from coinfluence.training.grpo import GRPOConfig
from coinfluence.training.sft import SFTConfig

SPLIT_NAMES = ("sft", "rl_train", "val_id", "val_ood", "test_id", "test_ood")
STAGES = ("sft", "grpo", "all")


@dataclass
class Pipeline:
    """One request of ``coinfluence train``, options resolved.

    ``data`` is given data (a dir of splits, or one split for ``stage`` sft or grpo); when None,
    ``data_config`` says what to generate into RUN/data. ``model`` is a preset or a checkpoint
    dir; ``from_sft`` starts GRPO from a checkpoint instead of RUN/sft. ``grpo`` with
    ``max_completion_length`` None takes the longest SFT completion + 32 tokens.
    """

    out: Path
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    stage: str = "all"
    data: Optional[Path] = None
    data_config: object = None  # tasks.data.DataConfig of the data to generate
    task: object = None  # the Task (or its name); None: the default task
    task_preset: Optional[str] = None  # None: the task's default preset
    model: str = "tiny"
    from_sft: Optional[Path] = None
    seed: int = 0
    eval_size: int = 200
    resume: bool = False
    progress: bool = True
    report_to: str = "none"
    auto_completion_length: bool = False  # grpo.max_completion_length from the SFT data


def split_sources(data: Path, needed, one_split_as: Optional[str] = None) -> dict[str, Path]:
    """The splits of ``data`` by name (see ``io.data_splits``), with every ``needed`` one there;
    a single file or saved Dataset is taken as split ``one_split_as`` (UserError where None)."""
    from coinfluence.io import data_splits, is_one_split

    found = data_splits(data)
    if is_one_split(data):
        if one_split_as is None:
            raise UserError(f"--data {data} is one split; this needs {', '.join(needed)}: pass a dir of splits or a saved DatasetDict")
        return {one_split_as: data}
    missing = [s for s in needed if s not in found]
    if missing:
        raise UserError(f"{data} lacks the splits {', '.join(missing)} (it has {', '.join(found) or 'none'})")
    return found


def read_splits(sources: dict[str, Path], names) -> dict[str, list[dict]]:
    from coinfluence.io import read_rows

    return {s: read_rows(sources[s], ("prompt", "answer")) for s in names if s in sources}


def given_sources(p: Pipeline) -> dict[str, Path]:
    """The splits of given data that ``p.stage`` reads."""
    needed = ("sft",) if p.stage == "sft" else ("rl_train",) if p.from_sft else ("sft", "rl_train")
    return split_sources(p.data, needed, one_split_as={"sft": "sft", "grpo": "rl_train"}.get(p.stage))


def check_pipeline(p: Pipeline) -> bool:
    """Every check before work (UserError): the stage, the model, the configs, the run directory
    (a new run only where nothing else is, a continued one only in a run) and the data. Returns
    whether RUN/data can be reused."""
    from coinfluence.models.loading import check_checkpoint_dir, is_preset
    from coinfluence.tasks.rewards import reward_fn
    from coinfluence.training import checkpoint as ckpt_io
    from coinfluence.training.grpo import step_checkpoints
    from coinfluence.training.grpo import validate_config as validate_grpo
    from coinfluence.training.metrics import check_report_to
    from coinfluence.training.sft import validate_config as validate_sft

    if p.stage not in STAGES:
        raise UserError(f"--stage must be sft, grpo or all, got {p.stage!r}")
    if p.data is not None and p.data_config is not None:
        raise UserError("--bridge/--vanilla/--behaviours choose how data is generated; they cannot be combined with --data")
    if p.data is not None:
        given_sources(p)
    if not is_preset(p.model):
        check_checkpoint_dir(p.model)
    if p.from_sft is not None:
        if p.stage != "grpo":
            raise UserError("--from-sft starts RL from a checkpoint; use it with --stage grpo")
        p.from_sft = check_checkpoint_dir(p.from_sft)
    if p.eval_size < 0:
        raise UserError(f"--eval-size must be >= 0, got {p.eval_size}")
    validate_sft(p.sft)
    validate_grpo(p.grpo)
    if p.stage != "sft":
        reward_fn(p.grpo.reward, p.task)  # the reward exists for this task (progress needs its step count)
    check_report_to(p.report_to)
    if p.data is None:
        p.data_config.validate()
    run = Run(p.out)
    if run.root.exists() and not run.root.is_dir():
        raise UserError(f"--out {run.root} exists and is not a directory")
    sft_done = (run.sft / "config.json").exists()
    if p.stage != "grpo" and not p.resume and (sft_done or ckpt_io.list_checkpoints(run.sft_checkpoints)):
        raise UserError(f"{run.root} already holds an SFT run; pass --resume to continue it or choose another --out")
    if p.stage != "sft" and not p.resume and step_checkpoints(run.grpo):
        raise UserError(f"{run.root} already holds a GRPO run; pass --resume to continue it or choose another --out")
    if p.stage == "grpo" and p.from_sft is None and not sft_done:
        raise UserError(f"{run.sft} not found: run --stage sft first or pass --from-sft PATH")
    check_train_out(run.root, continuing=p.resume or (p.stage == "grpo" and sft_done))
    return check_data(p.data, run.data, p.data_config)


def check_train_out(out: Path, continuing: bool) -> None:
    """A new run starts only in an absent or empty dir (or one holding just its data/); a run is
    continued (--resume, or --stage grpo after --stage sft) only in a run dir, so that training
    never writes among files it did not create."""
    from coinfluence.io import check_writable, read_json

    check_writable(out)
    if not out.is_dir():
        return
    entries = [e.name for e in out.iterdir() if e.name not in ("data", RUN_LOCK)]
    if not entries:
        return
    if not continuing:
        raise UserError(f"--out {out} is not empty (it holds {entries[0]}); pass --resume to continue a run there or choose another --out")
    config = Run(out).config_path
    try:
        is_run = config.is_file() and "model_type" not in read_json(config)
    except ValueError:
        is_run = False
    if not is_run:
        raise UserError(f"--out {out} holds files but no run (no run config.json); choose another --out")


def check_data(data: Optional[Path], generated: Path, data_cfg) -> bool:
    """Whether ``generated`` (OUT/data) can be reused: complete, unchanged and generated with
    ``data_cfg`` (UserError when it differs; False when a killed run left it incomplete). Given
    ``data`` with a manifest is checked against it."""
    from coinfluence.tasks.data import DATA_CONFIG, is_partial_dataset, verify_dataset

    if data is not None:
        if data.is_dir() and (data / DATA_CONFIG).is_file():
            verify_dataset(data)
        return True
    if not generated.is_dir() or not any(generated.iterdir()):
        return False
    if (generated / DATA_CONFIG).is_file():
        verify_dataset(generated, data_cfg)
        return True
    if not is_partial_dataset(generated):
        raise UserError(f"{generated} holds files that are not generated data; choose another --out")
    return False


def task_tokenizer(task_preset: Optional[str], rows_by_split: dict, data_dir: Optional[Path] = None, task=None):
    """Word-level tokenizer from ``task``'s vocabulary (a Task or a name; None: the default) plus
    every text of the data; the task config (of ``data_dir``'s data_config.json when it has one,
    else of the preset) says whether possessives are single tokens."""
    from dataclasses import asdict

    from coinfluence.io import read_json
    from coinfluence.models.tokenizer import build_tokenizer
    from coinfluence.tasks.data import DATA_CONFIG, DataConfig
    from coinfluence.tasks.registry import get_task

    task = get_task(task)
    task_preset = task_preset or task.default_preset
    saved = data_dir / DATA_CONFIG if data_dir is not None else None
    if saved is not None and saved.exists():
        config = read_json(saved).get("task", {})
    else:
        config = asdict(DataConfig(task=task.name, preset=task_preset).validate()) if task_preset in task.presets else {}
    possessive = task.possessive_tokens(config)
    words = list(task.vocabulary(task_preset)) if task_preset in task.presets else []
    texts = [t for rows in rows_by_split.values() for r in rows for t in (r["prompt"], r["completion"])]
    return build_tokenizer(words + texts, possessive=possessive)


def train_record(p: Pipeline, data: Path) -> dict:
    """RUN/config.json's ``train`` entry. A ``--stage grpo`` run on top of this run's own SFT keeps
    what the SFT stage recorded (its model, its data) and adds the RL data when it differs."""
    from coinfluence.io import read_json

    run = Run(p.out)
    if p.data_config is not None:
        generated = asdict(p.data_config)
    else:  # given data: its generator config, when the data dir carries one
        path = data / "data_config.json"
        generated = read_json(path).get("data") if path.exists() else None
    entry = {"stage": p.stage, "data": str(data), "data_config": generated,
             "model": str(p.from_sft) if p.from_sft else p.model if p.stage != "grpo" else str(run.sft),
             "from_sft": str(p.from_sft) if p.from_sft else None, "seed": p.seed, "eval_size": p.eval_size}
    previous = run.config().get("train") or {}
    if p.stage == "grpo" and p.from_sft is None and previous.get("stage") in ("sft", "all"):
        entry = {**previous, "stage": "all", "eval_size": p.eval_size}
        if str(data) != previous.get("data"):
            entry["rl_data"] = str(data)
    return entry


def prepare_data(p: Pipeline, reuse_data: bool, say: Callable[[str], None]) -> tuple[Path, dict[str, list[dict]]]:
    """The data dir and its rows by split: given, reused from RUN/data, or generated there (by
    rank 0 under torchrun; the others wait)."""
    from coinfluence.distributed import barrier, is_main

    if p.data is not None:
        return p.data, read_splits(given_sources(p), SPLIT_NAMES)
    data = Run(p.out).data
    if reuse_data:
        say(f"reusing data in {data}/")
    elif is_main():
        from coinfluence.tasks.data import write_dataset

        say(f"generating data into {data}/ ...")
        write_dataset(data, p.data_config)
    barrier()
    return data, read_splits(split_sources(data, ("sft", "rl_train")), SPLIT_NAMES)


def sft_stage(p: Pipeline, rows: dict, data: Path, sink, say: Callable[[str], None]) -> None:
    """SFT of ``p.model`` (a preset is built with the task's tokenizer, or the one of the
    checkpoint it resumes) into RUN/sft."""
    from coinfluence.device import model_device
    from coinfluence.models.loading import is_preset, load_model, load_tokenizer
    from coinfluence.training import checkpoint as ckpt_io
    from coinfluence.training.checkpoint import quiet_hf_progress
    from coinfluence.training.sft import train_sft

    run = Run(p.out)
    latest = ckpt_io.latest_checkpoint(run.sft_checkpoints) if p.resume else None
    if is_preset(p.model):
        tokenizer = load_tokenizer(latest) if latest else task_tokenizer(p.task_preset, rows, data, p.task)
        model, tokenizer = load_model(p.model, tokenizer, seed=p.seed)
    else:
        model, tokenizer = load_model(p.model)
    n_params = sum(t.numel() for t in model.parameters())
    say(f"sft: {model_name(p.model)} ({n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}) on {len(rows['sft'])} rows, "
        f"{model_device(model)} -> {run.root}/")
    with quiet_hf_progress():
        train_sft(p.sft, model, tokenizer, rows["sft"], rows.get("val_id", []), run.root, resume=p.resume, progress=p.progress,
                  sink=sink, task=p.task)


def grpo_stage(p: Pipeline, rows: dict, sink, say: Callable[[str], None]) -> None:
    """GRPO from RUN/sft (or ``from_sft``) into RUN/grpo."""
    from coinfluence.models.loading import load_model
    from coinfluence.training.checkpoint import quiet_hf_progress
    from coinfluence.training.grpo import train_grpo
    from coinfluence.training.sft import auto_max_new_tokens

    run = Run(p.out)
    init = p.from_sft or run.sft
    with quiet_hf_progress():
        model, tokenizer = load_model(init)
    if p.auto_completion_length and "sft" in rows:
        p.grpo.max_completion_length = auto_max_new_tokens(tokenizer, rows["sft"])
    say(f"grpo: from {init} on {len(rows['rl_train'])} queries, {p.grpo.max_steps} steps x "
        f"{p.grpo.prompts_per_step} queries x {p.grpo.num_generations} rollouts -> {run.grpo}/")
    vals = {s: rows[s] for s in ("val_id", "val_ood") if s in rows}
    with quiet_hf_progress():
        train_grpo(p.grpo, model, tokenizer, rows["rl_train"], vals, run.root, resume=p.resume, progress=p.progress, sink=sink,
                   task=p.task)


def evaluate_stage(p: Pipeline, rows: dict, checkpoints: list[tuple[str, Path]]) -> dict[str, dict]:
    """Greedy accuracy on the test splits of each checkpoint (into RUN/eval.json), by name."""
    from coinfluence.models.loading import load_model
    from coinfluence.training.checkpoint import quiet_hf_progress
    from coinfluence.training.evaluate import evaluate_checkpoint
    from coinfluence.training.sft import auto_max_new_tokens

    tests = {s: rows[s] for s in ("test_id", "test_ood") if s in rows}
    if not tests or not p.eval_size:
        return {}
    out = {}
    for name, path in checkpoints:
        with quiet_hf_progress():
            model, tokenizer = load_model(path)
        out[name] = evaluate_checkpoint(
            model, tokenizer, tests, p.out, name, limit=p.eval_size, reward=p.grpo.reward, task=p.task,
            max_new_tokens=auto_max_new_tokens(tokenizer, rows["sft"]) if "sft" in rows else 512,
        )
    return out


def model_name(model: str) -> str:
    """A model's short name: the preset, or the checkpoint dir's name."""
    from coinfluence.models.loading import is_preset

    return model if is_preset(model) else Path(model).name


def run_pipeline(p: Pipeline, say: Callable[[str], None] = lambda line: None, analysis=None) -> dict:
    """Check, then run the stages ``p.stage`` asks for, then score the test splits; with
    ``analysis`` (``influence.analyze.AnalyzeOptions`` without ``ckpt``/``run``/``out``) also
    analyse RUN/sft into RUN/analysis/sft. Returns the run dir, the checkpoints trained with their
    test results (rank 0; other ranks under torchrun get no results) and the analysis summary."""
    from coinfluence.device import default_device
    from coinfluence.distributed import is_main
    from coinfluence.io import remove_stale_temporaries, run_lock
    from coinfluence.training.metrics import metric_sink

    reuse_data = check_pipeline(p)
    run = Run(p.out)
    sft_done = (run.sft / "config.json").exists()
    with ExitStack() as stack:
        if is_main():  # under torchrun rank 0 owns the run dir
            stack.enter_context(run_lock(run.root))
            remove_stale_temporaries(run.root)
        data, rows = prepare_data(p, reuse_data, say)
        if is_main():
            run.record("train", {**train_record(p, data), "device": str(default_device())})
        # Every row reaches the sink flushed as it is logged, so a run that fails before close() loses nothing.
        sink = stack.enter_context(metric_sink(run.root, p.report_to if is_main() else "none"))
        trained = []
        if p.stage in ("sft", "all"):
            if not (p.resume and sft_done):
                sft_stage(p, rows, data, sink, say)
            trained.append((SFT, run.sft))
        if p.stage in ("grpo", "all"):
            grpo_stage(p, rows, sink, say)
            trained.append((GRPO_FINAL, run.grpo_final))
        if not is_main():  # under torchrun rank 0 evaluates and reports
            return {"run": run, "checkpoints": trained, "results": {}}
        results = evaluate_stage(p, rows, trained)
    summary = analyse_sft(run, analysis, p.progress) if analysis is not None else None
    return {"run": run, "checkpoints": trained, "results": results, "analysis": summary}


def analyse_sft(run: Run, options, progress: bool) -> dict:
    """The analysis of RUN/sft into RUN/analysis/sft (the model GRPO starts from)."""
    from dataclasses import replace

    from coinfluence.influence.analyze import run_analysis

    return run_analysis(replace(options, ckpt=str(run.sft), run=str(run.root), out=None), progress=progress)
