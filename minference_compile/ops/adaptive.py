"""Adaptive budgets: per head and input, the fewest lines / blocks whose estimated attention mass reaches a threshold.

* vertical_and_slash_adaptive (pattern id 4): the seed's online estimate (column and diagonal mass of the last
  ``last_q`` queries, ops/estimate.py) ranks verticals and slashes; the two ranked lists are merged by mass and
  the fewest entries whose summed mass reaches ``gamma * L`` (L = estimation rows, each of mass 1) are kept, at
  most ``v_cap`` verticals and ``s_cap`` slashes. The 30 sink columns and 100 local diagonals are always kept
  (and their mass counts). Output: the capped top-k with entries past each head's count set to -1, the layout
  the vertical-slash kernel already takes.
* block_sparse_adaptive (pattern id 5): per 64-row query block, mean-pooled block scores (as block_sparse_index)
  turned into a distribution over causal key blocks (softmax of scale * mean(q) . mean(k) + log(keys in block));
  the fewest blocks whose mass reaches ``tau`` (diagonal always kept), at most ``topk_cap``. Output: ascending
  ids then -1, the layout block_sparse_attention_fwd takes (compact).
* block_sparse_antidiag (pattern id 6): the same selection (select_blocks) on XAttention's strided-antidiagonal
  estimate instead of the pooled one (antidiag_block_mass): with stride s, strided row m = the s q rows of group m
  in reverse order, strided column n = the s k rows of group n, concatenated; their dot product is the sum of
  q.k along one antidiagonal of the s x s tile. softmax(dot / (s sqrt(D))) over causal strided columns, summed
  over each 64 x 64 block and averaged over its strided rows: a mass per (query block, key block), rows summing
  to 1. Every q and k row takes part (the pooled mean loses the spread inside a block). Block 0 is kept after
  the diagonal (ANTIDIAG_SINK): the mean of s logits dilutes a sink column (NOTES.md: recall 0.84 -> 0.94).
  On CUDA the mass comes from one fused Triton kernel (triton_kernels/antidiag_mass.py); the torch form
  (antidiag_block_mass, on strided copies) is the CPU path and the kernel's reference.
* block_sparse_meanq (id 8, fixed top-k) and block_sparse_meanq_adaptive (id 9, tau): the same selection on the
  mass the block's MEAN QUERY puts on each key block, from the exact keys: softmax over the causal keys (up to the
  block's last row) of scale * mean(q_qb) . k_j, summed over each key block (meanq_mass_from_means). One row per
  64-row query block against every key: 1/64 of the dense Q.K^T. Mean-pooling only the query side keeps the keys
  that stand out inside a block (a sink, a retrieved token), which mean(k) averages away: at equal top-k on
  Qwen2.5-Coder-0.5B, 16K natural text, recall 0.858 vs 0.734 (top-16), 0.906 vs 0.817 (top-32) (NOTES row 44).

Everything is sort + cumsum + count on tensors: no host sync (caps and thresholds given as host lists).
Thresholds travel through the op's int budget lists packed in decimal: slash slot = threshold_permille * 10**9
+ cap (``pack_threshold``); a slot below 10**9 means the default 0.9.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence, Union

import torch

from ..triton_kernels._torch_util import device_tensor
from ..triton_kernels.block_sparse_index import _SCORE_BYTES, _block_means
from .estimate import LOCAL_WINDOW, SINK_TOKENS, _budget, estimate_scores

VS_ADAPTIVE, BS_ADAPTIVE, BS_ANTIDIAG = 4, 5, 6  # minference::sparse_prefill pattern ids (0-3: ops/crossover.py)
FIXED = 2.0  # a threshold above any mass share: select_blocks keeps every capped entry (a fixed top-k)
ANTIDIAG_SINK = True  # block_sparse_antidiag always keeps key block 0 (the strided mean logit dilutes a sink column)
DEFAULT_THRESHOLD = 0.9  # FlexPrefill's gamma / XAttention's tau defaults
_PACK = 10**9

Threshold = Union[float, Sequence[float], torch.Tensor]


def pack_threshold(cap: int, threshold: float | None) -> int:
    """Budget slot carrying a threshold: permille * 10**9 + cap (cap < 10**9). None: the plain cap (default)."""
    if threshold is None:
        return int(cap)
    if not 0.0 < threshold <= 1.0 or not 0 <= cap < _PACK:
        raise ValueError(f"threshold must be in (0, 1] and cap in [0, 1e9), got {threshold}, {cap}")
    return int(round(threshold * 1000)) * _PACK + int(cap)


def unpack_threshold(slot: int) -> tuple:
    """-> (cap, threshold); a slot without a packed threshold gives DEFAULT_THRESHOLD."""
    permille, cap = divmod(int(slot), _PACK)
    return cap, (permille / 1000.0 if permille else DEFAULT_THRESHOLD)


def _thresholds(t: Threshold, hq: int, device) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t.to(device=device, dtype=torch.float32).reshape(-1).expand(hq)
    if isinstance(t, (int, float)):
        return torch.full((hq,), float(t), dtype=torch.float32, device=device)
    return device_tensor([float(x) for x in t], device, torch.float32).expand(hq)


# ---------------------------------------------------------------------------------------------- vertical-slash
def vs_scores(q: torch.Tensor, k: torch.Tensor, last_q: int = 64, scale: Optional[float] = None):
    """Column and diagonal attention mass of the last ``last_q`` queries (the seed's estimate scores) at softmax
    scale ``scale`` (default 1/sqrt(D)).

    q [B, Hq, S, D], k [B, Hkv, S, D] -> (vscore [B, Hq, S], sscore [B, Hq, S]) fp32; each row of the last
    L = min(last_q, S) queries has mass 1, so each of vscore and sscore sums to L.
    """
    # CUDA: the fused estimate kernels (MINFERENCE_FUSED_ESTIMATE=0: the torch chunks, as on CPU)
    return estimate_scores(q, k, last_q, scale)


def _ranked(score: torch.Tensor, n: int, forced: int):
    """Top-n of score with the first `forced` positions ranked first -> (idx, mass, is_forced), descending."""
    key = score.clone()  # forced entries above all others, still ordered by mass (a cap below them keeps the heaviest)
    key[..., :forced] += 1.0 + score.amax(-1, keepdim=True)
    idx = key.topk(n, dim=-1).indices
    return idx, score.gather(-1, idx), idx < forced


def _keep(m, forced, ok, target):
    """Entries in rank order: keep iff forced, or the mass ranked above is still short of the target (and in cap)."""
    before = m.cumsum(-1) - m
    return (forced | (before < target)) & ok


def _count(m, forced, ok, target):
    ok = ok.expand_as(m)
    return _keep(m.where(ok, 0.0), forced & ok, ok, target).sum(-1, keepdim=True)


def select_vertical_slash(vscore: torch.Tensor, sscore: torch.Tensor, v_cap, s_cap, gamma: Threshold,
                          mass: float, sink_tokens: int = SINK_TOKENS, local_window: int = LOCAL_WINDOW,
                          separate: bool = True):
    """Fewest verticals and slashes whose mass reaches gamma * mass, capped per head. separate=True (default):
    columns and diagonals each reach gamma of their own total (FlexPrefill's rule); False: the two lists merged
    by mass reach gamma of one total together (fewer lines; measured to lose recall on far rows, NOTES.md).

    vscore/sscore [B, Hq, S] (vs_scores), v_cap/s_cap int or per-head [Hq], gamma float or per head, mass = the
    total of each score row (L). gamma > 1 keeps every capped entry (the fixed top-k). -> (vertical [B,Hq,NV],
    slash [B,Hq,NS]) int32, ranked by mass, -1 past each head's count; NV/NS = min(max cap, S).
    """
    B, Hq, S = vscore.shape
    dev = vscore.device
    nv, vb = _budget(v_cap, Hq, dev)
    ns, sb = _budget(s_cap, Hq, dev)
    nv, ns = min(max(nv, 0), S), min(max(ns, 0), S)
    vi, vm, vf = _ranked(vscore, nv, sink_tokens)
    si, sm, sf = _ranked(sscore, ns, local_window)
    # entries past a head's cap take no part
    vok = torch.arange(nv, device=dev) < (vb.view(1, -1, 1) if vb is not None else nv)
    sok = torch.arange(ns, device=dev) < (sb.view(1, -1, 1) if sb is not None else ns)
    target = _thresholds(gamma, Hq, dev).view(1, -1, 1) * mass
    if separate:  # each list on its own: the fewest columns holding gamma of the column mass, likewise slashes
        n_v, n_s = _count(vm, vf, vok, target), _count(sm, sf, sok, target)
    else:
        m = torch.cat([vm.where(vok, 0.0), sm.where(sok, 0.0)], -1)
        ok = torch.cat([vok.expand_as(vm), sok.expand_as(sm)], -1)
        forced = torch.cat([vf, sf], -1) & ok
        is_v = torch.cat([torch.ones_like(vf), torch.zeros_like(sf)], -1)
        # merged order: forced first, then by mass; stable, so each list keeps its own (descending) order
        key = torch.where(forced, float("inf"), torch.where(ok, m, -1.0))
        order = key.sort(dim=-1, descending=True, stable=True).indices
        keep = _keep(m.gather(-1, order), forced.gather(-1, order), ok.gather(-1, order), target)
        n_v = (keep & is_v.gather(-1, order)).sum(-1, keepdim=True)
        n_s = keep.sum(-1, keepdim=True) - n_v
    vertical = torch.where(torch.arange(nv, device=dev) < n_v, vi, -1)
    slash = torch.where(torch.arange(ns, device=dev) < n_s, si, -1)
    return vertical.to(torch.int32).contiguous(), slash.to(torch.int32).contiguous()


def adaptive_vertical_slash(q: torch.Tensor, k: torch.Tensor, v_cap, s_cap, gamma: Threshold = DEFAULT_THRESHOLD,
                            last_q: int = 64, sink_tokens: int = SINK_TOKENS, local_window: int = LOCAL_WINDOW,
                            scale: Optional[float] = None, scores: Optional[tuple] = None):
    """Mass-threshold vertical-slash index: q [B,Hq,S,D], k [B,Hkv,S,D] -> (vertical [B,Hq,NV], slash [B,Hq,NS])
    int32, -1 padded (see select_vertical_slash). ``scale``: the layer's softmax scale (default 1/sqrt(D)), the
    temperature the mass is measured at; ``scores``: (vscore, sscore) of estimate_scores on these q/k at that
    scale, already computed (read, not written)."""
    vscore, sscore = scores if scores is not None else vs_scores(q, k, last_q, scale)
    return select_vertical_slash(vscore, sscore, v_cap, s_cap, gamma, float(min(last_q, q.shape[2])),
                                 sink_tokens, local_window)


# ---------------------------------------------------------------------------------------------- block-sparse
def block_mass(q: torch.Tensor, k: torch.Tensor, r0: int, r1: int, block: int = 64) -> torch.Tensor:
    """Estimated attention mass of query blocks r0..r1-1 over key blocks: [B, Hq, r1 - r0, NKB] fp32, each causal
    row summing to 1 (softmax of scale * mean(q_qb) . mean(k_kb) + log(valid keys of kb)); non-causal blocks 0."""
    S = q.shape[2]
    qm = _block_means(q[:, :, r0 * block:min(S, r1 * block)], block)
    return block_mass_from_means(qm, _block_means(k, block), S, r0, block)


def block_mass_from_means(qm: torch.Tensor, km: torch.Tensor, S: int, r0: int = 0, block: int = 64) -> torch.Tensor:
    """block_mass from block means: qm [B, Hq, R, D] (query blocks r0..r0+R-1), km [B, Hkv, NKB, D] fp32."""
    B, Hq, R, D = qm.shape
    Hkv, n = km.shape[1], km.shape[2]
    logit = (qm.view(B, Hkv, Hq // Hkv, R, D) @ km.unsqueeze(2).transpose(-1, -2)).view(B, Hq, R, n)
    # keys per block: `block`, the last one S - (n - 1) * block (a where, not a setitem: that is a host sync on CUDA)
    size = torch.where(torch.arange(n, device=qm.device) == n - 1, float(S - (n - 1) * block), float(block))
    kb = torch.arange(n, device=qm.device)
    qb = torch.arange(r0, r0 + R, device=qm.device)[:, None]
    # in place on the fresh product: one [R, NKB] temporary besides the result (chunks of the index build)
    logit.mul_(1.0 / math.sqrt(D)).add_(size.log()).masked_fill_(kb > qb, float("-inf"))
    return torch.softmax(logit, -1)


class _RowSelect:
    """select_blocks for every chunk of one index build: on the fused path the caps and thresholds reach the device
    once (not per chunk: host time, where the chunks' GPU work is short) and the kernel writes each chunk's ids
    straight into the output."""

    def __init__(self, topk_cap, tau: Threshold, hq: int, n: int, dev, sink: bool, impl: str = "auto"):
        if impl not in ("auto", "torch", "triton"):
            raise ValueError(f"impl must be 'auto', 'torch' or 'triton', got {impl!r}")
        if impl == "auto":
            impl = "triton" if torch.device(dev).type == "cuda" and os.environ.get("MINFERENCE_FUSED_SELECT",
                                                                                   "1") != "0" else "torch"
        self.fused = False
        if impl == "triton":  # (CPU users of the torch path never import the kernel)
            from ..triton_kernels.block_mass_select import mass_select_supported

            self.fused = mass_select_supported(n)
        self.topk_cap, self.tau, self.sink = topk_cap, tau, sink
        kmax, cb = _budget(topk_cap, hq, dev)
        self.kmax = max(1, min(kmax, n))  # the id slots per row
        if self.fused:
            self.caps = (cb.to(torch.int32).contiguous() if cb is not None
                         else torch.full((hq,), self.kmax, dtype=torch.int32, device=dev))
            self.taus = _thresholds(tau, hq, dev).contiguous()

    def __call__(self, mass: torch.Tensor, r0: int, out: torch.Tensor = None) -> torch.Tensor:
        if not self.fused:
            ids = _select_blocks_torch(mass, r0, self.topk_cap, self.tau, self.sink)
            return ids if out is None else out.copy_(ids)
        from ..triton_kernels.block_mass_select import block_mass_select

        return block_mass_select(mass.float(), r0, self.caps, self.taus, self.kmax, self.sink, out=out)

    def pooled(self, logit: torch.Tensor, r0: int, S: int, block: int, scale: float, out: torch.Tensor,
               log_counts: bool = True) -> torch.Tensor:
        """Fused path only: the select of block_mass_from_means' softmax from its raw logits (pooled_mass_select;
        log_counts=False: rows of log-masses, softmax only)."""
        from ..triton_kernels.block_mass_select import pooled_mass_select

        return pooled_mass_select(logit, r0, S, block, scale, self.caps, self.taus, self.kmax, out=out,
                                  log_counts=log_counts)


def select_blocks(mass: torch.Tensor, r0: int, topk_cap, tau: Threshold, sink: bool = False,
                  impl: str = "auto") -> torch.Tensor:
    """mass [B, Hq, R, NKB] (block_mass of query blocks r0..r0+R-1) -> [B, Hq, R, Kmax] int32 key-block ids,
    ascending then -1: the diagonal block (and with ``sink`` block 0 next) plus the fewest others (by mass) whose
    total with them reaches tau, at most min(cap, qb + 1). Kmax = clamp(max cap, 1, NKB).
    impl: "torch" (topk + cumsum: _select_blocks_torch), "triton" (triton_kernels/block_mass_select.py: one program per row,
    bisection instead of the sort; differs only on exact ties at the boundary), "auto" = triton on CUDA
    (MINFERENCE_FUSED_SELECT=0 keeps torch)."""
    return _RowSelect(topk_cap, tau, mass.shape[1], mass.shape[3], mass.device, sink, impl)(mass, r0)


def _select_blocks_torch(mass: torch.Tensor, r0: int, topk_cap, tau: Threshold, sink: bool) -> torch.Tensor:
    B, Hq, R, n = mass.shape
    dev = mass.device
    kmax, cb = _budget(topk_cap, Hq, dev)
    kmax = max(1, min(kmax, n))
    cap = cb.view(1, -1, 1, 1) if cb is not None else torch.tensor(kmax, device=dev)
    qb = torch.arange(r0, r0 + R, device=dev)
    kb = torch.arange(n, device=dev)
    key = mass.masked_fill(qb[:, None] == kb, float("inf"))  # diagonal first (masked_fill: no host sync)
    if sink:
        key[..., 0] = torch.where(qb == 0, key[..., 0], 2.0)  # then block 0 (above any mass <= 1)
    key.masked_fill_(qb[:, None] < kb, -1.0)  # non-causal last, even below a causal mass that underflowed to 0
    top = key.topk(kmax, dim=-1)
    m = mass.gather(-1, top.indices)
    before = m.cumsum(-1) - m
    slot = torch.arange(kmax, device=dev)
    t = _thresholds(tau, Hq, dev).view(1, -1, 1, 1)
    forced = (slot == 0) | ((slot == 1) & (qb.view(1, 1, -1, 1) > 0)) if sink else slot == 0
    keep = (forced | (before < t)) & (slot < cap) & (slot <= qb.view(1, 1, -1, 1))
    big = torch.iinfo(torch.int64).max
    ids = torch.where(keep, top.indices, big).sort(-1).values
    return torch.where(ids == big, -1, ids).to(torch.int32)


def adaptive_block_sparse_index(q: torch.Tensor, k: torch.Tensor, topk_cap, tau: Threshold = DEFAULT_THRESHOLD,
                                block: int = 64) -> torch.Tensor:
    """q [B,Hq,S,D], k [B,Hkv,S,D] -> [B,Hq,NQB,Kmax] int32 (select_blocks per query block), chunked over query
    blocks so the score matrix stays under block_sparse_index's byte budget. On the fused path (CUDA) each chunk
    is one GEMM of the block means and one select launch that applies the softmax itself (pooled_mass_select)."""
    B, Hq, S, D = q.shape
    if k.shape[2] != S:  # the pattern is not chunked (BlockSparseAdaptive.chunked = False): no query offset here
        raise ValueError(f"adaptive block-sparse index needs q and k of one length, got {S} and {k.shape[2]}")
    n = -(-S // block)
    rows = _RowSelect(topk_cap, tau, Hq, n, q.device, False)
    out = torch.empty(B, Hq, n, rows.kmax, dtype=torch.int32, device=q.device)
    if rows.fused:
        Hkv = k.shape[1]
        qm = _block_means(q, block).view(B, Hkv, Hq // Hkv, n, D)
        kmT = _block_means(k, block).unsqueeze(2).transpose(-1, -2)  # [B, Hkv, 1, D, NKB]
        # only the raw logits live per chunk (4 B each): 4x the torch path's chunk, as the antidiagonal build
        chunk = max(1, min(n, 4 * _SCORE_BYTES // max(1, 4 * B * Hq * n)))
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            logit = (qm[:, :, :, r0:r1] @ kmT).view(B, Hq, r1 - r0, n)
            rows.pooled(logit, r0, S, block, 1.0 / math.sqrt(D), out[:, :, r0:r1])
        return out
    chunk = max(1, min(n, _SCORE_BYTES // max(1, 4 * B * Hq * n * 4)))
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        rows(block_mass(q, k, r0, r1, block), r0, out[:, :, r0:r1])
    return out


# ---------------------------------------------------------------------------------------------- mean query
def meanq_mass_from_means(qm: torch.Tensor, k: torch.Tensor, S: int, r0: int = 0, block: int = 64,
                          scale: Optional[float] = None) -> torch.Tensor:
    """qm [B, Hq, R, D] fp32 means of query blocks r0..r0+R-1, k [B, Hkv, S, D] -> [B, Hq, R, NKB] fp32: per query
    block the softmax over keys j <= its last row of scale * qm . k_j, summed per 64-key block (rows sum to 1;
    blocks past the row 0)."""
    B, Hq, R, D = qm.shape
    Hkv = k.shape[1]
    n = -(-S // block)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    q = qm.view(B, Hkv, Hq // Hkv, R, D).to(k.dtype)
    logit = (q @ k.unsqueeze(2).transpose(-1, -2)).view(B, Hq, R, S).float()
    last = (torch.arange(r0, r0 + R, device=k.device) * block + block - 1).clamp(max=S - 1)
    logit.mul_(scale).masked_fill_(torch.arange(S, device=k.device) > last[:, None], float("-inf"))
    logit = torch.nn.functional.pad(logit, (0, n * block - S), value=float("-inf")).view(B, Hq, R, n, block)
    return torch.softmax(torch.logsumexp(logit, -1), -1)


def meanq_block_sparse_index(q: torch.Tensor, k: torch.Tensor, topk_cap, tau: Threshold = FIXED, block: int = 64,
                             scale: Optional[float] = None, impl: str = "auto") -> torch.Tensor:
    """q [B,Hq,S,D], k [B,Hkv,S,D] -> [B,Hq,NQB,Kmax] int32: select_blocks on meanq_mass_from_means (diagonal first,
    then the largest masses until tau, at most topk_cap; tau = FIXED: the fixed top-k). Chunked over query blocks,
    never S x S. impl "auto": on CUDA (fused select available) each chunk is one Triton launch for the block
    log-masses (triton_kernels/meanq_mass.py) and one for softmax + select; else the torch form ("torch"), whose
    [R, S] logits stay under block_sparse_index's byte budget; "triton" forces the kernels (interpreter tests)."""
    B, Hq, S, D = q.shape
    if k.shape[2] != S:  # not chunked (BlockSparseMeanQ.chunked = False): no query offset here
        raise ValueError(f"mean-query block-sparse index needs q and k of one length, got {S} and {k.shape[2]}")
    if block != 64 and impl != "torch":
        impl = "torch"  # the kernel's key blocks are 64 wide
    n = -(-S // block)
    rows = _RowSelect(topk_cap, tau, Hq, n, q.device, False, impl)
    out = torch.empty(B, Hq, n, rows.kmax, dtype=torch.int32, device=q.device)
    sc = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if rows.fused:
        from ..triton_kernels.meanq_mass import meanq_block_lse
        chunk = max(1, min(n, 4 * _SCORE_BYTES // max(1, 4 * B * Hq * n)))  # only the [R, NKB] log-masses live
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            qm = _block_means(q[:, :, r0 * block:min(S, r1 * block)], block)
            rows.pooled(meanq_block_lse(qm, k, S, r0, sc), r0, S, block, 1.0, out[:, :, r0:r1], log_counts=False)
        return out
    chunk = max(1, min(n, _SCORE_BYTES // max(1, 4 * B * Hq * (S + block))))
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        qm = _block_means(q[:, :, r0 * block:min(S, r1 * block)], block)
        rows(meanq_mass_from_means(qm, k, S, r0, block, sc), r0, out[:, :, r0:r1])
    return out


# ---------------------------------------------------------------------------------------------- antidiagonal
def check_stride(stride: int, block: int = 64) -> None:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1 or block % stride:
        raise ValueError(f"antidiagonal stride must be a positive divisor of the block size {block}, got {stride!r}")


def strided_keys(k: torch.Tensor, stride: int) -> torch.Tensor:
    """k [B, H, S, D] -> [B, H, ceil(S/stride), stride * D]: group n = rows n*s .. n*s+s-1 concatenated (rows past
    S zero)."""
    B, H, S, D = k.shape
    n = -(-S // stride)
    return torch.nn.functional.pad(k, (0, 0, 0, n * stride - S)).reshape(B, H, n, stride * D)


def strided_queries(q: torch.Tensor, stride: int) -> torch.Tensor:
    """q [B, H, Sq, D] -> [B, H, ceil(Sq/stride), stride * D]: group m's rows in reverse order, so that
    strided_queries[m] . strided_keys[n] = sum_j q[m*s + s-1-j] . k[n*s + j] (an antidiagonal of the s x s tile)."""
    B, H, S, D = q.shape
    n = -(-S // stride)
    qp = torch.nn.functional.pad(q, (0, 0, 0, n * stride - S))
    return qp.view(B, H, n, stride, D).flip(3).reshape(B, H, n, stride * D)


def antidiag_block_mass(qs: torch.Tensor, ks: torch.Tensor, S: int, r0: int, r1: int, stride: int,
                        block: int = 64) -> torch.Tensor:
    """Estimated attention mass of query blocks r0..r1-1: [B, Hq, r1 - r0, NKB] fp32, causal rows summing to 1,
    non-causal blocks 0. qs [B, Hq, NS, s*D] (strided_queries of all S rows), ks [B, Hkv, NS, s*D]
    (strided_keys), NS = ceil(S / s); score scale 1 / (s sqrt(D)) (the mean logit of the antidiagonal).
    The product runs in q's dtype (bf16 on the GPU: tensor cores, fp32 accumulation), softmax and sums in fp32."""
    B, Hq, ns, sd = qs.shape
    Hkv = ks.shape[1]
    per = block // stride  # strided rows (and columns) per 64-block
    nkb = -(-S // block)
    m0, m1 = r0 * per, min(ns, r1 * per)
    rows = qs[:, :, m0:m1].reshape(B, Hkv, Hq // Hkv, m1 - m0, sd)
    scale = 1.0 / (stride * math.sqrt(sd // stride))
    logit = (rows @ ks.unsqueeze(2).transpose(-1, -2)).view(B, Hq, m1 - m0, ns).float() * scale
    m = torch.arange(m0, m1, device=qs.device)[:, None]
    p = torch.softmax(logit.masked_fill(torch.arange(ns, device=qs.device) > m, float("-inf")), -1)
    if nkb * per > ns:  # a partial last key block (no copy otherwise)
        p = torch.nn.functional.pad(p, (0, nkb * per - ns))
    p = p.view(B, Hq, m1 - m0, nkb, per).sum(-1)
    R = r1 - r0
    p = torch.nn.functional.pad(p, (0, 0, 0, R * per - (m1 - m0))).view(B, Hq, R, per, nkb).sum(3)
    n_rows = (torch.clamp(ns - torch.arange(r0, r1, device=qs.device) * per, max=per)).to(p.dtype)
    return p / n_rows.view(1, 1, R, 1)


def antidiag_block_sparse_index(q: torch.Tensor, k: torch.Tensor, topk_cap, tau: Threshold = DEFAULT_THRESHOLD,
                                stride: int = 8, block: int = 64, sink: bool = None,
                                impl: str = "auto") -> torch.Tensor:
    """q [B,Hq,S,D], k [B,Hkv,S,D] -> [B,Hq,NQB,Kmax] int32: select_blocks on the antidiagonal mass, chunked over
    query blocks (never S x S). sink None: the pattern's ANTIDIAG_SINK (block 0 kept after the diagonal).
    impl: "triton" (the fused kernel, triton_kernels/antidiag_mass.py: no strided copies, no strided score matrix;
    chunks bounded by the [R, NKB] mass and select_blocks' temporaries), "torch" (antidiag_block_mass on the
    strided copies, chunks bounded by the strided logits and probabilities), "auto" = triton on CUDA (10x faster
    than torch on the H200 at 128K, NOTES row 18; MINFERENCE_FUSED_ANTIDIAG=0 keeps torch), torch otherwise. Both compute the same mass up to fp32 summation order (and, for fp16/bf16, the torch product's
    logits are rounded to the input dtype, the kernel's are not)."""
    check_stride(stride, block)
    sink = ANTIDIAG_SINK if sink is None else sink
    B, Hq, S, _ = q.shape
    n = -(-S // block)
    rows = _RowSelect(topk_cap, tau, Hq, n, q.device, sink)
    out = torch.empty(B, Hq, n, rows.kmax, dtype=torch.int32, device=q.device)
    if impl == "auto":  # GPU-tested and 10x the torch build's speed on the H200 (NOTES row 18)
        impl = "triton" if q.is_cuda and os.environ.get("MINFERENCE_FUSED_ANTIDIAG", "1") != "0" else "torch"
    if impl == "triton":
        from ..triton_kernels.antidiag_mass import antidiag_block_mass_fused  # CPU users never build the kernel
        # the fused select (CUDA default) has no temporaries: chunks of up to 4 x _SCORE_BYTES of mass (one launch
        # at 128K for up to 32 heads; small chunks leave the heavy-first mass kernel a ragged tail per launch). The
        # torch select: mass + topk/sort temporaries within _SCORE_BYTES
        row_bytes = 4 * B * Hq * n * (1 if rows.fused else 4)
        chunk = max(1, min(n, (4 * _SCORE_BYTES if rows.fused else _SCORE_BYTES) // max(1, row_bytes)))
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            rows(antidiag_block_mass_fused(q, k, stride, r0, r1, block), r0, out[:, :, r0:r1])
        return out
    assert impl == "torch", impl
    qs, ks = strided_queries(q, stride), strided_keys(k, stride)
    ns = ks.shape[2]
    per = block // stride
    chunk = max(1, min(n, _SCORE_BYTES // max(1, 4 * B * Hq * per * ns * 2)))  # logits + probabilities
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        rows(antidiag_block_mass(qs, ks, S, r0, r1, stride, block), r0, out[:, :, r0:r1])
    return out
