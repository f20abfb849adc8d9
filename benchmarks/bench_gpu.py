"""The GPU benchmarks of issues 7 and 21 in one run, on a 0.5B-parameter Qwen2 config.

    python benchmarks/bench_gpu.py [--budget-s 330] [--out DIR]     # needs CUDA
    python benchmarks/bench_gpu.py --cpu-smoke                        # tiny config on the CPU, seconds

The model is a randomly initialised Qwen2 config of Qwen2.5-0.5B's shape (hidden 896, 24
layers, 14 heads / 2 KV heads, intermediate 4864, vocab 151936, tied embeddings; 494M
parameters) in float32 with eager attention. Rollouts are random token ids, so nothing depends
on a tokenizer. Times are medians of the repeats after a warm-up, with the device synchronised
around each. Sections, in order (each row is written as soon as it is measured):

- sampler: ``sample`` with the eager ``lean`` engine, the fixed-shape ``static`` engine (CUDA
  graphs on a GPU), the ``hf`` engine, and ``model.generate``, at batch 64; the static engine's
  tokens are compared with the lean one's under the same seed. The floor is reading the weights
  once per decode step: weight bytes / the bandwidth of a large device copy.
- features: exact per-rollout gradients (layerwise engine; on the host, and kept on the device)
  vs one batched forward+backward of Σℓ over the same chunks, on the MLP weights of the last
  two layers.
- delta_J: the aggregated ΔJ vs one GRPO step (clipped loss, backward, AdamW) on the same rollouts.
- analysis: 1,024 train rollouts (128 queries × G=8) and 128 target rollouts end to end:
  sampling, the Kronecker sketch (rank 16) of every weight matrix with the kernel kept on the
  device, K⁺/K⁻, and the aggregated ΔJ over every parameter.

``--budget-s`` bounds the run: a section that would start after the budget is recorded as
skipped, and a section that fails (out of memory, say) is recorded with its error; the tables
written so far stay. Writes OUT/gpu.csv and OUT/gpu.md (OUT: benchmarks/, or a new temporary
directory with ``--cpu-smoke``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from coinfluence.influence import features as feat
from coinfluence.influence.analyze import kernel_streaming
from coinfluence.influence.kernel import K_plus_minus, mean_over_targets
from coinfluence.influence.layerwise import features_layerwise
from coinfluence.influence.step import delta_J_aggregated
from coinfluence.io import write_text
from coinfluence.training.objectives import batch_to, grpo_advantages, grpo_loss, rollout_batch, sequence_logprobs
from coinfluence.training.rollout import sample

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from floor import backward_floor  # noqa: E402
from machine import markdown_table, write_csv  # noqa: E402

PAD, G = 0, 8
HALF_B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
              num_key_value_heads=2)
SMOKE = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)


@dataclass
class Setting:
    """Sizes of one run: the GPU run's, or the CPU smoke run's."""

    shape: dict
    device: str
    batch: int = 64
    prompt_len: int = 64
    new_tokens: int = 128
    feature_rollouts: int = 32
    analysis_rollouts: int = 1024
    analysis_targets: int = 128
    kron_rank: int = 16
    repeats: int = 3
    copy_mib: int = 1024


def setting_of(smoke: bool) -> Setting:
    if smoke:
        return Setting(SMOKE, "cpu", batch=8, prompt_len=8, new_tokens=6, feature_rollouts=16, analysis_rollouts=32,
                       analysis_targets=16, kron_rank=4, repeats=1, copy_mib=16)
    return Setting(HALF_B, "cuda")


def make_model(s: Setting) -> Qwen2ForCausalLM:
    config = Qwen2Config(**s.shape, max_position_embeddings=4096, rope_theta=1e6, tie_word_embeddings=True,
                         attn_implementation="eager", pad_token_id=PAD, eos_token_id=1)
    torch.manual_seed(0)
    with torch.device(s.device):
        return Qwen2ForCausalLM(config).eval()


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up (and CUDA graph capture, compilation of kernels)
    times, out = [], None
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def random_ids(n: int, length: int, vocab: int, g: torch.Generator) -> list[list[int]]:
    return torch.randint(2, vocab, (n, length), generator=g).tolist()


@dataclass
class Table:
    """The rows measured so far, rewritten to OUT after each section."""

    out: Path
    header: str
    rows: list = field(default_factory=list)

    def add(self, section: str, method: str, seconds: float | None = None, **extra) -> dict:
        self.rows.append({"section": section, "method": method,
                          "seconds": None if seconds is None else round(seconds, 4), **extra})
        print(self.rows[-1], flush=True)
        return self.rows[-1]

    def write(self) -> None:
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        table = [["" if r.get(k) is None else str(r[k]) for k in keys] for r in self.rows]
        lines = [self.header, "", *markdown_table(keys, table)]
        write_text(self.out / "gpu.md", "\n".join(lines) + "\n")
        write_csv(self.out / "gpu.csv", keys, self.rows)


def copy_bandwidth(s: Setting) -> float:
    """Bytes per second of a large on-device copy (each byte read once and written once)."""
    src = torch.empty(s.copy_mib * 2**20 // 4, dtype=torch.float32, device=s.device)
    dst = torch.empty_like(src)
    seconds, _ = timed(lambda: dst.copy_(src), 5)
    return 2 * src.numel() * 4 / seconds


def sampler_section(model, s: Setting, table: Table, g: torch.Generator) -> None:
    prompts = random_ids(s.batch, s.prompt_len, model.config.vocab_size, g)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    floor_step = weight_bytes / copy_bandwidth(s)
    steps = s.batch * s.new_tokens

    def ours(backend):
        return lambda: sample(model, prompts, max_new_tokens=s.new_tokens, temperature=1.0, eos_token_id=None,
                              pad_token_id=PAD, generator=torch.Generator().manual_seed(1), backend=backend)

    ids = torch.tensor(prompts, device=s.device)
    generate = lambda: model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, top_p=1.0,
                                      temperature=1.0, max_new_tokens=s.new_tokens, min_new_tokens=s.new_tokens,
                                      pad_token_id=PAD)
    hf_s, _ = timed(generate, s.repeats)
    results = {}
    for name, fn in (("ours lean (eager)", ours("lean")), ("ours static (CUDA graphs on GPU)", ours("static")),
                     ("ours hf engine", ours("hf"))):
        seconds, results[name] = timed(fn, s.repeats)
        per_step = seconds / s.new_tokens
        table.add("sampler", f"{name} b{s.batch}", seconds, tokens_per_s=round(steps / seconds), vs_generate=round(hf_s / seconds, 2),
                  ms_per_step=round(1e3 * per_step, 2), vs_weights_floor=round(per_step / floor_step, 1))
    table.add("sampler", f"generate b{s.batch}", hf_s, tokens_per_s=round(steps / hf_s), vs_generate=1.0,
              ms_per_step=round(1e3 * hf_s / s.new_tokens, 2), vs_weights_floor=round(hf_s / s.new_tokens / floor_step, 1))
    lean, static = results["ours lean (eager)"], results["ours static (CUDA graphs on GPU)"]
    same = lean.completions() == static.completions()
    gap = float((lean.logprobs - static.logprobs).abs().max())
    table.add("sampler", f"weights-read floor ({weight_bytes / 2**20:.1f} MiB)", floor_step,
              ms_per_step=round(1e3 * floor_step, 3), static_same_tokens_as_lean=same, static_max_logprob_gap=f"{gap:.1e}")


def feature_inputs(model, s: Setting, n: int, g: torch.Generator):
    length = max(8, s.new_tokens // 2)
    vocab = model.config.vocab_size
    return random_ids(n, length, vocab, g), random_ids(n, length, vocab, g), length


def features_section(model, s: Setting, table: Table, g: torch.Generator) -> None:
    prompts, completions, length = feature_inputs(model, s, s.feature_rollouts, g)
    last_two = "|".join(str(i) for i in range(model.config.num_hidden_layers - 2, model.config.num_hidden_layers))
    scope = feat.select_params(model, rf"layers\.({last_two})\.mlp\.\w+_proj\.weight$")
    kw = dict(normalization="seq-mean", max_length=length, temperature=1.0, params=scope, chunk_size=8)
    floor_s, _ = timed(lambda: backward_floor(model, list(scope.values()), prompts, completions, PAD, 8), s.repeats)
    table.add("features", "floor (batched backward)", floor_s, rollouts=s.feature_rollouts, scope_params=feat.num_features(scope))
    host = None
    for name, on_device in (("ours layerwise, to host", False), ("ours layerwise, kept on device", True)):
        seconds, F = timed(lambda: features_layerwise(model, prompts, completions, PAD, on_device=on_device, **kw), s.repeats)
        host = F.cpu() if host is None else host
        table.add("features", name, seconds, rollouts=s.feature_rollouts, scope_params=feat.num_features(scope),
                  vs_floor=round(seconds / floor_s, 2), rel_diff=f"{float((F.cpu() - host).abs().max() / host.abs().max()):.1e}")


def delta_J_section(model, s: Setting, table: Table, g: torch.Generator) -> None:
    n = s.feature_rollouts
    prompts, completions, length = feature_inputs(model, s, n, g)
    rewards = (torch.rand(n, generator=g) < 0.5).double()
    half = n // 2
    kw = dict(normalization="seq-mean", max_length=length, temperature=1.0)
    dj = lambda: delta_J_aggregated(model, feat.select_params(model), prompts[:half], completions[:half], rewards[:half],
                                    prompts[half:], completions[half:], rewards[half:], PAD, num_generations=G, **kw)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: the step's cost without moving the model

    def grpo_step():
        adv = grpo_advantages(rewards[:half], G)
        opt.zero_grad(set_to_none=True)
        for start in range(0, half, 8):
            b = batch_to(rollout_batch(prompts[start:start + 8], completions[start:start + 8], PAD), s.device)
            logps = sequence_logprobs(model, b)
            loss, _ = grpo_loss(logps, logps.detach(), adv[start:start + 8].to(s.device, logps.dtype), b["completion_mask"])
            (loss * 8 / half).backward()
        opt.step()

    step_s, _ = timed(grpo_step, s.repeats)
    opt.zero_grad(set_to_none=True)
    dj_s, _ = timed(dj, s.repeats)
    table.add("delta_J", "one GRPO step (floor)", step_s, rollouts=half)
    table.add("delta_J", "ours aggregated ΔJ", dj_s, rollouts=n, vs_floor=round(dj_s / step_s, 2))


def analysis_section(model, s: Setting, table: Table, g: torch.Generator) -> None:
    """1,024 rollouts analysed end to end, each stage timed once (no repeats: it is the long one)."""
    vocab, backend = model.config.vocab_size, "static" if s.device == "cuda" else "lean"
    knobs = {"normalization": "seq-mean", "max_completion_length": s.new_tokens, "temperature": 1.0}
    started = time.perf_counter()
    sides = {}
    for side, n in (("train", s.analysis_rollouts), ("targets", s.analysis_targets)):
        prompts = [p for p in random_ids(n // G, s.prompt_len, vocab, g) for _ in range(G)]
        ro = sample(model, prompts, max_new_tokens=s.new_tokens, temperature=1.0, eos_token_id=None, pad_token_id=PAD,
                    generator=torch.Generator().manual_seed(len(sides)), backend=backend, batch_size=s.batch * 2)
        sides[side] = {"prompts": np.array(prompts, dtype=object), "completions": np.array(ro.completions(), dtype=object),
                       "rewards": (torch.rand(n, generator=g) < 0.5).double()}
    sync()
    sampled = time.perf_counter()
    tr, tg = sides["train"], sides["targets"]
    weights = feat.select_params(model, r"proj\.weight$")
    K, dim = kernel_streaming(model, weights, tr, tg, PAD, scales=None, project_dim=None, knobs=knobs, seed=0, chunk_size=16,
                              progress=False, engine="layerwise", kron_rank=s.kron_rank, num_generations=G, on_device=True)
    K_plus, K_minus = (mean_over_targets(k).cpu() for k in K_plus_minus(K, tr["rewards"], G))
    sync()
    kernel = time.perf_counter()
    agg = delta_J_aggregated(model, feat.select_params(model), list(tr["prompts"]), list(tr["completions"]), tr["rewards"],
                             list(tg["prompts"]), list(tg["completions"]), tg["rewards"], PAD, num_generations=G,
                             micro_batch=64, **{k: knobs[k] for k in ("normalization", "temperature")},
                             max_length=s.new_tokens)
    sync()
    done = time.perf_counter()
    finite = bool(torch.isfinite(agg["delta_J"]).all()) and K_plus.shape == (s.analysis_rollouts // G,)
    row = dict(rollouts=s.analysis_rollouts, target_rollouts=s.analysis_targets, feature_dim=dim, results_finite=finite)
    table.add("analysis", f"sampling ({backend})", sampled - started, **row)
    table.add("analysis", f"K⁺/K⁻, Kronecker rank {s.kron_rank}, on device", kernel - sampled, **row)
    table.add("analysis", "aggregated ΔJ", done - kernel, **row)
    table.add("analysis", "end to end", done - started, **row)


SECTIONS = (("sampler", sampler_section), ("features", features_section), ("delta_J", delta_J_section),
            ("analysis", analysis_section))


def run_sections(model, s: Setting, table: Table, budget_s: float) -> None:
    """Each section in turn while the budget lasts; a failure is a row, not the end of the run."""
    started = time.perf_counter()
    for name, section in SECTIONS:
        if time.perf_counter() - started > budget_s:
            table.add(name, f"skipped: the {budget_s:.0f} s budget was spent")
        else:
            try:
                section(model, s, table, torch.Generator().manual_seed(0))
            except Exception as error:  # e.g. out of memory: keep the other sections' numbers
                table.add(name, f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}")
            if s.device == "cuda":
                torch.cuda.empty_cache()
        table.write()


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=330.0, help="Start no section after this many seconds (default 330).")
    ap.add_argument("--cpu-smoke", action="store_true", help="A tiny config on the CPU: checks the script end to end in seconds.")
    ap.add_argument("--out", type=Path, default=None, help="Directory for gpu.csv and gpu.md (default benchmarks/; "
                                                           "with --cpu-smoke a new temporary directory).")
    args = ap.parse_args(argv)
    if args.budget_s <= 0:
        ap.error("--budget-s must be > 0")
    if not args.cpu_smoke and not torch.cuda.is_available():
        ap.error("no CUDA device: this benchmark needs a GPU (--cpu-smoke runs a tiny config on the CPU)")
    if args.out is not None and not args.out.is_dir():
        ap.error(f"--out {args.out} is not a directory")
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    s = setting_of(args.cpu_smoke)
    out = args.out or (Path(tempfile.mkdtemp(prefix="bench_gpu_")) if args.cpu_smoke else HERE)
    model = make_model(s)
    n_params = sum(p.numel() for p in model.parameters())
    where = torch.cuda.get_device_name() if s.device == "cuda" else "CPU (smoke run)"
    command = "python benchmarks/bench_gpu.py" + (" --cpu-smoke" if args.cpu_smoke else "")
    header = (f"`{command}` on {where}; Qwen2 config, {n_params / 1e6:.1f}M parameters, random init, float32; "
              f"torch {torch.__version__}; budget {args.budget_s:.0f} s")
    print(header, flush=True)
    table = Table(out, header)
    run_sections(model, s, table, args.budget_s)
    print(f"wrote {out / 'gpu.md'} and {out / 'gpu.csv'}")
    return out


if __name__ == "__main__":
    main()
