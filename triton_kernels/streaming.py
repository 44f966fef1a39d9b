"""A-shape / StreamingLLM attention: row i attends j iff j <= i and (j < init_num or i - j < local_window)."""
import torch
import triton
import triton.language as tl

from ._common import (_attn_tile, _q_tile, _softmax_init, _store_o_tile, block_d, dot_precision, finish, prepare,
                      qk_scale, qkv_load_args, stages_override)

# BLOCK_D -> (BLOCK_M, num_warps, num_stages). The pattern is element-exact, so BLOCK_M is free: 128 rows halve
# the K/V re-reads of 64; at BLOCK_D 256 the 128-row fp32 accumulator would spill, so 64 rows there.
# Measured on H100 at 64K, 128 + 4096 (benchmarks/tune.py): D=128 (128, 8, 3) ties the best (64, 4, 2);
# D=64 (128, 4, 4) is best, 3% over 3 stages.
_CFG = {16: (128, 4, 4), 32: (128, 4, 4), 64: (128, 4, 4), 128: (128, 8, 3), 256: (64, 8, 2)}
_BLOCK_N = {}  # BLOCK_D -> key tile width where measured to beat 64
# with TMA loads (on by default on sm90+, NOTES row 17), H200 at 128K: 3 stages best at D=128 and D=64
_TMA_STAGES = {64: 3, 128: 3}


@triton.jit
def _kv_tiles(K, V, k_base, v_base, n0, rn, rd, kmask, dmask, skn, svn, TMA: tl.constexpr, MASKED: tl.constexpr):
    # the K/V key tile [n0, n0 + BLOCK_N): rows outside kmask read as 0 (TMA: k_base/v_base are the head's first
    # row in the descriptors' row views; rows past the head's S are another head's, so masked tiles zero V)
    if TMA:
        k = K.load([(k_base + n0).to(tl.int32), 0])
        v = V.load([(v_base + n0).to(tl.int32), 0])
        if MASKED:
            v = tl.where(kmask[:, None], v, tl.zeros_like(v))
    else:
        kp = k_base + tl.cast(n0, tl.int64) * skn + rn[:, None] * skn + rd[None, :]
        vp = v_base + tl.cast(n0, tl.int64) * svn + rn[:, None] * svn + rd[None, :]
        k = tl.load(kp, mask=kmask[:, None] & dmask, other=0.0)
        v = tl.load(vp, mask=kmask[:, None] & dmask, other=0.0)
    return k, v


@triton.jit
def _streaming_tile(acc, m_i, l_i, q, K, V, k_base, v_base, n0, offs_m, rn, rd, dmask, skn, svn, S, init, local,
                    qk_scale, PREC: tl.constexpr, MASKED: tl.constexpr, TMA: tl.constexpr):
    j = n0 + rn
    kmask = j < S
    k, v = _kv_tiles(K, V, k_base, v_base, n0, rn, rd, kmask, dmask, skn, svn, TMA, MASKED)
    diff = offs_m[:, None] - j[None, :]
    mask = (diff >= 0) & ((diff < local) | (j[None, :] < init)) & kmask[None, :]
    return _attn_tile(acc, m_i, l_i, q, k, v, mask, qk_scale, PREC, MASKED)


@triton.jit
def _streaming_fwd_kernel(Q, K, V, O, INIT, LOCAL, HM,
                          sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som,
                          SQ, S, Hq, G, D, qk_scale,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                          HAS_HM: tl.constexpr, PREC: tl.constexpr, TMA: tl.constexpr = False):
    # TMA: Q/K/V are tensor descriptors over 2-D row views (_common.tma_descriptors) and the b/h strides are
    # in rows (the n strides unused); else pointers and element strides
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // Hq).to(tl.int64)
    h = bh % Hq
    if HAS_HM:
        if tl.load(HM + h) == 0:
            return
    kvh = (h // G).to(tl.int64)
    r0 = qb * BLOCK_M  # first local row; rows sit at absolute positions S - SQ + row (element-exact pattern)
    m0 = S - SQ + r0
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    rd = tl.arange(0, BLOCK_D)
    offs_m = m0 + rm
    dmask = rd[None, :] < D

    if TMA:
        q = Q.load([(b * sqb + h * sqh + r0).to(tl.int32), 0])  # rows past SQ: not stored
        k_base = b * skb + kvh * skh
        v_base = b * svb + kvh * svh
    else:
        q = _q_tile(Q, b, h, r0, sqb, sqh, sqm, SQ, D, BLOCK_M, BLOCK_D)
        k_base = K + b * skb + kvh * skh
        v_base = V + b * svb + kvh * svh

    init = tl.maximum(tl.load(INIT + h), 0)
    local = tl.maximum(tl.load(LOCAL + h), 0)
    lo = tl.maximum(m0 - local + 1, 0)  # first key some row of the block sees through its local window
    end1 = tl.minimum(init, lo)         # sink keys below `lo`: every row of the block attends them
    hi = tl.minimum(m0 + BLOCK_M, S)

    acc, m_i, l_i = _softmax_init(BLOCK_M, BLOCK_D)

    # phase 1: sink keys [0, end1), no mask but the bound
    for n0 in range(0, end1, BLOCK_N):
        kmask = (n0 + rn) < end1
        k, v = _kv_tiles(K, V, k_base, v_base, n0, rn, rd, kmask, dmask, skn, svn, TMA, True)
        acc, m_i, l_i = _attn_tile(acc, m_i, l_i, q, k, v, kmask[None, :], qk_scale, PREC)

    # phase 2: keys [lo, hi): causal, and local window or sink. Keys in [full_lo, m0) are inside every row's
    # window and below every row, so that middle run needs no mask; the edges [lo, full_lo) and [m0, hi) do.
    edge = tl.minimum(tl.maximum(m0 + BLOCK_M - local, lo), m0)
    full_lo = tl.minimum(lo + tl.cdiv(edge - lo, BLOCK_N) * BLOCK_N, hi)  # first tile on lo's grid past the edge
    full_hi = tl.maximum(full_lo + ((m0 + 1 - full_lo) // BLOCK_N) * BLOCK_N, full_lo)  # tiles ending <= m0
    for n0 in range(lo, full_lo, BLOCK_N):
        acc, m_i, l_i = _streaming_tile(acc, m_i, l_i, q, K, V, k_base, v_base, n0, offs_m, rn, rd, dmask, skn,
                                        svn, S, init, local, qk_scale, PREC, True, TMA)
    for n0 in range(full_lo, full_hi, BLOCK_N):
        acc, m_i, l_i = _streaming_tile(acc, m_i, l_i, q, K, V, k_base, v_base, n0, offs_m, rn, rd, dmask, skn,
                                        svn, S, init, local, qk_scale, PREC, False, TMA)
    for n0 in range(full_hi, hi, BLOCK_N):
        acc, m_i, l_i = _streaming_tile(acc, m_i, l_i, q, K, V, k_base, v_base, n0, offs_m, rn, rd, dmask, skn,
                                        svn, S, init, local, qk_scale, PREC, True, TMA)

    _store_o_tile(O, acc, l_i, b, h, r0, sob, soh, som, SQ, D, BLOCK_M, BLOCK_D)


def streaming_attention_fwd(q, k, v, init_num, local_window, scale=None, head_mask=None, out=None, tma=None,
                            num_stages=None):
    """q [B,Hq,Sq,D], k/v [B,Hkv,S,D] (Sq <= S: the queries are the last Sq positions); init_num, local_window:
    int32 [Hq] (per head); head_mask: bool [Hq] or None. tma: read Q/K/V tiles through TMA tensor descriptors
    (None: MINFERENCE_TMA, default auto = on where available; pointer loads where the layout or device does not
    allow it).
    num_stages: override the tuned pipeline depth (None: MINFERENCE_NUM_STAGES or the table).

    Returns out [B,Hq,Sq,D] (dtype of q; written in place if given; heads off in head_mask untouched).
    """
    B, Hq, SQ, D = q.shape
    S = k.shape[2]
    assert SQ <= S, "q_len must be <= kv_len"
    q, k, v, hm, out, work = prepare(q, k, v, head_mask, out)
    if SQ == 0:
        return finish(out, work, head_mask)
    bd = block_d(D)
    bm, warps, stages = _CFG.get(bd, (64, 8, 1))
    if q.element_size() == 4:  # fp32 tiles take twice the shared memory
        bm, stages = 64, min(stages, 2)
    bn = _BLOCK_N.get(bd, 64)
    args = qkv_load_args((bm, bn, bn), bd, q, k, v, tma, auto=True)
    if not torch.is_tensor(args[0]):  # TMA: 3 stages measured best at D=64 and D=128 (NOTES row 17)
        stages = _TMA_STAGES.get(bd, stages) if q.element_size() < 4 else stages
    stages = stages_override(stages, num_stages)
    init = torch.as_tensor(init_num, device=q.device).to(torch.int32).reshape(-1).expand(Hq).contiguous()
    local = torch.as_tensor(local_window, device=q.device).to(torch.int32).reshape(-1).expand(Hq).contiguous()
    grid = (triton.cdiv(SQ, bm), B * Hq)
    _streaming_fwd_kernel[grid](
        args[0], args[4], args[8], work, init, local, hm if hm is not None else init,
        *args[1:4], *args[5:8], *args[9:12], work.stride(0), work.stride(1), work.stride(2),
        SQ, S, Hq, Hq // k.shape[1], D, qk_scale(scale, D),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, HAS_HM=hm is not None, PREC=dot_precision(q.dtype),
        TMA=not torch.is_tensor(args[0]), num_warps=warps, num_stages=stages)
    return finish(out, work, head_mask)
