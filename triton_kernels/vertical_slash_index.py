"""Vertical-slash index builder (docs/DESIGN.md "Vertical-slash index layout"): vectorised torch, no host sync; or
the same index in two Triton launches (vertical_slash_index_fused.py, the CUDA default up to 1024 slashes / columns; MINFERENCE_FUSED_VS_INDEX=1
until it has been timed on a GPU)."""
import os
from typing import NamedTuple, Optional

import torch

INT32_MAX = 2**31 - 1


def pair_for(head_dim: int) -> bool:
    """Whether to pair slash tiles into 64x128 tiles for this head dim. H100, 64K-128K (benchmarks/NOTES.md #11):
    2-6% faster at D=128 with the seed's budgets (a tie at small budgets), 10-19% slower at D=64 (the wider tile's
    registers cost more occupancy than the halved loop steps save)."""
    return head_dim > 64


_TILE_PAD = -(2**30)  # below any real tile offset (>= -63), keeps tile_offset descending


class VSIndex(NamedTuple):
    # NQB = ceil(q_len / block); query block qb starts at absolute position m0 = (seq_len - q_len) + block * qb.
    # NS: slash slots (aligned=True: 2 x the given ones, every d a multiple of block and tile_lo its run's end)
    tile_offset: torch.Tensor   # [B,H,NS]  int32 d of each tile, descending; tile keys [m0 - d, m0 - d + 64)
    tile_lo: torch.Tensor       # [B,H,NS]  int32 s_lo of the tile's component: key j valid iff j < m0 - s_lo + 64
    tile_count: torch.Tensor    # [B,H]     int32 valid tiles
    tile_begin: torch.Tensor    # [B,H,NQB] int32 first tile with d < m0 + 64
    columns: torch.Tensor       # [B,H,NV]  int32 sorted unique in-range columns, then INT32_MAX
    column_count: torch.Tensor  # [B,H,NQB] int32 columns <= m0 + 63
    slash_prefix: torch.Tensor  # [B,H,S+1] int32 number of selected offsets < x (aligned=True: [B,H,0], unused)
    # pair=True: double-width tiles, keys [m0 - d, m0 - d + 128), same layout; the tile_* lists keep the rest.
    # pair=False: NW = 0 and counts 0
    wide_offset: torch.Tensor   # [B,H,NW]
    wide_lo: torch.Tensor       # [B,H,NW]
    wide_count: torch.Tensor    # [B,H]
    wide_begin: torch.Tensor    # [B,H,NQB] first wide tile with d < m0 + 128
    # aligned=True: [B,H,NT+1], NT = S // block + 2 slots t = d / block: number of aligned tiles with d / block < t
    # (a column c of block m0 is covered iff tile t = ceil((m0 - c) / block) is listed). aligned=False: [B,H,0]
    tile_prefix: torch.Tensor


def aligned_offsets(slash: torch.Tensor, seq_len: int, block: int = 64) -> torch.Tensor:
    """slash [B,H,NS] int -> [B,H,2 NS] int64: the block-aligned tile offsets d (multiples of `block`) whose key
    tiles [m0 - d, m0 - d + block) intersect a selected offset's range [m0 - s, m0 - s + block): entry k holds
    block * floor(s_k / block), entry NS + k the next multiple when s_k % block != 0; -1 where there is none (s_k
    outside [0, seq_len), or a multiple for the second). Values lie in [0, seq_len + block). Block-rounded attention
    over these offsets (a d >= seq_len included) is the aligned semantics of docs/DESIGN.md."""
    s = slash.long()
    ok = (s >= 0) & (s < seq_len)
    d0 = torch.where(ok, s - s % block, -1)
    d1 = torch.where(ok & (s % block != 0), d0 + block, -1)
    return torch.cat([d0, d1], -1)


def aligned_slots(seq_len: int, block: int = 64) -> int:
    """Tile slots t = d / block of an aligned index (d < seq_len + block): tile_prefix has this + 1 entries."""
    return seq_len // block + 2


def _sorted_unique(x: torch.Tensor, ok: torch.Tensor, fill: int, descending: bool) -> torch.Tensor:
    # sort the last dim with entries where ~ok and duplicates replaced by `fill` (which sorts last)
    x = torch.where(ok, x, fill).sort(-1, descending=descending).values
    dup = torch.zeros_like(ok)
    dup[..., 1:] = x[..., 1:] == x[..., :-1]
    return torch.where(dup, fill, x).sort(-1, descending=descending).values


def index_shapes(vertical, slash, seq_len: int, block: int, q_len: Optional[int]):
    """-> (S, q_len, query blocks, vertical, slash): empty budgets become one -1 entry, so every index tensor is
    non-empty (the kernels get a valid pointer). Shared by both builders."""
    B, H = slash.shape[:2]
    S = int(seq_len)
    sq = S if q_len is None else int(q_len)
    assert 0 <= sq <= S, "q_len must be <= seq_len"
    if slash.shape[-1] == 0:
        slash = torch.full((B, H, 1), -1, dtype=torch.int64, device=slash.device)
    if vertical.shape[-1] == 0:
        vertical = torch.full((B, H, 1), -1, dtype=torch.int64, device=slash.device)
    return S, sq, -(-sq // block), vertical, slash


def build_vertical_slash_index(vertical: torch.Tensor, slash: torch.Tensor, seq_len: int, block: int = 64,
                               pair: bool = False, q_len: Optional[int] = None, aligned: bool = False,
                               impl: str = "auto") -> VSIndex:
    """vertical [B,H,NV] int (key columns), slash [B,H,NS] int (diagonal offsets i - j) -> VSIndex.

    seq_len: kv_len S; q_len: query rows (default S), the last q_len positions, so query block qb starts at
    absolute position (S - q_len) + block * qb. Entries outside [0, S) (e.g. -1 padding) and duplicates select
    nothing. Runs on the inputs' device.
    pair: merge each component's tiles two by two into double-width tiles (fewer, wider kernel steps).
    aligned: cover each selected offset by the whole key tiles at multiples d of `block` that its range touches
    (a superset of the block-rounded keys; interior tiles need no mask); tile_* lists have 2 NS slots, the
    column check uses tile_prefix instead of slash_prefix (docs/DESIGN.md "Vertical-slash, aligned").
    impl: "torch" (this function's ~112 launches), "triton" (two launches, the same index bit for bit; not for
    aligned or over 8192 slashes / 4096 columns), "auto" = triton on CUDA up to 1024 slashes and 1024 columns
    (MINFERENCE_FUSED_VS_INDEX=1: up to the triton limits, 0: never).
    """
    if impl not in ("auto", "torch", "triton"):
        raise ValueError(f"impl must be 'auto', 'torch' or 'triton', got {impl!r}")
    if impl != "torch":
        from .vertical_slash_index_fused import build_vertical_slash_index_fused, fused_by_default, fused_supported
        ok = fused_supported(slash, vertical, aligned)
        if impl == "triton" and not ok:
            raise ValueError("the fused builder takes aligned=False, <= 8192 slashes and <= 4096 columns")
        env = os.environ.get("MINFERENCE_FUSED_VS_INDEX", "")
        auto = slash.is_cuda and (env == "1" or (env != "0" and fused_by_default(slash, vertical, aligned)))
        if ok and (impl == "triton" or auto):
            return build_vertical_slash_index_fused(vertical, slash, seq_len, block, pair, q_len)
    B, H = slash.shape[:2]
    dev = slash.device
    S, sq, nqb, vertical, slash = index_shapes(vertical, slash, seq_len, block, q_len)
    m0 = torch.arange(nqb, device=dev, dtype=torch.int64) * block + (S - sq)

    # slash offsets (aligned: the aligned tile offsets, which may reach S + block - 1): unique, descending,
    # invalid (-1) last
    s = slash.to(device=dev, dtype=torch.int64)
    s_end = S
    if aligned:
        s, s_end = aligned_offsets(s, S, block), S + block
    ns = s.shape[-1]
    s = _sorted_unique(s, (s >= 0) & (s < s_end), -1, descending=True)
    valid = s >= 0
    pos = torch.arange(ns, device=dev).expand(B, H, ns)

    # components: a new one starts where the previous offset is more than `block` higher
    new = valid.clone()
    new[..., 1:] &= (s[..., :-1] - s[..., 1:]) > block
    first = torch.cummax(torch.where(new, pos, 0), -1).values  # first position of own component
    comp = torch.where(valid, new.long().cumsum(-1) - 1, ns)    # component id (ns = dump slot)
    s_hi = s.gather(-1, first)
    s_lo = torch.full((B, H, ns + 1), INT32_MAX, dtype=torch.int64, device=dev)
    s_lo = s_lo.scatter_reduce(-1, comp, s, "amin").gather(-1, comp.clamp_max(ns - 1))

    # tiles d = s_hi, s_hi - 64, ... : T = ceil((s_hi - s_lo + 64) / 64) per component, <= its offsets count.
    # pair=True: the first 2 * (T // 2) of them as T // 2 double-width tiles, the odd last one single
    T = (s_hi - s_lo + block - 1) // block + 1
    W = T // 2 if pair else torch.zeros_like(T)
    kth = pos - first

    def emit(count, d, width):
        # scatter each component's first `count` tiles (offsets d(kth)) to the front, descending
        n_tiles = torch.where(new, count, 0)
        incl = n_tiles.cumsum(-1)
        dst = torch.where(valid & (kth < count), (incl - n_tiles).gather(-1, first) + kth, ns)
        off = torch.full((B, H, ns + 1), _TILE_PAD, dtype=torch.int64, device=dev).scatter(-1, dst, d)[..., :ns]
        lo = torch.full((B, H, ns + 1), _TILE_PAD, dtype=torch.int64, device=dev).scatter(-1, dst, s_lo)[..., :ns]
        # tiles with d >= m0 + width lie entirely at keys < 0: count them (ascending search on -d)
        begin = torch.searchsorted((-off).contiguous(), (-(m0 + width)).expand(B, H, nqb).contiguous(), right=True)
        return off, lo, incl[..., -1], begin

    tile_offset, tile_lo, tile_count, tile_begin = emit(T - 2 * W, s_hi - 2 * block * W - block * kth, block)
    if pair:
        wide = emit(W, s_hi - 2 * block * kth, 2 * block)
    else:  # no wide tiles: empty lists tell the kernel to compile without the wide loop (its registers cost ~8%)
        wide = (tile_offset[..., :0], tile_lo[..., :0], torch.zeros_like(tile_count), torch.zeros_like(tile_begin))

    # vertical columns: unique ascending, invalid -> INT32_MAX
    v = vertical.to(device=dev, dtype=torch.int64)
    cols = _sorted_unique(v, (v >= 0) & (v < S), INT32_MAX, descending=False)
    column_count = torch.searchsorted(cols.contiguous(), (m0 + block - 1).expand(B, H, nqb).contiguous(), right=True)

    # prefix[x] = #selected offsets < x (aligned: over tile slots t = d / block, O(S / block) per head)
    n_pref, key = (aligned_slots(S, block), s // block) if aligned else (S, s)
    cnt = torch.zeros(B, H, n_pref + 1, dtype=torch.int32, device=dev)
    cnt.scatter_add_(-1, torch.where(valid, key + 1, 0), valid.to(torch.int32))
    prefix = cnt.cumsum(-1, dtype=torch.int32)
    empty = prefix[..., :0]
    slash_prefix, tile_prefix = (empty, prefix) if aligned else (prefix, empty)

    i32 = torch.int32
    return VSIndex(tile_offset.to(i32).contiguous(), tile_lo.to(i32).contiguous(), tile_count.to(i32).contiguous(),
                   tile_begin.to(i32).contiguous(), cols.to(i32).contiguous(), column_count.to(i32).contiguous(),
                   slash_prefix.contiguous(), *(t.to(i32).contiguous() for t in wide), tile_prefix.contiguous())


def causal_pairs(q_len: int, kv_len: int) -> float:
    """Causal (query, key) pairs of the last q_len queries of kv_len keys."""
    return q_len * (kv_len - q_len) + q_len * (q_len + 1) / 2


def work_per_block(index: VSIndex, block: int = 64) -> torch.Tensor:
    """[B,H,NQB] fp32: the pairs the kernel computes in each query block (block x block slash tiles from the
    block's first one on, a wide tile counting two, plus block-row gathered columns)."""
    tiles = (index.tile_count.unsqueeze(-1) - index.tile_begin).clamp(min=0).float()
    wide = (index.wide_count.unsqueeze(-1) - index.wide_begin).clamp(min=0).float()
    return (tiles + 2 * wide) * block * block + index.column_count.float() * block


def work_share(index: VSIndex, seq_len: int, block: int = 64, q_len: Optional[int] = None) -> torch.Tensor:
    """[B,H] fp32: work_per_block summed over the query blocks, over the causal pairs (S(S+1)/2 without a query
    offset). O(NQB) per head, on the index's device."""
    sq = seq_len if q_len is None else q_len
    return work_per_block(index, block).sum(-1) / causal_pairs(sq, seq_len)
