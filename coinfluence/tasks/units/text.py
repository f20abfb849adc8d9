"""Questions and (behaviour-injected) solutions of unit-conversion problems.

Question: every stated container in a shuffled order, then the question::

    A jar holds 6 beads. A bag holds 2 boxes and 4 jars. A box holds 3 jars.
    Question: how many beads are in a bag?

Solution: one line per container, innermost first, in the question's order among the ready
ones; each line names what the container holds, substitutes the values, and ends in items::

    A jar = 6 beads.
    A box = 3 jars = 3 * 6 = 18 beads.
    A bag = 2 boxes + 4 jars = 2 * 18 + 4 * 6 = 60 beads.
    <answer>60</answer>

Behaviour injection is ``bridge.inject`` on the trace ``trace_graph`` exposes: exploration tries
a container whose contents are not known yet (and comes back to it), exploitation restates a
container's fact before solving it and writes the products as a sub-goal (``= 36 + 24 =``).
"""

from __future__ import annotations

import random

from ..answer import format_answer
from ..bridge import Attempt, BehaviourConfig, InjectionStats, TraceGraph, inject
from .world import PLURAL, Container, Problem

STATEMENT = "A {x} holds {parts}."
QUESTION = "Question: how many {item} are in a {x}?"
STEP = "A {x} = {rhs} {item}."
ATTEMPT = "Try a {x}: it needs {missing}, which {be} not known yet."
EARLY = "Try a {x}: all it holds is known, so do it now."
REVISIT = "Back to a {x}: all it holds is known now."
RESTATE = "Recall that a {x} holds {parts}."
TEMPLATES = (STATEMENT, QUESTION, STEP, ATTEMPT, EARLY, REVISIT, RESTATE)


def join_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def contents(problem: Problem, c: Container) -> str:
    """``2 boxes and 4 jars`` (or ``6 beads``): what one ``c`` holds, as the question says it."""
    if c.items is not None:
        return f"{c.items} {problem.item}"
    return join_list([f"{n} {PLURAL[problem.containers[i].name]}" for n, i in c.parts])


def statement_order(problem: Problem, order_rng: random.Random | None) -> list[int]:
    """The containers in a shuffled order, or innermost first (the order they were made) without a
    ``order_rng``."""
    stated = list(range(len(problem.containers)))
    if order_rng is not None:
        order_rng.shuffle(stated)
    return stated


def render_question(problem: Problem, order: list[int]) -> str:
    sentences = [STATEMENT.format(x=problem.containers[i].name, parts=contents(problem, problem.containers[i])) for i in order]
    return " ".join([*sentences, QUESTION.format(item=problem.item, x=problem.containers[problem.target].name)])


def solution_order(problem: Problem, statements: list[int]) -> tuple[int, ...]:
    """The necessary containers, each time the first one in ``statements`` whose parts are known."""
    solved: list[int] = []
    pending = [i for i in statements if i in problem.necessary]
    while pending:
        ready = next(i for i in pending if all(p in solved for _, p in problem.containers[i].parts))
        solved.append(ready)
        pending.remove(ready)
    return tuple(solved)


def trace_graph(problem: Problem, order: tuple[int, ...]) -> TraceGraph:
    """The solution trace that behaviour injection rewrites (an innermost container's one input
    is its count of items)."""
    cs = problem.containers
    return TraceGraph(
        order=order,
        parents={i: tuple(p for _, p in c.parts) for i, c in enumerate(cs)},
        n_inputs={i: max(1, len(c.parts)) for i, c in enumerate(cs)},
        restatable=frozenset(problem.necessary),
        redundant=problem.redundant,
        expandable=frozenset(i for i in problem.necessary if len(cs[i].parts) >= 2),
    )


def equation(problem: Problem, c: Container, expand: bool) -> str:
    """``2 boxes + 4 jars = 2 * 18 + 4 * 6 [= 36 + 24] = 60`` (``6`` for an innermost container)."""
    if c.items is not None:
        return str(c.items)
    cs = problem.containers
    chain = [" + ".join(f"{n} {PLURAL[cs[i].name]}" for n, i in c.parts),
             " + ".join(f"{n} * {cs[i].value}" for n, i in c.parts)]
    if expand:
        chain.append(" + ".join(str(n * cs[i].value) for n, i in c.parts))
    return " = ".join([*chain, str(c.value)])


def render_solution(problem: Problem, order: tuple[int, ...], behaviours: BehaviourConfig,
                    text_rng: random.Random) -> tuple[str, InjectionStats]:
    cs = problem.containers
    events, stats = inject(trace_graph(problem, order), behaviours, text_rng)
    lines = []
    for ev in events:
        x = cs[ev.node].name
        if isinstance(ev, Attempt):
            missing = [f"a {cs[m].name}" for m in ev.missing]
            lines.append(ATTEMPT.format(x=x, missing=join_list(missing), be="is" if len(missing) == 1 else "are"))
            continue
        if ev.early:
            lines.append(EARLY.format(x=x))
        if ev.revisit:
            lines.append(REVISIT.format(x=x))
        if ev.restate:
            lines.append(RESTATE.format(x=x, parts=contents(problem, cs[ev.node])))
        lines.append(STEP.format(x=x, rhs=equation(problem, cs[ev.node], ev.expand), item=problem.item))
    lines.append(format_answer(problem.answer))
    return "\n".join(lines), stats
