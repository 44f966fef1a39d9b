"""The opt-in TMA variants (tma=True: Q/K/V through tensor descriptors, benchmarks/NOTES.md #17) of the block-sparse
and A-shape kernels against the naive references, same cases as test_kernels_triton: odd lengths, GQA, batch 2,
D 64/96/128, query offsets, NaN-poisoned outputs. Triton 3.6's interpreter runs host tensor descriptors (zero fill
outside the descriptor's shape), so these run on the CPU too; on CUDA they compile to TMA loads (sm90+).
The NaN guard buffers of test_kernels_triton sit between heads in the descriptors' row views: a row past S read
into an unmasked position (or a V row not zeroed) poisons the output. Every test checks TMA was really used."""
import logging

import pytest
import torch

from test_kernels_triton import (B, CUDA, DTYPES, OFFSET_SHAPES, SHAPES, TOL, check, device, nan_out,  # noqa: F401
                                 offset_index_sets, qkv, rand_index, seed)

from minference_compile.triton_kernels import _common, block_sparse, naive, streaming, vertical_slash
from minference_compile.triton_kernels.block_sparse import block_sparse_attention_fwd
from minference_compile.triton_kernels.block_sparse_index import block_sparse_index
from minference_compile.triton_kernels.streaming import streaming_attention_fwd
from minference_compile.triton_kernels.vertical_slash import vertical_slash_attention_fwd
from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index

# on CUDA the variants need sm90+ (before it the wrapper falls back to pointer loads, which tma_used would flag)
pytestmark = pytest.mark.skipif(CUDA and torch.cuda.get_device_capability()[0] < 9, reason="TMA needs sm90+")
INIT = torch.tensor([0, 4, 70, 1, 33, 0, 9, 2], dtype=torch.int32)
LOCAL = torch.tensor([1, 0, 100, 65, 7, 200, 64, 130], dtype=torch.int32)


@pytest.fixture
def tma_used(monkeypatch):
    """Records, per kernel call, whether the wrapper got descriptors (True) or fell back to pointers (False)."""
    calls = []
    real = _common.tma_descriptors

    def spy(*a, **kw):
        d = real(*a, **kw)
        calls.append(d is not None)
        return d

    monkeypatch.setattr(_common, "tma_descriptors", spy)  # block-sparse and A-shape: through _common.qkv_load_args
    monkeypatch.setattr(vertical_slash, "tma_descriptors", spy)
    return calls


def contiguous_qkv(S, Hq, Hkv, D, dtype, device, q_len=None):
    """Plain contiguous tensors (the benchmark's layout): rows past S in the row view are the next head's keys."""
    mk = lambda h, s: (torch.randn(B, h, s, D, device=device) * 2).to(dtype)  # noqa: E731
    return mk(Hq, q_len or S), mk(Hkv, S), mk(Hkv, S)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S,Hq,Hkv,D", SHAPES)
def test_block_sparse_tma(S, Hq, Hkv, D, dtype, device, tma_used):
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device)
    for topk in (2, torch.tensor([5, 4, 3, 2, 1, 5, 4, 3][:Hq], device=device)):
        idx = block_sparse_index(q, k, topk)
        ref = naive.block_sparse_ref(q, k, v, idx)
        check(block_sparse_attention_fwd(q, k, v, idx, None, out=nan_out(q), compact=True, tma=True), ref, dtype)
    check(block_sparse_attention_fwd(q, k, v, idx, None, out=nan_out(q), tma=True), ref, dtype)
    assert tma_used == [True] * 3


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", OFFSET_SHAPES)
def test_block_sparse_tma_offset(Sq, S, Hq, Hkv, D, device, tma_used):
    dtype = DTYPES[0]
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device, q_len=Sq)
    idx = block_sparse_index(q, k, torch.tensor([5, 1, 3, 2, 1, 5, 4, 3][:Hq], device=device))
    ref = naive.block_sparse_ref(q, k, v, idx)
    check(block_sparse_attention_fwd(q, k, v, idx, None, out=nan_out(q), compact=True, tma=True), ref, dtype)
    # messy ids: -1, duplicates, non-causal, out of range; rows without their diagonal blocks
    messy = torch.randint(-1, -(-S // 64) + 2, (B, Hq, -(-Sq // 64), 4), dtype=torch.int32, device=device)
    check(block_sparse_attention_fwd(q, k, v, messy, None, out=nan_out(q), tma=True),
          naive.block_sparse_ref(q, k, v, messy), dtype)
    assert tma_used == [True] * 2


@pytest.mark.parametrize("S,Hq,Hkv,D", [(65, 4, 2, 96), (200, 4, 1, 64)] + ([(1000, 8, 2, 128)] if CUDA else []))
def test_tma_contiguous_next_head_rows(S, Hq, Hkv, D, device, tma_used):
    """Contiguous layout: the rows after a head's last key are the next head's (finite) keys, so a missing score
    mask or V zeroing gives a wrong answer rather than NaN."""
    dtype = DTYPES[0]
    q, k, v = contiguous_qkv(S, Hq, Hkv, D, dtype, device)
    idx = block_sparse_index(q, k, 3)
    check(block_sparse_attention_fwd(q, k, v, idx, None, out=nan_out(q), compact=True, tma=True),
          naive.block_sparse_ref(q, k, v, idx), dtype)
    init, local = INIT[:Hq].to(device), LOCAL[:Hq].to(device) + 40
    check(streaming_attention_fwd(q, k, v, init, local, None, out=nan_out(q), tma=True),
          naive.streaming_ref(q, k, v, init, local), dtype)
    vert, slash = vs_sets(S, Hq, device)
    idx = build_vertical_slash_index(vert, slash, S, pair=True)
    check(vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q), tma=True),
          naive.vertical_slash_ref(q, k, v, vert, slash), dtype)
    assert tma_used == [True] * 3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S,Hq,Hkv,D", SHAPES)
def test_streaming_tma(S, Hq, Hkv, D, dtype, device, tma_used):
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device)
    init, local = INIT[:Hq].to(device), LOCAL[:Hq].to(device)
    out = streaming_attention_fwd(q, k, v, init, local, None, out=nan_out(q), tma=True)
    check(out, naive.streaming_ref(q, k, v, init, local), dtype)
    assert tma_used == [True]


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", OFFSET_SHAPES)
def test_streaming_tma_offset(Sq, S, Hq, Hkv, D, device, tma_used):
    dtype = DTYPES[0]
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device, q_len=Sq)
    init, local = INIT[:Hq].to(device), LOCAL[:Hq].to(device)
    out = streaming_attention_fwd(q, k, v, init, local, None, out=nan_out(q), tma=True)
    check(out, naive.streaming_ref(q, k, v, init, local), dtype)
    assert tma_used == [True]


@pytest.mark.parametrize("S,Hq,Hkv,D", [(65, 7, 1, 64), (300, 2, 2, 128)] + ([(1000, 8, 2, 128)] if CUDA else []))
def test_streaming_tma_128_key_tiles(S, Hq, Hkv, D, device, monkeypatch, tma_used):
    monkeypatch.setattr(streaming, "_BLOCK_N", {64: 128, 128: 128})
    dtype = DTYPES[0]
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device)
    init = torch.tensor([0, 4, 130, 1, 33, 0, 9, 2], dtype=torch.int32)[:Hq].to(device)
    local = torch.tensor([1, 0, 100, 129, 7, 200, 64, 300], dtype=torch.int32)[:Hq].to(device)
    out = streaming_attention_fwd(q, k, v, init, local, None, out=nan_out(q), tma=True)
    check(out, naive.streaming_ref(q, k, v, init, local), dtype)
    assert tma_used == [True]


def vs_sets(S, Hq, device):
    """Random vertical/slash ids plus runs of offsets (components of 2+ tiles: wide tiles, cut at the component
    end), as test_kernels_triton.test_vertical_slash."""
    vert, slash = rand_index(B, Hq, 7, S, device), rand_index(B, Hq, 6, S, device)
    if S > 64:
        runs = [torch.arange(0, S // 3, 20), S // 3 + 70 + torch.arange(0, 40, 15),
                S * 3 // 4 + torch.arange(0, S // 3, 50)]
        slash = torch.cat([slash, torch.cat(runs).to(device).expand(B, Hq, -1)], -1)
    return vert, slash


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S,Hq,Hkv,D", SHAPES)
@pytest.mark.parametrize("pair", [False, True])
def test_vertical_slash_tma(S, Hq, Hkv, D, dtype, pair, device, tma_used):
    """Slash tiles through descriptors (single and, pair=True, 128-key wide ones); columns stay pointer loads."""
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device)
    vert, slash = vs_sets(S, Hq, device)
    idx = build_vertical_slash_index(vert, slash, S, pair=pair)
    check(vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q), tma=True),
          naive.vertical_slash_ref(q, k, v, vert, slash), dtype)
    assert tma_used == [True]


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", OFFSET_SHAPES)
def test_vertical_slash_tma_offset_and_aligned(Sq, S, Hq, Hkv, D, device, tma_used):
    dtype = DTYPES[0]
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device, q_len=Sq)
    vert, slash = offset_index_sets(Sq, S, Hq, device)
    for aligned in (False, True):
        ref = naive.vertical_slash_ref(q, k, v, vert, slash, aligned=aligned)
        for pair in (False, True):
            idx = build_vertical_slash_index(vert, slash, S, pair=pair, q_len=Sq, aligned=aligned)
            check(vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q), tma=True), ref, dtype)
    assert tma_used == [True] * 4


@pytest.mark.parametrize("block", [16, 32])
def test_vertical_slash_tma_finer_blocks(block, device, tma_used):
    dtype, S, Hq = DTYPES[0], 150, 2
    q, k, v = qkv(S, Hq, 2, 96, dtype, device)
    vert, slash = rand_index(B, Hq, 5, S, device), rand_index(B, Hq, 9, S, device)
    idx = build_vertical_slash_index(vert, slash, S, block=block)
    check(vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q), block=block, tma=True),
          naive.vertical_slash_ref(q, k, v, vert, slash, block=block), dtype)
    assert tma_used == [True]


def test_tma_head_mask(device, tma_used):
    dtype, S, Hq = DTYPES[-1], 190, 3
    q, k, v = qkv(S, Hq, 1, 128, dtype, device)
    hm = torch.tensor([True, False, True], device=device)
    idx = torch.arange(3, device=device).expand(B, Hq, 3, 3).contiguous()
    check(block_sparse_attention_fwd(q, k, v, idx, 0.25, hm, nan_out(q), tma=True),
          naive.dense_causal_ref(q, k, v, 0.25), dtype, hm)
    init, local = torch.tensor([4, 0, 8], dtype=torch.int32, device=device), torch.tensor([64, 30, 100],
                                                                                         dtype=torch.int32,
                                                                                         device=device)
    check(streaming_attention_fwd(q, k, v, init, local, None, hm, nan_out(q), tma=True),
          naive.streaming_ref(q, k, v, init, local), dtype, hm)
    vert, slash = vs_sets(S, Hq, device)
    check(vertical_slash_attention_fwd(q, k, v, build_vertical_slash_index(vert, slash, S, pair=True), None, hm,
                                       nan_out(q), tma=True), naive.vertical_slash_ref(q, k, v, vert, slash), dtype, hm)
    assert tma_used == [True] * 3


def test_tma_runs_on_transposed_layout_after_the_head_rows_copy(device, tma_used, caplog, monkeypatch):
    """[B,S,H,D] transposes (what a compiled model passes: heads interleaved row by row) are copied to [B,H,S,D] by
    prepare(), so TMA runs on them (before: pointer loads and a warning, the H200's 17% in-model slowdown)."""
    monkeypatch.setattr(_common, "_tma_logged", set())
    dtype, S, Hq = DTYPES[0], 150, 4
    q, k, v = qkv(S, Hq, 2, 96, dtype, device, layout="bshd")
    assert _common.tma_reason(q) is not None  # the inputs themselves do not qualify
    idx = block_sparse_index(q, k, 2)
    with caplog.at_level(logging.WARNING, logger="minference_compile"):
        check(block_sparse_attention_fwd(q, k, v, idx, None, out=nan_out(q), tma=True),
              naive.block_sparse_ref(q, k, v, idx), dtype)
        init, local = INIT[:Hq].to(device), LOCAL[:Hq].to(device)
        check(streaming_attention_fwd(q, k, v, init, local, None, out=nan_out(q), tma=True),
              naive.streaming_ref(q, k, v, init, local), dtype)
    assert tma_used == [True, True]
    assert not any("TMA loads requested" in r.getMessage() for r in caplog.records)


def test_new_output_takes_the_callers_layout(device):
    """Without `out`, the kernels write a buffer of the caller's q layout (a compiled model's [B,S,H,D] storage,
    which o_proj reads as a view), not of the head_rows copy they compute from."""
    dtype, S, Hq = DTYPES[0], 70, 4
    q, k, v = qkv(S, Hq, 2, 64, dtype, device, layout="bshd")
    init, local = INIT[:Hq].to(device), LOCAL[:Hq].to(device)
    o = streaming_attention_fwd(q, k, v, init, local, None)
    from minference_compile.ops.layout import layer_out_strides
    assert o.stride() == layer_out_strides(o.shape)  # dense [B,S,H,D] storage (q's own rows are padded here)
    check(o, naive.streaming_ref(q, k, v, init, local), dtype)


def test_head_rows_copies_only_interleaved_heads(device):
    x = torch.randn(2, 3, 10, 64, device=device)
    assert _common.head_rows(x) is x  # contiguous
    cache = torch.randn(2, 3, 32, 64, device=device)
    view = cache.narrow(2, 0, 10)  # a preallocated cache's filled prefix: whole rows per head, no copy
    assert _common.head_rows(view) is view
    t = torch.randn(2, 10, 3, 64, device=device).transpose(1, 2)  # [B,S,H,D] transpose: copied
    r = _common.head_rows(t)
    assert r is not t and r.is_contiguous() and torch.equal(r, t)
    e = torch.randn(2, 1, 10, 64, device=device).expand(2, 3, 10, 64)  # broadcast heads: left to pointer loads
    assert _common.head_rows(e) is e
    p = torch.randn(2, 3, 64, 10, device=device).transpose(2, 3)  # last dim strided: copied
    assert _common.head_rows(p).stride(-1) == 1


def test_tma_environment_switches(device, tma_used, monkeypatch):
    dtype, S = DTYPES[0], 130
    q, k, v = qkv(S, 2, 1, 64, dtype, device)
    init, local = torch.tensor([4, 0], dtype=torch.int32, device=device), torch.tensor([64, 30], dtype=torch.int32,
                                                                                      device=device)
    ref = naive.streaming_ref(q, k, v, init, local)
    monkeypatch.delenv("MINFERENCE_TMA", raising=False)
    check(streaming_attention_fwd(q, k, v, init, local, None, out=nan_out(q)), ref, dtype)  # default: auto
    auto_on = CUDA  # A-shape: auto is on for a real sm90+ GPU (this module skips older ones), off in the interpreter
    monkeypatch.setenv("MINFERENCE_TMA", "0")
    check(streaming_attention_fwd(q, k, v, init, local, None, out=nan_out(q)), ref, dtype)
    monkeypatch.setenv("MINFERENCE_TMA", "1")
    monkeypatch.setenv("MINFERENCE_NUM_STAGES", "1")
    check(streaming_attention_fwd(q, k, v, init, local, None, out=nan_out(q)), ref, dtype)
    check(streaming_attention_fwd(q, k, v, init, local, None, out=nan_out(q), tma=False, num_stages=3), ref, dtype)
    assert tma_used == [True] * (1 + auto_on)  # the wrapper only asks for descriptors when TMA is on


def test_use_tma_defaults(monkeypatch):
    """tma=True/False decides; else MINFERENCE_TMA 1/0; else (auto) only for a kernel that opts in, on a real
    CUDA tensor that qualifies, never in the interpreter."""
    cpu = torch.zeros(1, 1, 8, 64)
    monkeypatch.delenv("MINFERENCE_TMA", raising=False)
    assert _common.use_tma(True) and not _common.use_tma(False, True, cpu)
    assert not _common.use_tma(None, True, cpu)  # auto: a CPU tensor never qualifies
    assert not _common.use_tma(None, False)
    monkeypatch.setenv("MINFERENCE_TMA", "1")
    assert _common.use_tma(None) and not _common.use_tma(False)
    monkeypatch.setenv("MINFERENCE_TMA", "0")
    assert not _common.use_tma(None, True, cpu)
    if CUDA:
        gpu = torch.zeros(2, 3, 10, 64, device="cuda")
        monkeypatch.setenv("MINFERENCE_TMA", "auto")
        assert _common.use_tma(None, True, gpu) == (torch.cuda.get_device_capability()[0] >= 9)
        assert not _common.use_tma(None, False, gpu)
        assert not _common.use_tma(None, True, gpu.transpose(1, 2))  # not whole rows: silently pointer loads


def test_stages_override(monkeypatch):
    monkeypatch.delenv("MINFERENCE_NUM_STAGES", raising=False)
    assert _common.stages_override(3, None) == 3 and _common.stages_override(3, 1) == 1
    monkeypatch.setenv("MINFERENCE_NUM_STAGES", "4")
    assert _common.stages_override(2, None) == 4 and _common.stages_override(2, 2) == 2


def test_tma_reason(device):
    assert _common.tma_reason(torch.zeros(2, 3, 10, 64, device=device)) is None
    assert "aligned" in _common.tma_reason(torch.zeros(1, 1, 10, 7, device=device))  # 28-byte rows
    assert "whole rows" in _common.tma_reason(torch.zeros(1, 10, 3, 64, device=device).transpose(1, 2))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_tma_kernels_compile_to_tma_copies(device):
    """The compiled TMA variants really issue bulk tensor copies (not descriptor loads lowered to plain loads)."""
    q, k, v = contiguous_qkv(256, 4, 2, 128, torch.bfloat16, device)
    idx = block_sparse_index(q, k, 2)
    block_sparse_attention_fwd(q, k, v, idx, compact=True, tma=True)
    t = torch.full((4,), 64, dtype=torch.int32, device=device)
    streaming_attention_fwd(q, k, v, t, t, tma=True)
    torch.cuda.synchronize()
    vert, slash = vs_sets(256, 4, device)
    vertical_slash_attention_fwd(q, k, v, build_vertical_slash_index(vert, slash, 256, pair=True), tma=True)
    torch.cuda.synchronize()
    for fn in (block_sparse._bs_fwd_kernel, streaming._streaming_fwd_kernel, vertical_slash._vs_fwd_kernel):
        ptx = [kern.asm.get("ptx", "") for caches in fn.device_caches.values() for kern in caches[0].values()]
        assert any("cp.async.bulk.tensor" in p for p in ptx), f"{fn.__name__}: no TMA copy in any compiled variant"


# ---- benchmark plumbing (CPU tensors under the interpreter: the set-up runs, nothing is timed) ----

def test_benchmark_tma_cases(device):
    from benchmarks import cases as C
    from benchmarks import registry as R
    cases = R.parse_cases(",".join(R.TMA_CASES + ["bs-top100+tma", "ashape-128+4096+tma"]))
    assert [c.params.get("stages") for c in cases[:4]] == [1, 2, 3, 4] and cases[4].params["tma"]
    S = 130
    q, k, v = contiguous_qkv(S, 4, 2, 64, DTYPES[0], device)
    q, k, v = q[:1], k[:1], v[:1]
    bs_case = type(cases[0])("bs-small+tma@s2", "bs", {"topk": 2, "tma": True, "stages": 2})
    p = C.bs(bs_case, q, k, v, S)
    assert "tma" in p.note and "num_stages=2" in p.note and p.op_fn is None and p.index_fn is None
    plain = C.bs(type(bs_case)("bs-small", "bs", {"topk": 2}), q, k, v, S)
    torch.testing.assert_close(p.fn(), plain.fn(), atol=TOL[DTYPES[0]], rtol=TOL[DTYPES[0]])
    a_case = type(cases[0])("ashape-small+tma", "ashape", {"init": 4, "local": 64, "tma": True})
    assert "tma" in C.ashape(a_case, q, k, v, S).note
    assert C.ashape(R.CASE_BY_NAME["ashape-128+4096@s3"], q, k, v, S).note == "num_stages=3"
    vs_case = type(cases[0])("vs-small+tma@s1", "vs", {"nv": 20, "ns": 30, "tma": True, "stages": 1})
    p = C.vs(vs_case, q, k, v, S)
    assert "tma" in p.note and "num_stages=1" in p.note and p.op_fn is None and p.index_fn is None
    plain = C.vs(type(bs_case)("vs-small", "vs", {"nv": 20, "ns": 30}), q, k, v, S)
    assert plain.op_fn is not None and "tma" not in plain.note
    torch.testing.assert_close(p.fn(), plain.fn(), atol=TOL[DTYPES[0]], rtol=TOL[DTYPES[0]])


def test_benchmark_tma_case_fails_soft(device, monkeypatch):
    """A TMA case that cannot run, or whose output differs from pointer loads, raises: the runner records an error
    row for it and goes on."""
    from benchmarks import cases as C
    from benchmarks import registry as R
    S = 130
    q, k, v = contiguous_qkv(S, 4, 2, 64, DTYPES[0], device)
    with pytest.raises(RuntimeError, match="TMA unavailable"):
        C.bs(R.CASE_BY_NAME["bs-top100+tma@s1"], q, k.transpose(1, 2).contiguous().transpose(1, 2), v, S)
    wrong = lambda *a, **kw: streaming_attention_fwd(*a, **kw) + (1.0 if kw.get("tma") else 0.0)  # noqa: E731
    monkeypatch.setattr(streaming, "streaming_attention_fwd", wrong)
    with pytest.raises(RuntimeError, match="differs"):
        C.ashape(R.CASE_BY_NAME["ashape-128+4096+tma@s2"], q, k, v, S)
