"""Check the first-order prediction against a real step (docs/maths.md, "Checking the first order").

For a training query ``q``: take one SGD ascent step ``θ' = θ + η·D∇J(q)`` on the selected
parameters (``D`` the preconditioner, identity by default), re-score fixed target rollouts,
and compare

- observed ``Δℓ(o'|q') = ℓ_θ'(o') − ℓ_θ(o')`` with predicted ``η⟨∇ℓ(o'), D∇J(q)⟩``;
- observed importance-weighted ``ΔJ = mean_j r_j·(π_θ'(o'_j)/π_θ(o'_j) − 1)`` (ratio from summed
  token log-probs ``s``) with predicted ``mean_j r_j·η⟨∇s(o'_j), D∇J(q)⟩``.

Predictions are directional derivatives, so they come from one forward-mode ``jvp`` per query
over all targets rather than from per-rollout gradients.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch.func import jvp
from tqdm.auto import tqdm

from coinfluence.errors import UserError
from coinfluence.influence.features import ell_rows, find_optimizer_state, rollout_rows_on, row_logprobs
from coinfluence.influence.step import objective_gradient, target_weights
from coinfluence.training.objectives import grpo_advantages, normalize_logprob
from coinfluence.training.rollout import eval_mode

DEFAULT_RELATIVE_STEP = 1e-4


def pearson(x, y) -> float:
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if len(x) < 3:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    denom = x.norm() * y.norm()
    return float((x @ y) / denom) if denom > 0 else float("nan")


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean rank), as Spearman needs."""
    x = torch.as_tensor(x, dtype=torch.float64)
    order = torch.argsort(x)
    r = torch.empty_like(x)
    r[order] = torch.arange(len(x), dtype=torch.float64)
    for value in torch.unique(x):
        tied = x == value
        if tied.sum() > 1:
            r[tied] = r[tied].mean()
    return r


def spearman(x, y) -> float:
    return pearson(ranks(x), ranks(y)) if len(x) >= 3 else float("nan")


def ell_and_s(model, params: dict, ids, mask, *, normalization: str, max_length, temperature: float,
              micro_batch: int | None = None):
    """``(ℓ, s)`` of each row, with ``params`` swapped into ``model``, ``micro_batch`` rows per
    forward (all at once when None): the full-vocabulary logits of every target rollout at once
    would dominate memory for a large vocabulary."""
    step = micro_batch or len(ids)
    ells, sums = [], []
    for start in range(0, len(ids), step):
        logps, m = row_logprobs(model, ids[start : start + step], mask[start : start + step], temperature, params)
        ells.append(normalize_logprob(logps, m, normalization, max_length))
        sums.append((logps * m).sum(-1))
    return torch.cat(ells), torch.cat(sums)


def tangents(model, base: dict, v: dict, ids, mask, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dℓ, ds)``: the directional derivatives of each row's ``(ℓ, s)`` along ``v`` at ``base``.

    Forward-mode AD needs no tape, so this runs under no_grad: otherwise the weights not in
    ``base`` (embedding, LM head), which still require grad, record one that keeps every
    micro-batch's full-vocabulary logits alive until the end.
    """
    with torch.no_grad():
        _, out = jvp(lambda p: ell_and_s(model, p, ids, mask, **kw), (base,), (v,))
    return out


def validate_first_order(model, params: dict, train_prompts: Sequence, train_completions: Sequence, train_rewards: torch.Tensor,
                         queries: Sequence[int], target_prompts: Sequence, target_completions: Sequence,
                         target_rewards: torch.Tensor, pad_id: int, *, num_generations: int, normalization: str = "seq-mean",
                         max_length: int | None = None, temperature: float = 1.0, scale_rewards: str = "group",
                         std: str = "population", scales: dict | None = None, eta: float | None = None,
                         relative_step: float = DEFAULT_RELATIVE_STEP, micro_batch: int | None = 16,
                         progress: bool = False) -> dict:
    """Observed vs predicted changes for each query in ``queries`` (indices of train groups).

    ``eta`` defaults to the step whose relative change of the selected parameters is
    ``relative_step``. The model is restored exactly after each step. Target rollouts go through
    the model ``micro_batch`` at a time.
    """
    G = num_generations
    ids, mask = rollout_rows_on(model, target_prompts, target_completions, pad_id)
    r_t = target_rewards.double().to(ids.device)
    base = {n: p.detach().clone() for n, p in params.items()}
    theta_norm = math.sqrt(sum(float(p.double().pow(2).sum()) for p in base.values()))
    kw = dict(normalization=normalization, max_length=max_length, temperature=temperature)
    chunked = dict(kw, micro_batch=micro_batch)
    rows = []
    with eval_mode(model):
        with torch.no_grad():
            ell0, s0 = ell_and_s(model, base, ids, mask, **chunked)
        for q in tqdm(list(queries), desc="validate", file=sys.stderr, disable=not progress, dynamic_ncols=True, leave=False):
            sl = slice(q * G, (q + 1) * G)
            gJ = objective_gradient(model, params, train_prompts[sl], train_completions[sl], train_rewards[sl], pad_id,
                                    scale_rewards=scale_rewards, std=std, **kw)
            v = {n: g * scales[n] ** 2 if scales else g for n, g in gJ.items()}
            v_norm = math.sqrt(sum(float(t.double().pow(2).sum()) for t in v.values()))
            if v_norm == 0:
                continue
            step = eta if eta is not None else relative_step * theta_norm / v_norm
            dell, ds = tangents(model, base, v, ids, mask, **chunked)
            with torch.no_grad():
                moved = {n: base[n] + step * v[n] for n in base}
                ell1, s1 = ell_and_s(model, moved, ids, mask, **chunked)
            rows.append({
                "query": int(q), "eta": step,
                "dlogp_observed": (ell1 - ell0).double().cpu(), "dlogp_predicted": (step * dell).double().cpu(),
                "dJ_observed": float((r_t * torch.expm1((s1 - s0).double())).mean()),
                "dJ_predicted": float((r_t * step * ds.double()).mean()),
            })
    obs = torch.cat([r["dlogp_observed"] for r in rows]) if rows else torch.zeros(0)
    pred = torch.cat([r["dlogp_predicted"] for r in rows]) if rows else torch.zeros(0)
    dj_obs = [r["dJ_observed"] for r in rows]
    dj_pred = [r["dJ_predicted"] for r in rows]
    return {
        "queries": [r["query"] for r in rows],
        "eta": [r["eta"] for r in rows],
        "n_pairs": int(len(obs)),
        "pearson_dlogp": pearson(obs, pred), "spearman_dlogp": spearman(obs, pred),
        "pearson_dJ": pearson(dj_obs, dj_pred), "spearman_dJ": spearman(dj_obs, dj_pred),
        "dJ_observed": dj_obs, "dJ_predicted": dj_pred,
        "dlogp_observed": obs, "dlogp_predicted": pred,
    }


# ----------------------------------------------------------------------------- the trainer's own step


def target_objective_change(model, tg: dict, before: torch.Tensor, objective: str, knobs: dict, pad_id: int) -> float:
    """The observed change of the target objective on the fixed target rollouts ``tg`` since
    ``before`` (their per-rollout ``ℓ``, or summed log-probability for ``reward``, at the start):
    ``(1/N') Σ A_j Δℓ_j`` for the surrogate; the importance-weighted ``(1/N') Σ (r_j − r̄)(π'/π − 1)_j``
    for the expected reward."""
    w, _ = target_weights(tg["rewards"], int(knobs["num_generations"]), objective, knobs["scale_rewards"], knobs["std"],
                          knobs["normalization"])
    after = rollout_objective_terms(model, tg, objective, knobs, pad_id)
    change = after - before if objective == "surrogate" else torch.expm1(after - before)
    return float((w * change).mean())


def rollout_objective_terms(model, tg: dict, objective: str, knobs: dict, pad_id: int, micro_batch: int = 32) -> torch.Tensor:
    """Per target rollout: ``ℓ`` as trained (surrogate) or the summed token log-probability (reward)."""
    _, norm = target_weights(tg["rewards"], int(knobs["num_generations"]), objective, knobs["scale_rewards"], knobs["std"],
                             knobs["normalization"])
    out = []
    with eval_mode(model), torch.no_grad():
        for s in range(0, len(tg["prompts"]), micro_batch):
            ids, mask = rollout_rows_on(model, tg["prompts"][s : s + micro_batch], tg["completions"][s : s + micro_batch], pad_id)
            out.append(ell_rows(model, ids, mask, normalization=norm, max_length=int(knobs["max_completion_length"]),
                                temperature=float(knobs["temperature"])).double().cpu())
    return torch.cat(out)


def grpo_resume_step(ckpt: Path) -> int:
    """The step at which the GRPO trainer continues from ``ckpt``: a GRPO checkpoint's (it resumes
    the saved optimizer and schedule); 0 for a model without optimizer state (a fresh optimizer,
    as GRPO after SFT). UserError for another trainer's state, which GRPO cannot resume."""
    from coinfluence.training.checkpoint import load_trainer_state

    if find_optimizer_state(ckpt) is None:
        return 0
    if not (ckpt / "grpo_config.json").exists():
        raise UserError(f"{ckpt} holds another trainer's optimizer state, which GRPO cannot continue; pass the model "
                        "GRPO starts from (RUN/sft) or a GRPO checkpoint")
    return int(load_trainer_state(ckpt).get("step", 0))


def trainer_step(model, ckpt: Path, cfg, prompts: Sequence, completions: Sequence, rewards: torch.Tensor, pad_id: int) -> float:
    """One update of the GRPO trainer on these rollouts, in place: its loss, micro-batching,
    clipping and AdamW, with the optimizer and learning-rate schedule resumed from ``ckpt`` (fresh
    where it saved none). Returns the learning rate of the step."""
    from coinfluence.training.checkpoint import load_trainer_state
    from coinfluence.training.grpo import _optimise, make_optimizer

    optimizer, scheduler = make_optimizer(model, cfg)
    if grpo_resume_step(ckpt):
        state = load_trainer_state(ckpt)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    lr = scheduler.get_last_lr()[0]
    adv = grpo_advantages(rewards, cfg.num_generations, cfg.scale_rewards, cfg.std)
    _optimise(cfg, model, optimizer, list(prompts), list(completions), adv, pad_id, None)
    model.eval()
    return float(lr)


def validate_trainer_step(model, ckpt: Path, cfg, tr: dict, queries: Sequence[int], tg: dict, knobs: dict, pad_id: int, *,
                          predicted: dict[str, torch.Tensor], target_objective: str = "surrogate", fresh_accuracy=None) -> dict:
    """Per query in ``queries``: the trainer's real step on that group alone, the observed change of
    the target objective on the fixed target rollouts, and ``lr·delta_J`` predicted (``predicted``:
    per-query ΔJ by kind, e.g. plain and adam). With ``fresh_accuracy`` (model -> (mean reward of
    freshly sampled target rollouts, its standard error)), also the change of E[r] by sampling.
    The model is restored exactly after each step."""
    G = cfg.num_generations
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    before = rollout_objective_terms(model, tg, target_objective, knobs, pad_id)
    acc0 = fresh_accuracy(model) if fresh_accuracy else None
    rows = []
    try:
        for q in queries:
            sl = slice(q * G, (q + 1) * G)
            lr = trainer_step(model, ckpt, cfg, tr["prompts"][sl], tr["completions"][sl], tr["rewards"][sl], pad_id)
            rows.append({"query": int(q), "lr": lr,
                         "observed": target_objective_change(model, tg, before, target_objective, knobs, pad_id),
                         **{f"predicted_{k}": lr * float(v[q]) for k, v in predicted.items()}})
            rows[-1].update({f"observed_over_predicted_{k}": rows[-1]["observed"] / rows[-1][f"predicted_{k}"]
                             for k in predicted if rows[-1][f"predicted_{k}"]})
            if fresh_accuracy:
                acc, se = fresh_accuracy(model)
                rows[-1].update(sampled_reward_change=acc - acc0[0], sampled_reward_change_se=math.hypot(se, acc0[1]))
            model.load_state_dict(saved)
    finally:
        model.load_state_dict(saved)
    obs = [r["observed"] for r in rows]
    return {"rows": rows, **{f"{stat.__name__}_{k}": stat([r[f"predicted_{k}"] for r in rows], obs)
                             for k in predicted for stat in (pearson, spearman)}}
