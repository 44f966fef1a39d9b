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


def adaptive_block_sparse_index_ref(q, k, topk_cap, tau):
    """-> [B, Hq, NQB, Kmax] int32 like adaptive_block_sparse_index, by a per-row greedy loop."""
    B, Hq, S, D = q.shape
    n = -(-S // BLOCK)
    caps = [topk_cap] * Hq if isinstance(topk_cap, int) else [int(c) for c in topk_cap]
    taus = [tau] * Hq if isinstance(tau, float) else [float(t) for t in tau]
    kmax = max(1, min(max(caps), n))
    sc = block_scores_ref(q, k).double() / math.sqrt(D)
    size = torch.tensor([min(BLOCK, S - kb * BLOCK) for kb in range(n)], dtype=torch.float64)
    out = torch.full((B, Hq, n, kmax), -1, dtype=torch.int32)
    for b in range(B):
        for h in range(Hq):
            for qb in range(n):
                p = torch.softmax(sc[b, h, qb, :qb + 1] + size[:qb + 1].log(), -1)
                order = [qb] + sorted(range(qb), key=lambda kb: -float(p[kb]))
                sel, acc = [], 0.0
                for kb in order[:min(caps[h], qb + 1)]:
                    if not sel or acc < taus[h]:
                        sel.append(kb)
                    acc += float(p[kb])
                out[b, h, qb, :len(sel)] = torch.tensor(sorted(sel), dtype=torch.int32)
    return out
