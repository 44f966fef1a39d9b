"""Block-sparse attention: each 64-row query block attends its listed 64-key blocks (token-causal)."""
import torch
import triton
import triton.language as tl

from ._common import (_attn_tile, _q_tile, _softmax_init, _store_o_tile, block_d, dot_precision, finish, prepare,
                      qk_scale, qkv_load_args, stages_override)

# BLOCK_D -> (num_warps, num_stages). BLOCK_M = BLOCK_N = 64 are fixed by the 64x64 block semantics: one
# warpgroup per tile. Measured on H100 at 64K top-100 (benchmarks/tune.py): 3 stages best at D=128 (2% over
# 2), 2 stages at D=64 (7% over 3); 8 warps always slower.
_CFG = {16: (4, 2), 32: (4, 2), 64: (4, 2), 128: (4, 3), 256: (8, 1)}
BLOCK = 64


@triton.jit
def _bs_fwd_kernel(Q, K, V, O, IDX, CNT, HM,
                   sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som,
                   SQ, S, Hq, G, D, NQB, KMAX, qk_scale,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   HAS_HM: tl.constexpr, PREC: tl.constexpr, TMA: tl.constexpr = False):
    # TMA: Q/K/V are tensor descriptors over 2-D row views (_common.tma_descriptors) and the b/h strides are
    # in rows (the n strides unused); else pointers and element strides
    qb = NQB - 1 - tl.program_id(0)  # late query blocks carry the most work: schedule them first
    bh = tl.program_id(1)
    b = (bh // Hq).to(tl.int64)
    h = bh % Hq
    if HAS_HM:
        if tl.load(HM + h) == 0:
            return
    row = bh.to(tl.int64) * NQB + qb  # index tensors are contiguous [B, Hq, NQB, ...]
    kvh = (h // G).to(tl.int64)
    r0 = qb * BLOCK_M  # first local row; rows sit at absolute positions S - SQ + row, key blocks are absolute
    m0 = S - SQ + r0
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    rd = tl.arange(0, BLOCK_D)
    offs_m = m0 + rm
    dmask = rd[None, :] < D

    if TMA:
        q = Q.load([(b * sqb + h * sqh + r0).to(tl.int32), 0])  # rows past SQ: not stored
        k_row = (b * skb + kvh * skh).to(tl.int32)
        v_row = (b * svb + kvh * svh).to(tl.int32)
    else:
        q = _q_tile(Q, b, h, r0, sqb, sqh, sqm, SQ, D, BLOCK_M, BLOCK_D)
        k_base = K + b * skb + kvh * skh
        v_base = V + b * svb + kvh * svh

    acc, m_i, l_i = _softmax_init(BLOCK_M, BLOCK_D)

    # the wrapper compacted each row to its unique causal ids (kb * 64 <= the block's last position) in ascending
    # order, so only the last one (block-aligned offset) or two can hold keys past the block's first row: the
    # others are full 64x64 blocks below it and need no mask
    n_sel = tl.load(CNT + row)
    n_diag = tl.where(m0 % BLOCK_N == 0, 1, 2)
    for s in range(0, n_sel - n_diag):
        kb = tl.load(IDX + row * KMAX + s)
        if TMA:
            k = K.load([k_row + kb * BLOCK_N, 0])
            v = V.load([v_row + kb * BLOCK_N, 0])
        else:
            n0 = tl.cast(kb, tl.int64) * BLOCK_N
            k = tl.load(k_base + n0 * skn + rn[:, None] * skn + rd[None, :], mask=dmask, other=0.0)
            v = tl.load(v_base + n0 * svn + rn[:, None] * svn + rd[None, :], mask=dmask, other=0.0)
        acc, m_i, l_i = _attn_tile(acc, m_i, l_i, q, k, v, dmask, qk_scale, PREC, MASKED=False)
    for s in range(tl.maximum(n_sel - n_diag, 0), n_sel):
        kb = tl.load(IDX + row * KMAX + s)
        j = kb * BLOCK_N + rn
        kmask = j < S
        if TMA:  # rows past S are another head's (or padding): masked scores, and V zeroed so 0 * NaN can't leak
            k = K.load([k_row + kb * BLOCK_N, 0])
            v = V.load([v_row + kb * BLOCK_N, 0])
            v = tl.where(kmask[:, None], v, tl.zeros_like(v))
        else:
            n0 = tl.cast(kb, tl.int64) * BLOCK_N
            k = tl.load(k_base + n0 * skn + rn[:, None] * skn + rd[None, :], mask=kmask[:, None] & dmask, other=0.0)
            v = tl.load(v_base + n0 * svn + rn[:, None] * svn + rd[None, :], mask=kmask[:, None] & dmask, other=0.0)
        mask = kmask[None, :] & (j[None, :] <= offs_m[:, None])
        acc, m_i, l_i = _attn_tile(acc, m_i, l_i, q, k, v, mask, qk_scale, PREC)

    _store_o_tile(O, acc, l_i, b, h, r0, sob, soh, som, SQ, D, BLOCK_M, BLOCK_D)


def _compact(block_index: torch.Tensor, q_len: int, kv_len: int):
    # per row: the unique causal ids (0 <= kb <= the key block of the query block's last position) first
    # (ascending), then -1 -> (ids int32, count int32)
    bi = block_index.to(torch.int64)
    last = torch.clamp(torch.arange(bi.shape[2], device=bi.device) * BLOCK + (kv_len - q_len) + BLOCK - 1,
                       max=kv_len - 1)
    qb = (last // BLOCK)[:, None]
    big = torch.iinfo(torch.int64).max
    x = torch.where((bi >= 0) & (bi <= qb), bi, big).sort(-1).values
    dup = torch.zeros_like(x, dtype=torch.bool)
    dup[..., 1:] = x[..., 1:] == x[..., :-1]
    x = torch.where(dup, big, x).sort(-1).values
    cnt = (x != big).sum(-1).to(torch.int32).contiguous()
    return torch.where(x == big, -1, x).to(torch.int32).contiguous(), cnt


def block_sparse_attention_fwd(q, k, v, block_index, scale=None, head_mask=None, out=None, compact=False, tma=None,
                               num_stages=None):
    """q [B,Hq,Sq,D], k/v [B,Hkv,S,D] (Sq <= S: the queries are the last Sq positions), block_index
    [B,Hq,ceil(Sq/64),K] int absolute key-block ids (-1 = padding; duplicates and non-causal ids select nothing);
    head_mask bool [Hq] or None. Returns out [B,Hq,Sq,D].
    compact=True: block_index is block_sparse_index's output (unique causal ids ascending, then -1), so the
    per-call clean-up sort is skipped.
    tma: read Q/K/V tiles through TMA tensor descriptors (None: MINFERENCE_TMA=1 on; default off for this kernel,
    which tied with pointer loads; falls back to pointer loads, logged once, where the layout or device does not
    allow it). num_stages: override the tuned pipeline
    depth (None: MINFERENCE_NUM_STAGES or the table)."""
    B, Hq, SQ, D = q.shape
    S = k.shape[2]
    assert SQ <= S, "q_len must be <= kv_len"
    q, k, v, hm, out, work = prepare(q, k, v, head_mask, out)
    nqb = triton.cdiv(SQ, BLOCK)
    if block_index.dim() != 4 or tuple(block_index.shape[:3]) != (B, Hq, nqb):
        raise ValueError(f"block_index must be [B, Hq, ceil(q_len/64), K] = [{B}, {Hq}, {nqb}, K], got "
                         f"{tuple(block_index.shape)} (a broadcast head or batch dim would be read out of bounds)")
    if SQ == 0:
        return finish(out, work, head_mask)
    if compact:  # block_sparse_index's output is already unique causal ids, ascending, then -1: no re-sort
        ids = block_index.to(torch.int32).contiguous()
        cnt = (ids >= 0).sum(-1, dtype=torch.int32).contiguous()
    else:
        ids, cnt = _compact(block_index, SQ, S)
    bd = block_d(D)
    warps, stages = _CFG.get(bd, (8, 1))
    if q.element_size() == 4:  # fp32 tiles take twice the shared memory
        stages = min(stages, 2)
    stages = stages_override(stages, num_stages)
    args = qkv_load_args((BLOCK, BLOCK, BLOCK), bd, q, k, v, tma)
    grid = (nqb, B * Hq)
    _bs_fwd_kernel[grid](
        args[0], args[4], args[8], work, ids, cnt, hm if hm is not None else cnt,
        *args[1:4], *args[5:8], *args[9:12], work.stride(0), work.stride(1), work.stride(2),
        SQ, S, Hq, Hq // k.shape[1], D, nqb, ids.shape[-1], qk_scale(scale, D),
        BLOCK_M=BLOCK, BLOCK_N=BLOCK, BLOCK_D=bd, HAS_HM=hm is not None, PREC=dot_precision(q.dtype),
        TMA=not torch.is_tensor(args[0]), num_warps=warps, num_stages=stages)
    return finish(out, work, head_mask)
