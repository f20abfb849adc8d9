"""Toy rows with the task's shape (prompt, completion ending in an answer marker) for tests that
must not depend on the real generator."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

PLACES = ["Zoo", "Park", "Farm", "School"]
ANIMALS = ["Lion", "Bear", "Tiger", "Owl", "Fox"]
LETTERS = ["p", "q", "k", "m"]


def toy_row(rng: random.Random, idx: int) -> dict:
    a_place, b_place, c_place = (rng.choice(PLACES) for _ in range(3))
    a_name, b_name, c_name = rng.sample(ANIMALS, 3)
    a, b = rng.randint(0, 19), rng.randint(0, 19)
    x, y, z = rng.sample(LETTERS, 3)
    a_q, b_q, c_q = f"each {a_place}'s {a_name}", f"each {b_place}'s {b_name}", f"each {c_place}'s {c_name}"
    cap = lambda s: s[0].upper() + s[1:]  # noqa: E731
    prompt = (
        f"{cap(a_q)} equals {a}. {cap(c_q)} equals the sum of {a_q} and {b_q}. "
        f"{cap(b_q)} equals {b}. Question: what is {c_q}?"
    )
    completion = (
        f"Define {a_q} as {x}; so {x} = {a}.\n"
        f"Define {b_q} as {y}; so {y} = {b}.\n"
        f"Define {c_q} as {z}; so {z} = {x} + {y} = {a} + {b} = {a + b}.\n"
        f"<answer>{a + b}</answer>"
    )
    return {"id": f"toy-{idx}", "prompt": prompt, "completion": completion, "answer": a + b, "meta": {"op": 1}}


def toy_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [toy_row(rng, i) for i in range(n)]


def toy_texts(rows: list[dict]) -> list[str]:
    return [t for r in rows for t in (r["prompt"], r["completion"])]


def coinfluence(*args, cwd=None) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "coinfluence_cli.main", *args], capture_output=True, text=True, cwd=cwd)


def generated_data(root: Path, sft_size: int, rl_size: int, eval_size: int = 4) -> Path:
    """``coinfluence data`` of the given sizes into ROOT/data."""
    out = root / "data"
    r = coinfluence("--threads", "1", "data", "--out", str(out), "--sft-size", str(sft_size), "--rl-size", str(rl_size),
                    "--eval-size", str(eval_size))
    assert r.returncode == 0, r.stderr
    return out
