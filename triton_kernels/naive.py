"""Full-mask fp32 references for the sparse patterns of docs/DESIGN.md (small S only: O(S^2) memory).

Masks are built straight from the definitions (loops where that is clearest), never from the index
builders, so they can check them. Negative index entries are padding and select nothing.
"""
import math
from typing import Optional, Union

import torch

BLOCK = 64


def _per_head(x: Union[int, torch.Tensor], H: int, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.int64).reshape(-1).expand(H)
    return torch.full((H,), int(x), dtype=torch.int64, device=device)


def _causal(S: int, device) -> torch.Tensor:
    i = torch.arange(S, device=device)
    return i[None, :] <= i[:, None]


def masked_attention_ref(q, k, v, mask, scale: Optional[float] = None) -> torch.Tensor:
    """fp32 softmax attention of q [B,Hq,S,D] over k, v [B,Hkv,S,D] with mask [B,Hq,S,S] (True = attend).

    GQA: q-head h reads kv-head h // (Hq // Hkv). Rows without any attended key give 0.
    """
    Hq, Hkv = q.shape[1], k.shape[1]
    g = Hq // Hkv
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    kf = k.float().repeat_interleave(g, dim=1)
    vf = v.float().repeat_interleave(g, dim=1)
    s = (q.float() @ kf.transpose(-1, -2)) * scale
    s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, dim=-1)
    p = torch.where(mask.any(-1, keepdim=True), p, torch.zeros_like(p))
    return (p @ vf).to(q.dtype)


def streaming_mask(B: int, H: int, S: int, init_num, local_window, device="cpu") -> torch.Tensor:
    """[B,H,S,S] bool: j <= i and (j < init_num[h] or i - j < local_window[h]). init/local: int or [H]."""
    init = _per_head(init_num, H, device)[:, None, None]
    local = _per_head(local_window, H, device)[:, None, None]
    i = torch.arange(S, device=device)[:, None]
    j = torch.arange(S, device=device)[None, :]
    m = (j <= i) & ((j < init) | (i - j < local))
    return m.unsqueeze(0).expand(B, H, S, S).clone()


def vertical_slash_mask(vertical: torch.Tensor, slash: torch.Tensor, S: int, block: int = BLOCK) -> torch.Tensor:
    """[B,H,S,S] bool, block-rounded vertical-slash: row i of the 64-row block at m0 attends j iff j <= i and
    (j in vertical, or some selected slash offset s has m0 - s <= j < m0 - s + 64). vertical [B,H,NV], slash [B,H,NS];
    entries outside [0, S) select nothing."""
    B, H = vertical.shape[:2]
    m = torch.zeros(B, H, S, S, dtype=torch.bool)
    vs, ss = vertical.cpu().tolist(), slash.cpu().tolist()
    for b in range(B):
        for h in range(H):
            for c in vs[b][h]:
                if 0 <= c < S:
                    m[b, h, :, c] = True
            for s in set(ss[b][h]):
                if not 0 <= s < S:
                    continue
                for m0 in range(0, S, block):
                    lo, hi = max(0, m0 - s), min(S, m0 - s + block)
                    if hi > lo:
                        m[b, h, m0:m0 + block, lo:hi] = True
    return (m & _causal(S, "cpu")).to(vertical.device)


def block_sparse_mask(block_index: torch.Tensor, S: int) -> torch.Tensor:
    """[B,H,S,S] bool from block_index [B,H,NQB,K] (key-block ids, -1 pad): row i attends j iff j <= i and
    j // 64 is listed for i // 64."""
    B, H, NQB, _ = block_index.shape
    NKB = -(-S // BLOCK)
    bi = block_index.long()
    ok = (bi >= 0) & (bi < NKB)
    bm = torch.zeros(B, H, NQB, NKB + 1, dtype=torch.bool, device=bi.device)
    bm.scatter_(-1, torch.where(ok, bi, NKB), True)
    bm = bm[..., :NKB].repeat_interleave(BLOCK, 2).repeat_interleave(BLOCK, 3)[:, :, :S, :S]
    return bm & _causal(S, bi.device)


def dense_causal_ref(q, k, v, scale=None):
    B, H, S, _ = q.shape
    return masked_attention_ref(q, k, v, _causal(S, q.device).expand(B, H, S, S), scale)


def streaming_ref(q, k, v, init_num, local_window, scale=None):
    B, H, S, _ = q.shape
    return masked_attention_ref(q, k, v, streaming_mask(B, H, S, init_num, local_window, q.device), scale)


def vertical_slash_ref(q, k, v, vertical, slash, scale=None, block=BLOCK):
    mask = vertical_slash_mask(vertical, slash, q.shape[2], block)
    return masked_attention_ref(q, k, v, mask.to(q.device), scale)


def block_sparse_ref(q, k, v, block_index, scale=None):
    return masked_attention_ref(q, k, v, block_sparse_mask(block_index, q.shape[2]).to(q.device), scale)


def block_scores_ref(q, k) -> torch.Tensor:
    """[B,Hq,NQB,NKB] fp32 dot(mean q rows of qb, mean k rows of kb) (means over valid rows; GQA)."""
    B, Hq, S, _ = q.shape
    g = Hq // k.shape[1]
    n = -(-S // BLOCK)
    out = torch.empty(B, Hq, n, n, dtype=torch.float32)
    for b in range(B):
        for h in range(Hq):
            qm = [q[b, h, i * BLOCK:(i + 1) * BLOCK].float().mean(0) for i in range(n)]
            km = [k[b, h // g, i * BLOCK:(i + 1) * BLOCK].float().mean(0) for i in range(n)]
            for i in range(n):
                for j in range(n):
                    out[b, h, i, j] = torch.dot(qm[i].cpu(), km[j].cpu())
    return out


def block_sparse_index_ref(q, k, topk) -> torch.Tensor:
    """[B,Hq,NQB,Kmax] int32, Kmax = min(max topk, NQB): per query block the diagonal block plus the
    highest-scoring causal key blocks, min(topk[h], qb + 1) in all, ascending, -1 padded."""
    B, Hq, S, _ = q.shape
    n = -(-S // BLOCK)
    tk = _per_head(topk, Hq, "cpu").tolist()
    kmax = max(1, min(max(tk), n))
    sc = block_scores_ref(q, k)
    out = torch.full((B, Hq, n, kmax), -1, dtype=torch.int32)
    for b in range(B):
        for h in range(Hq):
            for qb in range(n):
                cand = sorted(range(qb), key=lambda kb: -float(sc[b, h, qb, kb]))
                sel = sorted(([qb] + cand)[:max(0, min(tk[h], qb + 1))])
                out[b, h, qb, :len(sel)] = torch.tensor(sel, dtype=torch.int32)
    return out.to(q.device)
