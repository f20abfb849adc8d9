"""Seeded dataset splits with paired behaviour variants and the paper's augmentation baselines.

Every problem is drawn from its own RNG stream ``(seed, split, index)``, and its solution
from two more streams (order/variables and text/injection), so the same seed gives the
same problems, ids and prompts whatever the behaviours: vanilla and BRIDGE data differ
only in their completions. Splits are kept disjoint by the canonical form of each
problem's DAG, not by its text.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UserError
import json

from ..io import (
    HF_DATASET_DICT_FILE, atomic_path, file_manifest, hf_datasets, manifest_mismatch, read_json, write_dataset_dict,
    write_json, write_jsonl,
)
from .bridge import BEHAVIOURS, behaviour_preset
from .igsm import IGSMConfig, canonical_key, generate, get_preset, question, solution

# Held-out splits are drawn first so that training splits can avoid every one of their problems.
SPLITS = ("test_id", "test_ood", "val_id", "val_ood", "rl_train", "sft")
DEFAULT_SIZES = {
    "mini": {"sft": 4000, "rl": 10000, "eval": 500},
    "mini2": {"sft": 4000, "rl": 10000, "eval": 500},
    "paper": {"sft": 2000, "rl": 10000, "eval": 500},
}
# Bounds that keep one command within a workstation's time and memory (a typo of a few zeros
# fails at once instead of running for hours).
MAX_SPLIT_SIZE = 1_000_000
MAX_AUGMENTATION = 64


@dataclass
class DataConfig:
    preset: str = field(default="mini2", metadata={"help": "task scale: mini2 (embedded default), mini or paper"})
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

    def sizes(self) -> dict[str, int]:
        d = DEFAULT_SIZES.get(self.preset, DEFAULT_SIZES["mini"])
        sft, rl, ev = (self.sft_size or d["sft"], self.rl_size or d["rl"], self.eval_size or d["eval"])
        return {"sft": sft, "rl_train": rl, "val_id": ev, "val_ood": ev, "test_id": ev, "test_ood": ev}

    def task(self) -> IGSMConfig:
        return get_preset(self.preset, op_id=self.op_id, op_ood=self.op_ood, redundant=self.redundant,
                          const_range=self.const_range, answer_not_stated=self.answer_not_stated,
                          solution_format=self.solution_format, fixed_templates=self.fixed_templates,
                          solution_order=self.solution_order, possessive_tokens=self.possessive_tokens)

    def validate(self) -> IGSMConfig:
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
        task = self.task()
        if task.op_id[1] >= task.op_ood[0] and task.op_ood[1] >= task.op_id[0]:
            raise UserError(f"op-id {task.op_id[0]}-{task.op_id[1]} and op-ood {task.op_ood[0]}-{task.op_ood[1]} overlap; "
                            "out-of-distribution ops must differ from the in-distribution ones")
        return task


def _rng(*parts) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, identically on every run and machine.
    return random.Random(":".join(map(str, parts)))


def _split_rows(cfg: DataConfig, task: IGSMConfig, split: str, size: int, seen: set) -> list[dict]:
    behaviours = behaviour_preset(
        cfg.behaviours,
        **{k: v for k, v in (("p_explore", cfg.p_explore), ("p_exploit", cfg.p_exploit)) if v is not None},
    )
    op_range = task.op_ood if split.endswith("ood") else task.op_id
    q_aug = cfg.question_aug if split == "sft" else 1
    a_aug = cfg.answer_aug if split == "sft" else 1
    rows: list[dict] = []
    accepted, index = 0, 0
    while accepted < size:
        if index - accepted > 50 * size + 1000:
            raise UserError(
                f"could only find {accepted} distinct {split} problems; the world is too small "
                "for this many: lower the size or widen the op range"
            )
        pid = f"{split}-{index:06d}"
        rng = _rng(cfg.seed, split, index)
        index += 1
        problem = generate(rng, task, rng.randint(*op_range))
        key = canonical_key(problem)
        if key in seen:
            continue
        seen.add(key)
        accepted += 1
        variants = _variants(problem, cfg, task, behaviours, pid, q_aug, a_aug)
        for j, (prompt, completion, stats) in enumerate(variants):
            rows.append({
                "id": pid if len(variants) == 1 else f"{pid}-{j}",
                "prompt": prompt,
                "completion": completion,
                "answer": problem.answer,
                "meta": {
                    "split": split, "seed": cfg.seed, "index": index - 1, "op": problem.op,
                    "theme": problem.theme, "n_nodes": len(problem.nodes),
                    "n_necessary": len(problem.necessary), "n_redundant": len(problem.redundant),
                    "behaviours": cfg.behaviours, "injected": stats, "dag": key,
                },
            })
    return rows


def _variants(problem, cfg, task, behaviours, pid, q_aug, a_aug):
    """(prompt, completion, injection stats) for each augmented copy; distinct texts only."""
    out, seen = [], set()
    for j in range(max(q_aug, a_aug) * 4):
        jq = j if q_aug > 1 else 0
        ja = j if a_aug > 1 else 0
        prompt = question(problem, task, _rng(cfg.seed, pid, "question"), _rng(cfg.seed, pid, "order", jq))
        # Answer augmentation's extra copies (ja >= 1) are other valid orders, so they keep a random one.
        question_rng = _rng(cfg.seed, pid, "order", jq) if ja == 0 else None
        completion, stats = solution(problem, task, behaviours, _rng(cfg.seed, pid, "solution", ja),
                                     _rng(cfg.seed, pid, "text", ja), question_rng)
        if (prompt, completion) not in seen:
            seen.add((prompt, completion))
            out.append((prompt, completion, stats.as_dict()))
        if len(out) == max(q_aug, a_aug):
            break
    return out


def make_dataset(cfg: DataConfig) -> dict[str, list[dict]]:
    task = cfg.validate()
    sizes = cfg.sizes()
    seen: set = set()
    splits = {split: _split_rows(cfg, task, split, sizes[split], seen) for split in SPLITS}
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
    splits = make_dataset(cfg)
    out_dir = Path(out_dir)
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
        "data": asdict(cfg), "task": asdict(task), "format": fmt,
        "counts": {s: len(r) for s, r in splits.items()},
        "files": file_manifest(out_dir, split_entries(fmt)),
    })
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
        differing = [k for k in wanted if saved.get("data", {}).get(k) != wanted[k]]
        if differing:
            detail = ", ".join(f"{k}={saved.get('data', {}).get(k)!r} (now {wanted[k]!r})" for k in differing)
            raise UserError(f"data in {data_dir} was generated with other options: {detail}; choose another --out")


def is_partial_dataset(data_dir: str | Path) -> bool:
    """A data dir a killed ``write_dataset`` left: no DATA_CONFIG, and only entries it writes
    (or its temporary files), so regenerating it replaces nothing else."""
    data_dir = Path(data_dir)
    own = {name for fmt in FORMATS for name in dataset_files(fmt)}
    return not (data_dir / DATA_CONFIG).exists() and all(
        e.name in own or (e.name.startswith(".") and e.name.endswith(".tmp")) for e in data_dir.iterdir())


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
