"""The influence engine against docs/maths.md, on a nano model with real sampled rollouts.

The model is SFT'd for a few seconds on data where every prompt is seen with two answers
(the right one and the right one + 1), so sampled groups really mix correct and incorrect
rollouts (0 < α < 1) — a random model never answers and would make every check vacuous.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from coinfluence.errors import UserError
from coinfluence.influence import features as feat
from coinfluence.influence.analyze import AnalyzeOptions, informative_share, run_analysis, sample_groups
from coinfluence.influence.kernel import K_plus_minus, co_influence, co_influence_kernel
from coinfluence.influence.step import advantages, delta_J, delta_J_aggregated, weight
from coinfluence.influence.validate import pearson, spearman, validate_first_order
from coinfluence.models.loading import load_model
from coinfluence.models.tokenizer import build_tokenizer
from coinfluence.training.checkpoint import save_model_dir
from coinfluence.training.sft import SFTConfig, train_sft

NAMES = ["Lion", "Bear", "Tiger", "Owl", "Fox", "Zoo", "Park", "Farm"]
G = 4


def ambiguous_rows(n: int) -> list[dict]:
    return [{"id": f"q{i}", "prompt": f"Question: how many {NAMES[i % 8]} in {NAMES[(i * 3 + 1) % 8]}?", "answer": i % 2}
            for i in range(n)]


ROWS = ambiguous_rows(12)
SFT_ROWS = [dict(r, completion=f"So it is {a}. <answer>{a}</answer>") for r in ROWS for a in (r["answer"], r["answer"] + 1)]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer([t for r in SFT_ROWS for t in (r["prompt"], r["completion"])])


@pytest.fixture(scope="module")
def warm(tok, tmp_path_factory):
    model, _ = load_model("nano", tok, seed=0)
    cfg = SFTConfig(max_steps=60, learning_rate=1e-2, logging_steps=10, eval_steps=0, eval_size=0, save_steps=0)
    train_sft(cfg, model, tok, SFT_ROWS, [], tmp_path_factory.mktemp("sft"), progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def groups(warm, tok):
    """Sampled train (4 queries) and target (4 queries) groups of G rollouts; some mixed."""
    knobs = {"max_completion_length": 14, "temperature": 1.0}
    tr = sample_groups(warm, tok, ROWS[:4], G, knobs, 0, "train", False)
    tg = sample_groups(warm, tok, ROWS[4:8], G, knobs, 0, "targets", False)
    alpha = tr["rewards"].view(-1, G).mean(1)
    assert ((alpha > 0) & (alpha < 1)).sum() >= 2, f"too few informative groups: {alpha.tolist()}"
    assert tg["rewards"].view(-1, G).std(1).gt(0).any(), "no target group has a reward spread"
    return tr, tg


@pytest.fixture(scope="module")
def model64(warm):
    import copy

    return copy.deepcopy(warm).double().eval()


def test_vmap_features_equal_the_loop(model64, tok, groups):
    tr, _ = groups
    prompts, comps = tr["prompts"][:6], tr["completions"][:6]
    kw = dict(normalization="seq-mean", temperature=1.0)
    v = feat.features_vmap(model64, prompts, comps, tok.pad_token_id, chunk_size=4, **kw)
    loop = feat.features_loop(model64, prompts, comps, tok.pad_token_id, **kw)
    assert v.shape == (6, feat.num_features(feat.select_params(model64)))
    assert loop.norm(dim=1).min() > 0
    assert ((v - loop).norm(dim=1) / loop.norm(dim=1)).max() <= 1e-5
    # The same with a parameter selection and a sketch (chunking must not change the sketch).
    params = feat.select_params(model64, r"layers\.1\.mlp")
    pv = feat.features_vmap(model64, prompts, comps, tok.pad_token_id, chunk_size=5, params=params, project_dim=32, seed=3, **kw)
    pl = feat.features_loop(model64, prompts, comps, tok.pad_token_id, params=params, project_dim=32, seed=3, **kw)
    assert ((pv - pl).norm(dim=1) / pl.norm(dim=1)).max() <= 1e-5


def test_layerwise_features_equal_the_loop(model64, tok, groups):
    from coinfluence.influence.layerwise import features_layerwise

    tr, _ = groups
    prompts, comps = tr["prompts"][:6], tr["completions"][:6]
    for kw in (dict(normalization="seq-mean"), dict(normalization="constant", max_length=14)):
        lw = features_layerwise(model64, prompts, comps, tok.pad_token_id, chunk_size=4, **kw)
        loop = feat.features_loop(model64, prompts, comps, tok.pad_token_id, **kw)
        assert lw.shape == loop.shape and loop.norm(dim=1).min() > 0
        assert ((lw - loop).norm(dim=1) / loop.norm(dim=1)).max() <= 1e-5
    # A selection, a dense sketch and Adam scales go through the same finish() as vmap.
    params = feat.select_params(model64, r"embed|layers\.0\.(self_attn|post_attention)")
    scales = {n: torch.rand_like(p) + 0.5 for n, p in params.items()}
    kw = dict(params=params, project_dim=32, seed=3, scales=scales)
    lw = features_layerwise(model64, prompts, comps, tok.pad_token_id, chunk_size=5, **kw)
    loop = feat.features_loop(model64, prompts, comps, tok.pad_token_id, **kw)
    assert ((lw - loop).norm(dim=1) / loop.norm(dim=1)).max() <= 1e-5


def test_kronecker_sketch_is_an_unbiased_layerwise_projection(model64, tok, groups):
    """Averaged over seeds, ⟨P_oᵀ G P_i, P_oᵀ G' P_i⟩ is the exact ⟨G, G'⟩ (per layer, so for the sum)."""
    from coinfluence.influence.layerwise import features_layerwise, kron_feature_dim

    tr, _ = groups
    prompts, comps = tr["prompts"][:4], tr["completions"][:4]
    params = feat.select_params(model64, r"layers\.1\.mlp\.(gate|down)_proj|norm")
    exact = feat.features_loop(model64, prompts, comps, tok.pad_token_id, params=params)
    K = exact @ exact.T
    sketches = [features_layerwise(model64, prompts, comps, tok.pad_token_id, params=params, kron_rank=8, seed=s)
                for s in range(48)]
    assert sketches[0].shape == (4, kron_feature_dim(params, 8))
    assert not torch.equal(sketches[0], sketches[1])
    assert torch.equal(sketches[0], features_layerwise(model64, prompts, comps, tok.pad_token_id, params=params, kron_rank=8, seed=0))
    Ks = torch.stack([S @ S.T for S in sketches])
    mean, sem = Ks.mean(0), Ks.std(0) / math.sqrt(len(sketches))
    scale = torch.sqrt(torch.diagonal(K)[:, None] * torch.diagonal(K)[None, :])
    assert ((mean - K).abs() <= 5 * sem + 1e-9 * scale).all()
    # One seed is a real approximation, not noise: its error is well below the kernel's scale.
    assert ((Ks[0] - K).abs() / scale).max() < 1.0


def test_layerwise_rejects_modules_it_cannot_differentiate(model64, tok, groups):
    from coinfluence.influence.layerwise import features_layerwise

    tr, _ = groups
    model = torch.nn.Module()
    model.conv = torch.nn.Conv1d(2, 2, 1)
    with pytest.raises(UserError, match="layerwise engine cannot"):
        features_layerwise(model, tr["prompts"][:1], tr["completions"][:1], tok.pad_token_id,
                           params=dict(model.named_parameters()))
    with pytest.raises(UserError, match="Kronecker"):
        features_layerwise(model64, tr["prompts"][:1], tr["completions"][:1], tok.pad_token_id, kron_rank=4, project_dim=8)


@pytest.mark.parametrize("normalization, scale_rewards, std", [
    ("seq-mean", "group", "population"), ("token-sum", "group", "unbiased"), ("constant", "none", "population"),
])
def test_aggregated_delta_J_equals_the_pairwise_kernel(model64, tok, groups, normalization, scale_rewards, std):
    tr, tg = groups
    kw = dict(normalization=normalization, max_length=14, temperature=1.0)
    params = feat.select_params(model64)
    F_tr = feat.features_vmap(model64, tr["prompts"], tr["completions"], tok.pad_token_id, chunk_size=8, **kw)
    F_tg = feat.features_vmap(model64, tg["prompts"], tg["completions"], tok.pad_token_id, chunk_size=8, **kw)
    Kp, Km = K_plus_minus(co_influence_kernel(F_tg, F_tr), tr["rewards"], G)
    co = co_influence(Kp, Km, advantages(tg["rewards"], G, scale_rewards, std), G)
    alpha = tr["rewards"].view(-1, G).mean(1)
    pairwise = delta_J(weight(alpha, G, scale_rewards, std), co)
    agg = delta_J_aggregated(model64, params, tr["prompts"], tr["completions"], tr["rewards"], tg["prompts"], tg["completions"],
                             tg["rewards"], tok.pad_token_id, num_generations=G, scale_rewards=scale_rewards, std=std, **kw)
    informative = (alpha > 0) & (alpha < 1)
    assert pairwise[informative].abs().min() > 0
    assert torch.all(agg["delta_J"][~informative] == 0) and torch.all(pairwise[~informative] == 0)
    assert (agg["delta_J"] - pairwise).abs().max() <= 1e-6 * pairwise.abs().max()
    torch.testing.assert_close(agg["co_influence"][informative], co[informative], rtol=1e-6, atol=0)
    assert torch.isnan(co[~informative]).all()


def test_kernel_of_a_set_with_itself_is_symmetric_psd(model64, tok, groups):
    tr, _ = groups
    F = feat.features_vmap(model64, tr["prompts"], tr["completions"], tok.pad_token_id, chunk_size=8)
    K = co_influence_kernel(F, F)
    assert torch.equal(K, K.T) or (K - K.T).abs().max() <= 1e-12 * K.abs().max()
    eig = torch.linalg.eigvalsh(K)
    assert eig.min() >= -1e-10 * eig.max()
    assert torch.all(torch.diagonal(K) > 0)


def test_projection_preserves_inner_products_within_the_JL_bound():
    d, n = 2048, 10
    gen = torch.Generator().manual_seed(0)
    # Two "parameter tensors"; correlated vectors so that inner products are not all ~0.
    base = torch.randn(1, 3000, generator=gen)
    vecs = 0.7 * base + torch.randn(n, 3000, generator=gen)
    grads = {"a.weight": vecs[:, :1000].reshape(n, 10, 100), "b.weight": vecs[:, 1000:]}
    P = feat.project(grads, d, seed=5)
    exact, sketched = vecs.double() @ vecs.double().T, P.double() @ P.double().T
    norms = vecs.double().norm(dim=1)
    # Var⟨Pg,Pg'⟩ = (⟨g,g'⟩² + ‖g‖²‖g'‖²)/d ≤ 2‖g‖²‖g'‖²/d, so c = 6 is > 4 standard deviations.
    c = 6.0
    err = (sketched - exact).abs() / (norms[:, None] * norms[None, :] / math.sqrt(d))
    assert err.max() <= c
    # ...and the error is of the size the theory says, not trivially small (a wrong scale fails).
    assert 0.2 < err.pow(2).mean().sqrt() < 2.0
    # Deterministic per seed, different across seeds, linear.
    assert torch.equal(P, feat.project(grads, d, seed=5))
    assert not torch.allclose(P, feat.project(grads, d, seed=6))
    mixed = {k: 2.0 * v[:1] - 3.0 * v[1:2] for k, v in grads.items()}
    torch.testing.assert_close(feat.project(mixed, d, seed=5)[0], 2.0 * P[0] - 3.0 * P[1], rtol=1e-4, atol=1e-4)


def test_projection_cache_draws_each_block_once_and_changes_nothing(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    grads = {"a.weight": torch.randn(3, 5000, generator=gen), "b.weight": torch.randn(3, 700, generator=gen)}
    monkeypatch.setattr(feat, "PROJECTION_BLOCK_ELEMENTS", 64 * 1000)  # blocks of 1,000 rows at d = 64
    draws = []
    real = feat._block_generator
    monkeypatch.setattr(feat, "_block_generator", lambda *a: draws.append(a[1:3]) or real(*a))
    plain = feat.project(grads, 64, seed=2)
    assert len(draws) == 5 + 1  # 5 blocks of a, 1 of b
    draws.clear()
    with feat.projection_cache():
        cached = [feat.project(grads, 64, seed=2) for _ in range(3)]
        with feat.projection_cache():  # a nested cache shares the outer one
            cached.append(feat.project(grads, 64, seed=2))
    assert len(draws) == 6  # each block drawn once in four projections
    for P in cached:
        assert torch.equal(P, plain)
    draws.clear()
    feat.project(grads, 64, seed=2)
    assert len(draws) == 6  # the cache is gone after its block
    # Over the budget: the blocks that fit are kept, the others drawn on every use.
    draws.clear()
    with feat.projection_cache(budget_mb=2.5 * 1000 * 64 * 4 / 2**20):
        for _ in range(3):
            assert torch.equal(feat.project(grads, 64, seed=2), plain)
    assert len(draws) == 6 + 2 * 4


def test_first_order_prediction_matches_a_real_step(model64, tok, groups):
    tr, tg = groups
    alpha = tr["rewards"].view(-1, G).mean(1)
    queries = [q for q in range(len(alpha)) if 0 < alpha[q] < 1]
    res = validate_first_order(model64, feat.select_params(model64), tr["prompts"], tr["completions"], tr["rewards"], queries,
                               tg["prompts"], tg["completions"], tg["rewards"], tok.pad_token_id, num_generations=G,
                               normalization="seq-mean", relative_step=1e-4)
    assert res["queries"] == queries and res["n_pairs"] == len(queries) * len(tg["prompts"])
    assert res["dlogp_observed"].abs().max() > 0
    assert res["pearson_dlogp"] >= 0.99
    assert res["spearman_dlogp"] >= 0.9
    # ΔJ predicted vs observed agree to first order query by query.
    for o, p in zip(res["dJ_observed"], res["dJ_predicted"]):
        assert abs(o - p) <= 0.05 * max(abs(p), 1e-12) + 1e-9


def test_correlation_helpers():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(pearson(x[:2], x[:2]))


def test_adam_preconditioner_gives_the_adam_metric(warm, tok, groups, tmp_path):
    import copy

    model = copy.deepcopy(warm)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-8)
    for _ in range(2):
        opt.zero_grad()
        model(input_ids=torch.tensor([[1, 5, 6, 7]])).logits.square().mean().backward()
        opt.step()
    ckpt = tmp_path / "ckpt"
    save_model_dir(ckpt, model, tok, trainer_state={"optimizer": opt.state_dict()})
    params = feat.select_params(model, r"layers\.0\.mlp\.down_proj")
    scales = feat.adam_preconditioner(model, ckpt, params)
    (name, p), = params.items()
    st = opt.state[p]
    v_hat = st["exp_avg_sq"] / (1 - 0.999 ** float(st["step"]))
    torch.testing.assert_close(scales[name] ** -2, v_hat.sqrt() + 1e-8)
    tr, _ = groups
    F = feat.features_vmap(model, tr["prompts"][:3], tr["completions"][:3], tok.pad_token_id, params=params, scales=scales)
    raw = feat.features_vmap(model, tr["prompts"][:3], tr["completions"][:3], tok.pad_token_id, params=params)
    D = (v_hat.sqrt() + 1e-8).reciprocal().flatten()
    torch.testing.assert_close(F @ F.T, (raw * D) @ raw.T, rtol=1e-4, atol=1e-8)
    assert feat.adam_preconditioner(model, tmp_path, params) is None  # no saved state: a fresh optimizer


@pytest.mark.parametrize("with_names", [True, False])
def test_adam_state_follows_the_optimizers_own_groups(warm, tok, tmp_path, with_names):
    """SFT's optimizer lists 2-D tensors, then 1-D ones: state index k is not the k-th named parameter."""
    import copy

    from coinfluence.training.checkpoint import optimizer_param_names
    from coinfluence.training.sft import make_optimizer

    model = copy.deepcopy(warm)
    opt, _ = make_optimizer(model, SFTConfig(max_steps=2))
    for _ in range(2):
        opt.zero_grad()
        model(input_ids=torch.tensor([[1, 5, 6, 7]])).logits.square().mean().backward()
        opt.step()
    state = {"optimizer": opt.state_dict(), **({"param_names": optimizer_param_names(model, opt)} if with_names else {})}
    save_model_dir(tmp_path / "ckpt", model, tok, trainer_state=state)
    params = feat.select_params(model, r"norm|layers\.1\.mlp")
    assert any(p.ndim == 1 for p in params.values()) and any(p.ndim == 2 for p in params.values())
    scales = feat.adam_preconditioner(model, tmp_path / "ckpt", params)
    assert set(scales) == set(params)
    (_, beta2), eps = opt.param_groups[0]["betas"], opt.param_groups[0]["eps"]
    for name, p in params.items():
        st = opt.state[p]
        v_hat = st["exp_avg_sq"] / (1 - beta2 ** float(st["step"]))
        torch.testing.assert_close(scales[name] ** -2, v_hat.sqrt() + eps)


def test_train_and_target_streams_differ_for_large_seeds(warm, tok):
    knobs = {"max_completion_length": 14, "temperature": 1.0}
    for seed in (3, 10000, 123456789):
        a = sample_groups(warm, tok, ROWS[:2], G, knobs, seed, "train", False)
        b = sample_groups(warm, tok, ROWS[:2], G, knobs, seed, "targets", False)
        assert a["completions"] != b["completions"], seed
    assert feat.stream_seed(10000, "analyze", "train") != feat.stream_seed(10000, "analyze", "targets")


def test_analysis_advantages_are_the_trainers():
    from coinfluence.training.grpo import GRPOConfig
    from coinfluence.training.objectives import grpo_advantages

    cfg = GRPOConfig()
    rewards = torch.tensor([1, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1], dtype=torch.float64)
    trainer = grpo_advantages(rewards, 4, cfg.scale_rewards, cfg.std)  # the call train_grpo makes
    torch.testing.assert_close(advantages(rewards, 4, cfg.scale_rewards, cfg.std), trainer, rtol=0, atol=0)


def surrogate(model, tg, A, pad_id) -> float:
    """The target's advantage-weighted surrogate ``(1/N') Σ_j A_j ℓ_j`` on fixed rollouts."""
    from coinfluence.influence.step import token_logps_rows
    from coinfluence.training.objectives import normalize_logprob

    with torch.no_grad():
        logps, mask = token_logps_rows(model, tg["prompts"], tg["completions"], pad_id, 1.0)
        return float((A * normalize_logprob(logps, mask, "seq-mean")).mean())


@pytest.mark.parametrize("warm_state", [False, True])
def test_adam_aware_delta_J_is_the_change_of_a_real_AdamW_step(model64, tok, groups, tmp_path, warm_state):
    import copy

    from coinfluence.influence.step import adamw_update, inner, objective_gradient, target_direction
    from coinfluence.training.checkpoint import optimizer_param_names

    tr, tg = groups
    pad, lr = tok.pad_token_id, 1e-5
    model = copy.deepcopy(model64)
    params = feat.select_params(model)
    opt = torch.optim.AdamW(params.values(), lr=lr, weight_decay=0.01)
    if warm_state:  # moments that are not the next gradient's
        for _ in range(2):
            opt.zero_grad()
            model(input_ids=torch.tensor([[1, 5, 6, 7]])).logits.square().mean().backward()
            opt.step()
    opt.zero_grad()
    save_model_dir(tmp_path / "ckpt", model, tok, trainer_state={"optimizer": opt.state_dict(),
                                                                 "param_names": optimizer_param_names(model, opt)})
    state = feat.saved_adam_state(model, tmp_path / "ckpt", params)
    assert (state is None) == (not warm_state)
    A_t = advantages(tg["rewards"], G)
    u = target_direction(model, params, tg["prompts"], tg["completions"], A_t, pad)
    alpha = tr["rewards"].view(-1, G).mean(1)
    q = next(i for i in range(len(alpha)) if 0 < alpha[i] < 1)
    sl = slice(q * G, (q + 1) * G)
    gJ = objective_gradient(model, params, tr["prompts"][sl], tr["completions"][sl], tr["rewards"][sl], pad)
    update = adamw_update({n: -g for n, g in gJ.items()}, params, state, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                          max_grad_norm=1.0)
    predicted = inner(u, update)
    theta = {n: p.detach().clone() for n, p in params.items()}
    for n, p in params.items():
        p.grad = -gJ[n].clone()
    torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
    opt.step()  # the real step; its first-order part is read off symmetrically (θ' and 2θ − θ')
    after = surrogate(model, tg, A_t, pad)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(2 * theta[n] - p)
    observed = (after - surrogate(model, tg, A_t, pad)) / (2 * lr)
    assert abs(predicted) > 0
    assert abs(observed - predicted) <= 1e-3 * abs(predicted), (observed, predicted)


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def checkpoint(warm, tok, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    save_model_dir(root / "model", warm, tok)
    for name, rows in (("train.jsonl", ROWS[:4]), ("targets.jsonl", ROWS[4:8])):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def cli():
    import typer
    from typer.testing import CliRunner

    from coinfluence_cli.analyze import analyze

    app = typer.Typer()
    app.command()(analyze)
    return app, CliRunner()


def test_cli_writes_the_documented_files(checkpoint):
    app, runner = cli()
    out = checkpoint / "out"
    args = ["--ckpt", str(checkpoint / "model"), "--train", str(checkpoint / "train.jsonl"), "--targets",
            str(checkpoint / "targets.jsonl"), "--queries", "4", "--targets-n", "4", "--num-generations", "4",
            "--max-completion-length", "14", "--project-dim", "64", "--save-kernel", "--validate", "2", "--out", str(out), "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    s = json.loads((out / "summary.json").read_text())
    for key in ("options", "alpha_hist", "frac_informative", "mean_co_influence", "mean_delta_J", "validation", "timings"):
        assert key in s, key
    assert s["options"]["normalization"] == "seq-mean" and s["options"]["project_dim"] == 64 and s["options"]["params"] is None
    assert 0 < s["frac_informative"] <= 1 and sum(s["alpha_hist"]["count"]) == 4
    assert s["validation"]["pearson_dlogp"] > 0.9
    step = s["validation"]["trainer_step"]
    assert [r["query"] for r in step["rows"]] == s["validation"]["queries"]
    from coinfluence.training.grpo import GRPOConfig

    first_lr = GRPOConfig().learning_rate / (GRPOConfig().warmup_steps + 1)  # a fresh trainer's first step
    for r in step["rows"]:
        assert r["lr"] == pytest.approx(first_lr) and r["observed"] != 0 and np.isfinite(r["predicted_adam"])
    assert s["target_objective"]["name"] == "surrogate" and "reward" in s["target_objective"]["other"]
    assert s["feature_engine"] == "layerwise"  # auto: every parameter of the Llama sits in a supported module
    q = pd.read_parquet(out / "queries.parquet")
    assert list(q.columns) == ["query_id", "role", "alpha", "n_correct", "num_generations", "weight", "K_plus", "K_minus",
                               "co_influence", "delta_J"]
    assert sorted(q["role"].unique()) == ["target", "train"] and len(q) == 8
    train = q[q["role"] == "train"]
    inf = train["alpha"].between(0, 1, inclusive="neither")
    assert train.loc[inf, "K_plus"].notna().all() and (train.loc[~inf, "delta_J"] == 0).all()
    r = pd.read_parquet(out / "rollouts.parquet")
    assert list(r.columns) == ["query_id", "rollout_id", "role", "prompt_ids", "completion_ids", "completion", "reward",
                               "advantage", "logprob", "length"]
    assert len(r) == 32
    K = np.load(out / "kernel.npy")
    assert K.shape == (16, 16)
    assert (out / "figures" / "alpha_hist.png").stat().st_size > 0 and (out / "figures" / "delta_J_by_alpha.png").exists()
    # Same seed, same numbers.
    again = checkpoint / "again"
    assert runner.invoke(app, args[:-3] + ["--out", str(again), "--quiet"]).exit_code == 0
    pd.testing.assert_frame_equal(pd.read_parquet(again / "queries.parquet"), q)


def test_uninformative_targets_are_warned_about(checkpoint, tmp_path, monkeypatch, capsys):
    """All target groups all-wrong: u = 0 and every ΔJ is 0, which the user is told."""
    (tmp_path / "zero_reward.py").write_text("def never(completion, answer, prompt):\n    return 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    base = dict(ckpt=str(checkpoint / "model"), train=str(checkpoint / "train.jsonl"), targets=str(checkpoint / "targets.jsonl"),
                queries=2, targets_n=2, num_generations=2, max_completion_length=4, kernel=False)
    s = run_analysis(AnalyzeOptions(**base, reward="zero_reward:never", out=str(tmp_path / "zero")), progress=False)
    assert s["frac_target_informative"] == 0 and s["mean_delta_J"] == 0
    assert "target direction u is 0" in capsys.readouterr().err
    assert informative_share(torch.tensor([1.0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1]), 4) == pytest.approx(1 / 3)


def test_a_parameter_filter_saves_no_activations_below_the_selected_layer(checkpoint, tmp_path):
    """With --params on the last block, the ΔJ gradients keep far fewer activations for the backward
    than with every parameter selected (autograd tracks only the selected weights)."""
    saved = []

    def pack(t):
        saved[-1] += t.numel() * t.element_size()
        return t

    base = dict(ckpt=str(checkpoint / "model"), train=str(checkpoint / "train.jsonl"), targets=str(checkpoint / "targets.jsonl"),
                queries=4, targets_n=2, num_generations=4, max_completion_length=14, kernel=False)
    for name, params in (("all", None), ("last", r"layers\.1\.")):
        saved.append(0)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run_analysis(AnalyzeOptions(**base, params=params, out=str(tmp_path / name)), progress=False)
    assert saved[1] < 0.75 * saved[0], saved


def test_feature_engines_give_the_same_kernel(checkpoint, tmp_path):
    base = dict(ckpt=str(checkpoint / "model"), train=str(checkpoint / "train.jsonl"), targets=str(checkpoint / "targets.jsonl"),
                queries=4, targets_n=2, num_generations=4, max_completion_length=14, save_kernel=True)
    kernels = {}
    for engine in ("vmap", "layerwise", "loop"):
        s = run_analysis(AnalyzeOptions(**base, engine=engine, out=str(tmp_path / engine)), progress=False)
        assert s["feature_engine"] == engine
        kernels[engine] = np.load(tmp_path / engine / "kernel.npy")
    scale = np.abs(kernels["loop"]).max()
    assert scale > 0
    for engine in ("vmap", "layerwise"):
        assert np.abs(kernels[engine] - kernels["loop"]).max() <= 1e-4 * scale, engine
    s = run_analysis(AnalyzeOptions(**base, kron_rank=4, out=str(tmp_path / "kron")), progress=False)
    assert s["options"]["kron_rank"] == 4 and s["feature_dim"] < s["num_parameters_selected"]
    assert np.load(tmp_path / "kron" / "kernel.npy").shape == kernels["loop"].shape


@pytest.mark.parametrize("change, message", [
    ({"ckpt": "missing-dir"}, "not found"),
    ({"normalization": "median"}, "--normalization"),
    ({"params": "no_such_param"}, "matches no parameter"),
    ({"params": "("}, "regular expression"),
    ({"precondition": "sgd"}, "--precondition"),
    ({"scale_rewards": "batch"}, "--scale-rewards"),
    ({"train": "missing.jsonl"}, "not found"),
    ({"engine": "magic"}, "--engine"),
    ({"kron_rank": 4, "project_dim": 8}, "--kron-rank"),
])
def test_bad_input_is_a_user_error_and_writes_nothing(checkpoint, change, message):
    out = checkpoint / f"bad-{len(message)}-{sorted(change)[0]}"
    base = dict(ckpt=str(checkpoint / "model"), train=str(checkpoint / "train.jsonl"), targets=str(checkpoint / "targets.jsonl"),
                queries=2, targets_n=1, num_generations=2, max_completion_length=4, out=str(out))
    base.update({k: (str(checkpoint / v) if k in ("ckpt", "train") else v) for k, v in change.items()})
    with pytest.raises(UserError, match=message):
        run_analysis(AnalyzeOptions(**base), progress=False)
    assert not out.exists()


def test_empty_checkpoint_dir_is_a_user_error_via_the_cli(checkpoint, tmp_path):
    app, runner = cli()
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["--ckpt", str(tmp_path / "empty"), "--train", str(checkpoint / "train.jsonl"),
                                 "--targets", str(checkpoint / "targets.jsonl"), "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, UserError) and not (tmp_path / "o").exists()


def test_run_data_is_the_data_the_run_recorded(checkpoint, tmp_path):
    from coinfluence.influence.analyze import resolve_inputs

    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    for d in (run / "data", elsewhere):
        d.mkdir(parents=True)
        for name in ("rl_train.jsonl", "val_id.jsonl"):
            (d / name).write_text((checkpoint / "train.jsonl").read_text())
    opts = AnalyzeOptions(ckpt=str(checkpoint / "model"), run=str(run))
    assert resolve_inputs(opts)["train"] == run / "data" / "rl_train.jsonl"  # nothing recorded
    (run / "config.json").write_text(json.dumps({"train": {"data": str(elsewhere)}}))
    assert resolve_inputs(opts)["targets"] == elsewhere / "val_id.jsonl"
    (run / "config.json").write_text(json.dumps({"train": {"data": str(elsewhere), "rl_data": str(tmp_path / "gone")}}))
    assert resolve_inputs(opts)["train"] == run / "data" / "rl_train.jsonl"  # a recorded dir that moved away


@pytest.mark.parametrize("objective", ["surrogate", "reward"])
def test_delta_J_of_each_target_objective_is_its_first_order_change(model64, tok, groups, objective):
    """A small step along ∇J(q) changes the named target objective by η·delta_J (E[r] importance-weighted)."""
    import copy

    from coinfluence.influence.step import objective_gradient
    from coinfluence.influence.validate import rollout_objective_terms, target_objective_change

    tr, tg = groups
    model = copy.deepcopy(model64)
    params = feat.select_params(model)
    knobs = {"num_generations": G, "scale_rewards": "group", "std": "population", "normalization": "seq-mean",
             "temperature": 1.0, "max_completion_length": 14}
    alpha = tr["rewards"].view(-1, G).mean(1)
    q = next(i for i in range(len(alpha)) if 0 < alpha[i] < 1)
    res = delta_J_aggregated(model, params, tr["prompts"], tr["completions"], tr["rewards"], tg["prompts"], tg["completions"],
                             tg["rewards"], tok.pad_token_id, num_generations=G, target_objective=objective)
    sl = slice(q * G, (q + 1) * G)
    gJ = objective_gradient(model, params, tr["prompts"][sl], tr["completions"][sl], tr["rewards"][sl], tok.pad_token_id)
    before = rollout_objective_terms(model, tg, objective, knobs, tok.pad_token_id)
    eta, changes = 1e-3, []
    for sign in (1, -2):  # to θ + η∇J, then to θ − η∇J: the central difference keeps the first order
        with torch.no_grad():
            for n, p in params.items():
                p.add_(sign * eta * gJ[n])
        changes.append(target_objective_change(model, tg, before, objective, knobs, tok.pad_token_id))
    observed = (changes[0] - changes[1]) / (2 * eta)
    predicted = float(res["delta_J"][q])
    assert abs(predicted) > 0
    assert abs(observed - predicted) <= 1e-2 * abs(predicted), (observed, predicted)


def test_first_order_check_runs_the_targets_a_micro_batch_at_a_time(model64, tok, groups):
    """The targets' full-vocabulary logits are never all in memory at once (SmolLM2's analysis of
    64 target rollouts ran out of memory), and chunking changes no number."""
    tr, tg = groups
    alpha = tr["rewards"].view(-1, G).mean(1)
    queries = [q for q in range(len(alpha)) if 0 < alpha[q] < 1][:2]
    n_targets = len(tg["prompts"])
    assert n_targets > max(G, 2)
    seen = []
    hook = model64.register_forward_pre_hook(lambda m, args, kwargs: seen.append(len(kwargs.get("input_ids", args[0] if args else None))),
                                             with_kwargs=True)
    try:
        run = lambda mb: validate_first_order(model64, feat.select_params(model64), tr["prompts"], tr["completions"], tr["rewards"],
                                              queries, tg["prompts"], tg["completions"], tg["rewards"], tok.pad_token_id,
                                              num_generations=G, normalization="seq-mean", relative_step=1e-4, micro_batch=mb)
        whole = run(None)
        assert max(seen) == n_targets
        seen.clear()
        chunked = run(2)
    finally:
        hook.remove()
    assert max(seen) <= max(G, 2)
    for key in ("dlogp_observed", "dlogp_predicted"):
        assert torch.allclose(chunked[key], whole[key], rtol=1e-9, atol=1e-12)
    for key in ("dJ_observed", "dJ_predicted"):
        assert chunked[key] == pytest.approx(whole[key], rel=1e-9, abs=1e-15)


def test_first_order_tangents_record_no_backward_graph(model64, tok, groups):
    """The frozen weights require grad; a jvp outside no_grad recorded a backward graph that held
    every micro-batch's logits (9.6 GB against 2.7 GB for 64 rollouts at a 49K vocabulary)."""
    from coinfluence.influence.features import rollout_rows_on
    from coinfluence.influence.validate import tangents

    _, tg = groups
    base = {n: p.detach().clone() for n, p in feat.select_params(model64, "mlp").items()}  # the rest stays frozen
    v = {n: torch.randn_like(p) for n, p in base.items()}
    ids, mask = rollout_rows_on(model64, tg["prompts"], tg["completions"], tok.pad_token_id)
    assert base and any(p.requires_grad for n, p in model64.named_parameters() if n not in base)
    dell, ds = tangents(model64, base, v, ids, mask, normalization="seq-mean", max_length=None, temperature=1.0, micro_batch=2)
    assert dell.grad_fn is None and ds.grad_fn is None and dell.shape == (len(tg["prompts"]),)
    assert dell.abs().max() > 0
