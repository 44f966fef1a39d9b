"""The mean query's log-mass per key block, block_sparse_meanq's estimate on CUDA (ops/adaptive.meanq_block_sparse_index).

lse[b, h, r, kb] = logsumexp over the keys j of 64-key block kb with j <= last(r0 + r) of scale * qm[b, h, r] . k_j,
where last(m) = min(S, 64 m + 64) - 1 is query block m's last row; -inf for blocks wholly past it. The softmax of a
row over kb is the block mass of ops/adaptive.meanq_mass_from_means (the torch form: the reference in the tests);
block_mass_select.pooled_mass_select turns these rows into masses and selects in one launch.

One program per (BLOCK_M query blocks, KCHUNK key blocks, batch x head): a [BLOCK_M, D] tile of block means against
64-key tiles of k on tensor cores, each product reduced to one log-sum-exp per (query block, key block) in
registers, so neither the [R, S] logits nor their exps reach memory. Programs whose key slice lies wholly past
their query blocks' causal range return at once.
"""
import os

import torch
import triton
import triton.language as tl

from ._common import block_d, dot_precision

BLOCK_N = 64  # keys per block (the patterns' key-block size)
# (query-block means per program = MMA rows, key blocks per program, warps, stages): CONFIG by default; tune with
# benchmarks/tune_meanq.py. The key range is split over programs (every (row, key block) output is independent, so
# no combine step): one program per (query chunk x key chunk) keeps the H200's SMs busy where one program per query
# chunk ran ~3 programs per SM, latency-bound (4.5 ms at 128K for 14 heads, benchmarks/NOTES.md row 44).
CONFIG = (64, 64, 4, 2)  # H200, 128K: 4.24 ms (Llama-3-8B shape) / 1.27 ms (Qwen2.5-0.5B) vs 8.2 / 2.7 unsplit (NOTES row 45)
if os.environ.get("MINFERENCE_MEANQ_CONFIG"):  # another card's tuned launch: "BLOCK_M,KCHUNK,warps,stages"
    CONFIG = tuple(int(x) for x in os.environ["MINFERENCE_MEANQ_CONFIG"].split(","))


@triton.jit
def _meanq_lse_kernel(QM, K, LSE, sqb, sqh, sqr, skb, skh, skn, slb, slh, slr, R, R0, S, NKB, Hq, G, D, scale,
                      N_KCH, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                      KCHUNK: tl.constexpr, PREC: tl.constexpr):
    pid_m = tl.program_id(0) // N_KCH
    pid_k = tl.program_id(0) % N_KCH
    bh = tl.program_id(1)
    b = (bh // Hq).to(tl.int64)
    h = bh % Hq
    kvh = (h // G).to(tl.int64)
    # key blocks up to the chunk's last query block; this program's slice of them (empty: nothing to do)
    n_kb = tl.minimum(R0 + tl.minimum(pid_m * BLOCK_M + BLOCK_M, R), NKB)
    kb0 = pid_k * KCHUNK
    kb1 = tl.minimum(kb0 + KCHUNK, n_kb)
    if kb0 < kb1:
        rr = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # rows of this chunk
        rd = tl.arange(0, BLOCK_D)
        rn = tl.arange(0, BLOCK_N)
        rmask = rr < R
        qm = tl.load(QM + b * sqb + h.to(tl.int64) * sqh + rr.to(tl.int64)[:, None] * sqr + rd[None, :],
                     mask=rmask[:, None] & (rd[None, :] < D), other=0.0)
        qm = (qm * (scale * 1.4426950408889634)).to(K.dtype.element_ty)  # log2 units, in k's dtype for the MMA
        last = tl.minimum((R0 + rr) * BLOCK_N + BLOCK_N - 1, S - 1)
        k_base = K + b * skb + kvh * skh
        o_base = LSE + b * slb + h.to(tl.int64) * slh + rr.to(tl.int64) * slr
        for kb in range(kb0, kb1):
            keys = kb * BLOCK_N + rn
            k = tl.load(k_base + keys.to(tl.int64)[:, None] * skn + rd[None, :],
                        mask=(keys[:, None] < S) & (rd[None, :] < D), other=0.0)
            s = tl.dot(qm, tl.trans(k), input_precision=PREC)
            s = tl.where(keys[None, :] <= last[:, None], s, float("-inf"))
            mx = tl.max(s, 1)
            mxs = tl.where(mx > float("-inf"), mx, 0.0)
            tot = tl.sum(tl.exp2(s - mxs[:, None]), 1)
            lse = tl.where(tot > 0.0, (mxs + tl.log2(tot)) * 0.6931471805599453, float("-inf"))
            tl.store(o_base + kb, lse, mask=rmask)


def meanq_block_lse(qm: torch.Tensor, k: torch.Tensor, S: int, r0: int, scale: float, config=None) -> torch.Tensor:
    """qm [B, Hq, R, D] fp32 means of query blocks r0..r0+R-1, k [B, Hkv, S, D] -> [B, Hq, R, NKB] fp32 log-masses
    (see the module docstring; -inf past each row's causal key blocks). config: (BLOCK_M, KCHUNK, warps, stages),
    default CONFIG."""
    B, Hq, R, D = qm.shape
    Hkv = k.shape[1]
    n = triton.cdiv(S, BLOCK_N)
    bm, kch, warps, stages = CONFIG if config is None else config
    if k.stride(-1) != 1:
        k = k.contiguous()
    if qm.stride(-1) != 1:
        qm = qm.contiguous()
    out = torch.full((B, Hq, R, n), float("-inf"), dtype=torch.float32, device=qm.device)
    if R and B * Hq:
        n_kch = triton.cdiv(min(n, r0 + R), kch)  # key chunks of the chunk's last query block
        _meanq_lse_kernel[(triton.cdiv(R, bm) * n_kch, B * Hq)](
            qm, k, out, qm.stride(0), qm.stride(1), qm.stride(2), k.stride(0), k.stride(1), k.stride(2),
            out.stride(0), out.stride(1), out.stride(2), R, r0, S, n, Hq, Hq // Hkv, D, float(scale), n_kch,
            BLOCK_M=bm, BLOCK_N=BLOCK_N, BLOCK_D=block_d(D), KCHUNK=kch, PREC=dot_precision(k.dtype),
            num_warps=warps, num_stages=stages)
    return out
