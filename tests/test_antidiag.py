"""Strided-antidiagonal block-sparse selection (block_sparse_antidiag, id 6): estimate and index equal to the loop
references (fp32 vs fp64: mass atol 1e-5, indices exact), chunking invisible, the threshold met minimally on a
constructed input, the op (id 6) equal to the masked reference, per-stride heads of one layer, search scoring."""
import math

import pytest
import torch

from minference_compile.ops import adaptive
from minference_compile.ops.adaptive import (antidiag_block_mass, antidiag_block_sparse_index, pack_threshold,
                                             strided_keys, strided_queries)
from minference_compile.patterns import BlockSparseAntidiag, HeadGroup
from minference_compile.triton_kernels.naive import block_sparse_ref
from minference_compile.triton_kernels.naive_adaptive import antidiag_block_mass_ref, antidiag_block_sparse_index_ref


def _qk(S, hq, hkv, D, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, hq, S, D, generator=g), torch.randn(2, hkv, S, D, generator=g)
    q[..., :4] += 2.0  # a few shared directions: masses far from uniform
    k[..., ::7, :4] += 1.5
    return q, k


def _mass(q, k, stride):
    S = q.shape[2]
    return antidiag_block_mass(strided_queries(q, stride), strided_keys(k, stride), S, 0, -(-S // 64), stride)


@pytest.mark.parametrize("S,hq,hkv,D", [(1, 2, 1, 64), (63, 2, 2, 64), (65, 4, 2, 128), (1000, 2, 1, 96)])
@pytest.mark.parametrize("stride", [8, 4, 64])
def test_antidiag_matches_ref(S, hq, hkv, D, stride):
    q, k = _qk(S, hq, hkv, D, S + stride)
    mass = _mass(q, k, stride)
    ref = antidiag_block_mass_ref(q, k, stride)
    torch.testing.assert_close(mass.double(), ref, atol=1e-5, rtol=0)
    causal = torch.arange(mass.shape[-1])[None] <= torch.arange(mass.shape[-2])[:, None]
    torch.testing.assert_close(mass.sum(-1), torch.ones_like(mass[..., 0]), atol=1e-5, rtol=0)
    assert (mass[..., ~causal] == 0).all()
    caps, taus = [3 + 2 * h for h in range(hq)], [0.4 + 0.5 * h / hq for h in range(hq)]
    got = antidiag_block_sparse_index(q, k, caps, taus, stride)
    assert torch.equal(got, antidiag_block_sparse_index_ref(q, k, caps, taus, stride))


@pytest.mark.parametrize("sink", [False, True])
def test_sink_block_rule(sink):
    """sink=False is XAttention's rule as published (only the diagonal forced); sink=True also forces block 0
    (cap >= 2). Both equal the loop reference."""
    q, k = _qk(640, 2, 1, 64, 5)
    got = antidiag_block_sparse_index(q, k, [1, 4], 0.3, 8, sink=sink)
    assert torch.equal(got, antidiag_block_sparse_index_ref(q, k, [1, 4], 0.3, 8, sink))
    has0 = (got[:, 1, 1:] == 0).any(-1)
    assert has0.all() if sink else not has0.all()
    assert (got[:, 0, :, 0] == torch.arange(10, dtype=torch.int32)).all()  # cap 1: the diagonal only


def test_antidiag_chunking_is_invisible(monkeypatch):
    """One query block per chunk (tiny byte budget) gives the same index as one chunk; every row is written
    (the output is torch.empty: an unwritten row would differ)."""
    q, k = _qk(700, 4, 2, 64, 1)
    full = antidiag_block_sparse_index(q, k, 5, 0.8, 8)
    monkeypatch.setattr(adaptive, "_SCORE_BYTES", 1)
    assert torch.equal(antidiag_block_sparse_index(q, k, 5, 0.8, 8), full)
    assert torch.equal(full, antidiag_block_sparse_index_ref(q, k, 5, 0.8, 8))


@pytest.mark.parametrize("tau", [0.3, 0.7, 0.95])
def test_antidiag_selection_meets_tau_minimally(tau):
    """Constructed q/k: a heavy key block per query block (k rows aligned with q in block 2 and 5); the selected
    blocks hold >= tau of the estimated mass, dropping the lightest selected non-diagonal one falls below tau, the
    heavy blocks are kept (tau 0.7: they hold most of the mass)."""
    S, D = 512, 64
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, S, D, generator=g) * 0.3, torch.randn(1, 1, S, D, generator=g) * 0.3
    q[..., 0] += 3.0
    k[:, :, 128:192, 0] += 3.0
    k[:, :, 320:384, 0] += 2.0
    mass = _mass(q, k, 8)[0, 0].double()
    ids = antidiag_block_sparse_index(q, k, 8, tau, 8)[0, 0]
    for qb in range(ids.shape[0]):
        sel = ids[qb][ids[qb] >= 0].long()
        assert qb in sel.tolist() and 0 in sel.tolist() and (sel <= qb).all()  # diagonal and sink block forced
        got = float(mass[qb, sel].sum())
        assert got >= tau - 1e-6
        others = [kb for kb in sel.tolist() if kb not in (qb, 0)]
        if others:
            assert got - float(mass[qb, others].min()) < tau
        if tau == 0.7 and qb > 2:
            assert 2 in sel.tolist()


def test_sparse_prefill_antidiag_matches_masked_reference():
    """The op with id 6 (caps and strides/taus packed as the config packs them) equals block_sparse_ref over the
    index the selection makes; dense heads untouched by it."""
    B, hq, hkv, S, D = 2, 4, 2, 200, 64
    q, k = _qk(S, hq, hkv, D, 3)
    v = torch.randn(B, hkv, S, D)
    patterns, caps, ss = [6, 0, 6, 1], [3, 0, 2, 30], [pack_threshold(8, 0.8), 0, pack_threshold(4, 0.5), 60]
    out = torch.ops.minference.sparse_prefill(q, k, v, patterns, caps, ss, D ** -0.5, 0, 64)
    kr, vr = k.repeat_interleave(hq // hkv, 1), v.repeat_interleave(hq // hkv, 1)
    for h, (cap, stride, tau) in {0: (3, 8, 0.8), 2: (2, 4, 0.5)}.items():
        idx = antidiag_block_sparse_index_ref(q, k, cap, tau, stride)
        ref = block_sparse_ref(q, kr, vr, idx)
        torch.testing.assert_close(out[:, h], ref[:, h], atol=2e-5, rtol=1e-4)


def test_layer_with_two_strides_selects_each_heads_own():
    q, k = _qk(300, 4, 2, 96, 4)
    specs = (BlockSparseAntidiag(3, 8, 0.6), None, BlockSparseAntidiag(5, 16, 0.9), BlockSparseAntidiag(2, 8))
    sel = BlockSparseAntidiag.select(HeadGroup(q, k, k, 96 ** -0.5, 64, specs))
    for h, s in enumerate(specs):
        if s is None:
            assert (sel[:, h] == -1).all()
            continue
        want = antidiag_block_sparse_index_ref(q, k, s.topk_cap, s.threshold, s.stride)[:, h]
        assert torch.equal(sel[:, h, :, :want.shape[-1]], want) and (sel[:, h, :, want.shape[-1]:] == -1).all()


def test_sparse_prefill_antidiag_opcheck():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 130, 64), torch.randn(1, 2, 130, 64), torch.randn(1, 2, 130, 64)
    args = (q, k, v, [6, 5, 6, 0], [2, 2, 1, 0], [pack_threshold(8, 0.9), pack_threshold(0, 0.8), 16, 0],
            0.125, 64, 64)
    torch.library.opcheck(torch.ops.minference.sparse_prefill.default, args)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_antidiag_index_on_cuda_matches_cpu_without_host_sync():
    torch.manual_seed(0)
    q, k = torch.randn(1, 4, 4099, 64), torch.randn(1, 2, 4099, 64)
    caps, taus = [8, 16, 32, 128], [0.8, 0.9, 0.95, 0.7]
    want = antidiag_block_sparse_index(q, k, caps, taus, 8)
    qc, kc = q.cuda(), k.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = antidiag_block_sparse_index(qc, kc, caps, taus, 8)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert (got.cpu() != want).float().mean() < 0.01  # fp32 both ways; reduction order may flip a near-tie


def test_bad_stride_is_a_clear_error():
    q, k = _qk(65, 2, 1, 64, 0)
    with pytest.raises(ValueError, match="positive divisor of the block size 64, got 3"):
        antidiag_block_sparse_index(q, k, 2, 0.9, 3)
    assert math.isclose(BlockSparseAntidiag(4, 2).threshold, 0.9)


def test_antidiag_half_inputs_score_in_their_dtype():
    """bf16 q/k: the strided product runs in bf16 (rounded logits), softmax in fp32; the index agrees with the
    fp32 index of the same values up to a few near-ties."""
    q, k = _qk(1000, 2, 1, 64, 7)
    q, k = q.bfloat16(), k.bfloat16()
    got = antidiag_block_sparse_index(q, k, 8, 0.9, 8)
    want = antidiag_block_sparse_index(q.float(), k.float(), 8, 0.9, 8)
    assert got.shape == want.shape and (got != want).float().mean() < 0.02
