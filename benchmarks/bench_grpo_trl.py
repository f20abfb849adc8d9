"""One GRPO step: coinfluence's trainer vs TRL's ``GRPOTrainer``, same model and settings.

Both sides get a deep copy of the same model (the ``tiny`` preset, randomly initialised and
seeded, or ``--ckpt``), the same tokenizer (the task's word-level tokenizer, built in-process;
no chat template, so TRL gets plain-text prompts "<bos>PROMPT\\n", which tokenize to exactly the
ids of ``coinfluence.models.format.encode_prompt``), the same P prompts every step (the data
set is exactly P rows, so both samplers' query orders cover the same prompts), and the same
knobs: G rollouts per prompt, ``max_completion_length``, temperature 1, top-p 1, no top-k,
``loss_type=grpo``, ``beta=0`` (no reference model), ``epsilon=0.2``, one iteration,
``scale_rewards=group`` with the unbiased std (TRL's), AdamW at a constant lr, grad-norm
clip 1, one optimizer step per P·G rollouts in micro-batches of ``--micro-batch`` rollouts.
The reward is the task's checker (``coinfluence.tasks.answer.reward``) on both sides.

A step is timed from its start to the end of the optimizer step, after ``--warmup`` steps
that are not counted; the split is generation (ours: ``training.rollout.sample``; TRL:
``GRPOTrainer._generate``, i.e. ``model.generate`` + decode) vs the rest (reward, advantages,
log-probs, loss, backward, optimizer). TRL runs on the CPU with ``use_cpu=True``,
``report_to='none'``, no vLLM, ``HF_HUB_OFFLINE=1``, ``save_strategy='no'``.

    .venv-bench/bin/python benchmarks/bench_grpo_trl.py            # writes grpo_trl.csv / grpo_trl.md
    .venv-bench/bin/python benchmarks/bench_grpo_trl.py --quick    # smoke run
    .venv-bench/bin/python benchmarks/bench_grpo_trl.py --ckpt runs/demo/sft --prompts 16 \
        --max-completion-length 256 --stem grpo_trl_sft              # the demo's SFT model and GRPO sizes
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402
from machine import lscpu_model, package_versions, publish  # noqa: E402  (benchmarks/machine.py)

from coinfluence.run import Run  # noqa: E402

HERE = Path(__file__).resolve().parent


def setup(args):
    from coinfluence.models.loading import default_task_tokenizer, load_model
    from coinfluence.tasks.data import DataConfig, make_dataset

    rows = make_dataset(DataConfig(preset="mini", seed=args.seed, sft_size=1, rl_size=max(args.prompts, 8), eval_size=1))["rl_train"]
    rows = rows[: args.prompts]
    tok = default_task_tokenizer("mini") if not args.ckpt else None
    model, tok = load_model(args.ckpt or args.preset, tok, seed=args.seed)
    return model.float().eval(), tok, rows


# ----------------------------------------------------------------------------- ours


def run_ours(model, tok, rows, args) -> dict:
    import coinfluence.training.grpo as grpo

    timings = {"sample": [], "optimise": []}
    real_sample, real_optimise = grpo.sample, grpo._optimise

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            timings[name].append(time.perf_counter() - t)
            return out
        return wrapper

    cfg = grpo.GRPOConfig(
        learning_rate=args.lr, warmup_steps=0, max_steps=args.warmup + args.steps, prompts_per_step=args.prompts,
        num_generations=args.num_generations, micro_batch_size=args.micro_batch, num_iterations=1, beta=0.0,
        epsilon=0.2, loss_type="grpo", scale_rewards="group", std="unbiased", temperature=1.0, top_p=1.0,
        max_completion_length=args.max_completion_length, max_grad_norm=1.0, eval_steps=0, save_steps=0, seed=args.seed)
    grpo.sample, grpo._optimise = timed("sample", real_sample), timed("optimise", real_optimise)
    lengths = []
    real_reward = grpo.reward_completions

    def counted_reward(texts, *rest):
        lengths.append(len(texts))
        return real_reward(texts, *rest)

    grpo.reward_completions = counted_reward
    try:
        with tempfile.TemporaryDirectory() as out:
            grpo.train_grpo(cfg, model, tok, rows, None, out, progress=False)
            metrics = [json.loads(line) for line in open(Run(out).metrics)]
    finally:
        grpo.sample, grpo._optimise, grpo.reward_completions = real_sample, real_optimise, real_reward
    steps = [m for m in metrics if m.get("stage", "grpo") == "grpo"][args.warmup:]
    step_s = [m["step_time"] for m in steps]
    gen_s = timings["sample"][args.warmup:]
    return {"step_s": step_s, "generation_s": gen_s, "optimise_s": timings["optimise"][args.warmup:],
            "mean_length": statistics.mean(m["completions/mean_length"] for m in steps),
            "reward": statistics.mean(m["reward"] for m in steps)}


# ----------------------------------------------------------------------------- TRL


def run_trl(model, tok, rows, args) -> dict:
    import datasets
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from coinfluence.tasks.answer import reward as task_reward

    datasets.disable_progress_bars()
    # No chat template: TRL tokenizes the prompt text as is (no special tokens are added by this
    # tokenizer), so the literal "<bos>" and the separator reproduce encode_prompt exactly.
    data = datasets.Dataset.from_list([{"prompt": f"{tok.bos_token}{r['prompt']}\n", "answer": str(r["answer"])} for r in rows])

    def reward(prompts, completions, answer, **_):
        return [task_reward(c, a) for c, a in zip(completions, answer)]

    batch = args.prompts * args.num_generations
    if batch % args.micro_batch:
        raise SystemExit(f"prompts x num_generations ({batch}) must be a multiple of --micro-batch for TRL")
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, report_to="none", use_cpu=True, bf16=False, fp16=False, save_strategy="no",
            logging_steps=1, disable_tqdm=True, seed=args.seed, data_seed=args.seed, dataloader_num_workers=0,
            max_steps=args.warmup + args.steps, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
            weight_decay=0.0, max_grad_norm=1.0, per_device_train_batch_size=args.micro_batch,
            gradient_accumulation_steps=batch // args.micro_batch, num_generations=args.num_generations,
            max_completion_length=args.max_completion_length, temperature=1.0, top_p=1.0, top_k=0,
            loss_type="grpo", beta=0.0, epsilon=0.2, num_iterations=1, scale_rewards="group",
            shuffle_dataset=False, log_completions=False, use_vllm=False,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=data, processing_class=tok)

        gen_s, step_s, lengths, rewards = [], [], [], []
        real_generate = trainer._generate

        def generate(prompts):
            t = time.perf_counter()
            out = real_generate(prompts)
            gen_s.append(time.perf_counter() - t)
            lengths.extend(len(c) for c in out[1])
            return out

        trainer._generate = generate

        class StepTimer(TrainerCallback):
            def on_step_begin(self, *_, **__):
                self.t = time.perf_counter()

            def on_step_end(self, *_, **__):
                step_s.append(time.perf_counter() - self.t)

            def on_log(self, _a, _s, _c, logs=None, **__):
                if logs and "reward" in logs:
                    rewards.append(logs["reward"])

        trainer.add_callback(StepTimer())
        trainer.remove_callback(PrinterCallback)  # with tqdm off, it prints every log dict
        trainer.train()
    w = args.warmup
    n_tokens = lengths[w * batch:]
    return {"step_s": step_s[w:], "generation_s": gen_s[w:], "mean_length": statistics.mean(n_tokens) if n_tokens else float("nan"),
            "reward": statistics.mean(rewards[w:]) if rewards[w:] else float("nan")}


def check_prompt_ids(tok, rows) -> None:
    from coinfluence.models.format import encode_prompt

    for r in rows:
        assert tok(text=f"{tok.bos_token}{r['prompt']}\n")["input_ids"] == encode_prompt(tok, r["prompt"]), "prompt ids differ"


# ----------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--ckpt", default=None, help="a checkpoint directory (e.g. runs/demo/sft) instead of the preset")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step (P)")
    ap.add_argument("--num-generations", type=int, default=8, help="rollouts per prompt (G)")
    ap.add_argument("--max-completion-length", type=int, default=128)
    ap.add_argument("--micro-batch", type=int, default=32, help="rollouts per forward/backward")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--order", choices=["ours-first", "trl-first"], default="ours-first")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stem", default="grpo_trl", help="output file names: benchmarks/STEM.csv and STEM.md")
    ap.add_argument("--quick", action="store_true", help="smoke run: P=2, G=4, 32 tokens, 1 timed step")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.num_generations, args.max_completion_length, args.micro_batch, args.steps = 2, 4, 32, 8, 1
        args.stem += "_quick"  # a smoke run never replaces the published tables
    return args


def time_trainers(model, tok, rows, args) -> dict[str, dict]:
    """Each trainer's timings on its own copy of the model, from the same seed."""
    runners = [("ours", run_ours), ("trl", run_trl)]
    if args.order == "trl-first":
        runners.reverse()
    res = {}
    for name, fn in runners:
        torch.manual_seed(args.seed)
        random.seed(args.seed)
        print(f"{name} ...", file=sys.stderr, flush=True)
        res[name] = fn(copy.deepcopy(model), tok, rows, args)
    return res


def summary_rows(res: dict[str, dict]) -> list[dict]:
    """Medians per trainer, then TRL's over ours."""
    out = []
    for name in ("ours", "trl"):
        r = res[name]
        step = statistics.median(r["step_s"])
        gen = statistics.median(r["generation_s"])
        opt = statistics.median(r["optimise_s"]) if r.get("optimise_s") else float("nan")
        out.append({"trainer": name, "step_s": step, "generation_s": gen, "rest_s": step - gen, "optimise_s": opt,
                    "mean_completion_tokens": r["mean_length"], "reward": r["reward"], "steps_timed": len(r["step_s"]),
                    "all_step_s": " ".join(f"{x:.2f}" for x in r["step_s"])})
    ours, trl = out
    ratio = {"trainer": "TRL / ours", "step_s": trl["step_s"] / ours["step_s"], "generation_s": trl["generation_s"] / ours["generation_s"],
             "rest_s": trl["rest_s"] / ours["rest_s"] if ours["rest_s"] > 0 else float("nan")}
    return [*out, ratio]


def cell(r: dict, h: str) -> str:
    v = r.get(h, "")
    if isinstance(v, float) and v != v:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.2f}x" if r["trainer"] == "TRL / ours" else f"{v:.3f}" if h.endswith("_s") else f"{v:.2f}"
    return str(v)


def write_tables(args, rows: list[dict], n_params: int, loads: tuple[float, float]) -> None:
    header = ["trainer", "step_s", "generation_s", "rest_s", "optimise_s", "mean_completion_tokens", "reward", "steps_timed", "all_step_s"]
    command = " ".join([".venv-bench/bin/python", "benchmarks/bench_grpo_trl.py", *sys.argv[1:]])
    preamble = [
        "# One GRPO step: coinfluence vs TRL `GRPOTrainer`\n",
        f"Command: `{command}`  ",
        f"Machine: {lscpu_model()}, {os.cpu_count()} CPUs, {args.threads} torch threads; {package_versions('torch', 'transformers', 'trl', 'accelerate', 'datasets')}  ",
        f"Load average (1 min) before / after: {loads[0]:.1f} / {loads[1]:.1f} (other processes shared the cores when it exceeds the core count)  ",
        f"Setting: `{args.ckpt or args.preset}` model ({n_params:,} parameters, float32, eager attention), P = {args.prompts} prompts x "
        f"G = {args.num_generations} rollouts, max_completion_length {args.max_completion_length}, temperature 1, "
        f"loss_type grpo, beta 0, micro-batch {args.micro_batch}, one optimizer step per P·G rollouts; median of {args.steps} timed steps "
        f"after {args.warmup} warm-up step(s); generation = the sampler (ours) / `_generate` (TRL); rest = step − generation (reward, advantages, log-probs, loss, backward, AdamW); "
        "optimise (ours only) = `grpo._optimise`, the forward/backward/AdamW part of rest.\n",
    ]
    publish(HERE / args.stem, header, [[cell(r, h) for h in header] for r in rows], rows, preamble)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()

    model, tok, rows = setup(args)
    check_prompt_ids(tok, rows)
    load_before = os.getloadavg()[0]
    res = time_trainers(model, tok, rows, args)
    load_after = os.getloadavg()[0]
    write_tables(args, summary_rows(res), sum(p.numel() for p in model.parameters()), (load_before, load_after))

if __name__ == "__main__":
    main()
