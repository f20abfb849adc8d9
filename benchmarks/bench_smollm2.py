"""SmolLM2-135M-Instruct (the named model ``smollm2-135m``) on the CPU: accuracy, timings, analysis.

Measures, in one run, on the imported checkpoint (``coinfluence models import``):

1. ``accuracy``: zero-shot and few-shot greedy accuracy on ``--rows`` rows of the ``mini`` and
   ``paper`` ``test_id`` splits, under several rewards (the answer marker, last and first number,
   ``\\boxed{}``) and step-verified. Zero-shot prompts are the question plus ``INSTRUCTION``;
   few-shot prompts put ``--shots`` solved vanilla SFT problems before it (their completions end
   in the ``<answer>`` marker, so the marker reward is the one to read there);
2. ``sampling``: greedy decoding of 16 task prompts by the lean sampler and by HF ``generate``
   (the same token ids, and the time of each);
3. ``sft``: time of one AdamW step on 16 ``mini`` rows, with and without gradient checkpointing;
4. ``analyze``: ``coinfluence analyze`` (``run_analysis``) with a parameter filter (the last
   block's MLP) and the Kronecker sketch on a few arithmetic queries the model sometimes gets
   right, with the first-order check, and the batched-backward floor: one forward+backward of
   the summed log-probs of the same rollouts with respect to the same parameters.

    nice -n 10 .venv/bin/python benchmarks/bench_smollm2.py --threads 1   # writes smollm2.csv / smollm2.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from coinfluence.io import write_text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import markdown_table, write_csv  # noqa: E402

INSTRUCTION = "Solve it step by step and end with the final answer as a number."
READERS = ("answer", "last-number", "first-number", "boxed")
ANALYSIS_TOKENS = 16  # "a + b = c" in digit tokens; 8 cut two-digit sums off
ANALYSIS_TEMPERATURE = 0.5  # at T=1 the untrained model mostly rambles, so nearly every group is all wrong
LAST_MLP = r"layers\.{last}\.mlp\."


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def task_rows(preset: str, n: int, shots: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(``n`` test_id rows, ``shots`` vanilla SFT rows) of the task ``preset``."""
    from coinfluence.tasks.data import DataConfig, make_dataset

    data = make_dataset(DataConfig(preset=preset, behaviours="none", seed=seed, sft_size=max(shots, 1), rl_size=1, eval_size=n))
    return data["test_id"][:n], data["sft"][:shots]


def few_shot_prompt(question: str, examples: list[dict]) -> str:
    """``examples`` solved one after another, then ``question``: a plain prompt, no chat turns."""
    solved = "".join(f"{e['prompt']}\n{e['completion']}\n\n" for e in examples)
    return f"{solved}{question}" if examples else f"{question}\n{INSTRUCTION}"


def accuracy(model, tok, preset: str, n: int, shots: int, max_new_tokens: int) -> list[dict]:
    from coinfluence.tasks.igsm.check import check_steps
    from coinfluence.tasks.rewards import reward_scores
    from coinfluence.training.evaluate import generate_completions

    rows, examples = task_rows(preset, n, shots)
    prompts = [few_shot_prompt(r["prompt"], examples) for r in rows]
    seconds, out = timed(lambda: generate_completions(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=n))
    texts = [samples[0] for samples in out]
    if shots:  # the model goes on to write the next problem: judge the first solution only
        texts = [t.split("\n\n")[0] for t in texts]
    answers = [r["answer"] for r in rows]
    setting = f"{preset} test_id, {n} rows, {shots}-shot, greedy, {max_new_tokens} new tokens"
    result = [{"measure": f"accuracy ({reader})", "setting": setting,
               "value": sum(reward_scores(reader, [r["prompt"] for r in rows], texts, answers)) / n, "unit": "fraction"}
              for reader in READERS]
    result.append({"measure": "accuracy (step-verified)", "setting": setting,
                   "value": sum(check_steps(r["prompt"], t).ok for r, t in zip(rows, texts)) / n, "unit": "fraction"})
    result.append({"measure": "decode time", "setting": setting, "value": seconds, "unit": "s"})
    result.append({"measure": "example completion", "setting": setting, "value": json.dumps(texts[0][:300]), "unit": "text"})
    return result


def sampling(model, tok, n: int, max_new_tokens: int) -> list[dict]:
    from coinfluence.models.format import encode_prompt
    from coinfluence.training.evaluate import hf_generate, sampler_generate

    rows, _ = task_rows("mini", n, 0)
    ids = [encode_prompt(tok, f"{r['prompt']}\n{INSTRUCTION}") for r in rows]
    kw = dict(max_new_tokens=max_new_tokens, batch_size=n)
    t_hf, hf = timed(lambda: hf_generate(model, tok, ids, **kw))
    t_lean, lean = timed(lambda: sampler_generate(model, tok, ids, **kw))
    same = sum(a == b for a, b in zip(hf, lean))
    tokens = sum(len(s[0]) for s in lean)
    setting = f"{n} mini prompts, greedy, up to {max_new_tokens} new tokens ({tokens} generated), one batch"
    return [{"measure": "generate (HF)", "setting": setting, "value": t_hf, "unit": "s"},
            {"measure": "lean sampler", "setting": setting, "value": t_lean, "unit": "s"},
            {"measure": "sampler / generate", "setting": setting, "value": t_lean / t_hf, "unit": "ratio"},
            {"measure": "prompts with identical greedy ids", "setting": setting, "value": same / n, "unit": "fraction"}]


def sft_update(model, opt, batch) -> None:
    from coinfluence.training.sft import summed_token_loss

    loss, count = summed_token_loss(model, batch)
    (loss / count).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def sft_step(model, tok, n: int, steps: int) -> list[dict]:
    import copy

    from coinfluence.training.sft import collate, encode_rows

    _, rows = task_rows("mini", 1, n)
    batch = collate(encode_rows(tok, rows, 1024), tok.pad_token_id, True)
    tokens = int(batch["attention_mask"].sum())
    out = []
    for checkpointing in (False, True):
        m = copy.deepcopy(model).train()
        if checkpointing:
            # recompute activations in backward: less memory; transformers 5 renamed the method
            enable = getattr(m, "activation_checkpointing_enable", None) or m.gradient_checkpointing_enable
            enable()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
        times = [timed(partial(sft_update, m, opt, batch))[0] for _ in range(steps)]
        best = min(times[1:] or times)  # the first step also allocates AdamW's state
        setting = f"{n} mini rows ({tokens} tokens), AdamW, fp32" + (", gradient checkpointing" if checkpointing else "")
        out += [{"measure": "SFT step", "setting": setting, "value": best, "unit": "s"},
                {"measure": "SFT tokens/s", "setting": setting, "value": tokens / best, "unit": "tokens/s"}]
        del m, opt
    return out


def arithmetic_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 20), rng.randint(2, 20)  # small enough that some rollouts of a group are right
        rows.append({"id": f"add-{seed}-{i}", "prompt": f"What is {a} plus {b}? Reply with the number only.", "answer": a + b})
    return rows


def analysis(model_dir: str, n_layers: int, queries: int, kron_rank: int, validate: int) -> list[dict]:
    from coinfluence.influence import features as feat
    from coinfluence.influence.analyze import AnalyzeOptions, run_analysis
    from coinfluence.influence.step import token_logps_rows
    from coinfluence.models.loading import load_model
    from coinfluence.training.objectives import normalize_logprob

    import pandas as pd

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, seed in (("train", 1), ("targets", 2)):
            write_text(tmp / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in arithmetic_rows(queries, seed)))
        params = LAST_MLP.format(last=n_layers - 1)
        opts = AnalyzeOptions(ckpt=model_dir, train=str(tmp / "train.jsonl"), targets=str(tmp / "targets.jsonl"), queries=queries,
                              targets_n=queries, num_generations=8, max_completion_length=ANALYSIS_TOKENS, temperature=ANALYSIS_TEMPERATURE, reward="last-number", params=params,
                              kron_rank=kron_rank, validate=validate, out=str(tmp / "analysis"))
        wall, s = timed(lambda: run_analysis(opts, progress=False))
        setting = (f"{queries} train + {queries} target arithmetic queries x 8 rollouts at T={ANALYSIS_TEMPERATURE}, {ANALYSIS_TOKENS} new tokens, --params '{params}', "
                   f"--kron-rank {kron_rank}, --validate {validate}, reward last-number")
        out += [{"measure": f"analyze {k}", "setting": setting, "value": v, "unit": "s"} for k, v in s["timings"].items()]
        out += [{"measure": "analyze wall", "setting": setting, "value": wall, "unit": "s"},
                {"measure": "mean alpha", "setting": setting, "value": s["mean_alpha"], "unit": "fraction"},
                {"measure": "informative queries", "setting": setting, "value": s["frac_informative"], "unit": "fraction"},
                {"measure": "selected parameters", "setting": setting, "value": s["num_parameters_selected"], "unit": "count"}]
        if s.get("validation"):
            out += [{"measure": f"first-order {k}", "setting": setting, "value": v, "unit": "pearson"}
                    for k, v in s["validation"].items() if k.startswith("pearson")]
        rollouts = pd.read_parquet(tmp / "analysis" / "rollouts.parquet")
        model, tok = load_model(model_dir)
        selected = feat.select_params(model, params)
        prompts = [list(p) for p in rollouts["prompt_ids"]]
        comps = [list(c) for c in rollouts["completion_ids"]]

        def floor():  # tracking only the selected weights, as the analysis does
            with feat.grad_only_for(model, selected):
                for k in range(0, len(prompts), 16):
                    logps, mask = token_logps_rows(model, prompts[k : k + 16], comps[k : k + 16], tok.pad_token_id, 1.0)
                    torch.autograd.grad(normalize_logprob(logps, mask).sum(), list(selected.values()), allow_unused=True)

        t_floor, _ = timed(floor)
        features = s["timings"].get("kernel_s", 0.0) + s["timings"].get("delta_J_s", 0.0)
        out += [{"measure": "batched-backward floor", "setting": f"the same {len(prompts)} rollouts and parameters", "value": t_floor, "unit": "s"},
                {"measure": "(delta_J + kernel) / floor", "setting": setting, "value": features / t_floor, "unit": "ratio"}]
    return out


def write_outputs(rows: list[dict], csv_path: Path, md_path: Path, command: str) -> None:
    write_csv(csv_path, ["section", "measure", "setting", "value", "unit"], rows)
    lines = ["# SmolLM2-135M-Instruct on the CPU", "", f"Command: `{command}`", "",
             f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
             f"load average {os.getloadavg()[0]:.1f} when written (other jobs share the cores: compare times within this run).", ""]
    table = [[r["section"], r["measure"], r["setting"],
              r["value"].replace("|", "\\|") if r["unit"] == "text" else f"{r['value']:.4g} {r['unit']}"] for r in rows]
    lines += markdown_table(["section", "measure", "setting", "value"], table)
    write_text(md_path, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="named model or checkpoint dir")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sections", default="sampling,accuracy,sft,analyze", help="what to measure, in this order")
    parser.add_argument("--rows", type=int, default=50, help="test rows per task preset")
    parser.add_argument("--shots", type=int, default=2, help="few-shot examples (0: zero-shot only)")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--sample-tokens", type=int, default=64, help="new tokens of the sampler/generate comparison")
    parser.add_argument("--sft-rows", type=int, default=16)
    parser.add_argument("--sft-steps", type=int, default=3, help="timed steps; the fastest after the first is kept")
    parser.add_argument("--queries", type=int, default=4, help="train and target queries of the analysis")
    parser.add_argument("--kron-rank", type=int, default=16)
    parser.add_argument("--out", type=Path, default=HERE / "smollm2.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from coinfluence.models.loading import check_checkpoint_dir, load_model

    model_dir = str(check_checkpoint_dir(args.model))
    model, tok = load_model(model_dir, device="cpu")
    rows: list[dict] = []
    command = "python benchmarks/bench_smollm2.py " + shlex.join(sys.argv[1:])
    runs = {
        "accuracy": [partial(accuracy, model, tok, preset, args.rows, shots, args.max_new_tokens)
                     for shots in sorted({0, args.shots}) for preset in ("mini", "paper")],
        "sampling": [partial(sampling, model, tok, 16, args.sample_tokens)],
        "sft": [partial(sft_step, model, tok, args.sft_rows, args.sft_steps)],
        "analyze": [partial(analysis, model_dir, model.config.num_hidden_layers, args.queries, args.kron_rank, 2)],
    }
    for section in args.sections.split(","):
        for job in runs[section]:
            for item in job():
                rows.append({"section": section, **item})
                print(section, item, flush=True)
            write_outputs(rows, args.out, args.out.with_suffix(".md"), command)  # a slow run keeps what it measured
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
