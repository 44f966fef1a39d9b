"""Dense causal attention fallbacks (bottom-right aligned), never holding an S x S mask at once."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

_MASK_ELEMS_PER_CHUNK = 1 << 24  # bounds the per-chunk bool mask (B * rows * S_kv)


def dense_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, keep: Optional[Tensor] = None,
                    positions: Optional[Tensor] = None, window: int = 0) -> Tensor:
    """Causal SDPA where query row r sits at position kv_len - q_len + r.

    keep [B, kv_len] bool: padding, False keys are never attended. positions [B, S] (q_len == kv_len): the
    no-cache transformers mask instead of index-causal: row i sees j iff pos[j] <= pos[i] and both lie in the
    same packed sequence (``cumsum(diff(pos) != 1)``). window > 0: also i - j < window (sliding window).
    Without extras, prefill and decode take SDPA's mask-free paths; otherwise the mask is built per chunk of
    rows. Rows with no attended key give 0. Output contiguous."""
    sq, skv = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    plain = keep is None and positions is None and (window <= 0 or window >= skv)
    if plain and sq == skv:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa).contiguous()
    if plain and sq == 1:  # decode: the last position sees every key
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa).contiguous()
    B = q.shape[0]
    out = q.new_empty(q.shape)
    rows = max(1, _MASK_ELEMS_PER_CHUNK // max(1, B * skv))
    j = torch.arange(skv, device=q.device)
    seg = None
    if positions is not None:
        first = positions[:, :1] - 1
        seg = (torch.diff(positions, prepend=first, dim=-1) != 1).cumsum(-1)
    for r0 in range(0, sq, rows):
        r1 = min(sq, r0 + rows)
        i = torch.arange(r0, r1, device=q.device) + (skv - sq)
        if positions is None:
            mask = (j[None, :] <= i[:, None]).expand(B, -1, -1)  # [B, rows, kv_len]
        else:
            mask = (positions[:, None, :] <= positions[:, r0:r1, None]) & (seg[:, None, :] == seg[:, r0:r1, None])
        if window > 0:
            mask = mask & (i[:, None] - j[None, :] < window)
        if keep is not None:
            mask = mask & keep[:, None, :]
        mask = mask[:, None]
        o = F.scaled_dot_product_attention(q[:, :, r0:r1], k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
        out[:, :, r0:r1] = torch.where(mask.any(-1, keepdim=True), o, 0.0).to(q.dtype)
    return out
