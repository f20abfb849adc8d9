"""The rollout sampler that GRPO, evaluation and the influence analysis share.

``sample(model, prompts, ...)`` draws one completion per prompt (repeat a prompt to get a
group) with a KV cache and left padding, and returns the tokens together with their
log-probabilities under the sampling policy ``softmax(logits / temperature)`` — before top-p
truncation, and with temperature 1 for greedy decoding — i.e. GRPO's "old" log-probs.

Two engines (and a variant of the first) produce the same tokens:

- ``lean``: for Llama-shaped models (Llama, Mistral, Qwen2: RMSNorm, RoPE, GQA, SwiGLU,
  optional q/k/v bias). It reads the weights from the HF modules and runs its own forward
  with a preallocated cache and a few large ops per layer. On a CPU with a small model the
  per-op overhead of the HF stack, not arithmetic, is what a decode step costs, so fewer ops
  is what makes sampling fast.
- ``hf``: any causal LM, through its own forward with its key/value cache.

``backend="auto"`` picks ``lean`` whenever the model qualifies. ``backend="static"`` is the lean
engine with fixed-shape decode steps that CUDA graphs can replay (``rollout_static``).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F

from coinfluence.device import model_device
from coinfluence.errors import UserError

Backend = Literal["auto", "lean", "static", "hf"]

# RoPE variants whose cos/sin depend only on the position, so a table built once is exact.
# ("dynamic" and "longrope" rescale with the sequence length seen so far.)
STATIC_ROPE_TYPES = {"default", "linear", "llama3", "yarn"}
BACKENDS = ("auto", "lean", "static", "hf")
LEAN_ARCHITECTURES = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}

# Compact the batch (drop finished rows) once this share of its rows is done.
COMPACT_WHEN_DONE = 0.25


@dataclass
class Rollouts:
    """One completion per prompt; ``T`` is the longest completion in the batch.

    ``completion_ids`` is padded with the pad id after each row's ``lengths``; ``logprobs`` and
    ``entropies`` (of the sampling distribution at each step, temperature applied) are 0 there.
    ``finished`` says the row ended at eos or a stop token (kept in the completion) rather than
    at ``max_new_tokens``.
    """

    prompt_ids: list[list[int]]
    completion_ids: torch.Tensor  # LongTensor [B, T]
    logprobs: torch.Tensor  # FloatTensor [B, T]
    lengths: torch.Tensor  # LongTensor [B]
    finished: torch.Tensor  # BoolTensor [B]
    entropies: torch.Tensor  # FloatTensor [B, T]

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def mask(self) -> torch.Tensor:
        """BoolTensor [B, T]: True on generated tokens, False on padding."""
        steps = torch.arange(self.completion_ids.shape[1], device=self.lengths.device)
        return steps[None, :] < self.lengths[:, None]

    def completions(self) -> list[list[int]]:
        """The generated ids of each row, padding removed (a stop token, if hit, is kept)."""
        return [row[:n] for row, n in zip(self.completion_ids.tolist(), self.lengths.tolist())]

    def sequence_logprobs(self) -> torch.Tensor:
        """FloatTensor [B]: ``s(q, o)``, the summed log-probability of each completion."""
        return self.logprobs.sum(-1)


# ----------------------------------------------------------------------------- entry point


def sample(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int,
    stop_token_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    backend: Backend | None = None,
    compile: bool = False,
    rows_of: tuple[int, int] | None = None,
) -> Rollouts:
    """Sample one completion per prompt (token id lists, no padding).

    ``temperature=0`` is greedy decoding. ``top_p < 1`` samples from the smallest set of
    tokens whose probability reaches ``top_p``. Rows stop at ``eos_token_id`` or any of
    ``stop_token_ids``. ``batch_size`` splits the prompts into chunks (all at once by default).
    ``backend`` forces an engine ("lean" and "static" raise if the model does not qualify); None
    takes the process's default (:func:`set_default_backend`, the CLI's ``--sampler``; "auto").
    "static" is the lean engine with a fixed-shape decode step, replayed as a CUDA graph on a
    GPU (see ``rollout_static``); opt-in, as its GPU speed has not been measured yet.
    ``compile`` wraps the lean decode step in ``torch.compile`` (not with "static"). Off by default: on a 2-core
    CPU it cost ~110 s on the first call and ~10 s of recompilation on each later one against
    ~1.5 s for a whole uncompiled batch-64 run, so it never paid off in our measurements.
    ``rows_of=(first, total)``: these prompts are rows ``[first, first + len(prompts))`` of a batch
    of ``total`` that other processes sample with the same seed (data parallelism); each row gets
    the draws it would get in the whole batch, so sharding does not change the rollouts.
    """
    check_options(prompts, max_new_tokens, temperature, top_p)
    backend = backend or _default_backend[0]
    if compile and backend == "static":
        raise ValueError("compile=True applies to the lean engine, not to backend='static'")
    if rows_of is not None and batch_size is not None:
        raise ValueError("rows_of and batch_size cannot be combined")
    stops = stop_set(eos_token_id, stop_token_ids)
    engine = choose_engine(model, backend)
    chooser = TokenChooser(temperature, top_p, generator, rows_of)
    size = batch_size or len(prompts)
    chunks = [prompts[i : i + size] for i in range(0, len(prompts), size)]
    with eval_mode(model), torch.inference_mode():
        parts = [engine(model, chunk, max_new_tokens, chooser, stops, pad_token_id, compile) for chunk in chunks]
    # Clone outside inference mode so callers may use the results in autograd graphs.
    return merge_rollouts([list(map(int, p)) for p in prompts], parts, pad_token_id)


def check_options(prompts, max_new_tokens: int, temperature: float, top_p: float) -> None:
    if len(prompts) == 0:
        raise ValueError("sample() needs at least one prompt")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def stop_set(eos_token_id, stop_token_ids: Sequence[int]) -> list[int]:
    eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    return sorted({int(t) for t in [*eos, *stop_token_ids]})


_default_backend: list[str] = ["auto"]


def set_default_backend(backend: str) -> None:
    """The engine every :func:`sample` call without ``backend`` uses (train, eval and analyze)."""
    if backend not in BACKENDS:
        raise UserError(f"--sampler must be one of {', '.join(BACKENDS)}, got {backend!r}")
    _default_backend[0] = backend


def choose_engine(model, backend: Backend) -> Callable:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "hf":
        return sample_hf
    reason = lean_unsupported_reason(model)
    if reason is None and backend == "static":
        from coinfluence.training.rollout_static import StaticDecoder

        return StaticDecoder(model)
    if reason is None:
        return sample_lean
    if backend in ("lean", "static"):
        raise ValueError(f"the lean rollout engine does not support this model: {reason}")
    return sample_hf


@contextlib.contextmanager
def eval_mode(model):
    """The model in eval mode (no dropout) for the block, then back in the caller's mode: sampling
    and the gradients the analysis takes are properties of θ, not of a dropout draw."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def merge_rollouts(prompts: list[list[int]], parts: list[tuple], pad_id: int) -> Rollouts:
    tokens, logprobs, lengths, finished, entropies = (list(x) for x in zip(*parts))
    width = max(int(n.max()) for n in lengths)

    def widen(t: torch.Tensor, value) -> torch.Tensor:
        return F.pad(t[:, :width], (0, width - t[:, :width].shape[1]), value=value)

    return Rollouts(
        prompt_ids=prompts,
        completion_ids=torch.cat([widen(t, pad_id) for t in tokens]).clone(),
        logprobs=torch.cat([widen(t, 0.0) for t in logprobs]).clone(),
        lengths=torch.cat(lengths).clone(),
        finished=torch.cat(finished).clone(),
        entropies=torch.cat([widen(t, 0.0) for t in entropies]).clone(),
    )


# ----------------------------------------------------------------------------- choosing tokens


class TokenChooser:
    """Picks the next token from last-position logits and returns its log-probability."""

    def __init__(self, temperature: float, top_p: float, generator: torch.Generator | None,
                 rows_of: tuple[int, int] | None = None):
        self.greedy = temperature == 0
        self.temperature = 1.0 if self.greedy else float(temperature)
        self.top_p = top_p
        self.generator = generator
        self.rows_of = rows_of

    def __call__(self, logits: torch.Tensor, rows: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(token, its log-probability, entropy of the distribution)`` from ``logits`` [live rows, V]
        for the original ``rows`` of a batch of ``batch``.

        One uniform is drawn for every original row each step, finished or not, so a row's
        draws do not depend on when other rows finished or on which engine runs.
        """
        logits = logits.float()
        scaled = logits if self.temperature == 1.0 else logits / self.temperature
        logp = torch.log_softmax(scaled, dim=-1)
        if self.greedy:
            token = logits.argmax(-1)
        elif self.top_p < 1.0:
            token = self.nucleus(logp.exp(), self.uniforms(batch, logits.device)[rows])
        else:
            token = self.inverse_cdf(logp.exp(), self.uniforms(batch, logits.device)[rows])
        entropy = -(logp.exp() * logp).sum(-1)
        return token, logp.gather(-1, token[:, None]).squeeze(-1), entropy

    def uniforms(self, batch: int, device: torch.device) -> torch.Tensor:
        # Drawn where the generator lives (the CPU unless the caller made another), then moved:
        # one seed gives the same draws whichever device the model is on.
        where = self.generator.device if self.generator is not None else torch.device("cpu")
        first, total = self.rows_of or (0, batch)
        drawn = torch.rand(total, generator=self.generator, device=where)[first : first + batch]
        return drawn.to(device, non_blocking=True)

    @staticmethod
    def inverse_cdf(weights: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """One uniform draw per row against the running sum of (unnormalised) weights.

        torch.multinomial draws one exponential per vocabulary entry, which costs more than
        the whole decode step of a small model; this draws one number per row. A zero-weight
        token is never chosen: the first index whose running sum exceeds the target has
        positive weight.
        """
        cdf = weights.cumsum(-1)
        target = uniform[:, None].to(cdf.dtype) * cdf[:, -1:]
        index = torch.searchsorted(cdf, target, right=True)
        return index.clamp_(max=weights.shape[-1] - 1).squeeze(-1)

    def nucleus(self, probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        # Keep a token when the mass strictly before it is below top_p: the smallest set whose
        # mass reaches top_p, never empty.
        sorted_p, order = probs.sort(-1, descending=True)
        keep = (sorted_p.cumsum(-1) - sorted_p) < self.top_p
        choice = self.inverse_cdf(sorted_p * keep, uniform)
        return order.gather(-1, choice[:, None]).squeeze(-1)


class Recorder:
    """Output buffers for a batch whose live rows may shrink as rows finish."""

    def __init__(self, batch: int, max_new: int, stops: list[int], pad_id: int, device):
        self.tokens = torch.full((batch, max_new), pad_id, dtype=torch.long, device=device)
        self.logprobs = torch.zeros((batch, max_new), dtype=torch.float32, device=device)
        self.entropies = torch.zeros((batch, max_new), dtype=torch.float32, device=device)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.stops = torch.tensor(stops, dtype=torch.long, device=device)
        self.pad_id = pad_id

    def record(self, step: int, rows: torch.Tensor, token: torch.Tensor, logprob: torch.Tensor,
               entropy: torch.Tensor) -> torch.Tensor:
        """Store the tokens of live ``rows``; returns the tokens to feed back (pad once done)."""
        done = self.finished[rows]
        token = token.masked_fill(done, self.pad_id)
        self.tokens[rows, step] = token
        self.logprobs[rows, step] = logprob.masked_fill(done, 0.0)
        self.entropies[rows, step] = entropy.masked_fill(done, 0.0)
        self.lengths[rows] += (~done).long()
        self.finished[rows] = done | torch.isin(token, self.stops)
        return token

    def result(self):
        return self.tokens, self.logprobs, self.lengths, self.finished, self.entropies


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counted over real tokens only, so a padded row sees the same
    positions as it would alone (pads get 0; they are masked anyway)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[row, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def length_order(lengths: Sequence[int]) -> list[int]:
    """Row indices, shortest first (ties in input order): rows batched in this order pad little.
    Callers put each result back at its row's index."""
    return sorted(range(len(lengths)), key=lengths.__getitem__)


def chunks_by_length(lengths: Sequence[int], size: int) -> list[list[int]]:
    """:func:`length_order` cut into chunks of at most ``size`` row indices."""
    order = length_order(lengths)
    return [order[s : s + size] for s in range(0, len(order), size)]


# ----------------------------------------------------------------------------- generic engine


def cache_argument(model) -> str:
    """The name under which ``model.forward`` takes and returns its key/value cache: ``cache``
    from transformers 5 on (where ``past_key_values`` is deprecated), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def sample_hf(model, prompts, max_new: int, chooser: TokenChooser, stops, pad_id: int, compile: bool = False):
    """Any causal LM: the model's own forward with its key/value cache."""
    ids, mask = left_pad(prompts, pad_id, model_device(model))
    takes_positions = "position_ids" in inspect.signature(model.forward).parameters
    cache_name = cache_argument(model)
    recorder = Recorder(len(prompts), max_new, stops, pad_id, ids.device)
    rows = torch.arange(len(prompts), device=ids.device)
    positions = positions_from_mask(mask)
    past = None
    step_input = ids
    for step in range(max_new):
        extra = {"position_ids": positions} if takes_positions else {}
        out = model(input_ids=step_input, attention_mask=mask, use_cache=True, **{cache_name: past}, **extra)
        past = getattr(out, cache_name)
        token = recorder.record(step, rows, *chooser(out.logits[:, -1], rows, len(prompts)))
        if bool(recorder.finished.all()):
            break
        step_input = token[:, None]
        mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)
        positions = positions[:, -1:] + 1
    return recorder.result()


# ----------------------------------------------------------------------------- lean engine


def lean_unsupported_reason(model) -> str | None:
    """None when the lean engine reproduces this model exactly, else why not."""
    name = type(model).__name__
    if name not in LEAN_ARCHITECTURES:
        return f"architecture {name} is not one of {sorted(LEAN_ARCHITECTURES)}"
    config = model.config
    if getattr(config, "hidden_act", None) not in ("silu", "swish"):
        return f"hidden_act {config.hidden_act!r} is not silu"
    rope_type = getattr(model.model.rotary_emb, "rope_type", "default")
    if rope_type not in STATIC_ROPE_TYPES:
        return f"rope type {rope_type!r} depends on the sequence length"
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    attn = model.model.layers[0].self_attn
    if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
        return "q/k norms"
    if uses_sliding_window(config):
        return "sliding-window attention"
    return None


def uses_sliding_window(config) -> bool:
    # Mistral and Qwen2 name it differently; a window longer than any rollout changes nothing
    # but we cannot know the length here, so any active window falls back to HF.
    if getattr(config, "model_type", "") == "qwen2":
        return "sliding_attention" in (getattr(config, "layer_types", None) or [])
    return getattr(config, "sliding_window", None) is not None


def fuse(*linears) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) for several Linear layers reading the same input."""
    weight = torch.cat([m.weight for m in linears])
    if all(m.bias is None for m in linears):
        return weight, None
    return weight, torch.cat([m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in linears])


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor
    mlp_norm: torch.Tensor
    qkv: tuple
    out: tuple
    gate_up: tuple
    down: tuple


class LeanLlama:
    """A forward pass over a Llama-shaped HF model's weights with a preallocated KV cache."""

    def __init__(self, model):
        config, body = model.config, model.model
        attn = body.layers[0].self_attn
        self.n_heads = config.num_attention_heads
        self.n_kv = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.head_dim = attn.head_dim
        self.scaling = attn.scaling
        self.eps = config.rms_norm_eps
        self.embed = body.embed_tokens.weight
        self.final_norm = body.norm.weight
        head = model.get_output_embeddings()
        self.lm_head = (head.weight, head.bias)
        self.rotary = body.rotary_emb
        self.dtype = self.embed.dtype
        self.layers = [self.layer_weights(layer) for layer in body.layers]

    @staticmethod
    def layer_weights(layer) -> LayerWeights:
        a, m = layer.self_attn, layer.mlp
        return LayerWeights(
            attn_norm=layer.input_layernorm.weight,
            mlp_norm=layer.post_attention_layernorm.weight,
            qkv=fuse(a.q_proj, a.k_proj, a.v_proj),
            out=(a.o_proj.weight, a.o_proj.bias),
            gate_up=fuse(m.gate_proj, m.up_proj),
            down=(m.down_proj.weight, m.down_proj.bias),
        )

    def new_cache(self, batch: int, length: int, device) -> torch.Tensor:
        # [layer, k/v, batch, kv head, slot, head dim]; slots are written in place.
        shape = (len(self.layers), 2, batch, self.n_kv, length, self.head_dim)
        return torch.zeros(shape, dtype=self.dtype, device=device)

    def rope_table(self, length: int, device) -> torch.Tensor:
        """[position, 2, head_dim]: cos, and sin with the sign of rotate_half folded in.

        Built by the model's own rotary module so rope_theta and static scalings match HF.
        """
        positions = torch.arange(length, device=device)[None]
        cos, sin = self.rotary(self.embed[:1][None], positions)
        half = self.head_dim // 2
        signed_sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
        return torch.stack([cos[0], signed_sin[0]], dim=1).to(self.dtype)

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # Same op order as HF (float32 statistics, weight applied after casting back); the
        # casts are skipped when they would be no-ops, since each op costs dispatch time.
        if x.dtype == torch.float32 and weight.dtype == torch.float32:
            # One fused op instead of six; it rounds exactly like HF's (tested in test_rollout).
            return F.rms_norm(x, x.shape[-1:], weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * xf.to(x.dtype)

    def forward(self, tokens, rope, bias, cache, start: int | torch.Tensor) -> torch.Tensor:
        """Run ``tokens`` [B, S] at cache slots [start, start+S); return last-position logits.

        ``rope`` [B, S, 1, 2, hd] holds cos/sin per token; ``bias`` [B, 1, 1, S, start+S] is
        the additive attention mask (0 or the dtype's min, like HF). With ``start`` a LongTensor
        [S] of slots (see :func:`store_kv`), ``bias`` spans the whole cache instead.
        """
        x = F.embedding(tokens, self.embed)
        cos, sin = rope[..., 0, :], rope[..., 1, :]
        for index, weights in enumerate(self.layers):
            x = self.layer(x, weights, cos, sin, bias, cache[index], start)
        x = self.rms_norm(x[:, -1], self.final_norm)
        return F.linear(x, *self.lm_head)

    def layer(self, x, w: LayerWeights, cos, sin, bias, cache, start) -> torch.Tensor:
        x = x + self.attention(self.rms_norm(x, w.attn_norm), w, cos, sin, bias, cache, start)
        gate, up = F.linear(self.rms_norm(x, w.mlp_norm), *w.gate_up).chunk(2, dim=-1)
        return x + F.linear(F.silu(gate) * up, *w.down)

    def attention(self, h, w: LayerWeights, cos, sin, bias, cache, start) -> torch.Tensor:
        batch, steps, _ = h.shape
        nh, nkv, hd = self.n_heads, self.n_kv, self.head_dim
        qkv = F.linear(h, *w.qkv).view(batch, steps, nh + 2 * nkv, hd)
        # RoPE on q and k at once: x*cos + rotate_half(x)*sin, where rotate_half(x) = roll(x)
        # with the sign already folded into ``sin``.
        qk = qkv[:, :, : nh + nkv]
        qk = qk * cos + qk.roll(hd // 2, dims=-1) * sin
        keys, values = store_kv(cache, qk[:, :, nh:].transpose(1, 2), qkv[:, :, nh + nkv :].transpose(1, 2), start)
        end = keys.shape[2]
        # Grouped-query attention without repeating k/v: query head h reads kv head h // group,
        # so fold the group into the query-row dimension of each kv head.
        group = nh // nkv
        q = qk[:, :, :nh].transpose(1, 2).reshape(batch, nkv, group * steps, hd)
        scores = torch.matmul(q, keys.transpose(-1, -2)) * self.scaling
        scores = scores.view(batch, nkv, group, steps, end) + bias
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(h.dtype)
        out = torch.matmul(probs.view(batch, nkv, group * steps, end), values)
        out = out.view(batch, nh, steps, hd).transpose(1, 2).reshape(batch, steps, nh * hd)
        return F.linear(out, *w.out)


def store_kv(cache: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int | torch.Tensor):
    """Write ``keys``/``values`` [B, kv head, S, hd] at cache slots from ``start``; return the slots
    to attend over. An int ``start`` reads the slots filled so far; a slot tensor (the static
    decode step, whose shapes must not change) writes with index_copy_ and reads every slot,
    relying on the bias to mask the ones not yet written."""
    if isinstance(start, int):
        end = start + keys.shape[2]
        cache[0, :, :, start:end].copy_(keys)
        cache[1, :, :, start:end].copy_(values)
        return cache[0, :, :, :end], cache[1, :, :, :end]
    cache[0].index_copy_(2, start, keys)
    cache[1].index_copy_(2, start, values)
    return cache[0], cache[1]


def sample_lean(model, prompts, max_new: int, chooser: TokenChooser, stops, pad_id: int, compile: bool = False):
    net = LeanLlama(model)
    device = net.embed.device
    ids, mask = left_pad(prompts, pad_id, device)
    batch, width = ids.shape
    total = width + max_new
    cache = net.new_cache(batch, total, device)
    rope = net.rope_table(total, device)
    key_bias = padding_bias(mask, total, net.dtype)  # [B, 1, 1, 1, total]
    positions = positions_from_mask(mask)
    step_fn = compiled_step(net) if compile else net.forward

    logits = net.forward(ids, rope[positions][:, :, None], prefill_bias(mask, net.dtype), cache, 0)

    recorder = Recorder(batch, max_new, stops, pad_id, device)
    rows = torch.arange(batch, device=device)  # original row of each live row
    next_pos = positions[:, -1] + 1
    for step in range(max_new):
        token = recorder.record(step, rows, *chooser(logits, rows, batch))
        if step == max_new - 1:
            break
        live = ~recorder.finished[rows]
        n_live = int(live.sum())
        if n_live == 0:
            break
        if n_live <= (1 - COMPACT_WHEN_DONE) * len(rows):
            keep = live.nonzero().squeeze(-1)
            rows, token, next_pos, key_bias = rows[keep], token[keep], next_pos[keep], key_bias[keep]
            cache = cache.index_select(2, keep)
        slot = width + step
        logits = step_fn(token[:, None], rope[next_pos][:, None, None], key_bias[..., : slot + 1], cache, slot)
        next_pos = next_pos + 1
    return recorder.result()


def mask_value(dtype) -> float:
    """The additive mask: the most negative number finite both in ``dtype`` and in the float32
    softmax (a float64 model's own min would become -inf there, and a fully masked pad row NaN,
    which reaches real rows through the next layer's 0 * NaN)."""
    return max(torch.finfo(dtype).min, torch.finfo(torch.float32).min)


def padding_bias(mask: torch.Tensor, total: int, dtype) -> torch.Tensor:
    """Additive bias over all cache slots: :func:`mask_value` on prompt padding, 0 elsewhere."""
    bias = torch.zeros(mask.shape[0], total, dtype=dtype, device=mask.device)
    bias[:, : mask.shape[1]].masked_fill_(mask == 0, mask_value(dtype))
    return bias[:, None, None, None, :]


def prefill_bias(mask: torch.Tensor, dtype) -> torch.Tensor:
    """[B, 1, 1, P, P]: causal and not padding. A pad query sees nothing; the finite min (not
    -inf) keeps its softmax uniform instead of NaN, and its output is never read."""
    width = mask.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=mask.device).tril()
    allowed = causal[None] & mask.bool()[:, None, :]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill_(~allowed, mask_value(dtype))
    return bias[:, None, None]


def compiled_step(net: LeanLlama) -> Callable:
    # dynamic=True: the cache length grows every step; one graph serves all lengths.
    return torch.compile(net.forward, dynamic=True)
