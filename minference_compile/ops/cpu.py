"""CPU paths of the three sparse patterns (vectorised PyTorch, no Triton).

Each function computes the pattern's mask from the semantics in docs/DESIGN.md for one chunk of
query rows at a time, so memory is O(rows_per_chunk * S) per head, never S x S. GQA: q heads are
viewed as [B, Hkv, G, S, D] against their kv head; K/V are never repeated. Softmax in fp32, rows
with no attended key output 0. `head_mask`/`out` follow the kernel-level conventions: only the
heads in `head_mask` are computed and written into `out` (allocated if None).

Query offset: q [B, Hq, Sq, D] against k/v [B, Hkv, S, D], Sq <= S; query row r sits at absolute position
S - Sq + r (bottom-right causal); 64-row query blocks start at the chunk's first row (docs/DESIGN.md).
"""
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

BLOCK = 64
_ROWS = 4 * BLOCK  # query rows per chunk (fewer for very long S)
_SCORE_BUDGET = 1 << 24  # fp32 score elements per step (~64 MB): bounds kv heads per step

# mask_fn(q_heads [h] long, r0, r1) -> bool broadcastable to [B, h, r1 - r0, off + r1] for the local query rows
# [r0, r1) at positions off + r0 .. (off = S - Sq) over the keys [0, off + r1) (causality added here)
MaskFn = Callable[[torch.Tensor, int, int], torch.Tensor]


def _kv_groups(head_mask: Optional[torch.Tensor], hq: int, hkv: int) -> torch.Tensor:
    """kv heads owning at least one selected q head (CPU tensor: no device sync)."""
    if head_mask is None:
        return torch.arange(hkv)
    return head_mask.view(hkv, hq // hkv).any(1).nonzero().flatten().cpu()


def _prepare_out(q, head_mask, out):
    if out is not None:
        return out
    return q.new_empty(q.shape) if head_mask is None else q.new_zeros(q.shape)


def _attend(q, k, v, scale, mask_fn: MaskFn, head_mask=None, out=None) -> torch.Tensor:
    B, Hq, Sq, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    off = S - Sq
    G = Hq // Hkv
    out = _prepare_out(q, head_mask, out)
    kv_ids = _kv_groups(head_mask, Hq, Hkv)
    if B * Sq == 0 or kv_ids.numel() == 0:
        return out
    hmask = None if head_mask is None else head_mask.cpu()
    # rows per chunk (a multiple of 64) and kv heads per step so one step holds ~_SCORE_BUDGET scores
    rows = max(BLOCK, min(_ROWS, _SCORE_BUDGET // (B * G * S) // BLOCK * BLOCK))
    step = max(1, _SCORE_BUDGET // (B * G * rows * S))
    for h0 in range(0, kv_ids.numel(), step):
        ks = kv_ids[h0:h0 + step]
        qh = (ks[:, None] * G + torch.arange(G)).flatten()
        hs = ks.numel()
        qs = q[:, qh].float().view(B, hs, G, Sq, D)
        kk = k[:, ks].float().unsqueeze(2)  # [B, hs, 1, S, D]
        vv = v[:, ks].float().unsqueeze(2)
        sel = None if hmask is None else hmask[qh]
        for r0 in range(0, Sq, rows):
            r1 = min(r0 + rows, Sq)
            kend = off + r1  # keys past the chunk's last position are never attended
            s = torch.matmul(qs[..., r0:r1, :], kk[..., :kend, :].transpose(-1, -2)) * scale
            i = torch.arange(off + r0, off + r1).view(-1, 1)
            j = torch.arange(kend).view(1, -1)
            mask = (mask_fn(qh, r0, r1) & (j <= i)).expand(B, hs * G, r1 - r0, kend)
            s.masked_fill_(~mask.reshape(B, hs, G, r1 - r0, kend), float("-inf"))
            m = s.amax(-1, keepdim=True)
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # empty rows: exp(-inf) = 0
            p = torch.exp(s - m)
            l = p.sum(-1, keepdim=True)
            o = torch.matmul(p, vv[..., :kend, :]) / torch.where(l > 0, l, torch.ones_like(l))
            o = o.reshape(B, hs * G, r1 - r0, D).to(out.dtype)
            if sel is None:
                out[:, qh, r0:r1] = o
            else:
                out[:, qh[sel], r0:r1] = o[:, sel]
    return out


def _row_blocks(r0: int, r1: int) -> torch.Tensor:
    """Index of each row's 64-row query block relative to the chunk's first block."""
    return torch.arange(r0, r1) // BLOCK - r0 // BLOCK


def _presence(idx: torch.Tensor, n: int) -> torch.Tensor:
    """[B, H, N] int (negative / >= n select nothing) -> bool [B, H, n]."""
    idx = idx.long()
    valid = (idx >= 0) & (idx < n)
    pres = torch.zeros(*idx.shape[:-1], n + 1, dtype=torch.bool, device=idx.device)
    pres.scatter_(-1, torch.where(valid, idx, n), True)
    return pres[..., :n]


def streaming_attention(q, k, v, init_num: Union[int, torch.Tensor], local_window: Union[int, torch.Tensor],
                        scale: float, head_mask=None, out=None) -> torch.Tensor:
    Hq = q.shape[1]
    off = k.shape[2] - q.shape[2]
    init = torch.as_tensor(init_num).long().cpu().expand(Hq)
    local = torch.as_tensor(local_window).long().cpu().expand(Hq)

    def mask_fn(qh, r0, r1):
        i = torch.arange(off + r0, off + r1).view(1, -1, 1)
        j = torch.arange(off + r1).view(1, 1, -1)
        return ((j < init[qh].view(-1, 1, 1)) | (i - j < local[qh].view(-1, 1, 1))).unsqueeze(0)

    return _attend(q, k, v, scale, mask_fn, head_mask, out)


def vertical_slash_mask_fn(vertical: torch.Tensor, slash: torch.Tensor, S: int, Sq: int) -> MaskFn:
    """MaskFn of block-rounded VS for q [B, Hq, Sq, D] over S keys (vertical/slash [B, Hq, N], -1 pads): slash
    offset s covers keys [m0 - s, m0 - s + 64) of the block at (absolute) m0. Causality is the caller's."""
    off = S - Sq
    columns = _presence(vertical.cpu(), S)  # [B, Hq, S]
    offsets = _presence(slash.cpu(), S).int()
    # prefix[x] = number of selected offsets < x; key j is covered in block m0 iff an offset
    # lies in [m0 - j, m0 - j + 63].
    prefix = F.pad(offsets.cumsum(-1, dtype=torch.int32), (1, 0))  # [B, Hq, S + 1]
    B = prefix.shape[0]

    def mask_fn(qh, r0, r1):
        kend = off + r1
        j = torch.arange(kend).view(1, -1)
        m0 = off + torch.arange(r0 - r0 % BLOCK, r1, BLOCK).view(-1, 1)
        lo = (m0 - j).clamp(0, S)
        hi = (m0 - j + BLOCK).clamp(0, S)
        pre = prefix[:, qh]
        nb = m0.shape[0]

        def take(x):
            return pre.gather(-1, x.reshape(1, 1, -1).expand(B, qh.numel(), -1)).view(B, -1, nb, kend)

        covered = (take(hi) - take(lo)) > 0  # [B, h, nb, kend]
        covered = covered[:, :, _row_blocks(r0, r1)]
        return covered | columns[:, qh, None, :kend]

    return mask_fn


def vertical_slash_attention(q, k, v, vertical: torch.Tensor, slash: torch.Tensor, scale: float,
                             head_mask=None, out=None) -> torch.Tensor:
    """Block-rounded VS (vertical_slash_mask_fn)."""
    mask_fn = vertical_slash_mask_fn(vertical, slash, k.shape[2], q.shape[2])
    return _attend(q, k, v, scale, mask_fn, head_mask, out)


def block_sparse_attention(q, k, v, block_index: torch.Tensor, scale: float, head_mask=None,
                           out=None) -> torch.Tensor:
    """block_index [B, Hq, ceil(Sq/64), K] int absolute key-block ids (-1 / out of range = padding)."""
    S = k.shape[2]
    off = S - q.shape[2]
    nkb = -(-S // BLOCK)
    blocks = _presence(block_index.cpu(), nkb)  # [B, Hq, NQB, NKB]

    def mask_fn(qh, r0, r1):
        qb0, qb1 = r0 // BLOCK, -(-r1 // BLOCK)
        kend = off + r1
        bm = blocks[:, qh, qb0:qb1, : -(-kend // BLOCK)]
        bm = bm.repeat_interleave(BLOCK, dim=-1)[..., :kend]
        return bm[:, :, _row_blocks(r0, r1)]

    return _attend(q, k, v, scale, mask_fn, head_mask, out)


def causal_attention(q, k, v, scale: float, head_mask=None, out=None) -> torch.Tensor:
    """Dense causal attention (bottom-right: row r at position S - Sq + r) of the selected heads (SDPA on the kv
    groups that hold them)."""
    from .dense import dense_attention
    B, Hq, Sq, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    out = _prepare_out(q, head_mask, out)
    ks = _kv_groups(head_mask, Hq, Hkv)
    if ks.numel() == 0 or B * Sq == 0:
        return out
    qh = (ks[:, None] * G + torch.arange(G)).flatten()
    if Sq == k.shape[2]:
        o = F.scaled_dot_product_attention(q[:, qh], k[:, ks], v[:, ks], is_causal=True, scale=scale,
                                           enable_gqa=G > 1).to(out.dtype)
    else:
        o = dense_attention(q[:, qh], k[:, ks], v[:, ks], scale).to(out.dtype)
    if head_mask is None:
        out[:, qh] = o
    else:
        sel = head_mask.cpu()[qh]
        out[:, qh[sel]] = o[:, sel]
    return out
