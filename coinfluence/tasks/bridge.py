"""Behaviour injection (BRIDGE): rewrite a solution *trace over a DAG* so that it contains
exploratory and exploitative behaviours.

A task that wants injection describes its solution as a :class:`TraceGraph` (a topological
order of the necessary nodes, their parents, how many inputs each has, which nodes may be
restated, and the redundant nodes). :func:`inject` turns that into a list of events,
:class:`Solve` and :class:`Attempt`; the task renders the events as text. Nothing here
knows about words, so a second DAG-shaped task reuses it unchanged.

- exploration: at an eligible step (at least one node solved, more than one left, and the
  previous event a successful solve) with probability ``p_explore`` attempt a later node;
  if it is locked, name its missing inputs and move on (never two failed attempts in a
  row), and refer back to the attempt when it is solved; if it is unlocked, solve it early.
- exploitation: before solving a restatable node, restate what defines it with a
  probability that grows with its number of inputs (constants counted); and expand multi-term
  arithmetic into sub-goals (sums of three or more terms, unless the task names its
  ``expandable`` nodes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Hashable

Node = Hashable


@dataclass(frozen=True)
class TraceGraph:
    order: tuple[Node, ...]  # a topological order of the necessary nodes; the last is asked
    parents: dict  # node -> tuple of parent nodes (necessary and redundant nodes alike)
    n_inputs: dict  # node -> number of inputs, constants counted
    restatable: frozenset = frozenset()  # nodes whose definition may be restated
    redundant: tuple[Node, ...] = ()  # stated but not needed; may be attempted
    expandable: frozenset | None = None  # nodes whose arithmetic may become sub-goals; None: three or more parents


@dataclass(frozen=True)
class Solve:
    node: Node
    restate: bool = False  # exploitation: restate the defining information first
    expand: bool = False  # exploitation: write multi-term arithmetic as sub-goals
    revisit: bool = False  # exploration: this node was attempted earlier while locked
    early: bool = False  # exploration: attempted and found solvable, solved out of order


@dataclass(frozen=True)
class Attempt:
    node: Node
    missing: tuple[Node, ...]  # the inputs not known yet


@dataclass(frozen=True)
class BehaviourConfig:
    explore: bool = False
    p_explore: float = field(default=0.3, metadata={"help": "probability of an exploration attempt at an eligible step"})
    p_attempt_redundant: float = field(default=0.25, metadata={"help": "share of attempts aimed at a locked redundant node"})
    exploit: bool = False
    # Restating probability for 1, 2, 3 and >=4 inputs (constants counted).
    p_restate: tuple[float, float, float, float] = (0.1, 0.4, 0.8, 1.0)
    p_exploit: float = field(default=1.0, metadata={"help": "scale on the restating probabilities (the injection-probability sweep)"})
    expand_arithmetic: bool = True

    @property
    def name(self) -> str:
        return {(False, False): "none", (True, False): "explore", (False, True): "exploit", (True, True): "both"}[
            (self.explore, self.exploit)
        ]


BEHAVIOURS = ("none", "explore", "exploit", "both")


def behaviour_preset(name: str, **overrides) -> BehaviourConfig:
    """``none``, ``explore``, ``exploit`` or ``both`` (= BRIDGE), with optional overrides."""
    if name not in BEHAVIOURS:
        raise ValueError(f"unknown behaviours {name!r}; choose one of {', '.join(BEHAVIOURS)}")
    return BehaviourConfig(explore=name in ("explore", "both"), exploit=name in ("exploit", "both"), **overrides)


def restate_probability(cfg: BehaviourConfig, n_inputs: int) -> float:
    return min(1.0, cfg.p_exploit * cfg.p_restate[min(max(n_inputs, 1), 4) - 1])


@dataclass
class InjectionStats:
    explore_eligible: int = 0  # eligible steps with at least one candidate
    attempts: int = 0  # locked attempts (failed)
    early: int = 0  # attempts that found the node solvable
    revisits: int = 0
    restates: int = 0
    expansions: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def inject(graph: TraceGraph, cfg: BehaviourConfig, rng: random.Random) -> tuple[list, InjectionStats]:
    stats = InjectionStats()
    remaining = list(graph.order)
    solved: set = set()
    attempted: set = set()
    events: list = []

    def solve(node, early=False):
        restate = (
            cfg.exploit
            and node in graph.restatable
            and rng.random() < restate_probability(cfg, graph.n_inputs[node])
        )
        expandable = node in graph.expandable if graph.expandable is not None else len(graph.parents[node]) >= 3
        expand = cfg.exploit and cfg.expand_arithmetic and expandable
        revisit = node in attempted
        stats.restates += restate
        stats.expansions += expand
        stats.revisits += revisit
        events.append(Solve(node, restate=restate, expand=expand, revisit=revisit, early=early))
        solved.add(node)
        remaining.remove(node)

    while remaining:
        eligible = cfg.explore and solved and len(remaining) > 1 and isinstance(events[-1], Solve)
        if eligible:
            later = [n for n in remaining[1:] if n not in attempted]
            locked_redundant = [
                n for n in graph.redundant
                if n not in attempted and any(p not in solved for p in graph.parents[n])
            ]
            if later or locked_redundant:
                stats.explore_eligible += 1
                if rng.random() < cfg.p_explore:
                    if locked_redundant and (not later or rng.random() < cfg.p_attempt_redundant):
                        target = rng.choice(locked_redundant)
                    else:
                        target = rng.choice(later)
                    missing = tuple(p for p in graph.parents[target] if p not in solved)
                    if missing:
                        attempted.add(target)
                        stats.attempts += 1
                        events.append(Attempt(target, missing))
                    else:
                        stats.early += 1
                        solve(target, early=True)
                    continue
        solve(remaining[0])
    return events, stats


def random_topological_order(parents: dict, nodes, rng: random.Random) -> tuple:
    """A uniformly chosen next node among the ready ones, step by step."""
    nodes = list(nodes)
    pending = {n: {p for p in parents[n] if p in parents and p in set(nodes)} for n in nodes}
    order = []
    ready = sorted((n for n in nodes if not pending[n]), key=nodes.index)
    while ready:
        n = ready.pop(rng.randrange(len(ready)))
        order.append(n)
        for m in nodes:
            if n in pending[m]:
                pending[m].discard(n)
                if not pending[m]:
                    ready.append(m)
    if len(order) != len(nodes):
        raise ValueError("the graph has a cycle")
    return tuple(order)
