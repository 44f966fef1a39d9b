"""Emulated numerics of an FP8 (e4m3) Q.K^T attention with per-block scales (SageAttention's idea); no kernel.

What a kernel would do, stated exactly (fp8_attention_ref):
* q [B,Hq,Sq,D] and k [B,Hkv,S,D] are taken in fp32 (from their own dtype: a kernel up-converts bf16 tiles).
* smooth_k: k <- k - mean_j k[b, h, j, :] (fp32 mean over all S keys, per channel). It shifts every score of a
  query row by the same q . mean, so softmax is unchanged; it removes the channel offsets that waste K's range.
* qk_format float8_e4m3fn: q is split into 64-row blocks per (b, q head) from row 0, k into 64-key blocks per
  (b, kv head) (q_block / k_block rows: 64 by default, 1 = per-token scales); each block x -> x8 =
  clamp(x / s, +-448).to(e4m3) (round to nearest even) with s = amax|x| / 448 (s = 1 for an all-zero block).
  scores = (q8 . k8^T in fp32: e4m3 products are exact in fp32, fp32 sums) * sq * sk * scale, sq per query row
  block, sk per key block. (Hopper's FP8 MMA accumulates with fewer than 32 bits:
  not emulated.) qk_format int8: the same with scale = amax / 127 and rounding to integers (SageAttention's
  choice; int8 products are exact and their D-term sums stay below 2^24, so fp32 sums are exact). bfloat16: q, k
  rounded to bf16, fp32 products and sums (a bf16 kernel). None: fp32.
* softmax in fp32: masked scores -inf, m = row max, p = exp(s - m), l = sum p (fp32, before any rounding of p).
* P.V: pv_dtype bfloat16 rounds p and v to bf16, fp32 products and sums; None keeps fp32. out = (P.V) / l, cast to
  q.dtype. Rows with no attended key give 0.
Rows are processed in chunks (`rows` query rows x S keys of scores per head): never S x S.
"""
import math
from typing import Callable, Optional, Union

import torch

from .naive import BLOCK

E4M3_MAX = 448.0
INT8_MAX = 127.0
# mask(r0, r1) -> bool broadcastable to [B, Hq, r1 - r0, W] for the local query rows [r0, r1) over the keys [0, W),
# W <= S (keys >= W are not attended: a causal mask needs only W = S - Sq + r1); True = attend
RowMask = Callable[[int, int], torch.Tensor]


def quantize_blocks(x: torch.Tensor, block: int = BLOCK, fmt: torch.dtype = torch.float8_e4m3fn):
    """x [B, H, N, D] -> (x8 [B, H, N, D] fmt, scale [B, H, ceil(N/block)] fp32) with x ~ x8 * scale per block of
    `block` rows from row 0; scale = amax|block| / 448 (e4m3: round to nearest even) or / 127 (int8: round half
    to even), 1 for an all-zero block."""
    B, H, N, D = x.shape
    nb = -(-N // block)
    top = {torch.float8_e4m3fn: E4M3_MAX, torch.int8: INT8_MAX}[fmt]
    xf = torch.nn.functional.pad(x.float(), (0, 0, 0, nb * block - N)).view(B, H, nb, block, D)
    amax = xf.abs().amax(dim=(-1, -2))
    # a tensor divisor: on CUDA torch turns `tensor / python number` into a multiply by the reciprocal, one ulp off
    # the IEEE division the Triton quantiser does (div_rn); that ulp flipped 1 of 512 int8 roundings on the H200
    scale = torch.where(amax > 0, amax / torch.full_like(amax, float(top)), torch.ones_like(amax))
    xs = (xf / scale[..., None, None]).clamp(-top, top)
    x8 = (xs.round() if fmt == torch.int8 else xs).to(fmt)
    return x8.view(B, H, nb * block, D)[:, :, :N], scale


def _rowwise(scale: torch.Tensor, n: int, block: int = BLOCK) -> torch.Tensor:
    """[B, H, nb] per-block scales -> [B, H, n] per row."""
    return scale.repeat_interleave(block, dim=-1)[..., :n]


def _qk_operands(q, k, qk_format, smooth_k: bool, q_block: int = BLOCK, k_block: int = BLOCK):
    """-> (qo [B,Hq,Sq,D] fp32, ko [B,Hkv,S,D] fp32, q row scales [B,Hq,Sq] or None, k key scales [B,Hkv,S] or None)."""
    qf, kf = q.float(), k.float()
    if smooth_k:
        kf = kf - kf.mean(dim=2, keepdim=True)
    if qk_format is None:
        return qf, kf, None, None
    if qk_format == torch.bfloat16:
        return qf.bfloat16().float(), kf.bfloat16().float(), None, None
    if qk_format not in (torch.float8_e4m3fn, torch.int8):
        raise ValueError(f"qk_format must be None, torch.bfloat16, torch.float8_e4m3fn or torch.int8, got {qk_format}")
    q8, sq = quantize_blocks(qf, q_block, qk_format)
    k8, sk = quantize_blocks(kf, k_block, qk_format)
    return q8.float(), k8.float(), _rowwise(sq, q.shape[2], q_block), _rowwise(sk, k.shape[2], k_block)


def fp8_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      mask: Union[None, torch.Tensor, RowMask] = None, scale: Optional[float] = None,
                      qk_format: Optional[torch.dtype] = torch.float8_e4m3fn, smooth_k: bool = False,
                      pv_dtype: Optional[torch.dtype] = torch.bfloat16, rows: int = 4 * BLOCK,
                      q_block: int = BLOCK, k_block: int = BLOCK) -> torch.Tensor:
    """Attention of q [B,Hq,Sq,D] over k, v [B,Hkv,S,D] (GQA: q head h reads kv head h // (Hq // Hkv)) with the
    numerics of the module docstring -> [B,Hq,Sq,D] in q.dtype.

    mask: None = causal, bottom-right (row r at position S - Sq + r attends keys <= it); a bool tensor broadcastable
    to [B,Hq,Sq,S]; or a RowMask giving each chunk's rows (True = attend, used as given: no causality added).
    qk_format None with pv_dtype None is the fp32 reference (naive.masked_attention_ref). q_block / k_block: rows
    per FP8 scale (64: the kernel's tiles; 1: per-token scales, a finer-grained variant).
    Memory: `rows` x S fp32 scores per q head at a time."""
    B, Hq, Sq, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    out = q.new_empty(q.shape)
    if B * Hq * Sq == 0:
        return out
    qo, ko, sq, sk = _qk_operands(q, k, qk_format, smooth_k, q_block, k_block)
    qo = qo.view(B, Hkv, G, Sq, D)
    ko = ko.unsqueeze(2)  # [B, Hkv, 1, S, D]
    vo = v.float() if pv_dtype is None else v.to(pv_dtype).float()
    vo = vo.unsqueeze(2)
    kscale = None if sk is None else sk.view(B, Hkv, 1, 1, S) * scale
    off = S - Sq
    rows = max(BLOCK, rows // BLOCK * BLOCK)
    for r0 in range(0, Sq, rows):
        r1 = min(r0 + rows, Sq)
        if mask is None:
            keep = torch.arange(off + r1)[None, :] <= torch.arange(off + r0, off + r1)[:, None]
        elif callable(mask):
            keep = mask(r0, r1)
        else:
            keep = mask[..., r0:r1, :]
            if keep.shape[-1] != S:
                raise ValueError(f"mask must cover all {S} keys in its last dim, got {keep.shape[-1]}")
        W = keep.shape[-1]
        s = torch.matmul(qo[..., r0:r1, :], ko[..., :W, :].transpose(-1, -2))  # [B, Hkv, G, r, W]
        if sq is None:
            s = s * scale
        else:
            s = s * sq.view(B, Hkv, G, Sq, 1)[..., r0:r1, :] * kscale[..., :W]
        keep = torch.broadcast_to(keep.to(s.device), (B, Hq, r1 - r0, W)).reshape(B, Hkv, G, r1 - r0, W)
        s = s.masked_fill(~keep, float("-inf"))
        m = s.amax(-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # empty rows: every p is 0
        p = torch.exp(s - m)
        l = p.sum(-1, keepdim=True)
        if pv_dtype is not None:
            p = p.to(pv_dtype).float()
        o = torch.matmul(p, vo[..., :W, :]) / torch.where(l > 0, l, torch.ones_like(l))
        out[:, :, r0:r1] = o.reshape(B, Hq, r1 - r0, D).to(out.dtype)
    return out
