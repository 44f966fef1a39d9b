"""Dense causal attention fallbacks (bottom-right aligned), never holding an S x S mask at once."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

_MASK_ELEMS_PER_CHUNK = 1 << 24  # bounds the per-chunk bool mask (B * rows * S_kv)


def dense_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, keep: Optional[Tensor] = None) -> Tensor:
    """Causal SDPA where query row r sits at position kv_len - q_len + r; `keep` [B, kv_len] bool (padding:
    False keys are never attended). Without padding, prefill and decode take SDPA's mask-free paths;
    otherwise the mask is built per chunk of rows. Rows with no attended key give 0. Output contiguous."""
    sq, skv = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if keep is None and sq == skv:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa).contiguous()
    if keep is None and sq == 1:  # decode: the last position sees every key
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa).contiguous()
    B = q.shape[0]
    out = q.new_empty(q.shape)
    rows = max(1, _MASK_ELEMS_PER_CHUNK // max(1, B * skv))
    j = torch.arange(skv, device=q.device)
    for r0 in range(0, sq, rows):
        r1 = min(sq, r0 + rows)
        i = torch.arange(r0, r1, device=q.device) + (skv - sq)
        mask = (j[None, :] <= i[:, None]).expand(B, -1, -1)  # [B, rows, kv_len]
        if keep is not None:
            mask = mask & keep[:, None, :]
        mask = mask[:, None]
        o = F.scaled_dot_product_attention(q[:, :, r0:r1], k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
        out[:, :, r0:r1] = torch.where(mask.any(-1, keepdim=True), o, 0.0).to(q.dtype)
    return out
