"""The benchmarks on a CUDA GPU with a 0.5B-parameter model (issue 7's GPU rows).

    python benchmarks/bench_gpu.py [--layers 24] [--quick]

The model is a randomly initialised Qwen2-architecture config of Qwen2.5-0.5B's shape (hidden
896, 24 layers, 14 heads / 2 KV heads, intermediate 4864, vocab 151936, tied embeddings;
494M parameters) in float32 with eager attention. Rollouts are random token ids (prompt 64,
completion 64), so nothing depends on a tokenizer. Times are medians of the repeats after a
warm-up, with ``torch.cuda.synchronize`` around each; memory is ``max_memory_allocated`` above
the model's own. Rows:

- sampler: our ``sample`` vs ``model.generate`` (temperature 1, no top-k/top-p, no early stop),
  new tokens per second at batch 1, 16, 64;
- features of N rollouts: the floor (one batched forward+backward of Σℓ), layerwise and vmap
  per-rollout gradients of the MLP weights of the last two layers (26M parameters; exact
  features of every weight would be N×494M floats), the per-rollout loop on the same scope,
  and the layerwise Kronecker sketch (rank 16) of every weight matrix;
- ΔJ: the aggregated path (``delta_J_aggregated``) vs one GRPO optimisation step (clipped loss,
  backward, AdamW) on the same rollouts.

Writes benchmarks/gpu.csv and benchmarks/gpu.md.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from coinfluence.influence import features as feat
from coinfluence.influence.layerwise import features_layerwise
from coinfluence.influence.step import delta_J_aggregated
from coinfluence.training.objectives import batch_to, grpo_advantages, grpo_loss, rollout_batch, sequence_logprobs
from coinfluence.training.rollout import sample

HERE = Path(__file__).resolve().parent
PAD = 0
SCOPE = r"layers\.(22|23)\.mlp\.\w+_proj\.weight$"


def qwen_half_b(layers: int) -> Qwen2ForCausalLM:
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=layers,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096, rope_theta=1e6,
                         tie_word_embeddings=True, attn_implementation="eager", pad_token_id=PAD, eos_token_id=1)
    torch.manual_seed(0)
    with torch.device("cuda"):
        return Qwen2ForCausalLM(config).eval()


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def peak_mib(fn, base: int) -> float:
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--rollouts", type=int, default=32, help="N rollouts for the feature rows (G=8 per query)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 layers, short sequences")
    args = ap.parse_args()
    if args.quick:
        args.layers, args.new_tokens, args.rollouts, args.repeats = 2, 16, 16, 1
    model = qwen_half_b(args.layers)
    n_params = sum(p.numel() for p in model.parameters())
    base = torch.cuda.memory_allocated()
    gpu = torch.cuda.get_device_name()
    print(f"{gpu}; model {n_params / 1e6:.0f}M parameters; torch {torch.__version__}", flush=True)
    rows = []

    def add(section, method, seconds, **extra) -> dict:
        rows.append({"section": section, "method": method, "seconds": round(seconds, 4), **extra})
        print(rows[-1], flush=True)
        return rows[-1]

    # ---- sampler vs generate
    g = torch.Generator().manual_seed(0)
    for batch in (1, 16, 64):
        prompts = [torch.randint(2, 150000, (32,), generator=g).tolist() for _ in range(batch)]
        ours_s, _ = timed(lambda: sample(model, prompts, max_new_tokens=args.new_tokens, temperature=1.0, eos_token_id=None,
                                         pad_token_id=PAD, generator=torch.Generator().manual_seed(1)), args.repeats)
        ids = torch.tensor(prompts, device="cuda")
        hf_s, _ = timed(lambda: model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                               top_p=1.0, temperature=1.0, max_new_tokens=args.new_tokens,
                                               min_new_tokens=args.new_tokens, pad_token_id=PAD), args.repeats)
        tokens = batch * args.new_tokens
        add("sampler", f"ours b{batch}", ours_s, tokens_per_s=round(tokens / ours_s), ratio=round(hf_s / ours_s, 2))
        add("sampler", f"generate b{batch}", hf_s, tokens_per_s=round(tokens / hf_s), ratio=1.0)

    # ---- per-rollout features
    n, G = args.rollouts, 8
    L = max(8, args.new_tokens // 2)
    prompts = [torch.randint(2, 150000, (L,), generator=g).tolist() for _ in range(n)]
    completions = [torch.randint(2, 150000, (L,), generator=g).tolist() for _ in range(n)]
    kw = dict(normalization="seq-mean", max_length=L, temperature=1.0)
    scope = feat.select_params(model, SCOPE if args.layers >= 24 else r"mlp\.\w+_proj\.weight$")
    weights = feat.select_params(model, r"proj\.weight$")

    def floor():
        for s in range(0, n, 8):
            b = batch_to(rollout_batch(prompts[s:s + 8], completions[s:s + 8], PAD), "cuda")
            logps = sequence_logprobs(model, b)
            m = b["completion_mask"]
            ell = (logps * m).sum(-1) / m.sum(-1)
            torch.autograd.grad(ell.sum(), list(scope.values()))

    methods = {
        "floor (batched backward)": floor,
        "ours layerwise": lambda: features_layerwise(model, prompts, completions, PAD, params=scope, chunk_size=8, **kw),
        "ours vmap": lambda: feat.features_vmap(model, prompts, completions, PAD, params=scope, chunk_size=4, **kw),
        "ours loop": lambda: feat.features_loop(model, prompts, completions, PAD, params=scope, **kw),
    }
    results, feature_rows = {}, {}
    for name, fn in methods.items():
        seconds, results[name] = timed(fn, args.repeats)
        feature_rows[name] = add("features", name, seconds, scope_params=feat.num_features(scope), rollouts=n,
                                 peak_mib=round(peak_mib(fn, base)))
    ref = results["ours loop"]
    for name in ("ours layerwise", "ours vmap"):
        err = float((results[name] - ref).abs().max() / ref.abs().max())
        feature_rows[name]["rel_diff_vs_loop"] = f"{err:.1e}"
    kron = lambda: features_layerwise(model, prompts, completions, PAD, params=weights, chunk_size=8, kron_rank=16, **kw)
    seconds, out = timed(kron, args.repeats)
    add("features", "ours layerwise kron16 (all weights)", seconds, scope_params=feat.num_features(weights), rollouts=n,
        feature_dim=out.shape[1], peak_mib=round(peak_mib(kron, base)))

    # ---- ΔJ vs one GRPO step, same rollouts (half train, half target)
    rewards = (torch.rand(n, generator=g) < 0.5).double()
    half = n // 2
    all_params = feat.select_params(model)
    dj = lambda: delta_J_aggregated(model, all_params, prompts[:half], completions[:half], rewards[:half], prompts[half:],
                                    completions[half:], rewards[half:], PAD, num_generations=G, **kw)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: the step's cost without moving the model

    def grpo_step():
        adv = grpo_advantages(rewards[:half], G)
        opt.zero_grad(set_to_none=True)
        for s in range(0, half, 8):
            b = batch_to(rollout_batch(prompts[s:s + 8], completions[s:s + 8], PAD), "cuda")
            logps = sequence_logprobs(model, b)
            loss, _ = grpo_loss(logps, logps.detach(), adv[s:s + 8].to("cuda", logps.dtype), b["completion_mask"])
            (loss * 8 / half).backward()
        opt.step()

    step_s, _ = timed(grpo_step, args.repeats)
    dj_s, _ = timed(dj, args.repeats)
    add("delta_J", "one GRPO step (floor)", step_s, rollouts=half)
    add("delta_J", "ours aggregated ΔJ", dj_s, rollouts=n, ratio=round(dj_s / step_s, 2))

    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with open(HERE / "gpu.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = [f"`python benchmarks/bench_gpu.py{' --quick' if args.quick else ''}` on {gpu}; Qwen2 config, {n_params / 1e6:.0f}M "
             f"parameters, random init, float32; torch {torch.__version__}", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    (HERE / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
