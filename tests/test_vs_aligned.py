"""Aligned vertical-slash tiles (build_vertical_slash_index(aligned=True), docs/DESIGN.md "Vertical-slash, aligned")
against naive.vertical_slash_aligned_mask: index builder on hand-made offsets and on random sets (every key once,
a superset of the block-rounded keys), kernel vs the fp32 reference. Helpers, tolerances, NaN-poisoned buffers and
the TRITON_INTERPRET set-up come from test_kernels_triton (imported first, so the interpreter is set up)."""
import pytest
import torch

from test_kernels_triton import (B, CUDA, DTYPES, check, device, implied_keys, nan_out,  # noqa: F401 (fixtures)
                                 offset_index_sets, qkv, rand_index, seed)

from minference_compile.triton_kernels import naive
from minference_compile.triton_kernels.vertical_slash import vertical_slash_attention_fwd
from minference_compile.triton_kernels.vertical_slash_index import aligned_offsets, build_vertical_slash_index

PAD = -(2**30)
GPU = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs CUDA")]


def one_head(slash, S, q_len=None, pair=False, vertical=(-1,)):
    idx = build_vertical_slash_index(torch.tensor([[list(vertical)]]), torch.tensor([[list(slash)]]), S, pair=pair,
                                     q_len=q_len, aligned=True)
    return type(idx)(*(t[0, 0] for t in idx))


def tiles(t):
    n = int(t.tile_count)
    return t.tile_offset[:n].tolist(), t.tile_lo[:n].tolist()


# ----------------------------------------------------------------------------------------------------
# index builder, hand-made offsets


def test_aligned_offsets_definition():
    # 0 and multiples of 64: one tile; others straddle two; outside [0, S) and -1: none
    d = aligned_offsets(torch.tensor([[[0, 5, 63, 64, 65, 299, 300, -1]]]), 300)[0, 0].tolist()
    assert d[:8] == [0, 0, 0, 64, 64, 256, -1, -1]
    assert d[8:] == [-1, 64, 64, -1, 128, 320, -1, -1]


def test_aligned_index_one_run():
    # 0 -> {0}; 5 -> {0, 64}; 64 -> {64}; 70 -> {64, 128}; 130 -> {128, 192}; 200 -> {192, 256}; 299 -> {256, 320}:
    # one run of six whole tiles, its end (tile_lo) at offset 0, no masking inside
    t = one_head([0, 5, 64, 70, 130, 299, 200, -1, 70], 300)
    assert tiles(t) == ([320, 256, 192, 128, 64, 0], [0] * 6)
    assert t.tile_offset.shape[-1] == 18 and (t.tile_offset[6:] == PAD).all()  # 2 NS slots
    assert t.tile_begin.tolist() == [5, 4, 3, 2, 1]  # block m0 = 64 qb runs tiles with d < m0 + 64
    assert t.tile_prefix.tolist() == [0, 1, 2, 3, 4, 5, 6]  # slots t = d / 64 < 300 // 64 + 2 = 6
    assert t.slash_prefix.numel() == 0 and int(t.wide_count) == 0


def test_aligned_index_separate_runs():
    # 1 -> {0, 64}, 200 -> {192, 256}: two runs (gap 128), each cut at its own end; 128 alone -> {128} once
    t = one_head([200, 1], 300)
    assert tiles(t) == ([256, 192, 64, 0], [192, 192, 0, 0])
    assert t.tile_begin.tolist() == [3, 2, 2, 1, 0]  # block 192 (qb 3) reaches tile 192, not 256
    assert t.tile_prefix.tolist() == [0, 1, 2, 2, 3, 4, 4]
    t = one_head([128, 128], 300)
    assert tiles(t) == ([128], [128])
    # pair=True: runs of whole tiles merged two by two (d = top, top - 128, ...), the odd last tile stays single
    t = one_head([0, 5, 64, 70, 130, 299, 200], 300, pair=True)
    assert int(t.wide_count) == 3 and t.wide_offset[:3].tolist() == [320, 192, 64] and int(t.tile_count) == 0
    t = one_head([1, 130], 300, pair=True)  # {0, 64} + {128, 192}: one run of 4 tiles, 2 wide
    assert t.wide_offset[:2].tolist() == [192, 64] and int(t.tile_count) == 0
    t = one_head([1, 64], 300, pair=True)  # {0, 64} + {64}: one wide tile
    assert t.wide_offset[:1].tolist() == [64] and int(t.wide_count) == 1 and int(t.tile_count) == 0
    t = one_head([0, 64, 128], 300, pair=True)  # three tiles: one wide (128, 64), the single 0
    assert t.wide_offset[:1].tolist() == [128] and tiles(t) == ([0], [0])


def test_aligned_offset_beyond_seq_len_and_query_offset():
    # S = 100, q_len = 30 (off = 70, block m0 = 70): s = 70 covers [0, 64); its tiles d = 64 -> keys [6, 70) and
    # d = 128 >= S -> keys [-58, 6): the tile beyond S still covers keys 0..5 of this block
    t = one_head([70], 100, q_len=30)
    assert tiles(t) == ([128, 64], [64, 64]) and t.tile_begin.tolist() == [0]
    m = naive.vertical_slash_aligned_mask(torch.full((1, 1, 1), -1), torch.tensor([[[70]]]), 100, q_len=30)[0, 0]
    assert m[:, :70].all() and not m[:, 70:].any()
    assert torch.equal(implied_keys(one_head_full([70], 100, 30), 100, 30)[0, 0] > 0, m)
    # tiles wholly at keys < 0 are skipped per block (d >= m0 + 64)
    t = one_head([250], 300)
    assert tiles(t) == ([256, 192], [192, 192]) and t.tile_begin.tolist() == [2, 2, 2, 1, 0]


def one_head_full(slash, S, q_len=None, vertical=(-1,)):
    return build_vertical_slash_index(torch.tensor([[list(vertical)]]), torch.tensor([[list(slash)]]), S, q_len=q_len,
                                      aligned=True)


def test_aligned_column_skip():
    # column 10 in block m0 = 64 sits in tile d = 64 (keys [0, 64)): listed by s = 100 ({64, 128}) -> skipped there,
    # and in block 128 (slot ceil(118 / 64) = 2: d = 128 listed); counted by the column in blocks 0, 192, 256
    idx = one_head_full([100], 300, vertical=(10, 299))
    cnt = implied_keys(idx, 300)[0, 0]
    assert cnt.max() == 1
    assert cnt[:64, 10].sum() == 54 and cnt[64:192, 10].sum() == 128  # rows 10..63 via the column, 64.. via tiles
    assert torch.equal(cnt > 0, naive.vertical_slash_aligned_mask(torch.tensor([[[10, 299]]]),
                                                                  torch.tensor([[[100]]]), 300)[0, 0])


# ----------------------------------------------------------------------------------------------------
# index builder, random sets: every key once, exactly the aligned mask, a superset of the block-rounded one


@pytest.mark.parametrize("pair", [False, True])
@pytest.mark.parametrize("Sq,S", [(1, 1), (63, 63), (65, 65), (300, 300), (1, 65), (63, 300), (65, 165), (65, 129),
                                  (200, 300)])
def test_aligned_index_matches_definition(Sq, S, pair):
    vert, slash = offset_index_sets(Sq, S, 3, "cpu")
    slash[0, 0, :4] = torch.tensor([0, 63, 64, 65])[:slash.shape[-1]]  # tile edges
    idx = build_vertical_slash_index(vert, slash, S, pair=pair, q_len=Sq, aligned=True)
    cnt = implied_keys(idx, S, Sq)
    assert cnt.max() <= 1, "a key is counted twice"
    mask = naive.vertical_slash_aligned_mask(vert, slash, S, q_len=Sq)
    assert torch.equal(cnt > 0, mask)
    rounded = naive.vertical_slash_mask(vert, slash, S, q_len=Sq)
    assert not (rounded & ~mask).any(), "aligned must keep every block-rounded pair"
    for d in (idx.tile_offset, idx.wide_offset):
        assert (d[d != PAD] % 64 == 0).all()
    assert idx.tile_prefix.shape[-1] == S // 64 + 3 and idx.slash_prefix.shape[-1] == 0


@pytest.mark.parametrize("S", [65, 300])
def test_aligned_equals_rounded_on_aligned_offsets(S):
    """Offsets that are multiples of 64 (and no others): both semantics and both indices' tiles coincide."""
    vert = rand_index(B, 3, 6, S, "cpu")
    slash = torch.randint(0, S // 64 + 1, (B, 3, 5)) * 64
    assert torch.equal(naive.vertical_slash_aligned_mask(vert, slash, S), naive.vertical_slash_mask(vert, slash, S))
    a, r = (build_vertical_slash_index(vert, slash, S, aligned=x) for x in (True, False))
    assert torch.equal(a.tile_count, r.tile_count) and torch.equal(a.tile_begin, r.tile_begin)


# ----------------------------------------------------------------------------------------------------
# kernel vs the aligned reference

SHAPES = [(1, 1, 2, 2, 64), (63, 63, 4, 1, 128), (65, 65, 7, 1, 64), (300, 300, 4, 1, 128), (200, 200, 2, 2, 96),
          (1, 65, 2, 2, 64), (63, 300, 7, 1, 64), (65, 165, 2, 2, 128), (65, 129, 4, 4, 64), (200, 300, 4, 1, 128)]
SHAPES += [pytest.param(*s, marks=GPU)
           for s in [(1000, 1000, 8, 2, 128), (777, 2000, 7, 1, 96), (1024, 4096, 4, 4, 64)]]


@pytest.mark.parametrize("pair", [False, True])
@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", SHAPES)
def test_vertical_slash_aligned(Sq, S, Hq, Hkv, D, pair, device):
    q, k, v = qkv(S, Hq, Hkv, D, DTYPES[0], device, q_len=Sq)
    vert, slash = offset_index_sets(Sq, S, Hq, device)
    slash[0, 0, :4] = torch.tensor([0, 63, 64, 65], device=device)[:slash.shape[-1]]
    idx = build_vertical_slash_index(vert, slash, S, pair=pair, q_len=Sq, aligned=True)
    ref = naive.vertical_slash_ref(q, k, v, vert, slash, aligned=True)
    check(vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q)), ref, DTYPES[0])


@pytest.mark.parametrize("dtype", [pytest.param(d, marks=GPU) for d in (torch.bfloat16, torch.float16)])
def test_vertical_slash_aligned_half(dtype, device):
    S, Hq = 2000, 8
    q, k, v = qkv(S, Hq, 2, 128, dtype, device)
    vert, slash = offset_index_sets(S, S, Hq, device)
    for pair in (False, True):
        idx = build_vertical_slash_index(vert, slash, S, pair=pair, aligned=True)
        check(vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q)),
              naive.vertical_slash_ref(q, k, v, vert, slash, aligned=True), dtype)


@pytest.mark.parametrize("block", [16, 32])
def test_vertical_slash_aligned_finer_blocks(block, device):
    # the granularity experiment's block sizes: tiles at multiples of `block`, tile_prefix in units of `block`
    S, Sq = 150, 107
    q, k, v = qkv(S, 2, 1, 64, DTYPES[0], device, q_len=Sq)
    vert, slash = rand_index(B, 2, 5, S, device), rand_index(B, 2, 9, S, device)
    idx = build_vertical_slash_index(vert, slash, S, block=block, q_len=Sq, aligned=True)
    out = vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q), block=block)
    check(out, naive.vertical_slash_ref(q, k, v, vert, slash, block=block, aligned=True), DTYPES[0])


def test_vertical_slash_aligned_head_mask(device):
    dtype, S, Hq = DTYPES[-1], 130, 4
    q, k, v = qkv(S, Hq, 2, 64, dtype, device, layout="bshd")
    vert, slash = rand_index(B, Hq, 5, S, device), rand_index(B, Hq, 5, S, device)
    hm = torch.tensor([True, False, False, True], device=device)
    idx = build_vertical_slash_index(vert, slash, S, aligned=True)
    out = vertical_slash_attention_fwd(q, k, v, idx, None, hm, nan_out(q))
    check(out, naive.vertical_slash_ref(q, k, v, vert, slash, aligned=True), dtype, hm)


# ----------------------------------------------------------------------------------------------------
# benchmark plumbing: the +aligned cases, the pair coverage and the CPU tile/step counts they report


def test_benchmark_aligned_cases_and_coverage():
    from benchmarks import coverage as cov
    from benchmarks.registry import parse_cases
    cases = parse_cases("vs-1000/6096+aligned,vs-100/800+aligned")
    assert [c.params["aligned"] for c in cases] == [True, True] and cases[1].params["ns"] == 800
    assert not parse_cases("vs-1000/6096")[0].params.get("aligned", False)
    # the pattern's exact pair share (no query offset): block-rounded coverage of the aligned tile offsets
    S = 300
    vert, slash = rand_index(B, 3, 6, S, "cpu"), rand_index(B, 3, 9, S, "cpu")
    slash[0, 0, :3] = torch.tensor([299, 250, 63])
    mask = naive.vertical_slash_aligned_mask(vert, slash, S)
    want = mask.sum((-1, -2)).double() / (S * (S + 1) / 2)
    assert torch.allclose(torch.from_numpy(cov.coverage(vert, aligned_offsets(slash, S), S)), want)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("pair", [False, True])
def test_benchmark_tile_steps(aligned, pair):
    """aligned_tiles._steps counts the slash loop steps and the masked-branch steps of _slash_tile exactly."""
    from benchmarks.aligned_tiles import _steps
    S = 700
    slash = rand_index(1, 4, 25, S, "cpu")
    slash[0, 1, 10:18] = torch.tensor([40, 60, 100, 150, 260, 300, 330, 390])
    idx = build_vertical_slash_index(torch.full((1, 4, 1), -1), slash, S, pair=pair, aligned=aligned)
    m0s = [64 * qb for qb in range(-(-S // 64))]
    for h in range(4):
        for off, lo, cnt, beg, width in ((idx.tile_offset, idx.tile_lo, idx.tile_count, idx.tile_begin, 64),
                                         (idx.wide_offset, idx.wide_lo, idx.wide_count, idx.wide_begin, 128)):
            steps = masked = 0
            for qb, m0 in enumerate(m0s):  # the kernel's loop and branch condition
                for t in range(int(beg[0, h, qb]), int(cnt[0, h])):
                    d, s_lo = int(off[0, h, t]), int(lo[0, h, t])
                    full = m0 - d >= 0 and d - width + 64 >= s_lo and d - width + 64 >= 63
                    steps, masked = steps + 1, masked + (not full)
            n = int(cnt[0, h])
            got = _steps(off[0, h].numpy().astype("int64"), lo[0, h].numpy().astype("int64"), n,
                         torch.tensor(m0s).numpy(), width)
            assert got == (steps, masked)


def test_aligned_chunk_rows_equal_unchunked(device):
    """off % 64 == 0: the chunk's query blocks are the unchunked ones, so with the same sets its aligned rows equal
    the unchunked aligned rows bit for bit."""
    S, c0 = 320, 128
    q, k, v = qkv(S, 4, 2, 64, DTYPES[0], device)
    vert, slash = offset_index_sets(S - c0, S, 4, device)
    full = vertical_slash_attention_fwd(q, k, v, build_vertical_slash_index(vert, slash, S, aligned=True), None,
                                        out=nan_out(q))
    qc = q[:, :, c0:]
    idx = build_vertical_slash_index(vert, slash, S, q_len=S - c0, aligned=True)
    assert torch.equal(vertical_slash_attention_fwd(qc, k, v, idx, None, out=nan_out(qc)), full[:, :, c0:])


def test_benchmark_vs_case_prepares_aligned_index():
    """The runner's set-up of the +aligned case (CPU tensors: nothing timed): an aligned index, its pair coverage
    and work share, no op timing (the op is block-rounded)."""
    from benchmarks import cases as C
    from benchmarks.registry import CASE_BY_NAME
    S = 2048
    q = k = v = torch.zeros(1, 2, S, 64)
    plain, al = (C.vs(CASE_BY_NAME[n], q, k, v, S) for n in ("vs-100/800", "vs-100/800+aligned"))
    assert plain.op_fn is not None and al.op_fn is None and "aligned" in al.note and "tile slots" in al.note
    assert al.coverage >= plain.coverage and 0 < al.tile_cov
