"""Per-head choice from the candidate table, the config it gives, and summary figures of a config."""
from __future__ import annotations

from typing import Optional

import torch

from .candidates import Candidate


def choose(recall: torch.Tensor, cost: torch.Tensor, candidates: list, target: Optional[float] = None,
           max_work: Optional[float] = None) -> torch.Tensor:
    """recall/cost [C, L, H] -> [L, H] candidate index: the cheapest candidate whose recall reaches ``target``
    (ties: higher recall), or with ``max_work``, the best recall among those whose cost is at most max_work.
    Dense (recall 1) is the fallback when nothing qualifies, so every head gets an answer."""
    dense = next(i for i, c in enumerate(candidates) if c.pattern == "dense")
    if max_work is not None:
        ok = (cost <= max_work) & (recall >= 0)  # recall -1: not allowed
        key = torch.where(ok, recall - 1e-9 * cost, -1.0)
    else:
        ok = recall >= target
        key = torch.where(ok, -cost + 1e-9 * recall, -float("inf"))
    pick = key.argmax(0)
    return torch.where(ok.any(0), pick, dense)


def config_list(pick: torch.Tensor, recall: torch.Tensor, candidates: list) -> list:
    """The seed's JSON list: per layer {head: [pattern, v, s, recall(, {threshold})]}."""
    L, H = pick.shape
    out = []
    for li in range(L):
        layer = {}
        for h in range(H):
            i = int(pick[li, h])
            layer[str(h)] = candidates[i].entry(float(recall[i, li, h]))
        out.append(layer)
    return out


def picks_of_config(cfg, candidates: list, L: int, H: int) -> torch.Tensor:
    """[L, H] candidate index of each head of a MInferenceConfig (KeyError if an entry is not a candidate)."""
    index = {c: i for i, c in enumerate(candidates)}
    pick = torch.empty(L, H, dtype=torch.long)
    for li in range(L):
        for h in range(H):
            c = Candidate.from_spec(cfg.head_spec(li, h))
            if c not in index:
                raise KeyError(f"layer {li} head {h}: {c.name} is not among the searched candidates")
            pick[li, h] = index[c]
    return pick


def summary(pick: torch.Tensor, recall: torch.Tensor, cost: torch.Tensor, time: torch.Tensor = None) -> dict:
    """Mean cost (coverage), mean / min / 10th-percentile head recall of a per-head pick [L, H]; with ``time``
    (time_cost of the same run) also the predicted time over dense attention."""
    r = recall.gather(0, pick[None])[0].flatten()
    c = cost.gather(0, pick[None])[0].flatten()
    out = {"coverage": float(c.mean()), "recall_mean": float(r.mean()), "recall_min": float(r.min()),
           "recall_p10": float(r.quantile(0.1))}
    if time is not None:
        out["time"] = float(time.gather(0, pick[None]).mean())
    return out


def time_cost(cost: torch.Tensor, candidates: list, head_dim: int) -> torch.Tensor:
    """Work share [C, L, H] -> predicted time of each head over its dense attention: each pattern's
    ``relative_time`` (kernel rate on its work + index build, measured on an H200: patterns/*.py RATE / INDEX).
    What ``search --cost time`` minimises: at equal recall it prefers the faster kernel over the smaller work."""
    return torch.stack([c.spec.relative_time(cost[i], head_dim) for i, c in enumerate(candidates)])


def choose_mean(recall: torch.Tensor, cost: torch.Tensor, allowed: torch.Tensor, mean_target: float,
                floor: float = 0.0) -> torch.Tensor:
    """Global choice: the least mean cost whose mean head recall reaches ``mean_target``, each head at least
    ``floor``. Per head argmax(lam * recall - cost) (a Lagrangian over all heads), lam raised until the mean
    recall is met. recall/cost [C, L, H], allowed [C] bool (dense must be allowed) -> [L, H] candidate index."""
    # an allowed candidate under the floor stays out, except one that keeps everything (recall 1, e.g. dense, which
    # must be allowed: a head with no other candidate over the floor then falls back to it); a candidate that is
    # not allowed never qualifies, even at recall 1 (it did: --allow fixed picked an adaptive head)
    ok = allowed[:, None, None] & ((recall >= floor) | (recall >= 1.0))
    pick = None
    for lam in torch.logspace(-1, 4, 400).tolist():
        pick = torch.where(ok, lam * recall - cost, -float("inf")).argmax(0)
        if float(recall.gather(0, pick[None]).mean()) >= mean_target:
            break
    return pick


def kernel_time(cost: torch.Tensor, candidates: list, head_dim: int) -> torch.Tensor:
    """Work share [C, L, H] -> each head's kernel time over its dense attention (work / RATE, no index build)."""
    return torch.stack([c.spec.relative_time(cost[i], head_dim) - c.spec.index_share(head_dim)
                        for i, c in enumerate(candidates)])


def index_families(candidates: list, head_dim: int) -> tuple:
    """([C] family id, -1 for patterns without an index build; [F] a layer's build time over its dense attention)."""
    names, fam, cost = {}, [], []
    for c in candidates:
        spec = c.spec
        if spec.index_share(head_dim) <= 0:
            fam.append(-1)
            continue
        key = spec.index_family()
        if key not in names:
            names[key] = len(names)
            cost.append(spec.index_share(head_dim))
        fam.append(names[key])
    return torch.tensor(fam), torch.tensor(cost, dtype=torch.float64)


def layer_time(pick: torch.Tensor, ktime: torch.Tensor, family: torch.Tensor, fcost: torch.Tensor) -> float:
    """Predicted time over dense attention of a pick [L, H]: its heads' kernel times plus one index build per layer
    and family present (sparse_prefill builds each once per layer call), averaged over the heads."""
    L, H = pick.shape
    t = float(ktime.gather(0, pick[None]).sum())
    for li in range(L):
        present = {int(f) for f in family[pick[li]].tolist() if f >= 0}
        t += H * sum(float(fcost[f]) for f in present)
    return t / (L * H)


def layer_pick(score: torch.Tensor, family: torch.Tensor, fcost: torch.Tensor) -> torch.Tensor:
    """score [C, L, H] (-inf: not allowed) -> [L, H]: per layer the pick maximising the heads' summed score minus one
    index build per family present (H * fcost[f]), over every set of families (dense / A-shape need none)."""
    import itertools
    C, L, H = score.shape
    fl = family.tolist()
    used = sorted({f for f, a in zip(fl, torch.isfinite(score).flatten(1).any(1).tolist()) if a and f >= 0})
    subsets = [set(x) for n in range(len(used) + 1) for x in itertools.combinations(used, n)]
    # per set of families: which candidates it allows, and its builds' charge (the same for every layer)
    sets = [(torch.tensor([f < 0 or f in sub for f in fl])[:, None], H * float(sum(fcost[f] for f in sub)))
            for sub in subsets]
    pick = torch.empty(L, H, dtype=torch.long)
    for li in range(L):
        best = None
        for m, charge in sets:
            val, arg = torch.where(m, score[:, li], -float("inf")).max(0)
            if not torch.isfinite(val).all():
                continue
            total = float(val.sum()) - charge
            if best is None or total > best[0]:
                best = (total, arg)
        if best is None:
            raise ValueError(f"layer {li}: some head has no allowed candidate (dense must be allowed)")
        pick[li] = best[1]
    return pick


def choose_layered(recall: torch.Tensor, ktime: torch.Tensor, allowed: torch.Tensor, target: float,
                   family: torch.Tensor, fcost: torch.Tensor) -> torch.Tensor:
    """choose(target) with index builds charged per layer (``search --cost layer``): every head reaches ``target``
    (dense, recall 1, always qualifies), at the least kernel time plus builds of the layer."""
    ok = allowed[:, None, None] & (recall >= target)
    dense = torch.tensor([f < 0 and bool((recall[i] >= 1.0).all()) for i, f in enumerate(family.tolist())])
    ok = ok | dense[:, None, None]
    return layer_pick(torch.where(ok, -ktime + 1e-9 * recall, -float("inf")), family, fcost)


def choose_mean_layered(recall: torch.Tensor, ktime: torch.Tensor, allowed: torch.Tensor, mean_target: float,
                        family: torch.Tensor, fcost: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """choose_mean with index builds charged per layer (``search --cost layer``): per layer and multiplier the
    best set of index families (layer_pick); the multiplier is bisected (the Lagrangian's mean recall rises with
    it). recall/ktime [C, L, H] (ktime: kernel_time), allowed [C] bool, family [C] / fcost [F] (index_families)
    -> [L, H] candidate index."""
    ok = allowed[:, None, None] & ((recall >= floor) | (recall >= 1.0))

    def solve(lam: float) -> torch.Tensor:
        return layer_pick(torch.where(ok, lam * recall - ktime, -float("inf")), family, fcost)

    def mean_recall(pick):
        return float(recall.gather(0, pick[None]).mean())
    grid = torch.logspace(-1, 4, 400).tolist()
    lo, hi = 0, len(grid) - 1
    if mean_recall(solve(grid[hi])) < mean_target:
        return solve(grid[hi])
    while lo < hi:  # the least multiplier reaching the target
        mid = (lo + hi) // 2
        if mean_recall(solve(grid[mid])) >= mean_target:
            hi = mid
        else:
            lo = mid + 1
    return solve(grid[lo])
