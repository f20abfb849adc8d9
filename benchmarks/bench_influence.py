"""Influence engine costs on the ``tiny`` preset with rollouts of the mini task.

Measures, in one run:

1. per-rollout features: vmap and the layerwise engine (one batched backward + per-layer
   outer products) vs the per-rollout autograd loop (aim ≥ 10×), and vs the floor — one
   batched forward+backward of Σℓ over the same tokens (aim within 2×);
2. the aggregated ΔJ path (targets + one backward per group) vs one GRPO step (the trainer's
   ``_optimise``) on the same rollouts (aim ≤ 1.5×), and vs its floor: the targets' backward
   plus one batched backward of the train rollouts in the step's micro-batches, what the path
   would cost if every group's gradient came out of one backward;
3. peak resident memory of features for 4,096 rollouts sketched to about d = 1,024 (a child
   process, so the number is that computation's alone): the dense Gaussian sketch on one
   layer, and the per-layer Kronecker sketch on every weight matrix of the model.

Rollouts are the task's reference completions (truncated to ``--completion-tokens``), so
timings do not depend on what an untrained model happens to sample. Rewards are random 0/1,
making every group informative (the aggregated path's worst case).

    .venv/bin/python benchmarks/bench_influence.py            # writes influence.csv / influence.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from floor import backward_floor  # noqa: E402  (benchmarks/floor.py)
from machine import publish  # noqa: E402  (benchmarks/machine.py)

HERE = Path(__file__).resolve().parent


def setup(n_queries: int, G: int, completion_tokens: int, seed: int = 0):
    from coinfluence.models.format import encode_completion, encode_prompt
    from coinfluence.models.loading import default_task_tokenizer, load_model
    from coinfluence.tasks.data import DataConfig, make_dataset

    rows = make_dataset(DataConfig(preset="mini", seed=seed, sft_size=1, rl_size=max(n_queries, 8), eval_size=1))["rl_train"]
    tok = default_task_tokenizer("mini")
    model, tok = load_model("tiny", tok, seed=seed)
    rng = random.Random(seed)
    prompts, comps = [], []
    for r in rows[:n_queries]:
        p, full = encode_prompt(tok, r["prompt"]), encode_completion(tok, r["completion"])
        for _ in range(G):
            comps.append(full[: rng.randint(completion_tokens // 2, completion_tokens)])
            prompts.append(p)
    rewards = torch.tensor([float(rng.random() < 0.5) for _ in prompts], dtype=torch.float64)
    for q in range(n_queries):  # keep every group informative
        rewards[q * G], rewards[q * G + 1] = 1.0, 0.0
    return model, tok, prompts, comps, rewards


def timed(fn, repeat: int = 1):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_features(model, tok, prompts, comps, loop_n: int, chunk_size: int):
    from coinfluence.influence import features as feat
    from coinfluence.influence.layerwise import features_layerwise
    pad = tok.pad_token_id
    params = feat.select_params(model)
    n = len(prompts)
    t_vmap, F = timed(lambda: feat.features_vmap(model, prompts, comps, pad, chunk_size=chunk_size, params=params), repeat=2)
    t_layer, F_layer = timed(lambda: features_layerwise(model, prompts, comps, pad, chunk_size=chunk_size, params=params), repeat=2)
    agreement = float(((F - F_layer).norm(dim=1) / F.norm(dim=1)).max())
    t_loop, _ = timed(lambda: feat.features_loop(model, prompts[:loop_n], comps[:loop_n], pad, params=params))
    t_loop_all = t_loop * n / loop_n

    t_floor, _ = timed(lambda: backward_floor(model, list(params.values()), prompts, comps, pad, chunk_size), repeat=2)
    return {"n_rollouts": n, "params": feat.num_features(params), "vmap_s": t_vmap, "loop_s_extrapolated": t_loop_all,
            "loop_measured_on": loop_n, "floor_s": t_floor, "vmap_speedup_over_loop": t_loop_all / t_vmap,
            "vmap_over_floor": t_vmap / t_floor, "layerwise_s": t_layer, "layerwise_speedup_over_loop": t_loop_all / t_layer,
            "layerwise_over_floor": t_layer / t_floor, "layerwise_vs_vmap_max_rel_err": agreement}


def bench_delta_J(model, tok, prompts, comps, rewards, G: int, n_target_queries: int):
    import copy

    from coinfluence.influence import features as feat
    from coinfluence.influence.step import delta_J_aggregated, target_direction, target_weights
    from coinfluence.training.grpo import GRPOConfig, _optimise
    from coinfluence.training.objectives import grpo_advantages
    from coinfluence.training.rollout import eval_mode

    pad = tok.pad_token_id
    nt = n_target_queries * G
    tgt = (prompts[:nt], comps[:nt], rewards[:nt])
    params = feat.select_params(model)
    t_agg, _ = timed(lambda: delta_J_aggregated(model, params, prompts, comps, rewards, *tgt, pad, num_generations=G), repeat=2)
    cfg = GRPOConfig(num_generations=G)  # the trainer's default length-grouped micro-batches
    target_advantages, _ = target_weights(tgt[2], G)

    def floor():
        with eval_mode(model):
            target_direction(model, params, tgt[0], tgt[1], target_advantages, pad)
            backward_floor(model, list(params.values()), prompts, comps, pad, cfg.micro_batch_size)

    t_floor, _ = timed(floor, repeat=2)
    stepped = copy.deepcopy(model)
    opt = torch.optim.AdamW(stepped.parameters(), lr=1e-6)
    adv = grpo_advantages(rewards, G).float()
    t_step, _ = timed(lambda: _optimise(cfg, stepped, opt, prompts, comps, adv, pad, None), repeat=2)
    return {"train_rollouts": len(prompts), "target_rollouts": nt, "aggregated_s": t_agg, "grpo_step_s": t_step,
            "aggregated_over_step": t_agg / t_step, "aggregated_floor_s": t_floor, "aggregated_over_floor": t_agg / t_floor,
            "floor_over_step": t_floor / t_step}


def memory_child(n: int, dim: int, completion_tokens: int, chunk_size: int, params: str | None, kron_rank: int) -> None:
    from coinfluence.influence import features as feat
    from coinfluence.influence.layerwise import features_layerwise

    model, tok, prompts, comps, _ = setup(max(1, n // 8), 8, completion_tokens)
    selected = feat.select_params(model, params)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if kron_rank:
        F = features_layerwise(model, prompts[:n], comps[:n], tok.pad_token_id, chunk_size=chunk_size, kron_rank=kron_rank, seed=0, params=selected)
    else:
        F = feat.features_vmap(model, prompts[:n], comps[:n], tok.pad_token_id, chunk_size=chunk_size, project_dim=dim, seed=0, params=selected)
    elapsed = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n_rollouts": len(F), "project_dim": F.shape[1], "kron_rank": kron_rank, "params": feat.num_features(selected),
                      "peak_rss_mib": peak / 1024, "rss_before_mib": base / 1024, "seconds": elapsed,
                      "features_mib": F.numel() * F.element_size() / 2**20}))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--completion-tokens", type=int, default=48)
    ap.add_argument("--loop-n", type=int, default=8)
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--memory-n", type=int, default=4096)
    ap.add_argument("--memory-dim", type=int, default=1024)
    ap.add_argument("--memory-tokens", type=int, default=8)
    ap.add_argument("--memory-params", default=r"layers\.3\.mlp\.down_proj",
                    help="parameter regex for the memory run ('' = all; the sketch costs N·P·d flops)")
    ap.add_argument("--memory-kron-rank", type=int, default=6,
                    help="rank per side of the Kronecker sketch in the second memory run (every weight matrix; 29 matrices x 36 = 1,044 dims on tiny)")
    ap.add_argument("--memory-kron-params", default=r"proj|embed", help="parameter regex of the Kronecker memory run")
    ap.add_argument("--memory-kron-tokens", type=int, default=48, help="completion tokens per rollout in the Kronecker memory run")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-kron", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    return args


def speed_rows(args) -> list[tuple[str, str, str]]:
    model, tok, prompts, comps, rewards = setup(args.queries, args.num_generations, args.completion_tokens)
    f = bench_features(model, tok, prompts, comps, args.loop_n, args.chunk_size)
    d = bench_delta_J(model, tok, prompts, comps, rewards, args.num_generations, max(1, args.queries // 2))
    return [
        ("features: vmap", f"{f['vmap_s']:.2f} s", f"{f['n_rollouts']} rollouts, {f['params']:,} params"),
        ("features: per-rollout loop", f"{f['loop_s_extrapolated']:.2f} s", f"extrapolated from {f['loop_measured_on']} rollouts"),
        ("features: batched backward (floor)", f"{f['floor_s']:.2f} s", "one backward of Σℓ, same chunks"),
        ("vmap speed-up over loop", f"{f['vmap_speedup_over_loop']:.1f}x", "aim >= 10x"),
        ("vmap / floor", f"{f['vmap_over_floor']:.2f}x", "aim <= 2x"),
        ("features: layerwise", f"{f['layerwise_s']:.2f} s", f"max rel. difference to vmap {f['layerwise_vs_vmap_max_rel_err']:.1e}"),
        ("layerwise speed-up over loop", f"{f['layerwise_speedup_over_loop']:.1f}x", "aim >= 10x"),
        ("layerwise / floor", f"{f['layerwise_over_floor']:.2f}x", "aim <= 2x"),
        ("ΔJ aggregated path", f"{d['aggregated_s']:.2f} s", f"{d['train_rollouts']} train + {d['target_rollouts']} target rollouts"),
        ("one GRPO step (same rollouts)", f"{d['grpo_step_s']:.2f} s", "forward+backward+AdamW"),
        ("aggregated / GRPO step", f"{d['aggregated_over_step']:.2f}x", "aim <= 1.5x"),
        ("ΔJ aggregated floor", f"{d['aggregated_floor_s']:.2f} s", "targets' backward + one batched backward of the train rollouts"),
        ("aggregated / its floor", f"{d['aggregated_over_floor']:.2f}x", "the cost of one backward per group"),
        ("its floor / GRPO step", f"{d['floor_over_step']:.2f}x", "the least the aim can be"),
    ]


def memory_rows(args) -> list[tuple[str, str, str]]:
    """Peak memory of a large sketch, Gaussian and Kronecker, each in its own process."""
    def child(*extra):
        cmd = [sys.executable, __file__, "--memory-child", "--memory-n", str(args.memory_n), "--memory-dim", str(args.memory_dim),
               "--chunk-size", str(max(args.chunk_size, 64)), *extra]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])

    rows = []
    for m, label, regex in (
        (child("--memory-tokens", str(args.memory_tokens), "--memory-params", args.memory_params), "Gaussian sketch", args.memory_params),
        (child("--memory-tokens", str(args.memory_kron_tokens), "--memory-params", args.memory_kron_params,
               "--memory-kron", str(args.memory_kron_rank)), f"Kronecker sketch, rank {args.memory_kron_rank}", args.memory_kron_params),
    ):
        rows.append((f"peak RSS, {m['n_rollouts']} rollouts -> d={m['project_dim']} ({label})", f"{m['peak_rss_mib']:.0f} MiB",
                     f"{m['rss_before_mib']:.0f} MiB before; features {m['features_mib']:.0f} MiB; {m['seconds']:.0f} s; "
                     f"{m['params']:,} params ({regex or 'all'})"))
    return rows


def main() -> None:
    args = parse_args()
    if args.memory_child:
        memory_child(args.memory_n, args.memory_dim, args.memory_tokens, args.chunk_size, args.memory_params or None, args.memory_kron)
        return
    rows = speed_rows(args) + ([] if args.skip_memory else memory_rows(args))
    command = " ".join([".venv/bin/python", "benchmarks/bench_influence.py", *sys.argv[1:]])
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}"
    header = ["measure", "value", "note"]
    publish(HERE / "influence", header, [list(r) for r in rows], [dict(zip(header, r)) for r in rows],
            ["# Influence engine benchmark\n", f"Command: `{command}`  ", f"Machine: {machine}\n"], align="---|---:|---")

if __name__ == "__main__":
    main()
