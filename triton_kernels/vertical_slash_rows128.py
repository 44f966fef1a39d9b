"""Vertical-slash attention with 128-row programs (opt-in, benchmarks/NOTES.md #21): one program computes two
consecutive 64-row query blocks with exactly the pairs of the per-block kernel (vertical_slash.py). Slash tiles come
from RowPairTiles (the union of the two blocks' ranges per component, each 64-row half masked by its own range);
the columns are the per-block index's, each half checking its own slash coverage."""
import triton
import triton.language as tl

from . import _common
from ._common import _attn_tile, _q_tile, _softmax_init, _store_o_tile, stages_override

# BLOCK_D -> (num_warps, num_stages) for 128 x 64 tiles, untuned. 8 warps: offline sm_90a builds (ptxas -v, bf16)
# spill 740 B at D=64 with 4 warps, 64 B with 8 (D=128, 8 warps: 464 B; the 64-row paired kernel: 1.3 KB). 1 stage
# with pointer loads as the per-block kernel (index-dependent tiles), 3 with TMA (NOTES #17)
CFG = {16: (4, 1), 32: (4, 1), 64: (8, 1), 128: (8, 1), 256: (8, 1)}
CFG_TMA = {16: (4, 3), 32: (4, 3), 64: (8, 3), 128: (8, 3), 256: (8, 1)}
HALF = 64  # rows per query block (the index's block)


@triton.jit
def _vs128_fwd_kernel(Q, K, V, O, TOFF, TLO, THI, TCNT, TBEG, COLS, CCNT, PREF, HM,
                      sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som,
                      SQ, S, Hq, G, D, NT, NV, NQB, NP, NPREF, qk_scale,
                      KD, VD, krb, krh, vrb, vrh,
                      BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HAS_HM: tl.constexpr, PREC: tl.constexpr,
                      PREF_UNIT: tl.constexpr, TMA: tl.constexpr):
    # program p: query blocks 2p (rows [0, 64) of the tile) and 2p + 1 (rows [64, 128)); for NQB odd the last
    # program's second half lies past SQ (computed, not stored). TMA: slash tiles through KD/VD (block [BLOCK_N,
    # BLOCK_D]) over K/V's 2-D row views, as in vertical_slash.py
    BLOCK_M: tl.constexpr = 2 * BLOCK_N
    p = NP - 1 - tl.program_id(0)  # late programs carry the most work: schedule them first
    bh = tl.program_id(1)
    b = (bh // Hq).to(tl.int64)
    h = bh % Hq
    if HAS_HM:
        if tl.load(HM + h) == 0:
            return
    bh64 = bh.to(tl.int64)
    kvh = (h // G).to(tl.int64)
    r0 = p * BLOCK_M
    m0 = S - SQ + r0  # absolute start of block 2p; block 2p + 1 starts at m0 + 64
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    rd = tl.arange(0, BLOCK_D)
    offs_m = m0 + rm
    upper = rm >= BLOCK_N  # rows of block 2p + 1
    mb = m0 + tl.where(upper, BLOCK_N, 0)  # each row's block start
    dmask = rd[None, :] < D

    q = _q_tile(Q, b, h, r0, sqb, sqh, sqm, SQ, D, BLOCK_M, BLOCK_D)
    k_base = K + b * skb + kvh * skh
    v_base = V + b * svb + kvh * svh
    k_row = b * krb + kvh * krh
    v_row = b * vrb + kvh * vrh
    acc, m_i, l_i = _softmax_init(BLOCK_M, BLOCK_D)

    # phase 1: slash tiles. Row of block start mb attends key j of a component iff mb - s_hi <= j < mb - s_lo + 64
    for t in range(tl.load(TBEG + bh64 * NP + p), tl.load(TCNT + bh64)):
        d = tl.load(TOFF + bh64 * NT + t)
        s_lo = tl.load(TLO + bh64 * NT + t)
        s_hi = tl.load(THI + bh64 * NT + t)
        n0 = m0 - d
        j = n0 + rn
        kmask = (j >= 0) & (j < m0 - s_lo + BLOCK_M) & (j < S)  # keys either half may attend
        if TMA:
            k = KD.load([(k_row + n0).to(tl.int32), 0])
            v = VD.load([(v_row + n0).to(tl.int32), 0])
        else:
            k = tl.load(k_base + tl.cast(n0, tl.int64) * skn + rn[:, None] * skn + rd[None, :],
                        mask=kmask[:, None] & dmask, other=0.0)
            v = tl.load(v_base + tl.cast(n0, tl.int64) * svn + rn[:, None] * svn + rd[None, :],
                        mask=kmask[:, None] & dmask, other=0.0)
        # full for both halves: at key >= 0, not the component's first tile (block 2p + 1 starts one tile later),
        # inside block 2p's end cut (d >= s_lo) and wholly below block 2p's first row
        if (n0 >= 0) & (d <= s_hi - BLOCK_N) & (d >= s_lo) & (d >= BLOCK_N - 1):
            acc, m_i, l_i = _attn_tile(acc, m_i, l_i, q, k, v, kmask[None, :], qk_scale, PREC, MASKED=False)
        else:
            if TMA:
                v = tl.where(kmask[:, None], v, tl.zeros_like(v))
            mask = (kmask[None, :] & (j[None, :] >= mb[:, None] - s_hi) & (j[None, :] < mb[:, None] - s_lo + BLOCK_N)
                    & (j[None, :] <= offs_m[:, None]))
            acc, m_i, l_i = _attn_tile(acc, m_i, l_i, q, k, v, mask, qk_scale, PREC)

    # phase 2: the columns <= the last row's block end (column_count of block 2p + 1, or 2p when it is the last);
    # each half skips the columns its own slash ranges cover (vertical_slash.py's PREF rule at its block start)
    n_col = tl.load(CCNT + bh64 * NQB + tl.minimum(2 * p + 1, NQB - 1))
    col_base = COLS + bh64 * NV
    pref = PREF + bh64 * (NPREF + 1)
    for c0 in range(0, n_col, BLOCK_N):
        cvalid = (c0 + rn) < n_col
        col = tl.load(col_base + c0 + rn, mask=cvalid, other=0)
        lo_a = tl.minimum(tl.maximum((m0 - col + PREF_UNIT - 1) // PREF_UNIT, 0), NPREF)
        hi_a = tl.minimum(tl.maximum((m0 - col + BLOCK_N + PREF_UNIT - 1) // PREF_UNIT, 0), NPREF)
        lo_b = tl.minimum(tl.maximum((m0 + BLOCK_N - col + PREF_UNIT - 1) // PREF_UNIT, 0), NPREF)
        hi_b = tl.minimum(tl.maximum((m0 + 2 * BLOCK_N - col + PREF_UNIT - 1) // PREF_UNIT, 0), NPREF)
        cov_a = (tl.load(pref + hi_a, mask=cvalid, other=0) - tl.load(pref + lo_a, mask=cvalid, other=0)) > 0
        cov_b = (tl.load(pref + hi_b, mask=cvalid, other=0) - tl.load(pref + lo_b, mask=cvalid, other=0)) > 0
        kmask = cvalid & (col >= 0) & (col < S) & ~(cov_a & cov_b)
        col64 = col.to(tl.int64)
        k = tl.load(k_base + col64[:, None] * skn + rd[None, :], mask=kmask[:, None] & dmask, other=0.0)
        v = tl.load(v_base + col64[:, None] * svn + rd[None, :], mask=kmask[:, None] & dmask, other=0.0)
        covered = tl.where(upper[:, None], cov_b[None, :], cov_a[None, :])
        mask = kmask[None, :] & ~covered & (col[None, :] <= offs_m[:, None])
        acc, m_i, l_i = _attn_tile(acc, m_i, l_i, q, k, v, mask, qk_scale, PREC)

    _store_o_tile(O, acc, l_i, b, h, r0, sob, soh, som, SQ, D, BLOCK_M, BLOCK_D)


def launch(q, k, v, work, idx, tiles, hm, prefix, n_pref: int, aligned: bool, qk_scale_: float, bd: int, prec: str,
           tma: bool, num_stages, num_warps):
    """Run _vs128_fwd_kernel for the prepared tensors of vertical_slash_attention_fwd (idx: the contiguous VSIndex,
    tiles: its RowPairTiles)."""
    B, Hq, SQ, D = q.shape
    S = k.shape[2]
    nqb = idx.tile_begin.shape[-1]
    n_prog = tiles.tile_begin.shape[-1]
    assert n_prog == triton.cdiv(nqb, 2), "RowPairTiles built for another q_len"
    descs = _common.tma_descriptors((HALF, HALF), bd, k, v) if tma else None
    warps, stages = (CFG if descs is None else CFG_TMA).get(bd, (8, 1))
    if q.element_size() == 4:  # fp32 tiles take twice the shared memory
        stages = min(stages, 2)
    stages = stages_override(stages, num_stages)
    warps = warps if num_warps is None else int(num_warps)
    if descs is None:
        tma_args = (k, v, 0, 0, 0, 0)
    else:
        (kd, krb, krh), (vd, vrb, vrh) = descs
        tma_args = (kd, vd, krb, krh, vrb, vrh)
    t = [x.contiguous() for x in tiles[1:]]
    _vs128_fwd_kernel[(n_prog, B * Hq)](
        q, k, v, work, *t, idx.columns, idx.column_count, prefix, hm if hm is not None else idx.tile_count,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), work.stride(0), work.stride(1), work.stride(2),
        SQ, S, Hq, Hq // k.shape[1], D, t[0].shape[-1], idx.columns.shape[-1], nqb, n_prog, n_pref, qk_scale_,
        *tma_args, BLOCK_N=HALF, BLOCK_D=bd, HAS_HM=hm is not None, PREC=prec,
        PREF_UNIT=HALF if aligned else 1, TMA=descs is not None, num_warps=warps, num_stages=stages)
