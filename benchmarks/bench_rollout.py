"""New tokens per second: coinfluence's rollout sampler against HF ``model.generate``.

    python benchmarks/bench_rollout.py [--batches 1 16 64] [--new-tokens 128] [--repeats 3] [--threads N]

The model is the tiny from-scratch Llama (hidden 128, 4 layers, 4 heads, intermediate 512,
vocab 300, eager attention, ~1M parameters). Both sides sample at temperature 1 with no
top-k/top-p and never stop early (no eos for ours, ``min_new_tokens`` for generate), so both
produce exactly batch x new-tokens tokens from the same left-padded prompts. Rates are the
median of the repeats after one warm-up; prefill is included. Prints a table and writes
benchmarks/rollout.csv and benchmarks/rollout.md.

The "matmul floor" column times only the matrix products that any exact float32 decode of this
model has to do (the projections with q/k/v and gate/up fused, the two attention products over
the KV cache, the LM head; prefill included) on preallocated tensors, with nothing else in
between. generate / floor is the most any sampler could gain over ``generate`` while doing the
same arithmetic with torch's kernels on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from coinfluence.io import write_text
from coinfluence.training.rollout import sample

sys.path.insert(0, str(Path(__file__).parent))
from machine import lscpu_model, markdown_table, write_csv  # noqa: E402

PAD, EOS = 0, 1


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
        attn_implementation="eager", pad_token_id=PAD, eos_token_id=EOS, bos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def prompts_for(batch: int, seed: int = 0) -> list[list[int]]:
    # Mixed lengths, as in a GRPO batch, so left padding is exercised.
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(16, 33, (batch,), generator=g).tolist()
    return [torch.randint(3, 300, (n,), generator=g).tolist() for n in lengths]


def run_ours(model, prompts, new_tokens, seed, **options):
    sample(model, prompts, max_new_tokens=new_tokens, temperature=1.0, eos_token_id=None, pad_token_id=PAD,
           generator=torch.Generator().manual_seed(seed), **options)


def run_generate(model, prompts, new_tokens, seed):
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=PAD, eos_token_id=EOS)
    assert out.shape[1] == width + new_tokens


def matmul_floor(model, prompts, new_tokens):
    """Returns a function of a seed that runs only the decode's matrix products (see the docstring)."""
    config, batch, width = model.config, len(prompts), max(map(len, prompts))
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    kv_heads = config.num_key_value_heads
    group = heads // kv_heads
    layers = [(torch.cat([l.self_attn.q_proj.weight, l.self_attn.k_proj.weight, l.self_attn.v_proj.weight]),
               l.self_attn.o_proj.weight, torch.cat([l.mlp.gate_proj.weight, l.mlp.up_proj.weight]), l.mlp.down_proj.weight)
              for l in model.model.layers]
    head = model.lm_head.weight
    total = width + new_tokens
    cache = torch.randn(len(layers), 2, batch, kv_heads, total, head_dim)
    hidden = torch.randn(batch, width, config.hidden_size)
    queries = torch.randn(batch, kv_heads, group * width, head_dim)
    probs = torch.rand(batch, kv_heads, group * width, total)
    inner = torch.randn(batch, width, config.intermediate_size)

    def products(steps: int, end: int):
        x, q, p, m = hidden[:, :steps], queries[:, :, : group * steps], probs[:, :, : group * steps, :end], inner[:, :steps]
        for index, (qkv, out, gate_up, down) in enumerate(layers):
            torch.nn.functional.linear(x, qkv)
            torch.matmul(q, cache[index, 0, :, :, :end].transpose(-1, -2))
            torch.matmul(p, cache[index, 1, :, :, :end])
            torch.nn.functional.linear(x, out)
            torch.nn.functional.linear(x, gate_up)
            torch.nn.functional.linear(m, down)
        torch.nn.functional.linear(x[:, -1], head)

    def run(seed):
        with torch.inference_mode():
            products(width, width)
            for step in range(1, new_tokens):
                products(1, width + step)

    return run


def median_seconds(fn, repeats: int) -> float:
    fn(0)  # warm-up: allocator, lazy init
    times = []
    for seed in range(1, repeats + 1):
        start = time.perf_counter()
        fn(seed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    return f"{lscpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = tiny_llama()
    n_params = sum(p.numel() for p in model.parameters())
    load_before = load_average()

    rows = []
    for batch in args.batches:
        prompts = prompts_for(batch)
        new = batch * args.new_tokens
        t_gen = median_seconds(lambda s: run_generate(model, prompts, args.new_tokens, s), args.repeats)
        t_ours = median_seconds(lambda s: run_ours(model, prompts, args.new_tokens, s), args.repeats)
        t_floor = median_seconds(matmul_floor(model, prompts, args.new_tokens), args.repeats)
        rows.append(dict(batch=batch, new_tokens=args.new_tokens, generate_tok_s=new / t_gen, ours_tok_s=new / t_ours,
                         generate_ms_step=1e3 * t_gen / args.new_tokens, ours_ms_step=1e3 * t_ours / args.new_tokens,
                         floor_ms_step=1e3 * t_floor / args.new_tokens, speedup=t_gen / t_ours,
                         generate_over_floor=t_gen / t_floor))
        r = rows[-1]
        print(f"batch {batch:3d}: generate {r['generate_tok_s']:8.0f} tok/s ({r['generate_ms_step']:5.1f} ms/step)  "
              f"ours {r['ours_tok_s']:8.0f} tok/s ({r['ours_ms_step']:5.1f} ms/step)  x{r['speedup']:.2f}  "
              f"matmul floor {r['floor_ms_step']:5.1f} ms/step (generate / floor x{r['generate_over_floor']:.2f})", flush=True)

    load_after = load_average()
    here = Path(__file__).parent
    write_csv(here / "rollout.csv", list(rows[0]),
              [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows])
    command = "python benchmarks/bench_rollout.py " + " ".join(sys.argv[1:])
    lines = [
        "# Rollout sampler vs `model.generate`",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine()}  ",
        f"Model: tiny Llama, {n_params / 1e6:.2f}M parameters (hidden 128, 4 layers, 4 heads, intermediate 512, vocab 300, eager), float32  ",
        f"Setting: sampling at temperature 1, {args.new_tokens} new tokens per row, prompts of 16-32 tokens (left padded), "
        f"median of {args.repeats} runs after a warm-up, prefill included.  ",
        f"Load average (1/5/15 min) before: {load_before}; after: {load_after}. "
        "Other processes shared these cores during the run when the load exceeds the core count, "
        "so absolute rates are noisy; the two columns of a row were measured back to back.",
        "",
    ]
    header = ["batch", "generate tok/s", "ours tok/s", "generate ms/step", "ours ms/step", "speed-up", "matmul floor ms/step",
              "generate / floor"]
    table = [[str(r["batch"]), f"{r['generate_tok_s']:.0f}", f"{r['ours_tok_s']:.0f}", f"{r['generate_ms_step']:.1f}",
              f"{r['ours_ms_step']:.1f}", f"{r['speedup']:.2f}x", f"{r['floor_ms_step']:.1f}", f"{r['generate_over_floor']:.2f}x"]
             for r in rows]
    lines += markdown_table(header, table, align="---:")
    write_text(here / "rollout.md", "\n".join(lines) + "\n")
    print(f"wrote {here / 'rollout.csv'} and {here / 'rollout.md'}")


if __name__ == "__main__":
    main()
