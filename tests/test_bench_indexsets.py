"""CPU tests of the benchmark suite: coverage/density against brute-force masks, the index-set generator,
the flex block-mask builders, and that the runner imports and parses arguments without CUDA."""
import numpy as np
import pytest
import torch

from benchmarks import coverage as C
from benchmarks import indexsets as I


def brute_masks(V, Sl, S, block=64):
    """(block-rounded VS mask, element-exact mask), both causal, from the definitions in docs/DESIGN.md."""
    i = np.arange(S)[:, None]
    j = np.arange(S)[None, :]
    m0 = (i // block) * block
    Vs = sorted({int(x) for x in V if 0 <= x < S})
    Ss = sorted({int(x) for x in Sl if 0 <= x < S})
    vert = np.broadcast_to(np.isin(j, Vs), (S, S))
    blk = vert.copy()
    for s in Ss:
        blk |= (j >= m0 - s) & (j < m0 - s + block)
    elem = vert | np.isin(i - j, Ss)
    return blk & (j <= i), elem & (j <= i)


def _check(V, Sl, S):
    blk, elem = brute_masks(V, Sl, S)
    tot = S * (S + 1) / 2
    assert C.coverage(V[None], Sl[None], S)[0] == pytest.approx(blk.sum() / tot, abs=1e-12)
    assert C.element_density(V[None], Sl[None], S)[0] == pytest.approx(elem.sum() / tot, abs=1e-12)


@pytest.mark.parametrize("S", [300, 1000, 777])
def test_coverage_random_sets(S):
    rng = np.random.default_rng(S)
    for t in range(6):
        V = rng.integers(-3, S + 3, rng.integers(0, 80))
        Sl = rng.integers(-3, S + 3, rng.integers(0, 300))
        if t % 2:
            Sl = np.r_[np.arange(100), Sl, Sl[:5]]  # local window, duplicates
        if t == 5:
            Sl = rng.integers(200, S, 40)  # no component crossing the diagonal
        _check(V, Sl, S)


@pytest.mark.parametrize("S", [300, 1000])
def test_coverage_real_sets_truncated(S):
    V, Sl, _ = I.captured("nat32k", 100, 800)
    for h in [(0, 0), (5, 3), (16, 1), (23, 13)]:
        v, s = V[h], Sl[h]
        _check(v[v < S], s[s < S], S)
        _check(v, s, S)  # out-of-range entries select nothing


def test_coverage_shapes_and_torch_input():
    V, Sl = I.generate_vs(4096, 3, 50, 300, seed=1)
    c = C.coverage(V, Sl, 4096)
    assert c.shape == (1, 3) and np.all((c > 0) & (c <= 1))
    assert np.all(C.element_density(V, Sl, 4096) <= c + 1e-12)  # block rounding only adds pairs


def test_closed_forms():
    S = 1000
    i = np.arange(S)[:, None]
    j = np.arange(S)[None, :]
    tot = S * (S + 1) / 2
    a = (j <= i) & ((j < 128) | (i - j < 300))
    assert C.streaming_coverage(S, 128, 300) == pytest.approx(a.sum() / tot)
    for topk in (1, 3, 100):
        qb, kb = i // 64, j // 64
        m = (j <= i) & (qb - kb < topk)  # any min(topk, qb+1) causal blocks give the same count
        assert C.block_sparse_coverage(S, topk) == pytest.approx(m.sum() / tot)


def test_store_roundtrip():
    c = I.load_captured()
    assert len(c) == 12
    for k, a in c.items():
        assert a.shape[:2] == (24, 14) and a.dtype == np.int32
        assert np.all(np.diff(a, axis=-1) > 0)
    V, Sl, S = I.captured("nat32k", 1000, 6096)
    assert V.shape[-1] == 1000 and Sl.shape[-1] == 6096 and S == 32768
    assert np.all(Sl[..., :100] == np.arange(100)) and np.all(V[..., :30] == np.arange(30))


@pytest.mark.parametrize("S,nv,ns", [(8192, 1000, 6096), (16384, 100, 800), (65536, 500, 2048),
                                     (1 << 20, 1000, 6096), (2048, 1000, 6096)])
def test_generator_valid(S, nv, ns):
    V, Sl = I.generate_vs(S, 4, nv, ns, seed=3)
    assert V.dtype == torch.int32 and Sl.dtype == torch.int32
    assert V.shape == (1, 4, min(nv, S)) and Sl.shape == (1, 4, min(ns, S))
    for h in range(4):
        v, s = V[0, h].numpy(), Sl[0, h].numpy()
        for x in (v, s):
            assert np.all((x >= 0) & (x < S)) and np.unique(x).size == x.size and np.all(np.diff(x) > 0)
        assert set(range(min(30, nv))) <= set(v.tolist())
        assert set(range(min(100, ns))) <= set(s.tolist())


def test_generator_deterministic():
    a = I.generate_vs(32768, 8, 1000, 6096, seed=7)
    b = I.generate_vs(32768, 8, 1000, 6096, seed=7)
    c = I.generate_vs(32768, 8, 1000, 6096, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])


def test_generator_matches_capture_at_32k():
    V, Sl = I.generate_vs(32768, 48, 1000, 6096, seed=0)
    g = C.coverage(V, Sl, 32768).mean()
    cv, cs, _ = I.captured("nat32k", 1000, 6096)
    ref = C.coverage(cv, cs, 32768).mean()
    assert abs(g - ref) < 0.1


# ---------------------------------------------------------------------------- flex block masks (CPU)
def _flex_dense(partial, full, bs, mask_mod, S, H):
    """Element mask flex would compute: mask_mod inside partial tiles, everything inside full tiles."""
    out = torch.zeros(H, S, S, dtype=torch.bool)
    qi = torch.arange(S)[:, None]
    ki = torch.arange(S)[None, :]
    for h in range(H):
        p = partial[min(h, partial.shape[0] - 1)].repeat_interleave(bs, 0).repeat_interleave(bs, 1)[:S, :S]
        m = p & mask_mod(0, h, qi, ki)
        if full is not None:
            m |= full[min(h, full.shape[0] - 1)].repeat_interleave(bs, 0).repeat_interleave(bs, 1)[:S, :S]
        out[h] = m
    return out


@pytest.mark.parametrize("bs", [64, 128])
def test_flex_masks_match_patterns(bs):
    from benchmarks import flex_cases as F
    from benchmarks.registry import CASE_BY_NAME
    S, H = 1024, 2
    i = torch.arange(S)[:, None]
    j = torch.arange(S)[None, :]
    # A-shape
    case = CASE_BY_NAME["flex-ashape-128+4096"]
    small = type(case)(case.name, case.family, {"init": 70, "local": 200})
    p, f, mm, _ = F.ashape(small, S, H, "cpu", bs)
    want = (j <= i) & ((j < 70) | (i - j < 200))
    assert torch.equal(_flex_dense(p, f, bs, mm, S, H)[0], want)
    # vertical-slash from generated sets
    vcase = type(case)("flex-vs", "flex-vs", {"nv": 40, "ns": 150})
    q = torch.zeros(1, H, S, 8)
    p, f, mm, c = F.vs(vcase, q, S, bs)
    V, Sl = I.generate_vs(S, H, 40, 150, seed=0)
    got = _flex_dense(p, f, bs, mm, S, H)
    for h in range(H):
        blk, _ = brute_masks(V[0, h].numpy(), Sl[0, h].numpy(), S)
        assert torch.equal(got[h], torch.from_numpy(blk))


# ------------------------------------------------------------------------------ runner without CUDA
def test_runner_imports_and_parses_without_cuda():
    from benchmarks import registry as R
    from benchmarks import run
    assert R.parse_lengths("8k,16K,1m,5000") == [8192, 16384, 1 << 20, 5000]
    assert set(R.SHAPES) == {"llama3-8b", "qwen2.5-7b", "qwen2.5-0.5b"}
    assert R.SHAPES["qwen2.5-0.5b"] == (14, 2, 64)
    a = run.build_parser().parse_args(["--lengths", "8k,32k", "--shapes", "qwen2.5-0.5b", "--out", "/tmp/x"])
    lengths, shapes, cases = run.resolve(a)
    assert lengths == [8192, 32768] and shapes == ["qwen2.5-0.5b"] and cases[0].name == "dense-cudnn"
    q = run.resolve(run.build_parser().parse_args(["--quick"]))
    assert len(q[0]) * len(q[1]) * len(q[2]) <= 16
    x = run.resolve(run.build_parser().parse_args(["--crossover"]))
    assert x[0][0] == 1024 and x[2][0].name == "dense-cudnn"
    with pytest.raises(ValueError):
        R.parse_shapes("gpt5")
    if not torch.cuda.is_available():
        assert run.main(["--quick", "--out", "/tmp/bench-test-out"]) == 2


def test_report_and_crossover_from_rows():
    from benchmarks import report
    rows = []
    for S, d, s in [(1024, 1.0, 2.0), (2048, 2.0, 1.5), (4096, 4.0, 3.0), (8192, 8.0, 9.0), (16384, 16.0, 4.0)]:
        rows.append({"shape": "x", "S": S, "case": "dense-cudnn", "family": "dense", "status": "ok", "ms": d})
        rows.append({"shape": "x", "S": S, "case": "vs", "family": "vs", "status": "ok", "ms": s, "index_ms": 0.5})
    assert report.crossover(rows, "x", "vs", False) == 16384
    rows[-3]["ms"] = 7.0  # 8K now wins too
    assert report.crossover(rows, "x", "vs", False) == 2048
    assert report.crossover(rows, "x", "vs", True) == 4096  # 2048: 1.5 + 0.5 is not < 2.0
    assert "vs" in report.crossover_table(rows)


@pytest.mark.parametrize("S,nv,ns", [(1024, 1000, 6096), (16384, 3500, 100)])
def test_generator_fills_budgets_beyond_the_templates(S, nv, ns):
    from benchmarks.indexsets import generate_vs

    v, s = generate_vs(S, 3, nv, ns, seed=1)
    assert v.shape == (1, 3, min(nv, S)) and s.shape == (1, 3, min(ns, S))
    for t in (v, s):
        assert int(t.min()) >= 0 and int(t.max()) < S
        assert all(len(set(row.tolist())) == row.numel() for row in t[0])
