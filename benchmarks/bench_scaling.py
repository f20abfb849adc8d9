"""How the kernel analysis scales: time and peak memory vs rollouts N and vs parameter count.

The analysis measured is the library's own kernel path (``influence.analyze.kernel_streaming``):
per-rollout features by vmap for ``--targets`` target rollouts (held) and N train rollouts
(streamed in chunks when unprojected), and ``K = F_target · F_trainᵀ``. Two sweeps:

- rollouts: the ``tiny`` preset, N = 64 / 256 / 1024 train rollouts;
- parameters: N = ``--param-n`` train rollouts on the ``nano`` / ``tiny`` / ``small`` presets;

each without projection (exact gradients, all parameters), with the seeded Gaussian sketch
``features.project`` to ``--project-dim`` dimensions, and (when ``coinfluence.influence.layerwise``
is in the checkout) with the layerwise engine's per-layer Kronecker sketch of rank ``--kron-rank``
(``features_layerwise`` for targets and train, then the same kernel). Rollouts are mini-task prompts with their
reference completions cut to a seeded length in ``--completion-tokens``. Every configuration
runs in its own child process; peak memory is the growth of the peak RSS (``ru_maxrss``) over
the RSS after setup (model + data). Writes scaling.csv, scaling.md and scaling.png (``--quick``: scaling_quick.*).

    .venv-bench/bin/python benchmarks/bench_scaling.py            # full sweep (a few minutes)
    .venv-bench/bin/python benchmarks/bench_scaling.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from machine import lscpu_model, publish, rss_now_mib  # noqa: E402  (benchmarks/machine.py)

HERE = Path(__file__).resolve().parent


def rollouts(tok, n: int, lo: int, hi: int, seed: int, offset: int = 0):
    from coinfluence.models.format import encode_completion, encode_prompt
    from coinfluence.tasks.data import DataConfig, make_dataset

    rows = make_dataset(DataConfig(preset="mini", seed=seed, sft_size=1, rl_size=256, eval_size=1))["rl_train"]
    rng = random.Random(f"{seed}:{offset}")
    prompts, comps = [], []
    for i in range(n):
        r = rows[(offset + i) % len(rows)]
        prompts.append(encode_prompt(tok, r["prompt"]))
        comps.append(encode_completion(tok, r["completion"])[: rng.randint(lo, hi)])
    return prompts, comps


def child(args) -> None:
    from coinfluence.influence import features as feat
    from coinfluence.influence.analyze import kernel_streaming
    from coinfluence.models.loading import default_task_tokenizer, load_model

    torch.set_num_threads(args.threads)
    tok = default_task_tokenizer("mini")
    model, tok = load_model(args.child_preset, tok, seed=args.seed)
    lo, hi = args.completion_tokens
    tr_p, tr_c = rollouts(tok, args.child_n, lo, hi, args.seed, offset=0)
    tg_p, tg_c = rollouts(tok, args.targets, lo, hi, args.seed, offset=100_000)
    params = feat.select_params(model)
    knobs = {"normalization": "seq-mean", "max_completion_length": hi, "temperature": 1.0}
    dim = args.child_dim or None
    base = rss_now_mib()
    t = time.perf_counter()
    if args.child_kron:
        from coinfluence.influence.kernel import co_influence_kernel
        from coinfluence.influence.layerwise import features_layerwise

        kw = dict(params=params, chunk_size=args.chunk_size, kron_rank=args.child_kron, seed=args.seed)
        F_t = features_layerwise(model, tg_p, tg_c, tok.pad_token_id, **kw)
        K = co_influence_kernel(F_t, features_layerwise(model, tr_p, tr_c, tok.pad_token_id, **kw))
        d = F_t.shape[1]
    else:
        K, d = kernel_streaming(model, params, {"prompts": tr_p, "completions": tr_c}, {"prompts": tg_p, "completions": tg_c},
                                tok.pad_token_id, scales=None, project_dim=dim, knobs=knobs, seed=args.seed,
                                chunk_size=args.chunk_size, progress=False)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert K.shape == (args.targets, args.child_n) and torch.isfinite(K).all()
    tokens = sum(len(p) + len(c) for p, c in zip(tr_p + tg_p, tr_c + tg_c))
    print(json.dumps({"seconds": seconds, "peak_delta_mib": max(0.0, peak - base), "rss_base_mib": base,
                      "params": feat.num_features(params), "feature_dim": d, "tokens": tokens}))


def plot(results, path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for col, (sweep, x_key, x_label) in enumerate((("rollouts", "n_train", "train rollouts N (tiny preset)"),
                                                    ("params", "params", f"parameters (nano / tiny / small, N = {args.param_n})"))):
        for proj, style in (("none", "o-"), (f"d={args.project_dim}", "s--"), (f"kron k={args.kron_rank}", "^:")):
            rows = sorted((r for r in results if r["sweep"] == sweep and r["projection"] == proj and r.get("seconds") is not None),
                          key=lambda r: r[x_key])
            if not rows:
                continue
            xs = [r[x_key] for r in rows]
            label = ("vmap, exact gradients" if proj == "none" else f"vmap + Gaussian sketch, {proj}" if proj.startswith("d=")
                     else f"layerwise + Kronecker sketch, {proj}")
            axes[0, col].plot(xs, [r["seconds"] for r in rows], style, label=label)
            axes[1, col].plot(xs, [r["peak_delta_mib"] for r in rows], style, label=label)
            if sweep == "params":
                for r in rows:
                    axes[0, col].annotate(r["preset"], (r[x_key], r["seconds"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        for row, y_label in ((0, "seconds (features + kernel)"), (1, "peak RSS growth (MiB)")):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(x_label)
            ax.set_ylabel(y_label)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"Kernel analysis scaling ({args.targets} target rollouts, {lscpu_model()}, {args.threads} thread(s))", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[64, 256, 1024], help="train rollouts for the rollout sweep")
    ap.add_argument("--presets", nargs="+", default=["nano", "tiny", "small"], help="presets for the parameter sweep")
    ap.add_argument("--param-n", type=int, default=64, help="train rollouts for the parameter sweep")
    ap.add_argument("--targets", type=int, default=32, help="target rollouts (rows of K)")
    ap.add_argument("--project-dim", type=int, default=256, help="dense Gaussian sketch (features.project) dimension")
    ap.add_argument("--kron-rank", type=int, default=16,
                    help="also run the layerwise engine with its per-layer Kronecker sketch of this rank (0: skip; "
                         "skipped when coinfluence.influence.layerwise is not in the checkout)")
    ap.add_argument("--completion-tokens", type=int, nargs=2, default=(16, 48), metavar=("LO", "HI"))
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: N = 16/32/64, param sweep at N = 16, short rollouts")
    ap.add_argument("--child-preset", help=argparse.SUPPRESS)
    ap.add_argument("--child-n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-dim", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-kron", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.ns, args.param_n, args.targets, args.completion_tokens, args.project_dim = [16, 32, 64], 16, 8, (8, 16), 64
    return args


def measure(args, preset: str, n: int, dim: int, kron: int) -> dict:
    """One preset, N and projection, in its own process."""
    cmd = [sys.executable, __file__, "--child-preset", preset, "--child-n", str(n), "--child-dim", str(dim),
           "--child-kron", str(kron),
           "--targets", str(args.targets), "--completion-tokens", *map(str, args.completion_tokens),
           "--chunk-size", str(args.chunk_size), "--threads", str(args.threads), "--seed", str(args.seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return {"status": "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:120]}
    return {"status": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}


def sweep(args) -> list[dict]:
    """The rollout sweep (tiny, N in --ns) and the parameter sweep (--presets at --param-n), each projection."""
    configs = [("rollouts", "tiny", n) for n in args.ns] + [("params", p, args.param_n) for p in args.presets]
    variants = [(0, 0), (args.project_dim, 0)]
    if args.kron_rank and importlib.util.find_spec("coinfluence.influence.layerwise") is not None:
        variants.append((0, args.kron_rank))
    results, cache = [], {}
    for name, preset, n in configs:
        for dim, kron in variants:
            proj = f"kron k={kron}" if kron else "none" if not dim else f"d={dim}"
            key = (preset, n, dim, kron)
            if key not in cache:  # tiny at N = param-n appears in both sweeps: run it once
                print(f"{preset} N={n} {proj} ...", file=sys.stderr, flush=True)
                cache[key] = measure(args, *key)
            engine = "layerwise" if kron else "vmap (kernel_streaming)"
            results.append({"sweep": name, "preset": preset, "n_train": n, "n_target": args.targets, "engine": engine,
                            "projection": proj, **cache[key]})
    return results


def write_tables(args, results: list[dict], loads: tuple[float, float]) -> None:
    header = ["sweep", "preset", "params", "n_train", "n_target", "tokens", "engine", "projection", "feature_dim", "seconds", "peak_delta_mib", "status"]
    fmt = {"params": "{:,}", "tokens": "{:,}", "feature_dim": "{:,}", "seconds": "{:.2f}", "peak_delta_mib": "{:.0f}"}
    table = [[fmt[h].format(r[h]) if h in fmt and r.get(h) is not None else str(r.get(h, "")) for h in header] for r in results]
    stem = "scaling_quick" if args.quick else "scaling"  # a smoke run never replaces the published files
    plot(results, HERE / f"{stem}.png", args)
    command = " ".join([".venv-bench/bin/python", "benchmarks/bench_scaling.py", *sys.argv[1:]])
    preamble = [
        "# Kernel analysis scaling\n",
        f"Command: `{command}`  ",
        f"Machine: {lscpu_model()}, {os.cpu_count()} CPUs, {args.threads} torch threads; torch {torch.__version__}  ",
        f"Load average (1 min) before / after: {loads[0]:.1f} / {loads[1]:.1f} (other processes shared the cores when it exceeds the core count)  ",
        f"Setting: `influence.analyze.kernel_streaming` (vmap features, chunk {args.chunk_size}; K = F_target · F_trainᵀ), and "
        f"`influence.layerwise.features_layerwise` with the Kronecker sketch (rank {args.kron_rank}) + the same kernel, for N train "
        f"rollouts against {args.targets} target rollouts, completions of {args.completion_tokens[0]}-{args.completion_tokens[1]} tokens after "
        "20-77-token prompts, all parameters; `tokens` counts train + target tokens. Peak = growth of peak RSS over the RSS after setup.\n",
        f"![scaling]({stem}.png)\n",
    ]
    publish(HERE / stem, header, table, results, preamble)


def main() -> None:
    args = parse_args()
    if args.child_preset:
        child(args)
        return
    load_before = os.getloadavg()[0]
    results = sweep(args)
    load_after = os.getloadavg()[0]
    write_tables(args, results, (load_before, load_after))

if __name__ == "__main__":
    main()
