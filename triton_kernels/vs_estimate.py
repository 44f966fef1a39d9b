"""Fused vertical-slash estimate scores (Triton): column sums and diagonal sums of softmax(q_last k^T) without
the [L, S] probabilities in memory (ops/estimate.py `_score_chunk` is the torch reference, same semantics).

Two launches, grid (B * Hq, NSPLIT), each program a contiguous run of 64-key tiles of one query head (the G
query heads of a kv head are neighbouring programs, so their K tiles meet in L2):
1. `_vs_stats_kernel`: per-split row max / row sum of exp (online softmax statistics) -> [B*Hq, NSPLIT, BL].
2. `_vs_accum_kernel`: merges the splits' statistics, recomputes each score tile, p = exp(s - m) / l, writes the
   tile's column sums to vscore (each key column belongs to one program: plain stores) and its diagonal sums to
   sscore by offset i - j: the tile is written skewed (row r shifted right by BL-1-r) into a per-program
   [BL, W] fp32 scratch slab (L2-resident, reused every tile), read back so that each column of the slab is
   one diagonal, summed over the rows and added with one atomic per offset (a tile touches BN + BL - 1 offsets;
   neighbouring tiles share BL - 1 of them: with BL <= BN those ride in registers to the next tile of the program,
   so a program adds each offset once: BN atomics per tile instead of BN + BL - 1). sscore must start at zero.
"""
import os

import torch
import triton
import triton.language as tl

BLOCK_N = 64       # keys per tile
_PROGRAMS = 512    # target programs per launch (B * Hq * NSPLIT): ~4 per SM on an H100/H200
_MAX_SPLITS = 64   # splits per head (the merge of their statistics loads [NSPLIT, BL] per program)
MAX_LAST_Q = 128   # rows per program (BL = next power of 2 >= L, >= 16): larger last_q use the torch path
_NEG = tl.constexpr(-1.0e30)  # finite "minus infinity": empty splits merge to weight 0 instead of NaN


@triton.jit
def _score_tile(qs, k_ptr, kbase, sks, skd, S, L, t,
                BL: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, D: tl.constexpr, IEEE: tl.constexpr):
    # scores of the BL query rows against keys [t*BN, t*BN + BN) -> (s [BL, BN] fp32, valid [BL, BN], j [BN]);
    # row r is absolute position S - L + r: key j is valid iff j <= S - L + r and j < S (rows r >= L: none)
    j = t * BN + tl.arange(0, BN)
    d = tl.arange(0, BD)
    kt = tl.load(k_ptr + kbase + j[None, :].to(tl.int64) * sks + d[:, None] * skd,
                 mask=(j[None, :] < S) & (d[:, None] < D), other=0.0)
    if IEEE:
        s = tl.dot(qs, kt, input_precision="ieee")
    else:
        s = tl.dot(qs, kt)
    r = tl.arange(0, BL)
    valid = (r[:, None] < L) & (j[None, :] < S) & (j[None, :] <= S - L + r[:, None])
    return s, valid, j


@triton.jit
def _load_q(q_ptr, qbase, sqs, sqd, Q0, L, scale, BL: tl.constexpr, BD: tl.constexpr, D: tl.constexpr):
    # the last L query rows (from row Q0), scaled in fp32 and rounded back to the input dtype as the torch path
    r = tl.arange(0, BL)
    d = tl.arange(0, BD)
    q = tl.load(q_ptr + qbase + (Q0 + r[:, None]).to(tl.int64) * sqs + d[None, :] * sqd,
                mask=(r[:, None] < L) & (d[None, :] < D), other=0.0)
    return (q.to(tl.float32) * scale).to(q.dtype)


@triton.jit
def _vs_stats_kernel(q_ptr, k_ptr, m_ptr, l_ptr, sqb, sqh, sqs, sqd, skb, skh, sks, skd,
                     Hq, G, S, L, Q0, NSPLIT, TILES_PER, scale,
                     BL: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, D: tl.constexpr, IEEE: tl.constexpr):
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = bh // Hq
    hq = bh % Hq
    qs = _load_q(q_ptr, b.to(tl.int64) * sqb + hq.to(tl.int64) * sqh, sqs, sqd, Q0, L, scale, BL, BD, D)
    kbase = b.to(tl.int64) * skb + (hq // G).to(tl.int64) * skh
    m = tl.full([BL], _NEG, tl.float32)
    acc = tl.zeros([BL], tl.float32)
    # a fixed trip count (the last split's tiles past NTILES hold no valid key: they add nothing)
    for i in range(0, TILES_PER):
        t = split * TILES_PER + i
        s, valid, j = _score_tile(qs, k_ptr, kbase, sks, skd, S, L, t, BL, BN, BD, D, IEEE)
        s = tl.where(valid, s, _NEG)
        m_new = tl.maximum(m, tl.max(s, 1))
        acc = acc * tl.exp(m - m_new) + tl.sum(tl.where(valid, tl.exp(s - m_new[:, None]), 0.0), 1)
        m = m_new
    r = tl.arange(0, BL)
    out = (bh * NSPLIT + split) * BL + r
    tl.store(m_ptr + out, m)
    tl.store(l_ptr + out, acc)


@triton.jit
def _vs_accum_kernel(q_ptr, k_ptr, m_ptr, l_ptr, v_ptr, s_ptr, scr_ptr,
                     sqb, sqh, sqs, sqd, skb, skh, sks, skd,
                     Hq, G, S, L, Q0, NSPLIT, TILES_PER, scale,
                     BL: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, D: tl.constexpr, IEEE: tl.constexpr,
                     NSP: tl.constexpr, W: tl.constexpr, CARRY: tl.constexpr):
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = bh // Hq
    hq = bh % Hq
    r = tl.arange(0, BL)
    # merge the splits' statistics: m = max_i m_i, l = sum_i l_i exp(m_i - m)
    sp = tl.arange(0, NSP)
    st = (bh * NSPLIT + sp[:, None]) * BL + r[None, :]
    mp = tl.load(m_ptr + st, mask=sp[:, None] < NSPLIT, other=_NEG)
    lp = tl.load(l_ptr + st, mask=sp[:, None] < NSPLIT, other=0.0)
    m = tl.max(mp, 0)
    lsum = tl.sum(lp * tl.exp(mp - m[None, :]), 0)
    inv = tl.where(lsum > 0, 1.0 / tl.where(lsum > 0, lsum, 1.0), 0.0)

    qs = _load_q(q_ptr, b.to(tl.int64) * sqb + hq.to(tl.int64) * sqh, sqs, sqd, Q0, L, scale, BL, BD, D)
    kbase = b.to(tl.int64) * skb + (hq // G).to(tl.int64) * skh
    out = bh.to(tl.int64) * S
    # skewed slab: p[r, c] at column c - r + BL - 1, so column w holds the diagonal c - r = w - (BL - 1)
    scr = scr_ptr + (bh * NSPLIT + split).to(tl.int64) * (BL * W)
    c = tl.arange(0, BN)
    w = tl.arange(0, W)
    src = w[None, :] - (BL - 1) + r[:, None]  # the column c each slab entry came from
    carry = tl.zeros([BN], tl.float32)
    # a fixed trip count (the last split's tiles past NTILES hold no valid key: they add nothing)
    for i in range(0, TILES_PER):
        t = split * TILES_PER + i
        s, valid, j = _score_tile(qs, k_ptr, kbase, sks, skd, S, L, t, BL, BN, BD, D, IEEE)
        p = tl.where(valid, tl.exp(tl.where(valid, s, _NEG) - m[:, None]) * inv[:, None], 0.0)
        tl.store(v_ptr + out + j, tl.sum(p, 0), mask=j < S)
        tl.debug_barrier()  # the previous tile's slab reads are done before it is overwritten
        tl.store(scr + r[:, None] * W + (c[None, :] - r[:, None] + BL - 1), p)
        tl.debug_barrier()  # the slab is written before other threads read it
        diag = tl.sum(tl.load(scr + r[:, None] * W + w[None, :], mask=(src >= 0) & (src < BN), other=0.0), 0)
        # column w is offset i - j = (S - L + r) - (t*BN + c) = S - L - t*BN - w + BL - 1
        if CARRY:
            # W = 2 BN (BL <= BN): columns BN..2BN-1 are the next tile's columns 0..BN-1 (same offsets), so they
            # ride in registers to the next tile and each offset is added once per program, not twice
            lo, hi = tl.split(tl.permute(tl.reshape(diag, (2, BN)), (1, 0)))
            off = S - L - t * BN - c + BL - 1  # (c: the lower half's slab columns 0..BN-1)
            # relaxed: only the sums matter, no ordering with other memory (the default acq_rel fences each add)
            tl.atomic_add(s_ptr + out + off, lo + carry, mask=(off >= 0) & (off < S), sem="relaxed")
            carry = hi
        else:
            off = S - L - t * BN - w + BL - 1
            tl.atomic_add(s_ptr + out + off, diag, mask=(off >= 0) & (off < S) & (w < BN + BL - 1), sem="relaxed")
    if CARRY:  # the last tile's upper columns: offsets the next split's first tile adds to as well
        off = S - L - (split * TILES_PER + TILES_PER - 1) * BN - (c + BN) + BL - 1
        tl.atomic_add(s_ptr + out + off, carry, mask=(off >= 0) & (off < S) & (c + BN < BN + BL - 1), sem="relaxed")


def _buffer(shape, dev) -> torch.Tensor:
    """An fp32 buffer the kernels write in full before reading (tests poison it with NaN)."""
    return torch.empty(shape, dtype=torch.float32, device=dev)


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(int(n)))


def fused_applies(q: torch.Tensor, k: torch.Tensor, last_q: int) -> bool:
    """Whether `vs_estimate_scores` takes these inputs (rows per program bounded by MAX_LAST_Q; one float dtype)."""
    return (1 <= min(last_q, q.shape[2]) <= MAX_LAST_Q and k.shape[2] >= 1 and q.dtype == k.dtype
            and q.dtype in (torch.float32, torch.float16, torch.bfloat16))


def vs_estimate_scores(q: torch.Tensor, k: torch.Tensor, last_q: int, scale: float, programs: int = None):
    """q [B, Hq, Sq, D], k [B, Hkv, S, D] (same dtype; Sq <= S, the queries are the last Sq positions) ->
    (vscore, sscore), each fp32 [B, Hq, S]: the column sums and the diagonal sums (by offset i - j of absolute
    positions) of softmax(scale * q_last k^T) over the causal keys, q_last = the last L = min(last_q, Sq) rows.
    No sink / local forcing (the caller adds it). Two launches, no host sync; extra memory O(B Hq (NSPLIT BL W)):
    8 KiB (L <= 16) to 128 KiB (L > 64) of scratch per program, no [L, S] tensor. ``programs``: the target
    program count per launch (default: MINFERENCE_VS_EST_PROGRAMS, else 512; benchmarks.vs_index_profile sweeps it)."""
    B, Hq, Sq, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    assert k.shape[0] == B and k.shape[3] == D and Hq % Hkv == 0 and k.dtype == q.dtype, "q/k shapes or dtypes"
    L = min(last_q, Sq)
    assert 1 <= L <= MAX_LAST_Q, f"last rows {L} outside [1, {MAX_LAST_Q}]"
    BL, BD, BN = _pow2(L), _pow2(D), BLOCK_N
    W = triton.next_power_of_2(BN + BL - 1)
    ntiles = triton.cdiv(S, BN)
    if programs is None:
        programs = int(os.environ.get("MINFERENCE_VS_EST_PROGRAMS", _PROGRAMS))
    nsplit = max(1, min(ntiles, _MAX_SPLITS, programs // (B * Hq)))
    tiles_per = triton.cdiv(ntiles, nsplit)
    nsplit = triton.cdiv(ntiles, tiles_per)  # no empty split
    dev = q.device
    m_part = _buffer((B * Hq * nsplit * BL,), dev)
    l_part = _buffer((B * Hq * nsplit * BL,), dev)
    scratch = _buffer((B * Hq * nsplit * BL * W,), dev)
    vscore = _buffer((B, Hq, S), dev)
    sscore = torch.zeros(B, Hq, S, dtype=torch.float32, device=dev)
    args = (*q.stride(), *k.stride(), Hq, Hq // Hkv, S, L, Sq - L, nsplit, tiles_per, float(scale))
    meta = dict(BL=BL, BN=BN, BD=BD, D=D, IEEE=q.dtype == torch.float32,
                num_warps=8 if BL > 64 else 4)  # the [BL, W] slab read: 64 fp32 per thread at BL = 64
    grid = (B * Hq, nsplit)
    _vs_stats_kernel[grid](q, k, m_part, l_part, *args, **meta)
    _vs_accum_kernel[grid](q, k, m_part, l_part, vscore, sscore, scratch, *args, **meta,
                           NSP=triton.next_power_of_2(nsplit), W=W, CARRY=W == 2 * BN)
    return vscore, sscore
