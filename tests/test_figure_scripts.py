"""The figure scripts' own arithmetic (figures/*.py are scripts, loaded here by path)."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def load(name):
    spec = importlib.util.spec_from_file_location(name, FIGURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_curve_ends_are_steps_1_to_10_and_the_last_10():
    summarize = load("summarize")
    # step 0 holds only the starting validation accuracy; steps 1..30 have reward = step
    rows = [{"step": 0, "val_id_accuracy": 0.5}] + [{"step": s, "reward": float(s)} for s in range(1, 31)]
    first, last = summarize.curve_ends(pd.DataFrame(rows), "reward", window=10)
    assert first == pytest.approx(5.5)  # mean of 1..10, not of 1..9 (which the step-0 row would give)
    assert last == pytest.approx(25.5)
