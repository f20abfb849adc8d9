"""Parse an iGSM question back into its DAG and check a solution step by step.

The checker works from text alone (prompt and completion), so it scores rows produced by
any engine. It skips exploration and restating lines (they hold no equation), and for each
solved step verifies the quantity, its inputs against the DAG, the substituted values, the
arithmetic of every sub-goal, and the value. Nothing here raises on bad text.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from ..answer import extract_answer
from ..arithmetic import evaluate_numbers, tokenize
from ..base import StepReport
from . import templates as T

NAME = r"(?:[A-Z][a-z]+ )*[A-Z][a-z]+"
QUANT = rf"[Ee]ach {NAME}'s (?:total )?{NAME}"
_QUANT_PARTS = re.compile(rf"[Ee]ach ({NAME})'s (total )?({NAME})")
_CHAIN = re.compile(r"(?<![\w'])([A-Za-z]) = (.+?)\.?\s*$")


class ParseError(ValueError):
    pass


def quantity_key(text: str) -> tuple[str, str, str]:
    m = _QUANT_PARTS.fullmatch(text)
    if not m:
        raise ParseError(f"not a quantity: {text!r}")
    owner, total, item = m.groups()
    return ("abs" if total else "inst", owner, item)


def _template_regex(template: str) -> re.Pattern:
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out.append(re.escape(template[pos : m.start()]))
        name = m.group(1)
        if name in ("X", "x"):
            out.append(f"(?P<x>{QUANT})")
        elif name in ("p", "p1", "p2"):
            out.append(f"(?P<{name}>{QUANT})")
        elif name == "ps":
            out.append(f"(?P<ps>{QUANT}(?:, {QUANT})* and {QUANT})")
        elif name == "c":
            out.append(r"(?P<c>\d+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


@lru_cache(maxsize=1)
def _statement_patterns():
    return [(op, _template_regex(t)) for op, ts in T.STATEMENTS.items() for t in ts]


@lru_cache(maxsize=1)
def _question_patterns():
    return [_template_regex(t) for t in T.QUESTIONS]


@dataclass
class ParsedProblem:
    defs: dict  # key -> (op, parent keys, const)
    target: tuple
    values: dict = field(default_factory=dict)

    def necessary(self) -> set:
        seen, stack = {self.target}, [self.target]
        while stack:
            for p in self.defs[stack.pop()][1]:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return seen

    def op_count(self) -> int:
        """``Σ max(1, in_degree − 1)`` over necessary quantities, constants counted."""
        total = 0
        for key in self.necessary():
            op, parents, const = self.defs[key]
            total += max(1, len(parents) + (const is not None) - 1)
        return total


def parse_question(prompt: str) -> ParsedProblem:
    sentences = re.split(r"(?<=[.?])\s+", prompt.strip())
    defs: dict = {}
    target = None
    for s in sentences:
        if s.startswith("Question:"):
            for pat in _question_patterns():
                m = pat.fullmatch(s)
                if m:
                    target = quantity_key(m.group("x"))
                    break
            else:
                raise ParseError(f"unknown question: {s!r}")
            continue
        for op, pat in _statement_patterns():
            m = pat.fullmatch(s)
            if m:
                break
        else:
            raise ParseError(f"unknown sentence: {s!r}")
        g = m.groupdict()
        if g.get("ps"):
            parents = tuple(quantity_key(q) for q in re.findall(QUANT, g["ps"]))
        elif g.get("p1"):
            parents = (quantity_key(g["p1"]), quantity_key(g["p2"]))
        elif g.get("p"):
            parents = (quantity_key(g["p"]),)
        else:
            parents = ()
        key = quantity_key(g["x"])
        if key in defs:
            raise ParseError(f"{g['x']} is defined twice")
        defs[key] = (op, parents, int(g["c"]) if g.get("c") else None)
    if target is None:
        raise ParseError("no question sentence")
    # Abstract quantities are implicit: the sum of the owner's stated instance quantities.
    for key in [k for d in list(defs.values()) for k in d[1]] + [target]:
        if key[0] == "abs" and key not in defs:
            parts = tuple(k for k in defs if k[0] == "inst" and k[1] == key[1])
            if not parts:
                raise ParseError(f"{key} has no stated parts")
            defs[key] = ("abstract", parts, None)
    problem = ParsedProblem(defs, target)
    _evaluate(problem)
    return problem


def _evaluate(problem: ParsedProblem) -> None:
    values, visiting = problem.values, set()

    def value(key):
        if key in values:
            return values[key]
        if key not in problem.defs:
            raise ParseError(f"{key} is used but never defined")
        if key in visiting:
            raise ParseError("the question's dependencies form a cycle")
        visiting.add(key)
        op, parents, c = problem.defs[key]
        v = [value(p) for p in parents]
        values[key] = {
            "const": lambda: c,
            "copy": lambda: v[0],
            "add": lambda: v[0] + c,
            "mul": lambda: v[0] * c,
            "diff": lambda: v[0] - v[1],
        }.get(op, lambda: sum(v))()
        visiting.discard(key)
        return values[key]

    for key in list(problem.defs):
        value(key)
    value(problem.target)


# ----------------------------------------------------------------------------- step check

VERDICTS = (
    "correct", "unparseable_question", "unparseable_step", "unknown_quantity", "redefined",
    "undefined_variable", "wrong_inputs", "wrong_substitution", "wrong_arithmetic",
    "wrong_value", "missing_target", "no_answer", "wrong_final_answer",
)


def _inputs_match(terms: list, ops: list[str], op: str, parents: tuple, const) -> bool:
    """Do the step's symbolic inputs (numbers and quantity keys) define the quantity as the DAG does?"""
    keys = [t for t in terms if not isinstance(t, int)]
    nums = [t for t in terms if isinstance(t, int)]
    kinds = set(ops)
    if op == "const":
        return not keys and nums == [const] and not ops
    if op == "copy" or (op == "abstract" and len(parents) == 1):
        return keys == list(parents) and not nums and not ops
    if op == "add":
        return kinds == {"+"} and keys == list(parents) and nums == [const]
    if op == "mul":
        return kinds == {"*"} and keys == list(parents) and nums == [const]
    if op == "diff":
        return ops == ["-"] and keys == list(parents) and not nums
    return kinds == {"+"} and not nums and Counter(keys) == Counter(parents)  # sum, abstract


_NAMED_TERM = re.compile(rf"\d+|{QUANT}")


def _split_step(line: str):
    """``(defined quantity text, variable or None, right-hand side parts)`` of a solved step in
    either solution format, or None when the line is not one."""
    m = _CHAIN.search(line)
    if m:  # "Define each Barn's Cow as w; so w = x + y = 9 + 5 = 14."
        quants = re.findall(QUANT, line[: m.start()])
        return (quants[0], m.group(1), m.group(2).split(" = ")) if quants else None
    head, _, rest = line.partition(" = ")  # "Each Barn's Cow = each Elm's Mill + 3 = 9 + 3 = 12."
    quants = re.findall(QUANT, head)
    if not quants or not head.rstrip().endswith(quants[-1]):
        return None
    return quants[-1], None, re.sub(r"\.?\s*$", "", rest).split(" = ")


def _symbolic(expr: str, named: bool, bound_vars: dict):
    """Terms (numbers, quantity keys) and operators of the first right-hand part, or an error
    ``(verdict, detail)``."""
    if named:
        pieces = re.split(r" ([-+*]) ", expr.strip())
        terms_text, ops = pieces[::2], pieces[1::2]
        if any(not _NAMED_TERM.fullmatch(t) for t in terms_text):
            return None, ("unparseable_step", "bad expression")
        return (terms_text, ops), None
    tokens = tokenize(expr)
    if tokens is None:
        return None, ("unparseable_step", "bad expression")
    undefined = [t for t in tokens[::2] if not t.isdigit() and t not in bound_vars]
    if undefined:
        return None, ("undefined_variable", f"{undefined[0]} is not defined")
    return (tokens[::2], tokens[1::2]), None


def _resolve(terms_text: list[str], named: bool, bound_vars: dict, solved: dict):
    """Numbers as ints, variables and quantity phrases as keys; None for a quantity never solved."""
    out = []
    for t in terms_text:
        if t.isdigit():
            out.append(int(t))
        elif named:
            key = quantity_key(t)
            if key not in solved:
                return None, t
            out.append(key)
        else:
            out.append(bound_vars[t])
    return out, None


def check_steps(prompt: str, completion: str) -> StepReport:
    """Check every solved step of ``completion`` against the question's DAG (see module doc)."""
    try:
        problem = parse_question(prompt)
    except ParseError as e:
        return StepReport("unparseable_question", 0, None, str(e))
    bound_vars: dict[str, tuple] = {}  # variable letter -> quantity key
    solved: dict[tuple, int] = {}  # quantity key -> value written
    n = 0
    for line in (completion or "").splitlines():
        if " = " not in line:
            continue  # exploration, revisits, restating, the answer line
        n += 1

        def fail(verdict, detail):
            return StepReport(verdict, n, n, f"step {n}: {detail}: {line.strip()!r}")

        step = _split_step(line)
        if step is None:
            return fail("unparseable_step", "no quantity or equation")
        name, var, parts = step
        key = quantity_key(name)
        if key not in problem.defs:
            return fail("unknown_quantity", f"{name} is not in the problem")
        if var in bound_vars or key in solved:
            return fail("redefined", f"{var or name} is defined twice")
        symbolic, error = _symbolic(parts[0], var is None, bound_vars)
        if error:
            return fail(*error)
        terms, unknown = _resolve(symbolic[0], var is None, bound_vars, solved)
        if terms is None:
            return fail("undefined_variable", f"{unknown} is not solved yet")
        op, parents, const = problem.defs[key]
        if not _inputs_match(terms, symbolic[1], op, parents, const):
            return fail("wrong_inputs", "inputs do not match the problem")
        numeric = [tokenize(p) for p in parts[1:]] or [[str(t) for t in _interleave(terms, symbolic[1])]]
        if any(t is None for t in numeric):
            return fail("unparseable_step", "bad expression")
        substituted = [str(solved[t]) if isinstance(t, tuple) else str(t) for t in terms]
        if len(parts) > 1 and numeric[0] != _interleave(substituted, symbolic[1]):
            return fail("wrong_substitution", "values substituted wrongly")
        values = [evaluate_numbers(t) for t in numeric]
        if any(v is None for v in values) or len(numeric[-1]) != 1:
            return fail("unparseable_step", "the chain does not end in a number")
        if any(a != b for a, b in zip(values, values[1:])):
            return fail("wrong_arithmetic", "a sub-goal does not equal the previous one")
        if values[-1] != problem.values[key]:
            return fail("wrong_value", f"value {values[-1]} should be {problem.values[key]}")
        if var is not None:
            bound_vars[var] = key
        solved[key] = values[-1]
    if problem.target not in solved:
        return StepReport("missing_target", n, None, "the asked quantity is never solved")
    got = extract_answer(completion)
    if got is None:
        return StepReport("no_answer", n, None, "no answer marker")
    if got != problem.values[problem.target]:
        return StepReport("wrong_final_answer", n, None, f"answer {got} should be {problem.values[problem.target]}")
    return StepReport("correct", n)


def _interleave(terms: list, ops: list[str]) -> list[str]:
    out = [str(terms[0])]
    for op, t in zip(ops, terms[1:]):
        out += [op, str(t)]
    return out


# ----------------------------------------------------------------------------- behaviours

BEHAVIOURS = ("attempts", "early", "revisits", "restates", "expansions")  # InjectionStats' names


def _line_regex(template: str) -> re.Pattern:
    # Every slot matches any text: a behaviour line is recognised by its fixed words alone,
    # so a model that names the wrong quantity still counts as attempting.
    parts = re.split(r"\{\w+\}", template)
    return re.compile(".+?".join(re.escape(p) for p in parts))


@lru_cache(maxsize=1)
def _behaviour_patterns() -> dict[str, list[re.Pattern]]:
    return {
        "attempts": [_line_regex(t) for t in T.ATTEMPT],
        "early": [_line_regex(t) for t in T.EARLY],
        "revisits": [_line_regex(t) for t in T.REVISIT],
        "restates": [_line_regex(t) for t in T.RESTATE + T.RESTATE_CONST],
    }


def count_behaviours(completion: str) -> dict[str, int]:
    """How many lines of each injected behaviour a completion holds (the counts that
    ``meta.injected`` records for generated data): exploration attempts that stop at a locked
    node, early solves, revisits, restatements, and sums expanded into sub-goals (an
    equation chain with more than one numeric sum)."""
    counts = dict.fromkeys(BEHAVIOURS, 0)
    patterns = _behaviour_patterns()
    for line in (completion or "").splitlines():
        line = line.strip()
        kind = next((k for k, ps in patterns.items() if any(p.fullmatch(line) for p in ps)), None)
        if kind is not None:
            counts[kind] += 1
            continue
        # A numeric sum followed by another numeric sum is a sub-goal; the symbolic part of a
        # step (letters or quantity names) never counts.
        if sum("+" in part and not re.search(r"[A-Za-z]", part) for part in line.split(" = ")) > 1:
            counts["expansions"] += 1
    return counts
