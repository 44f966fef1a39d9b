"""Our 64x64 block index and the A-shape -> FlashAttention-4 block-sparse lists (pure torch: no FA4 import, CPU-testable).

FA4 (flash_attn.cute, BlockSparseTensorsTorch) takes, per (batch, q head, FA4 query block m): a "mask" list of
key blocks it masks element-wise (causal=True: the causal mask; or a mask_mod) and a "full" list it computes
unmasked; counts [B,H,M] int32 and ids [B,H,M,K] int32 (only ids[..., :count] are read; we pad with 0). Block
sizes (q_block, kv_block) are multiples of 64 here. A 128-row FA4 query block takes the union of the key blocks of
its two 64-row blocks (a superset of our pairs): `lists_coverage` reports what FA4 really computes.
Query blocks count from the first query row: in a pre-fill chunk (q_len < kv_len, the last q_len positions) block m
holds absolute rows kv_len - q_len + q_block * m onwards, key blocks stay absolute (FA4's convention). Our 64x64
index lists (`touched_blocks`, `lists_coverage`) take q_len == kv_len only, as in the benchmark.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

OUR_BLOCK = 64


class FA4Lists(NamedTuple):
    mask_cnt: torch.Tensor   # [B,H,M] int32: partial blocks (masked element-wise)
    mask_idx: torch.Tensor   # [B,H,M,Km] int32, ascending, 0-padded
    full_cnt: torch.Tensor   # [B,H,M] int32: blocks computed without a mask
    full_idx: torch.Tensor   # [B,H,M,Kf] int32, ascending, 0-padded
    block_size: tuple        # (q_block, kv_block)


def _nblocks(S: int, b: int) -> int:
    return -(-S // b)


def touched_blocks(block_index: torch.Tensor, S: int, q_block: int = 64, kv_block: int = 64) -> torch.Tensor:
    """block_index [B,H,ceil(S/64),K] (absolute 64-key-block ids, -1 pad; duplicates / non-causal ids ignored, as in
    our kernel) -> bool [B,H,ceil(S/q_block),ceil(S/kv_block)]: FA4 tile (m, n) holds a selected causal pair.
    O(blocks^2) memory, never S x S."""
    assert q_block % OUR_BLOCK == 0 and kv_block % OUR_BLOCK == 0, "FA4 blocks must be multiples of 64"
    B, H, nqb, _ = block_index.shape
    assert nqb == _nblocks(S, OUR_BLOCK), "block_index must have ceil(S/64) query blocks (no query offset)"
    nkb = _nblocks(S, OUR_BLOCK)
    bi = block_index.long()
    qb = torch.arange(nqb, device=bi.device)[:, None]
    ok = (bi >= 0) & (bi <= qb)  # causal ids only: the diagonal block is the last one a 64-row block reaches
    bm = torch.zeros(B, H, nqb, nkb + 1, dtype=torch.bool, device=bi.device)
    bm.scatter_(-1, torch.where(ok, bi, nkb), True)
    bm = bm[..., :nkb]
    # union over the 64-row blocks of an FA4 query block, and over the 64-key blocks of an FA4 key block
    rq, rk = q_block // OUR_BLOCK, kv_block // OUR_BLOCK
    M, N = _nblocks(S, q_block), _nblocks(S, kv_block)
    bm = torch.nn.functional.pad(bm, (0, N * rk - nkb, 0, M * rq - nqb))
    return bm.view(B, H, M, rq, N, rk).any(5).any(3)


def causal_full(S: int, q_block: int, kv_block: int, device=None, q_len: Optional[int] = None) -> torch.Tensor:
    """bool [M,N]: tile (m, n) is entirely causal and inside S (every key <= the block's first row): no mask.
    q_len: the rows are the last q_len of S (a pre-fill chunk; default S)."""
    sq = S if q_len is None else int(q_len)
    m = torch.arange(_nblocks(sq, q_block), device=device)[:, None]
    n = torch.arange(_nblocks(S, kv_block), device=device)[None, :]
    key_end = (n + 1) * kv_block  # exclusive
    return (key_end - 1 <= S - sq + m * q_block) & (key_end <= S)


def ashape_blocks(S: int, init: int, local: int, q_block: int, kv_block: int, device=None,
                  q_len: Optional[int] = None) -> tuple:
    """A-shape (j <= i and (j < init or i - j < local)) at FA4 block granularity -> (touched, full) bool [M,N]:
    touched = the tile holds an allowed pair; full = every pair of the tile (inside S) is allowed. q_len: the query
    rows are the last q_len of the S positions (a pre-fill chunk; default S), i absolute."""
    sq = S if q_len is None else int(q_len)
    m = torch.arange(_nblocks(sq, q_block), device=device)[:, None]
    n = torch.arange(_nblocks(S, kv_block), device=device)[None, :]
    r0 = S - sq + m * q_block  # first / last absolute row of the block
    r1 = torch.clamp(r0 + q_block, max=S) - 1
    c0, c1 = n * kv_block, torch.clamp((n + 1) * kv_block, max=S) - 1  # first / last key
    causal_any = c0 <= r1
    touched = causal_any & ((c0 < init) | (r0 - c1 < local))  # a sink pair, or the tile's closest pair in the window
    in_pattern = (c1 < init) | (r1 - c0 < local)  # every pair: all sinks, or the farthest pair in the window
    full = causal_full(S, q_block, kv_block, device, sq) & in_pattern
    return touched, full & touched


def to_lists(touched: torch.Tensor, full: Optional[torch.Tensor], S: int, q_block: int, kv_block: int) -> FA4Lists:
    """touched bool [B|1,H|1,M,N] (or [M,N]), full bool broadcastable to it (None: causal_full, q_len == S) -> FA4Lists.
    full tiles go to the unmasked list, the other touched tiles to the masked list; ids ascending (FA4 walks a list
    from its end and masks the sequence end only on the first tile it takes: the highest id must be last)."""
    if touched.dim() == 2:
        touched = touched[None, None]
    if full is None:
        full = causal_full(S, q_block, kv_block, touched.device)
    full = full & touched
    part = touched & ~full

    def compact(bm):
        N = bm.shape[-1]
        cnt = bm.sum(-1, dtype=torch.int32)
        width = max(1, int(cnt.max()) if cnt.numel() else 1)
        ids = torch.where(bm, torch.arange(N, device=bm.device), N).sort(-1).values[..., :width]
        ids = torch.where(ids == N, 0, ids).to(torch.int32)
        return cnt.contiguous(), ids.contiguous()

    mc, mi = compact(part)
    fc, fi = compact(full)
    return FA4Lists(mc, mi, fc, fi, (q_block, kv_block))


def lists_from_index(block_index: torch.Tensor, S: int, q_block: int = 64, kv_block: int = 64) -> FA4Lists:
    """Our index [B,H,ceil(S/64),K] -> FA4Lists at (q_block, kv_block), to be run with causal=True."""
    return to_lists(touched_blocks(block_index, S, q_block, kv_block), None, S, q_block, kv_block)


def lists_tiles(lists: FA4Lists, S: int) -> tuple:
    """FA4Lists -> (touched, full) bool [B,H,M,N]: the tiles the lists name."""
    q_block, kv_block = lists.block_size
    N = _nblocks(S, kv_block)

    def dense(cnt, ids):
        B, H, M, K = ids.shape
        valid = torch.arange(K, device=ids.device) < cnt[..., None]
        bm = torch.zeros(B, H, M, N + 1, dtype=torch.bool, device=ids.device)
        bm.scatter_(-1, torch.where(valid, ids.long(), N), True)
        return bm[..., :N]

    full = dense(lists.full_cnt, lists.full_idx)
    return full | dense(lists.mask_cnt, lists.mask_idx), full


def to_our_index(lists: FA4Lists, S: int) -> torch.Tensor:
    """FA4Lists -> our index [B,H,ceil(S/64),K] (ascending causal 64-key-block ids, -1 pad) selecting, under the
    causal mask, the same pairs FA4 computes with causal=True: runs our kernel on FA4's (superset) blocks."""
    q_block, kv_block = lists.block_size
    touched, _ = lists_tiles(lists, S)
    nb = _nblocks(S, OUR_BLOCK)
    bm = touched.repeat_interleave(q_block // OUR_BLOCK, 2).repeat_interleave(kv_block // OUR_BLOCK, 3)[..., :nb, :nb]
    bm = bm & torch.ones(nb, nb, dtype=torch.bool, device=bm.device).tril()
    cnt = bm.sum(-1)
    width = max(1, int(cnt.max()))
    ids = torch.where(bm, torch.arange(nb, device=bm.device), nb).sort(-1).values[..., :width]
    return torch.where(ids == nb, -1, ids).to(torch.int32).contiguous()


def pair_mask(lists: FA4Lists, S: int, mask_fn=None, q_len: Optional[int] = None) -> torch.Tensor:
    """bool [B,H,Sq,S] of the (row, key) pairs FA4 computes from the lists: every pair of a full tile, and the pairs
    of a masked tile that mask_fn(i [Sq,1], j [1,S]) allows (None: causal). Rows are the last Sq = q_len (default S)
    positions, query blocks counted from the first of them (FA4's bottom-right causal). Small S only (tests)."""
    q_block, kv_block = lists.block_size
    sq = S if q_len is None else int(q_len)
    touched, full = lists_tiles(lists, S)
    expand = lambda t: t.repeat_interleave(q_block, 2).repeat_interleave(kv_block, 3)[..., :sq, :S]  # noqa: E731
    i = torch.arange(S - sq, S, device=touched.device)[:, None]
    j = torch.arange(S, device=touched.device)[None, :]
    allowed = (j <= i) if mask_fn is None else mask_fn(i, j)
    return expand(full) | (expand(touched & ~full) & allowed)


def lists_coverage(lists: FA4Lists, S: int, init: Optional[int] = None, local: Optional[int] = None) -> float:
    """Share of the S(S+1)/2 causal pairs FA4 computes, mean over heads, without an S x S tensor: full tiles count
    all their pairs, masked tiles their causal pairs (or A-shape pairs when init/local are given: the mask_mod)."""
    q_block, kv_block = lists.block_size
    rows_of = lambda m: torch.clamp(S - m * q_block, max=q_block)  # noqa: E731
    keys_of = lambda n: torch.clamp(S - n * kv_block, max=kv_block)  # noqa: E731
    B, H = lists.full_cnt.shape[:2]
    total = torch.zeros(B, H, dtype=torch.float64)
    M = lists.full_cnt.shape[2]
    m = torch.arange(M)[:, None]
    for cnt, ids, is_full in ((lists.full_cnt, lists.full_idx, True), (lists.mask_cnt, lists.mask_idx, False)):
        cnt, ids = cnt.cpu().long(), ids.cpu().long()
        valid = torch.arange(ids.shape[-1]) < cnt[..., None]
        if is_full:
            pairs = rows_of(m) * keys_of(ids)
        else:  # per row of the tile: keys c0..c1 allowed for row i
            pairs = torch.zeros_like(ids)
            c0, c1 = ids * kv_block, torch.clamp((ids + 1) * kv_block, max=S) - 1
            for t in range(q_block):
                i = m * q_block + t
                hi = torch.minimum(c1, i)
                n_causal = torch.clamp(hi - c0 + 1, min=0)
                if init is None:
                    got = n_causal
                else:  # j in [c0, hi] with j < init, plus j in [max(init, i - local + 1, c0), hi]
                    sink = torch.clamp(torch.minimum(hi, torch.full_like(hi, init - 1)) - c0 + 1, min=0)
                    lo = torch.maximum(torch.maximum(c0, i - local + 1), torch.full_like(c0, init))
                    got = sink + torch.clamp(hi - lo + 1, min=0)
                pairs += torch.where(i < S, got, 0)
        total += torch.where(valid, pairs, 0).sum((-1, -2)).double()
    return float((total / (S * (S + 1) / 2)).mean())
