"""The lean sampler with a fixed-shape decode step (``sample(..., backend="static")``).

Every tensor the decode step reads or writes is allocated once per (batch bucket, cache length):
the KV cache holds prompt + ``max_new`` slots, the batch is padded up to the next size in
:data:`BATCH_BUCKETS`, and the step's token, RoPE, bias and slot inputs are written in place.
Fixed shapes and addresses are what a CUDA graph needs, so on CUDA the step is captured once
per bucket and replayed (launch overhead, not arithmetic, dominates a small-batch decode step on
a GPU). On other devices the same step runs eagerly.

The tokens and log-probs are those of the ``lean`` engine: rows never interact, pad rows are
sliced off before a token is chosen, and the bias masks every slot not yet written. Finished
rows keep being computed (dropping them would change the shapes).
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

from coinfluence.training.rollout import (
    LeanLlama, Recorder, TokenChooser, left_pad, mask_value, padding_bias, positions_from_mask, prefill_bias,
)

BATCH_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512)


def batch_bucket(rows: int, buckets=BATCH_BUCKETS) -> int:
    """The smallest bucket holding ``rows``; past the largest, the next multiple of it."""
    for size in buckets:
        if rows <= size:
            return size
    return -(-rows // buckets[-1]) * buckets[-1]


class StepBuffers:
    """The fixed-shape inputs and KV cache of the decode step for one (bucket, length)."""

    def __init__(self, net: LeanLlama, bucket: int, length: int, pad_id: int, device):
        self.cache = net.new_cache(bucket, length, device)
        self.tokens = torch.full((bucket, 1), pad_id, dtype=torch.long, device=device)
        self.rope = torch.zeros((bucket, 1, 1, 2, net.head_dim), dtype=net.dtype, device=device)
        self.bias = torch.empty((bucket, 1, 1, 1, length), dtype=net.dtype, device=device)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)

    def reset(self, mask: torch.Tensor, rope_at_zero: torch.Tensor, pad_id: int) -> None:
        """Start a new chunk whose prompt mask is ``mask`` [rows, width]: nothing of the last
        chunk may survive, and every slot past the prompt is masked until it is written."""
        rows, width = mask.shape
        self.cache.zero_()
        self.tokens.fill_(pad_id)
        self.rope.copy_(rope_at_zero.expand_as(self.rope))
        # Pad rows see nothing: a finite mask gives them a uniform softmax, never NaN.
        self.bias.fill_(mask_value(self.bias.dtype))
        self.bias[:rows, ..., :width] = padding_bias(mask, width, self.bias.dtype)

    def set_step(self, token: torch.Tensor, rope: torch.Tensor, slot: int) -> None:
        rows = token.shape[0]
        self.tokens[:rows, 0] = token
        self.rope[:rows] = rope
        self.bias[..., slot] = 0
        self.slot.fill_(slot)


class StepGraphs:
    """Runs a decode step through one captured graph per key, or eagerly.

    ``capture(step)`` returns ``(replay, output)``: ``replay()`` recomputes ``output`` in place
    from the step's current buffers. If a capture fails, this object warns once and runs every
    later step eagerly.
    """

    def __init__(self, capture: Callable | None):
        self.capture = capture
        self.graphs: dict = {}

    def run(self, key, step: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.capture is None:
            return step()
        if key not in self.graphs:
            try:
                self.graphs[key] = self.capture(step)
            except Exception as error:  # any capture failure: correctness first, speed second
                warnings.warn(f"CUDA graph capture of the decode step failed ({error!r}); decoding eagerly",
                              RuntimeWarning, stacklevel=2)
                self.capture = None
                return step()
        replay, output = self.graphs[key]
        replay()
        return output


def cuda_graph_capture(step: Callable[[], torch.Tensor]):
    """Capture ``step`` in a CUDA graph: warm up on a side stream (the step is idempotent: it
    writes the same slot from the same inputs), then record it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = step()
    return graph.replay, output


class StaticDecoder:
    """The ``static`` engine for one ``sample()`` call: buffers and graphs are kept per
    (bucket, cache length) so later chunks of the same shape reuse them."""

    def __init__(self, model, buckets=BATCH_BUCKETS, capture: Callable | None | str = "auto"):
        self.net = LeanLlama(model)
        self.buckets = buckets
        if capture == "auto":
            capture = cuda_graph_capture if self.net.embed.device.type == "cuda" else None
        self.graphs = StepGraphs(capture)
        self.buffers: dict[tuple[int, int], StepBuffers] = {}

    def __call__(self, model, prompts, max_new: int, chooser: TokenChooser, stops, pad_id: int, compile: bool = False):
        net, device = self.net, self.net.embed.device
        ids, mask = left_pad(prompts, pad_id, device)
        rows_n, width = ids.shape
        key = (batch_bucket(rows_n, self.buckets), width + max_new)
        if key not in self.buffers:
            self.buffers[key] = StepBuffers(net, *key, pad_id, device)
        buf = self.buffers[key]
        rope = net.rope_table(key[1], device)
        buf.reset(mask, rope[0], pad_id)
        positions = positions_from_mask(mask)
        logits = net.forward(ids, rope[positions][:, :, None], prefill_bias(mask, net.dtype), buf.cache[:, :, :rows_n], 0)

        def step() -> torch.Tensor:
            return net.forward(buf.tokens, buf.rope, buf.bias, buf.cache, buf.slot)

        recorder = Recorder(rows_n, max_new, stops, pad_id, device)
        rows = torch.arange(rows_n, device=device)
        next_pos = positions[:, -1] + 1
        for index in range(max_new):
            token = recorder.record(index, rows, *chooser(logits[:rows_n], rows, rows_n))
            if index == max_new - 1 or bool(recorder.finished.all()):
                break
            buf.set_step(token, rope[next_pos][:, None, None], width + index)
            logits = self.graphs.run(key, step)
            next_pos = next_pos + 1
        return recorder.result()
