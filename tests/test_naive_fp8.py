"""Emulated FP8 Q.K^T attention (triton_kernels/naive_fp8.py) vs the fp32 references of naive.py.

Tolerances: no rounding (qk_format=None, pv_dtype=None) atol = rtol = 1e-5 (fp32, different summation order).
On N(0, 1) inputs the measured relative L2 error of the output is ~0.003 with bf16 Q.K/P.V and ~0.03 with
e4m3 Q.K (3 mantissa bits: up to 2^-4 relative per element), so the bounds are 0.006 and 0.05.
"""
import pytest
import torch

from minference_compile.triton_kernels import naive
from minference_compile.triton_kernels.naive_fp8 import E4M3_MAX, fp8_attention_ref, quantize_blocks

# (S, Hq, Hkv, D): odd lengths, GQA 1:1 / 4:1 / 3:1 / 2:1, D 64 / 128; batch 2 everywhere
CASES = [(1, 2, 2, 64), (63, 4, 1, 128), (65, 6, 2, 64), (300, 4, 2, 128)]
FP8 = torch.float8_e4m3fn


def _qkv(S, Hq, Hkv, D, seed=0, sq=None):
    g = torch.Generator().manual_seed(seed)
    sq = S if sq is None else sq
    return (torch.randn(2, Hq, sq, D, generator=g), torch.randn(2, Hkv, S, D, generator=g),
            torch.randn(2, Hkv, S, D, generator=g))


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def _random_mask(B, H, Sq, S, seed=1):
    m = torch.rand(B, H, Sq, S, generator=torch.Generator().manual_seed(seed)) < 0.3
    m[:, :, ::5] = False  # some rows attend nothing
    return m


@pytest.mark.parametrize("S,Hq,Hkv,D", CASES)
def test_unquantised_equals_reference(S, Hq, Hkv, D):
    q, k, v = _qkv(S, Hq, Hkv, D)
    mask = _random_mask(2, Hq, S, S)
    for m, ref in [(None, naive.dense_causal_ref(q, k, v)), (mask, naive.masked_attention_ref(q, k, v, mask))]:
        for smooth in (False, True):  # smoothing leaves softmax unchanged: exact in fp32 up to rounding
            out = fp8_attention_ref(q, k, v, m, qk_format=None, pv_dtype=None, smooth_k=smooth, rows=64)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_query_offset_and_row_mask():
    """Sq < S (bottom-right causal), the vertical-slash mask as a row callable, any chunk size."""
    q, k, v = _qkv(300, 4, 2, 64, sq=130)
    vert = torch.randint(0, 300, (2, 4, 5))
    slash = torch.randint(0, 300, (2, 4, 7))
    full = naive.vertical_slash_mask(vert, slash, 300, q_len=130)
    ref = naive.masked_attention_ref(q, k, v, full)
    torch.testing.assert_close(fp8_attention_ref(q, k, v, lambda r0, r1: full[:, :, r0:r1], qk_format=None,
                                                 pv_dtype=None, rows=64), ref, atol=1e-5, rtol=1e-5)
    narrow = lambda r0, r1: full[:, :, r0:r1, :170 + r1]  # keys past the chunk's last position left out
    torch.testing.assert_close(fp8_attention_ref(q, k, v, narrow, qk_format=None, pv_dtype=None, rows=64), ref,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fp8_attention_ref(q, k, v, qk_format=None, pv_dtype=None),
                               naive.dense_causal_ref(q, k, v), atol=1e-5, rtol=1e-5)
    a = fp8_attention_ref(q, k, v, full, smooth_k=True, rows=64)
    b = fp8_attention_ref(q, k, v, full, smooth_k=True, rows=256)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)  # chunking does not change the numerics


@pytest.mark.parametrize("S,Hq,Hkv,D", CASES)
def test_error_bounded(S, Hq, Hkv, D):
    q, k, v = _qkv(S, Hq, Hkv, D, seed=S)
    ref = naive.dense_causal_ref(q, k, v)
    assert _rel(fp8_attention_ref(q, k, v, qk_format=torch.bfloat16), ref) < 0.006
    for smooth in (False, True):
        out = fp8_attention_ref(q, k, v, smooth_k=smooth)
        assert torch.isfinite(out).all()
        assert _rel(out, ref) < 0.05
        # int8 (measured ~0.006 here: 1/127 of the block max per element) sits between bf16 and e4m3
        assert _rel(fp8_attention_ref(q, k, v, smooth_k=smooth, qk_format=torch.int8), ref) < 0.015


@pytest.mark.parametrize("qb,kb,fmt", [(64, 64, FP8), (1, 1, FP8), (16, 64, FP8), (64, 64, torch.int8)])
def test_fp8_scores_are_the_dequantised_products(qb, kb, fmt):
    """The scaled e4m3 product equals the fp32 attention of the dequantised q, k (independent of the row/block
    bookkeeping), with P.V in fp32."""
    q, k, v = _qkv(300, 6, 2, 64)
    q8, sq = quantize_blocks(q, qb, fmt)
    k8, sk = quantize_blocks(k, kb, fmt)
    qd = q8.float() * sq.repeat_interleave(qb, -1)[..., :300, None]
    kd = k8.float() * sk.repeat_interleave(kb, -1)[..., :300, None]
    torch.testing.assert_close(fp8_attention_ref(q, k, v, pv_dtype=None, rows=128, q_block=qb, k_block=kb,
                                                 qk_format=fmt),
                               naive.dense_causal_ref(qd, kd, v), atol=1e-5, rtol=1e-5)


def test_quantize_blocks_bound_and_zero_blocks():
    x = torch.randn(2, 3, 130, 64) * torch.logspace(-3, 2, 130).view(1, 1, -1, 1)
    x[:, :, 64:128] = 0  # an all-zero block: scale 1, no NaN
    x8, s = quantize_blocks(x)
    assert x8.dtype == FP8 and s.shape == (2, 3, 3)
    assert torch.all(s[:, :, 1] == 1) and torch.all(x8[:, :, 64:128].float() == 0)
    sr = s.repeat_interleave(64, -1)[..., :130, None]
    err = (x8.float() * sr - x).abs()
    # e4m3: relative half-ulp 2^-4 for normals, absolute 2^-10 (half the smallest subnormal) in scaled units
    assert torch.all(err <= torch.maximum(x.abs() * 2 ** -4, sr * 2 ** -10) * 1.0001)
    assert torch.all(x8.float().abs().amax(-1).view(2, 3, -1)[..., :64].amax(-1) == E4M3_MAX)
    i8, si = quantize_blocks(x, fmt=torch.int8)  # int8: absolute error <= half a step of the block's scale
    assert i8.dtype == torch.int8 and torch.all(si[:, :, 1] == 1) and torch.all(i8[:, :, 64:128] == 0)
    assert torch.all((i8.float() * si.repeat_interleave(64, -1)[..., :130, None] - x).abs()
                     <= si.repeat_interleave(64, -1)[..., :130, None] * 0.5 * 1.0001)


def test_zero_blocks_attention():
    q, k, v = _qkv(200, 4, 2, 64)
    q[:, :, 64:128] = 0  # a zero query block: uniform softmax over its causal keys
    k[:, :, :64] = 0
    ref = naive.dense_causal_ref(q, k, v)
    out = fp8_attention_ref(q, k, v, smooth_k=True)
    assert torch.isfinite(out).all()
    assert _rel(out, ref) < 0.05
    torch.testing.assert_close(out[:, :, 64:128], ref[:, :, 64:128], atol=2e-2, rtol=2e-2)  # bf16 P.V only


def test_smoothing_helps_offset_channels():
    """K with a large per-channel offset (real models have them): smoothing recovers the plain error."""
    q, k, v = _qkv(300, 4, 2, 128)
    k = k + 5 * torch.randn(1, 2, 1, 128, generator=torch.Generator().manual_seed(3))
    ref = naive.dense_causal_ref(q, k, v)
    plain, smooth = _rel(fp8_attention_ref(q, k, v), ref), _rel(fp8_attention_ref(q, k, v, smooth_k=True), ref)
    assert smooth < 0.05 and plain > 2 * smooth


def test_bad_format():
    q, k, v = _qkv(8, 2, 2, 64)
    with pytest.raises(ValueError, match="qk_format"):
        fp8_attention_ref(q, k, v, qk_format=torch.float16)
    with pytest.raises(ValueError, match="all 8 keys"):
        fp8_attention_ref(q, k, v, torch.ones(8, 1, dtype=torch.bool))


def test_benchmark_vs_row_mask():
    """benchmarks/fp8_accuracy's RowMask (ops/cpu's VS mask + causality) equals naive.vertical_slash_mask."""
    from benchmarks.fp8_accuracy import vs_row_mask

    S, Sq = 300, 190
    g = torch.Generator().manual_seed(5)
    vert, slash = torch.randint(-1, S, (2, 3, 6), generator=g), torch.randint(-1, S, (2, 3, 9), generator=g)
    full = naive.vertical_slash_mask(vert, slash, S, q_len=Sq)
    mask = vs_row_mask(vert, slash, S, Sq)
    for r0, r1 in [(0, 64), (64, 190), (128, 190)]:
        assert torch.equal(mask(r0, r1), full[:, :, r0:r1, :S - Sq + r1])
