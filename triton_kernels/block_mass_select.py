"""Mass-threshold row select for the adaptive block-sparse patterns (ids 5 and 6): one program per query block.

Semantics of ops/adaptive.select_blocks (its torch form, the reference): keep the diagonal block (and with ``sink``
block 0 next), then the fewest other causal blocks, heaviest first, whose mass with the kept ones reaches tau,
at most ``cap`` in all; ascending ids then -1. Instead of a sort + cumsum per row, the kernel bisects the float
bit pattern of the smallest kept mass v (masses are >= 0, so their bits order like their values): the largest v
with mass(forced) + sum(m >= v) >= tau is exactly the k-th heaviest mass, and a second bisection lowers the count
to the cap. Only an exact tie at the boundary differs from the sort (all tied blocks kept by the mass rule,
all dropped by the cap rule: "at most cap").

`pooled_mass_select` fuses the pooled estimate's softmax into the same program: it reads the raw block-mean logits
(one GEMM per chunk outside) and turns each row into masses in registers, so the pooled index build is the means,
one GEMM and one launch per chunk instead of ~20 elementwise launches per chunk (host-bound on an H200: NOTES 34).
"""
import math
import os

import torch
import triton
import triton.language as tl

_INF_BITS = tl.constexpr(0x7F800000)
# row width (a power of 2) -> warps per program where tuning (benchmarks/tune_meanq.py) beat the default below;
# MINFERENCE_SELECT_WARPS="2048:4,4096:8" sets it for another card
WARPS = {int(a): int(b) for a, b in (x.split(":") for x in os.environ.get("MINFERENCE_SELECT_WARPS", "").split(",") if x)}
_MAX_BLOCKS = 16384  # a whole row in registers (1M tokens at 64-blocks); longer rows use the torch select


@triton.jit
def _select_store(m, kb, qb, cap, tau, N, KMAX, o, SINK: tl.constexpr, KP: tl.constexpr):
    # m [NP] fp32 >= 0 (the row's masses, 0 past N): keep the forced blocks + the fewest heaviest others reaching tau
    diag = (kb == qb) & (cap >= 1)
    if SINK:
        sink_kept = (kb == 0) & (qb > 0) & (cap >= 2)
        other = (kb < qb) & (kb > 0)
    else:
        sink_kept = kb < 0
        other = kb < qb
    forced = diag | sink_kept
    m_forced = tl.sum(tl.where(forced, m, 0.0))
    n_other = tl.maximum(cap - tl.sum(forced.to(tl.int32)), 0)
    # v: the largest mass threshold whose kept mass still reaches tau (lo holds it, hi fails it)
    lo = tl.zeros([], dtype=tl.int32)
    hi = tl.full([], _INF_BITS, dtype=tl.int32)
    reach_all = m_forced + tl.sum(tl.where(other, m, 0.0)) >= tau
    if reach_all & (m_forced < tau):  # else v below is fixed without it (a fixed top-k's tau > 1 never reaches)
        for _ in range(31):
            mid = lo + (hi - lo) // 2
            v = mid.to(tl.float32, bitcast=True)
            ok = m_forced + tl.sum(tl.where(other & (m >= v), m, 0.0)) >= tau
            lo = tl.where(ok, mid, lo)
            hi = tl.where(ok, hi, mid)
    # forced mass alone reaches tau: no others (lo stayed at 0 only if even v = 0+ fails, i.e. reach_all false)
    v_bits = tl.where(m_forced >= tau, _INF_BITS, tl.where(reach_all, lo, 0))
    # cap: the smallest threshold >= v keeping at most n_other blocks
    lo2 = v_bits
    hi2 = tl.full([], _INF_BITS, dtype=tl.int32)
    too_many = tl.sum((other & (m >= v_bits.to(tl.float32, bitcast=True))).to(tl.int32)) > n_other
    if too_many:  # the mass rule kept more than the cap allows (else hi2 is unused)
        for _ in range(31):
            mid = lo2 + (hi2 - lo2) // 2
            fits = tl.sum((other & (m >= mid.to(tl.float32, bitcast=True))).to(tl.int32)) <= n_other
            hi2 = tl.where(fits, mid, hi2)
            lo2 = tl.where(fits, lo2, mid)
    w = tl.where(too_many, hi2, v_bits).to(tl.float32, bitcast=True)
    keep = forced | (other & (m >= w))
    keep = keep & (kb < N)
    pos = tl.cumsum(keep.to(tl.int32), 0) - 1
    tl.store(o + pos, kb, mask=keep)
    count = tl.sum(keep.to(tl.int32))
    slot = tl.arange(0, KP)
    tl.store(o + slot, tl.full([KP], -1, tl.int32), mask=(slot >= count) & (slot < KMAX))


@triton.jit
def _mass_select_kernel(M, CAP, TAU, OUT, smb, smh, smr, sob, soh, sor, Hq, R, N, R0, KMAX,
                        SINK: tl.constexpr, NP: tl.constexpr, KP: tl.constexpr):
    pid = tl.program_id(0)
    r = pid % R
    bh = pid // R
    b = (bh // Hq).to(tl.int64)
    h = bh % Hq
    kb = tl.arange(0, NP)
    m = tl.load(M + b * smb + h.to(tl.int64) * smh + r.to(tl.int64) * smr + kb, mask=kb < N, other=0.0)
    m = tl.maximum(m, 0.0)  # -0.0 -> 0.0 (bit order = value order for the bisection)
    cap = tl.minimum(tl.load(CAP + h), KMAX)
    o = OUT + b * sob + h.to(tl.int64) * soh + r.to(tl.int64) * sor
    _select_store(m, kb, R0 + r, cap, tl.load(TAU + h), N, KMAX, o, SINK, KP)


@triton.jit
def _pooled_select_kernel(L, CAP, TAU, OUT, slb, slh, slr, sob, soh, sor, Hq, R, N, R0, KMAX, scale, log_last,
                          log_block, NP: tl.constexpr, KP: tl.constexpr):
    # the pooled mass of ops/adaptive.block_mass_from_means from its raw logits mean(q) . mean(k), then the select:
    # softmax over the causal key blocks of scale * logit + log(keys in the block) (the last block: log_last)
    pid = tl.program_id(0)
    r = pid % R
    bh = pid // R
    b = (bh // Hq).to(tl.int64)
    h = bh % Hq
    qb = R0 + r
    kb = tl.arange(0, NP)
    causal = (kb <= qb) & (kb < N)
    x = tl.load(L + b * slb + h.to(tl.int64) * slh + r.to(tl.int64) * slr + kb, mask=causal, other=0.0)
    x = x * scale + tl.where(kb == N - 1, log_last, log_block)
    x = tl.where(causal, x, float("-inf"))
    e = tl.exp(x - tl.max(x, 0))
    m = e / tl.sum(e, 0)
    cap = tl.minimum(tl.load(CAP + h), KMAX)
    o = OUT + b * sob + h.to(tl.int64) * soh + r.to(tl.int64) * sor
    _select_store(m, kb, qb, cap, tl.load(TAU + h), N, KMAX, o, False, KP)


def mass_select_supported(n_blocks: int) -> bool:
    return n_blocks <= _MAX_BLOCKS


def _launch_args(rows: torch.Tensor, kmax: int, out):
    """(rows with a unit last stride, out [B, Hq, R, kmax] int32, grid, NP, KP, warps) for one row per program."""
    B, Hq, R, n = rows.shape
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    if out is None:
        out = torch.empty(B, Hq, R, kmax, dtype=torch.int32, device=rows.device)
    assert out.shape == (B, Hq, R, kmax) and out.stride(-1) == 1 and out.dtype == torch.int32
    np_ = max(16, triton.next_power_of_2(n))
    warps = WARPS.get(np_) or (4 if np_ <= 1024 else 8 if np_ <= 4096 else 16)
    return rows, out, (B * Hq * R,), np_, max(16, triton.next_power_of_2(kmax)), warps


def block_mass_select(mass: torch.Tensor, r0: int, cap: torch.Tensor, tau: torch.Tensor, kmax: int,
                      sink: bool = False, out: torch.Tensor = None) -> torch.Tensor:
    """mass [B, Hq, R, NKB] fp32 (query blocks r0..r0+R-1), cap [Hq] int32, tau [Hq] fp32 -> [B, Hq, R, kmax]
    int32 (written into ``out`` when given: any strides with a unit last one)."""
    mass, out, grid, np_, kp, warps = _launch_args(mass, kmax, out)
    if grid[0]:
        _mass_select_kernel[grid](mass, cap, tau, out, *mass.stride()[:3], *out.stride()[:3], mass.shape[1],
                                  mass.shape[2], mass.shape[3], r0, kmax, SINK=bool(sink), NP=np_, KP=kp,
                                  num_warps=warps)
    return out


def pooled_mass_select(logit: torch.Tensor, r0: int, S: int, block: int, scale: float, cap: torch.Tensor,
                       tau: torch.Tensor, kmax: int, out: torch.Tensor = None, log_counts: bool = True) -> torch.Tensor:
    """logit [B, Hq, R, NKB] fp32 raw mean(q) . mean(k) of query blocks r0..r0+R-1 (keys: S positions in blocks of
    ``block``; scale = 1/sqrt(D)) -> [B, Hq, R, kmax] int32: select_blocks (no sink) of the softmax of
    ops/adaptive.block_mass_from_means, computed per row in registers (no mass tensor, no elementwise launches).
    log_counts=False: the rows are already log-masses (meanq_mass.meanq_block_lse, scale 1): softmax only."""
    logit, out, grid, np_, kp, warps = _launch_args(logit, kmax, out)
    n = logit.shape[3]
    logs = (math.log(S - (n - 1) * block), math.log(block)) if log_counts else (0.0, 0.0)
    if grid[0]:
        _pooled_select_kernel[grid](logit, cap, tau, out, *logit.stride()[:3], *out.stride()[:3], logit.shape[1],
                                    logit.shape[2], n, r0, kmax, float(scale), *logs, NP=np_, KP=kp,
                                    num_warps=warps)
    return out
