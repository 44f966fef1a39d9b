"""``minference::local_attention``: a sliding-window layer (Mistral, Qwen2 ``use_sliding_window``, Gemma-3's
local layers) as exact A-shape attention with ``init = 0, local = window``.

transformers hands SDPA a materialised B x S x S window mask for these layers; the FX pass proves the mask is
``kv > q - window AND kv <= q`` (optionally AND padding / packed positions) and routes the layer here:
row i attends j iff i - window < j <= i. That is what the A-shape kernel computes, so above the A-shape
crossover the window costs O(S * window), never S x S. Below it (or with real padding / several packed
sequences, or a decode step) the layer runs dense SDPA with the same window, built per row chunk.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..patterns import AShape, pack_layer
from ..patterns.a_shape import streaming
from .decide import length_decision
from .dense import dense_attention
from .padded import _irregular, mask_inputs
from .record import RECORD


@torch.library.custom_op("minference::local_attention", mutates_args=())
def local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    padding_mask: Optional[torch.Tensor],
    position_ids: Optional[torch.Tensor],
    window: int,
    scale: float,
    min_sparse_len: int,
    layer: int = -1,
) -> torch.Tensor:
    B, sq, skv = q.shape[0], q.shape[2], k.shape[2]
    keep, pos = mask_inputs(padding_mask, position_ids, k, B)
    if skv <= window and keep is None and pos is None:
        RECORD.add(layer, "dense", f"sliding window {window} >= kv_len: plain causal", sq, skv)
        return dense_attention(q, k, v, scale)
    why = ""
    if keep is not None or pos is not None:
        why = _irregular(padding_mask, position_ids, keep, pos)
    if not why:  # the length rule of sparse_prefill (chunks: q_len < kv_len, the last q_len positions)
        sparse, rule = length_decision(*pack_layer([AShape(0, window)]), sq, skv, min_sparse_len, q.device.type)
        why = "" if sparse else rule
    if why:
        RECORD.add(layer, "dense", f"sliding window {window}: {why}", sq, skv)
        return dense_attention(q, k, v, scale, keep, positions=pos, window=window)
    RECORD.add(layer, "sparse", f"sliding window {window}: A-shape init 0, local {window}", sq, skv)
    return streaming(q, k, v, 0, window, scale, out=q.new_empty(q.shape))


@local_attention.register_fake
def _(q, k, v, padding_mask, position_ids, window, scale, min_sparse_len, layer=-1):
    return q.new_empty(q.shape)
