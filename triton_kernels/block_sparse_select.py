"""Triton top-k row select for block_sparse_index: radix select of the k-th pooled score, ascending ids by scatter."""
import triton
import triton.language as tl


@triton.jit
def _bs_select_kernel(sc_ptr, tk_ptr, out_ptr, C, W, c0, n, Hq, KMAX, ROWS, OFF, SKV,
                      R: tl.constexpr, NP: tl.constexpr, KP: tl.constexpr, BLOCK: tl.constexpr = 64):
    # R score rows per program; row = bh * C + r: scores sc[row, :W] (W > the row's last diagonal block), ids to
    # out[bh, qb = c0 + r, :KMAX]. Query block qb holds positions OFF + BLOCK qb .. (OFF = kv_len - q_len); its
    # diagonal key blocks lo..hi (naive.diagonal_blocks) are always kept, candidates are the blocks below lo.
    row = tl.program_id(0) * R + tl.arange(0, R)[:, None]  # [R, 1]
    live = row < ROWS
    bh = row // C
    qb = c0 + row - bh * C
    first = OFF + BLOCK * qb
    lo = first // BLOCK
    hi = tl.minimum(first + BLOCK - 1, SKV - 1) // BLOCK
    n_diag = hi - lo + 1
    tk = tl.load(tk_ptr + bh % Hq, mask=live, other=0).to(tl.int32)
    kk = tl.where(tk > 0, tl.maximum(tl.minimum(tk, hi + 1), n_diag), 0)  # ids in the row
    kb = tl.arange(0, NP)[None, :]
    cand = (kb < lo) & live  # causal for every row, off-diagonal
    s = tl.load(sc_ptr + row.to(tl.int64) * W + kb, mask=cand, other=0.0)
    # order-preserving int32 key of the fp32 bits (-0.0 -> +0.0: they compare equal); INT_MIN: not a candidate
    bits = s.to(tl.int32, bitcast=True)
    bits = tl.where(bits == -2147483648, 0, bits)
    key = tl.where(cand, bits ^ ((bits >> 31) & 0x7FFFFFFF), -2147483648)
    # radix select of t = the need-th largest candidate key, bit by bit from the top of the unsigned view
    # (u = key ^ INT_MIN). A row stops once exactly `need` keys are >= t (H100, random rows: 40% less time).
    need = kk - n_diag
    done = (need <= 0) | (need >= lo)  # nothing to choose / every candidate chosen
    t = tl.where(need <= 0, 2147483647, -2147483648)
    bit = 31
    while (bit >= 0) & (tl.min(done.to(tl.int32)) == 0):
        c = ((t ^ -2147483648) | (1 << bit)) ^ -2147483648  # > INT_MIN: non-candidates never count
        cnt = tl.sum((key >= c).to(tl.int32), 1, keep_dims=True)
        t = tl.where((cnt >= need) & ~done, c, t)
        done = done | (cnt == need)
        bit -= 1
    # keys > t, the lowest-kb keys == t, and the diagonal blocks (kk >= 1); slots in ascending kb order
    gt = key > t
    eq = (key == t) & cand
    n_eq = need - tl.sum(gt.to(tl.int32), 1, keep_dims=True)
    sel = gt | (eq & (tl.cumsum(eq.to(tl.int32), 1) <= n_eq)) | ((kb >= lo) & (kb <= hi) & (kk > 0) & live)
    pos = tl.cumsum(sel.to(tl.int32), 1) - 1
    dst = out_ptr + (bh.to(tl.int64) * n + qb) * KMAX
    tl.store(dst + pos, kb, mask=sel)
    slot = tl.arange(0, KP)[None, :]
    tl.store(dst + slot, tl.full([R, KP], -1, tl.int32), mask=(slot >= kk) & (slot < KMAX) & live)
