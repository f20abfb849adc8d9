"""``coinfluence lds`` on a nano model: it runs end to end, and each subset's numbers belong to its members."""

import json

import numpy as np
import pandas as pd
import pytest

from coinfluence.errors import UserError
from coinfluence.influence.lds import LDSOptions, spearman_interval, run_lds, subset_members
from coinfluence.models.loading import load_model
from coinfluence.models.tokenizer import build_tokenizer
from coinfluence.training.checkpoint import save_model_dir
from coinfluence.training.sft import SFTConfig, train_sft

NAMES = ["Lion", "Bear", "Tiger", "Owl", "Fox", "Zoo", "Park", "Farm"]
# Every prompt is seen with two answers, so sampled groups mix right and wrong rollouts.
ROWS = [{"id": f"q{i}", "prompt": f"Question: how many {NAMES[i % 8]} in {NAMES[(i * 3 + 1) % 8]}?", "answer": i % 2}
        for i in range(10)]
SFT_ROWS = [dict(r, completion=f"So it is {a}. <answer>{a}</answer>") for r in ROWS for a in (r["answer"], r["answer"] + 1)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lds")
    tok = build_tokenizer([t for r in SFT_ROWS for t in (r["prompt"], r["completion"])])
    model, _ = load_model("nano", tok, seed=0)
    cfg = SFTConfig(max_steps=60, learning_rate=1e-2, logging_steps=10, eval_steps=0, eval_size=0, save_steps=0)
    train_sft(cfg, model, tok, SFT_ROWS, [], root / "sft-run", progress=False)
    save_model_dir(root / "model", model.eval(), tok)
    for name, rows in (("train.jsonl", ROWS[:6]), ("targets.jsonl", ROWS[6:])):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def options(root, **kw) -> LDSOptions:
    base = dict(ckpt=str(root / "model"), train=str(root / "train.jsonl"), targets=str(root / "targets.jsonl"), pool=6,
                targets_n=4, subsets=3, fraction=0.5, steps=1, num_generations=4, max_completion_length=14, bootstrap=50)
    return LDSOptions(**{**base, **kw})


def test_lds_runs_and_its_subset_bookkeeping_is_exact(data, monkeypatch):
    from coinfluence.training import grpo

    trained = []
    real = grpo.train_grpo

    def recording(cfg, model, tok, rows, *args, **kw):
        trained.append(([r["id"] for r in rows], cfg.prompts_per_step, cfg.max_steps))
        return real(cfg, model, tok, rows, *args, **kw)

    monkeypatch.setattr(grpo, "train_grpo", recording)
    out = data / "out"
    s = run_lds(options(data, out=str(out)), progress=False)
    subsets = pd.read_parquet(out / "subsets.parquet")
    queries = pd.read_parquet(out / "queries.parquet")
    members = subset_members(6, 3, 0.5, 0)
    assert [list(m) for m in subsets["members"]] == members
    assert all(len(set(m)) == 3 and set(m) <= set(range(6)) for m in members)
    pool_ids = list(queries["query_id"])
    assert sorted(pool_ids) == sorted(r["id"] for r in ROWS[:6])
    # The trainer saw exactly each subset's queries, all of them in its one step.
    assert trained == [([pool_ids[i] for i in m], 3, 1) for m in members]
    for kind in ("plain", "adam"):
        sums = [queries[f"delta_J_{kind}"].to_numpy()[m].sum() for m in members]
        np.testing.assert_array_equal(subsets[f"predicted_{kind}"].to_numpy(), sums)
        assert set(s["lds"][kind]) == {"spearman", "interval_95"}
    assert subsets["observed_change"].abs().max() > 0  # the steps moved the target objective
    assert s["target_objective"]["name"] == "surrogate"
    assert (out / "figures" / "lds_scatter.png").stat().st_size > 0
    assert not list(out.glob("subset-*"))


@pytest.mark.parametrize("change, message", [({"fraction": 1.5}, "--fraction"), ({"subsets": 2}, "--subsets"),
                                             ({"pool": 60}, "--pool"), ({"target_objective": "loss"}, "--target-objective")])
def test_bad_input_is_a_user_error_and_writes_nothing(data, change, message):
    out = data / f"bad-{message.strip('-')}"
    with pytest.raises(UserError, match=message):
        run_lds(options(data, out=str(out), **change), progress=False)
    assert not out.exists()


def test_bootstrap_interval_brackets_a_clear_correlation():
    x = np.arange(30.0)
    lo, hi = spearman_interval(x, x + np.random.default_rng(0).normal(0, 3, 30), 500, seed=0)
    assert 0.7 < lo <= hi <= 1.0
    lo, hi = spearman_interval(x, np.random.default_rng(1).normal(size=30), 500, seed=0)
    assert lo < 0 < hi
