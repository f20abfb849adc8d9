"""Turn a :class:`Problem` into a question and a (possibly behaviour-injected) solution.

Two surface knobs, both recorded in the task config: ``solution_format`` writes each solved step
with a variable letter (``variables``, iGSM's style: "Define each Barn's Cow as w; so w = x + y =
9 + 5 = 14.") or with quantity names only (``names``: "Each Barn's Cow = each Elm's Mill + each
Coop's Hen = 9 + 5 = 14."); ``fixed_templates`` uses the first template of every kind instead of a
random one, so the text carries no choices beyond the solution itself.
"""

from __future__ import annotations

import random

from ..answer import format_answer
from ..bridge import Attempt, BehaviourConfig, InjectionStats, Solve, TraceGraph, inject, random_topological_order
from . import templates as T
from .dag import Node, Problem, phrase

# Letters usable as variables; 'a' and 'i' are left out because they are English words.
_LOWER = "bcdefghjklmnopqrstuvwxyz"
VARIABLES = _LOWER + _LOWER.upper()


def join_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _slots(problem: Problem, node: Node) -> dict:
    names = [phrase(problem.nodes[p].key) for p in node.parents]
    slots = {"x": phrase(node.key), "c": node.const}
    if names:
        slots.update(p=names[0], p1=names[0], p2=names[-1], ps=join_list(names))
    slots["X"] = cap(slots["x"])
    return slots


SOLUTION_FORMATS = ("variables", "names")


def pick_template(rng: random.Random, templates: tuple[str, ...], fixed: bool) -> str:
    """One template of a kind: the first when ``fixed`` (no draw), else a random one."""
    return templates[0] if fixed else rng.choice(templates)


def statement(problem: Problem, node: Node, rng: random.Random, fixed: bool = False) -> str:
    return pick_template(rng, T.STATEMENTS[node.op], fixed).format(**_slots(problem, node))


def stated_nodes(problem: Problem) -> list[int]:
    """Nodes the question states (abstract quantities are implicit), in node order."""
    return [i for i, n in enumerate(problem.nodes) if n.op != "abstract"]


def statement_order(problem: Problem, order_rng: random.Random) -> list[int]:
    """The stated nodes in the order the question states them (what ``render_question`` does
    with the same ``order_rng``)."""
    stated = stated_nodes(problem)
    position = list(range(len(stated)))
    order_rng.shuffle(position)
    return [stated[k] for k in position]


def render_question(problem: Problem, rng: random.Random, order_rng: random.Random | None = None,
                    *, fixed_templates: bool = False) -> str:
    """Every stated quantity (necessary and redundant; abstract ones are implicit) in a
    shuffled order, then the question."""
    sentences = {i: statement(problem, problem.nodes[i], rng, fixed_templates) for i in stated_nodes(problem)}
    question = pick_template(rng, T.QUESTIONS, fixed_templates).format(x=phrase(problem.nodes[problem.target].key))
    # Templates are drawn before the shuffle, so ``order_rng=None`` keeps the one-stream behaviour.
    order = statement_order(problem, order_rng or rng)
    return " ".join([sentences[i] for i in order] + [question])


def question_order(problem: Problem, statements: list[int]) -> tuple[int, ...]:
    """A deterministic topological order of the necessary nodes that follows the question: at
    each step an implicit (abstract) quantity whose parts are all solved, else the first stated
    quantity, in question order, whose inputs are all solved. Reading the question top to bottom
    and coming back to what was not ready is the whole procedure, so a model need not guess
    which of several ready quantities comes next."""
    nodes, needed = problem.nodes, problem.necessary
    pending = [i for i in statements if i in needed]
    implicit = sorted(i for i in needed if nodes[i].op == "abstract")
    solved: list[int] = []
    while len(solved) < len(needed):
        ready = [i for i in implicit + pending if i not in solved and all(p in solved for p in nodes[i].parents)]
        solved.append(ready[0])
    return tuple(solved)


def trace_graph(problem: Problem, order: tuple[int, ...]) -> TraceGraph:
    nodes = problem.nodes
    return TraceGraph(
        order=order,
        parents={i: n.parents for i, n in enumerate(nodes)},
        n_inputs={i: n.in_degree for i, n in enumerate(nodes)},
        restatable=frozenset(i for i in problem.necessary if nodes[i].op != "abstract"),
        redundant=problem.redundant,
    )


def equation_chain(problem: Problem, node: Node, names: dict[int, str], expand: bool) -> str:
    """The right-hand side ``p + q + r = 13 + 5 + 6 = 18 + 6 = 24`` of a solved step, inputs
    written as ``names`` gives them (sub-goals only when ``expand``)."""
    vals = [problem.nodes[p].value for p in node.parents]
    syms = [names[p] for p in node.parents]
    c = node.const
    if node.op == "const":
        return f"{c}"
    if node.op == "copy" or (node.op == "abstract" and len(syms) == 1):
        return f"{syms[0]} = {vals[0]}"
    if node.op == "add":
        return f"{syms[0]} + {c} = {vals[0]} + {c} = {node.value}"
    if node.op == "mul":
        return f"{c} * {syms[0]} = {c} * {vals[0]} = {node.value}"
    if node.op == "diff":
        return f"{syms[0]} - {syms[1]} = {vals[0]} - {vals[1]} = {node.value}"
    parts = [" + ".join(syms), " + ".join(map(str, vals))]
    if expand:
        while len(vals) > 2:
            vals = [vals[0] + vals[1]] + vals[2:]
            parts.append(" + ".join(map(str, vals)))
    parts.append(str(node.value))
    return " = ".join(parts)


def _restate(problem: Problem, node: Node, rng: random.Random, fixed: bool) -> str:
    slots = _slots(problem, node)
    if node.op == "const":
        return pick_template(rng, T.RESTATE_CONST, fixed).format(**slots)
    facts = join_list([f"{phrase(problem.nodes[p].key)} is {problem.nodes[p].value}" for p in node.parents])
    desc = T.DESC[node.op].format(**slots)
    return pick_template(rng, T.RESTATE, fixed).format(desc=desc, facts=facts, **slots)


def render_solution(
    problem: Problem,
    behaviours: BehaviourConfig,
    order_rng: random.Random,
    text_rng: random.Random,
    *,
    solution_format: str = "variables",
    fixed_templates: bool = False,
    statements: list[int] | None = None,
) -> tuple[str, InjectionStats]:
    """The step-by-step solution. ``order_rng`` picks the topological order and variable
    letters (shared by every behaviour variant of a problem); ``text_rng`` picks phrasing and
    injections. With ``statements`` (the question's sentence order, ``statement_order``) the
    steps follow :func:`question_order` instead of a random topological order."""
    if solution_format not in SOLUTION_FORMATS:
        raise ValueError(f"unknown solution_format {solution_format!r}; choose one of {SOLUTION_FORMATS}")
    nodes = problem.nodes
    parents = {i: nodes[i].parents for i in problem.necessary}
    if statements is None:
        order = random_topological_order(parents, sorted(problem.necessary), order_rng)
    else:
        order = question_order(problem, statements)
    letters = order_rng.sample(VARIABLES if len(order) > len(_LOWER) else _LOWER, len(order))
    named = solution_format == "names"
    names = {i: phrase(nodes[i].key) for i in order} if named else dict(zip(order, letters))
    events, stats = inject(trace_graph(problem, order), behaviours, text_rng)
    lines = []
    for ev in events:
        node = nodes[ev.node]
        x = phrase(node.key)
        if isinstance(ev, Attempt):
            missing = [phrase(nodes[m].key) for m in ev.missing]
            be = "is" if len(missing) == 1 else "are"
            lines.append(pick_template(text_rng, T.ATTEMPT, fixed_templates).format(x=x, missing=join_list(missing), be=be))
            continue
        if ev.early:
            lines.append(pick_template(text_rng, T.EARLY, fixed_templates).format(x=x))
        if ev.revisit:
            lines.append(pick_template(text_rng, T.REVISIT, fixed_templates).format(x=x))
        if ev.restate:
            lines.append(_restate(problem, node, text_rng, fixed_templates))
        rhs = equation_chain(problem, node, names, ev.expand)
        template = pick_template(text_rng, T.SOLVE_NAMED if named else T.SOLVE, fixed_templates)
        lines.append(template.format(x=x, X=cap(x), v=names[ev.node], rhs=rhs))
    lines.append(format_answer(problem.answer))
    return "\n".join(lines), stats
