"""Integer arithmetic as the solutions write it: ``n (op n)*`` with ``+``, ``-`` and ``*``."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*(\d+|[A-Za-z]|[-+*])")


def tokenize(expr: str) -> list[str] | None:
    expr = expr.strip()
    tokens, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            return None
        tokens.append(m.group(1))
        pos = m.end()
    # terms and operators must alternate: term (op term)*
    if not tokens or len(tokens) % 2 == 0:
        return None
    for i, t in enumerate(tokens):
        if (i % 2 == 1) != (t in "+-*"):
            return None
    return tokens


def evaluate_numbers(tokens: list[str]) -> int | None:
    """Integer value of ``n (op n)*`` with ``*`` binding tighter; None if a term is not a number."""
    if any(not t.isdigit() for t in tokens[::2]):
        return None
    terms, signs = [int(tokens[0])], [1]
    for op, t in zip(tokens[1::2], tokens[2::2]):
        if op == "*":
            terms[-1] *= int(t)
        else:
            terms.append(int(t))
            signs.append(1 if op == "+" else -1)
    return sum(s * t for s, t in zip(signs, terms))
