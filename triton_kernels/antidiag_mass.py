"""Fused strided-antidiagonal block mass (block_sparse_antidiag, id 6; ops/adaptive.py antidiag_block_mass is the
torch form with the same semantics): two flash-style passes over the causal strided key tiles per tile of strided
query rows, the probabilities summed straight into 64 x 64 blocks; the [S/s x S/s] matrix never reaches memory."""
import math

import torch
import triton
import triton.language as tl

from ._common import LOG2E, block_d, dot_precision, last_dim_contig

# BLOCK_D -> (num_warps, num_stages). Not timed yet (written without a GPU); chosen from ptxas -v on sm_90a
# (triton.compile to a GPUTarget offline, bf16, stride 8, 64 x 64 tiles): 4 warps need > 255 registers and spill
# (D=64: 68 B), 8 warps fit at D=64 (172 registers) and spill 48 B at D=128 (255). The term loop (s products of
# width D: the antidiagonal terms) is not software-pipelined by Triton 3.6 (same shared memory at 1-3 stages).
_CFG = {16: (8, 1), 32: (8, 1), 64: (8, 1), 128: (8, 1), 256: (8, 1)}
# strided query rows per program (a multiple of the strided rows per 64-block, 64 / s): 128 measured 27% faster
# than 64 on the H200 (128K, Qwen2.5-0.5B layer, stride 8: 15.8 vs 21.5 ms; benchmarks/NOTES.md row 18): half
# the K tile re-reads per product
BLOCK_M = 128
BLOCK_N = 64  # strided key columns per tile (likewise a multiple of 64 / s: a tile holds whole key blocks)


@triton.jit
def _strided_logits(Qh, Kh, sqm, skn, m, n, S, D, STRIDE: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    # [BLOCK_M, BLOCK_N] fp32: strided row m . strided column n = sum_j q[m*s + s-1-j] . k[n*s + j]; rows past S
    # read as zero vectors (the torch form pads them with zeros), as do columns d >= D
    rd = tl.arange(0, BLOCK_D)
    dmask = rd[None, :] < D
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for j in range(STRIDE):
        qr = m * STRIDE + (STRIDE - 1 - j)
        kr = n * STRIDE + j
        qt = tl.load(Qh + qr.to(tl.int64)[:, None] * sqm + rd[None, :], mask=(qr[:, None] < S) & dmask, other=0.0)
        kt = tl.load(Kh + kr.to(tl.int64)[:, None] * skn + rd[None, :], mask=(kr[:, None] < S) & dmask, other=0.0)
        acc = tl.dot(qt, tl.trans(kt), acc, input_precision=PREC)
    return acc


@triton.jit
def _antidiag_mass_kernel(Q, K, OUT, sqb, sqh, sqm, skb, skh, skn, sob, soh, soq,
                          S, NS, Hq, G, D, NKB, R0, R1, qk_scale,
                          STRIDE: tl.constexpr, PER: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    # strided rows [R0 * PER, M_END) of query blocks R0..R1-1; program (bh, t) takes BLOCK_M of them. Heads on the
    # fast grid axis, late tiles (the most causal columns) first: every head's heaviest tiles start before any
    # head's light ones (longest first keeps the tail short)
    m_end = tl.minimum(NS, R1 * PER)
    n_tiles = tl.cdiv(m_end - R0 * PER, BLOCK_M)
    bh = tl.program_id(0)
    t = n_tiles - 1 - tl.program_id(1)
    b = (bh // Hq).to(tl.int64)
    h = bh % Hq
    Qh = Q + b * sqb + h.to(tl.int64) * sqh
    Kh = K + b * skb + (h // G).to(tl.int64) * skh
    m0 = R0 * PER + t * BLOCK_M
    m = m0 + tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    hi = tl.minimum(m0 + BLOCK_M, NS)  # causal columns n <= m < m0 + BLOCK_M, and n < NS

    # pass 1: running row max and sum of exp (base 2; qk_scale = log2(e) / (s sqrt(D))). Column 0 is causal for
    # every row, so the first tile makes each row max finite: no -inf - -inf
    m_i = tl.full([BLOCK_M], -1e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for n0 in range(0, hi, BLOCK_N):
        n = n0 + rn
        qk = _strided_logits(Qh, Kh, sqm, skn, m, n, S, D, STRIDE, BLOCK_M, BLOCK_N, BLOCK_D, PREC) * qk_scale
        qk = tl.where((n[None, :] <= m[:, None]) & (n[None, :] < NS), qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        l_i = l_i * tl.math.exp2(m_i - m_new) + tl.sum(tl.math.exp2(qk - m_new[:, None]), 1)
        m_i = m_new

    # per row: 1 / (row sum * strided rows of its query block), so the block sums below are already the block
    # means; rows past the range weigh 0 (their count clamped to 1: no division by 0)
    n_rows = tl.maximum(tl.minimum(NS - (m // PER) * PER, PER), 1).to(tl.float32)
    w = tl.where(m < m_end, 1.0 / (l_i * n_rows), 0.0)
    qb = m0 // PER + tl.arange(0, BLOCK_M // PER)
    kbt = tl.arange(0, BLOCK_N // PER)
    out_rows = OUT + b * sob + h.to(tl.int64) * soh + (qb - R0).to(tl.int64)[:, None] * soq
    row_ok = (qb < R1)[:, None]

    # pass 2: the normalised probabilities again, summed per (query block, key block); a tile holds whole blocks,
    # so each is final when stored
    for n0 in range(0, hi, BLOCK_N):
        n = n0 + rn
        qk = _strided_logits(Qh, Kh, sqm, skn, m, n, S, D, STRIDE, BLOCK_M, BLOCK_N, BLOCK_D, PREC) * qk_scale
        causal = (n[None, :] <= m[:, None]) & (n[None, :] < NS)
        p = tl.where(causal, tl.math.exp2(qk - m_i[:, None]), 0.0) * w[:, None]
        p = tl.sum(tl.reshape(p, [BLOCK_M, BLOCK_N // PER, PER]), 2)  # over each key block's columns
        p = tl.sum(tl.reshape(p, [BLOCK_M // PER, PER, BLOCK_N // PER]), 1)  # over each query block's rows
        kb = n0 // PER + kbt
        tl.store(out_rows + kb[None, :], p, mask=row_ok & (kb[None, :] < NKB))
    # key blocks past every row of the tile: mass 0 (the output is not pre-zeroed)
    zero = tl.zeros([BLOCK_M // PER, BLOCK_N // PER], dtype=tl.float32)
    for n0 in range(tl.cdiv(hi, BLOCK_N) * BLOCK_N, NKB * PER, BLOCK_N):
        kb = n0 // PER + kbt
        tl.store(out_rows + kb[None, :], zero, mask=row_ok & (kb[None, :] < NKB))


def antidiag_block_mass_fused(q: torch.Tensor, k: torch.Tensor, stride: int, r0: int = 0, r1: int = None,
                              block: int = 64, out: torch.Tensor = None, block_m: int = BLOCK_M,
                              block_n: int = BLOCK_N, num_warps: int = None) -> torch.Tensor:
    """Strided-antidiagonal mass of query blocks r0..r1-1 (r1 None: all) -> out [B, Hq, r1 - r0, NKB] fp32,
    NKB = ceil(S / block): causal rows sum to 1, non-causal blocks 0; equal to ops.adaptive.antidiag_block_mass on
    strided_queries(q) / strided_keys(k) (naive_adaptive.antidiag_block_mass_ref is the definition).

    q [B, Hq, S, D], k [B, Hkv, S, D] (q_len == kv_len; Hq a multiple of Hkv, q head h reads kv head h // G),
    fp16/bf16 (tensor-core products, fp32 accumulation and softmax) or fp32 (exact fp32 products). The strided
    rows are read from q and k by address (no strided copies); extra memory is the output only. stride: a
    divisor of `block` (a power of 2). out: optional [B, Hq, r1 - r0, NKB] fp32 with unit last stride, written
    in full. block_m / block_n: strided rows / columns per tile (powers of 2, multiples of block // stride);
    num_warps: override of the table's (benchmarks' sweeps).
    """
    B, Hq, S, D = q.shape
    Hkv = k.shape[1]
    assert k.shape[2] == S, f"q_len must equal kv_len (a prefill estimate), got {S} vs {k.shape[2]}"
    assert k.shape == (B, Hkv, S, D) and Hkv > 0 and Hq % Hkv == 0, "k must be [B, Hkv, S, D] with Hq % Hkv == 0"
    assert q.dtype == k.dtype, "q and k must share a dtype"
    assert block & (block - 1) == 0 and stride > 0 and block % stride == 0, "stride must divide the power-of-2 block"
    per = block // stride
    assert block_m % per == 0 and block_n % per == 0, "tiles must hold whole blocks"
    nkb = -(-S // block)
    r1 = nkb if r1 is None else r1
    assert 0 <= r0 <= r1 <= nkb, "query block range out of bounds"
    if out is None:
        out = torch.empty(B, Hq, r1 - r0, nkb, dtype=torch.float32, device=q.device)
    assert out.shape == (B, Hq, r1 - r0, nkb) and out.dtype == torch.float32 and out.stride(-1) == 1
    ns = -(-S // stride)
    m_end = min(ns, r1 * per)
    if m_end <= r0 * per:
        return out
    q, k = last_dim_contig(q), last_dim_contig(k)
    bd = block_d(D)
    warps, stages = _CFG.get(bd, (8, 1))
    warps = num_warps or warps
    grid = (B * Hq, triton.cdiv(m_end - r0 * per, block_m))
    assert grid[1] < 65536, "too many strided row tiles for one launch: pass a smaller query block range"
    _antidiag_mass_kernel[grid](
        q, k, out, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        S, ns, Hq, Hq // Hkv, D, nkb, r0, r1, LOG2E / (stride * math.sqrt(D)),
        STRIDE=stride, PER=per, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=bd, PREC=dot_precision(q.dtype),
        num_warps=warps, num_stages=stages)
    return out
