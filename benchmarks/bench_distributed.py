"""Data parallelism: 2 CPU processes (gloo) against 1 on the same SFT and GRPO steps.

    python benchmarks/bench_distributed.py [--preset tiny] [--sft-steps 8] [--grpo-steps 3] [--prompts 8]
                                           [--generations 8] [--quick]

Each setting runs in freshly spawned processes with one torch thread each (the same launch as
torchrun: RANK/WORLD_SIZE/MASTER_ADDR in the environment, ``coinfluence.distributed.init_from_env``);
the 1-process row spawns one process without a process group. The clock runs on rank 0 from a
barrier after the model is loaded to the end of training, so imports and loading are not timed.
SFT: the global batch is ``gradient_accumulation_steps = 2`` micro-batches of the token budget,
one per rank on 2 processes. GRPO: ``prompts`` queries x ``generations`` rollouts per step, half
of the queries per rank; ``beta`` 0.04 so that every rollout is backpropagated even from the
untrained model (whose rewards are all 0). Communication: the bytes each rank hands to
collectives per optimizer step (gradient all-reduce, the per-rollout table, the few scalars),
counted in ``coinfluence.distributed.TRAFFIC``. Writes benchmarks/distributed.csv and .md.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from coinfluence.io import write_text

sys.path.insert(0, str(Path(__file__).parent))
from machine import lscpu_model, markdown_table, package_versions, write_csv  # noqa: E402

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, stage: str, args, results) -> None:
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from coinfluence import distributed as dist_
    from coinfluence.models.loading import default_task_tokenizer, load_model
    from coinfluence.tasks.data import DataConfig, make_dataset
    from coinfluence.training.grpo import GRPOConfig, train_grpo
    from coinfluence.training.sft import SFTConfig, train_sft

    dist_.init_from_env("cpu")
    data = make_dataset(DataConfig(preset="mini", seed=0, sft_size=64, rl_size=max(args.prompts, 8), eval_size=1))
    tok = default_task_tokenizer("mini")
    model, tok = load_model(args.preset, tok, seed=0)
    model.float()
    with tempfile.TemporaryDirectory() as out:
        dist_.barrier()
        started = time.perf_counter()
        if stage == "sft":
            steps = args.sft_steps
            cfg = SFTConfig(max_steps=steps, tokens_per_batch=args.tokens_per_batch, gradient_accumulation_steps=2, logging_steps=steps,
                            eval_steps=0, eval_size=0, save_steps=0)
            train_sft(cfg, model, tok, data["sft"], [], out, progress=False)
        else:
            steps = args.grpo_steps
            cfg = GRPOConfig(max_steps=steps, prompts_per_step=args.prompts, num_generations=args.generations, beta=0.04,
                             max_completion_length=args.new_tokens, eval_steps=0, eval_size=0, save_steps=0)
            train_grpo(cfg, model, tok, data["rl_train"], None, out, progress=False)
        seconds = time.perf_counter() - started
    if dist_.is_main():
        results.put({"stage": stage, "processes": world, "steps": steps, "seconds_per_step": seconds / steps,
                     "parameters": sum(p.numel() for p in model.parameters()),
                     "all_reduce_bytes_per_step": dist_.TRAFFIC["all_reduce"] / steps,
                     "all_gather_bytes_per_step": dist_.TRAFFIC["all_gather"] / steps})
    if dist_.active():
        torch.distributed.destroy_process_group()


def measure(stage: str, world: int, args) -> dict:
    results = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(worker, args=(world, free_port(), stage, args, results), nprocs=world, start_method="spawn")
    return results.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--sft-steps", type=int, default=8)
    parser.add_argument("--tokens-per-batch", type=int, default=2048)
    parser.add_argument("--grpo-steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="2 steps each, 4 prompts x 4 rollouts of 16 tokens (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.sft_steps, args.grpo_steps, args.prompts, args.generations, args.new_tokens = 2, 1, 4, 4, 16
    load_before = os.getloadavg()
    rows = []
    for stage in ("sft", "grpo"):
        for world in (1, 2):
            rows.append(measure(stage, world, args))
            print(rows[-1], flush=True)
    for row in rows:
        base = next(r for r in rows if r["stage"] == row["stage"] and r["processes"] == 1)
        row["speed_up"] = base["seconds_per_step"] / row["seconds_per_step"]
    load_after = os.getloadavg()
    suffix = "_quick" if args.quick else ""
    write_csv(HERE / f"distributed{suffix}.csv", list(rows[0]), rows)
    command = "python benchmarks/bench_distributed.py" + "".join(f" {a}" for a in sys.argv[1:])
    lines = [
        "# Data parallelism: 2 CPU processes vs 1", "",
        f"Command: `{command}`  ",
        f"Machine: {lscpu_model()}, {os.cpu_count()} cores; {package_versions('torch', 'transformers')}; gloo, 1 thread per process  ",
        f"Model: preset {args.preset}, {rows[0]['parameters'] / 1e6:.2f}M parameters, float32. SFT: {args.sft_steps} steps of 2 micro-batches "
        f"of {args.tokens_per_batch} tokens. GRPO: {args.grpo_steps} steps of {args.prompts} queries x {args.generations} rollouts, "
        f"at most {args.new_tokens} new tokens, beta 0.04.  ",
        f"Load average (1/5/15 min) before: {' '.join(f'{x:.1f}' for x in load_before)}; after: "
        f"{' '.join(f'{x:.1f}' for x in load_after)}.", "",
    ]
    header = ["stage", "processes", "s/step", "speed-up", "all-reduce bytes/step/rank", "all-gather bytes/step/rank"]
    table = [[r["stage"], str(r["processes"]), f"{r['seconds_per_step']:.2f}", f"{r['speed_up']:.2f}x",
              f"{r['all_reduce_bytes_per_step']:,.0f}", f"{r['all_gather_bytes_per_step']:,.0f}"] for r in rows]
    lines += markdown_table(header, table, align="---|---:|---:|---:|---:|---:")
    write_text(HERE / f"distributed{suffix}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
