# equal recall on every prompt (benchmarks.match_per_prompt.match), with and without the mean-query candidates
import json, os, sys, torch
sys.path.insert(0, '/work/main')
from benchmarks.match_per_prompt import load, match
from minference_compile.search.candidates import SEED, allowed, parse
Ws = sys.argv[1:]
cands, recalls, costs = [], None, None
runs = sorted(d for d in os.listdir(Ws[0]) if os.path.isdir(os.path.join(Ws[0], d)))
for W in Ws:
    cw = [parse(n) for n in json.load(open(os.path.join(W, "candidates.json")))["candidates"]]
    data = [load(os.path.join(W, r)) for r in runs]
    keep = [i for i, c in enumerate(cw) if c not in cands]
    cands += [cw[i] for i in keep]
    rw, cwt = [d[0][keep] for d in data], [d[1][keep] for d in data]
    recalls = rw if recalls is None else [torch.cat([a, b]) for a, b in zip(recalls, rw)]
    costs = cwt if costs is None else [torch.cat([a, b]) for a, b in zip(costs, cwt)]
s = cands.index(SEED)
targets = [float(r[s].mean()) for r in recalls]
seed_cov = [float(c[s].mean()) for c in costs]
print("runs", runs, "seed coverage", [round(x, 4) for x in seed_cov], "recall", [round(x, 4) for x in targets])
meanq = torch.tensor([c.pattern.startswith("block_sparse_meanq") for c in cands])
for kind in ("fixed", "all"):
    base = torch.tensor(allowed(cands, kind))
    for label, ok in (("without meanq", base & ~meanq), ("with meanq", base)):
        got = match(recalls, costs, ok, targets)
        if got is None:
            print(kind, label, "none"); continue
        pick, cov, rec = got
        names = {}
        for p in pick.flatten().tolist():
            n = cands[p].pattern
            names[n] = names.get(n, 0) + 1
        print(f"{kind:5s} {label:14s} " + ", ".join(f"{r}: coverage {c:.3f} ({sc / c:.2f}x) recall {x:.4f}"
              for r, c, sc, x in zip(runs, cov, seed_cov, rec)) + f"  picks {names}")
# per-candidate table for the block ones (mean over heads, natural first)
for i, c in enumerate(cands):
    if c.pattern.startswith("block_sparse") and c.pattern != "block_sparse_128":
        print(f"  {c.name:16s} " + "  ".join(f"{r}: recall {float(rc[i].mean()):.3f} cov {float(cc[i].mean()):.3f}"
              for r, rc, cc in zip(runs, recalls, costs)))
