"""benchmarks/bench_smollm2.py's SFT-step measurement, run on the tiny model instead of SmolLM2."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def test_sft_step_times_both_settings_without_a_deprecated_transformers_call():
    spec = importlib.util.spec_from_file_location("bench_smollm2", ROOT / "benchmarks" / "bench_smollm2.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from coinfluence.models.loading import default_task_tokenizer, load_model

    torch.manual_seed(0)
    tok = default_task_tokenizer("mini")
    model = load_model("tiny", tok)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = bench.sft_step(model, tok, n=2, steps=1)
    deprecated = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))
                  and "checkpointing" in str(w.message)]
    assert deprecated == []
    settings = [r["setting"] for r in rows if r["measure"] == "SFT step"]
    assert len(settings) == 2 and settings[1].endswith("gradient checkpointing")
    assert all(r["value"] > 0 for r in rows)
