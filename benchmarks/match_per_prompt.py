"""Least mean coverage at the seed's mean recall on EVERY calibration prompt, from a search's stored scores.

`minference-compile search --match-seed` holds the mean of each head's worse recall over the prompts; this holds
each prompt's own mean at the seed's (1000, 6096), with one Lagrange multiplier per prompt (grid search), so the
coverage ratios it prints are at equal recall prompt by prompt (benchmarks/NOTES.md, the 32K GPU search).

    python -m benchmarks.match_per_prompt WORKDIR [--cost time]

The candidates are the workdir's own (its candidates.json); the rows are the narrower kinds' meaning of `--allow`
(fixed, all = fixed + adaptive without the antidiagonal estimate, everything scored).
"""
import argparse
import json
import os

import torch

from minference_compile.search.candidates import SEED, allowed, parse
from minference_compile.search.cli import stored_scores
from minference_compile.search.select import time_cost


def load(run_dir: str):
    n_layers = sum(f.startswith("eval") and f.endswith(".pt") for f in os.listdir(run_dir))
    recall, cost, _ = stored_scores(run_dir, n_layers)
    return recall.double(), cost.double()


def match(recalls, costs, allowed, targets, grid=torch.logspace(-1, 3.5, 90).tolist(), minimise=None):
    """recalls/costs: per prompt [C, L, H]; allowed [C] bool -> (pick [L, H], coverage per prompt, recall per prompt).
    minimise: per prompt [C, L, H] what the pick minimises (default the costs: coverage; search --cost time: the
    predicted time, select.time_cost)."""
    import itertools
    ok = allowed[:, None, None]
    minimise = costs if minimise is None else minimise
    cost = torch.stack(minimise).mean(0)
    best = None
    for lams in itertools.product(grid, repeat=len(recalls)):
        score = sum(lam * r for lam, r in zip(lams, recalls)) - cost
        pick = torch.where(ok, score, -float("inf")).argmax(0)[None]
        rec = [float(r.gather(0, pick).mean()) for r in recalls]
        if all(x >= t for x, t in zip(rec, targets)):
            total = float(cost.gather(0, pick).mean())
            if best is None or total < best[3]:
                best = (pick[0], [float(c.gather(0, pick).mean()) for c in costs], rec, total)
    return None if best is None else best[:3]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", help="a search --workdir (candidates.json + one folder of eval###.pt per prompt)")
    ap.add_argument("--cost", default="work", choices=["work", "time"],
                    help="minimise coverage (work) or the predicted time (search --cost time); prints both")
    ap.add_argument("--head-dim", type=int, default=64, help="for the time model (Qwen2.5-0.5B: 64)")
    a = ap.parse_args(argv)
    cands = [parse(n) for n in json.load(open(os.path.join(a.workdir, "candidates.json")))["candidates"]]
    runs = sorted(d for d in os.listdir(a.workdir) if os.path.isdir(os.path.join(a.workdir, d)))
    data = [load(os.path.join(a.workdir, r)) for r in runs]
    recalls, costs = [d[0] for d in data], [d[1] for d in data]
    s = cands.index(SEED)
    targets = [float(r[s].mean()) for r in recalls]
    seed_cov = [float(c[s].mean()) for c in costs]
    print("seed (1000, 6096): " + ", ".join(f"{r} coverage {c:.3f} recall {t:.4f}" for r, c, t in zip(runs, seed_cov, targets)))
    times = [time_cost(c, cands, a.head_dim) for c in costs]
    mean_time = torch.stack(times).mean(0)
    for kind in ("fixed", "all", "experimental"):
        got = match(recalls, costs, torch.tensor(allowed(cands, kind)), targets,
                    minimise=times if a.cost == "time" else None)
        if got is None:
            print(f"{kind:13s} no selection reaches the seed's recall on every prompt")
            continue
        pick, cov, rec = got
        t = float(mean_time.gather(0, pick[None]).mean())
        print(f"{kind:13s} " + ", ".join(f"{r} coverage {c:.3f} ({sc / c:.2f}x) recall {x:.4f}"
                                        for r, c, sc, x in zip(runs, cov, seed_cov, rec))
              + f"; predicted time {t:.3f} of dense ({1 / t:.2f}x, kernels + index builds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
