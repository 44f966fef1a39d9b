"""Triton kernels and index builders vs the full-mask references of triton_kernels/naive.py.

Without CUDA the kernels run on CPU under TRITON_INTERPRET=1 (fp32, small S: the interpreter is slow);
with CUDA they are compiled and also run bf16/fp16 and S = 1000. Tolerances: fp32 atol = rtol = 1e-4
(both sides accumulate in fp32, only the summation order differs); bf16 2e-2 and fp16 1e-2 (the kernel
rounds P to the input dtype before the PV product, the reference does not).
K/V (and Q) live inside NaN-filled buffers, so any unmasked read outside [0, S) x [0, D) poisons the output.
"""
import os
import sys
import zlib

import pytest
import torch

CUDA = torch.cuda.is_available()
# CI time: cases beyond one per behaviour are -m slow on a CPU machine (interpreted / emulated), always run on a GPU
SLOW_ON_CPU = [] if CUDA else [pytest.mark.slow]
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first `import triton`

import triton  # noqa: E402,F401


def _interpret_triton_stdlib():
    """If something (conftest -> torch._dynamo) imported triton before TRITON_INTERPRET was set, triton's own
    @jit helpers (tl.zeros, tl.max, ...) were built for compilation and fail inside interpreted kernels:
    rebuild them for the interpreter. No-op when triton was imported with the variable already set."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    done = {}
    for name, mod in list(sys.modules.items()):
        if not name.startswith("triton.language") or mod is None:
            continue
        for attr, obj in list(vars(mod).items()):
            if isinstance(obj, JITFunction):
                setattr(mod, attr, done.setdefault(id(obj), InterpretedFunction(obj.fn)))


if not CUDA:
    _interpret_triton_stdlib()

from minference_compile.triton_kernels import naive  # noqa: E402
from minference_compile.triton_kernels.block_sparse import block_sparse_attention_fwd  # noqa: E402
from minference_compile.triton_kernels.block_sparse_index import block_sparse_index  # noqa: E402
from minference_compile.triton_kernels.streaming import streaming_attention_fwd  # noqa: E402
from minference_compile.triton_kernels.vertical_slash import vertical_slash_attention_fwd  # noqa: E402
from minference_compile.triton_kernels.vertical_slash_index import (  # noqa: E402
    INT32_MAX, build_vertical_slash_index)

B = 2
DTYPES = [torch.bfloat16, torch.float16] if CUDA else [torch.float32]
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 1e-2}
# (S, Hq, Hkv, D): S around the 64-row block edges, GQA 1:1 / 4:1 / 7:1, D 64 / 96 (padded to 128) / 128
SHAPES = [(1, 2, 2, 64), (63, 4, 1, 96), (65, 7, 1, 64), (200, 2, 2, 128), (200, 4, 1, 96)]
if CUDA:
    SHAPES += [(1000, 8, 2, 128), (1000, 7, 1, 96), (1000, 4, 4, 64)]


@pytest.fixture
def device():
    return "cuda" if CUDA else "cpu"


@pytest.fixture(autouse=True)
def seed(request):
    torch.manual_seed(zlib.crc32(request.node.name.encode()))


def guarded(shape, dtype, device, layout="bhsd"):
    """randn tensor of `shape` [B,H,S,D] viewed inside a NaN buffer (64 rows and 32 dims of NaN around it)."""
    b, h, s, d = shape
    if layout == "bshd":  # transposed view: strides not of a contiguous [B,H,S,D]
        buf = torch.full((b, s + 128, h, d + 32), float("nan"), dtype=dtype, device=device)
        x = buf[:, 64:64 + s, :, :d].transpose(1, 2)
    else:
        buf = torch.full((b, h, s + 128, d + 32), float("nan"), dtype=dtype, device=device)
        x = buf[:, :, 64:64 + s, :d]
    x.copy_(torch.randn(shape, device=device).to(dtype))
    return x


def qkv(S, Hq, Hkv, D, dtype, device, layout="bhsd", q_len=None):
    """q [B,Hq,q_len (default S),D], k/v [B,Hkv,S,D] inside NaN buffers."""
    return (guarded((B, Hq, q_len or S, D), dtype, device, layout), guarded((B, Hkv, S, D), dtype, device, layout),
            guarded((B, Hkv, S, D), dtype, device, layout))


def nan_out(q):
    return torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)


def check(out, ref, dtype, head_mask=None):
    sel = slice(None) if head_mask is None else head_mask.to(out.device)
    assert not out[:, sel].isnan().any(), "computed heads left NaN"
    if head_mask is not None:
        assert out[:, ~head_mask.to(out.device)].isnan().all(), "masked-out heads were written"
    tol = TOL[dtype]
    torch.testing.assert_close(out[:, sel].float(), ref[:, sel].float(), atol=tol, rtol=tol)


def rand_index(B_, H, n, S, device, lo=-1):
    """Random ids in [lo, S + 70) with forced duplicates and -1 padding."""
    x = torch.randint(lo, S + 70, (B_, H, n), device=device)
    if n > 0:
        x[..., 0] = 0
    if n > 2:
        x[..., 1] = x[..., 2]  # duplicate
        x[..., -1] = -1
    return x


# ----------------------------------------------------------------------------------------------------
# vertical-slash index builder


def implied_keys(idx, S, q_len=None):
    """[B,H,Sq,S] int: how often each (row, j) is visited by the tiles + uncovered columns of the index (row r at
    position S - Sq + r). Aligned index (tile_prefix non-empty): a column is covered iff its 64-key tile slot
    ceil((m0 - c) / 64) is listed."""
    Bn, H = idx.tile_count.shape
    sq = S if q_len is None else q_len
    off = S - sq
    cnt = torch.zeros(Bn, H, sq, S, dtype=torch.int32)
    idx = type(idx)(*(t.cpu() for t in idx))
    aligned = idx.tile_prefix.shape[-1] > 0
    cols, ccnt, pref = idx.columns, idx.column_count, idx.tile_prefix if aligned else idx.slash_prefix
    lists = [(idx.tile_offset, idx.tile_lo, idx.tile_count, idx.tile_begin, 64),
             (idx.wide_offset, idx.wide_lo, idx.wide_count, idx.wide_begin, 128)]
    for b in range(Bn):
        for h in range(H):
            for qb in range(-(-sq // 64)):
                m0 = off + qb * 64
                rows = slice(qb * 64, min(sq, qb * 64 + 64))
                for toff, tlo, tcnt, tbeg, width in lists:
                    for t in range(int(tbeg[b, h, qb]), int(tcnt[b, h])):
                        d, slo = int(toff[b, h, t]), int(tlo[b, h, t])
                        js = [j for j in range(m0 - d, m0 - d + width) if 0 <= j < min(S, m0 - slo + 64)]
                        cnt[b, h, rows, js] += 1
                for c in cols[b, h, :int(ccnt[b, h, qb])].tolist():
                    if aligned:
                        lo = -((c - m0) // 64)
                        hi = lo + 1
                    else:
                        lo, hi = min(max(m0 - c, 0), S), min(max(m0 - c + 64, 0), S)
                    if int(pref[b, h, hi] - pref[b, h, lo]) == 0:
                        cnt[b, h, rows, c] += 1
    causal = torch.arange(S)[None, :] <= torch.arange(off, S)[:, None]
    return cnt * causal


@pytest.mark.parametrize("pair", [False, True])
@pytest.mark.parametrize("S,NV,NS", [(1, 3, 3), (63, 5, 4), (65, 6, 9), (200, 12, 10), (300, 0, 40), (700, 30, 25)])
def test_vs_index_matches_definition(S, NV, NS, pair):
    vert = rand_index(B, 3, NV, S, "cpu")
    slash = rand_index(B, 3, NS, S, "cpu")
    if NS > 8:  # dense runs of offsets: components that merge (gaps <= 64) and ones that do not
        slash[0, 0, 3:8] = torch.tensor([5, 69, 70, 134, 199])
    if NS > 20:  # a long component: 2 and 3 tiles (pair: one wide tile, one wide + one single)
        slash[1, 1, 10:18] = torch.tensor([40, 60, 100, 150, 260, 300, 330, 390])
    if NV > 3:  # columns on the last row of a block (only that row sees them)
        vert[0, 0, 1:3] = torch.tensor([63, 127])
    idx = build_vertical_slash_index(vert, slash, S, pair=pair)
    cnt = implied_keys(idx, S)
    assert cnt.max() <= 1, "a key is counted twice"
    assert torch.equal(cnt > 0, naive.vertical_slash_mask(vert, slash, S))
    if not pair:
        assert int(idx.wide_count.sum()) == 0
    elif NS > 20:
        assert int(idx.wide_count[1, 1]) > 0
    # layout: tiles descending, <= one tile per selected offset, columns sorted then INT32_MAX
    for b in range(B):
        for h in range(3):
            n = int(idx.tile_count[b, h])
            nw = int(idx.wide_count[b, h])
            uniq = {s for s in slash[b, h].tolist() if 0 <= s < S}
            assert n + nw <= len(uniq)
            assert (idx.tile_offset[b, h, :n].diff() < 0).all() and (idx.wide_offset[b, h, :nw].diff() < 0).all()
            tw = int(idx.wide_begin[b, h, -1])  # wide tiles of the last block: none entirely at keys < 0
            assert (idx.wide_offset[b, h, tw:nw] < 64 * (-(-S // 64)) + 64).all()
            c = idx.columns[b, h]
            nv = len({x for x in vert[b, h].tolist() if 0 <= x < S})
            assert c[:nv].tolist() == sorted({x for x in vert[b, h].tolist() if 0 <= x < S})
            assert (c[nv:] == INT32_MAX).all()
            assert int(idx.slash_prefix[b, h, -1]) == len(uniq)
            for qb in range(-(-S // 64)):  # tile_begin / column_count are exact (no dead tiles or columns)
                tb, m0 = int(idx.tile_begin[b, h, qb]), 64 * qb
                assert (idx.tile_offset[b, h, :tb] >= m0 + 64).all() and (idx.tile_offset[b, h, tb:n] < m0 + 64).all()
                assert int(idx.column_count[b, h, qb]) == int((c <= m0 + 63).sum())


@pytest.mark.parametrize("pair,aligned", [(False, False), (True, False), (False, True)])
def test_vs_work_share(pair, aligned):
    """work_share = the area of the tiles and column rows the kernel visits (masked parts included) / causal pairs;
    for the aligned index too (its tiles are the aligned ones, no wide tiles)."""
    from minference_compile.triton_kernels.vertical_slash_index import work_share
    S = 700
    vert, slash = rand_index(B, 3, 30, S, "cpu"), rand_index(B, 3, 25, S, "cpu")
    slash[1, 1, 10:18] = torch.tensor([40, 60, 100, 150, 260, 300, 330, 390])
    idx = build_vertical_slash_index(vert, slash, S, pair=pair, aligned=aligned)
    area = torch.zeros(B, 3)
    for b in range(B):
        for h in range(3):
            for qb in range(-(-S // 64)):
                area[b, h] += 64 * 64 * max(0, int(idx.tile_count[b, h]) - int(idx.tile_begin[b, h, qb]))
                area[b, h] += 64 * 128 * max(0, int(idx.wide_count[b, h]) - int(idx.wide_begin[b, h, qb]))
                area[b, h] += 64 * int(idx.column_count[b, h, qb])
    assert torch.allclose(work_share(idx, S), area / (S * (S + 1) / 2))
    assert (work_share(idx, S) >= naive.vertical_slash_mask(vert, slash, S).float().mean((-1, -2)) * 2 * S / (S + 1)).all()


@pytest.mark.parametrize("S", [64, 130])
@pytest.mark.parametrize("pair", [False, True])
def test_vs_index_covering(S, pair):
    """All diagonals selected: every causal pair, once."""
    slash = torch.arange(S).expand(1, 1, S)
    idx = build_vertical_slash_index(torch.full((1, 1, 1), -1), slash, S, pair=pair)
    cnt = implied_keys(idx, S)
    assert torch.equal(cnt, torch.ones(S, S, dtype=torch.int32).tril().expand(1, 1, S, S))


@pytest.mark.skipif(not CUDA, reason="host-sync check needs CUDA")
def test_vs_index_no_host_sync():
    vert = torch.randint(-1, 5000, (2, 8, 100), device="cuda")
    slash = torch.randint(-1, 5000, (2, 8, 60), device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        idx = build_vertical_slash_index(vert, slash, 4096)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    ref = build_vertical_slash_index(vert.cpu(), slash.cpu(), 4096)
    for a, r in zip(idx, ref):
        assert torch.equal(a.cpu(), r)


# ----------------------------------------------------------------------------------------------------
# vertical-slash attention


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S,Hq,Hkv,D", SHAPES)
@pytest.mark.parametrize("pair", [False, True])
def test_vertical_slash(S, Hq, Hkv, D, dtype, pair, device):
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device)
    vert = rand_index(B, Hq, 7, S, device)
    slash = rand_index(B, Hq, 6, S, device)
    if S > 64:  # runs of offsets: components of 2+ tiles (wide tiles, cut at the component end, + singles)
        runs = [torch.arange(0, S // 3, 20), S // 3 + 70 + torch.arange(0, 40, 15), S * 3 // 4 + torch.arange(0, S // 3, 50)]
        slash = torch.cat([slash, torch.cat(runs).to(device).expand(B, Hq, -1)], -1)
    idx = build_vertical_slash_index(vert, slash, S, pair=pair)
    out = vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q))
    check(out, naive.vertical_slash_ref(q, k, v, vert, slash), dtype)


@pytest.mark.parametrize("block", [16, 32])
@pytest.mark.parametrize("S,Hq,Hkv,D", [(63, 4, 1, 64), (150, 2, 2, 96)] + ([(1000, 8, 2, 128)] if CUDA else []))
def test_vertical_slash_finer_blocks(S, Hq, Hkv, D, block, device):
    # the slash-granularity experiment's kernels: same semantics with `block`-row query blocks
    dtype = DTYPES[0]
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device)
    vert = rand_index(B, Hq, 5, S, device)
    slash = rand_index(B, Hq, 9, S, device)
    idx = build_vertical_slash_index(vert, slash, S, block=block)
    out = vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q), block=block)
    check(out, naive.vertical_slash_ref(q, k, v, vert, slash, block=block), dtype)


@pytest.mark.parametrize("cover", ["columns", "diagonals"])
@pytest.mark.parametrize("S", [65, 150])
def test_vertical_slash_covering_is_dense(S, cover, device):
    dtype = DTYPES[0]
    q, k, v = qkv(S, 4, 2, 64, dtype, device)
    full = torch.arange(S, device=device).expand(B, 4, S)
    none = torch.full((B, 4, 2), -1, device=device)
    vert, slash = (full, none) if cover == "columns" else (none, full)
    for pair in (False, True):
        idx = build_vertical_slash_index(vert, slash, S, pair=pair)
        out = vertical_slash_attention_fwd(q, k, v, idx, 0.3, out=nan_out(q))
        check(out, naive.dense_causal_ref(q, k, v, 0.3), dtype)


def test_vertical_slash_head_mask_and_layout(device):
    dtype, S, Hq = DTYPES[-1], 130, 4
    q, k, v = qkv(S, Hq, 2, 64, dtype, device, layout="bshd")
    vert, slash = rand_index(B, Hq, 5, S, device), rand_index(B, Hq, 5, S, device)
    hm = torch.tensor([True, False, False, True], device=device)
    out = vertical_slash_attention_fwd(q, k, v, build_vertical_slash_index(vert, slash, S), None, hm, nan_out(q))
    check(out, naive.vertical_slash_ref(q, k, v, vert, slash), dtype, hm)


# ----------------------------------------------------------------------------------------------------
# streaming (A-shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S,Hq,Hkv,D", SHAPES)
def test_streaming(S, Hq, Hkv, D, dtype, device):
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device)
    # per head: no sink, no window, tiny and block-crossing values
    init = torch.tensor([0, 4, 70, 1, 33, 0, 9, 2], dtype=torch.int32)[:Hq].to(device)
    local = torch.tensor([1, 0, 100, 65, 7, 200, 64, 130], dtype=torch.int32)[:Hq].to(device)
    out = streaming_attention_fwd(q, k, v, init, local, None, out=nan_out(q))
    check(out, naive.streaming_ref(q, k, v, init, local), dtype)


@pytest.mark.parametrize("S,Hq,Hkv,D", [(65, 7, 1, 64), (200, 4, 1, 96), (300, 2, 2, 128)]
                         + ([(1000, 8, 2, 128)] if CUDA else []))
def test_streaming_128_key_tiles(S, Hq, Hkv, D, device, monkeypatch):
    """The A-shape kernel with 128-key tiles (a tuning option): same edges, sinks and windows."""
    from minference_compile.triton_kernels import streaming
    monkeypatch.setattr(streaming, "_BLOCK_N", {64: 128, 128: 128})
    dtype = DTYPES[0]
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device)
    init = torch.tensor([0, 4, 130, 1, 33, 0, 9, 2], dtype=torch.int32)[:Hq].to(device)
    local = torch.tensor([1, 0, 100, 129, 7, 200, 64, 300], dtype=torch.int32)[:Hq].to(device)
    out = streaming_attention_fwd(q, k, v, init, local, None, out=nan_out(q))
    check(out, naive.streaming_ref(q, k, v, init, local), dtype)


@pytest.mark.parametrize("init,local", [(200, 1), (0, 200), (1 << 30, 0)])
def test_streaming_covering_is_dense(init, local, device):
    dtype, S = DTYPES[0], 200
    q, k, v = qkv(S, 2, 1, 64, dtype, device)
    t = lambda x: torch.full((2,), x, dtype=torch.int32, device=device)  # noqa: E731
    out = streaming_attention_fwd(q, k, v, t(init), t(local), 0.2, out=nan_out(q))
    check(out, naive.dense_causal_ref(q, k, v, 0.2), dtype)


def test_streaming_head_mask_and_layout(device):
    dtype, S, Hq = DTYPES[-1], 150, 3
    q, k, v = qkv(S, Hq, 1, 96, dtype, device, layout="bshd")
    init = torch.tensor([4, 0, 8], dtype=torch.int32, device=device)
    local = torch.tensor([64, 30, 100], dtype=torch.int32, device=device)
    hm = torch.tensor([False, True, True], device=device)
    out = streaming_attention_fwd(q, k, v, init, local, None, hm, nan_out(q))
    check(out, naive.streaming_ref(q, k, v, init, local), dtype, hm)


# ----------------------------------------------------------------------------------------------------
# block-sparse index and attention


def check_selection(idx, scores, topk, rtol=1e-3, q_len=None, kv_len=None):
    """idx is a valid top-k: ascending unique causal ids, the diagonal blocks lo..hi kept, count
    naive.block_sparse_count (min(topk, qb + 1) without an offset), and no unselected causal block scores above a
    selected one (beyond rounding)."""
    idx, scores = idx.cpu(), scores
    Bn, H, n, _ = idx.shape
    tk = topk.tolist() if isinstance(topk, torch.Tensor) else [topk] * H
    sq = q_len or n * 64
    skv = kv_len or sq
    for b in range(Bn):
        for h in range(H):
            for qb in range(n):
                lo, hi = naive.diagonal_blocks(qb, sq, skv) if q_len else (qb, qb)
                diag = set(range(lo, hi + 1))
                row = idx[b, h, qb].tolist()
                sel = [x for x in row if x >= 0]
                want = naive.block_sparse_count(tk[h], lo, hi)
                assert row == sel + [-1] * (len(row) - len(sel)) and sel == sorted(set(sel))
                assert len(sel) == want and (want == 0 or diag <= set(sel)) and all(x <= hi for x in sel)
                rest = [float(scores[b, h, qb, x]) for x in range(lo) if x not in sel]
                chosen = [float(scores[b, h, qb, x]) for x in sel if x not in diag]
                if rest and chosen:
                    assert min(chosen) >= max(rest) - rtol * (1 + abs(max(rest)))


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("topk", [1, 2, 5, 100, "per_head"])
@pytest.mark.parametrize("S,Hq,Hkv", [(1, 2, 1), (63, 2, 2), (65, 4, 4), (200, 4, 1), (700, 7, 1)])
def test_block_sparse_index(S, Hq, Hkv, topk, impl, device):
    if topk == "per_head":
        topk = torch.tensor([0, 1, 2, 5, 3, 100, 2][:Hq], dtype=torch.int32, device=device)
    # offsets: means of q/k are not ~0; k's alternate in sign over D, so scores take both signs
    q = torch.randn(B, Hq, S, 32, device=device) + 0.5
    k = torch.randn(B, Hkv, S, 32, device=device) + 0.5 * (1 - 2 * (torch.arange(32, device=device) % 2))
    idx = block_sparse_index(q, k, topk, impl=impl)
    n = -(-S // 64)
    kmax = int(topk.max()) if isinstance(topk, torch.Tensor) else topk
    assert idx.shape == (B, Hq, n, max(1, min(kmax, n))) and idx.dtype == torch.int32
    check_selection(idx, naive.block_scores_ref(q, k), topk.cpu() if isinstance(topk, torch.Tensor) else topk)
    if not CUDA:  # same fp32 arithmetic on CPU: the exact reference must agree (ties: see the test below)
        assert torch.equal(idx, naive.block_sparse_index_ref(q, k, topk))


@pytest.mark.parametrize("topk", [2, 4, 100, "per_head"])
def test_block_sparse_index_ties(topk, device):
    """Exactly equal scores: the Triton path keeps the lowest kb among equals, which is the reference's stable
    sort. Small-integer rows constant per block and a 32-row last block keep every mean and score exact in fp32
    on any device; key blocks repeat 3 patterns, so most candidates tie."""
    S, Hq, Hkv, D = 672, 4, 2, 16
    n = -(-S // 64)
    if topk == "per_head":
        topk = torch.tensor([0, 3, 5, 100], dtype=torch.int32, device=device)
    kpat = torch.randint(-2, 3, (B, Hkv, 3, D)).float()
    k = kpat[:, :, torch.arange(n) % 3].repeat_interleave(64, 2)[:, :, :S].to(device)
    qm = torch.randint(-2, 3, (B, Hq, n, D)).float()
    qm[:, :, 3] = 0  # row 3: all candidates score 0
    q = qm.repeat_interleave(64, 2)[:, :, :S].to(device)
    idx = block_sparse_index(q, k, topk, impl="triton")
    check_selection(idx, naive.block_scores_ref(q, k), topk.cpu() if isinstance(topk, torch.Tensor) else topk)
    assert torch.equal(idx, naive.block_sparse_index_ref(q, k, topk))


@pytest.mark.skipif(not CUDA, reason="half-precision score GEMM runs on CUDA only")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_block_sparse_index_half_scores(dtype):
    """bf16/fp16 q, k: scores from half-rounded means (tensor cores). A valid top-k of the fp32 scores up to that
    rounding (~2^-8 relative), the layout exact."""
    q = (torch.randn(B, 8, 3000, 128, device="cuda") + 0.5).to(dtype)
    k = (torch.randn(B, 2, 3000, 128, device="cuda") + 0.5 * (1 - 2 * (torch.arange(128, device="cuda") % 2))).to(dtype)
    idx = block_sparse_index(q, k, 7)
    ref = naive.block_scores_ref(q.float(), k.float())
    check_selection(idx, ref, 7, rtol=2e-2)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_block_sparse_index_chunked(impl, device, monkeypatch):
    """A tiny chunk budget (one query block per chunk; Triton: one row per program) gives the same index."""
    from minference_compile.triton_kernels import block_sparse_index as mod
    q, k = torch.randn(1, 2, 400, 16, device=device), torch.randn(1, 1, 400, 16, device=device)
    full = block_sparse_index(q, k, 3, impl=impl)
    monkeypatch.setattr(mod, "_SCORE_BYTES", 1)
    monkeypatch.setattr(mod, "_SELECT_LANES", 1)
    assert torch.equal(mod.block_sparse_index(q, k, 3, impl=impl), full)
    if not CUDA:
        assert torch.equal(full, naive.block_sparse_index_ref(q, k, 3))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S,Hq,Hkv,D", SHAPES)
def test_block_sparse(S, Hq, Hkv, D, dtype, device):
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device)
    idx = block_sparse_index(q, k, 2)
    ref = naive.block_sparse_ref(q, k, v, idx)
    out = block_sparse_attention_fwd(q, k, v, idx, None, out=nan_out(q))
    check(out, ref, dtype)
    # the op path passes block_sparse_index's output as already compact (no clean-up sort)
    out = block_sparse_attention_fwd(q, k, v, idx, None, out=nan_out(q), compact=True)
    check(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S,Hq,Hkv,D", SHAPES)
def test_block_sparse_rows_of_1_to_5_blocks(S, Hq, Hkv, D, dtype, device):
    """Rows with 1..5 listed blocks (per-head topk): the unmasked off-diagonal steps and the diagonal."""
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device)
    idx = block_sparse_index(q, k, torch.tensor([5, 4, 3, 2, 1, 5, 4, 3][:Hq], device=device))
    out = block_sparse_attention_fwd(q, k, v, idx, None, out=nan_out(q), compact=True)
    check(out, naive.block_sparse_ref(q, k, v, idx), dtype)


def test_block_sparse_messy_index(device):
    """-1 anywhere, duplicates, non-causal and out-of-range block ids select nothing."""
    dtype, S, Hq = DTYPES[0], 200, 2
    q, k, v = qkv(S, Hq, 1, 64, dtype, device)
    idx = torch.randint(-1, 6, (B, Hq, 4, 5), dtype=torch.int32, device=device)
    idx[..., 0] = idx[..., 1]
    out = block_sparse_attention_fwd(q, k, v, idx, None, out=nan_out(q))
    check(out, naive.block_sparse_ref(q, k, v, idx), dtype)


def test_block_sparse_covering_and_head_mask(device):
    dtype, S, Hq = DTYPES[-1], 190, 3
    q, k, v = qkv(S, Hq, 1, 128, dtype, device, layout="bshd")
    idx = torch.arange(3, device=device).expand(B, Hq, 3, 3).contiguous()
    hm = torch.tensor([True, False, True], device=device)
    out = block_sparse_attention_fwd(q, k, v, idx, 0.25, hm, nan_out(q))
    check(out, naive.dense_causal_ref(q, k, v, 0.25), dtype, hm)


# ----------------------------------------------------------------------------------------------------
# query offset: q holds the last Sq of S positions (chunked pre-fill), docs/DESIGN.md "Query offset"

# (Sq, S, Hq, Hkv, D): Sq in {1, 63, 65, 200}, S in {Sq, Sq + 64, Sq + 100, ~300}; offsets aligned and not
OFFSET_SHAPES = [(1, 65, 2, 2, 64), (1, 300, 4, 1, 96), (63, 127, 4, 1, 128), (63, 300, 7, 1, 64),
                 (65, 165, 2, 2, 96), (65, 129, 4, 4, 128), (200, 264, 4, 1, 64), (200, 300, 7, 1, 128)]
if CUDA:
    OFFSET_SHAPES += [(1000, 3000, 8, 2, 128), (777, 2000, 7, 1, 96), (1024, 4096, 4, 4, 64)]


def offset_index_sets(Sq, S, Hq, device):
    vert = rand_index(B, Hq, 7, S, device)
    slash = rand_index(B, Hq, 6, S, device)
    runs = [torch.arange(0, S // 3, 20), S // 3 + 70 + torch.arange(0, 40, 15),
            S * 3 // 4 + torch.arange(0, S // 3, 50)]
    slash = torch.cat([slash, torch.cat(runs).to(device).expand(B, Hq, -1)], -1)
    vert[..., 1] = S - Sq - 1  # the last key before the chunk, and keys inside it
    vert[..., 2] = S - 1
    return vert, slash


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", OFFSET_SHAPES)
def test_vs_index_offset_matches_definition(Sq, S, Hq, Hkv, D):
    vert, slash = offset_index_sets(Sq, S, 3, "cpu")
    for pair in (False, True):
        idx = build_vertical_slash_index(vert, slash, S, pair=pair, q_len=Sq)
        assert idx.tile_begin.shape[-1] == -(-Sq // 64) and idx.slash_prefix.shape[-1] == S + 1
        cnt = implied_keys(idx, S, Sq)
        assert cnt.max() <= 1, "a key is counted twice"
        assert torch.equal(cnt > 0, naive.vertical_slash_mask(vert, slash, S, q_len=Sq))


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", OFFSET_SHAPES)
def test_vertical_slash_offset(Sq, S, Hq, Hkv, D, device):
    dtype = DTYPES[0]
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device, q_len=Sq)
    vert, slash = offset_index_sets(Sq, S, Hq, device)
    ref = naive.vertical_slash_ref(q, k, v, vert, slash)
    for pair in (False, True):
        idx = build_vertical_slash_index(vert, slash, S, pair=pair, q_len=Sq)
        check(vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q)), ref, dtype)


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", OFFSET_SHAPES)
def test_streaming_offset(Sq, S, Hq, Hkv, D, device):
    dtype = DTYPES[0]
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device, q_len=Sq)
    init = torch.tensor([0, 4, 70, 1, 33, 0, 9, 2], dtype=torch.int32)[:Hq].to(device)
    local = torch.tensor([1, 0, 100, 65, 7, 200, 64, 130], dtype=torch.int32)[:Hq].to(device)
    out = streaming_attention_fwd(q, k, v, init, local, None, out=nan_out(q))
    check(out, naive.streaming_ref(q, k, v, init, local), dtype)


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", OFFSET_SHAPES)
def test_block_sparse_index_offset(Sq, S, Hq, Hkv, D, impl, device):
    q = torch.randn(B, Hq, Sq, 32, device=device) + 0.5
    k = torch.randn(B, Hkv, S, 32, device=device) + 0.5 * (1 - 2 * (torch.arange(32, device=device) % 2))
    sc = naive.block_scores_ref(q, k)
    for topk in (1, 3, torch.tensor([0, 1, 2, 5, 3, 100, 2, 4][:Hq], dtype=torch.int32, device=device)):
        idx = block_sparse_index(q, k, topk, impl=impl)
        check_selection(idx, sc, topk.cpu() if isinstance(topk, torch.Tensor) else topk, q_len=Sq, kv_len=S)
        if not CUDA:
            assert torch.equal(idx, naive.block_sparse_index_ref(q, k, topk))


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", OFFSET_SHAPES)
def test_block_sparse_offset(Sq, S, Hq, Hkv, D, device):
    dtype = DTYPES[0]
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device, q_len=Sq)
    idx = block_sparse_index(q, k, torch.tensor([5, 1, 3, 2, 1, 5, 4, 3][:Hq], device=device))
    ref = naive.block_sparse_ref(q, k, v, idx)
    check(block_sparse_attention_fwd(q, k, v, idx, None, out=nan_out(q), compact=True), ref, dtype)
    check(block_sparse_attention_fwd(q, k, v, idx, None, out=nan_out(q)), ref, dtype)
    # messy ids: -1, duplicates, non-causal, out of range; rows without their diagonal blocks
    messy = torch.randint(-1, -(-S // 64) + 2, (B, Hq, -(-Sq // 64), 4), dtype=torch.int32, device=device)
    check(block_sparse_attention_fwd(q, k, v, messy, None, out=nan_out(q)), naive.block_sparse_ref(q, k, v, messy),
          dtype)


@pytest.mark.parametrize("S,c0", [(320, 128)] + ([(2048, 1024), (3000, 1280)] if CUDA else []))
def test_chunked_rows_equal_unchunked(S, c0, device):
    """Chunk boundary a multiple of 128 (the A-shape kernel's row tile on GPU): with the SAME index sets the chunk's
    rows equal the unchunked rows bit for bit (same tiles, same order)."""
    dtype = DTYPES[0]
    Hq, Hkv, D = 4, 2, 64
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device)
    qc = q[:, :, c0:]
    init = torch.tensor([4, 0, 64, 1], dtype=torch.int32, device=device)
    local = torch.tensor([64, 100, 1, 129], dtype=torch.int32, device=device)
    full = streaming_attention_fwd(q, k, v, init, local, None, out=nan_out(q))
    assert torch.equal(streaming_attention_fwd(qc, k, v, init, local, None, out=nan_out(qc)), full[:, :, c0:])
    vert, slash = offset_index_sets(S - c0, S, Hq, device)
    full = vertical_slash_attention_fwd(q, k, v, build_vertical_slash_index(vert, slash, S), None, out=nan_out(q))
    chunk = vertical_slash_attention_fwd(qc, k, v, build_vertical_slash_index(vert, slash, S, q_len=S - c0), None,
                                         out=nan_out(qc))
    assert torch.equal(chunk, full[:, :, c0:])
    bi = block_sparse_index(q, k, 3)
    full = block_sparse_attention_fwd(q, k, v, bi, None, out=nan_out(q), compact=True)
    chunk = block_sparse_attention_fwd(qc, k, v, bi[:, :, c0 // 64:], None, out=nan_out(qc), compact=True)
    assert torch.equal(chunk, full[:, :, c0:])
    # the chunk's own selection: same scores of the same 64-row means, so the same ids (CPU: exact fp32 path)
    if not CUDA:
        assert torch.equal(block_sparse_index(qc, k, 3), bi[:, :, c0 // 64:])


# ---- every registered pattern's kernel path (minference_compile/patterns/), as sparse_prefill runs it on CUDA ----

@pytest.mark.parametrize("name", ["dense", "vertical_and_slash", "stream_llm", "block_sparse",
                                  "vertical_and_slash_adaptive", "block_sparse_adaptive", "block_sparse_antidiag",
                                  "block_sparse_128", "block_sparse_meanq", "block_sparse_meanq_adaptive"])
@pytest.mark.parametrize("S,Hq,Hkv,D", [(65, 4, 2, 64)] + ([(1000, 8, 2, 128)] if CUDA else []))
def test_registry_kernel_path(name, S, Hq, Hkv, D, device):
    """select (index build) + attend_cuda of each pattern against its naive reference; heads of other patterns
    (head_mask) stay NaN."""
    from minference_compile.patterns import REGISTRY, HeadGroup
    from test_patterns import SPECS

    assert set(SPECS) == set(REGISTRY)  # the parametrization above lists every registered pattern
    cls, dtype = REGISTRY[name], DTYPES[0]
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device)
    a, b = SPECS[name]
    specs = tuple(([a, None, b, None] * Hq)[:Hq])
    group = HeadGroup(q, k, v, D ** -0.5, 64, specs)
    hm = torch.tensor([s is not None for s in specs], device=device)
    selection = cls.select(group)
    out = cls.attend_cuda(group, selection, hm, nan_out(q))
    check(out, cls.reference(group, selection), dtype, hm)


@pytest.mark.parametrize("S,q_len,which", [(65, None, [1, 0, 1, 0, 0, 1, 1, 0]), (1000, 337, [0, 1, 1, 0, 1, 0, 0, 1]),
                                         (63, 1, [1, 1, 1, 1, 0, 0, 0, 0]), (300, None, [1] * 8),
                                         (130, None, [0, 0, 1, 1, 1, 1, 0, 0])])  # a run across two kv groups
def test_dense_heads_sdpa_per_kv_head(S, q_len, which, device):
    """The dense heads of a mixed layer (ops/dense.dense_heads: one SDPA per kv head, heads not contiguous within
    a group, a pre-fill chunk, all heads) equal the naive causal reference; the other heads stay NaN."""
    from minference_compile.ops.dense import dense_heads
    dtype, D = DTYPES[0], 96
    q, k, v = qkv(S, 8, 2, D, dtype, device, q_len=q_len)
    hm = torch.tensor([bool(w) for w in which], device=device)
    out = dense_heads(q, k, v, D ** -0.5, [bool(w) for w in which], nan_out(q))
    ref = naive.dense_causal_ref(q, k, v, D ** -0.5)
    check(out, ref, dtype, None if all(which) else hm)
    if all(which):  # no buffer given (a layer of dense heads only): dense_attention's own output
        check(dense_heads(q, k, v, D ** -0.5, [True] * 8), ref, dtype)


def test_block_sparse_rejects_an_index_of_the_wrong_shape():
    # a head dim of 1 (broadcast-style) used to be read out of bounds by the kernel
    q, k = torch.randn(1, 4, 130, 64), torch.randn(1, 2, 130, 64)
    good = torch.zeros(1, 4, 3, 2, dtype=torch.int32)
    for bad in (good[:, :1], good[:, :, :2], good[0]):
        with pytest.raises(ValueError, match="block_index must be"):
            block_sparse_attention_fwd(q, k, k, bad)
