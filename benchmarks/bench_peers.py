"""Per-rollout gradient features and the co-influence kernel: coinfluence vs its peers.

Same model (the ``tiny`` preset, randomly initialised and seeded, or ``--ckpt``), same
rollouts (mini-task prompts with their reference completions cut to a seeded length, so a
rollout is ~60-130 tokens), same per-rollout quantity ``ℓ`` (seq-mean completion
log-probability at temperature 1), and the same kernel ``K = G_target · G_trainᵀ``:

- ``ours vmap``   coinfluence.influence.features.features_vmap (+ kernel.co_influence_kernel)
- ``ours layerwise`` coinfluence.influence.layerwise.features_layerwise: one batched backward to
                  every layer's output, per-rollout weight gradients as batched outer products
                  (skipped when the module is not in the checkout)
- ``ours loop``   coinfluence.influence.features.features_loop: one forward/backward per rollout
- ``dattri``      dattri's Grad-Dot: TracInAttributor(weight_list=[1], normalized_grad=False),
                  i.e. vmap(grad) per sample; its default random projection is switched off
- ``floor``       not a method: one batched forward+backward of Σℓ over the same chunks, no
                  per-rollout gradient (a lower bound for anything that backpropagates each rollout)
- ``kronfluence`` Analyzer.compute_pairwise_scores with the ``identity`` factor strategy
                  (per-sample gradients of nn.Linear modules from forward/backward hooks);
                  loss and measurement are both Σ ℓ over the batch

Two parameter scopes: ``linear`` = the weights of every nn.Linear inside the decoder layers
(q/k/v/o/gate/up/down, 95% of the tiny model; the only scope Kronfluence supports, since it
tracks nn.Linear/nn.Conv2d modules only and the tied embedding/head is one tensor here), and
``all`` = every trainable parameter (ours and dattri).

Each method runs in its own child process: one cold run (which sets the memory figure), then
``--repeats`` warm runs (the time is their median; fewer when a run takes over 10 s). Peak memory is the growth of the
process's peak resident set size (``ru_maxrss``) over the RSS after setup, i.e. what the
method added on top of model + data; tracemalloc would miss torch's allocations. Agreement is
``max |K_peer − K_ours| / max |K_ours|`` against ours-vmap in the same scope.

    .venv-bench/bin/python benchmarks/bench_peers.py             # writes peers.csv / peers.md
    .venv-bench/bin/python benchmarks/bench_peers.py --quick     # smoke run, small sizes
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from floor import backward_floor  # noqa: E402  (benchmarks/floor.py)
from machine import lscpu_model, package_versions, publish, rss_now_mib  # noqa: E402  (benchmarks/machine.py)

HERE = Path(__file__).resolve().parent
LINEAR_REGEX = r"^model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$"
METHODS = ("floor", "ours-vmap", "ours-layerwise", "ours-loop", "dattri", "kronfluence")


# ----------------------------------------------------------------------------- shared setup


def setup(args):
    """Model, tokenizer and the (train, target) rollouts; everything seeded."""
    from coinfluence.models.format import encode_completion, encode_prompt
    from coinfluence.models.loading import default_task_tokenizer, load_model
    from coinfluence.tasks.data import DataConfig, make_dataset

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    n_rows = args.n_train + args.n_target
    rows = make_dataset(DataConfig(preset="mini", seed=args.seed, sft_size=1, rl_size=max(n_rows, 8), eval_size=1))["rl_train"]
    tok = default_task_tokenizer("mini") if not args.ckpt else None
    model, tok = load_model(args.ckpt or args.preset, tok, seed=args.seed)
    model = model.to(getattr(torch, args.dtype)).eval()
    rng = random.Random(args.seed)
    lo, hi = args.completion_tokens
    prompts, comps = [], []
    for i in range(n_rows):
        r = rows[i % len(rows)]
        full = encode_completion(tok, r["completion"])
        prompts.append(encode_prompt(tok, r["prompt"]))
        comps.append(full[: rng.randint(lo, hi)])
    n = args.n_train
    return model, tok, (prompts[:n], comps[:n]), (prompts[n:], comps[n:])


def scope_params(model, scope: str) -> dict[str, torch.Tensor]:
    from coinfluence.influence.features import select_params

    return select_params(model, LINEAR_REGEX if scope == "linear" else None)


class Rows(torch.utils.data.Dataset):
    """(ids [L], completion mask [L-1]) per rollout, unpadded; ``pad_collate`` pads a batch."""

    def __init__(self, prompts, comps):
        dtype = torch.get_default_dtype()
        self.items = [(torch.tensor(list(p) + list(c)), torch.tensor([0.0] * (len(p) - 1) + [1.0] * len(c), dtype=dtype))
                      for p, c in zip(prompts, comps)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def pad_collate(pad_id: int):
    def collate(batch):
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros(len(batch), width - 1, dtype=batch[0][1].dtype)
        for b, (x, m) in enumerate(batch):
            ids[b, : len(x)] = x
            mask[b, : len(m)] = m
        return ids, mask
    return collate


def ell_rows(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ℓ per row: seq-mean completion log-probability (the library's own functions)."""
    from coinfluence.training.objectives import normalize_logprob, token_logprobs

    return normalize_logprob(token_logprobs(logits[:, :-1], ids[:, 1:], 1.0), mask, "seq-mean")


# ----------------------------------------------------------------------------- methods


def run_ours_vmap(model, tok, train, target, scope, args):
    from coinfluence.influence.features import features_vmap
    from coinfluence.influence.kernel import co_influence_kernel

    params = scope_params(model, scope)
    F_tr = features_vmap(model, *train, tok.pad_token_id, params=params, chunk_size=args.batch_size)
    F_t = features_vmap(model, *target, tok.pad_token_id, params=params, chunk_size=args.batch_size)
    return co_influence_kernel(F_t, F_tr)


def run_ours_layerwise(model, tok, train, target, scope, args):
    try:
        from coinfluence.influence.layerwise import features_layerwise
    except ImportError:
        raise NotImplementedError("coinfluence.influence.layerwise is not in this checkout") from None
    from coinfluence.influence.kernel import co_influence_kernel

    params = scope_params(model, scope)
    F_tr = features_layerwise(model, *train, tok.pad_token_id, params=params, chunk_size=args.batch_size)
    F_t = features_layerwise(model, *target, tok.pad_token_id, params=params, chunk_size=args.batch_size)
    return co_influence_kernel(F_t, F_tr)


def run_ours_loop(model, tok, train, target, scope, args):
    from coinfluence.influence.features import features_loop
    from coinfluence.influence.kernel import co_influence_kernel

    params = scope_params(model, scope)
    F_tr = features_loop(model, *train, tok.pad_token_id, params=params)
    F_t = features_loop(model, *target, tok.pad_token_id, params=params)
    return co_influence_kernel(F_t, F_tr)


def run_dattri(model, tok, train, target, scope, args):
    from torch.func import functional_call
    from torch.utils.data import DataLoader

    from dattri.algorithm.tracin import TracInAttributor
    from dattri.task import AttributionTask

    def ell(params, data):  # one rollout; dattri vmaps over the batch dimension
        ids, mask = data
        logits = functional_call(model, params, (ids[None],)).logits
        return ell_rows(logits, ids[None], mask[None])[0]

    task = AttributionTask(loss_func=ell, model=model, checkpoints=model.state_dict())
    layer_name = list(scope_params(model, scope)) if scope == "linear" else None
    attributor = TracInAttributor(task=task, weight_list=torch.ones(1), normalized_grad=False, layer_name=layer_name)
    # TracInAttributor always sketches to 512 dims (DEFAULT_PROJECTOR_KWARGS is applied even when
    # projector_kwargs=None is passed); Grad-Dot on the exact gradients needs it off.
    attributor.projector_kwargs = None
    collate = pad_collate(tok.pad_token_id)
    # dattri recomputes every test gradient once per train batch, so one train batch of all
    # train rollouts is its fastest setting; test rollouts go in batches of --batch-size.
    train_loader = DataLoader(Rows(*train), batch_size=len(train[0]), shuffle=False, collate_fn=collate)
    test_loader = DataLoader(Rows(*target), batch_size=args.batch_size, shuffle=False, collate_fn=collate)
    return attributor.attribute(train_loader, test_loader).T  # [train, test] -> [target, train]


def run_kronfluence(model, tok, train, target, scope, args):
    import copy
    import logging

    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from kronfluence.utils.dataset import DataLoaderKwargs

    if scope != "linear":
        raise NotImplementedError("Kronfluence tracks nn.Linear / nn.Conv2d modules only")
    names = [n.rsplit(".", 1)[0] for n in scope_params(model, scope)]
    dtype = next(model.parameters()).dtype

    class EllTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            ids, mask = batch
            return ell_rows(model(input_ids=ids).logits, ids, mask).sum()

        def compute_measurement(self, batch, model):
            return self.compute_train_loss(batch, model)

        def get_influence_tracked_modules(self):
            return names

    task = EllTask()
    wrapped = prepare_model(copy.deepcopy(model), task)
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as out:
        analyzer = Analyzer("peers", model=wrapped, task=task, cpu=True, disable_tqdm=True, output_dir=out)
        analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=pad_collate(tok.pad_token_id)))
        train_ds, target_ds = Rows(*train), Rows(*target)
        analyzer.fit_all_factors("identity", dataset=train_ds, per_device_batch_size=args.batch_size,
                                 factor_args=FactorArguments(strategy="identity"), overwrite_output_dir=True)
        # Kronfluence recomputes every train gradient once per query batch, so all target
        # rollouts go in one query batch (its fastest setting).
        scores = analyzer.compute_pairwise_scores(
            "peers", factors_name="identity", query_dataset=target_ds, train_dataset=train_ds,
            per_device_query_batch_size=len(target[0]), per_device_train_batch_size=args.batch_size,
            score_args=ScoreArguments(per_sample_gradient_dtype=dtype, score_dtype=dtype), overwrite_output_dir=True)
        scores = analyzer.load_pairwise_scores("peers")  # compute_* returns None; results go to disk
    return scores["all_modules"]


def run_floor(model, tok, train, target, scope, args):
    """Not a method: one batched forward+backward of Σℓ per chunk of --batch-size rollouts (same
    length-sorted chunks as ours-vmap), no per-rollout gradient. Any method that backpropagates
    every rollout costs at least this."""
    params = list(scope_params(model, scope).values())
    for prompts, comps in (train, target):
        backward_floor(model, params, prompts, comps, tok.pad_token_id, args.batch_size)
    return None


RUNNERS = {"floor": run_floor, "ours-vmap": run_ours_vmap, "ours-layerwise": run_ours_layerwise, "ours-loop": run_ours_loop, "dattri": run_dattri, "kronfluence": run_kronfluence}


def child(args) -> None:
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(getattr(torch, args.dtype))
    model, tok, train, target = setup(args)
    run = RUNNERS[args.child_method]
    base = rss_now_mib()
    t = time.perf_counter()
    K = run(model, tok, train, target, args.child_scope, args)
    cold = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    # Slow methods get fewer warm runs (at most ~30 s of them), so the whole script stays short.
    for _ in range(max(1, min(args.repeats, int(30 / max(cold, 1e-3))))):
        t = time.perf_counter()
        run(model, tok, train, target, args.child_scope, args)
        times.append(time.perf_counter() - t)
    if K is not None:
        torch.save(K.detach().double().cpu(), args.child_out)
    lens = [len(p) + len(c) for p, c in zip(train[0] + target[0], train[1] + target[1])]
    print(json.dumps({"tokens": [min(lens), max(lens), sum(lens) / len(lens)], "cold_s": cold, "warm_s": statistics.median(times) if times else cold,
                      "peak_delta_mib": max(0.0, peak - base), "rss_base_mib": base,
                      "params": sum(p.numel() for p in scope_params(model, args.child_scope).values())}))


# ----------------------------------------------------------------------------- parent


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", help="model preset (randomly initialised, seeded)")
    ap.add_argument("--ckpt", default=None, help="a checkpoint directory instead of the preset")
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-target", type=int, default=32)
    ap.add_argument("--completion-tokens", type=int, nargs=2, default=(32, 64), metavar=("LO", "HI"),
                    help="completion length range (prompts are 20-77 tokens)")
    ap.add_argument("--batch-size", type=int, default=16, help="rollouts per vmap chunk / batch")
    ap.add_argument("--repeats", type=int, default=3, help="warm runs after the cold one")
    ap.add_argument("--scopes", nargs="+", default=["linear", "all"], choices=["linear", "all"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                    help="float64: check that the methods agree to double rounding (what they compute is the same)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 16 train + 8 target, short rollouts, 1 repeat")
    ap.add_argument("--child-method", help=argparse.SUPPRESS)
    ap.add_argument("--child-scope", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.n_train, args.n_target, args.completion_tokens, args.repeats = 16, 8, (8, 16), 1
        args.batch_size = min(args.batch_size, 8)
    return args


def run_child(args, scope: str, method: str, out: Path) -> dict:
    """One method in one scope, in its own process; its kernel goes to ``out``."""
    cmd = [sys.executable, __file__, "--child-method", method, "--child-scope", scope, "--child-out", str(out),
           "--preset", args.preset, "--n-train", str(args.n_train), "--n-target", str(args.n_target),
           "--completion-tokens", *map(str, args.completion_tokens), "--batch-size", str(args.batch_size),
           "--repeats", str(args.repeats), "--threads", str(args.threads), "--seed", str(args.seed), "--dtype", args.dtype]
    if args.ckpt:
        cmd += ["--ckpt", args.ckpt]
    print(f"[{scope}] {method} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        err = (proc.stderr.strip().splitlines() or ["failed"])[-1][:160]
        return {"scope": scope, "method": method, "status": f"failed: {err}"}
    return {"scope": scope, "method": method, "status": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}


def run_all(args) -> tuple[list[dict], dict]:
    """Every (scope, method) pair: its result row, and the kernels the methods returned."""
    results, kernels = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for scope in args.scopes:
            for method in args.methods:
                if method == "kronfluence" and scope != "linear":
                    results.append({"scope": scope, "method": method, "status": "n/a: tracks nn.Linear/Conv2d only"})
                    continue
                out = Path(tmp) / f"{scope}-{method}.pt"
                results.append(run_child(args, scope, method, out))
                if results[-1]["status"] == "ok" and out.exists():
                    kernels[(scope, method)] = torch.load(out)
    return results, kernels


def compare_to_ours(results: list[dict], kernels: dict) -> None:
    """Add each method's error and time relative to ours-vmap in its scope."""
    for r in results:
        if r["status"] != "ok":
            continue
        ref = kernels.get((r["scope"], "ours-vmap"))
        K = kernels.get((r["scope"], r["method"]))
        if K is None or ref is None:
            pass
        elif K.shape == ref.shape:
            r["max_rel_err"] = float((K - ref).abs().max() / ref.abs().max())
        else:
            r["max_rel_err"] = float("nan")
            r["status"] = f"shape {tuple(K.shape)} != {tuple(ref.shape)}"
        base = next((x for x in results if x["scope"] == r["scope"] and x["method"] == "ours-vmap" and x["status"] == "ok"), None)
        if base:
            r["ours_vmap_speedup"] = r["warm_s"] / base["warm_s"]


def write_tables(args, results: list[dict], loads: tuple[float, float]) -> None:
    header = ["scope", "method", "params", "warm_s", "cold_s", "peak_delta_mib", "max_rel_err", "ours_vmap_speedup", "status"]
    fmt = {"params": "{:,}", "warm_s": "{:.3f}", "cold_s": "{:.3f}", "peak_delta_mib": "{:.0f}", "max_rel_err": "{:.1e}",
           "ours_vmap_speedup": "{:.2f}x"}
    table = [[(fmt[h].format(r[h]) if h in fmt and h in r else str(r.get(h, ""))) for h in header] for r in results]
    command = " ".join([".venv-bench/bin/python", "benchmarks/bench_peers.py", *sys.argv[1:]])
    lo, hi, mean = next((r["tokens"] for r in results if "tokens" in r), (0, 0, 0))
    preamble = [
        "# Per-rollout features + kernel: coinfluence vs dattri vs Kronfluence\n",
        f"Command: `{command}`  ",
        f"Machine: {lscpu_model()}, {os.cpu_count()} CPUs, {args.threads} torch threads; {package_versions('torch', 'transformers', 'dattri', 'kronfluence')}  ",
        f"Load average (1 min) before / after: {loads[0]:.1f} / {loads[1]:.1f} (other processes shared the cores when it exceeds the core count)  ",
        f"Setting: `{args.ckpt or args.preset}` model, {args.n_train} train + {args.n_target} target rollouts of "
        f"{lo}-{hi} tokens (mean {mean:.0f}), ℓ = seq-mean completion log-prob, batch {args.batch_size}, "
        f"warm time = median of {args.repeats} runs after a cold one (fewer for runs over 10 s), peak = growth of peak RSS over the RSS after setup (cold run), "
        "error = max |K − K_ours-vmap| / max |K_ours-vmap|, speed-up = time / ours-vmap time (>1: ours is faster); "
        "`floor` = one batched forward+backward of Σℓ over the same chunks, no per-rollout gradients (a lower bound, not a method).\n",
    ]
    # A smoke run (--quick) writes *_quick files, so it never replaces the published tables.
    stem = ("peers" if args.dtype == "float32" else f"peers_{args.dtype}") + ("_quick" if args.quick else "")
    publish(HERE / stem, header, table, results, preamble)


def main() -> None:
    args = parse_args()
    if args.child_method:
        child(args)
        return
    load_before = os.getloadavg()[0]
    results, kernels = run_all(args)
    load_after = os.getloadavg()[0]
    compare_to_ours(results, kernels)
    write_tables(args, results, (load_before, load_after))

if __name__ == "__main__":
    main()
