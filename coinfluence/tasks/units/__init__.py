"""Unit-conversion chains as a :class:`~coinfluence.tasks.base.Task` (the second DAG task).

"A box holds 3 jars. A jar holds 6 beads. Question: how many beads are in a box?" In- and
out-of-distribution splits differ by conversion depth. Two scales: ``mini`` (what the tiny model
learns on two CPU cores) and ``deep``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ...errors import UserError
from ..answer import ANSWER_CLOSE, ANSWER_OPEN
from ..base import Task
from ..bridge import random_topological_order
from ..data import SPLITS, DataConfig, check_op_ranges, distinct_problems, split_rng
from .check import check_steps, count_behaviours, needed_steps
from .text import TEMPLATES, render_question, render_solution, solution_order, statement_order
from .world import CONTAINERS, ITEMS, build_problem, canonical_key


@dataclass(frozen=True)
class UnitsConfig:
    depth_id: tuple[int, int] = field(metadata={"help": "conversion depth of in-distribution splits"})
    depth_ood: tuple[int, int] = field(metadata={"help": "conversion depth of out-of-distribution splits"})
    redundant: tuple[int, int] = field(default=(0, 0), metadata={"help": "unneeded containers stated per question"})
    count_range: tuple[int, int] = field(default=(2, 4), metadata={"help": "how many of a smaller kind a container holds"})
    items_range: tuple[int, int] = field(default=(2, 9), metadata={"help": "items an innermost container holds"})
    p_second: float = field(default=0.5, metadata={"help": "chance that a container also holds a second kind"})
    max_value: int = field(default=200, metadata={"help": "most items any container holds"})
    containers: int = field(default=len(CONTAINERS), metadata={"help": "container names drawn from (the first of world.CONTAINERS)"})
    items: int = field(default=len(ITEMS), metadata={"help": "item names drawn from (the first of world.ITEMS)"})
    shuffled: bool = field(default=True, metadata={"help": "state the containers in a random order (else innermost first)"})


PRESETS = {
    # Depth 1-2, no distractor, six container names, small numbers, containers stated innermost
    # first (so the solution follows the question line by line): what the tiny model learns in a few
    # hundred SFT steps. With the containers shuffled it wrote no container name right after 300.
    "mini": UnitsConfig(depth_id=(1, 2), depth_ood=(3, 3), count_range=(2, 3), items_range=(2, 5), p_second=0.3,
                        max_value=100, containers=6, items=3, shuffled=False),
    "deep": UnitsConfig(depth_id=(2, 4), depth_ood=(5, 6), redundant=(1, 3), max_value=9999),
}
DEFAULT_SIZES = {"mini": {"sft": 4000, "rl": 10000, "eval": 500}, "deep": {"sft": 4000, "rl": 10000, "eval": 500}}
IGSM_ONLY = ("answer_not_stated", "solution_format", "solution_order", "possessive_tokens", "fixed_templates")


def config(cfg: DataConfig) -> UnitsConfig:
    given = [name for name in IGSM_ONLY if getattr(cfg, name) is not None]
    if given:
        raise UserError(f"--{given[0].replace('_', '-')} is an option of task igsm; task units has no such option")
    task = replace(PRESETS[cfg.preset], **{k: v for k, v in (("depth_id", cfg.op_id), ("depth_ood", cfg.op_ood),
                                                              ("redundant", cfg.redundant), ("items_range", cfg.const_range)) if v})
    for name in ("depth_id", "depth_ood", "redundant", "items_range"):
        lo, hi = getattr(task, name)
        if not (0 if name == "redundant" else 1) <= lo <= hi:
            raise UserError(f"{name.replace('_', '-')} range {lo}-{hi} must be ordered and start at {0 if name == 'redundant' else 1} or more")
    check_op_ranges(task.depth_id, task.depth_ood, "depth")
    if max(task.depth_ood[1], task.depth_id[1]) + task.redundant[1] + 1 > task.containers:
        raise UserError(f"this many levels and distractors need more than the {task.containers} container names")
    return task


def _variants(problem, cfg: DataConfig, task: UnitsConfig, pid: str, behaviours, n: int) -> list[tuple[str, str, dict]]:
    """(prompt, completion, injection stats) of each augmented copy: other sentence orders
    (``question_aug``) or other solution orders (``answer_aug``); distinct texts only."""
    out, seen = [], set()
    for j in range(4 * n):
        jq = j if cfg.question_aug > 1 else 0
        statements = statement_order(problem, split_rng(cfg.seed, pid, "order", jq) if task.shuffled or jq else None)
        if cfg.answer_aug > 1 and j:
            parents = {i: tuple(p for _, p in problem.containers[i].parts) for i in problem.necessary}
            order = random_topological_order(parents, sorted(problem.necessary), split_rng(cfg.seed, pid, "solution", j))
        else:
            order = solution_order(problem, statements)
        completion, stats = render_solution(problem, order, behaviours, split_rng(cfg.seed, pid, "text", j if cfg.answer_aug > 1 else 0))
        prompt = render_question(problem, statements)
        if (prompt, completion) not in seen:
            seen.add((prompt, completion))
            out.append((prompt, completion, stats.as_dict()))
        if len(out) == n:
            break
    return out


def _split_rows(cfg: DataConfig, task: UnitsConfig, split: str, size: int, seen: set) -> list[dict]:
    depths = task.depth_ood if split.endswith("ood") else task.depth_id
    copies = max(cfg.question_aug, cfg.answer_aug) if split == "sft" else 1
    behaviours, rows = cfg.behaviour_config(), []
    draw = lambda rng: build_problem(rng, task, rng.randint(*depths))  # noqa: E731
    for pid, index, problem in distinct_problems(cfg.seed, split, size, seen, draw, canonical_key):
        variants = _variants(problem, cfg, task, pid, behaviours, copies)
        for j, (prompt, completion, stats) in enumerate(variants):
            rows.append({
                "id": pid if len(variants) == 1 else f"{pid}-{j}", "prompt": prompt, "completion": completion,
                "answer": problem.answer,
                "meta": {"split": split, "seed": cfg.seed, "index": index, "op": problem.depth, "item": problem.item,
                         "n_nodes": len(problem.containers), "n_necessary": len(problem.necessary),
                         "n_redundant": len(problem.redundant), "behaviours": cfg.behaviours, "injected": stats,
                         "dag": canonical_key(problem)},
            })
    return rows


def splits(cfg: DataConfig, task: UnitsConfig) -> dict[str, list[dict]]:
    sizes = cfg.sizes(DEFAULT_SIZES[cfg.preset])
    seen: set = set()
    return {split: _split_rows(cfg, task, split, sizes[split], seen) for split in SPLITS}


def vocabulary(preset: str | None = None) -> list[str]:
    """Every word and symbol the generator can emit at ``preset`` (every preset's when None)."""
    cfg = PRESETS.get(preset, UnitsConfig(depth_id=(1, 1), depth_ood=(2, 2)))
    words = [w for pair in CONTAINERS[: cfg.containers] for w in pair] + list(ITEMS[: cfg.items])
    for t in TEMPLATES:
        words += re.sub(r"\{\w+\}", " ", t).split()
    words += ["and", ",", ".", "?", ":", "=", "+", "*", *map(str, range(10)), ANSWER_OPEN, ANSWER_CLOSE]
    return sorted(set(words))


TASK = Task(
    name="units",
    summary="unit-conversion chains: how many items one container holds",
    presets=tuple(PRESETS),
    config=config,
    splits=splits,
    check_steps=check_steps,
    count_behaviours=count_behaviours,
    vocabulary=vocabulary,
    needed_steps=needed_steps,
)
