import numpy as np, sys
from benchmarks.indexsets import generate_vs
S = int(sys.argv[1]); Sq=int(sys.argv[2]); nv, ns = int(sys.argv[3]), int(sys.argv[4])
V, Sl = generate_vs(S, 32, nv, ns, seed=0)
V=V[0].numpy().astype(np.int64); Sl=Sl[0].numpy().astype(np.int64)
ncol=[]; nout=[]; steps_all=[]; steps_out=[]
for h in range(8):
    for m0 in range(S-Sq, S, 128*4):
        s = Sl[h][Sl[h] <= m0+127]
        lo = np.maximum(m0 - s, 0); hi = np.maximum(m0 - s + 127, 0)
        t = set(np.unique(np.r_[lo//128, hi//128]).tolist())
        for mb in (m0, m0+64):
            c = V[h][V[h] <= mb+63]
            out = np.array([x for x in c if (x//128) not in t])
            ncol.append(len(c)); nout.append(len(out))
            steps_all.append(-(-len(c)//64)); steps_out.append(-(-len(out)//64))
print(S, (nv,ns), "cols per block %.0f, outside tiles %.0f, steps %.2f -> %.2f" % (np.mean(ncol), np.mean(nout), np.mean(steps_all), np.mean(steps_out)))
