"""128-row vertical-slash programs (vertical_slash_attention_fwd(rows=128), MINFERENCE_VS_ROWS=128; row_pair_tiles):
the same pairs as the per-block kernel. The tiles' implied keys against naive.vertical_slash_mask (every key once),
the kernel against naive.vertical_slash_ref (block-rounded and aligned) with odd lengths (NQB odd: the last program
holds one block), GQA, head dims 64/96/128, batch 2, query offsets, head masks, TMA slash tiles; NaN-poisoned
buffers and outputs. Helpers and the TRITON_INTERPRET set-up come from test_kernels_triton (imported first)."""
import pytest
import torch

from test_kernels_triton import (B, CUDA, DTYPES, check, device, nan_out, offset_index_sets, qkv,  # noqa: F401
                                 rand_index, seed)

from minference_compile.triton_kernels import _common, naive, vertical_slash_rows128
from minference_compile.triton_kernels.vertical_slash import vertical_slash_attention_fwd
from minference_compile.triton_kernels.vertical_slash_index import (RowPairTiles, build_vertical_slash_index,
                                                                    row_pair_tiles, row_pair_work_share, work_share)

GPU = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs CUDA")]


def implied_keys_rows128(tiles: RowPairTiles, S, q_len=None):
    """[B,H,Sq,S] int: how often the 128-row programs visit each (row, key): slash tiles with each 64-row half's
    own range (mb - s_hi <= j < mb - s_lo + 64 at its block start mb), then the columns of the last half's block,
    each half skipping those its slash ranges cover (slash_prefix, or tile_prefix for an aligned index)."""
    idx = type(tiles.index)(*(t.cpu() for t in tiles.index))
    t = RowPairTiles(idx, *(x.cpu() for x in tiles[1:]))
    Bn, H = t.tile_count.shape
    sq = S if q_len is None else q_len
    off, nqb = S - sq, -(-sq // 64)
    aligned = idx.tile_prefix.shape[-1] > 0
    pref = idx.tile_prefix if aligned else idx.slash_prefix
    cnt = torch.zeros(Bn, H, sq, S, dtype=torch.int32)
    for b in range(Bn):
        for h in range(H):
            for p in range(-(-nqb // 2)):
                halves = [qb for qb in (2 * p, 2 * p + 1) if qb < nqb]
                for tt in range(int(t.tile_begin[b, h, p]), int(t.tile_count[b, h])):
                    d, lo, hi = (int(x[b, h, tt]) for x in (t.tile_offset, t.tile_lo, t.tile_hi))
                    for qb in halves:
                        mb, n0 = off + 64 * qb, off + 128 * p - d
                        js = [j for j in range(n0, n0 + 64) if max(0, mb - hi) <= j < min(S, mb - lo + 64)]
                        cnt[b, h, 64 * qb:64 * qb + 64, js] += 1
                for c in idx.columns[b, h, :int(idx.column_count[b, h, halves[-1]])].tolist():
                    for qb in halves:
                        mb = off + 64 * qb
                        if aligned:
                            lo = -((c - mb) // 64) if c <= mb + 63 else 0
                            hi = lo + 1
                        else:
                            lo, hi = min(max(mb - c, 0), S), min(max(mb - c + 64, 0), S)
                        if int(pref[b, h, hi] - pref[b, h, lo]) == 0:
                            cnt[b, h, 64 * qb:64 * qb + 64, c] += 1
    causal = torch.arange(S)[None, :] <= torch.arange(off, S)[:, None]
    return cnt * causal


def one_head(slash, S, pair=False):
    idx = build_vertical_slash_index(torch.full((1, 1, 1), -1), torch.tensor([[list(slash)]]), S, pair=pair)
    t = row_pair_tiles(idx, S)
    n = int(t.tile_count)
    return [x[0, 0, :n].tolist() for x in (t.tile_offset, t.tile_lo, t.tile_hi)], t.tile_begin[0, 0].tolist()


# ----------------------------------------------------------------------------------------------------
# row_pair_tiles


@pytest.mark.parametrize("pair", [False, True])
def test_row_pair_tiles_hand_made(pair):
    # components {300}, {200}, {0, 5, 64} (s_hi 64, s_lo 0: tiles 64, 0 per block): each gets one tile more
    # (236, 136, -64), the second block's; wide tiles (pair=True) are split back into 64-key tiles
    (off, lo, hi), begin = one_head([0, 5, 64, 200, 300, -1, 5000], 400, pair)
    assert off == [300, 236, 200, 136, 64, 0, -64]
    assert lo == [300, 300, 200, 200, 0, 0, 0] and hi == [300, 300, 200, 200, 64, 64, 64]
    assert begin == [5, 3, 0, 0]  # program p (m0 = 128 p) runs the tiles with d < m0 + 64


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("pair", [False, True])
@pytest.mark.parametrize("Sq,S", [(1, 1), (63, 63), (65, 65), (130, 130), (200, 200), (1, 300), (63, 127),
                                  (65, 165), (130, 300), (200, 264)])
def test_row_pair_tiles_visit_every_selected_key_once(Sq, S, pair, aligned):
    vert, slash = offset_index_sets(Sq, S, 3, "cpu")
    idx = build_vertical_slash_index(vert, slash, S, pair=pair, q_len=Sq, aligned=aligned)
    cnt = implied_keys_rows128(row_pair_tiles(idx, S, Sq), S, Sq)
    assert cnt.max() <= 1, "a key is counted twice"
    build = naive.vertical_slash_aligned_mask if aligned else naive.vertical_slash_mask
    assert torch.equal(cnt > 0, build(vert, slash, S, q_len=Sq))


def test_row_pair_work_share():
    # computed pairs: at least the selection, at least the per-block kernel's tiles minus the lone block's rows
    S = 700
    vert, slash = rand_index(B, 3, 9, S, "cpu"), rand_index(B, 3, 40, S, "cpu")
    idx = build_vertical_slash_index(vert, slash, S)
    w = row_pair_work_share(row_pair_tiles(idx, S), S)
    sel = naive.vertical_slash_mask(vert, slash, S).float().sum((-1, -2)) / (S * (S + 1) / 2)
    assert (w >= sel).all() and (w >= work_share(idx, S) * 0.9).all() and (w <= 2 * work_share(idx, S) + 0.2).all()


# ----------------------------------------------------------------------------------------------------
# kernel

# (Sq, S, Hq, Hkv, D): NQB 1 (1, 63), 2 (65, 128), 3 (130: the last program has one block), 4 (200); GQA 1, 4, 7;
# query offsets aligned to 64 and not
SHAPES = [(1, 1, 2, 2, 64), (63, 63, 4, 1, 96), (65, 65, 7, 1, 64), (130, 130, 4, 2, 128), (200, 200, 2, 2, 96),
          (1, 65, 2, 2, 64), (63, 300, 7, 1, 64), (65, 165, 2, 2, 128), (130, 194, 4, 1, 96), (200, 300, 4, 1, 128)]
SHAPES += [pytest.param(*s, marks=GPU) for s in [(1000, 1000, 8, 2, 128), (777, 2000, 7, 1, 96),
                                                  (1024, 4096, 4, 4, 64), (1000, 1000, 4, 4, 64)]]


@pytest.mark.parametrize("pair", [False, True])
@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", SHAPES)
def test_vertical_slash_rows128(Sq, S, Hq, Hkv, D, pair, device):
    dtype = DTYPES[0]
    q, k, v = qkv(S, Hq, Hkv, D, dtype, device, q_len=Sq)
    vert, slash = offset_index_sets(Sq, S, Hq, device)
    idx = build_vertical_slash_index(vert, slash, S, pair=pair, q_len=Sq)
    out = vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q), rows=128)
    check(out, naive.vertical_slash_ref(q, k, v, vert, slash), dtype)


@pytest.mark.parametrize("Sq,S", [(130, 130), (200, 200), (100, 290)])
def test_vertical_slash_rows128_columns_inside_the_blocks(Sq, S, device):
    # no offset near 0 (rand_index always selects 0, whose range is the diagonal block): the columns inside each
    # program's two blocks, and the second half's own coverage check, decide those keys
    Hq = 3
    q, k, v = qkv(S, Hq, 1, 64, DTYPES[0], device, q_len=Sq)
    vert = torch.randint(S - Sq, S, (B, Hq, 24), device=device)
    slash = torch.randint(70, S, (B, Hq, 6), device=device)
    for pair in (False, True):
        idx = build_vertical_slash_index(vert, slash, S, pair=pair, q_len=Sq)
        check(vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q), rows=128),
              naive.vertical_slash_ref(q, k, v, vert, slash), DTYPES[0])


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", [(130, 130, 2, 1, 64), (65, 200, 2, 2, 128)]
                         + [pytest.param(*s, marks=GPU) for s in [(1000, 1000, 8, 2, 128), (777, 2000, 7, 1, 96)]])
def test_vertical_slash_rows128_aligned(Sq, S, Hq, Hkv, D, device):
    q, k, v = qkv(S, Hq, Hkv, D, DTYPES[0], device, q_len=Sq)
    vert, slash = offset_index_sets(Sq, S, Hq, device)
    slash[0, 0, :4] = torch.tensor([0, 63, 64, 65], device=device)
    ref = naive.vertical_slash_ref(q, k, v, vert, slash, aligned=True)
    for pair in (False, True):
        idx = build_vertical_slash_index(vert, slash, S, pair=pair, q_len=Sq, aligned=True)
        check(vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q), rows=128), ref, DTYPES[0])


@pytest.mark.parametrize("Sq,S,D", [(1000, 1000, 64), (777, 1500, 96)])
def test_vertical_slash_rows128_long_interpreted(Sq, S, D, device):
    # ~1000 rows (NQB 16 / 13), one head pair: long components (dense runs of offsets), many columns
    Hq = 2
    q, k, v = qkv(S, Hq, 1, D, DTYPES[0], device, q_len=Sq)
    vert = rand_index(B, Hq, 40, S, device)
    slash = torch.cat([rand_index(B, Hq, 30, S, device), torch.arange(0, 400, 7, device=device).expand(B, Hq, -1)], -1)
    idx = build_vertical_slash_index(vert, slash, S, pair=True, q_len=Sq)
    check(vertical_slash_attention_fwd(q, k, v, idx, 0.2, out=nan_out(q), rows=128),
          naive.vertical_slash_ref(q, k, v, vert, slash, 0.2), DTYPES[0])


@pytest.mark.parametrize("dtype", [pytest.param(d, marks=GPU) for d in (torch.bfloat16, torch.float16)])
@pytest.mark.parametrize("tma", [False, True])
def test_vertical_slash_rows128_half(dtype, tma, device):
    # compiled, half precision, against the reference and (same tiles, other grouping) the per-block kernel
    S, Hq = 2000, 8
    q, k, v = qkv(S, Hq, 2, 128, dtype, device)
    vert, slash = offset_index_sets(S, S, Hq, device)
    idx = build_vertical_slash_index(vert, slash, S, pair=True)
    out = vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q), rows=128, tma=tma)
    check(out, naive.vertical_slash_ref(q, k, v, vert, slash), dtype)
    check(out, vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q)), dtype)


@pytest.mark.parametrize("cover", ["columns", "diagonals"])
def test_vertical_slash_rows128_covering_is_dense(cover, device):
    S = 150
    q, k, v = qkv(S, 4, 2, 64, DTYPES[0], device)
    full = torch.arange(S, device=device).expand(B, 4, S)
    none = torch.full((B, 4, 2), -1, device=device)
    vert, slash = (full, none) if cover == "columns" else (none, full)
    idx = build_vertical_slash_index(vert, slash, S, pair=True)
    check(vertical_slash_attention_fwd(q, k, v, idx, 0.3, out=nan_out(q), rows=128),
          naive.dense_causal_ref(q, k, v, 0.3), DTYPES[0])


def test_vertical_slash_rows128_head_mask_and_layout(device):
    dtype, S, Hq = DTYPES[-1], 130, 4
    q, k, v = qkv(S, Hq, 2, 64, dtype, device, layout="bshd")
    vert, slash = rand_index(B, Hq, 5, S, device), rand_index(B, Hq, 5, S, device)
    hm = torch.tensor([True, False, False, True], device=device)
    out = vertical_slash_attention_fwd(q, k, v, build_vertical_slash_index(vert, slash, S), None, hm, nan_out(q),
                                       rows=128)
    check(out, naive.vertical_slash_ref(q, k, v, vert, slash), dtype, hm)


@pytest.mark.skipif(CUDA and torch.cuda.get_device_capability()[0] < 9, reason="TMA needs sm90+")
def test_vertical_slash_rows128_tma(device, monkeypatch):
    # slash tiles through descriptors (the interpreter runs host descriptors, zero fill past the view); plain
    # contiguous K/V: rows past a head's S are the next head's keys, masked and their V zeroed
    calls = []
    real = _common.tma_descriptors
    monkeypatch.setattr(_common, "tma_descriptors", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    Sq, S, Hq = 130, 200, 4
    mk = lambda h, s: torch.randn(B, h, s, 96, device=device).to(DTYPES[0])  # noqa: E731
    q, k, v = mk(Hq, Sq), mk(2, S), mk(2, S)
    vert, slash = offset_index_sets(Sq, S, Hq, device)
    idx = build_vertical_slash_index(vert, slash, S, pair=True, q_len=Sq)
    check(vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q), rows=128, tma=True, num_stages=2),
          naive.vertical_slash_ref(q, k, v, vert, slash), DTYPES[0])
    assert calls == [1]


def test_rows_switches(device, monkeypatch):
    # MINFERENCE_VS_ROWS=128 (and a prebuilt RowPairTiles) select the 128-row kernel; rows=64 wins over both
    S, Hq = 130, 2
    q, k, v = qkv(S, Hq, 1, 64, DTYPES[0], device)
    vert, slash = rand_index(B, Hq, 5, S, device), rand_index(B, Hq, 7, S, device)
    idx = build_vertical_slash_index(vert, slash, S)
    ref = naive.vertical_slash_ref(q, k, v, vert, slash)
    launches = []
    real = vertical_slash_rows128.launch
    monkeypatch.setattr(vertical_slash_rows128, "launch", lambda *a, **kw: launches.append(1) or real(*a, **kw))
    monkeypatch.setenv("MINFERENCE_VS_ROWS", "128")
    check(vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q)), ref, DTYPES[0])
    assert launches == [1]
    check(vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q), rows=64), ref, DTYPES[0])
    assert launches == [1]
    monkeypatch.setenv("MINFERENCE_VS_ROWS", "")
    check(vertical_slash_attention_fwd(q, k, v, row_pair_tiles(idx, S), None, out=nan_out(q)), ref, DTYPES[0])
    check(vertical_slash_attention_fwd(q, k, v, idx, None, out=nan_out(q)), ref, DTYPES[0])
    assert launches == [1, 1]
    with pytest.raises(ValueError, match="64 or 128"):
        vertical_slash_attention_fwd(q, k, v, idx, rows=96)
    wrong = row_pair_tiles(idx, S)._replace(tile_begin=torch.zeros(B, Hq, 1, dtype=torch.int32, device=device))
    with pytest.raises(AssertionError, match="another q_len"):
        vertical_slash_attention_fwd(q, k, v, wrong)


# ---- benchmark plumbing (CPU tensors under the interpreter: the set-up runs, nothing is timed) ----

def test_benchmark_m128_cases(device):
    from benchmarks import cases as C
    from benchmarks import registry as R
    names = ["vs-1000/6096+m128", "vs-100/800+m128@s2", "vs-1000/6096+m128+tma@s3@w4", "vs-100/800+m128@w8"]
    cases = R.parse_cases(",".join(names))
    assert [c.params.get("rows") for c in cases] == [128] * 4 and cases[2].params["tma"]
    assert (cases[1].params["stages"], cases[2].params["warps"], cases[3].params["warps"]) == (2, 4, 8)
    assert not any("m128" in c.name for c in R.parse_cases(None))  # not in the default list
    S = 130
    q, k, v = (torch.randn(1, h, S, 64, device=device).to(DTYPES[0]) for h in (4, 2, 2))
    small = type(cases[0])("vs-small+m128@s1@w4", "vs", {"nv": 20, "ns": 30, "rows": 128, "stages": 1, "warps": 4})
    p = C.vs(small, q, k, v, S)
    assert "rows=128" in p.note and "num_stages=1" in p.note and "num_warps=4" in p.note
    assert p.op_fn is None and p.index_fn is None
    plain = C.vs(type(small)("vs-small", "vs", {"nv": 20, "ns": 30}), q, k, v, S)
    assert plain.op_fn is not None and "rows" not in plain.note and p.tile_cov >= plain.tile_cov
    torch.testing.assert_close(p.fn(), plain.fn(), atol=1e-4, rtol=1e-4)


def test_benchmark_m128_case_fails_soft(device, monkeypatch):
    # a 128-row case whose output differs from the 64-row kernel raises: the runner records an error row
    from benchmarks import cases as C
    from minference_compile.triton_kernels import vertical_slash
    real = vertical_slash.vertical_slash_attention_fwd
    wrong = lambda *a, **kw: real(*a, **kw) + (1.0 if kw.get("rows") == 128 else 0.0)  # noqa: E731
    monkeypatch.setattr(vertical_slash, "vertical_slash_attention_fwd", wrong)
    S = 130
    q, k, v = (torch.randn(1, h, S, 64, device=device).to(DTYPES[0]) for h in (2, 1, 1))
    from benchmarks.registry import Case
    with pytest.raises(RuntimeError, match="rows=128 output differs"):
        C.vs(Case("vs-small+m128", "vs", {"nv": 20, "ns": 30, "rows": 128}), q, k, v, S)


@pytest.mark.parametrize("name", ["vertical_and_slash", "vertical_and_slash_adaptive"])
def test_registry_kernel_path_with_the_switch(name, device, monkeypatch):
    # MINFERENCE_VS_ROWS=128 reaches the patterns' kernel path (sparse_prefill on CUDA): same output as the reference
    from minference_compile.patterns import REGISTRY, HeadGroup
    from test_patterns import SPECS
    launches = []
    real = vertical_slash_rows128.launch
    monkeypatch.setattr(vertical_slash_rows128, "launch", lambda *a, **kw: launches.append(1) or real(*a, **kw))
    monkeypatch.setenv("MINFERENCE_VS_ROWS", "128")
    S, Hq, Hkv, D = 130, 4, 2, 64
    q, k, v = qkv(S, Hq, Hkv, D, DTYPES[0], device)
    a, b = SPECS[name]
    specs = (a, None, b, None)
    group = HeadGroup(q, k, v, D ** -0.5, 64, specs)
    hm = torch.tensor([s is not None for s in specs], device=device)
    cls = REGISTRY[name]
    selection = cls.select(group)
    check(cls.attend_cuda(group, selection, hm, nan_out(q)), cls.reference(group, selection), DTYPES[0], hm)
    assert launches
