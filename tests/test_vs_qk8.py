"""The vertical-slash kernel with low-precision Q.K^T operands (qk_format "fp8" / "int8", triton_kernels/qk_quant.py)
against naive_fp8.fp8_attention_ref under the block-rounded vertical-slash mask: same quantisation (64-row blocks
from row 0 of q and of k, K smoothed or not), exact products, so the two differ by summation order only. Odd
lengths, GQA, D 64/96/128, batch 2, query offsets, paired tiles, NaN-poisoned outputs; CPU through the
interpreter (fp32 V and P), CUDA compiled (bf16, tolerance of the bf16 P.V)."""
import pytest
import torch

from test_kernels_triton import (B, CUDA, DTYPES, OFFSET_SHAPES, SHAPES, TOL, check, device, nan_out,  # noqa: F401
                                 offset_index_sets, qkv, rand_index, seed)

from minference_compile.triton_kernels import naive
from minference_compile.triton_kernels.naive_fp8 import fp8_attention_ref
from minference_compile.triton_kernels.qk_quant import FORMATS, qk_format, quantize_rows
from minference_compile.triton_kernels.vertical_slash import vertical_slash_attention_fwd
from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index

FMTS = ["fp8", "int8"]
# Hopper's fp8 MMA accumulates Q.K^T in fewer than 32 bits (Triton's default on sm90: no promotion to fp32 within
# the D-long dot), the reference sums exact products in fp32; measured on the H200 (session 11): at most 0.029 off
# on 1-5 of 0.5-2M outputs at the bf16 tolerance 0.02. int8 sums exactly in int32 and keeps the bf16 tolerance.
FP8_CUDA_TOL = 0.04


def check_q8(out, ref, dtype, fmt):
    if fmt == "fp8" and CUDA:
        assert not out.isnan().any(), "computed heads left NaN"
        torch.testing.assert_close(out.float(), ref.float(), atol=FP8_CUDA_TOL, rtol=FP8_CUDA_TOL)
    else:
        check(out, ref, dtype)


def reference(q, k, v, vert, slash, fmt, smooth, q_len=None):
    S = k.shape[2]
    mask = naive.vertical_slash_mask(vert, slash, S, q_len=q_len)
    pv = None if v.dtype == torch.float32 else v.dtype
    return fp8_attention_ref(q, k, v, mask, qk_format=FORMATS[fmt], smooth_k=smooth, pv_dtype=pv)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("S,Hq,Hkv,D", SHAPES)
def test_vertical_slash_qk8(S, Hq, Hkv, D, fmt, device):
    dtype = DTYPES[0]
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device)
    vert, slash = rand_index(B, Hq, 9, S, device), rand_index(B, Hq, 7, S, device)
    for pair, smooth in ((False, True), (True, False)):
        idx = build_vertical_slash_index(vert, slash, S, pair=pair)
        out = vertical_slash_attention_fwd(q, k, v, idx, None, None, nan_out(q), qk_format=fmt, smooth_k=smooth)
        check_q8(out, reference(q, k, v, vert, slash, fmt, smooth), dtype, fmt)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", OFFSET_SHAPES[:5])
def test_vertical_slash_qk8_offset_and_tma(Sq, S, Hq, Hkv, D, fmt, device):
    if CUDA and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("TMA needs sm90+")
    dtype = DTYPES[0]
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device, q_len=Sq)
    vert, slash = offset_index_sets(Sq, S, Hq, device)
    idx = build_vertical_slash_index(vert, slash, S, pair=True, q_len=Sq)
    ref = reference(q, k, v, vert, slash, fmt, True, q_len=Sq)
    for tma in (False, True):
        out = vertical_slash_attention_fwd(q, k, v, idx, None, None, nan_out(q), tma=tma, qk_format=fmt)
        check_q8(out, ref, dtype, fmt)


def test_qk8_differs_from_full_precision_and_is_close(device):
    """The quantised path is really taken (outputs differ from the dtype's own Q.K^T) and stays near it."""
    dtype = DTYPES[0]
    S, Hq = 300, 4
    q, k, v = qkv(S, Hq, 2, 64, dtype, device)
    vert, slash = rand_index(B, Hq, 9, S, device), rand_index(B, Hq, 7, S, device)
    idx = build_vertical_slash_index(vert, slash, S)
    full = vertical_slash_attention_fwd(q, k, v, idx)
    for fmt, lo, hi in (("fp8", 1e-3, 0.2), ("int8", 1e-4, 0.05)):
        out = vertical_slash_attention_fwd(q, k, v, idx, qk_format=fmt)
        rel = float((out.float() - full.float()).norm() / full.float().norm())
        assert lo < rel < hi, (fmt, rel)


def test_quantize_rows_definition():
    x = torch.randn(2, 3, 130, 16) * torch.tensor([1.0, 10.0, 0.0]).view(1, 3, 1, 1)
    for name, top in (("fp8", 448.0), ("int8", 127.0)):
        x8, s = quantize_rows(x, qk_format(name))
        assert x8.dtype == FORMATS[name] and s.shape == (2, 3, 3) and x8.is_contiguous()
        blocks = torch.nn.functional.pad(x, (0, 0, 0, 62)).view(2, 3, 3, 64, 16).abs().amax((-1, -2))
        torch.testing.assert_close(s, torch.where(blocks > 0, blocks / top, torch.ones_like(blocks)))
        back = x8.float() * s.repeat_interleave(64, -1)[..., :130, None]
        assert float((back - x).abs().max()) <= float(s.max()) * (0.5 if name == "int8" else 32)
        assert (x8.float()[:, 2] == 0).all() and (s[:, 2] == 1).all()  # an all-zero head: scale 1
    with pytest.raises(ValueError, match="qk_format"):
        qk_format("e5m2")


def test_qk8_needs_64_row_blocks(device):
    q, k, v = qkv(64, 2, 2, 64, DTYPES[0], device)
    idx = build_vertical_slash_index(rand_index(B, 2, 3, 64, device), rand_index(B, 2, 3, 64, device), 64,
                                     block=32)
    with pytest.raises(ValueError, match="64-row"):
        vertical_slash_attention_fwd(q, k, v, idx, block=32, qk_format="int8")


def test_config_pass_op_and_pattern_carry_qk_dtype(device, caplog):
    """config.qk_dtype -> the pass's op argument -> HeadGroup -> the VS kernel's quantised path."""
    import logging

    import torch.nn.functional as F

    from minference_compile.config import ConfigError, MInferenceConfig
    from minference_compile.passes import MInferenceSDPAPass
    from minference_compile.patterns.base import HeadGroup
    from minference_compile.patterns.vertical_slash import VerticalSlash, VSSelection
    cfg = {"layers": [], "default": ["vertical_and_slash", 64, 64], "min_sparse_len": 0}
    with pytest.raises(ConfigError, match="qk_dtype"):
        MInferenceConfig.from_dict({**cfg, "qk_dtype": "fp16"})
    c8 = MInferenceConfig.from_dict({**cfg, "qk_dtype": "int8"})
    assert c8.qk_dtype == "int8" and c8.fingerprint() != MInferenceConfig.from_dict(cfg).fingerprint()

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    q0, k0, v0 = (torch.randn(1, h, 32, 64) for h in (4, 2, 2))
    for config, tail in ((cfg, 9), (c8, 10)):
        got = []

        def backend(gm, example_inputs, config=config):
            got.extend(n for n in gm.graph.nodes if n.op == "call_function" and "minference" in str(n.target))
            MInferenceSDPAPass(config)(gm.graph)
            got[:] = [n for n in gm.graph.nodes if n.op == "call_function" and "minference" in str(n.target)]
            gm.recompile()
            return gm.forward
        torch._dynamo.reset()
        torch.compile(fn, backend=backend, fullgraph=True)(q0, k0, v0)
        (node,) = got
        assert len(node.args) == 3 + tail and (tail == 9 or node.args[-1] == "int8")
        m = node.meta["minference"]
        assert m.qk_dtype == ("" if tail == 9 else "int8")
        assert ("Q.K^T in int8" in m.at_length(32, "cuda")) == (tail == 10)
    with pytest.raises(ValueError, match="qk_dtype"):
        torch.ops.minference.sparse_prefill(q0, k0, v0, [1] * 4, [8] * 4, [8] * 4, 0.125, 0, 64, 1.0, 0, 1, "e5m2")
    # CPU: the op's reference path ignores it (logged once: the compiled call above may have logged it), the
    # answer is the input dtype's
    from minference_compile.patterns import vertical_slash as vs_pattern
    vs_pattern._cpu_noted.clear()
    with caplog.at_level(logging.INFO, logger="minference_compile"):
        a = torch.ops.minference.sparse_prefill(q0, k0, v0, [1] * 4, [8] * 4, [8] * 4, 0.125, 0, 64, 1.0, 0, 1, "int8")
    b = torch.ops.minference.sparse_prefill(q0, k0, v0, [1] * 4, [8] * 4, [8] * 4, 0.125, 0, 64)
    torch.testing.assert_close(a, b)
    assert any("applies to the CUDA kernel" in r.getMessage() for r in caplog.records)
    # the kernel path of the pattern (interpreted on CPU) takes the group's qk_dtype
    dtype = DTYPES[0]
    S, Hq = 130, 4
    q, k, v = qkv(S, Hq, 2, 64, dtype, device)
    vert, slash = rand_index(B, Hq, 9, S, device), rand_index(B, Hq, 7, S, device)
    spec = VerticalSlash(9, 7)
    group = HeadGroup(q, k, v, 64 ** -0.5, 64, (spec,) * Hq, "int8")
    idx = build_vertical_slash_index(vert, slash, S)
    out = VerticalSlash.attend_cuda(group, VSSelection(vert, slash, idx), None, nan_out(q))
    check(out, reference(q, k, v, vert, slash, "int8", True), dtype)


def test_benchmark_qk8_cases(device):
    """The runner's vs-*+fp8 / +int8 cases run the quantised kernel and note its error against the plain one."""
    from benchmarks import cases as C
    from benchmarks import registry as R
    S = 130
    q, k, v = (x[:1].contiguous() for x in qkv(S, 4, 2, 64, DTYPES[0], device))
    for name in ("vs-1000/6096+fp8", "vs-100/800+int8"):
        assert R.CASE_BY_NAME[name].params["qk"] in ("fp8", "int8")
    case = R.Case("vs-small+int8", "vs", {"nv": 20, "ns": 30, "qk": "int8"})
    p = C.vs(case, q, k, v, S)
    assert "qk int8" in p.note and p.op_fn is None and p.index_fn is None
    plain = C.vs(R.Case("vs-small", "vs", {"nv": 20, "ns": 30}), q, k, v, S)
    got, want = p.fn(), plain.fn()
    assert not torch.equal(got, want)
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("fmt", FMTS)
def test_quantize_triton_equals_torch(fmt, device):
    """The one-launch quantiser (the kernel path's) gives the torch definition's bytes and scales: odd lengths,
    half-integer ties (int8 rounds half to even), zero blocks, strided input, K smoothing."""
    from minference_compile.triton_kernels.qk_quant import quantize_qk
    if fmt == "fp8" and not CUDA:
        pytest.skip("the interpreter's e4m3 conversion rounds ties away (hardware and torch: to nearest even)")
    dtype = DTYPES[0]
    for S, D in ((1, 64), (65, 96), (200, 128)):
        q, k, _ = qkv(S, 4, 2, D, dtype, device, layout="bshd")
        with torch.no_grad():
            k[:, 1, :64] = 0  # an all-zero block
        for smooth in (False, True):
            a = quantize_qk(q, k, FORMATS[fmt], smooth, impl="triton")
            b = quantize_qk(q, k, FORMATS[fmt], smooth, impl="torch")
            for x, y in zip(a, b):
                assert x.dtype == y.dtype and x.shape == y.shape
                torch.testing.assert_close(x.float(), y.float(), atol=0, rtol=0 if x.dtype != torch.float32 else 1e-6)


def test_quantize_int8_ties_round_half_to_even(device):
    from minference_compile.triton_kernels.qk_quant import quantize_rows, quantize_rows_triton
    x = torch.zeros(1, 1, 64, 16, device=device)
    x[0, 0, 0, :7] = torch.tensor([127.0, 0.5, 1.5, 2.5, -2.5, -0.5, 3.5])  # amax 127: scale 1, exact ties
    want = torch.tensor([127, 0, 2, 2, -2, 0, 4], dtype=torch.int8)
    for fn in (quantize_rows, quantize_rows_triton):
        x8, s = fn(x, torch.int8)
        assert float(s) == 1.0 and torch.equal(x8[0, 0, 0, :7].cpu(), want), fn.__name__
