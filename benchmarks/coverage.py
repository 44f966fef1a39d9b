"""Computed share of causal work for sparse patterns, without any S x S tensor.

`coverage` follows the block-rounded vertical-slash semantics of docs/DESIGN.md: row i of query block
[m0, m0 + block) attends key j iff j <= i and (j in V or some selected offset s has m0 - s <= j < m0 - s + block).
The merged slash ranges ("components", gaps > block start a new one) are the same for every query block,
so the slash count is a piecewise-linear function of m0 evaluated for all blocks at once, and the vertical
columns only add pairs outside those ranges. Shares are over the causal total S(S+1)/2, per head.
"""
from __future__ import annotations

import numpy as np


def _as_np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.int64)


def _clean(idx: np.ndarray, S: int) -> np.ndarray:
    """Sorted unique entries in [0, S)."""
    return np.unique(idx[(idx >= 0) & (idx < S)])


def components(slash: np.ndarray, S: int, block: int = 64):
    """Merged slash components of one head: arrays (hi, lo), ascending in lo. Offsets outside [0, S) dropped."""
    s = _clean(_as_np(slash), S)
    if s.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    start = np.flatnonzero(np.diff(s) > block) + 1
    lo = s[np.r_[0, start]]
    hi = s[np.r_[start - 1, s.size - 1]]
    return hi, lo


def _relu_sum(points: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_p max(0, x - p) for every x (points any order)."""
    p = np.sort(points)
    c = np.r_[0, np.cumsum(p)]
    n = np.searchsorted(p, x, side="left")
    return n * x - c[n]


def _head_vs_pairs(vertical, slash, S: int, block: int) -> int:
    """Number of causal pairs computed for one head under the block-rounded VS semantics."""
    hi, lo = components(slash, S, block)
    v = _clean(_as_np(vertical), S)
    s_sorted = _clean(_as_np(slash), S)
    nqb = -(-S // block)
    m0 = np.arange(nqb, dtype=np.int64) * block
    L = np.minimum(block, S - m0)  # rows per query block

    # --- slash: components entirely below the diagonal (lo >= block): each row gets clip(m0 + block - lo, 0, w)
    far = lo >= block
    x = m0 + block
    per_row = _relu_sum(lo[far], x) - _relu_sum(hi[far] + block, x)
    slash_pairs = per_row * L
    # the (at most one) component with lo < block crosses the diagonal: count row by row, O(S)
    near = np.flatnonzero(~far)
    if near.size:
        h, l = hi[near[0]], lo[near[0]]
        i = np.arange(S, dtype=np.int64)
        mb = (i // block) * block
        a = np.maximum(mb - h, 0)
        b = np.minimum(mb - l + block, i + 1)
        slash_pairs = slash_pairs + np.bincount(i // block, weights=np.maximum(b - a, 0), minlength=nqb).astype(np.int64)
    total = int(slash_pairs.sum())
    if v.size == 0:
        return total

    # --- verticals: pairs (i, v), v <= i, with v outside every slash range of the block
    vb = v // block
    # all vertical pairs: full weight L for blocks after v's own block, (m0 + L - v) inside its own block
    after = np.bincount(vb + 1, minlength=nqb + 1)[:nqb].cumsum()  # columns in earlier blocks
    vert_pairs = int((after * L).sum()) + int((m0[vb] + L[vb] - v).sum())

    # own block: v covered iff some selected s in [m0 - v, m0 - v + block - 1]
    lo_q = m0[vb] - v
    covered_own = np.searchsorted(s_sorted, lo_q + block, "left") > np.searchsorted(s_sorted, lo_q, "left")
    vert_pairs -= int((m0[vb] + L[vb] - v)[covered_own].sum())

    # later blocks: v in [m0 - hi, m0 - lo + block)  <=>  m0 in [v + lo - block + 1, v + hi]; weight L each
    if hi.size:
        diff = np.zeros(nqb + 1, np.int64)
        step = max(1, 4_000_000 // hi.size)
        for c0 in range(0, v.size, step):
            vv = v[c0:c0 + step, None]
            q_lo = np.maximum(-(-(vv + lo[None] - block + 1) // block), vb[c0:c0 + step, None] + 1)
            q_hi = np.minimum((vv + hi[None]) // block, nqb - 1)
            ok = q_hi >= q_lo
            np.add.at(diff, q_lo[ok], 1)
            np.add.at(diff, q_hi[ok] + 1, -1)
        covered = diff[:nqb].cumsum()
        vert_pairs -= int((covered * L).sum())
    return total + vert_pairs


def _per_head(fn, vertical, slash, S: int, block: int) -> np.ndarray:
    V, Sl = _as_np(vertical), _as_np(slash)
    lead = Sl.shape[:-1]
    assert V.shape[:-1] == lead, (V.shape, Sl.shape)
    Vf, Sf = V.reshape(-1, V.shape[-1]), Sl.reshape(-1, Sl.shape[-1])
    out = np.array([fn(Vf[h], Sf[h], S, block) for h in range(Sf.shape[0])], dtype=np.float64)
    return out.reshape(lead) / (S * (S + 1) / 2)


def coverage(vertical, slash, S: int, block: int = 64) -> np.ndarray:
    """Per-head share of the causal S(S+1)/2 pairs computed by the block-rounded VS kernel.

    vertical [..., NV], slash [..., NS] (torch or numpy, any int; entries outside [0, S) and duplicates
    select nothing). Returns float64 array of the leading shape. Cost per head O((NS + NV) log + S/block + NV*NC).
    """
    return _per_head(_head_vs_pairs, vertical, slash, S, block)


def _head_elem_pairs(vertical, slash, S: int, block: int) -> int:
    v = _clean(_as_np(vertical), S)
    s = _clean(_as_np(slash), S)
    both = np.searchsorted(s, S - v, "left").sum()  # pairs (v, s) with v + s < S
    return int((S - s).sum() + (S - v).sum() - both)


def element_density(vertical, slash, S: int) -> np.ndarray:
    """Per-head share of causal pairs (i, j) with j in V or i - j in S (element-exact selection)."""
    return _per_head(_head_elem_pairs, vertical, slash, S, 0)


def block_sparse_coverage(S: int, topk: int, block: int = 64) -> float:
    """Share of causal pairs computed by block-sparse top-k: min(topk, qb+1) blocks per query block, the
    diagonal one token-causal, the others full (independent of which blocks are chosen)."""
    nqb = -(-S // block)
    m0 = np.arange(nqb, dtype=np.int64) * block
    L = np.minimum(block, S - m0)
    off = np.minimum(topk, np.arange(nqb) + 1) - 1
    return float((off * block * L + L * (L + 1) // 2).sum() / (S * (S + 1) / 2))


def streaming_coverage(S: int, init_num: int, local_window: int) -> float:
    """Share of causal pairs for A-shape: j <= i and (j < init_num or i - j < local_window)."""
    i1 = np.arange(1, S + 1, dtype=np.int64)  # i + 1
    local = np.minimum(i1, local_window)
    sink = np.minimum(init_num, i1 - local)
    return float((local + sink).sum() / (S * (S + 1) / 2))


def tile_density(tile_mask_counts: int, S: int, block: int) -> float:
    """Tiles of block x block touched (count), as a share of causal pairs (can exceed the element share)."""
    return float(tile_mask_counts) * block * block / (S * (S + 1) / 2)


def vs_block_coverage(index, S: int, block: int = 64) -> np.ndarray:
    """Work the VS kernel really does, per head: its 64x64 slash tiles (a paired 64x128 tile counts two) plus
    64-row gathered columns, over the
    causal S(S+1)/2 pairs (the issue's "coverage": computed blocks plus gathered columns).

    index: a VSIndex (triton_kernels.vertical_slash_index) for [B, H]; O(NQB) per head.
    """
    from minference_compile.triton_kernels.vertical_slash_index import work_share
    return work_share(index, S, block).double().cpu().numpy()
