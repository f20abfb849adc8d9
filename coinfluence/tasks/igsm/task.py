"""iGSM as a :class:`~coinfluence.tasks.base.Task`: its splits, checker, behaviours and words.

Every problem is drawn from its own RNG stream ``(seed, split, index)``, and its solution from
two more streams (order/variables and text/injection), so the same seed gives the same problems,
ids and prompts whatever the behaviours: vanilla and BRIDGE data differ only in their completions.
"""

from __future__ import annotations

from ..base import Task
from ..data import SPLITS, DataConfig, check_op_ranges, distinct_problems, split_rng
from . import PRESETS, IGSMConfig, canonical_key, generate, get_preset, question, solution, vocabulary
from .check import ParseError, check_steps, count_behaviours, parse_question

DEFAULT_PRESET = "mini2"  # the study's scale
DEFAULT_SIZES = {
    "mini": {"sft": 4000, "rl": 10000, "eval": 500},
    "mini2": {"sft": 4000, "rl": 10000, "eval": 500},
    "paper": {"sft": 2000, "rl": 10000, "eval": 500},
}


def config(cfg: DataConfig) -> IGSMConfig:
    task = get_preset(cfg.preset, op_id=cfg.op_id, op_ood=cfg.op_ood, redundant=cfg.redundant,
                      const_range=cfg.const_range, answer_not_stated=cfg.answer_not_stated,
                      solution_format=cfg.solution_format, fixed_templates=cfg.fixed_templates,
                      solution_order=cfg.solution_order, possessive_tokens=cfg.possessive_tokens)
    check_op_ranges(task.op_id, task.op_ood)
    return task


def splits(cfg: DataConfig, task: IGSMConfig) -> dict[str, list[dict]]:
    sizes = cfg.sizes(DEFAULT_SIZES[cfg.preset])
    seen: set = set()
    return {split: _split_rows(cfg, task, split, sizes[split], seen) for split in SPLITS}


def _split_rows(cfg: DataConfig, task: IGSMConfig, split: str, size: int, seen: set) -> list[dict]:
    behaviours = cfg.behaviour_config()
    op_range = task.op_ood if split.endswith("ood") else task.op_id
    q_aug = cfg.question_aug if split == "sft" else 1
    a_aug = cfg.answer_aug if split == "sft" else 1
    rows: list[dict] = []
    draw = lambda rng: generate(rng, task, rng.randint(*op_range))  # noqa: E731
    for pid, index, problem in distinct_problems(cfg.seed, split, size, seen, draw, canonical_key):
        variants = _variants(problem, cfg, task, behaviours, pid, q_aug, a_aug)
        for j, (prompt, completion, stats) in enumerate(variants):
            rows.append({
                "id": pid if len(variants) == 1 else f"{pid}-{j}",
                "prompt": prompt,
                "completion": completion,
                "answer": problem.answer,
                "meta": {
                    "split": split, "seed": cfg.seed, "index": index, "op": problem.op,
                    "theme": problem.theme, "n_nodes": len(problem.nodes),
                    "n_necessary": len(problem.necessary), "n_redundant": len(problem.redundant),
                    "behaviours": cfg.behaviours, "injected": stats, "dag": canonical_key(problem),
                },
            })
    return rows


def _variants(problem, cfg, task, behaviours, pid, q_aug, a_aug):
    """(prompt, completion, injection stats) for each augmented copy; distinct texts only."""
    out, seen = [], set()
    for j in range(max(q_aug, a_aug) * 4):
        jq = j if q_aug > 1 else 0
        ja = j if a_aug > 1 else 0
        prompt = question(problem, task, split_rng(cfg.seed, pid, "question"), split_rng(cfg.seed, pid, "order", jq))
        # Answer augmentation's extra copies (ja >= 1) are other valid orders, so they keep a random one.
        question_rng = split_rng(cfg.seed, pid, "order", jq) if ja == 0 else None
        completion, stats = solution(problem, task, behaviours, split_rng(cfg.seed, pid, "solution", ja),
                                     split_rng(cfg.seed, pid, "text", ja), question_rng)
        if (prompt, completion) not in seen:
            seen.add((prompt, completion))
            out.append((prompt, completion, stats.as_dict()))
        if len(out) == max(q_aug, a_aug):
            break
    return out


def needed_steps(prompt: str) -> int | None:
    """Quantities a solution must compute: the asked one and everything it depends on."""
    try:
        return len(parse_question(prompt).necessary())
    except ParseError:
        return None


TASK = Task(
    name="igsm",
    summary="iGSM-style math word problems over a DAG of quantities",
    presets=(DEFAULT_PRESET, *(p for p in PRESETS if p != DEFAULT_PRESET)),
    config=config,
    splits=splits,
    check_steps=check_steps,
    count_behaviours=count_behaviours,
    vocabulary=vocabulary,
    possessive_tokens=lambda config: bool(config.get("possessive_tokens", False)),
    needed_steps=needed_steps,
)
