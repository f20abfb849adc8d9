"""Read a unit-conversion question back into its facts and check a solution line by line.

From text alone, like iGSM's checker: every line with `` = `` is a solved step, checked for a
stated container not solved before, contents that match the question, values substituted from
earlier steps, arithmetic and the value; behaviour lines hold no equation and are skipped.
Nothing here raises on bad text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..answer import extract_answer
from ..arithmetic import evaluate_numbers, tokenize
from ..base import UNREADABLE, StepReport
from . import text as T
from .world import SINGULAR

_STATEMENT = re.compile(r"A ([a-z]+) holds (.+)\.")
_QUESTION = re.compile(r"Question: how many ([a-z]+) are in a ([a-z]+)\?")
_STEP = re.compile(r"A ([a-z]+) = (.+?) ([a-z]+)\.")
_TERM = re.compile(r"(\d+) ([a-z]+)")


class ParseError(ValueError):
    pass


@dataclass
class Facts:
    item: str
    holds: dict  # container -> {container: count}, or the int count of items of an innermost one
    target: str
    values: dict = field(default_factory=dict)


def _contents(text: str, item: str | None):
    """``{container: count}`` of ``2 boxes and 4 jars``, or the int of ``6 beads`` (``item``)."""
    terms = [_TERM.fullmatch(t) for t in re.split(r", | and ", text)]
    if not all(terms):
        raise ParseError(f"cannot read {text!r}")
    if len(terms) == 1 and terms[0].group(2) == item:
        return int(terms[0].group(1))
    if any(t.group(2) not in SINGULAR for t in terms):
        raise ParseError(f"unknown container in {text!r}")
    return {SINGULAR[t.group(2)]: int(t.group(1)) for t in terms}


def parse_question(prompt: str) -> Facts:
    sentences = re.split(r"(?<=[.?])\s+", (prompt or "").strip())
    asked = _QUESTION.fullmatch(sentences[-1])
    if not asked:
        raise ParseError("no question sentence")
    facts = Facts(item=asked.group(1), holds={}, target=asked.group(2))
    for s in sentences[:-1]:
        m = _STATEMENT.fullmatch(s)
        if not m or m.group(1) in facts.holds:
            raise ParseError(f"unknown or repeated sentence: {s!r}")
        facts.holds[m.group(1)] = _contents(m.group(2), facts.item)
    _evaluate(facts)
    return facts


def _evaluate(facts: Facts) -> None:
    visiting: set = set()

    def value(name):
        if name in facts.values:
            return facts.values[name]
        if name not in facts.holds or name in visiting:
            raise ParseError(f"{name} is never stated or holds itself")
        visiting.add(name)
        held = facts.holds[name]
        facts.values[name] = held if isinstance(held, int) else sum(n * value(c) for c, n in held.items())
        return facts.values[name]

    for name in [*facts.holds, facts.target]:
        value(name)


def inside(facts: Facts, name: str) -> set:
    """``name`` and every container it holds, directly or not: what a solution of it must solve."""
    held = facts.holds.get(name)
    out = {name}
    for child in held if isinstance(held, dict) else ():
        out |= inside(facts, child)
    return out


def needed_steps(prompt: str) -> int | None:
    """Steps a solution must take: the asked container and every container inside it."""
    try:
        facts = parse_question(prompt)
    except ParseError:
        return None
    return len(inside(facts, facts.target))


def _check_line(facts: Facts, line: str, solved: dict):
    """``(container, value)`` of a correct step, or ``(verdict, detail)`` as an error."""
    m = _STEP.fullmatch(line.strip())
    if not m:
        return None, ("unparseable_step", "not 'A container = ... items.'")
    name, parts = m.group(1), m.group(2).split(" = ")
    if name not in facts.holds:
        return None, ("unknown_quantity", f"{name} is not in the problem")
    if m.group(3) != facts.item:
        return None, ("wrong_inputs", f"counts {m.group(3)}, not {facts.item}")
    if name in solved:
        return None, ("redefined", f"{name} is solved twice")
    held = facts.holds[name]
    if isinstance(held, int):
        if len(parts) != 1 or parts[0] != str(held):
            return None, ("wrong_value", f"a {name} holds {held} {facts.item}")
        return (name, held), None
    terms = [_TERM.fullmatch(t) for t in parts[0].split(" + ")]
    if not all(terms) or any(t.group(2) not in SINGULAR for t in terms) or len(parts) < 3:
        return None, ("unparseable_step", "bad contents")
    written = [(int(t.group(1)), SINGULAR[t.group(2)]) for t in terms]
    if {c: n for n, c in written} != held or len(written) != len(held):
        return None, ("wrong_inputs", "contents do not match the problem")
    unknown = [c for _, c in written if c not in solved]
    if unknown:
        return None, ("undefined_variable", f"{unknown[0]} is not solved yet")
    if parts[1] != " + ".join(f"{n} * {solved[c]}" for n, c in written):
        return None, ("wrong_substitution", "values substituted wrongly")
    numeric = [tokenize(p) for p in parts[1:]]
    if any(t is None for t in numeric) or len(numeric[-1]) != 1:
        return None, ("unparseable_step", "the chain does not end in a number")
    values = [evaluate_numbers(t) for t in numeric]
    # Substituted values are those of checked steps, so a chain whose parts agree ends in the true value.
    if any(v is None for v in values) or any(a != b for a, b in zip(values, values[1:])):
        return None, ("wrong_arithmetic", "a sub-goal does not equal the previous one")
    return (name, values[-1]), None


def check_steps(prompt: str, completion: str) -> StepReport:
    try:
        facts = parse_question(prompt)
    except ParseError as e:
        return StepReport(UNREADABLE, 0, None, str(e))
    solved: dict[str, int] = {}
    n = 0
    for line in (completion or "").splitlines():
        if " = " not in line:
            continue  # behaviour lines and the answer
        n += 1
        step, error = _check_line(facts, line, solved)
        if error:
            return StepReport(error[0], n, n, f"step {n}: {error[1]}: {line.strip()!r}")
        solved[step[0]] = step[1]
    if facts.target not in solved:
        return StepReport("missing_target", n, None, "the asked container is never solved")
    got, want = extract_answer(completion), facts.values[facts.target]
    if got is None:
        return StepReport("no_answer", n, None, "no answer marker")
    if got != want:
        return StepReport("wrong_final_answer", n, None, f"answer {got} should be {want}")
    return StepReport("correct", n)


BEHAVIOURS = ("attempts", "early", "revisits", "restates", "expansions")  # InjectionStats' names


def _line_regex(template: str) -> re.Pattern:
    return re.compile(".+?".join(re.escape(p) for p in re.split(r"\{\w+\}", template)))


_BEHAVIOUR_LINES = {"attempts": _line_regex(T.ATTEMPT), "early": _line_regex(T.EARLY),
                    "revisits": _line_regex(T.REVISIT), "restates": _line_regex(T.RESTATE)}
_SUBGOAL = re.compile(r"\d+( \+ \d+)+")  # products already multiplied out: "36 + 24"


def count_behaviours(completion: str) -> dict[str, int]:
    """Lines of each injected behaviour in a completion (what ``meta.injected`` counts)."""
    counts = dict.fromkeys(BEHAVIOURS, 0)
    for line in (completion or "").splitlines():
        line = line.strip()
        kind = next((k for k, p in _BEHAVIOUR_LINES.items() if p.fullmatch(line)), None)
        if kind is not None:
            counts[kind] += 1
        elif any(_SUBGOAL.fullmatch(part) for part in line.split(" = ")):
            counts["expansions"] += 1
    return counts
