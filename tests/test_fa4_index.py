"""Our 64x64 block index -> FA4 block-sparse lists (minference_compile/ops/fa4_lists.py), checked pair by pair through dense
masks on small S against the naive masks (triton_kernels/naive.py). CPU only; FA4 is not needed."""
import pytest
import torch

from minference_compile.ops.fa4_lists import (ashape_blocks, lists_coverage, lists_from_index, pair_mask, to_lists,
                                  to_our_index)
from minference_compile.triton_kernels import naive
from minference_compile.triton_kernels.block_sparse_index import block_sparse_index


def _random_index(S, H=3, B=2, topk=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, S, 32, generator=g)
    k = torch.randn(B, 1, S, 32, generator=g)
    idx = block_sparse_index(q, k, topk, impl="torch")
    # a duplicate and a non-causal id: our kernel ignores both, so must the conversion
    idx = torch.cat([idx, idx[..., :1], torch.full_like(idx[..., :1], idx.shape[2] + 5)], -1)
    return idx


def _count(m):
    return m.sum((-1, -2)).double()


@pytest.mark.parametrize("S", [1, 63, 65, 200, 321])
def test_lists_64_select_exactly_our_pairs(S):
    idx = _random_index(S)
    lists = lists_from_index(idx, S, 64, 64)
    want = naive.block_sparse_mask(idx, S)
    assert torch.equal(pair_mask(lists, S), want)
    # ids ascending within each list, counts consistent
    for cnt, ids in ((lists.mask_cnt, lists.mask_idx), (lists.full_cnt, lists.full_idx)):
        assert cnt.dtype == ids.dtype == torch.int32
        d = ids[..., 1:] - ids[..., :-1]
        valid = torch.arange(1, ids.shape[-1]) < cnt[..., None]
        assert bool((d[valid] > 0).all())
    # the masked list holds exactly the diagonal tiles here (one per query block)
    assert bool((lists.mask_cnt == 1).all())
    cov = lists_coverage(lists, S)
    assert cov == pytest.approx(float((_count(want) / (S * (S + 1) / 2)).mean()))


@pytest.mark.parametrize("S", [63, 200, 321, 520])
@pytest.mark.parametrize("qb,kb", [(128, 64), (128, 128), (64, 128)])
def test_lists_union_is_a_superset_and_round_trips(S, qb, kb):
    idx = _random_index(S, seed=S)
    lists = lists_from_index(idx, S, qb, kb)
    got = pair_mask(lists, S)
    ours = naive.block_sparse_mask(idx, S)
    assert bool((got | ~ours).all()), "FA4 lists must hold every pair of our index"
    back = to_our_index(lists, S)
    assert torch.equal(naive.block_sparse_mask(back, S), got), "our kernel on to_our_index = FA4's pairs"
    cov = lists_coverage(lists, S)
    assert cov == pytest.approx(float((_count(got) / (S * (S + 1) / 2)).mean()))
    assert cov >= lists_coverage(lists_from_index(idx, S, 64, 64), S) - 1e-12


def test_union_takes_both_64_row_blocks():
    S = 256  # two FA4 128-row blocks; query block 3 picks key block 0, query block 2 only its diagonal
    idx = torch.tensor([[[[0, -1], [1, -1], [2, -1], [0, 3]]]], dtype=torch.int32)
    lists = lists_from_index(idx, S, 128, 64)
    touched = pair_mask(lists, S)
    assert bool(touched[0, 0, 128, 0]), "row 128 (query block 2) gets key block 0 through the union"
    assert not bool(naive.block_sparse_mask(idx, S)[0, 0, 128, 0])


@pytest.mark.parametrize("S", [70, 300, 640])
@pytest.mark.parametrize("qb,kb", [(64, 64), (128, 64), (128, 128)])
@pytest.mark.parametrize("init,local", [(64, 128), (10, 100), (128, 200)])
def test_ashape_lists_with_mask_mod_are_exact(S, qb, kb, init, local):
    touched, full = ashape_blocks(S, init, local, qb, kb)
    lists = to_lists(touched, full, S, qb, kb)
    ashape = lambda i, j: (j <= i) & ((j < init) | (i - j < local))  # noqa: E731 (the mask_mod's semantics)
    want = naive.streaming_mask(1, 1, S, init, local)
    assert torch.equal(pair_mask(lists, S, ashape), want)
    assert lists_coverage(lists, S, init, local) == pytest.approx(float(_count(want)[0, 0] / (S * (S + 1) / 2)))
    # block granular (causal only, no mask_mod): a superset that our block-sparse kernel reproduces
    coarse = to_lists(touched, None, S, qb, kb)
    got = pair_mask(coarse, S)
    assert bool((got | ~want).all())
    assert torch.equal(naive.block_sparse_mask(to_our_index(coarse, S), S), got)


@pytest.mark.parametrize("S,q_len", [(300, 1), (300, 63), (300, 65), (300, 299), (1000, 333), (640, 256)])
@pytest.mark.parametrize("init,local", [(64, 128), (10, 100), (128, 200)])
def test_ashape_chunk_lists_are_exact(S, q_len, init, local):
    """A pre-fill chunk (the last q_len of S positions): 128-row blocks from the chunk's first row, absolute key
    tiles; with the mask_mod on the masked tiles FA4 computes exactly the chunk's A-shape pairs."""
    touched, full = ashape_blocks(S, init, local, 128, 128, q_len=q_len)
    assert touched.shape == (-(-q_len // 128), -(-S // 128))
    lists = to_lists(touched, full, S, 128, 128)
    ashape = lambda i, j: (j <= i) & ((j < init) | (i - j < local))  # noqa: E731 (i absolute)
    want = naive.streaming_mask(1, 1, S, init, local, q_len=q_len)
    assert want.shape[-2:] == (q_len, S)
    assert torch.equal(pair_mask(lists, S, ashape, q_len=q_len), want)
