"""Loop references of the adaptive (mass-threshold) selections in minference_compile/ops/adaptive.py (fp64, small S)."""
import math

import torch

from .naive import BLOCK, block_scores_ref


def _greedy(items, cap_v, cap_s, target, separate=True):
    """items: (forced, mass, kind, idx). Per kind the top-cap by (forced, mass); each list on its own (separate) or
    both merged in that order; keep while forced or the mass ranked above is below target. -> {kind: sorted idx}."""
    per = {"v": sorted([x for x in items if x[2] == "v"], key=lambda x: (not x[0], -x[1]))[:cap_v],
           "s": sorted([x for x in items if x[2] == "s"], key=lambda x: (not x[0], -x[1]))[:cap_s]}
    lists = [per["v"], per["s"]] if separate else [sorted(per["v"] + per["s"], key=lambda x: (not x[0], -x[1]))]
    kept = {"v": [], "s": []}
    for ranked in lists:
        acc = 0.0
        for forced, m, kind, idx in ranked:
            if forced or acc < target:
                kept[kind].append(idx)
            acc += m
    return {kind: sorted(v) for kind, v in kept.items()}


def adaptive_vertical_slash_ref(q, k, v_cap, s_cap, gamma, last_q=64, sink_tokens=30, local_window=100,
                                separate=True):
    """-> list over (b, h) of (sorted verticals, sorted slashes) kept by the mass-threshold rule."""
    B, Hq, S, D = q.shape
    g = Hq // k.shape[1]
    L = min(last_q, S)
    caps = lambda c, h: c if isinstance(c, int) else int(c[h])  # noqa: E731
    out = []
    for b in range(B):
        for h in range(Hq):
            qs = q[b, h, S - L:].double() / math.sqrt(D)
            s = qs @ k[b, h // g].double().T  # [L, S]
            i = torch.arange(S - L, S)[:, None]
            j = torch.arange(S)[None]
            p = torch.softmax(s.masked_fill(j > i, float("-inf")), -1)
            vm = p.sum(0)
            sm = torch.zeros(S, dtype=torch.float64)
            for r in range(L):
                for jj in range(int(i[r]) + 1):
                    sm[int(i[r]) - jj] += p[r, jj]
            items = [(c < sink_tokens, float(vm[c]), "v", c) for c in range(S)]
            items += [(o < local_window, float(sm[o]), "s", o) for o in range(S)]
            gam = gamma if isinstance(gamma, float) else float(gamma[h])
            kept = _greedy(items, caps(v_cap, h), caps(s_cap, h), gam * L, separate)
            out.append((kept["v"], kept["s"]))
    return out


def _select_ref(mass_of, B, Hq, n, topk_cap, tau, sink=False):
    """mass_of(b, h, qb) -> fp64 [qb + 1] distribution over the causal key blocks; per row the diagonal first (with
    ``sink`` block 0 next), then by mass; kept while forced or the kept mass is below tau, at most min(cap, qb + 1)."""
    caps = [topk_cap] * Hq if isinstance(topk_cap, int) else [int(c) for c in topk_cap]
    taus = [tau] * Hq if isinstance(tau, float) else [float(t) for t in tau]
    kmax = max(1, min(max(caps), n))
    out = torch.full((B, Hq, n, kmax), -1, dtype=torch.int32)
    for b in range(B):
        for h in range(Hq):
            for qb in range(n):
                p = mass_of(b, h, qb)
                forced = [qb] + ([0] if sink and qb > 0 else [])
                order = forced + sorted([kb for kb in range(qb) if kb not in forced], key=lambda kb: -float(p[kb]))
                sel, acc = [], 0.0
                for kb in order[:min(caps[h], qb + 1)]:
                    if kb in forced or acc < taus[h]:
                        sel.append(kb)
                    acc += float(p[kb])
                out[b, h, qb, :len(sel)] = torch.tensor(sorted(sel), dtype=torch.int32)
    return out


def adaptive_block_sparse_index_ref(q, k, topk_cap, tau):
    """-> [B, Hq, NQB, Kmax] int32 like adaptive_block_sparse_index, by a per-row greedy loop."""
    B, Hq, S, D = q.shape
    n = -(-S // BLOCK)
    sc = block_scores_ref(q, k).double() / math.sqrt(D)
    size = torch.tensor([min(BLOCK, S - kb * BLOCK) for kb in range(n)], dtype=torch.float64)
    return _select_ref(lambda b, h, qb: torch.softmax(sc[b, h, qb, :qb + 1] + size[:qb + 1].log(), -1),
                       B, Hq, n, topk_cap, tau)


def antidiag_block_mass_ref(q, k, stride):
    """[B, Hq, NQB, NKB] fp64 strided-antidiagonal mass, from the definition: strided row m, column n (groups of
    `stride` positions; positions past S are zero vectors) score sum_j q[m*s + s-1-j] . k[n*s + j] / (s sqrt(D)),
    softmax over n <= m, summed over the 64-block's columns and averaged over its strided rows."""
    B, Hq, S, D = q.shape
    g = Hq // k.shape[1]
    ns = -(-S // stride)
    per = BLOCK // stride
    n = -(-S // BLOCK)
    zero = torch.zeros(B, q.shape[1], 1, D, dtype=torch.float64)
    qz = torch.cat([q.double(), zero], 2)  # index S: the zero row
    kz = torch.cat([k.double(), zero[:, :k.shape[1]]], 2)
    logit = torch.zeros(B, Hq, ns, ns, dtype=torch.float64)
    for j in range(stride):  # one antidiagonal term at a time: q row m*s + s-1-j against k row n*s + j
        qi = [min(m * stride + stride - 1 - j, S) for m in range(ns)]
        ki = [min(c * stride + j, S) for c in range(ns)]
        logit += qz[:, :, qi] @ kz[:, :, ki].repeat_interleave(g, 1).transpose(-1, -2)
    logit /= stride * math.sqrt(D)
    causal = torch.arange(ns)[None, :] <= torch.arange(ns)[:, None]
    p = torch.softmax(logit.masked_fill(~causal, float("-inf")), -1)
    out = torch.zeros(B, Hq, n, n, dtype=torch.float64)
    for qb in range(n):
        rows = range(qb * per, min(ns, (qb + 1) * per))
        for kb in range(qb + 1):
            out[:, :, qb, kb] = p[:, :, list(rows), kb * per:(kb + 1) * per].sum((-1, -2)) / len(rows)
    return out


def antidiag_block_sparse_index_ref(q, k, topk_cap, tau, stride, sink=True):
    """-> [B, Hq, NQB, Kmax] int32 like antidiag_block_sparse_index (antidiag_block_mass_ref + greedy loop; block 0
    kept after the diagonal unless sink=False)."""
    B, Hq, S, _ = q.shape
    n = -(-S // BLOCK)
    mass = antidiag_block_mass_ref(q, k, stride)
    return _select_ref(lambda b, h, qb: mass[b, h, qb, :qb + 1], B, Hq, n, topk_cap, tau, sink)
