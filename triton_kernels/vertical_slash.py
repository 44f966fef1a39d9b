"""Vertical-slash attention over a VSIndex (docs/DESIGN.md; block-rounded or aligned, as the index was built): slash
tiles, then uncovered columns."""
import torch
import triton
import triton.language as tl

from ._common import (_attn_tile, _q_tile, _softmax_init, _softmax_step, _store_o_tile, block_d, dot_precision,
                      finish, prepare, qk_scale, stages_override, tma_descriptors, use_tma)
from .vertical_slash_index import VSIndex, aligned_slots

# BLOCK_D -> (num_warps, num_stages). BLOCK_M is pinned to 64 by the semantics (64-row query blocks) and
# BLOCK_N to 64 by the tile width, so one warpgroup (4 warps) per 64-row tile. The K/V addresses come from
# the index (shifted tiles, gathered columns) and the loop branches per tile, so the software pipeline
# does not pay: measured on H100 at 64K (benchmarks/tune.py), 1 stage beats 2-4 by 14% (D=128) and 29% (D=64).
_CFG = {16: (4, 1), 32: (4, 1), 64: (4, 1), 128: (4, 1), 256: (8, 1)}
# with paired (64x128) slash tiles, H100 at 64K: 3 stages best at D=128 (1% over 2), 2 at D=64 (1% over 3)
_CFG_WIDE = {16: (4, 2), 32: (4, 2), 64: (4, 2), 128: (4, 3), 256: (8, 1)}
# with TMA slash tiles, H200 at 128K: 3 stages best at D=128, both budgets (NOTES row 17)
_TMA_STAGES = {128: 3}
BLOCK_M = 64
BLOCK_N = 64


@triton.jit
def _attn_tile_q8(acc, m_i, l_i, q, k, v, kscale, mask, qk_scale, PREC: tl.constexpr, QK8: tl.constexpr,
                  MASKED: tl.constexpr = True):
    # _attn_tile with low-precision q/k tiles (QK8 1: float8_e4m3fn, 2: int8; triton_kernels/qk_quant.py): the
    # product is exact (int32 / fp32 sums), then scaled per key (kscale [BN]) and per program (qk_scale holds
    # the q block's scale); V and P stay in V's dtype
    if QK8 == 2:
        qk = tl.dot(q, tl.trans(k), out_dtype=tl.int32).to(tl.float32)
    else:
        qk = tl.dot(q, tl.trans(k))
    return _softmax_step(acc, m_i, l_i, qk * kscale[None, :], v, mask, qk_scale, PREC, MASKED)


@triton.jit
def _slash_tile(acc, m_i, l_i, q, k_base, v_base, skn, svn, rd, dmask, offs_m, m0, d, s_lo, S, qk_scale,
                WIDTH: tl.constexpr, BLOCK_M: tl.constexpr, PREC: tl.constexpr,
                KD, VD, k_row, v_row, TMA: tl.constexpr, ks_base, QK8: tl.constexpr):
    # keys [m0 - d, m0 - d + WIDTH), cut at the component end m0 - s_lo + BLOCK_M (m0, offs_m: absolute positions;
    # S: kv_len). TMA: K/V tiles through the descriptors KD/VD (block [WIDTH, BLOCK_D]) from the head's first row
    # k_row/v_row; rows before key 0 or past the cut are other heads' or other keys: masked, V zeroed below
    rw = tl.arange(0, WIDTH)
    n0 = m0 - d
    j = n0 + rw
    kmask = (j >= 0) & (j < m0 - s_lo + BLOCK_M) & (j < S)
    if TMA:
        k = KD.load([(k_row + n0).to(tl.int32), 0])
        v = VD.load([(v_row + n0).to(tl.int32), 0])
    else:
        k = tl.load(k_base + tl.cast(n0, tl.int64) * skn + rw[:, None] * skn + rd[None, :],
                    mask=kmask[:, None] & dmask, other=0.0)
        v = tl.load(v_base + tl.cast(n0, tl.int64) * svn + rw[:, None] * svn + rd[None, :],
                    mask=kmask[:, None] & dmask, other=0.0)
    # full: at key >= 0, its last 64-key part (offset d_last) inside the component and wholly below the block's
    # first row
    d_last = d - WIDTH + BLOCK_M
    if QK8:  # per-key scales of the key's 64-key block (0 where masked)
        kscale = tl.load(ks_base + tl.where(kmask, j, 0) // BLOCK_M, mask=kmask, other=0.0)
    if (n0 >= 0) & (d_last >= s_lo) & (d_last >= BLOCK_M - 1):
        if QK8:
            acc, m_i, l_i = _attn_tile_q8(acc, m_i, l_i, q, k, v, kscale, kmask[None, :], qk_scale, PREC, QK8,
                                          MASKED=False)
        else:
            acc, m_i, l_i = _attn_tile(acc, m_i, l_i, q, k, v, kmask[None, :], qk_scale, PREC, MASKED=False)
    else:
        if TMA:
            v = tl.where(kmask[:, None], v, tl.zeros_like(v))
        mask = kmask[None, :] & (j[None, :] <= offs_m[:, None])
        if QK8:
            acc, m_i, l_i = _attn_tile_q8(acc, m_i, l_i, q, k, v, kscale, mask, qk_scale, PREC, QK8)
        else:
            acc, m_i, l_i = _attn_tile(acc, m_i, l_i, q, k, v, mask, qk_scale, PREC)
    return acc, m_i, l_i


@triton.jit
def _vs_fwd_kernel(Q, K, V, O, TOFF, TLO, TCNT, TBEG, WOFF, WLO, WCNT, WBEG, COLS, CCNT, PREF, HM,
                   sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som,
                   SQ, S, Hq, G, D, NS, NV, NQB, NPREF, qk_scale,
                   KD, VD, KWD, VWD, krb, krh, vrb, vrh, QS, KS, NKB,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   HAS_HM: tl.constexpr, PREC: tl.constexpr, WIDE: tl.constexpr, PREF_UNIT: tl.constexpr,
                   TMA: tl.constexpr = False, QK8: tl.constexpr = 0):
    # QK8 (1 fp8, 2 int8): Q/K hold the quantized operands, QS [B, Hq, NQB] / KS [B, Hkv, NKB] their 64-row block
    # scales (qk_quant.py); 0: QS/KS are not read
    # TMA: slash tiles through descriptors over K/V's 2-D row views (KD/VD block [BLOCK_N, BLOCK_D], KWD/VWD
    # [2 * BLOCK_N, BLOCK_D]; krb/krh/vrb/vrh: batch/head strides in rows); the gathered columns stay pointer loads
    # (a row gather: TMA gather is sm100 only)
    qb = NQB - 1 - tl.program_id(0)  # late query blocks carry the most work: schedule them first
    bh = tl.program_id(1)
    b = (bh // Hq).to(tl.int64)
    h = bh % Hq
    if HAS_HM:
        if tl.load(HM + h) == 0:
            return
    bh64 = bh.to(tl.int64)  # index tensors are contiguous [B, Hq, ...]
    kvh = (h // G).to(tl.int64)
    r0 = qb * BLOCK_M  # first local row; rows sit at absolute positions S - SQ + row (docs/DESIGN.md)
    m0 = S - SQ + r0
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    rd = tl.arange(0, BLOCK_D)
    offs_m = m0 + rm
    dmask = rd[None, :] < D

    q = _q_tile(Q, b, h, r0, sqb, sqh, sqm, SQ, D, BLOCK_M, BLOCK_D)
    ks_base = KS
    if QK8:
        qk_scale = qk_scale * tl.load(QS + bh64 * NQB + qb)  # q blocks of 64 rows from row 0: this program's
        ks_base = KS + (b * (Hq // G) + kvh) * NKB
    k_base = K + b * skb + kvh * skh
    v_base = V + b * svb + kvh * svh
    k_row = b * krb + kvh * krh
    v_row = b * vrb + kvh * vrh

    acc, m_i, l_i = _softmax_init(BLOCK_M, BLOCK_D)

    # phase 1: slash tiles, double-width ones first (pair=True index; constexpr WIDE: without them the loop is
    # not compiled, its 64x128 registers cost ~8%), then single ones
    if WIDE:
        w_begin = tl.load(WBEG + bh64 * NQB + qb)
        for t in range(w_begin, tl.load(WCNT + bh64)):
            acc, m_i, l_i = _slash_tile(acc, m_i, l_i, q, k_base, v_base, skn, svn, rd, dmask, offs_m, m0,
                                        tl.load(WOFF + bh64 * NS + t), tl.load(WLO + bh64 * NS + t), S, qk_scale,
                                        2 * BLOCK_N, BLOCK_M, PREC, KWD, VWD, k_row, v_row, TMA, ks_base, QK8)
    t_begin = tl.load(TBEG + bh64 * NQB + qb)
    for t in range(t_begin, tl.load(TCNT + bh64)):
        acc, m_i, l_i = _slash_tile(acc, m_i, l_i, q, k_base, v_base, skn, svn, rd, dmask, offs_m, m0,
                                    tl.load(TOFF + bh64 * NS + t), tl.load(TLO + bh64 * NS + t), S, qk_scale,
                                    BLOCK_N, BLOCK_M, PREC, KD, VD, k_row, v_row, TMA, ks_base, QK8)

    # phase 2: vertical columns <= m0 + 63, skipping those a slash range of this block already covers
    # (column c is covered iff some selected offset lies in [m0 - c, m0 - c + 63]). PREF counts offsets below x in
    # units of PREF_UNIT: 1 (slash_prefix) or, aligned, BLOCK_M (tile_prefix: offsets are multiples of BLOCK_M,
    # the range holds one, d = BLOCK_M * ceil((m0 - c) / BLOCK_M)); NPREF + 1 entries. m0 - c >= -(BLOCK_M - 1),
    # so the aligned division's operand is >= 0 (Triton divides toward zero)
    n_col = tl.load(CCNT + bh64 * NQB + qb)
    col_base = COLS + bh64 * NV
    pref = PREF + bh64 * (NPREF + 1)
    for c0 in range(0, n_col, BLOCK_N):
        cvalid = (c0 + rn) < n_col
        col = tl.load(col_base + c0 + rn, mask=cvalid, other=0)
        lo = tl.minimum(tl.maximum((m0 - col + PREF_UNIT - 1) // PREF_UNIT, 0), NPREF)
        hi = tl.minimum(tl.maximum((m0 - col + BLOCK_M + PREF_UNIT - 1) // PREF_UNIT, 0), NPREF)
        covered = (tl.load(pref + hi, mask=cvalid, other=0) - tl.load(pref + lo, mask=cvalid, other=0)) > 0
        kmask = cvalid & (col >= 0) & (col < S) & ~covered
        col64 = col.to(tl.int64)
        k = tl.load(k_base + col64[:, None] * skn + rd[None, :], mask=kmask[:, None] & dmask, other=0.0)
        v = tl.load(v_base + col64[:, None] * svn + rd[None, :], mask=kmask[:, None] & dmask, other=0.0)
        mask = kmask[None, :] & (col[None, :] <= offs_m[:, None])
        if QK8:
            kscale = tl.load(ks_base + tl.where(kmask, col, 0) // BLOCK_M, mask=kmask, other=0.0)
            acc, m_i, l_i = _attn_tile_q8(acc, m_i, l_i, q, k, v, kscale, mask, qk_scale, PREC, QK8)
        else:
            acc, m_i, l_i = _attn_tile(acc, m_i, l_i, q, k, v, mask, qk_scale, PREC)

    _store_o_tile(O, acc, l_i, b, h, r0, sob, soh, som, SQ, D, BLOCK_M, BLOCK_D)


def vertical_slash_attention_fwd(q, k, v, index: VSIndex, scale=None, head_mask=None, out=None, block=BLOCK_M,
                                 tma=None, num_stages=None, qk_format=None, smooth_k=True):
    """q [B,Hq,Sq,D], k/v [B,Hkv,S,D] (Sq <= S: the queries are the last Sq positions), index: VSIndex built for
    [B,Hq] with seq_len S, q_len Sq and `block`; head_mask: bool [Hq] or None. Returns out [B,Hq,Sq,D] (dtype of q;
    in place if given).

    `block` (rows per query block = slash tile width) is 64 in the library's semantics; 16 and 32 exist
    for the slash-granularity experiment (benchmarks/granularity.py): finer blocks compute fewer
    elements per scattered slash, on smaller matrix products.
    tma: read the slash tiles' K/V through TMA tensor descriptors (None: MINFERENCE_TMA, default auto = on at
    D >= 128 on sm90+; pointer loads where the layout or device does not allow it). num_stages: override the tuned pipeline
    depth (None: MINFERENCE_NUM_STAGES or the table).
    qk_format: None (Q.K^T in the inputs' dtype), "fp8" or "int8": Q.K^T on 64-row block-scaled operands, K
    smoothed first unless smooth_k=False (triton_kernels/qk_quant.py; reference: naive_fp8.fp8_attention_ref).
    Opt-in: accuracy is model-dependent (benchmarks/NOTES.md "FP8"); speed not yet measured."""
    B, Hq, SQ, D = q.shape
    S = k.shape[2]
    assert SQ <= S, "q_len must be <= kv_len"
    q, k, v, hm, out, work = prepare(q, k, v, head_mask, out)
    dt = q.dtype  # of the attention (P, V and the output); q / k may become the quantized operands below
    qk8, qs, ks = 0, q, q  # QS / KS slots: not read without quantized operands
    if qk_format is not None:
        from .qk_quant import qk_format as _fmt, quantize_qk
        fmt = _fmt(qk_format)
        if block != BLOCK_M:
            raise ValueError("qk_format needs the 64-row query blocks (its scales are per 64 rows)")
        q, qs, k, ks = quantize_qk(q, k, fmt, smooth_k)
        qk8 = 2 if fmt == torch.int8 else 1
    idx = VSIndex(*(t.contiguous() for t in index))
    assert block in (16, 32, 64), "block must be 16, 32 or 64"
    nqb = triton.cdiv(SQ, block)
    aligned = idx.tile_prefix.shape[-1] > 0
    prefix = idx.tile_prefix if aligned else idx.slash_prefix
    n_pref = aligned_slots(S, block) if aligned else S
    assert idx.tile_begin.shape[-1] == nqb and prefix.shape[-1] == n_pref + 1, "index built for another seq_len/block"
    if SQ == 0:
        return finish(out, work, head_mask)
    bd = block_d(D)
    wide = idx.wide_offset.shape[-1] > 0
    warps, stages = (_CFG_WIDE if wide else _CFG).get(bd, (8, 1))
    warps = max(1, warps * block // BLOCK_M)  # one warp per 16 rows
    if v.element_size() == 4:  # fp32 tiles take twice the shared memory
        stages = min(stages, 2)
    # TMA slash tiles: on by default at D >= 128 only (NOTES row 17: -15% time at D=128, +37% at D=64)
    descs = (tma_descriptors((block, block, 2 * block, 2 * block), bd, k, v, k, v)
             if use_tma(tma, bd >= 128, k, v) else None)
    if descs is not None:
        stages = _TMA_STAGES.get(bd, stages)
        if v.element_size() == 4:
            stages = min(stages, 2)
    stages = stages_override(stages, num_stages)
    if descs is None:  # the descriptor slots are not read (TMA=False): any pointer
        tma_args = (k, v, k, v, 0, 0, 0, 0)
    else:
        (kd, krb, krh), (vd, vrb, vrh), (kwd, _, _), (vwd, _, _) = descs
        tma_args = (kd, vd, kwd, vwd, krb, krh, vrb, vrh)
    grid = (nqb, B * Hq)
    _vs_fwd_kernel[grid](
        q, k, v, work, idx.tile_offset, idx.tile_lo, idx.tile_count, idx.tile_begin,
        idx.wide_offset if wide else idx.tile_offset, idx.wide_lo if wide else idx.tile_lo, idx.wide_count,
        idx.wide_begin, idx.columns,
        idx.column_count, prefix, hm if hm is not None else idx.tile_count,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), work.stride(0), work.stride(1), work.stride(2),
        SQ, S, Hq, Hq // k.shape[1], D, idx.tile_offset.shape[-1], idx.columns.shape[-1], nqb, n_pref,
        qk_scale(scale, D), *tma_args, qs, ks, ks.shape[-1] if qk8 else 0, BLOCK_M=block, BLOCK_N=block,
        BLOCK_D=bd, HAS_HM=hm is not None, PREC=dot_precision(dt), WIDE=wide, PREF_UNIT=block if aligned else 1,
        TMA=descs is not None, QK8=qk8, num_warps=warps, num_stages=stages)
    return finish(out, work, head_mask)
