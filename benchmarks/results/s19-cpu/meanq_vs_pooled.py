# python benchmarks/results/s19-cpu/meanq_vs_pooled.py 16384 natural  (session 19, CPU): recall at equal top-k, pooled vs mean-query block scores
# block estimators at equal budget: mean(q).mean(k) (ours) vs mean(q).k_j summed (pooled-q, exact k) vs oracle-ish
import math, sys, time, torch
sys.path.insert(0, '/work/main')
from minference_compile.search.capture import capture, load_model
from minference_compile.search.cli import resolve_model
from minference_compile.search.prompts import encoder, prompt_ids
from minference_compile.search.score import _means, block_cost
from minference_compile.triton_kernels.block_sparse_index import index_from_means
from transformers import AutoConfig
torch.set_num_threads(1)
S = int(sys.argv[1]); prompt = sys.argv[2]
md = resolve_model('qwen05'); cfg = AutoConfig.from_pretrained(md)
model = load_model(md); enc = encoder(md, cfg.vocab_size)
ids = prompt_ids(prompt, S, enc); S = ids.shape[1]
t0 = time.time(); recs = capture(model, ids, 256); print('forward', time.time() - t0, flush=True)
B = 64; ks = (8, 16, 32, 64)
res = {n: {k: [] for k in ks} for n in ('meanmean', 'qmean_exactk', 'qmean_exactk_sink')}
cost = {k: [] for k in ks}
for li in sorted(recs):
    rec = recs[li]; k_all = rec['k']; qr = rec['q_rows']; qm = rec['q_means']; rows = rec['rows']
    Hq, R, D = qr.shape; G = Hq // k_all.shape[0]; sc = 1 / math.sqrt(D)
    j = torch.arange(S); nqb = qm.shape[1]; nkb = -(-S // B)
    km = _means(k_all)
    for h in range(Hq):
        k = k_all[h // G]
        p = torch.softmax((qr[h] @ k.T * sc).masked_fill(j > rows[:, None], float('-inf')), -1)
        pb = torch.nn.functional.pad(p, (0, -S % B)).view(R, -1, B).sum(-1)  # [R, NKB]
        # pooled-q exact-k block mass
        lg = qm[h] @ k.T * sc  # [NQB, S]
        bend = (torch.arange(nqb) * B + B - 1).clamp(max=S - 1)
        lg = lg.masked_fill(j[None] > bend[:, None], float('-inf'))
        pq = torch.softmax(lg, -1)
        M = torch.nn.functional.pad(pq, (0, -S % B)).view(nqb, -1, B).sum(-1)  # [NQB, NKB]
        for kk in ks:
            idx_a = index_from_means(qm[h][None, None], km[h // G][None, None], S, S, kk)[0, 0]  # [NQB, K]
            # b: diagonal forced + top others by M
            Md = M.clone(); diag = torch.arange(nqb)
            Md[diag, diag] = float('inf')
            kb = min(kk, nkb)
            top = Md.topk(kb, -1)
            idx_b = torch.where(top.values > 0, top.indices, -1)
            Ms = Md.clone(); Ms[:, 0] = torch.where(torch.arange(nqb) > 0, 1e30, Ms[:, 0])
            top = Ms.topk(kb, -1)
            idx_c = torch.where(top.values > 0, top.indices, -1)
            for name, idx in (('meanmean', idx_a), ('qmean_exactk', idx_b), ('qmean_exactk_sink', idx_c)):
                ids_ = idx[rows // B].long()
                res[name][kk].append(float((pb.gather(1, ids_.clamp(min=0)) * (ids_ >= 0)).sum(-1).mean()))
            cost[kk].append(float(block_cost(idx_a, S)))
    pass
    print(li, {n: round(sum(v[16]) / len(v[16]), 4) for n, v in res.items()}, flush=True)
for kk in ks:
    print(f'top-{kk}: coverage {sum(cost[kk]) / len(cost[kk]):.4f} ' + ' '.join(f'{n} {sum(v[kk]) / len(v[kk]):.4f}' for n, v in res.items()))
