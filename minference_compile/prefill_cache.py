"""PrefillCache: a transformers Cache preallocated for the whole prompt (+ decode tokens) and written IN PLACE.

Why: under `torch.compile` the whole forward is one graph, and a DynamicCache's `torch.cat([past, new])` is a graph
op whose result reaches the cache object only when the graph returns: in the last chunk of a chunked pre-fill every
layer's old cache and new cache are alive at once (~2x the cache; benchmarks/NOTES.md E5). Here each layer owns
K/V buffers [B, Hkv, capacity, D], allocated at its first update (dtype, device and heads from the states); a chunk
is copied into the buffer slice [start, end) and the attention gets a view of the filled prefix [:, :, :end]. Inductor
turns the functionalised copy (slice_scatter + copy back into the input) into an in-place write, so the peak is ~1x
the cache plus one chunk's activations (benchmarks/cache_peak.py, NOTES E7).

The filled length lives in the SIZE of a zero-element tensor (`_filled`, shape [0, end]) rather than in a Python int:
Dynamo specialises an int attribute (one compilation per chunk) but keeps a tensor size symbolic, so one graph
serves every chunk after the first. The mask sizes are those of a DynamicCache (kv_length = filled + q_len, offset
0, not compileable, not sliding), so transformers builds the same mask and SDPA call, and the FX pass rewrites it
into the sparse op as with a DynamicCache.

    cache = PrefillCache(capacity=prompt_len + max_new_tokens, config=model.config)
    cache, logits = chunked_prefill(model, ids, 65536, forward=fwd, cache=cache)   # chunked_prefill's default

Sliding-window layers keep the whole prefix (the mask applies the window); models with other layer types
(linear attention, KV sharing, chunked attention) are refused.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

__all__ = ["PrefillCache", "PrefillLayer", "CacheCapacityError"]


class CacheCapacityError(ValueError):
    """A write past a PrefillCache's capacity (the message names the capacity and the length asked for)."""


class PrefillLayer(CacheLayerMixin):
    """One layer: K/V buffers [B, Hkv, capacity + 1, D] written in place; `keys`/`values` are views of the filled
    prefix [B, Hkv, filled, D] (what a DynamicLayer holds)."""

    is_compileable = False  # the same mask creation as a DynamicCache (transformers skips is_causal when True)
    is_sliding = False
    is_croppable = True

    def __init__(self, capacity: int, **kwargs):
        super().__init__()
        if capacity < 1:
            raise ValueError(f"PrefillCache capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.key_buffer: Optional[torch.Tensor] = None
        self.value_buffer: Optional[torch.Tensor] = None
        self._filled = torch.empty(0, 0)  # its size(1) is the filled length (symbolic under compile)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        B, H, _, Dk = key_states.shape
        # one spare row past the capacity (never written): a filled view covering its whole buffer would be
        # contiguous, a property Dynamo guards on, so the chunk that fills the buffer would compile again
        self.key_buffer = key_states.new_empty(B, H, self.capacity + 1, Dk)
        self.value_buffer = value_states.new_empty(B, H, self.capacity + 1, value_states.shape[-1])
        self._filled = key_states.new_empty(0, 0)
        self.keys, self.values = self.key_buffer[:, :, :0], self.value_buffer[:, :, :0]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args,
               **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
        """Write key/value_states [B, Hkv, q, D] at [filled, filled + q); return views [B, Hkv, filled + q, D]."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self._filled.shape[1]
        end = start + key_states.shape[-2]
        if end >= self.key_buffer.shape[2]:  # > capacity
            raise CacheCapacityError(
                f"PrefillCache capacity {self.capacity} exceeded: {start} tokens cached + {key_states.shape[-2]} new "
                f"= {end}; build the cache with a larger capacity (prompt length + max_new_tokens)")
        # narrow, not a slice: its length is exactly q (a slice's is min(end, capacity) - start, which Dynamo can only
        # match to q by specialising q)
        self.key_buffer.narrow(2, start, end - start).copy_(key_states)
        self.value_buffer.narrow(2, start, end - start).copy_(value_states)
        self._filled = self._filled.new_empty(0, end)
        self.keys, self.values = self.key_buffer.narrow(2, 0, end), self.value_buffer.narrow(2, 0, end)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> Tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        return self._filled.shape[1]

    def get_max_length(self) -> int:
        return self.capacity

    def reset(self) -> None:
        self._filled = self._filled.new_empty(0, 0)
        if self.is_initialized:
            self.keys, self.values = self.key_buffer[:, :, :0], self.value_buffer[:, :, :0]

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last `-tokens_to_remove` tokens (a negative count, as transformers' other layers take)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative token count, got {tokens_to_remove}")
        end = max(0, self.get_seq_length() + tokens_to_remove)
        self._filled = self._filled.new_empty(0, end)
        if self.is_initialized:
            self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.is_initialized:
            idx = beam_idx.to(self.key_buffer.device)
            self.key_buffer.copy_(self.key_buffer.index_select(0, idx))
            self.value_buffer.copy_(self.value_buffer.index_select(0, idx))

    def offload(self):
        raise NotImplementedError("PrefillCache does not offload (its buffers are written in place)")

    def prefetch(self):
        raise NotImplementedError("PrefillCache does not offload (its buffers are written in place)")


_ATTENTION_TYPES = ("full_attention", "sliding_attention")


class PrefillCache(Cache):
    """A Cache whose layers are PrefillLayer(capacity): one K/V buffer pair per layer, [B, Hkv, capacity, D],
    allocated at the layer's first update and written in place.

    capacity: the most tokens it will hold (prompt + tokens to generate); a write past it raises CacheCapacityError.
    config: the model's config (its decoder layer count sizes the cache up front); None: layers are added as the
    model calls update (like DynamicCache())."""

    def __init__(self, capacity: int, config=None):
        self.capacity = int(capacity)
        if config is None:
            super().__init__(layer_class_to_replicate=lambda: PrefillLayer(self.capacity))
            return
        text = config.get_text_config(decoder=True)
        types = getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers
        odd = sorted({t for t in types if t not in _ATTENTION_TYPES})
        if odd:
            raise NotImplementedError(f"PrefillCache holds attention layers only; this model has layer types {odd}")
        super().__init__(layers=[PrefillLayer(self.capacity) for _ in types])

    def check_room(self, length: int) -> None:
        """Raise CacheCapacityError unless `length` tokens fit (call outside a compiled region)."""
        if length > self.capacity:
            raise CacheCapacityError(
                f"PrefillCache capacity {self.capacity} is too small for {length} tokens "
                f"({self.get_seq_length()} cached); build it with capacity >= prompt length + max_new_tokens")

    def mark_dynamic(self) -> None:
        """Mark every layer's filled length dynamic for Dynamo (call between compiled forwards; chunked_prefill does).
        Without it Dynamo duck-sizes the length with an equal input size (the filled length equals the chunk after
        the first chunk) and compiles again at the third chunk."""
        for layer in self.layers:
            if isinstance(layer, PrefillLayer) and layer.is_initialized:
                torch._dynamo.maybe_mark_dynamic(layer._filled, 1)
                for buf in (layer.key_buffer, layer.value_buffer):
                    for dim in (0, 1, 3):  # batch, heads, head dim: constants (the capacity stays symbolic)
                        torch._dynamo.mark_static(buf, dim)
