"""``minference::sparse_prefill_masked``: sparse_prefill behind an O(S) run-time padding check.

The FX pass routes the model's 2D ``attention_mask`` here instead of the B x S x S mask transformers
would build. All ones -> ``minference::sparse_prefill`` (sparse). Real padding -> dense attention with
the original semantics (bottom-right causal AND ``padding_mask[b, j]``), built per row chunk so the
full S x S mask never exists at once. Rows with no attended key output 0 (DESIGN.md).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import library  # noqa: F401  (registers minference::sparse_prefill)

_MASK_ELEMS_PER_CHUNK = 1 << 24  # bounds the per-chunk bool mask (B * rows * S_kv)


def dense_causal_padded(q, k, v, padding_mask, scale: float) -> torch.Tensor:
    B, Hq, Sq, D = q.shape
    Skv = k.shape[-2]
    keep = padding_mask[:, :Skv].to(device=q.device, dtype=torch.bool)  # [B, Skv]
    gqa = Hq != k.shape[1]
    out = q.new_empty(q.shape)  # contiguous, like the fake
    rows = max(1, _MASK_ELEMS_PER_CHUNK // max(1, B * Skv))
    j = torch.arange(Skv, device=q.device)
    for r0 in range(0, Sq, rows):
        r1 = min(Sq, r0 + rows)
        i = torch.arange(r0, r1, device=q.device) + (Skv - Sq)  # bottom-right alignment
        mask = (j[None, :] <= i[:, None])[None] & keep[:, None, :]  # [B, rows, Skv]
        mask = mask[:, None]
        o = F.scaled_dot_product_attention(q[:, :, r0:r1], k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
        out[:, :, r0:r1] = torch.where(mask.any(-1, keepdim=True), o, 0.0).to(q.dtype)
    return out


@torch.library.custom_op("minference::sparse_prefill_masked", mutates_args=())
def sparse_prefill_masked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    padding_mask: torch.Tensor,
    patterns: list[int],
    vertical_size: list[int],
    slash_size: list[int],
    scale: float,
    min_sparse_len: int,
    last_q: int,
) -> torch.Tensor:
    if padding_mask.dim() != 2 or padding_mask.shape[0] != q.shape[0] or padding_mask.shape[1] < k.shape[-2]:
        raise ValueError(f"padding_mask must be [B, >= S_kv], got {tuple(padding_mask.shape)} for k {tuple(k.shape)}")
    if q.shape[2] != k.shape[2]:
        # decode / chunked prefill run dense anyway: the padding goes straight into their small
        # q_len x kv_len mask, with no host check per layer and token
        return dense_causal_padded(q, k, v, padding_mask, scale if scale else 1.0 / math.sqrt(q.shape[-1]))
    if bool(padding_mask[:, : k.shape[-2]].all()):  # one O(B*S) host check
        return torch.ops.minference.sparse_prefill(
            q, k, v, patterns, vertical_size, slash_size, scale, min_sparse_len, last_q
        ).contiguous()  # the fake below promises a contiguous result
    return dense_causal_padded(q, k, v, padding_mask, scale if scale else 1.0 / math.sqrt(q.shape[-1]))


@sparse_prefill_masked.register_fake
def _(q, k, v, padding_mask, patterns, vertical_size, slash_size, scale, min_sparse_len, last_q):
    return q.new_empty(q.shape)
