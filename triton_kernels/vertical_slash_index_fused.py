"""The vertical-slash index builder in two Triton launches (issue 12: the torch builder is ~112 small launches, 0.6-1.1
ms at 128K whatever the budgets, 11% of the (100, 800) op on the H200; benchmarks/NOTES.md row 24). Same output as
`build_vertical_slash_index` (block-rounded semantics, optional pairs, query offset), bit for bit; aligned indexes
and budgets over 8192 slashes / 4096 columns stay on the torch builder.

Launch 1, one program per (b, h): sort the slash offsets descending (tl.sort), drop duplicates and out-of-range ones,
find components with scans (a component starts where the previous offset is more than `block` higher), write each
component's tiles to its place in the lists, then per query block a binary search for the first tile that reaches
it (tile_begin, wide_begin) and for the columns it sees (column_count). Launch 2, grid (b * h, S / 1024):
slash_prefix[x] = #offsets < x by binary search over the sorted offsets launch 1 left in its scratch row."""
import triton
import triton.language as tl

import torch

from .vertical_slash_index import INT32_MAX, VSIndex, _TILE_PAD, index_shapes

MAX_SLASH = 8192
MAX_VERTICAL = 4096
# the default ("auto" on CUDA) takes the fused builder up to these budgets: where the index share matters (small
# budgets: 8.0% vs 10.6% of a (100, 800) layer at 128K on the H200, NOTES row 24) and the JIT compile of a variant
# is seconds; beyond them the variants compile for minutes (MINFERENCE_FUSED_VS_INDEX=1 still forces them)
AUTO_MAX_SLASH = 1024
AUTO_MAX_VERTICAL = 1024
_BIG_C = tl.constexpr(2**30)  # above any offset, below int32 overflow in differences
_IMAX_C = tl.constexpr(INT32_MAX)
_TILE_PAD_C = tl.constexpr(_TILE_PAD)


@triton.jit
def _max_fn(a, b):
    return tl.maximum(a, b)


@triton.jit
def _min_fn(a, b):
    return tl.minimum(a, b)


@triton.jit
def _search_count(ARR, n, tgt, DESCENDING: tl.constexpr, STEPS: tl.constexpr):
    # per lane, the length of ARR[0:n]'s prefix that comes before tgt in its order: entries >= tgt (ARR
    # descending) or <= tgt (ascending); one binary search per target
    lo = tl.zeros_like(tgt)
    hi = tl.zeros_like(tgt) + n
    for _ in tl.static_range(STEPS):
        live = lo < hi
        mid = (lo + hi) // 2
        v = tl.load(ARR + mid, mask=live, other=0)
        before = (v >= tgt) if DESCENDING else (v <= tgt)
        lo = tl.where(live & before, mid + 1, lo)
        hi = tl.where(live & ~before, mid, hi)
    return lo


@triton.jit
def _emit(OFF, LO, CNT, BEG, bh, r, NS, NQB, BASE, new, valid, kth, count, d, s_lo, width,
          BLOCK: tl.constexpr, QCH: tl.constexpr, STEPS: tl.constexpr):
    # each component's first `count` tiles (offsets d(kth)) to the front of OFF / LO, descending; the rest padded
    n_tiles = tl.where(new, count, 0)
    excl = tl.cumsum(n_tiles, 0) - n_tiles
    start = tl.associative_scan(tl.where(new, excl, 0), 0, _max_fn)  # excl is non-decreasing: its value at `first`
    total = tl.sum(n_tiles, 0)
    ok = valid & (kth < count)
    dst = start + kth
    row = bh * NS
    tl.store(OFF + row + dst, d, mask=ok)
    tl.store(LO + row + dst, s_lo, mask=ok)
    pad = (r >= total) & (r < NS)
    tl.store(OFF + row + r, tl.zeros_like(r) + _TILE_PAD_C, mask=pad)
    tl.store(LO + row + r, tl.zeros_like(r) + _TILE_PAD_C, mask=pad)
    tl.store(CNT + bh, total)
    tl.debug_barrier()  # the lists are read back by the searches below (other threads' writes)
    for q0 in range(0, NQB, QCH):
        qb = q0 + tl.arange(0, QCH)
        # tiles with d >= m0 + width lie entirely at keys < 0: skipped by query block qb
        first_use = _search_count(OFF + row, total, BASE + BLOCK * qb + width, True, STEPS)
        tl.store(BEG + bh * NQB + qb, first_use, mask=qb < NQB)



@triton.jit
def _vs_index_kernel(SL, VE, SCR, T_OFF, T_LO, T_CNT, T_BEG, W_OFF, W_LO, W_CNT, W_BEG, COLS, C_CNT, NVALID,
                     NS, NV, S, BASE, NQB,
                     NSP: tl.constexpr, NVP: tl.constexpr, BLOCK: tl.constexpr, PAIR: tl.constexpr,
                     QCH: tl.constexpr, STEPS_S: tl.constexpr, STEPS_V: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)
    srow = SCR + bh * NSP
    r = tl.arange(0, NSP)
    # slash offsets: in range, unique, descending, -1 last (a duplicate becomes -1 and sorts to the end)
    x = tl.load(SL + bh * NS + r, mask=r < NS, other=-1)
    x = tl.sort(tl.where((x >= 0) & (x < S), x, -1), descending=True)
    tl.store(srow + r, x)
    tl.debug_barrier()
    prev = tl.load(srow + r - 1, mask=r > 0, other=-2)
    x = tl.sort(tl.where(x == prev, -1, x), descending=True)
    tl.debug_barrier()  # every lane has read the scratch row before it is overwritten
    tl.store(srow + r, x)
    tl.debug_barrier()
    valid = x >= 0
    tl.store(NVALID + bh, tl.sum(valid.to(tl.int32), 0))
    prev = tl.load(srow + r - 1, mask=r > 0, other=_BIG_C)
    nxt = tl.load(srow + r + 1, mask=r < NSP - 1, other=-1)
    # components: a new one starts where the previous offset is more than `block` higher
    new = valid & (prev - x > BLOCK)
    last = valid & ((nxt < 0) | (x - nxt > BLOCK))
    s_hi = tl.associative_scan(tl.where(new, x, _BIG_C), 0, _min_fn)  # offsets descend: the latest start's
    s_lo = tl.associative_scan(tl.where(last, x, -_BIG_C), 0, _max_fn, reverse=True)  # the next end's
    first = tl.associative_scan(tl.where(new, r, 0), 0, _max_fn)
    kth = r - first
    # tiles d = s_hi, s_hi - 64, ...: T per component; pairs: the first 2 (T // 2) as T // 2 double-width tiles
    T = (s_hi - s_lo + BLOCK - 1) // BLOCK + 1
    if PAIR:
        W = T // 2
    else:
        W = tl.zeros_like(T)
    _emit(T_OFF, T_LO, T_CNT, T_BEG, bh, r, NS, NQB, BASE, new, valid, kth, T - 2 * W,
          s_hi - 2 * BLOCK * W - BLOCK * kth, s_lo, BLOCK, BLOCK, QCH, STEPS_S)
    if PAIR:
        _emit(W_OFF, W_LO, W_CNT, W_BEG, bh, r, NS, NQB, BASE, new, valid, kth, W, s_hi - 2 * BLOCK * kth, s_lo,
              2 * BLOCK, BLOCK, QCH, STEPS_S)
    # vertical columns: in range, unique, ascending, INT32_MAX last
    rv = tl.arange(0, NVP)
    crow = COLS + bh * NV
    c = tl.load(VE + bh * NV + rv, mask=rv < NV, other=_IMAX_C)
    c = tl.sort(tl.where((c >= 0) & (c < S), c, _IMAX_C))
    tl.store(crow + rv, c, mask=rv < NV)
    tl.debug_barrier()
    cprev = tl.load(crow + rv - 1, mask=(rv > 0) & (rv < NV), other=-1)
    c = tl.sort(tl.where(c == cprev, _IMAX_C, c))
    tl.debug_barrier()
    tl.store(crow + rv, c, mask=rv < NV)
    tl.debug_barrier()
    for q0 in range(0, NQB, QCH):
        qb = q0 + tl.arange(0, QCH)
        seen = _search_count(crow, NV, BASE + BLOCK * qb + BLOCK - 1, False, STEPS_V)
        tl.store(C_CNT + bh * NQB + qb, seen, mask=qb < NQB)



@triton.jit
def _slash_prefix_kernel(SCR, NVALID, PREF, S, NSP: tl.constexpr, XCH: tl.constexpr, STEPS: tl.constexpr):
    # PREF[b, h, x] = #offsets < x = valid - #offsets >= x, for x in [0, S]
    bh = tl.program_id(0).to(tl.int64)
    xs = tl.program_id(1) * XCH + tl.arange(0, XCH)
    n = tl.load(NVALID + bh)
    tl.store(PREF + bh * (S + 1) + xs, n - _search_count(SCR + bh * NSP, n, xs, True, STEPS), mask=xs <= S)


def fused_supported(slash: torch.Tensor, vertical: torch.Tensor, aligned: bool) -> bool:
    return not aligned and slash.shape[-1] <= MAX_SLASH and vertical.shape[-1] <= MAX_VERTICAL


def fused_by_default(slash: torch.Tensor, vertical: torch.Tensor, aligned: bool) -> bool:
    return not aligned and slash.shape[-1] <= AUTO_MAX_SLASH and vertical.shape[-1] <= AUTO_MAX_VERTICAL


def build_vertical_slash_index_fused(vertical: torch.Tensor, slash: torch.Tensor, seq_len: int, block: int = 64,
                                     pair: bool = False, q_len=None) -> VSIndex:
    """`build_vertical_slash_index` (aligned=False) in two launches; the same VSIndex, bit for bit."""
    B, H = slash.shape[:2]
    dev = slash.device
    S, sq, nqb, vertical, slash = index_shapes(vertical, slash, seq_len, block, q_len)
    ns, nv = slash.shape[-1], vertical.shape[-1]
    assert ns <= MAX_SLASH and nv <= MAX_VERTICAL, "fused builder: too many slashes / columns (use the torch one)"
    # values outside int32 select nothing; clamp before the cast so they stay outside [0, S)
    sl = slash.to(dev).clamp(-1, INT32_MAX).to(torch.int32).contiguous()
    ve = vertical.to(dev).clamp(-1, INT32_MAX).to(torch.int32).contiguous()
    nsp, nvp = triton.next_power_of_2(ns), triton.next_power_of_2(nv)
    i32 = dict(dtype=torch.int32, device=dev)
    scr = torch.empty(B * H, nsp, **i32)
    t_off, t_lo = torch.empty(B, H, ns, **i32), torch.empty(B, H, ns, **i32)
    t_cnt, t_beg = torch.empty(B, H, **i32), torch.empty(B, H, nqb, **i32)
    nw = ns if pair else 0
    w_off, w_lo = torch.empty(B, H, nw, **i32), torch.empty(B, H, nw, **i32)
    w_cnt, w_beg = torch.zeros(B, H, **i32), torch.zeros(B, H, nqb, **i32)
    cols, c_cnt = torch.empty(B, H, nv, **i32), torch.empty(B, H, nqb, **i32)
    nvalid = torch.empty(B * H, **i32)
    pref = torch.empty(B, H, S + 1, **i32)
    if B * H == 0:
        return VSIndex(t_off, t_lo, t_cnt, t_beg, cols, c_cnt, pref, w_off, w_lo, w_cnt, w_beg, pref[..., :0])
    # search steps from the padded sizes (extra steps are masked no-ops): one compiled variant per power of two,
    # not per budget. Each variant compiles for 16 s (1024 slots) to 58 s (8192) on a 2-core CPU for sm_90
    # (benchmarks/NOTES.md row 24): the reason this builder stays opt-in
    warps = max(4, min(16, nsp // 512))
    _vs_index_kernel[(B * H,)](sl, ve, scr, t_off, t_lo, t_cnt, t_beg, w_off if pair else t_off,
                               w_lo if pair else t_lo, w_cnt, w_beg, cols, c_cnt, nvalid, ns, nv, S, S - sq, nqb,
                               NSP=nsp, NVP=nvp, BLOCK=block, PAIR=pair, QCH=256, STEPS_S=nsp.bit_length() + 1,
                               STEPS_V=nvp.bit_length() + 1, num_warps=warps)
    xch = 1024
    _slash_prefix_kernel[(B * H, triton.cdiv(S + 1, xch))](scr, nvalid, pref, S, NSP=nsp, XCH=xch,
                                                            STEPS=nsp.bit_length() + 1, num_warps=4)
    return VSIndex(t_off, t_lo, t_cnt, t_beg, cols, c_cnt, pref, w_off, w_lo, w_cnt, w_beg, pref[..., :0])
