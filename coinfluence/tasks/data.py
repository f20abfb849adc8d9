"""Seeded dataset splits of any task (``DataConfig.task``): the options, the shared draw loop,
and writing, checking and summarising a data dir.

Every problem is drawn from its own RNG stream ``(seed, split, index)`` (``distinct_problems``),
so the same seed gives the same problems whatever the behaviours. Splits are kept disjoint by
the canonical form of each problem, not by its text.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

from ..errors import UserError
import json

from ..io import (
    HF_DATASET_DICT_FILE, UNFINISHED_DATA, atomic_path, file_manifest, hf_datasets, manifest_mismatch, read_json, write_dataset_dict,
    write_json, write_jsonl,
)
from .bridge import BEHAVIOURS, BehaviourConfig, behaviour_preset
from .registry import DEFAULT_TASK, data_task, get_task

# Held-out splits are drawn first so that training splits can avoid every one of their problems.
SPLITS = ("test_id", "test_ood", "val_id", "val_ood", "rl_train", "sft")
# Bounds that keep one command within a workstation's time and memory (a typo of a few zeros
# fails at once instead of running for hours).
MAX_SPLIT_SIZE = 1_000_000
MAX_AUGMENTATION = 64


@dataclass
class DataConfig:
    task: str = field(default=DEFAULT_TASK, metadata={"help": "the task generating the data (tasks.registry)"})
    preset: str | None = field(default=None, metadata={"help": "task scale (the task's presets; its first if unset)"})
    behaviours: str = field(default="both", metadata={"help": "injected behaviours: none, explore, exploit or both (BRIDGE)"})
    seed: int = field(default=0, metadata={"help": "seed of every split"})
    sft_size: int | None = field(default=None, metadata={"help": "SFT problems (before augmentation); preset default if unset"})
    rl_size: int | None = field(default=None, metadata={"help": "RL training queries; preset default if unset"})
    eval_size: int | None = field(default=None, metadata={"help": "problems in each val/test split; preset default if unset"})
    p_explore: float | None = field(default=None, metadata={"help": "exploration probability per eligible step"})
    p_exploit: float | None = field(default=None, metadata={"help": "scale on the restating probabilities"})
    question_aug: int = field(default=1, metadata={"help": "baseline: k random sentence orders of each SFT problem"})
    answer_aug: int = field(default=1, metadata={"help": "baseline: k random solution orders of each SFT problem"})
    op_id: tuple[int, int] | None = field(default=None, metadata={"help": "override the in-distribution op range"})
    op_ood: tuple[int, int] | None = field(default=None, metadata={"help": "override the out-of-distribution op range"})
    redundant: tuple[int, int] | None = field(default=None, metadata={"help": "override the distractors per question"})
    const_range: tuple[int, int] | None = field(default=None, metadata={"help": "override the range of stated constants"})
    answer_not_stated: bool | None = field(default=None, metadata={"help": "override: never ask for a number the question states"})
    solution_format: str | None = field(default=None, metadata={"help": "override: variables or names"})
    solution_order: str | None = field(default=None, metadata={"help": "override: random or question"})
    possessive_tokens: bool | None = field(default=None, metadata={"help": "override: tokenizers keep \"Hen's\" as one token"})
    fixed_templates: bool | None = field(default=None, metadata={"help": "override: one template per sentence kind"})

    def __post_init__(self):
        if self.preset is None:
            self.preset = get_task(self.task).default_preset

    def sizes(self, defaults: dict[str, int]) -> dict[str, int]:
        """Rows of each split: the given sizes, else the task preset's ``defaults`` (sft, rl, eval)."""
        sft, rl, ev = (self.sft_size or defaults["sft"], self.rl_size or defaults["rl"], self.eval_size or defaults["eval"])
        return {"sft": sft, "rl_train": rl, "val_id": ev, "val_ood": ev, "test_id": ev, "test_ood": ev}

    def behaviour_config(self) -> BehaviourConfig:
        return behaviour_preset(self.behaviours, **{k: v for k, v in (("p_explore", self.p_explore),
                                                                     ("p_exploit", self.p_exploit)) if v is not None})

    def validate(self):
        """The task's validated config of these options (UserError on any bad option)."""
        task = get_task(self.task)
        if self.behaviours not in BEHAVIOURS:
            raise UserError(f"unknown behaviours {self.behaviours!r}; choose one of {', '.join(BEHAVIOURS)}")
        for name in ("sft_size", "rl_size", "eval_size", "question_aug", "answer_aug"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"{name.replace('_', '-')} must be positive, got {value}")
            limit = MAX_AUGMENTATION if name.endswith("aug") else MAX_SPLIT_SIZE
            if value is not None and value > limit:
                raise UserError(f"{name.replace('_', '-')} is at most {limit:,}, got {value:,}")
        for name in ("p_explore", "p_exploit"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= (1 if name == "p_explore" else 10):
                raise UserError(f"{name.replace('_', '-')} out of range: {value}")
        if self.question_aug > 1 and self.answer_aug > 1:
            raise UserError("question-aug and answer-aug are separate baselines; use one at a time")
        if task.default_preset is None:
            raise UserError(f"task {task.name} has no generator; pass its rows with --data")
        if self.preset not in task.presets:
            raise UserError(f"unknown preset {self.preset!r} of task {task.name}; choose one of {', '.join(task.presets)}")
        return task.config(self)


def check_op_ranges(op_id: tuple[int, int], op_ood: tuple[int, int], what: str = "op") -> None:
    """UserError unless the in- and out-of-distribution ranges are disjoint."""
    if op_id[1] >= op_ood[0] and op_ood[1] >= op_id[0]:
        raise UserError(f"{what}-id {op_id[0]}-{op_id[1]} and {what}-ood {op_ood[0]}-{op_ood[1]} overlap; "
                        "out-of-distribution ones must differ from the in-distribution ones")


def split_rng(*parts) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, identically on every run and machine.
    return random.Random(":".join(map(str, parts)))


def distinct_problems(seed: int, split: str, size: int, seen: set, draw, key):
    """``(problem id, index, problem)`` for ``size`` problems of ``split``, each drawn by
    ``draw(rng)`` from its own stream ``(seed, split, index)`` and kept only when its canonical
    ``key`` is new to ``seen`` (so splits are disjoint by problem, not by text)."""
    accepted, index = 0, 0
    while accepted < size:
        if index - accepted > 50 * size + 1000:
            raise UserError(
                f"could only find {accepted} distinct {split} problems; the world is too small "
                "for this many: lower the size or widen the op range"
            )
        rng = split_rng(seed, split, index)
        index += 1
        problem = draw(rng)
        k = key(problem)
        if k in seen:
            continue
        seen.add(k)
        accepted += 1
        yield f"{split}-{index - 1:06d}", index - 1, problem


def make_dataset(cfg: DataConfig) -> dict[str, list[dict]]:
    splits = get_task(cfg.task).splits(cfg, cfg.validate())
    return {s: splits[s] for s in SPLIT_FILES}


DATA_CONFIG = "data_config.json"  # written last: a data dir without it is incomplete
FORMATS = ("jsonl", "parquet", "hf")
SPLIT_FILES = ("sft", "rl_train", "val_id", "val_ood", "test_id", "test_ood")


def split_entries(fmt: str) -> list[str]:
    """The entries of a data dir that hold the rows: one file per split, or a DatasetDict."""
    if fmt == "hf":
        return [*SPLIT_FILES, HF_DATASET_DICT_FILE]
    return [f"{split}.{fmt}" for split in SPLIT_FILES]


def dataset_files(fmt: str) -> list[str]:
    """Every entry ``write_dataset`` writes into its dir."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose {', '.join(FORMATS)}")
    return [*split_entries(fmt), DATA_CONFIG]


def write_dataset(out_dir: str | Path, cfg: DataConfig, fmt: str = "jsonl") -> dict[str, list[dict]]:
    """Write ``OUT/{split}.{jsonl|parquet}`` (or, for ``hf``, a Hugging Face DatasetDict saved in
    OUT) and ``OUT/data_config.json``; returns the rows."""
    dataset_files(fmt)  # a known format, before any work
    if fmt == "hf":
        hf_datasets()  # the optional extra is there before any work
    task = cfg.validate()
    splits = get_task(cfg.task).splits(cfg, task)
    splits = {s: splits[s] for s in SPLIT_FILES}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / UNFINISHED_DATA).touch()
    if fmt == "hf":
        write_dataset_dict(out_dir, splits)
    elif fmt == "jsonl":
        for split, rows in splits.items():
            write_jsonl(out_dir / f"{split}.jsonl", rows)
    else:
        import pandas as pd

        for split, rows in splits.items():
            with atomic_path(out_dir / f"{split}.parquet") as tmp:
                pd.DataFrame(rows).to_parquet(tmp, index=False)
    write_json(out_dir / DATA_CONFIG, {
        "data": asdict(cfg), "task": asdict(task) if is_dataclass(task) else task, "format": fmt,
        "counts": {s: len(r) for s, r in splits.items()},
        "files": file_manifest(out_dir, split_entries(fmt)),
    })
    (out_dir / UNFINISHED_DATA).unlink()
    return splits


def verify_dataset(data_dir: str | Path, cfg: DataConfig | None = None) -> None:
    """UserError unless ``data_dir``'s files are those its DATA_CONFIG lists (sizes and hashes;
    data written before the manifest existed is taken as is) and, with ``cfg``, were generated
    with that config."""
    data_dir = Path(data_dir)
    saved = read_json(data_dir / DATA_CONFIG)
    problem = manifest_mismatch(data_dir, saved.get("files", {}))
    if problem:
        raise UserError(f"data in {data_dir} is not what was generated ({problem}); regenerate it")
    if cfg is not None:
        wanted = json.loads(json.dumps(asdict(cfg)))  # tuples as JSON lists, as saved
        had = {**saved.get("data", {}), "task": data_task(data_dir)}
        differing = [k for k in wanted if had.get(k) != wanted[k]]
        if differing:
            detail = ", ".join(f"{k}={had.get(k)!r} (now {wanted[k]!r})" for k in differing)
            raise UserError(f"data in {data_dir} was generated with other options: {detail}; choose another --out")


def is_partial_dataset(data_dir: str | Path) -> bool:
    """A data dir a killed ``write_dataset`` left: no DATA_CONFIG, and only entries it writes
    (or its temporary files), so regenerating it replaces nothing else."""
    data_dir = Path(data_dir)
    own = {name for fmt in FORMATS for name in dataset_files(fmt)}
    return not (data_dir / DATA_CONFIG).exists() and all(
        e.name in own or e.name == UNFINISHED_DATA or (e.name.startswith(".") and e.name.endswith(".tmp")) for e in data_dir.iterdir())


def dataset_stats(splits: dict[str, list[dict]]) -> dict[str, dict]:
    """Per split: rows, problems, op histogram, lengths in words, injections per row, answers."""
    out = {}
    for split, rows in splits.items():
        if not rows:
            continue
        words_p = [len(r["prompt"].split()) for r in rows]
        words_c = [len(r["completion"].split()) for r in rows]
        inj = Counter()
        for r in rows:
            inj.update(r["meta"]["injected"])
        answers = [r["answer"] for r in rows]
        out[split] = {
            "rows": len(rows),
            "problems": len({r["meta"]["dag"] for r in rows}),
            "op": dict(sorted(Counter(r["meta"]["op"] for r in rows).items())),
            "prompt_words": round(statistics.mean(words_p), 1),
            "completion_words": round(statistics.mean(words_c), 1),
            "injected_per_row": {k: round(v / len(rows), 3) for k, v in sorted(inj.items())},
            "answer_mean": round(statistics.mean(answers), 2),
            "answer_zero": round(sum(a == 0 for a in answers) / len(answers), 3),
            "answer_mode_share": round(Counter(answers).most_common(1)[0][1] / len(answers), 3),
        }
    return out
