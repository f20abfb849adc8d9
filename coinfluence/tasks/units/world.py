"""Unit-conversion problems: containers that hold counts of smaller containers, down to
containers that hold loose items; the question asks how many items one outer container holds.

Every container's value (items in one) is the sum of count x value over what it holds, so a
problem is a DAG whose operations are multiply-and-add, unlike iGSM's copy/add/mul/diff/sum.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

ITEMS = ("beads", "coins", "seeds", "stamps", "marbles", "buttons", "shells", "pins")
# (singular, plural); no name starts with a vowel, so "a" is always the article.
CONTAINERS = (
    ("box", "boxes"), ("bag", "bags"), ("jar", "jars"), ("crate", "crates"), ("tray", "trays"),
    ("tin", "tins"), ("cup", "cups"), ("sack", "sacks"), ("case", "cases"), ("pack", "packs"),
    ("pouch", "pouches"), ("basket", "baskets"), ("drawer", "drawers"), ("chest", "chests"),
    ("shelf", "shelves"), ("cart", "carts"), ("bin", "bins"), ("pot", "pots"),
)
PLURAL = dict(CONTAINERS)
SINGULAR = {p: s for s, p in CONTAINERS}


@dataclass(frozen=True)
class Container:
    name: str  # singular
    parts: tuple[tuple[int, int], ...]  # (count, index of a container made earlier); () when it holds items
    items: int | None  # loose items held (innermost containers only)
    value: int  # items in one


@dataclass(frozen=True)
class Problem:
    item: str  # what is counted (plural)
    containers: tuple[Container, ...]  # every part points to an earlier container
    target: int
    necessary: frozenset  # the target and everything inside it
    redundant: tuple[int, ...]  # stated, never needed
    depth: int  # conversion levels above the innermost container on the target's longest chain

    @property
    def answer(self) -> int:
        return self.containers[self.target].value


def _value(containers: list[Container], parts, items) -> int:
    return items if items is not None else sum(c * containers[i].value for c, i in parts)


def _new(containers: list, names: list, parts=(), items=None) -> int:
    containers.append(Container(names.pop(), tuple(parts), items, _value(containers, parts, items)))
    return len(containers) - 1


def _spine(rng: random.Random, cfg, depth: int, names: list) -> list[Container]:
    """Innermost container, then ``depth`` containers each holding the previous one and, with
    probability ``p_second``, a second, smaller kind (an earlier container or a new innermost one)."""
    out: list[Container] = []
    _new(out, names, items=rng.randint(*cfg.items_range))
    for _ in range(depth):
        parts = [(rng.randint(*cfg.count_range), len(out) - 1)]
        if rng.random() < cfg.p_second:
            earlier = [i for i in range(len(out) - 1)]
            second = rng.choice(earlier) if earlier and rng.random() < 0.5 else _new(out, names, items=rng.randint(*cfg.items_range))
            parts.append((rng.randint(*cfg.count_range), second))
        _new(out, names, parts=parts)
    return out


def _inside(containers, target: int) -> frozenset:
    seen, stack = {target}, [target]
    while stack:
        for _, i in containers[stack.pop()].parts:
            if i not in seen:
                seen.add(i)
                stack.append(i)
    return frozenset(seen)


def build_problem(rng: random.Random, cfg, depth: int, max_tries: int = 200) -> Problem:
    """A problem of exactly ``depth`` levels whose every value is at most ``cfg.max_value``
    (redrawn until it fits)."""
    for _ in range(max_tries):
        names = [n for n, _ in CONTAINERS[: cfg.containers]]
        rng.shuffle(names)
        try:
            containers = _spine(rng, cfg, depth, names)
            target = len(containers) - 1
            for _ in range(rng.randint(*cfg.redundant)):  # a container holding some stated one: locked until it is known
                _new(containers, names, parts=[(rng.randint(*cfg.count_range), rng.randrange(len(containers)))])
        except IndexError:  # more containers than names: draw again (a plain spine always fits, see config)
            continue
        if max(c.value for c in containers) <= cfg.max_value:
            necessary = _inside(containers, target)
            redundant = tuple(i for i in range(len(containers)) if i not in necessary)
            return Problem(rng.choice(ITEMS[: cfg.items]), tuple(containers), target, necessary, redundant, depth)
    raise ValueError(f"no problem of depth {depth} fits max_value {cfg.max_value}")


def canonical_key(problem: Problem) -> str:
    """The problem's facts and question, independent of statement order (splits are disjoint by it)."""
    facts = sorted(
        (c.name, c.items, sorted((n, problem.containers[i].name) for n, i in c.parts)) for c in problem.containers
    )
    return json.dumps([problem.item, problem.containers[problem.target].name, facts])
