"""Low-precision Q.K^T operands (issue 12, opt-in): q and k split into 64-row blocks per (batch, head) from row 0,
each block scaled by amax / 448 (float8_e4m3fn) or amax / 127 (int8, rounded half to even) so that x ~ x8 * scale;
an all-zero block has scale 1. `smooth_k` first subtracts each kv head's per-channel mean over its S keys (every
score of a query row moves by the same q . mean: softmax unchanged, K's range freed of channel offsets).
triton_kernels/naive_fp8.py states the same numerics as a reference (fp8_attention_ref); benchmarks/NOTES.md has
their measured accuracy (model-dependent: e4m3 +2.7% PPL on SmolLM2 at 4K, +0.37% on Qwen2.5-0.5B at 16K)."""
import os
from typing import Tuple

import torch
import triton
import triton.language as tl

from .naive_fp8 import E4M3_MAX, INT8_MAX, quantize_blocks

BLOCK = 64
FORMATS = {"fp8": torch.float8_e4m3fn, "int8": torch.int8}
_TOP = {torch.float8_e4m3fn: E4M3_MAX, torch.int8: INT8_MAX}


def qk_format(name) -> torch.dtype:
    """"fp8" / "int8" (or the torch dtype) -> the torch dtype; a clear error otherwise."""
    if isinstance(name, torch.dtype) and name in _TOP:
        return name
    if name not in FORMATS:
        raise ValueError(f"qk_format must be one of {sorted(FORMATS)} (or None for the input dtype), got {name!r}")
    return FORMATS[name]


def quantize_rows(x: torch.Tensor, fmt: torch.dtype, block: int = BLOCK) -> Tuple[torch.Tensor, torch.Tensor]:
    """x [B, H, N, D] -> (x8 [B, H, N, D] contiguous in fmt, scale [B, H, ceil(N / block)] fp32): the torch
    definition (naive_fp8.quantize_blocks, the reference's own), the fallback of quantize_rows_triton."""
    x8, scale = quantize_blocks(x, block, fmt)
    return x8.contiguous(), scale.contiguous()


def channel_mean(k: torch.Tensor) -> torch.Tensor:
    """k [B,H,S,D] -> its per-channel mean over S [B,H,D] fp32; one definition for both quantisers, so they agree
    bit for bit."""
    return k.float().mean(dim=2)


def quantize_qk(q: torch.Tensor, k: torch.Tensor, fmt: torch.dtype, smooth_k: bool = True, impl: str = "auto"):
    """q [B,Hq,Sq,D], k [B,Hkv,S,D] -> (q8, q scales [B,Hq,ceil(Sq/64)], k8, k scales [B,Hkv,ceil(S/64)]).
    impl: "triton" (one launch per tensor), "torch", "auto" = triton on CUDA, and under TRITON_INTERPRET=1 for int8
    (the interpreter's e4m3 conversion does not round to nearest even as the hardware and torch do)."""
    if impl == "auto":
        interp = os.environ.get("TRITON_INTERPRET") == "1" and fmt == torch.int8
        impl = "triton" if q.is_cuda or interp else "torch"
    if impl == "triton":
        mean = channel_mean(k) if smooth_k else None
        q8, qs = quantize_rows_triton(q, fmt)
        k8, ks = quantize_rows_triton(k, fmt, mean)
        return q8, qs, k8, ks
    if smooth_k:
        k = k.float() - channel_mean(k)[:, :, None]
    q8, qs = quantize_rows(q, fmt)
    k8, ks = quantize_rows(k, fmt)
    return q8, qs, k8, ks


@triton.jit
def _quant_rows_kernel(X, Y, SC, MEAN, sxb, sxh, sxn, syb, syh, syn, H, N, D, HM, TOP: tl.constexpr,
                       IS_INT: tl.constexpr, SMOOTH: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    # one program per (b, h, 64-row block): optionally x - mean[b, h, :], amax over the block, x / scale clamped
    # and rounded (int8: half to even) into Y, scale into SC [B, H, NB] (contiguous)
    blk = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    rn = blk * BLOCK + tl.arange(0, BLOCK)
    rd = tl.arange(0, BLOCK_D)
    m = (rn[:, None] < N) & (rd[None, :] < D)
    x = tl.load(X + b * sxb + h * sxh + rn.to(tl.int64)[:, None] * sxn + rd[None, :], mask=m, other=0.0)
    x = x.to(tl.float32)
    if SMOOTH:
        mu = tl.load(MEAN + (b * HM + h) * D + rd, mask=rd < D, other=0.0)
        x = tl.where(m, x - mu[None, :], 0.0)
    amax = tl.max(tl.max(tl.abs(x), 1), 0)
    # div_rn: IEEE division as torch does it (a plain '/' compiles to an approximate divide on CUDA, and one ulp
    # flips an int8 rounding tie: 10 of 49920 values differed on the H200)
    scale = tl.where(amax > 0, tl.math.div_rn(amax, TOP), 1.0)
    xs = tl.minimum(tl.maximum(tl.math.div_rn(x, scale), -TOP), TOP)
    if IS_INT:
        # round half to even: r = floor(x + 0.5), minus 1 where x + 0.5 was an odd integer tie
        r = tl.floor(xs + 0.5)
        tie = (r - xs) == 0.5
        odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
        r = tl.where(tie & odd, r - 1.0, r)
        y = r.to(tl.int8)
    else:
        y = xs.to(tl.float8e4nv, fp_downcast_rounding="rtne")
    tl.store(Y + b * syb + h * syh + rn.to(tl.int64)[:, None] * syn + rd[None, :], y, mask=m)
    tl.store(SC + bh.to(tl.int64) * tl.num_programs(0) + blk, scale)


def quantize_rows_triton(x: torch.Tensor, fmt: torch.dtype, mean=None, block: int = BLOCK):
    """quantize_rows in one launch (x - mean first when mean [B, H, D] fp32 is given): one read of x, one write
    of x8, no fp32 copy (the torch version moves ~8x x's bytes)."""
    B, H, N, D = x.shape
    nb = -(-N // block)
    y = torch.empty(B, H, N, D, dtype=fmt, device=x.device)
    sc = torch.empty(B, H, nb, dtype=torch.float32, device=x.device)
    if B * H * nb == 0:
        return y, sc
    if x.stride(-1) != 1:
        x = x.contiguous()
    mean_arg = mean.contiguous() if mean is not None else sc
    _quant_rows_kernel[(nb, B * H)](x, y, sc, mean_arg, x.stride(0), x.stride(1), x.stride(2), y.stride(0),
                                    y.stride(1), y.stride(2), H, N, D, H, TOP=_TOP[fmt], IS_INT=fmt == torch.int8,
                                    SMOOTH=mean is not None, BLOCK=block,
                                    BLOCK_D=max(16, triton.next_power_of_2(D)), num_warps=4)
    return y, sc
