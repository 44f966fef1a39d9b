"""Pooled vs strided-antidiagonal block scores (issue 10): block recall and coverage per candidate on a real capture.

Input: a search capture folder (``layer###.pt`` of minference_compile/search/capture.py written with
``full_q=True``: every q row, the sampled rows, the block means; e.g. ``minference-compile search ...
--keep-captures`` with an antidiagonal candidate, or capture() directly). Every candidate is scored by the search's
own code (search/score.evaluate_layer: the op's selection, exact attention mass on the sampled rows, the kernel's
pair work), so the figures are the search's. Prints per candidate the mean / min head recall and mean coverage,
then the per-head choices: the cheapest candidate with recall >= 0.97, and the Lagrangian least mean coverage at
the seed's (1000, 6096) mean recall with no head below its worst (search/select.choose_mean, ``--match-seed``),
each with and without the antidiagonal candidates. Scores are cached next to the captures (``bs_scoring.pt``).
``--no-sink``: the antidiagonal candidates without the forced block 0 (XAttention's rule as published).

    python -m benchmarks.bs_scoring --captures /tmp/xattn_work/natural-16384

``--last-rows FILE``: a q/k/v capture holding only the last rows' q ({'layers': [(q [1, Hq, R, D], k, v)]}, as
benchmarks/fp8_accuracy.py captures): pooled vs antidiagonal on those rows' query blocks alone (recall on every
one of those rows, coverage = computed share of those rows' causal pairs). No spread rows, no whole-prompt cost.
"""
from __future__ import annotations

import argparse
import glob
import os
import time

import torch

from minference_compile.ops import adaptive
from minference_compile.ops.adaptive import (antidiag_block_mass, block_mass_from_means, select_blocks,
                                             strided_keys, strided_queries)
from minference_compile.search.candidates import SEED, SMALL, Candidate, default_candidates
from minference_compile.search.score import evaluate_layer
from minference_compile.search.select import choose, choose_mean, summary


def candidates() -> list:
    """The search's default set plus the seed baselines and a few more antidiagonal strides / caps / taus."""
    cands = default_candidates("all") + [SEED, SMALL]
    cands += [Candidate("block_sparse_adaptive", 128, 0, 0.98)]
    cands += [Candidate("block_sparse_antidiag", 128, st, t) for st in (4, 16) for t in (0.9, 0.95)]
    cands += [Candidate("block_sparse_antidiag", 256, 8, t) for t in (0.95, 0.98, 0.99)]
    out = []
    for c in cands:
        if c not in out:
            out.append(c)
    return out


def score(captures: str, cands: list, last_q: int = 64) -> tuple:
    """-> recall, cost [C, L, H] over the capture's layers (cached in the folder under the candidate names)."""
    cache = os.path.join(captures, f"bs_scoring{'' if adaptive.ANTIDIAG_SINK else '-nosink'}.pt")
    names = [c.name for c in cands]
    if os.path.exists(cache):
        got = torch.load(cache)
        if got["names"] == names:
            return got["recall"], got["cost"]
    files = sorted(glob.glob(os.path.join(captures, "layer*.pt")))
    rs, cs = [], []
    for f in files:
        t0 = time.perf_counter()
        r, c = evaluate_layer(torch.load(f), cands, last_q)
        rs.append(r)
        cs.append(c)
        print(f"# {os.path.basename(f)} scored in {time.perf_counter() - t0:.1f}s", flush=True)
    recall, cost = torch.stack(rs, 1), torch.stack(cs, 1)
    torch.save({"names": names, "recall": recall, "cost": cost}, cache)
    return recall, cost


def last_rows(path: str, cands: list) -> None:
    """Pooled vs antidiagonal block candidates on the last rows of a q/k/v capture (see the module doc)."""
    data = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    cands = [c for c in cands if c.pattern.startswith("block_sparse_")]
    rec, cov = torch.zeros(len(cands), 0), torch.zeros(len(cands), 0)
    for q, k, _ in data["layers"]:
        q, k = q[0].float(), k[0].float()  # [Hq, R, D], [Hkv, S, D]
        Hq, R, D = q.shape
        S, G = k.shape[1], Hq // k.shape[0]
        r0 = (S - R) // 64  # R a multiple of 64 ending at S: whole query blocks
        nq, nk = R // 64, -(-S // 64)
        kr = k.repeat_interleave(G, 0)
        pos = torch.arange(S - R, S)
        logit = (q @ kr.transpose(1, 2) / D ** 0.5).masked_fill(torch.arange(S) > pos[:, None], -torch.inf)
        p = torch.softmax(logit, -1)  # [Hq, R, S]: the exact attention of the captured rows
        pb = torch.nn.functional.pad(p, (0, nk * 64 - S)).view(Hq, R, nk, 64).sum(-1)  # [Hq, R, NKB]
        qm = q.view(Hq, nq, 64, D).mean(2)
        km = torch.nn.functional.pad(k, (0, 0, 0, nk * 64 - S)).view(k.shape[0], nk, 64, D).sum(2)
        km = km / torch.clamp(S - torch.arange(nk) * 64, max=64)[:, None]
        pooled = block_mass_from_means(qm[None], km[None], S, r0)
        qfull = q.new_zeros(1, Hq, S, D)
        qfull[0, :, S - R:] = q
        ad = {}
        r_l, c_l = [], []
        for c in cands:
            if c.pattern == "block_sparse_antidiag":
                if c.s not in ad:
                    ad[c.s] = antidiag_block_mass(strided_queries(qfull, c.s), strided_keys(k[None], c.s), S, r0,
                                                  r0 + nq, c.s)
                mass = ad[c.s]
            else:
                mass = pooled
            sink = adaptive.ANTIDIAG_SINK and c.pattern == "block_sparse_antidiag"
            ids = select_blocks(mass, r0, c.v, c.threshold if c.adaptive else 2.0, sink)[0].long()  # [Hq, nq, K]
            rows_ids = ids.repeat_interleave(64, 1)  # [Hq, R, K]
            r_l.append((pb.gather(2, rows_ids.clamp(min=0)) * (rows_ids >= 0)).sum(-1).mean(-1))
            n_off = ((rows_ids >= 0).sum(-1) - 1).double()
            c_l.append(((n_off * 64 + (pos % 64 + 1)).sum(-1) / (pos + 1).sum()).float())
        rec, cov = torch.cat([rec, torch.stack(r_l)], 1), torch.cat([cov, torch.stack(c_l)], 1)
    print(f"# {path}: last {R} rows of {S}, {len(data['layers'])} layers x {Hq} heads")
    print(f"{'candidate':24s} {'recall mean':>11s} {'min':>6s} {'coverage':>8s}")
    for i, c in enumerate(cands):
        print(f"{c.name:24s} {float(rec[i].mean()):11.3f} {float(rec[i].min()):6.3f} {float(cov[i].mean()):8.3f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captures", help="folder of layer###.pt (capture with full_q=True)")
    ap.add_argument("--last-rows", help="instead: a q/k/v capture of the last rows (pooled vs antidiagonal only)")
    ap.add_argument("--no-sink", action="store_true", help="antidiagonal candidates without the forced block 0")
    a = ap.parse_args(argv)
    adaptive.ANTIDIAG_SINK = not a.no_sink  # the measurement of the choice (the pattern keeps block 0)
    cands = candidates()
    if a.last_rows:
        return last_rows(a.last_rows, cands)
    recall, cost = score(a.captures, cands)
    C, L, H = recall.shape
    print(f"# {a.captures}: {L} layers x {H} heads; recall = exact attention mass kept on the sampled rows, "
          "coverage = computed share of causal pairs")
    print(f"{'candidate':24s} {'recall mean':>11s} {'min':>6s} {'coverage':>8s}")
    for i, c in enumerate(cands):
        if c.pattern.startswith("block") or c in (SEED, SMALL):
            r = recall[i].flatten()
            print(f"{c.name:24s} {float(r.mean()):11.3f} {float(r.min()):6.3f} {float(cost[i].mean()):8.3f}")
    seed = cands.index(SEED)
    seed_pick = torch.full((L, H), seed)
    s = summary(seed_pick, recall, cost)
    print(f"\nseed (1000,6096): coverage {s['coverage']:.3f}, recall mean {s['recall_mean']:.3f} / min "
          f"{s['recall_min']:.3f}")
    fixed = {c.name for c in default_candidates("fixed")}
    sets = {"fixed": [c.name in fixed for c in cands],
            "fixed + adaptive (pooled bsa, vsa)": [c.pattern != "block_sparse_antidiag" for c in cands],
            "fixed + adaptive + antidiag bsx": [True] * C}
    print(f"{'allowed':38s} {'rule':24s} {'coverage':>8s} {'recall mean':>11s} {'min':>6s} {'seed cov / cov':>14s}")
    for name, allowed in sets.items():
        allowed = torch.tensor(allowed)
        rec_allowed = torch.where(allowed[:, None, None], recall, -1.0)
        for rule, pick in (("per head >= 0.97", choose(rec_allowed, cost, cands, target=0.97)),
                           ("match seed (Lagrangian)", choose_mean(recall, cost, allowed, s["recall_mean"],
                                                                   s["recall_min"]))):
            m = summary(pick, recall, cost)
            print(f"{name:38s} {rule:24s} {m['coverage']:8.3f} {m['recall_mean']:11.3f} {m['recall_min']:6.3f} "
                  f"{s['coverage'] / m['coverage']:14.2f}")
        counts = {}
        for i in choose_mean(recall, cost, allowed, s["recall_mean"], s["recall_min"]).flatten().tolist():
            counts[cands[i].pattern] = counts.get(cands[i].pattern, 0) + 1
        print(f"#   match-seed picks by pattern: {counts}")


if __name__ == "__main__":
    main()
