"""SFT throughput: length-bucketed batches vs naive padding, real (non-pad) tokens per second.

Same rows, same model (fresh copy per mode, same seed), same number of optimizer steps:

* bucketed      - the trainer's default: shuffle, sort within chunks, fill a token budget
* random-budget - random order, same token budget (padded size <= budget)
* random-fixed  - random order, a fixed batch size equal to the bucketed mean, padded to the batch max

Usage: python benchmarks/bench_sft_tokens.py [--steps 40] [--preset tiny] [--rows 1000]
Writes benchmarks/sft_tokens.csv beside this file.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

from coinfluence.models import load_model
from coinfluence.training.sft import SFTConfig, collate, encode_rows, epoch_batches, make_optimizer, summed_token_loss

sys.path.insert(0, str(Path(__file__).parent))
from machine import write_csv  # noqa: E402


def sft_rows(n: int, seed: int) -> tuple[list[dict], str]:
    try:
        from coinfluence.tasks.data import DataConfig, make_dataset

        rows = make_dataset(DataConfig(seed=seed, sft_size=n, rl_size=1, eval_size=1))["sft"][:n]
        return rows, "igsm mini (behaviours both)"
    except ImportError:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from toy_data import toy_rows

        return toy_rows(n, seed), "toy arithmetic"


def fixed_size_batches(n_rows: int, size: int, seed: int, count: int) -> list[list[int]]:
    rng = random.Random(seed)
    batches: list[list[int]] = []
    while len(batches) < count:
        order = list(range(n_rows))
        rng.shuffle(order)
        batches += [order[i : i + size] for i in range(0, n_rows - size + 1, size)]
    return batches[:count]


def budget_batches(lengths, cfg: SFTConfig, count: int) -> list[list[int]]:
    batches, epoch = [], 0
    while len(batches) < count:
        batches += epoch_batches(lengths, cfg, epoch)
        epoch += 1
    return batches[:count]


def run_mode(name, batches, examples, tokenizer, preset, seed, warmup) -> dict:
    torch.manual_seed(seed)
    model, _ = load_model(preset, tokenizer, seed=seed)
    model.train()
    optimizer, _ = make_optimizer(model, SFTConfig())
    real = padded = 0
    seconds = 0.0
    for k, batch_idx in enumerate(batches):
        batch = collate([examples[i] for i in batch_idx], tokenizer.pad_token_id, True)
        start = time.perf_counter()
        loss, count = summed_token_loss(model, batch)
        (loss / max(count, 1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if k >= warmup:  # first steps pay allocator warm-up
            seconds += time.perf_counter() - start
            real += int(batch["attention_mask"].sum())
            padded += batch["input_ids"].numel()
    timed = len(batches) - warmup
    return {
        "mode": name, "steps": timed, "real_tokens": real, "padded_tokens": padded,
        "pad_fraction": round(1 - real / padded, 4), "seconds": round(seconds, 3),
        "real_tokens_per_second": round(real / seconds, 1), "mean_batch_rows": round(sum(len(b) for b in batches[warmup:]) / timed, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--tokens-per-batch", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("sft_tokens.csv"))
    args = ap.parse_args()

    from coinfluence.models.tokenizer import build_tokenizer

    rows, source = sft_rows(args.rows, args.seed)
    tokenizer = build_tokenizer([t for r in rows for t in (r["prompt"], r["completion"])])
    examples = encode_rows(tokenizer, rows, 1024)
    lengths = [len(ids) for ids, _ in examples]
    total = args.steps + args.warmup
    cfg = SFTConfig(tokens_per_batch=args.tokens_per_batch, seed=args.seed)
    bucketed = budget_batches(lengths, cfg, total)
    mean_rows = max(1, round(sum(len(b) for b in bucketed) / len(bucketed)))
    plans = {
        "bucketed": bucketed,
        "random-budget": budget_batches(lengths, SFTConfig(tokens_per_batch=args.tokens_per_batch, seed=args.seed, group_by_length=False), total),
        "random-fixed": fixed_size_batches(len(rows), mean_rows, args.seed, total),
    }
    results = [run_mode(name, plan, examples, tokenizer, args.preset, args.seed, args.warmup) for name, plan in plans.items()]

    print(f"data: {source}, {len(rows)} rows, lengths {min(lengths)}-{max(lengths)} (mean {sum(lengths) / len(lengths):.0f}); "
          f"model {args.preset}; {args.steps} timed steps; budget {args.tokens_per_batch}; torch threads {torch.get_num_threads()}")
    cols = list(results[0])
    print(" | ".join(f"{c:>22}" for c in cols))
    for r in results:
        print(" | ".join(f"{r[c]!s:>22}" for c in cols))
    base = {r["mode"]: r["real_tokens_per_second"] for r in results}
    print(f"bucketed / random-budget = {base['bucketed'] / base['random-budget']:.2f}x, bucketed / random-fixed = {base['bucketed'] / base['random-fixed']:.2f}x")
    write_csv(args.out, ["preset", "tokens_per_batch", *cols],
              [{"preset": args.preset, "tokens_per_batch": args.tokens_per_batch, **r} for r in results])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
