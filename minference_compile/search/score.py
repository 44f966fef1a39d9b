"""Recall and cost of every candidate for every head of one captured layer.

Recall: share of the exact attention mass (softmax over all causal keys, fp32) that the candidate's selection
keeps, averaged over the sampled rows; never an S x S matrix (rows x S per head). Selections follow the kernels'
semantics: vertical-slash block-rounded (docs/DESIGN.md), block-sparse per 64-row query block (the mean-query
estimate from the captured block means of q and every key), A-shape per row.
Cost: the share of causal pairs the kernel computes, from the real index conversion for vertical-slash
(build_vertical_slash_index + work_share) and from the block index for block-sparse.
Antidiagonal block-sparse candidates read every q row: the capture's ``q`` (capture(full_q=True)); a record
without it scores them recall -1 (never picked) and cost 1, with a warning.
"""
from __future__ import annotations

import math
import warnings

import torch

from ..ops import adaptive
from ..ops.adaptive import (FIXED, antidiag_block_mass, block_mass_from_means, meanq_mass_from_means, select_blocks,
                            select_vertical_slash, strided_keys, strided_queries, vs_scores)
from ..ops.estimate import LOCAL_WINDOW, SINK_TOKENS
from ..triton_kernels.block_sparse_index import expand_block_index, index_from_means
from ..triton_kernels.vertical_slash_index import build_vertical_slash_index, work_share

BLOCK = 64


def _causal_pairs(S: int) -> float:
    return S * (S + 1) / 2


def streaming_cost(S: int, init: int, local: int) -> float:
    """Share of causal pairs with j < init or i - j < local."""
    i1 = torch.arange(1, S + 1, dtype=torch.float64)
    loc = torch.clamp(i1, max=local)
    return float((loc + torch.minimum(torch.full_like(i1, init), i1 - loc)).sum() / _causal_pairs(S))


def block_cost(index: torch.Tensor, S: int) -> torch.Tensor:
    """index [..., NQB, K] (ascending ids, -1 pad, diagonal included) -> [...] share of causal pairs computed:
    full 64 x rows blocks off the diagonal, the causal triangle on it."""
    nqb = index.shape[-2]
    rows = torch.clamp(S - torch.arange(nqb) * BLOCK, max=BLOCK).double()
    n_off = (index >= 0).sum(-1).double() - 1
    return ((n_off * BLOCK * rows + rows * (rows + 1) / 2).sum(-1)) / _causal_pairs(S)


def evaluate_layer(rec: dict, candidates: list, last_q: int = 64, device: str = "cpu", counts: dict = None) -> tuple:
    """rec: a capture record (capture.py). -> (recall [C, Hq], cost [C, Hq]) float64 tensors.
    ``counts`` (optional, filled): "lines" [C, Hq, 2] verticals / slashes kept by vertical-slash candidates,
    "blocks" [C, Hq] mean key blocks per query block of block-sparse ones (the adaptive ones' realised budgets)."""
    k_all, q_rows, q_means = rec["k"].to(device), rec["q_rows"].to(device), rec["q_means"].to(device)
    rows = rec["rows"].to(device)
    S = int(rec["S"])
    Hq, R, D = q_rows.shape
    G = Hq // k_all.shape[0]
    L = min(last_q, S)
    C = len(candidates)
    recall = torch.zeros(C, Hq, dtype=torch.float64)
    cost = torch.zeros(C, Hq, dtype=torch.float64)
    km = _means(k_all)
    lines = torch.zeros(C, Hq, 2, dtype=torch.float64)
    blocks = torch.zeros(C, Hq, dtype=torch.float64)
    m0 = rows // BLOCK * BLOCK
    j = torch.arange(S, device=device)
    for h in range(Hq):
        k = k_all[h // G]
        p = torch.softmax((q_rows[h] @ k.T / math.sqrt(D)).masked_fill(j > rows[:, None], float("-inf")), -1)
        # pu[r, u + 63] = p[r, m0_r - u]: mass by offset from the row's block start (the slash coverage is a
        # function of u alone, so a slash selection's kept mass is one mat-vec)
        t = torch.arange(S + BLOCK - 1, device=device)
        jj = m0[:, None] + BLOCK - 1 - t
        pu = torch.where((jj >= 0) & (jj <= rows[:, None]), p.gather(1, jj.clamp(0, S - 1)), 0.0)
        csum = torch.nn.functional.pad(p.cumsum(-1), (1, 0))
        vs = [(i, c) for i, c in enumerate(candidates) if c.pattern.startswith("vertical")]
        if vs:
            qz = q_rows.new_zeros(1, 1, S, D)
            qz[0, 0, S - L:] = q_rows[h, R - L:]
            vscore, sscore = vs_scores(qz, k[None, None], last_q)
            _vs(p, pu, m0, vscore, sscore, float(L), vs, S, recall[:, h], cost[:, h], lines[:, h])
        mass, pb, adm = None, None, {}  # pooled mass; exact mass per row and key block; antidiag mass per stride
        for i, c in enumerate(candidates):
            if c.pattern == "dense":
                recall[i, h], cost[i, h] = 1.0, 1.0
            elif c.pattern == "stream_llm":
                hi = rows + 1
                lo = torch.clamp(hi - c.s, min=0)
                sink = torch.minimum(torch.full_like(lo, c.v), lo)
                kept = csum.gather(1, sink[:, None]) + csum.gather(1, hi[:, None]) - csum.gather(1, lo[:, None])
                recall[i, h], cost[i, h] = float(kept.mean()), streaming_cost(S, c.v, c.s)
            elif c.pattern.startswith("block"):
                if pb is None:
                    pb = torch.nn.functional.pad(p, (0, -S % BLOCK)).view(R, -1, BLOCK).sum(-1)
                if c.pattern == "block_sparse_antidiag":
                    if "q" not in rec:
                        warnings.warn(f"{c.name}: the capture has no full q (capture(full_q=True)); not scored")
                        recall[i, h], cost[i, h] = -1.0, 1.0
                        continue
                    if c.s not in adm:  # the op's estimate (antidiag_block_sparse_index), all query blocks at once
                        qh, kh = rec["q"][h].to(device)[None, None], k[None, None]
                        adm[c.s] = antidiag_block_mass(strided_queries(qh, c.s), strided_keys(kh, c.s), S, 0,
                                                       -(-S // BLOCK), c.s)
                    index = select_blocks(adm[c.s], 0, c.v, c.threshold, adaptive.ANTIDIAG_SINK)[0, 0]
                elif c.pattern == "block_sparse_128":  # the op's 128-block top-k, as the 64-granular index of its pairs
                    if "m128" not in adm:
                        adm["m128"] = (_pool2(q_means[h], S), _pool2(km[h // G], S))
                    qm2, km2 = adm["m128"]
                    index = expand_block_index(index_from_means(qm2[None, None], km2[None, None], S, S, c.v, 128),
                                               S, S)[0, 0]
                elif c.pattern.startswith("block_sparse_meanq"):  # the mean query's mass over the exact keys
                    if "meanq" not in adm:
                        adm["meanq"] = meanq_mass_from_means(q_means[h][None, None], k[None, None], S)
                    index = select_blocks(adm["meanq"], 0, c.v, c.threshold if c.adaptive else FIXED)[0, 0]
                else:
                    if mass is None:
                        mass = block_mass_from_means(q_means[h][None, None], km[h // G][None, None], S)
                    index = select_blocks(mass, 0, c.v, c.threshold if c.adaptive else FIXED)[0, 0]
                ids = index[rows // BLOCK].long()
                recall[i, h] = float((pb.gather(1, ids.clamp(min=0)) * (ids >= 0)).sum(-1).mean())
                cost[i, h] = float(block_cost(index.cpu(), S))
                blocks[i, h] = float((index >= 0).sum(-1).double().mean())
    if counts is not None:
        counts.update(lines=lines, blocks=blocks)
    return recall, cost


def _means(x: torch.Tensor) -> torch.Tensor:
    S = x.shape[1]
    n = S // BLOCK
    parts = [x[:, :n * BLOCK].unflatten(1, (n, BLOCK)).mean(2)] if n else []
    if S % BLOCK:
        parts.append(x[:, n * BLOCK:].mean(1, keepdim=True))
    return torch.cat(parts, 1)


def _pool2(means: torch.Tensor, S: int) -> torch.Tensor:
    """[N64, D] means of 64-row blocks -> [ceil(S/128), D] means of 128-row blocks (each weighted by its rows)."""
    rows = torch.clamp(S - torch.arange(means.shape[0], device=means.device) * BLOCK, max=BLOCK).to(means.dtype)
    w = torch.nn.functional.pad(means * rows[:, None], (0, 0, 0, means.shape[0] % 2))
    n = torch.nn.functional.pad(rows, (0, means.shape[0] % 2))
    return w.view(-1, 2, means.shape[1]).sum(1) / n.view(-1, 2).sum(1)[:, None]


def _vs(p, pu, m0, vscore, sscore, L, cands, S, recall, cost, lines) -> None:
    """Vertical-slash candidates of one head: selection as the op makes it, block-rounded recall, index work."""
    verts, slashes = [], []
    for _, c in cands:
        v, s = select_vertical_slash(vscore, sscore, c.v, c.s, c.threshold if c.adaptive else FIXED, L,
                                     SINK_TOKENS, LOCAL_WINDOW)
        verts.append(v[0, 0])
        slashes.append(s[0, 0])
    vert = torch.nn.utils.rnn.pad_sequence(verts, batch_first=True, padding_value=-1)  # [Cv, NV]
    sl = torch.nn.utils.rnn.pad_sequence(slashes, batch_first=True, padding_value=-1)
    work = work_share(build_vertical_slash_index(vert[None], sl[None], S), S)[0]
    # c(u) = some selected offset in [u, u + 63], for u = -63 .. S - 1
    pres = torch.zeros(len(cands), S + 1, dtype=torch.int32, device=p.device)
    pres.scatter_(1, torch.where(sl >= 0, sl.long(), S), 1)
    prefix = torch.nn.functional.pad(pres[:, :S].cumsum(1), (1, 0))
    u = torch.arange(-(BLOCK - 1), S, device=p.device)
    cov = (prefix[:, (u + BLOCK).clamp(0, S)] - prefix[:, u.clamp(0, S)]) > 0  # [Cv, S + 63]
    slash_mass = pu @ cov.T.to(pu.dtype)  # [R, Cv]
    for n, (i, _) in enumerate(cands):
        vv = vert[n][vert[n] >= 0].long()
        uu = (m0[:, None] - vv[None]).clamp(-(BLOCK - 1), S - 1) + BLOCK - 1  # u beyond -63: j > row, p = 0
        extra = (p[:, vv] * ~cov[n][uu]).sum(-1)
        recall[i] = float((slash_mass[:, n] + extra).mean())
        cost[i] = float(work[n])
        lines[i, 0], lines[i, 1] = float(vv.numel()), float((sl[n] >= 0).sum())
