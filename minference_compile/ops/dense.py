"""Dense causal attention fallbacks (bottom-right aligned), never holding an S x S mask at once."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import fa4

_MASK_ELEMS_PER_CHUNK = 1 << 24  # bounds the per-chunk bool mask (B * rows * S_kv)


def dense_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, keep: Optional[Tensor] = None,
                    positions: Optional[Tensor] = None, window: int = 0, contiguous: bool = True) -> Tensor:
    """Causal SDPA where query row r sits at position kv_len - q_len + r.

    keep [B, kv_len] bool: padding, False keys are never attended. positions [B, S] (q_len == kv_len): the
    no-cache transformers mask instead of index-causal: row i sees j iff pos[j] <= pos[i] and both lie in the
    same packed sequence (``cumsum(diff(pos) != 1)``). window > 0: also i - j < window (sliding window).
    Without extras, prefill and decode take SDPA's mask-free paths; otherwise the mask is built per chunk of
    rows. Rows with no attended key give 0. Output contiguous, or (contiguous=False) in whatever layout the kernel
    wrote: the layer ops then take it as it is when it is already theirs (ops/layout.py)."""
    fix = (lambda o: o.contiguous()) if contiguous else (lambda o: o)  # noqa: E731
    sq, skv = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    plain = keep is None and positions is None and (window <= 0 or window >= skv)
    if plain and sq > 1 and fa4.reason(q, k) is None:
        return fix(fa4.dense_causal(q, k, v, scale))  # the [hopper] extra: 1.15-1.19x cuDNN on the H200, chunks too
    if plain and sq == skv:
        return fix(F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa))
    if plain and sq == 1:  # decode: the last position sees every key
        return fix(F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa))
    if plain and _flash_ok(q):  # a pre-fill chunk (sq < skv) with no padding: no mask at all
        return prefix_causal_attention(q, k, v, scale)
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


def _flash_ok(q: Tensor) -> bool:
    # the flash kernels (with their log-sum-exp) take CUDA half inputs and head dims up to 256, multiples of 8
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256 and q.shape[-1] % 8 == 0


def _flash_lse(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float):
    """(out [B,H,Sq,D], logsumexp fp32 [B,H,Sq]) of softmax attention, no GQA (H equal)."""
    if q.is_cuda:
        r = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)
    else:
        r = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
    return r[0], r[1][..., : q.shape[2]]


def prefix_causal_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Dense attention of a pre-fill chunk: q [B,Hq,Sq,D] the last Sq of S positions, k/v [B,Hkv,S,D], S > Sq.

    Keys [0, S - Sq) are seen by every row: one flash call with the g q-heads of a kv head stacked as g * Sq rows
    (no K/V expansion, no mask). Keys [S - Sq, S) form a causal square: one flash call with that slice of K/V
    expanded (Sq keys only). The two are merged by their log-sum-exp. No q_len x kv_len mask ever exists
    (transformers' own chunked SDPA path builds one: 64 GB at a 64K chunk of a 1M prompt)."""
    B, Hq, Sq, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    g, off = Hq // Hkv, S - Sq
    qc = q.contiguous()
    o1, l1 = _flash_lse(qc.view(B, Hkv, g * Sq, D), k[:, :, :off], v[:, :, :off], False, scale)
    o1, l1 = o1.reshape(B, Hq, Sq, D), l1.reshape(B, Hq, Sq)  # CUDA flash output is [B,S,H,D] in memory
    k2, v2 = k[:, :, off:], v[:, :, off:]
    if g > 1:
        k2, v2 = k2.repeat_interleave(g, 1), v2.repeat_interleave(g, 1)
    o2, l2 = _flash_lse(qc, k2, v2, True, scale)
    lse = torch.logaddexp(l1, l2)
    w1, w2 = torch.exp(l1 - lse).unsqueeze(-1), torch.exp(l2 - lse).unsqueeze(-1)
    return (o1.float() * w1 + o2.float() * w2).to(q.dtype)


def dense_heads(q: Tensor, k: Tensor, v: Tensor, scale: float, which: Sequence[bool],
                out: Optional[Tensor] = None) -> Tensor:
    """Causal attention (dense_attention's, bottom-right aligned) of the q heads h with which[h] (host-side, e.g.
    a layer's dense heads among sparse ones) into out[:, h]; the other heads of out are left as they are. One SDPA
    per kv head that has such q heads (GQA inside the call): cuDNN / flash at their full rate, where the streaming
    kernel ran them at ~0.82 of it (benchmarks/NOTES.md row 46). out None: a new layer_out tensor (all heads:
    dense_attention's own output)."""
    from ..triton_kernels._torch_util import device_tensor
    from .layout import layer_out
    Hq, Hkv = q.shape[1], k.shape[1]
    if all(which):
        o = dense_attention(q, k, v, scale, contiguous=False)
        return o if out is None else out.copy_(o)
    if out is None:
        out = layer_out(q)
    G = Hq // Hkv
    for g in range(Hkv):
        hs = [h for h in range(g * G, (g + 1) * G) if which[h]]
        if not hs:
            continue
        # consecutive heads: a view; else the head ids through a pinned non-blocking copy (no host sync mid-layer)
        sel = (slice(hs[0], hs[-1] + 1) if hs[-1] - hs[0] + 1 == len(hs)
               else device_tensor(hs, q.device, torch.long))
        out[:, sel] = dense_attention(q[:, sel], k[:, g:g + 1], v[:, g:g + 1], scale, contiguous=False)
    return out
