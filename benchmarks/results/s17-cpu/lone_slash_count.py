import numpy as np, sys
from benchmarks.indexsets import generate_vs
S = int(sys.argv[1]); Sq = int(sys.argv[2]); nv, ns = int(sys.argv[3]), int(sys.argv[4]); T=128
V, Sl = generate_vs(S, 28, nv, ns, seed=0)
Sl = Sl[0].numpy().astype(np.int64)
res = {}
for K in (1,2,4,8,16):
  tot_all=tot_rest=0; offs=0
  for h in range(Sl.shape[0]):
    s = np.unique(Sl[h]); d = np.diff(s)
    comp = np.r_[0, np.cumsum(d > 255)]
    sizes = np.bincount(comp)
    small = sizes[comp] <= K
    offs += small.sum()
    for m0 in range(S - Sq, S, T*16):
        def tiles(ss):
            ss = ss[ss <= m0 + T - 1]
            lo = np.maximum(m0 - ss, 0); hi = np.maximum(m0 - ss + T - 1, 0)
            return len(np.unique(np.r_[lo // T, hi // T]))
        tot_all += tiles(s); tot_rest += tiles(s[~small])
  # diag pass cost in tile-equivalents: offsets * T rows * (1/15) per block vs tile = T*T
  nb = len(range(S - Sq, S, T*16))
  diag_tiles = offs/Sl.shape[0] * nb * Sl.shape[0] * T / (T*T) * 15
  print(f"S={S} ({nv},{ns}) comps<= {K} offsets: offsets/head {offs/Sl.shape[0]:.0f}, tile share {1-tot_rest/tot_all:.3f}, diag-pass cost as tile share (15x rate) {diag_tiles/tot_all:.3f}")
