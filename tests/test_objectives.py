"""GRPO advantages and loss against docs/maths.md, "The GRPO identity", checked on a tiny real model.

The identity: on-policy, beta = 0, the gradient of the GRPO objective of one group equals
√(α(1−α))·(ḡ⁺ − ḡ⁻) with population std, that times √((G−1)/G) with the unbiased std, and
α(1−α)·(ḡ⁺ − ḡ⁻) without reward scaling; a group with α ∈ {0, 1} has zero gradient.
"""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from coinfluence.training.objectives import (
    grpo_advantages, grpo_loss, group_weight, kl_k3, normalize_logprob, token_logprobs,
)

G, PROMPT, T, V = 6, 4, 5, 23


def tiny_model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, attn_implementation="eager")
    return LlamaForCausalLM(cfg).double()


def rollouts(seed=1):
    """One prompt repeated G times with random completions of varying length."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, V, (1, PROMPT), generator=g).repeat(G, 1)
    completion = torch.randint(0, V, (G, T), generator=g)
    lengths = torch.tensor([5, 3, 4, 5, 2, 4])
    mask = (torch.arange(T) < lengths[:, None]).double()
    return torch.cat([prompt, completion], 1), mask


def completion_logps(model, ids):
    logits = model(ids).logits[:, PROMPT - 1 : -1]
    return token_logprobs(logits, ids[:, PROMPT:])


def flat_grad(model, scalar):
    grads = torch.autograd.grad(scalar, list(model.parameters()), allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, model.parameters())])


def per_rollout_grads(model, ids, mask, normalization="seq-mean"):
    # One batched forward, one backward per rollout: Llama's RMSNorm and softmax run in
    # float32 internally, so a batch-of-one forward would differ at ~1e-8 and blur the check.
    ell = normalize_logprob(completion_logps(model, ids), mask, normalization, max_length=T)
    rows = []
    for i in range(G):
        grads = torch.autograd.grad(ell[i], list(model.parameters()), retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, model.parameters())]))
    return torch.stack(rows)


def loss_gradient(model, ids, mask, rewards, **kw):
    adv = grpo_advantages(rewards, G, **kw).double()
    logps = completion_logps(model, ids)
    loss, _ = grpo_loss(logps, logps.detach(), adv, mask, loss_type="grpo", beta=0.0)
    return -flat_grad(model, loss)  # the gradient of the objective J = -loss


@pytest.mark.parametrize("n_correct", [1, 2, 3, 5])
@pytest.mark.parametrize("scale_rewards, std", [("group", "population"), ("group", "unbiased"), ("none", "population")])
def test_grpo_gradient_identity(n_correct, scale_rewards, std):
    model = tiny_model()
    ids, mask = rollouts()
    rewards = torch.zeros(G, dtype=torch.float64)
    rewards[torch.randperm(G, generator=torch.Generator().manual_seed(n_correct))[:n_correct]] = 1.0
    grads = per_rollout_grads(model, ids, mask)
    g_plus, g_minus = grads[rewards == 1].mean(0), grads[rewards == 0].mean(0)
    alpha = n_correct / G
    expected = group_weight(alpha, G, scale_rewards, std) * (g_plus - g_minus)
    got = loss_gradient(model, ids, mask, rewards, scale_rewards=scale_rewards, std=std)
    assert got.norm() > 0
    # Llama upcasts RMSNorm and softmax to float32 even in a float64 model, so backward
    # passes with different upstream weights round differently at ~1e-7 relative; a wrong
    # convention factor (e.g. √((G−1)/G) ≈ 0.91) would be off by 1e-2 or more.
    assert (got - expected).norm() / expected.norm() < 1e-6
    # The closed-form factors themselves:
    va = alpha * (1 - alpha)
    want = {("group", "population"): math.sqrt(va), ("group", "unbiased"): math.sqrt(va * (G - 1) / G), ("none", "population"): va}
    assert float(group_weight(alpha, G, scale_rewards, std, eps=0.0)) == pytest.approx(want[(scale_rewards, std)])


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_uninformative_group_has_zero_gradient(value):
    model = tiny_model()
    ids, mask = rollouts()
    got = loss_gradient(model, ids, mask, torch.full((G,), value, dtype=torch.float64))
    assert torch.count_nonzero(got) == 0
    assert group_weight(value, G) == 0


def test_advantages_match_a_plain_loop():
    rewards = torch.tensor([1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1], dtype=torch.float)
    for std, ddof in (("population", 0), ("unbiased", 1)):
        got = grpo_advantages(rewards, 6, "group", std, eps=1e-4)
        for q in range(3):
            r = rewards[6 * q : 6 * q + 6].tolist()
            m = sum(r) / 6
            s = math.sqrt(sum((x - m) ** 2 for x in r) / (6 - ddof))
            for i in range(6):
                assert got[6 * q + i].item() == pytest.approx((r[i] - m) / (s + 1e-4), abs=1e-6)
    none = grpo_advantages(rewards, 6, "none")
    assert torch.allclose(none[:6], rewards[:6] - rewards[:6].mean())
    batch = grpo_advantages(rewards, 6, "batch", "population", eps=0.0)
    assert torch.allclose(batch[:6], (rewards[:6] - rewards[:6].mean()) / rewards.std(unbiased=False))


def test_loss_types_normalise_as_documented():
    torch.manual_seed(0)
    B, L = 4, 7
    logps = torch.randn(B, L, dtype=torch.float64, requires_grad=True)
    mask = (torch.arange(L) < torch.tensor([7, 3, 5, 1])[:, None]).double()
    adv = torch.randn(B, dtype=torch.float64)
    per_token = -adv[:, None] * torch.ones(B, L, dtype=torch.float64)  # on-policy ratio 1
    expected = {
        "grpo": ((per_token * mask).sum(1) / mask.sum(1)).mean(),
        "dr_grpo": (per_token * mask).sum() / (B * 10),
        "dapo": (per_token * mask).sum() / mask.sum(),
    }
    for loss_type, want in expected.items():
        loss, stats = grpo_loss(logps, logps.detach(), adv, mask, loss_type=loss_type, max_completion_length=10)
        assert loss.item() == pytest.approx(want.item())
        assert stats["clip_ratio"] == 0.0


def test_clipping_and_kl():
    logps = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))  # ratios against old log-probs of 0
    old = torch.zeros(1, 3)
    mask = torch.ones(1, 3)
    loss, stats = grpo_loss(logps, old, torch.tensor([1.0]), mask, epsilon=0.2)
    # positive advantage: min(r, clip(r)) = [1.2, 0.5, 1.0]
    assert loss.item() == pytest.approx(-(1.2 + 0.5 + 1.0) / 3)
    assert stats["clip_ratio"] == pytest.approx(1 / 3)
    loss_hi, _ = grpo_loss(logps, old, torch.tensor([1.0]), mask, epsilon=0.2, epsilon_high=0.6)
    assert loss_hi.item() == pytest.approx(-(1.5 + 0.5 + 1.0) / 3)
    ref = torch.log(torch.tensor([[1.0, 1.0, 1.0]]))
    k = kl_k3(logps, ref)
    assert (k >= 0).all() and k[0, 2] == 0
    loss_kl, stats = grpo_loss(logps, old, torch.tensor([1.0]), mask, epsilon=0.2, beta=0.5, ref_logps=ref)
    assert loss_kl.item() == pytest.approx(loss.item() + 0.5 * k.mean().item())
    assert stats["kl"] == pytest.approx(k.mean().item())


def test_normalizations():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    assert normalize_logprob(lp, mask, "seq-mean").tolist() == [-2.0, -1.0]
    assert normalize_logprob(lp, mask, "token-sum").tolist() == [-6.0, -2.0]
    assert normalize_logprob(lp, mask, "constant", max_length=4).tolist() == [-1.5, -0.5]
    with pytest.raises(ValueError):
        normalize_logprob(lp, mask, "median")
