# python benchmarks/results/s19-cpu/seed_work_on_oracle_blocks.py WORKDIR/natural-32768  (session 19, CPU; WORKDIR: a search --keep-captures workdir at 32K)
# the seed's (1000, 6096) on oracle_bound's sampled query blocks: pair coverage (check against the oracle run) and
# kernel work (the VS index's tiles + columns), from the search's stored captures (k, last-64 q rows)
import math, sys, torch
sys.path.insert(0, '/work/main')
from benchmarks.oracle_bound import query_blocks, BLOCK
from minference_compile.ops.adaptive import select_vertical_slash, vs_scores
from minference_compile.ops.estimate import LOCAL_WINDOW, SINK_TOKENS
from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index
run = sys.argv[1]
S = 32768
qbs = query_blocks(S, 24)
m0s = qbs * BLOCK
rows = (qbs[:, None] * BLOCK + torch.arange(BLOCK)).flatten()
causal_total = float((rows + 1).sum())
pairs = work = 0.0
nh = 0
for li in range(24):
    rec = torch.load(f"{run}/layer{li:03d}.pt")
    k_all, qr = rec["k"], rec["q_rows"]
    Hq, R, D = qr.shape
    G = Hq // k_all.shape[0]
    j = torch.arange(S)
    for h in range(Hq):
        k = k_all[h // G]
        qz = qr.new_zeros(1, 1, S, D); qz[0, 0, S - 64:] = qr[h, R - 64:]
        vs, ss = vs_scores(qz, k[None, None], 64, 1 / math.sqrt(D))
        vert, sl = select_vertical_slash(vs, ss, 1000, 6096, 2.0, 64.0, SINK_TOKENS, LOCAL_WINDOW)
        vert, sl = vert[0, 0], sl[0, 0]
        pres = torch.zeros(S + 1, dtype=torch.int32); pres.scatter_(0, torch.where(sl >= 0, sl.long(), S), 1)
        prefix = torch.nn.functional.pad(pres[:S].cumsum(0), (1, 0))
        isv = torch.zeros(S, dtype=torch.bool); isv[vert[vert >= 0].long()] = True
        m0 = m0s.repeat_interleave(BLOCK)
        u = m0[:, None] - j[None]
        cov = (prefix[(u + BLOCK).clamp(0, S)] - prefix[u.clamp(0, S)]) > 0
        pairs += float(((cov | isv[None]) & (j[None] <= rows[:, None])).sum())
        idx = build_vertical_slash_index(vert[None, None], sl[None, None], S)
        for name, mult in (("tile", 1), ("wide", 2)):
            cnt, beg = getattr(idx, f"{name}_count")[0, 0], getattr(idx, f"{name}_begin")[0, 0]
            work += float((cnt.unsqueeze(-1) - beg).clamp(min=0)[qbs].sum()) * mult * BLOCK * BLOCK
        work += float(idx.column_count[0, 0, qbs].sum()) * BLOCK
        nh += 1
print(run, "heads", nh, "seed pair coverage on the sampled blocks %.4f, kernel work %.4f (work / pairs %.3f)" % (
    pairs / (nh * causal_total), work / (nh * causal_total), work / pairs))
