"""Batched decoding and accuracy: greedy accuracy per split, mean@n / pass@n, per-query α.

Generation goes through one replaceable function with the ``GenerateFn`` signature:
``sampler_generate`` by default (the rollout sampler that GRPO and the analysis use), or
``hf_generate`` (HF ``generate``, kept as a reference).
"""

from __future__ import annotations

from collections import Counter
import math
from pathlib import Path
from statistics import fmean
from typing import Callable, Sequence

import torch

from coinfluence.device import model_device
from coinfluence.run import SFT, Run, pass_key
from coinfluence.io import read_json, read_jsonl, write_json, write_jsonl
from coinfluence.models.format import decode_completion, encode_prompt
from coinfluence.tasks.rewards import DEFAULT_REWARD, accuracy_reward, reward_scores
from coinfluence.tasks.registry import get_task
from coinfluence.tasks.score import answer_is_stated, difficulty_summary
from coinfluence.training.rollout import chunks_by_length, eval_mode, left_pad, length_order, sample

# (model, tokenizer, prompt_ids, *, max_new_tokens, temperature, num_samples, seed) ->
# for each prompt, ``num_samples`` lists of generated ids (stop token excluded).
GenerateFn = Callable[..., list[list[list[int]]]]


def stop_token_ids(model, tokenizer) -> list[int]:
    """eos of the tokenizer plus any eos the checkpoint's generation config names."""
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    return sorted(i for i in ids if i is not None)


def cut_at_stop(ids: list[int], stops: Sequence[int]) -> list[int]:
    for k, tok in enumerate(ids):
        if tok in stops:
            return ids[:k]
    return ids


@torch.no_grad()
def hf_generate(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    num_samples: int = 1,
    seed: int = 0,
    batch_size: int = 32,
) -> list[list[list[int]]]:
    """Greedy (temperature 0) or pure ancestral sampling with HF ``generate``.

    Prompts are sorted by length so each batch carries little left padding; results come back
    in input order. Sampling is seeded and leaves the caller's RNG untouched.
    """
    stops = stop_token_ids(model, tokenizer)
    sampling = temperature > 0
    per_batch = max(1, batch_size // num_samples)
    results: list[list[list[int]]] = [[] for _ in prompt_ids]
    with eval_mode(model):
        device = model_device(model)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for chunk in chunks_by_length([len(p) for p in prompt_ids], per_batch):
                ids, mask = left_pad([prompt_ids[i] for i in chunk], tokenizer.pad_token_id, device)
                sample_args = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if sampling else dict(do_sample=False)
                out = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=num_samples,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=stops,
                    use_cache=True,
                    **sample_args,
                )
                new = out[:, ids.shape[1] :].tolist()
                for j, i in enumerate(chunk):
                    results[i] = [cut_at_stop(new[j * num_samples + s], stops) for s in range(num_samples)]
    return results


@torch.no_grad()
def sampler_generate(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    num_samples: int = 1,
    seed: int = 0,
    batch_size: int = 64,
) -> list[list[list[int]]]:
    """The shared rollout sampler (``training.rollout.sample``) behind the ``GenerateFn``
    interface: the same engine as GRPO and the analysis, stop token excluded."""
    stops = stop_token_ids(model, tokenizer)
    # Sort by length so a chunk carries little left padding; the samples of one prompt stay together.
    order = length_order([len(p) for p in prompt_ids])
    flat = [list(prompt_ids[i]) for i in order for _ in range(num_samples)]
    ro = sample(
        model, flat, max_new_tokens=max_new_tokens, temperature=temperature, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, stop_token_ids=stops,
        generator=torch.Generator().manual_seed(seed), batch_size=max(batch_size, num_samples),
    )
    completions = [cut_at_stop(c, stops) for c in ro.completions()]
    results: list[list[list[int]]] = [[] for _ in prompt_ids]
    for k, i in enumerate(order):
        results[i] = completions[k * num_samples : (k + 1) * num_samples]
    return results


def generate_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    num_samples: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    generate_fn: GenerateFn = sampler_generate,
) -> list[list[str]]:
    """Decoded completions, ``num_samples`` per prompt."""
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    generated = generate_fn(
        model, tokenizer, prompt_ids,
        max_new_tokens=max_new_tokens, temperature=temperature, num_samples=num_samples, seed=seed, batch_size=batch_size,
    )
    return [[decode_completion(tokenizer, ids) for ids in samples] for samples in generated]


def check_sampling_options(n: int, temperature: float) -> None:
    from coinfluence.errors import UserError

    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if temperature < 0 or not math.isfinite(temperature):
        raise UserError(f"--temperature must be >= 0, got {temperature}")
    if n > 1 and temperature == 0:
        raise UserError("n > 1 samples per prompt needs a temperature > 0 (greedy decoding gives n identical samples)")


def evaluate_rows(model, tokenizer, rows: Sequence[dict], *, n: int = 1, temperature: float = 0.0, reward: str = DEFAULT_REWARD,
               task=None, **gen_kwargs) -> tuple[dict, list[dict]]:
    """Accuracy summary (under ``reward``, see ``accuracy_reward``) and one record per (row, sample):
    id, prompt, sample, completion, reward, the step verdict of ``task``'s checker (a Task or a
    name; None: the default task), and whether the answer copies a number of the question."""
    check_sampling_options(n, temperature)
    task = get_task(task)
    completions = generate_completions(model, tokenizer, [r["prompt"] for r in rows], temperature=temperature, num_samples=n, **gen_kwargs)
    records, alphas = [], []
    for row, samples in zip(rows, completions):
        rewards = reward_scores(accuracy_reward(reward), [row["prompt"]] * n, samples, [row["answer"]] * n, task)
        alphas.append(sum(rewards) / n)
        records += [
            {"id": row.get("id"), "prompt": row["prompt"], "sample": s, "answer": row["answer"], "reward": r,
             "completion": c, "verdict": task.check_steps(row["prompt"], c).verdict,
             "answer_stated": answer_is_stated(row["prompt"], c), "behaviours": task.count_behaviours(c)}
            for s, (c, r) in enumerate(zip(samples, rewards))
        ]
    summary = {**summarise_alphas(alphas, n, temperature), "reward": reward, **verification_summary(records, n),
               **task.guess_baseline(list(rows)), **difficulty_summary(records, n, task.needed_steps)}
    return {**summary, **behaviour_summary(records, n)}, records


def verification_summary(records: Sequence[dict], n: int) -> dict:
    """Step-verified accuracy next to answer accuracy (``records`` hold each query's ``n`` samples
    one after another): ``step_accuracy`` (answer right *and* every step right; mean@n when
    sampling), ``faithful_share`` (of the right answers, the share with every step right),
    ``answer_stated`` (share of answers that copy a number of the question), ``verdict/NAME`` (share
    of the samples with each of the checker's verdicts: where the reasoning fails) and, for n > 1,
    ``step_pass@n``. Step metrics are None where the checker cannot read the questions."""
    if not records:
        return {}
    if all(r["verdict"] == "unparseable_question" for r in records):
        return {"step_accuracy": None, "faithful_share": None, "answer_stated": fmean(r["answer_stated"] for r in records)}
    verified = [r["verdict"] == "correct" for r in records]
    right = sum(r["reward"] for r in records)
    out = {
        "step_accuracy": fmean(verified),
        "faithful_share": sum(verified) / right if right else None,
        "answer_stated": fmean(r["answer_stated"] for r in records),
        **{f"verdict/{v}": count / len(records) for v, count in Counter(r["verdict"] for r in records).most_common()},
    }
    if n > 1:
        out[pass_key("step_accuracy", n)] = fmean(any(verified[s : s + n]) for s in range(0, len(verified), n))
    return out


def summarise_alphas(alphas: Sequence[float], n: int, temperature: float) -> dict:
    """``accuracy`` is mean@n (the greedy accuracy when n = 1); pass@n and α spread for n > 1."""
    count = len(alphas)
    summary = {"accuracy": sum(alphas) / count if count else float("nan"), "num_rows": count, "n": n, "temperature": temperature}
    if n > 1:
        summary[f"mean@{n}"] = summary["accuracy"]
        summary[pass_key("accuracy", n)] = sum(a > 0 for a in alphas) / count if count else float("nan")
        summary["alpha_spread"] = alpha_spread(alphas)
    return summary


def behaviour_summary(records: Sequence[dict], n: int) -> dict:
    """Injected behaviours in the completions (see ``count_behaviours``): mean lines of each
    kind per completion, the share of completions with any, and the accuracy of completions
    with and without them. Harder problems invite more behaviours, so the ``paired`` pair
    compares the two kinds of samples within the same queries only (queries that have both).
    ``records`` hold the ``n`` samples of each query one after another, as ``evaluate_rows`` makes them."""
    if not records:
        return {}
    has = [any(r["behaviours"].values()) for r in records]
    out = {f"behaviours/{k}": fmean(r["behaviours"][k] for r in records) for k in records[0]["behaviours"]}
    out["behaviours/frac"] = fmean(has)
    with_, without = [r["reward"] for r, h in zip(records, has) if h], [r["reward"] for r, h in zip(records, has) if not h]
    out["accuracy_with_behaviours"] = fmean(with_) if with_ else None
    out["accuracy_without_behaviours"] = fmean(without) if without else None
    pairs = []
    for start in range(0, len(records), n):
        group = list(zip(records[start : start + n], has[start : start + n]))
        a, b = [r["reward"] for r, h in group if h], [r["reward"] for r, h in group if not h]
        if a and b:
            pairs.append((fmean(a), fmean(b)))
    out["paired_queries"] = len(pairs)
    out["paired_accuracy_with_behaviours"] = fmean(a for a, _ in pairs) if pairs else None
    out["paired_accuracy_without_behaviours"] = fmean(b for _, b in pairs) if pairs else None
    return out


def greedy_accuracy(model, tokenizer, rows: Sequence[dict], **gen_kwargs) -> float:
    return evaluate_rows(model, tokenizer, rows, n=1, temperature=0.0, **gen_kwargs)[0]["accuracy"]


def greedy_scores(model, tokenizer, rows: Sequence[dict], **gen_kwargs) -> dict[str, float | None]:
    """Greedy ``accuracy`` and ``step_accuracy`` of ``rows`` (the validation metrics of both trainers)."""
    summary = evaluate_rows(model, tokenizer, rows, n=1, temperature=0.0, **gen_kwargs)[0]
    return {"accuracy": summary["accuracy"], "step_accuracy": summary.get("step_accuracy")}


def sample_accuracy(model, tokenizer, rows: Sequence[dict], n: int = 8, temperature: float = 1.0, reward: str = DEFAULT_REWARD,
                    **gen_kwargs) -> list[float]:
    """Per-query rollout accuracy α: the fraction of ``n`` samples whose answer earns ``reward``."""
    check_sampling_options(n, temperature)
    completions = generate_completions(model, tokenizer, [r["prompt"] for r in rows], temperature=temperature, num_samples=n, **gen_kwargs)
    return [sum(reward_scores(accuracy_reward(reward), [row["prompt"]] * n, samples, [row["answer"]] * n)) / n
            for row, samples in zip(rows, completions)]


def alpha_spread(alphas: Sequence[float]) -> float:
    """Fraction of queries with 0 < α < 1: the only ones a GRPO step learns from."""
    return sum(0 < a < 1 for a in alphas) / len(alphas) if alphas else float("nan")


def evaluate_checkpoint(
    model,
    tokenizer,
    rows_by_split: dict[str, Sequence[dict]],
    run_dir: str | Path,
    checkpoint: str = SFT,
    *,
    n: int = 1,
    temperature: float = 0.0,
    limit: int | None = None,
    **gen_kwargs,
) -> dict[str, dict]:
    """Score each split, merge the summary into RUN/eval.json under ``checkpoint`` and the
    per-sample records into RUN/eval/<checkpoint>.jsonl (one line per row and sample, with its
    split): the splits scored now replace their earlier results, other splits keep theirs."""
    check_sampling_options(n, temperature)
    run_dir = Path(run_dir)
    results, records = {}, []
    for split, rows in rows_by_split.items():
        rows = list(rows)[:limit] if limit else list(rows)
        summary, split_records = evaluate_rows(model, tokenizer, rows, n=n, temperature=temperature, **gen_kwargs)
        results[split] = summary
        records += [{"split": split, **r} for r in split_records]
    eval_path = Run(run_dir).eval_json
    existing = read_json(eval_path) if eval_path.exists() else {}
    existing.setdefault("checkpoints", {}).setdefault(checkpoint, {}).update(results)
    write_json(eval_path, existing)
    records_path = Run(run_dir).eval_records(checkpoint)
    kept = [r for r in (read_jsonl(records_path) if records_path.exists() else []) if r.get("split") not in results]
    write_jsonl(records_path, kept + records)
    return results
