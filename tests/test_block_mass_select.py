"""The mass-threshold row select kernel (triton_kernels/block_mass_select.py) against the torch select
(ops/adaptive.select_blocks, impl="torch") and the greedy per-row loop (naive_adaptive._select_ref), on CPU
under TRITON_INTERPRET=1 (with CUDA: compiled). Masses are random softmax rows over the causal blocks (continuous
values: no exact ties, so the kernel must equal the sort exactly); a constructed row checks the threshold rule by
hand. Outputs start as NaN-free garbage (7777): any slot the kernel does not write shows."""
import pytest
import torch

from test_kernels_triton import CUDA, SLOW_ON_CPU  # (sets up the interpreter without CUDA)

from minference_compile.ops.adaptive import select_blocks
from minference_compile.triton_kernels.block_mass_select import block_mass_select
from minference_compile.triton_kernels.naive_adaptive import _select_ref

DEV = "cuda" if CUDA else "cpu"


def _mass(B, Hq, n, r0, R, seed, peaky=3.0):
    g = torch.Generator().manual_seed(seed)
    logit = torch.randn(B, Hq, R, n, generator=g, dtype=torch.float64) * peaky
    qb = torch.arange(r0, r0 + R)[:, None]
    p = torch.softmax(logit.masked_fill(torch.arange(n) > qb, float("-inf")), -1)
    return p.float()


def _kernel(mass, r0, caps, taus, sink):
    Hq = mass.shape[1]
    kmax = max(1, min(max(caps), mass.shape[-1]))
    out = torch.full((*mass.shape[:3], kmax), 7777, dtype=torch.int32, device=DEV)
    block_mass_select(mass.to(DEV), r0, torch.tensor(caps, dtype=torch.int32, device=DEV),
                      torch.tensor(taus, dtype=torch.float32, device=DEV), kmax, sink, out=out)
    return out.cpu()


# (B, Hq, n key blocks, r0, R, caps per head, taus per head, sink)
CASES = [(1, 1, 1, 0, 1, [4], [0.9], False), (2, 2, 5, 0, 5, [3, 8], [0.5, 0.95], True),
         (2, 3, 17, 4, 9, [1, 2, 17], [0.9, 0.99, 0.3], True), (1, 4, 33, 0, 33, [6, 40, 12, 33], [0.9, 1.0, 0.8, 0.7],
                                                                       False),
         (2, 2, 70, 60, 10, [64, 16], [0.9, 0.95], True), (1, 2, 130, 100, 30, [128, 130], [0.98, 0.9], False)]


# interpreted, each row (program) costs ~0.1 s: on a CPU the two largest cases are -m slow
_SLOW = {(17, 4), (33, 0)}


@pytest.mark.parametrize("case", [pytest.param(c, marks=SLOW_ON_CPU if (c[2], c[3]) in _SLOW else [])
                                  for c in CASES], ids=[f"n{c[2]}-r{c[3]}+{c[4]}-sink{int(c[7])}" for c in CASES])
def test_kernel_equals_torch_select_and_greedy_reference(case):
    B, Hq, n, r0, R, caps, taus, sink = case
    mass = _mass(B, Hq, n, r0, R, seed=n * 31 + r0)
    got = _kernel(mass, r0, caps, taus, sink)
    want = select_blocks(mass, r0, caps, taus, sink, impl="torch")
    assert torch.equal(got, want)
    def row(b, h, qb):  # the reference walks every query block; rows outside r0..r0+R-1 are not compared
        return mass[b, h, qb - r0].double() if r0 <= qb < r0 + R else torch.full((qb + 1,), 1.0 / (qb + 1))

    ref = _select_ref(row, B, Hq, n, caps, taus, sink)[:, :, r0:r0 + R]
    assert torch.equal(got, ref)


def test_kernel_meets_threshold_with_fewest_blocks_on_a_constructed_row():
    # query block 5 (6 causal blocks): diagonal 0.1, then 0.4, 0.25, 0.15, 0.06, 0.04 on blocks 2, 0, 4, 1, 3
    row = torch.zeros(1, 1, 1, 8)
    row[0, 0, 0, :6] = torch.tensor([0.25, 0.06, 0.4, 0.04, 0.15, 0.1])
    got = lambda tau, cap=8, sink=False: _kernel(row, 5, [cap], [tau], sink)[0, 0, 0].tolist()  # noqa: E731
    assert got(0.1) == [5, -1, -1, -1, -1, -1, -1, -1]  # the diagonal alone reaches 0.1
    assert got(0.5) == [2, 5] + [-1] * 6  # 0.1 + 0.4
    assert got(0.51) == [0, 2, 5] + [-1] * 5  # + 0.25 = 0.75
    assert got(0.89) == [0, 2, 4, 5] + [-1] * 4  # + 0.15 = 0.9
    assert got(0.95) == [0, 1, 2, 4, 5] + [-1] * 3
    assert got(1.0, cap=3) == [0, 2, 5]  # cap (and kmax) 3: the two heaviest others
    assert got(0.5, sink=True) == [0, 2, 5] + [-1] * 5  # sink block 0 first (0.35), then 0.4
    assert got(0.2, sink=True, cap=1) == [5]  # cap 1: the diagonal only


def test_select_blocks_dispatches_to_the_kernel():
    mass = _mass(1, 2, 12, 0, 12, seed=5).to(DEV)
    torch.testing.assert_close(select_blocks(mass, 0, [8, 4], 0.9, True, impl="triton").cpu(),
                               select_blocks(mass.cpu(), 0, [8, 4], 0.9, True, impl="torch"), rtol=0, atol=0)


def test_chunks_written_in_place_equal_one_select():
    # the index builders' loop: caps / thresholds prepared once, each chunk's ids written into a strided view of out
    from minference_compile.ops.adaptive import _RowSelect
    B, Hq, n = 1, 2, 20
    mass = _mass(B, Hq, n, 0, n, seed=9).to(DEV)
    caps, taus = [8, 20], [0.5, 0.97]
    rows = _RowSelect(caps, taus, Hq, n, DEV, True, impl="triton")
    assert rows.fused
    out = torch.full((B, Hq, n, rows.kmax), 7777, dtype=torch.int32, device=DEV)
    for r0 in range(0, n, 7):
        rows(mass[:, :, r0:r0 + 7], r0, out[:, :, r0:r0 + 7])
    assert torch.equal(out.cpu(), select_blocks(mass.cpu(), 0, caps, taus, True, impl="torch"))


@pytest.mark.parametrize("B,hq,hkv,S,D,caps,taus", [
    (2, 2, 1, 333, 64, [3, 6], [0.9, 0.5]),  # partial last block (13 keys), GQA 2, batch 2
    (1, 3, 3, 1000, 96, [16, 2, 5], [0.95, 0.99, 0.7]),
])
def test_pooled_kernel_equals_the_torch_pooled_build(B, hq, hkv, S, D, caps, taus):
    # pooled_mass_select applies the softmax of block_mass_from_means itself: the same ids as the torch select on
    # the torch mass, chunk by chunk, written in place into a strided view (garbage outside the written rows shows)
    from minference_compile.ops.adaptive import block_mass_from_means
    from minference_compile.triton_kernels.block_mass_select import pooled_mass_select
    from minference_compile.triton_kernels.block_sparse_index import _block_means
    g = torch.Generator().manual_seed(S + hq)
    q = torch.randn(B, hq, S, D, generator=g) * 2
    k = torch.randn(B, hkv, S, D, generator=g) * 2
    n = -(-S // 64)
    qm, km = _block_means(q, 64), _block_means(k, 64)
    want = select_blocks(block_mass_from_means(qm, km, S), 0, caps, taus, impl="torch")
    kmax = want.shape[-1]
    out = torch.full((B, hq, n, kmax), 7777, dtype=torch.int32, device=DEV)
    cap_t = torch.tensor(caps, dtype=torch.int32, device=DEV)
    tau_t = torch.tensor(taus, dtype=torch.float32, device=DEV)
    G = hq // hkv
    for r0 in range(0, n, 4):
        r1 = min(n, r0 + 4)
        logit = (qm[:, :, r0:r1].reshape(B, hkv, G, r1 - r0, D) @ km.unsqueeze(2).transpose(-1, -2))
        pooled_mass_select(logit.reshape(B, hq, r1 - r0, n).to(DEV), r0, S, 64, D ** -0.5, cap_t, tau_t, kmax,
                           out=out[:, :, r0:r1])
    assert torch.equal(out.cpu(), want)
    assert (want >= 0).sum() > B * hq * n  # more than the diagonals: the threshold rule took part
