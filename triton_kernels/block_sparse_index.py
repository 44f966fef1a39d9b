"""Block-sparse key-block selection by mean pooling (docs/DESIGN.md "Block-sparse"); torch, chunked."""
from typing import Union

import torch

_SCORE_BYTES = 128 << 20  # per-chunk score matrix; topk/sort temporaries stay within a few times this


def _block_means(x: torch.Tensor, block: int) -> torch.Tensor:
    # [B,H,S,D] -> [B,H,ceil(S/block),D] fp32 means over each block's valid rows (no fp32 copy of x)
    B, H, S, D = x.shape
    nfull = S // block
    parts = []
    if nfull:
        parts.append(x[:, :, :nfull * block].unflatten(2, (nfull, block)).sum(3, dtype=torch.float32) / block)
    if S % block:
        parts.append(x[:, :, nfull * block:].sum(2, keepdim=True, dtype=torch.float32) / (S % block))
    return torch.cat(parts, 2)


def block_sparse_index(q: torch.Tensor, k: torch.Tensor, topk: Union[int, torch.Tensor], block: int = 64) -> torch.Tensor:
    """q [B,Hq,S,D], k [B,Hkv,S,D], topk int or int [Hq] -> [B,Hq,NQB,Kmax] int32, Kmax = clamp(max topk, 1, NQB).

    Row (b, h, qb): the diagonal block and the highest-scoring causal key blocks, min(topk[h], qb + 1) ids in
    all, ascending, then -1. A tensor topk costs one host sync (its max sets the output width).
    """
    B, Hq, S, D = q.shape
    Hkv = k.shape[1]
    g = Hq // Hkv
    n = -(-S // block)
    dev = q.device
    if isinstance(topk, torch.Tensor):
        tk = topk.to(device=dev, dtype=torch.int64).reshape(-1).expand(Hq)
        kmax = int(tk.max())
    else:
        tk = torch.full((Hq,), int(topk), dtype=torch.int64, device=dev)
        kmax = int(topk)
    kmax = max(1, min(kmax, n))
    if n == 0:
        return torch.empty(B, Hq, 0, kmax, dtype=torch.int32, device=dev)

    qm = _block_means(q, block).view(B, Hkv, g, n, D)
    km_t = _block_means(k, block).view(B, Hkv, 1, n, D).transpose(-1, -2)
    out = torch.empty(B, Hq, n, kmax, dtype=torch.int32, device=dev)
    chunk = max(1, min(n, _SCORE_BYTES // max(1, B * Hq * n * 4)))
    kb = torch.arange(n, device=dev)
    slot = torch.arange(kmax, device=dev)
    big = torch.iinfo(torch.int64).max
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        qb = torch.arange(c0, c1, device=dev)[:, None]
        sc = (qm[:, :, :, c0:c1] @ km_t).view(B, Hq, c1 - c0, n)
        sc.masked_fill_(kb > qb, float("-inf")).masked_fill_(kb == qb, float("inf"))
        top = sc.topk(kmax, dim=-1).indices                     # descending: diagonal first, non-causal last
        keep = slot < torch.minimum(tk[:, None, None], qb + 1)  # [Hq, C, kmax]
        top = torch.where(keep, top, big).sort(-1).values
        out[:, :, c0:c1] = torch.where(top == big, -1, top).to(torch.int32)
    return out
