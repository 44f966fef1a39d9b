"""Fused vertical-slash estimate (triton_kernels/vs_estimate.py) vs the torch path of ops/estimate.py.

Without CUDA the kernel runs under TRITON_INTERPRET=1 on fp32 CPU tensors (the interpreter's bf16 tl.dot is
wrong: bf16 runs on CUDA only). Scores: fp32 atol 1e-6 + rtol 1e-4
(probabilities ~1/S; both sides accumulate in fp32, only the summation order differs); bf16/fp16 on CUDA: atol
1e-4 + rtol 2e-2 (cuBLAS and tl.dot round differently). Top-k sets: equal, except entries whose score lies within
the tolerance of the k-th largest (near-ties may swap); the sink / local forcing goes through the shared
post-processing of `estimate_vertical_slash`.
"""
import os
import sys

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first `import triton`

import triton  # noqa: E402,F401

sys.path.insert(0, os.path.dirname(__file__))
if not CUDA:
    from test_kernels_triton import _interpret_triton_stdlib  # noqa: E402
    _interpret_triton_stdlib()

from minference_compile.ops.estimate import _torch_scores, estimate_vertical_slash  # noqa: E402
from minference_compile.triton_kernels.vs_estimate import vs_estimate_scores  # noqa: E402

DEV = "cuda" if CUDA else "cpu"
DTYPES = [torch.bfloat16, torch.float32] if CUDA else [torch.float32]
TOL = {torch.float32: (1e-6, 1e-4), torch.bfloat16: (1e-4, 2e-2), torch.float16: (1e-4, 2e-2)}

# (B, Hq, Hkv, Sq, S, D, last_q): odd S around the 64-key tiles, GQA 1/2/7, batch 2, D 64/96/128,
# last_q > S, fewer queries than keys (Sq < S), last_q < 16 (padded rows), last_q = 100 (128-row programs)
CASES = [(2, 2, 2, 1, 1, 64, 64), (2, 4, 2, 63, 63, 96, 64), (1, 7, 1, 65, 65, 128, 64),
         (2, 2, 1, 200, 200, 64, 64), (1, 2, 2, 40, 130, 96, 64), (2, 2, 2, 100, 100, 64, 9),
         (1, 2, 1, 1000, 1000, 128, 64), (1, 2, 1, 150, 150, 64, 100)]


def _inputs(B, Hq, Hkv, Sq, S, D, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    # q as a [B, Sq, Hq, D] buffer seen [B, Hq, Sq, D] (the HF layout before its transpose): strides are honoured
    q = torch.randn(B, Sq, Hq, D, generator=g).to(DEV, dtype).transpose(1, 2)
    k = torch.randn(B, Hkv, S, D, generator=g).to(DEV, dtype)
    # a non-contiguous K (every other key row of a larger buffer, NaN between): strides are honoured
    kbuf = torch.full((B, Hkv, 2 * S, D), float("nan"), device=DEV, dtype=dtype)
    kbuf[:, :, ::2] = k
    return q, kbuf[:, :, ::2]


@pytest.fixture(autouse=True)
def poisoned_buffers(monkeypatch):
    """Every buffer the kernels should write in full starts as NaN: a skipped write shows in the scores."""
    from minference_compile.triton_kernels import vs_estimate
    monkeypatch.setattr(vs_estimate, "_buffer",
                        lambda shape, dev: torch.full(shape, float("nan"), dtype=torch.float32, device=dev))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_scores_match_torch(case, dtype):
    B, Hq, Hkv, Sq, S, D, last_q = case
    q, k = _inputs(*case[:6], dtype, seed=sum(case))
    L = min(last_q, Sq)
    scale = 0.7 / D ** 0.5
    ref_v, ref_s = _torch_scores(q, k, L, scale)
    v, s = vs_estimate_scores(q, k, last_q, scale)
    atol, rtol = TOL[dtype]
    assert v.shape == s.shape == (B, Hq, S) and v.dtype == s.dtype == torch.float32
    assert torch.isfinite(v).all() and torch.isfinite(s).all()
    torch.testing.assert_close(v, ref_v, atol=atol, rtol=rtol)
    torch.testing.assert_close(s, ref_s, atol=atol, rtol=rtol)
    # every query row's probabilities sum to 1: vscore and sscore each hold L in total per head
    torch.testing.assert_close(v.sum(-1), torch.full_like(v[..., 0], L), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(s.sum(-1), torch.full_like(s[..., 0], L), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("programs", [2, 4, 6])
@pytest.mark.parametrize("case", [CASES[3], CASES[6], CASES[7], (1, 2, 2, 70, 333, 64, 20)])
def test_scores_match_torch_with_many_tiles_per_program(case, programs, monkeypatch):
    # few programs: each walks a run of tiles, so the diagonals shared by neighbouring tiles travel from tile to tile
    # (the carry at BL <= 64) and across split boundaries (one split per head at 2 programs, 2-3 at 4 / 6)
    from minference_compile.triton_kernels import vs_estimate
    if programs == 6:  # the environment override (benchmarks sweep it)
        monkeypatch.setenv("MINFERENCE_VS_EST_PROGRAMS", "6")
    else:
        monkeypatch.setattr(vs_estimate, "_PROGRAMS", programs)
    B, Hq, Hkv, Sq, S, D, last_q = case
    q, k = _inputs(*case[:6], torch.float32, seed=sum(case) + programs)
    L = min(last_q, Sq)
    ref_v, ref_s = _torch_scores(q, k, L, D ** -0.5)
    v, s = vs_estimate_scores(q, k, last_q, D ** -0.5)
    atol, rtol = TOL[torch.float32]
    torch.testing.assert_close(v, ref_v, atol=atol, rtol=rtol)
    torch.testing.assert_close(s, ref_s, atol=atol, rtol=rtol)


def _assert_topk_equal(idx, ref_idx, score, atol, rtol):
    """Index sets equal per head, except near-ties: an entry in one set only must score within the tolerance of
    the k-th largest (inf-forced entries are exact)."""
    for b in range(idx.shape[0]):
        for h in range(idx.shape[1]):
            a = set(idx[b, h].tolist()) - {-1}
            r = set(ref_idx[b, h].tolist()) - {-1}
            if a == r:
                continue
            sc = score[b, h]
            kth = sc[sorted(r)].min()
            for j in a ^ r:
                assert abs(float(sc[j] - kth)) <= atol + rtol * abs(float(kth)), (b, h, j, a ^ r)


@pytest.mark.parametrize("case", [CASES[3], CASES[4], CASES[6]])
def test_topk_sets_match_torch(case):
    B, Hq, Hkv, Sq, S, D, last_q = case
    q, k = _inputs(*case[:6], torch.float32 if not CUDA else torch.bfloat16, seed=7 + sum(case))
    nv, ns = min(40, S), min(90, S)
    fv, fs = estimate_vertical_slash(q, k, nv, ns, last_q, sink_tokens=3, local_window=5, fused=True)
    rv, rs = estimate_vertical_slash(q, k, nv, ns, last_q, sink_tokens=3, local_window=5, fused=False)
    assert fv.shape == rv.shape and fs.shape == rs.shape and fv.dtype == torch.int32
    vs, ss = _torch_scores(q, k, min(last_q, Sq), None)
    atol, rtol = TOL[q.dtype]
    _assert_topk_equal(fv.cpu(), rv.cpu(), vs.cpu(), atol, rtol)
    _assert_topk_equal(fs.cpu(), rs.cpu(), ss.cpu(), atol, rtol)
    # the forced entries are always in
    assert all(set(range(3)) <= set(fv[b, h].tolist()) for b in range(B) for h in range(Hq))
    assert all(set(range(5)) <= set(fs[b, h].tolist()) for b in range(B) for h in range(Hq))


def test_per_head_budgets_fused():
    q, k = _inputs(1, 4, 2, 70, 70, 64, torch.float32 if not CUDA else torch.bfloat16, seed=3)
    fv, fs = estimate_vertical_slash(q, k, [5, 9, 1, 0], [7, 2, 3, 11], fused=True)
    assert (fv[0, 2, 1:] == -1).all() and (fv[0, 3] == -1).all() and (fs[0, 1, 2:] == -1).all()


def test_default_is_fused_on_cuda_and_env_switch(monkeypatch):
    # on by default on CUDA since its H200 run (NOTES row 19); MINFERENCE_FUSED_ESTIMATE=0 keeps the torch path
    from minference_compile.ops.estimate import use_fused_estimate
    q = torch.zeros(1, 2, 8, 64, dtype=torch.bfloat16, device=DEV)
    monkeypatch.delenv("MINFERENCE_FUSED_ESTIMATE", raising=False)
    assert use_fused_estimate(q, q, 64) == CUDA
    monkeypatch.setenv("MINFERENCE_FUSED_ESTIMATE", "0")
    assert not use_fused_estimate(q, q, 64)
    monkeypatch.setenv("MINFERENCE_FUSED_ESTIMATE", "1")
    assert use_fused_estimate(q, q, 64) == CUDA
    # more rows than one program holds: torch path (the query length caps last_q, so q needs those rows)
    from minference_compile.triton_kernels.vs_estimate import MAX_LAST_Q
    long_q = torch.zeros(1, 2, MAX_LAST_Q + 1, 64, dtype=torch.bfloat16, device=DEV)
    assert use_fused_estimate(long_q, long_q, MAX_LAST_Q) == CUDA
    assert not use_fused_estimate(long_q, long_q, MAX_LAST_Q + 1)
    assert not use_fused_estimate(q, q.float(), 64)  # mixed dtypes: torch path


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_gpu_4099_no_host_sync():
    """S = 4099, 32/8 heads, bf16: matches the torch path, and the fused estimate (with top-k) makes no host
    sync (sync debug mode 'error' raises on one)."""
    q, k = _inputs(1, 32, 8, 4099, 4099, 128, torch.bfloat16, seed=11)
    rv, rs = _torch_scores(q, k, 64, None)
    v, s = vs_estimate_scores(q, k, 64, 128 ** -0.5)
    torch.testing.assert_close(v, rv, atol=1e-4, rtol=2e-2)
    torch.testing.assert_close(s, rs, atol=1e-4, rtol=2e-2)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fv, fs = estimate_vertical_slash(q, k, 100, 800)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ev, es = estimate_vertical_slash(q, k, 100, 800, fused=False)
    _assert_topk_equal(fv.cpu(), ev.cpu(), rv.cpu(), 1e-4, 2e-2)
    _assert_topk_equal(fs.cpu(), es.cpu(), rs.cpu(), 1e-4, 2e-2)


def test_adaptive_vs_scores_fused(monkeypatch):
    """ops/adaptive.vs_scores takes the fused path where `use_fused_estimate` says so (CUDA): same scores."""
    from minference_compile.ops import adaptive, estimate
    q, k = _inputs(2, 4, 2, 130, 130, 64, torch.float32, seed=5)
    ref_v, ref_s = adaptive.vs_scores(q, k, 64) if not CUDA else _torch_scores(q, k, 64, None)
    monkeypatch.setattr(estimate, "use_fused_estimate", lambda *a: True)
    v, s = adaptive.vs_scores(q, k, 64)
    torch.testing.assert_close(v, ref_v, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(s, ref_s, atol=1e-6, rtol=1e-4)


def test_auto_falls_back_once_on_a_failing_kernel(monkeypatch, caplog):
    """fused=None: a fused launch that raises is logged and the torch path answers (and stays); fused=True raises."""
    from minference_compile.ops import estimate
    from minference_compile.triton_kernels import vs_estimate

    def boom(*a, **kw):
        raise RuntimeError("no kernel here")
    monkeypatch.setattr(vs_estimate, "vs_estimate_scores", boom)
    monkeypatch.setattr(estimate, "_FUSED_FAILED", [])
    monkeypatch.setattr(estimate, "use_fused_estimate", lambda *a: not estimate._FUSED_FAILED)
    q, k = _inputs(1, 2, 1, 70, 70, 64, torch.float32, seed=2)
    ref = _torch_scores(q, k, 64, None)
    with caplog.at_level("WARNING", logger="minference_compile"):
        got = estimate.estimate_scores(q, k, 64)
    assert "fused vertical-slash estimate failed" in caplog.text and estimate._FUSED_FAILED
    torch.testing.assert_close(got[0], ref[0])
    torch.testing.assert_close(got[1], ref[1])
    with pytest.raises(RuntimeError, match="no kernel here"):
        estimate.estimate_scores(q, k, 64, fused=True)


@pytest.mark.parametrize("Sq,S,last_q", [(100, 300, 64), (30, 200, 64), (65, 130, 20)])
def test_fused_vs_bruteforce_loops(Sq, S, last_q):
    """Against the loop reference of tests/test_chunked_ops.py (full [L, S] softmax, diagonals summed by loops),
    with a query offset: independent of the torch path's strided-view trick."""
    from test_chunked_ops import estimate_scores_offset_ref
    g = torch.Generator().manual_seed(S + Sq)
    q = torch.randn(2, 4, Sq, 64, generator=g)
    k = torch.randn(2, 2, S, 64, generator=g)
    vref, sref = estimate_scores_offset_ref(q, k, last_q)
    v, s = vs_estimate_scores(q.to(DEV), k.to(DEV), last_q, 64 ** -0.5)
    torch.testing.assert_close(v.cpu(), vref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(s.cpu(), sref, atol=1e-5, rtol=1e-4)
