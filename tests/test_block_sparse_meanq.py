"""block_sparse_meanq / block_sparse_meanq_adaptive (patterns/block_sparse_meanq.py): the mean query's mass over
the exact keys against a naive per-block softmax, the fixed top-k and the threshold selection on it, chunking of
the index build. The kernel, CPU path and op dispatch run through the registry tests (test_patterns.py SPECS,
test_kernels_triton.py::test_registry_kernel_path); the search scores through test_search.py's brute-force check."""
import math

import pytest
import torch

from minference_compile.ops import adaptive
from minference_compile.ops.adaptive import FIXED, meanq_block_sparse_index, meanq_mass_from_means
from minference_compile.patterns import BlockSparseMeanQ, BlockSparseMeanQAdaptive, by_id, parse_entry
from minference_compile.triton_kernels.block_sparse_index import _block_means

B64 = 64


def _qk(S, Hq, Hkv, D, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, S, D, generator=g)
    k = torch.randn(B, Hkv, S, D, generator=g)
    k[:, :, 0] += 3 * q.mean((1, 2))[:, None]  # a sink-like key that mean(k) dilutes: the two scores then differ
    return q, k


def naive_meanq_mass(q, k, scale=None):
    """Per (batch, q head, 64-row block): softmax over keys j <= the block's last row of scale * mean(q rows) . k_j,
    summed per 64-key block -> [B, Hq, NQB, NKB] fp64."""
    B, Hq, S, D = q.shape
    g = Hq // k.shape[1]
    n = -(-S // B64)
    scale = 1 / math.sqrt(D) if scale is None else scale
    out = torch.zeros(B, Hq, n, n, dtype=torch.float64)
    for b in range(B):
        for h in range(Hq):
            for m in range(n):
                rows = q[b, h, m * B64:min(S, m * B64 + B64)].double()
                last = min(S, m * B64 + B64) - 1
                p = torch.softmax(rows.mean(0) @ k[b, h // g, :last + 1].double().T * scale, -1)
                for kb in range(m + 1):
                    out[b, h, m, kb] = p[kb * B64:min(last + 1, kb * B64 + B64)].sum()
    return out


@pytest.mark.parametrize("S,Hq,Hkv,D", [(1, 2, 1, 64), (63, 4, 2, 64), (65, 4, 2, 96), (300, 4, 1, 128),
                                        (1000, 2, 2, 64)])
def test_mass_equals_naive(S, Hq, Hkv, D):
    q, k = _qk(S, Hq, Hkv, D)
    got = meanq_mass_from_means(_block_means(q, B64), k, S)
    want = naive_meanq_mass(q, k)
    assert got.shape == want.shape
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(got.sum(-1).double(), torch.ones(got.shape[:-1], dtype=torch.float64), atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize("S,topk", [(65, 2), (300, 3), (1000, 5), (1000, 1)])
def test_fixed_topk_is_diagonal_plus_largest(S, topk):
    q, k = _qk(S, 4, 2, 64, seed=1)
    idx = meanq_block_sparse_index(q, k, topk, FIXED)
    mass = naive_meanq_mass(q, k)
    n = mass.shape[-1]
    for b in range(2):
        for h in range(4):
            for m in range(n):
                got = set(idx[b, h, m][idx[b, h, m] >= 0].tolist())
                others = [kb for kb in torch.argsort(mass[b, h, m], descending=True).tolist() if kb < m]
                want = {m} | set(others[:min(topk, m + 1) - 1])
                assert got == want, (b, h, m)
                row = idx[b, h, m].tolist()
                assert row[:len(got)] == sorted(got) and all(x == -1 for x in row[len(got):])


@pytest.mark.parametrize("tau", [0.3, 0.6, 0.9])
def test_adaptive_meets_its_threshold_with_the_fewest_blocks(tau):
    """Kept mass (on the mass the selection sees) reaches tau unless the cap binds, and dropping the smallest
    kept off-diagonal block falls below it: the fewest blocks."""
    S, cap = 1000, 9
    q, k = _qk(S, 4, 2, 64, seed=2)
    idx = meanq_block_sparse_index(q, k, cap, tau)
    mass = naive_meanq_mass(q, k)
    for b in range(2):
        for h in range(4):
            for m in range(mass.shape[-1]):
                ids = idx[b, h, m][idx[b, h, m] >= 0].long()
                assert m in ids.tolist()
                kept = mass[b, h, m, ids]
                if len(ids) < min(cap, m + 1):
                    assert kept.sum() >= tau - 1e-6, (b, h, m)
                off = kept[ids != m]
                if len(off):
                    assert kept.sum() - off.min() < tau + 1e-6, (b, h, m)


def test_chunked_build_equals_one_chunk(monkeypatch):
    q, k = _qk(700, 4, 2, 64, seed=3)
    one = meanq_block_sparse_index(q, k, [4, 2, 6, 3], [0.5, 0.9, FIXED, 0.8])
    monkeypatch.setattr(adaptive, "_SCORE_BYTES", 4 * 2 * 4 * 800)  # one query block per chunk
    assert torch.equal(meanq_block_sparse_index(q, k, [4, 2, 6, 3], [0.5, 0.9, FIXED, 0.8]), one)


def test_differs_from_the_pooled_score_on_a_sink_key():
    """The point of the pattern: a key that stands out inside its block (here key 0) moves the mean query's mass
    but hardly mean(k); the selections differ (a test that would pass with the pooled score cannot catch a swap)."""
    from minference_compile.triton_kernels.block_sparse_index import block_sparse_index
    q, k = _qk(1000, 4, 2, 64, seed=4)
    assert not torch.equal(meanq_block_sparse_index(q, k, 3, FIXED), block_sparse_index(q, k, 3))


def test_entries_and_labels():
    assert by_id(8) is BlockSparseMeanQ and by_id(9) is BlockSparseMeanQAdaptive
    assert parse_entry(["block_sparse_meanq", 16, 0, 0.9]) == BlockSparseMeanQ(16)
    assert parse_entry(["block_sparse_meanq_adaptive", 128, 0, 0.9, {"tau": 0.95}]) == BlockSparseMeanQAdaptive(128,
                                                                                                                0.95)
    assert BlockSparseMeanQ(16).label == "bsq(16)" and BlockSparseMeanQAdaptive(128, 0.9).label == "bsqa(128;0.9)"
    with pytest.raises(ValueError, match="one length"):
        meanq_block_sparse_index(torch.zeros(1, 2, 10, 64), torch.zeros(1, 2, 20, 64), 2)


# ---- the CUDA path's kernels (triton_kernels/meanq_mass.py + the fused select): compiled on CUDA, else under the
# interpreter (test_kernels_triton sets it up) ----
from test_kernels_triton import CUDA  # noqa: E402

from minference_compile.triton_kernels.meanq_mass import meanq_block_lse  # noqa: E402

DEV = "cuda" if CUDA else "cpu"


@pytest.mark.parametrize("S,Hq,Hkv,D,r0,R", [(65, 4, 2, 64, 0, 2), (300, 2, 1, 96, 1, 3), (1000, 2, 2, 128, 5, 11),
                                             (200, 2, 1, 64, 3, 1)])
# the default launch, and key slices / query chunks smaller than the sizes (several programs per row, empty slices)
@pytest.mark.parametrize("config", [None, (16, 2, 1, 1), (32, 3, 4, 2)])
def test_kernel_log_mass_equals_torch(S, Hq, Hkv, D, r0, R, config):
    q, k = (t.to(DEV) for t in _qk(S, Hq, Hkv, D, seed=5))
    qm = _block_means(q[:, :, r0 * B64:min(S, (r0 + R) * B64)], B64)
    lse = meanq_block_lse(qm, k, S, r0, 1 / math.sqrt(D), config=config)
    want = meanq_mass_from_means(qm, k, S, r0)
    # fp32 inputs: the kernel's product is ieee fp32 (dot_precision); CUDA sums in another order
    torch.testing.assert_close(torch.softmax(lse, -1), want, atol=2e-6, rtol=1e-5)
    n = lse.shape[-1]
    past = (torch.arange(n)[None, :] > torch.arange(r0, r0 + qm.shape[2])[:, None]).to(DEV)
    assert torch.isinf(lse[..., past]).all() and torch.isfinite(lse[..., ~past]).all()


@pytest.mark.parametrize("caps,taus", [(3, FIXED), ([4, 2], [0.5, 0.9])])
def test_kernel_index_equals_torch_index(caps, taus):
    q, k = (t.to(DEV) for t in _qk(700, 2, 1, 64, seed=6))
    want = meanq_block_sparse_index(q, k, caps, taus, impl="torch")
    got = meanq_block_sparse_index(q, k, caps, taus, impl="triton")
    assert torch.equal(got, want)
