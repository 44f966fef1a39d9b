# python benchmarks/results/s20-cpu/submean_estimate.py 16384 natural  (session 20, CPU): recall at equal top-k of the
# mean-query block estimate (one mean of the block's 64 rows, block_sparse_meanq) against sub-block means (the block's
# masses averaged over 2 means of 32 rows / 4 means of 16 rows) and the block's last row alone: is the fixed patterns'
# gap to the fixed top-k oracle (NOTES "Oracle bound", session 20) in the single mean?
import math, sys, time, torch
sys.path.insert(0, '/work/main')
from minference_compile.search.capture import capture, load_model
from minference_compile.search.cli import resolve_model
from minference_compile.search.prompts import encoder, prompt_ids
from minference_compile.search.score import block_cost
from transformers import AutoConfig
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
S = int(sys.argv[1]); prompt = sys.argv[2]
md = resolve_model('qwen05'); cfg = AutoConfig.from_pretrained(md)
model = load_model(md); enc = encoder(md, cfg.vocab_size)
ids = prompt_ids(prompt, S, enc); S = ids.shape[1]
t0 = time.time(); recs = capture(model, ids, 256, full_q=True); print('forward', round(time.time() - t0), flush=True)
B = 64; ks = (8, 16, 32, 64)
names = ('mean64', 'sub32x2', 'sub16x4', 'lastrow')
res = {n: {k: [] for k in ks} for n in names}
cost = {k: [] for k in ks}
j = torch.arange(S)
nqb = -(-S // B)
bend = (torch.arange(nqb) * B + B - 1).clamp(max=S - 1)


def block_mass(qs, k, sc):
    """qs [NQB, m, D]: m query vectors per block -> [NQB, NKB] mean over them of the softmax mass per key block
    (keys up to the block's last row, as block_sparse_meanq)."""
    n, m, D = qs.shape
    lg = (qs.reshape(n * m, D) @ k.T * sc).view(n, m, S).masked_fill(j[None, None] > bend[:, None, None], float('-inf'))
    p = torch.softmax(lg, -1).mean(1)
    return torch.nn.functional.pad(p, (0, -S % B)).view(n, -1, B).sum(-1)


for li in sorted(recs):
    rec = recs.pop(li); k_all = rec['k']; qr = rec['q_rows']; q = rec['q']; rows = rec['rows']
    Hq, R, D = qr.shape; G = Hq // k_all.shape[0]; sc = 1 / math.sqrt(D)
    qpad = torch.nn.functional.pad(q, (0, 0, 0, -S % B))  # [Hq, nqb*64, D]; the last block's missing rows are 0
    cnt = torch.clamp(S - torch.arange(nqb) * B, max=B)
    for h in range(Hq):
        k = k_all[h // G]
        p = torch.softmax((qr[h] @ k.T * sc).masked_fill(j > rows[:, None], float('-inf')), -1)
        pb = torch.nn.functional.pad(p, (0, -S % B)).view(R, -1, B).sum(-1)  # [R, NKB] exact mass of sampled rows
        blk = qpad[h].view(nqb, B, D)
        M = {'mean64': block_mass(blk.sum(1, keepdim=True) / cnt[:, None, None], k, sc)}
        for name, m in (('sub32x2', 2), ('sub16x4', 4)):  # (the last block's zero rows weigh in its sub-means)
            M[name] = block_mass(blk.view(nqb, m, B // m, D).mean(2), k, sc)
        last = q[h][bend]  # each block's last row
        M['lastrow'] = block_mass(last[:, None], k, sc)
        for kk in ks:
            idx = None
            for name in names:
                Md = M[name].clone()
                Md[torch.arange(nqb), torch.arange(nqb)] = float('inf')  # the diagonal first, then the top masses
                top = Md.topk(min(kk, Md.shape[1]), -1)
                idx = torch.where(top.values > 0, top.indices, -1)
                ids_ = idx[rows // B].long()
                res[name][kk].append(float((pb.gather(1, ids_.clamp(min=0)) * (ids_ >= 0)).sum(-1).mean()))
            cost[kk].append(float(block_cost(idx.sort(-1, descending=True).values.flip(-1), S)))
    print(li, {n: round(sum(v[16]) / len(v[16]), 4) for n, v in res.items()}, flush=True)
for kk in ks:
    print(f'top-{kk}: coverage {sum(cost[kk]) / len(cost[kk]):.4f} ' + ' '.join(f'{n} {sum(v[kk]) / len(v[kk]):.4f}'
                                                                          for n, v in res.items()))
