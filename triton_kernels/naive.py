"""Full-mask fp32 references for the sparse patterns of docs/DESIGN.md (small S only: O(S^2) memory).

Masks are built straight from the definitions (loops where that is clearest), never from the index
builders, so they can check them. Negative index entries are padding and select nothing.

Query offset (docs/DESIGN.md "Query offset"): q [B,Hq,Sq,D] against k/v [B,Hkv,S,D], Sq <= S; query row r sits at
absolute position p = S - Sq + r. Masks are [B,H,Sq,S]; `q_len=None` means Sq = S.
"""
import math
from typing import Optional, Union

import torch

BLOCK = 64


def _per_head(x: Union[int, torch.Tensor], H: int, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.int64).reshape(-1).expand(H)
    return torch.full((H,), int(x), dtype=torch.int64, device=device)


def _positions(S: int, q_len) -> torch.Tensor:
    """Absolute positions of the query rows: the last q_len of S."""
    sq = S if q_len is None else int(q_len)
    assert 0 <= sq <= S, "q_len must be <= kv_len"
    return torch.arange(S - sq, S)


def _causal(S: int, device, q_len=None) -> torch.Tensor:
    """[Sq, S] bool: key j <= the row's absolute position."""
    return torch.arange(S, device=device)[None, :] <= _positions(S, q_len).to(device)[:, None]


def masked_attention_ref(q, k, v, mask, scale: Optional[float] = None) -> torch.Tensor:
    """fp32 softmax attention of q [B,Hq,Sq,D] over k, v [B,Hkv,S,D] with mask [B,Hq,Sq,S] (True = attend).

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


def streaming_mask(B: int, H: int, S: int, init_num, local_window, device="cpu", q_len=None) -> torch.Tensor:
    """[B,H,Sq,S] bool: row at position i attends j iff j <= i and (j < init_num[h] or i - j < local_window[h]).
    init/local: int or [H]."""
    init = _per_head(init_num, H, device)[:, None, None]
    local = _per_head(local_window, H, device)[:, None, None]
    i = _positions(S, q_len).to(device)[:, None]
    j = torch.arange(S, device=device)[None, :]
    m = (j <= i) & ((j < init) | (i - j < local))
    return m.unsqueeze(0).expand(B, H, i.shape[0], S).clone()


def _vs_mask(vertical: torch.Tensor, slash: torch.Tensor, S: int, q_len, rows: int, ranges) -> torch.Tensor:
    """The vertical-slash masks built element by element: every row sees its head's vertical columns in [0, S);
    the query rows form `rows`-row blocks from the chunk's first row, and ``ranges(s, m0)`` gives the key ranges
    [lo, hi) that offset s selects for the whole block starting at absolute position m0 (clipped to [0, S)); then
    causal."""
    B, H = vertical.shape[:2]
    sq = S if q_len is None else int(q_len)
    off = S - sq
    m = torch.zeros(B, H, sq, S, dtype=torch.bool)
    vs, ss = vertical.cpu().tolist(), slash.cpu().tolist()
    for b in range(B):
        for h in range(H):
            for c in vs[b][h]:
                if 0 <= c < S:
                    m[b, h, :, c] = True
            for s in set(ss[b][h]):
                if not 0 <= s < S:
                    continue
                for r0 in range(0, sq, rows):
                    for lo, hi in ranges(s, off + r0):
                        lo, hi = max(0, lo), min(S, hi)
                        if hi > lo:
                            m[b, h, r0:r0 + rows, lo:hi] = True
    return (m & _causal(S, "cpu", sq)).to(vertical.device)


def vertical_slash_mask(vertical: torch.Tensor, slash: torch.Tensor, S: int, block: int = BLOCK,
                        q_len=None) -> torch.Tensor:
    """[B,H,Sq,S] bool, block-rounded vertical-slash: the query rows form 64-row blocks from the chunk's first row,
    block qb starting at absolute position m0 = S - Sq + 64 qb; its row at position i attends j iff j <= i and
    (j in vertical, or some selected slash offset s has m0 - s <= j < m0 - s + 64). vertical [B,H,NV], slash [B,H,NS];
    entries outside [0, S) select nothing."""
    return _vs_mask(vertical, slash, S, q_len, block, lambda s, m0: [(m0 - s, m0 - s + block)])


def vertical_slash_aligned_mask(vertical: torch.Tensor, slash: torch.Tensor, S: int, block: int = BLOCK,
                                q_len=None) -> torch.Tensor:
    """[B,H,Sq,S] bool, aligned vertical-slash (docs/DESIGN.md): as vertical_slash_mask, but a selected offset s
    covers, in the block at m0, every whole key tile [m0 - d, m0 - d + 64) with d a multiple of 64 that meets its
    range [m0 - s, m0 - s + 64) (|d - s| < 64: d = 64 floor(s/64), and d + 64 when s % 64 != 0)."""
    return _vs_mask(vertical, slash, S, q_len, block,
                    lambda s, m0: [(m0 - d, m0 - d + block) for d in range(0, S + 2 * block, block)
                                   if abs(d - s) < block])


def vertical_slash_tiled_mask(vertical: torch.Tensor, slash: torch.Tensor, S: int, q_len=None,
                              tile_q: int = 128, tile_k: int = 128) -> torch.Tensor:
    """[B,H,Sq,S] bool, tiled vertical-slash (triton_kernels/vertical_slash_tiled.py, docs/DESIGN.md): tile_q-row
    query blocks from the chunk's first row (block start m0 = S - Sq + tile_q m), absolute key tiles
    [tile_k n, tile_k n + tile_k); a tile is attended by the whole block iff a selected offset s has the block's range
    [m0 - s, m0 - s + tile_q) meeting it; row i attends j iff j <= i and (j's tile is, or j is a vertical column).
    Entries outside [0, S) select nothing."""
    def tiles(s, m0):  # the whole tiles the block's diagonal range [m0 - s, m0 - s + tile_q) meets, within [0, S)
        lo, hi = max(m0 - s, 0), min(m0 - s + tile_q, S)
        return [(n * tile_k, (n + 1) * tile_k) for n in range(lo // tile_k, (hi - 1) // tile_k + 1)] if hi > lo else []
    return _vs_mask(vertical, slash, S, q_len, tile_q, tiles)


def block_sparse_mask(block_index: torch.Tensor, S: int, q_len=None, block: int = BLOCK) -> torch.Tensor:
    """[B,H,Sq,S] bool from block_index [B,H,ceil(Sq/block),K] (absolute key-block ids, -1 pad): local row r
    (position S - Sq + r) attends j iff j <= its position and j // block is listed for query block r // block."""
    B, H, NQB, _ = block_index.shape
    sq = S if q_len is None else int(q_len)
    NKB = -(-S // block)
    bi = block_index.long()
    ok = (bi >= 0) & (bi < NKB)
    bm = torch.zeros(B, H, NQB, NKB + 1, dtype=torch.bool, device=bi.device)
    bm.scatter_(-1, torch.where(ok, bi, NKB), True)
    bm = bm[..., :NKB].repeat_interleave(block, 2).repeat_interleave(block, 3)[:, :, :sq, :S]
    return bm & _causal(S, bi.device, sq)


def dense_causal_ref(q, k, v, scale=None):
    B, H, sq, _ = q.shape
    S = k.shape[2]
    return masked_attention_ref(q, k, v, _causal(S, q.device, sq).expand(B, H, sq, S), scale)


def streaming_ref(q, k, v, init_num, local_window, scale=None):
    B, H, sq, _ = q.shape
    mask = streaming_mask(B, H, k.shape[2], init_num, local_window, q.device, q_len=sq)
    return masked_attention_ref(q, k, v, mask, scale)


def vertical_slash_ref(q, k, v, vertical, slash, scale=None, block=BLOCK, aligned=False):
    build = vertical_slash_aligned_mask if aligned else vertical_slash_mask
    mask = build(vertical, slash, k.shape[2], block, q_len=q.shape[2])
    return masked_attention_ref(q, k, v, mask.to(q.device), scale)


def vertical_slash_tiled_ref(q, k, v, vertical, slash, scale=None, tile_q=128, tile_k=128):
    mask = vertical_slash_tiled_mask(vertical, slash, k.shape[2], q.shape[2], tile_q, tile_k)
    return masked_attention_ref(q, k, v, mask.to(q.device), scale)


def block_sparse_ref(q, k, v, block_index, scale=None, block: int = BLOCK):
    mask = block_sparse_mask(block_index, k.shape[2], q_len=q.shape[2], block=block)
    return masked_attention_ref(q, k, v, mask.to(q.device), scale)


def diagonal_blocks(qb: int, q_len: int, kv_len: int, block: int = BLOCK):
    """(lo, hi): the key blocks lo..hi that hold the positions of query block qb's rows (one block when the offset
    kv_len - q_len is a multiple of the block, else one or two). Blocks < lo are causal for every row of the block."""
    first = kv_len - q_len + qb * block
    last = min(first + block - 1, kv_len - 1)
    return first // block, last // block


def block_scores_ref(q, k, block: int = BLOCK) -> torch.Tensor:
    """[B,Hq,NQB,NKB] fp32 dot(mean q rows of local query block qb, mean k rows of key block kb) (means over
    valid rows; GQA). NQB = ceil(Sq/block), NKB = ceil(S/block)."""
    B, Hq, sq, _ = q.shape
    S = k.shape[2]
    g = Hq // k.shape[1]
    n, nk = -(-sq // block), -(-S // block)
    out = torch.empty(B, Hq, n, nk, dtype=torch.float32)
    for b in range(B):
        for h in range(Hq):
            qm = [q[b, h, i * block:(i + 1) * block].float().mean(0) for i in range(n)]
            km = [k[b, h // g, i * block:(i + 1) * block].float().mean(0) for i in range(nk)]
            for i in range(n):
                for j in range(nk):
                    out[b, h, i, j] = torch.dot(qm[i].cpu(), km[j].cpu())
    return out


def block_sparse_count(topk: int, lo: int, hi: int) -> int:
    """Ids kept for a query block with diagonal blocks lo..hi: 0 for topk <= 0, else min(topk, hi + 1) raised to
    the number of diagonal blocks (they are always kept)."""
    return 0 if topk <= 0 else max(min(topk, hi + 1), hi - lo + 1)


def block_sparse_index_ref(q, k, topk, block: int = BLOCK) -> torch.Tensor:
    """[B,Hq,NQB,Kmax] int32, Kmax = clamp(max(max topk, diagonal blocks per row), 1, NKB): per query block its
    diagonal blocks plus the highest-scoring key blocks below them, block_sparse_count(...) in all, ascending,
    -1 padded (blocks of ``block`` rows / keys)."""
    B, Hq, sq, _ = q.shape
    S = k.shape[2]
    n, nk = -(-sq // block), -(-S // block)
    tk = _per_head(topk, Hq, "cpu").tolist()
    diag = [diagonal_blocks(qb, sq, S, block) for qb in range(n)]
    kmax = max(1, min(max(tk + [hi - lo + 1 for lo, hi in diag]), nk))
    sc = block_scores_ref(q, k, block)
    out = torch.full((B, Hq, n, kmax), -1, dtype=torch.int32)
    for b in range(B):
        for h in range(Hq):
            for qb, (lo, hi) in enumerate(diag):
                cand = sorted(range(lo), key=lambda kb: -float(sc[b, h, qb, kb]))
                sel = sorted((list(range(lo, hi + 1)) + cand)[:block_sparse_count(tk[h], lo, hi)])
                out[b, h, qb, :len(sel)] = torch.tensor(sel, dtype=torch.int32)
    return out.to(q.device)
