"""Vertical-slash on 128 x 128 tiles (docs/DESIGN.md "Vertical-slash, tiled"): the slash part as lists of whole
key tiles for a block-sparse kernel that takes tile lists (FlashAttention-4's sm90 forward, ops/fa4.py), then the
vertical columns those tiles leave out, continuing that kernel's online softmax from its output and log-sum-exp.

Semantics: query rows form 128-row blocks from the chunk's first row (block m starts at absolute position
m0 = S - Sq + 128 m); key tiles are absolute, tile n = keys [T n, T n + T) with T = 128 (default) or 64. Tile n is
touched in block m iff a selected offset s has the block's diagonal range [m0 - s, m0 - s + 128) meeting it. Row i
attends j iff j <= i and (j's tile is touched, or j is a vertical column). A superset of the 64-row block-rounded
pairs (each 64-row block's range [m0' - s, m0' - s + 64) lies inside its 128-row block's [m0 - s, m0 - s + 128)).
Reference: naive.vertical_slash_tiled_mask."""
import torch
import triton
import triton.language as tl

from ._common import _attn_tile, _q_tile, block_d, dot_precision, qk_scale

TILE = 128  # FA4's sm90 tile (q and kv) for head dims 64-128 with block-sparse lists
TILE_K = (128, 64)  # key tile widths FA4's sm90 forward takes with 128-row lists (it shrinks tile_n to the list's)
# the columns pass: 64 gathered keys per step; (rows per program, warps, stages). The VS index counts columns per
# 64-row block; a 128-row program takes its second block's count (columns are sorted; the causal mask cuts the rest).
# H200, 128K llama3-8b (benchmarks/NOTES.md row 26): 64 rows, 4 warps, 1 stage fastest of COLS_CONFIGS (2.90 ms vs
# 3.8-5.0 ms), so the default; the others stay selectable per call for measurement
BLOCK_N = 64
COLS_CONFIG = (64, 4, 1)
COLS_CONFIGS = ((64, 4, 1), (64, 4, 2), (128, 8, 1), (128, 8, 2), (128, 4, 2))


@triton.jit
def _touched(pref, m0, n, S, TQ: tl.constexpr, TK: tl.constexpr):
    # tile n (keys [TK n, TK n + TK)) is touched in the TQ-row block starting at m0 iff a selected offset s has
    # [m0 - s, m0 - s + TQ) meeting it: s in [m0 - TK n - (TK - 1), m0 - TK n + TQ - 1]; pref[x] = number of
    # selected offsets < x, x in [0, S]
    lo = tl.minimum(tl.maximum(m0 - TK * n - (TK - 1), 0), S)
    hi = tl.minimum(tl.maximum(m0 - TK * n + TQ, 0), S)
    return (tl.load(pref + hi) - tl.load(pref + lo)) > 0


@triton.jit
def _vs_tile_lists_kernel(PREF, FCNT, FIDX, MCNT, MIDX, SQ, S, NM, KF, KM,
                          TQ: tl.constexpr, TK: tl.constexpr, BLOCK: tl.constexpr):
    # one program per (TQ-row query block m, batch * head): the touched causal tiles in ascending order, those
    # wholly at or below the block's first row and inside S in the full list (computed without a mask), the rest
    # (the tiles the diagonal crosses) in the mask list (computed under the causal mask)
    m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    m0 = S - SQ + m * TQ
    r1 = tl.minimum(m0 + TQ - 1, S - 1)
    n_end = r1 // TK + 1
    pref = PREF + bh * (S + 1)
    fbase = FIDX + (bh * NM + m) * KF
    mbase = MIDX + (bh * NM + m) * KM
    nf = tl.full([], 0, tl.int32)
    nm = tl.full([], 0, tl.int32)
    for n0 in range(0, n_end, BLOCK):
        n = n0 + tl.arange(0, BLOCK)
        hit = (n < n_end) & _touched(pref, m0, n, S, TQ, TK)
        full = hit & (TK * n + TK - 1 <= m0) & (TK * n + TK <= S)
        part = hit & ~full
        fi = full.to(tl.int32)
        pi = part.to(tl.int32)
        tl.store(fbase + nf + tl.cumsum(fi, 0) - 1, n, mask=full)
        tl.store(mbase + nm + tl.cumsum(pi, 0) - 1, n, mask=part)
        nf += tl.sum(fi, 0)
        nm += tl.sum(pi, 0)
    tl.store(FCNT + bh * NM + m, nf)
    tl.store(MCNT + bh * NM + m, nm)


def tile_lists(slash_prefix: torch.Tensor, q_len: int, kv_len: int, slash_slots: int, tile_k: int = TILE):
    """slash_prefix [B,H,S+1] int32 (a VSIndex's: selected offsets < x) -> (full_cnt [B,H,M], full_idx [B,H,M,KF],
    mask_cnt [B,H,M], mask_idx [B,H,M,KM]) int32, M = ceil(q_len / 128): per 128-row query block the touched
    tile_k-key tiles, ascending (entries past a count are not written). An offset touches at most
    t = (128 + tile_k - 2) // tile_k + 1 tiles of a block, the diagonal crosses at most t: KF = min(tiles,
    t * slash_slots + 1), KM = min(t, ceil(S / tile_k)). No host sync."""
    B, H, P = slash_prefix.shape
    S = kv_len
    assert P == S + 1, "slash_prefix built for another kv_len"
    assert tile_k in TILE_K, f"tile_k must be one of {TILE_K}"
    M = triton.cdiv(q_len, TILE)
    per = (TILE + tile_k - 2) // tile_k + 1
    # a block's tiles number at most ceil(S / tile_k) (FA4 rejects a mask list wider than that: S <= 128)
    km = min(per, triton.cdiv(S, tile_k))
    kf = max(1, min(triton.cdiv(S, tile_k), per * slash_slots + 1))
    dev = slash_prefix.device
    fcnt = torch.empty(B, H, M, dtype=torch.int32, device=dev)
    mcnt = torch.empty(B, H, M, dtype=torch.int32, device=dev)
    fidx = torch.empty(B, H, M, kf, dtype=torch.int32, device=dev)
    midx = torch.empty(B, H, M, km, dtype=torch.int32, device=dev)
    if M and B * H:
        _vs_tile_lists_kernel[(M, B * H)](slash_prefix.contiguous(), fcnt, fidx, mcnt, midx, q_len, S, M, kf, km,
                                          TQ=TILE, TK=tile_k, BLOCK=256, num_warps=4)
    return fcnt, fidx, mcnt, midx


@triton.jit
def _vs_columns_after_kernel(Q, K, V, O, LSE, COLS, CCNT, PREF,
                             sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som, slb, slh, slm,
                             SQ, S, Hq, G, D, NV, NQB, qk_scale,
                             TQ: tl.constexpr, TK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    # O holds the tile part's normalised output and LSE its natural-log sum of exp(scale * q.k) per row: the online
    # softmax state (m, l, acc) = (LSE log2(e), 1, O). Continue it over this BLOCK_M-row block's columns that no
    # touched tile of its 128-row block holds (BLOCK_M divides 128), and store the result over O. A row with a
    # non-finite LSE had no tile key.
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    bh64 = bh.to(tl.int64)
    r0 = pid * BLOCK_M
    # column_count is per 64-row block and grows with the block: the program's last block has them all
    n_col = tl.load(CCNT + bh64 * NQB + tl.minimum((r0 + BLOCK_M) // 64 - 1, NQB - 1))
    if n_col == 0:
        return
    b = (bh // Hq).to(tl.int64)
    h = bh % Hq
    kvh = (h // G).to(tl.int64)
    off = S - SQ
    m0 = off + r0
    mb0 = off + (r0 // TQ) * TQ  # the 128-row block's first row: the tiles' reference
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    rd = tl.arange(0, BLOCK_D)
    offs_m = m0 + rm
    rows = r0 + rm
    rmask = rows < SQ
    dmask = rd[None, :] < D
    q = _q_tile(Q, b, h, r0, sqb, sqh, sqm, SQ, D, BLOCK_M, BLOCK_D)
    o_ptr = O + b * sob + h.to(tl.int64) * soh + rows.to(tl.int64)[:, None] * som + rd[None, :]
    o = tl.load(o_ptr, mask=rmask[:, None] & dmask, other=0.0).to(tl.float32)
    lse = tl.load(LSE + b * slb + h.to(tl.int64) * slh + rows.to(tl.int64) * slm, mask=rmask, other=float("-inf"))
    live = (lse > -1e30) & (lse < 1e30)  # finite (NaN compares false)
    m_i = tl.where(live, lse * 1.4426950408889634, -1e30)  # log2(e): the kernels' exp2 units
    l_i = tl.where(live, 1.0, 0.0)
    acc = tl.where(live[:, None], o, 0.0)
    k_base = K + b * skb + kvh * skh
    v_base = V + b * svb + kvh * svh
    col_base = COLS + bh64 * NV
    pref = PREF + bh64 * (S + 1)
    for c0 in range(0, n_col, BLOCK_N):
        cvalid = (c0 + rn) < n_col
        col = tl.load(col_base + c0 + rn, mask=cvalid, other=0)
        in_tile = _touched(pref, mb0, col // TK, S, TQ, TK)
        kmask = cvalid & (col >= 0) & (col < S) & ~in_tile
        col64 = col.to(tl.int64)
        k = tl.load(k_base + col64[:, None] * skn + rd[None, :], mask=kmask[:, None] & dmask, other=0.0)
        v = tl.load(v_base + col64[:, None] * svn + rd[None, :], mask=kmask[:, None] & dmask, other=0.0)
        mask = kmask[None, :] & (col[None, :] <= offs_m[:, None])
        acc, m_i, l_i = _attn_tile(acc, m_i, l_i, q, k, v, mask, qk_scale, PREC)
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(o_ptr, out.to(O.dtype.element_ty), mask=rmask[:, None] & dmask)


def columns_after(q, k, v, out, lse, index, scale=None, tile_k: int = TILE, config=None) -> torch.Tensor:
    """q [B,Hq,Sq,D], k/v [B,Hkv,S,D]; out [B,Hq,Sq,D] and lse [B,Hq,Sq] fp32 (natural log) of the attention over the
    touched tile_k-key tiles of `index`'s slash_prefix (tile_lists); index: the VSIndex of the same sets (its sorted columns and
    per-64-row-block column counts). Adds the columns outside the touched tiles in place: out then holds 128-tiled
    vertical-slash attention. config: (rows, warps, stages), None: COLS_CONFIG. Returns out."""
    B, Hq, SQ, D = q.shape
    S = k.shape[2]
    rows, warps, stages = COLS_CONFIG if config is None else config
    assert rows in (64, 128), "rows per program must divide the 128-row tile block"
    nqb = triton.cdiv(SQ, 64)
    cols, ccnt, pref = (t.contiguous() for t in (index.columns, index.column_count, index.slash_prefix))
    assert ccnt.shape[-1] == nqb and pref.shape[-1] == S + 1, "index built for another q_len / kv_len"
    assert out.stride(-1) == 1 and lse.dtype == torch.float32 and lse.shape == (B, Hq, SQ), "lse must be [B,Hq,Sq] fp32"
    if SQ == 0 or B * Hq == 0:
        return out
    _vs_columns_after_kernel[(triton.cdiv(SQ, rows), B * Hq)](
        q, k, v, out, lse, cols, ccnt, pref,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        lse.stride(0), lse.stride(1), lse.stride(2),
        SQ, S, Hq, Hq // k.shape[1], D, cols.shape[-1], nqb, qk_scale(scale, D),
        TQ=TILE, TK=tile_k, BLOCK_M=rows, BLOCK_N=BLOCK_N, BLOCK_D=block_d(D), PREC=dot_precision(q.dtype),
        num_warps=warps, num_stages=stages)
    return out

