import numpy as np, sys
from benchmarks.indexsets import generate_vs
S = int(sys.argv[1]); Sq = int(sys.argv[2]); nv, ns = int(sys.argv[3]), int(sys.argv[4])
V, Sl = generate_vs(S, 28, nv, ns, seed=0)
Sl = Sl[0].numpy().astype(np.int64)
rat=[]; a4s=[]; a6s=[]
for h in range(Sl.shape[0]):
    s = np.unique(Sl[h]); a4=a6=0
    for m0 in range(S - Sq, S, 128*8):
        ss = s[s <= m0 + 127]
        lo = np.maximum(m0 - ss, 0); hi = np.maximum(m0 - ss + 127, 0)
        a4 += len(np.unique(np.r_[lo // 128, hi // 128])) * 128*128
        for m in (m0, m0+64):
            ss = s[s <= m + 63]
            # components: merged ranges of [m - s, m - s + 64)
            lo = np.sort(np.maximum(m - ss, 0)); 
            # merge intervals [lo, lo+64)
            br = np.r_[True, np.diff(lo) > 64]
            starts = lo[br]; ends = np.r_[lo[np.r_[br[1:], True]]] + 64
            a6 += int(np.sum(np.ceil((ends - starts) / 64))) * 64*64
    rat.append(a4/a6); a4s.append(a4); a6s.append(a6)
rat=np.array(rat); a4s=np.array(a4s); a6s=np.array(a6s)
print(S, Sq, (nv,ns), "ratio per head: min %.2f med %.2f max %.2f" % (rat.min(), np.median(rat), rat.max()))
for be in (1.5, 1.76, 2.0):
    r_fa4, r_tr = 1.09, 1.09/be
    all_fa4 = a4s.sum()/r_fa4; all_tr = a6s.sum()/r_tr
    best = np.minimum(a4s/r_fa4, a6s/r_tr).sum()
    print(f" breakeven {be}: all FA4 {all_fa4/all_fa4:.3f}, all Triton {all_tr/all_fa4:.3f}, per-head best {best/all_fa4:.3f}")
