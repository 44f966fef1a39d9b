"""FlexAttention cases (compiled flex_attention + a BlockMask built from the same pattern as our ops).

Block masks are built directly from tile masks with BlockMask.from_kv_blocks (create_block_mask would
evaluate mask_mod on all S^2 pairs). Partial tiles apply mask_mod (exact pattern semantics); tiles known
to be entirely inside the pattern are passed as full blocks. `tile_cov` = touched tiles x block^2 over the
causal pairs: the work flex really schedules (the mask_mod zeroes the rest).
"""
from __future__ import annotations

import functools
import inspect

import numpy as np
import torch

from . import coverage as cov
from .cases import Prepared
from .indexsets import generate_vs


@functools.lru_cache(maxsize=1)
def compiled_flex():
    import torch._dynamo
    from torch.nn.attention.flex_attention import flex_attention
    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 1024)
    return torch.compile(flex_attention)  # default: marks S dynamic after the first recompile


def _dense_to_kv(mask: torch.Tensor):
    """bool [H, NQB, NKB] -> (num [1,H,NQB] int32, indices [1,H,NQB,NKB] int32, True positions first)."""
    num = mask.sum(-1, dtype=torch.int32)
    idx = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return num[None], idx[None]


def block_mask(partial: torch.Tensor, full, bs: int, mask_mod, S: int):
    from torch.nn.attention.flex_attention import BlockMask
    kn, ki = _dense_to_kv(partial)
    fn, fi = _dense_to_kv(full) if full is not None else (None, None)
    kw = {}
    if "compute_q_blocks" in inspect.signature(BlockMask.from_kv_blocks).parameters:
        kw["compute_q_blocks"] = False  # forward only
    return BlockMask.from_kv_blocks(kn, ki, fn, fi, BLOCK_SIZE=bs, mask_mod=mask_mod, seq_lengths=(S, S), **kw)


def _pool(m64: torch.Tensor, bs: int) -> torch.Tensor:
    """OR-pool a 64-grid tile mask [H, N, N] to a bs-grid one."""
    r = bs // 64
    if r == 1:
        return m64
    H, N, _ = m64.shape
    pad = (-N) % r
    if pad:
        m64 = torch.nn.functional.pad(m64, (0, pad, 0, pad))
    n = m64.shape[1] // r
    return m64.view(H, n, r, n, r).any(4).any(2)


def _tile_count(partial, full):
    return int(partial.sum()) + (int(full.sum()) if full is not None else 0)


def ashape(case, S, H, dev, bs):
    init, local = case.params["init"], case.params["local"]
    n = -(-S // bs)
    qb = torch.arange(n, device=dev)[:, None]
    kb = torch.arange(n, device=dev)[None, :]
    q_lo, q_hi, k_lo, k_hi = qb * bs, qb * bs + bs - 1, kb * bs, kb * bs + bs - 1
    causal = kb <= qb
    touched = causal & ((k_lo < init) | (q_lo - k_hi < local))
    inside = (kb < qb) & ((k_hi < init) | (q_hi - k_lo < local))
    if S % bs:  # the last (partial) tiles go through mask_mod
        inside &= (qb < n - 1)

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & ((kv_idx < init) | (q_idx - kv_idx < local))

    full = inside[None]
    partial = (touched & ~inside)[None]
    return partial, full, mask_mod, cov.streaming_coverage(S, init, local)


def bs_topk(case, q, k, S, bs):
    from minference_compile.triton_kernels.block_sparse_index import block_sparse_index
    topk = case.params["topk"]
    idx = block_sparse_index(q, k, topk)[0]  # [H, NQB, K] 64-blocks, -1 pad
    H, nqb, _ = idx.shape
    m = torch.zeros(H, nqb, nqb + 1, dtype=torch.bool, device=q.device)
    m.scatter_(-1, torch.where(idx >= 0, idx.long(), nqb), True)
    m = m[..., :nqb]
    diag = torch.eye(nqb, dtype=torch.bool, device=q.device)[None]
    if bs == 64:
        full, partial = m & ~diag, m & diag
    else:  # pooled tiles: only causal-safe ones are full; coverage differs from ours (reported in tile_cov)
        m = _pool(m, bs)
        n = m.shape[1]
        full = m & ~torch.eye(n, dtype=torch.bool, device=q.device)[None]
        partial = m & torch.eye(n, dtype=torch.bool, device=q.device)[None]
    # mask_mod: token causal + chosen 64-block membership (exact top-k semantics even at bs=128)
    chosen = torch.zeros(H, nqb, nqb, dtype=torch.bool, device=q.device)
    chosen.scatter_(-1, idx.long().clamp_min(0), idx >= 0)

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & chosen[h, q_idx // 64, kv_idx // 64]

    if bs != 64:
        partial, full = partial | full, None  # pooled tiles mix chosen and unchosen 64-blocks
    return partial, full, mask_mod, cov.block_sparse_coverage(S, topk)


def vs(case, q, S, bs, seed=0):
    nv, ns = case.params["nv"], case.params["ns"]
    H, dev = q.shape[1], q.device
    vert, slash = generate_vs(S, H, nv, ns, seed=seed)
    c = float(cov.coverage(vert, slash, S).mean())
    nqb = -(-S // 64)
    delta_ok = torch.zeros(H, nqb, dtype=torch.bool)
    vcol = torch.zeros(H, nqb, dtype=torch.bool)
    cov_d = torch.zeros(H, S + 64, dtype=torch.bool, device=dev)  # index d + 63, d = m0 - j in [-63, S]
    is_vert = torch.zeros(H, S, dtype=torch.bool, device=dev)
    for h in range(H):
        hi, lo = cov.components(slash[0, h].numpy(), S)
        for a, b in zip(-(-(lo - 63) // 64), -(-hi // 64)):
            delta_ok[h, max(int(a), 0):min(int(b), nqb - 1) + 1] = True
        vcol[h, np.unique(vert[0, h].numpy() // 64)] = True
        s = torch.from_numpy(np.unique(slash[0, h].numpy())).to(dev).long()
        pre = torch.zeros(S + 1, dtype=torch.int32, device=dev)
        pre.scatter_add_(0, s + 1, torch.ones_like(s, dtype=torch.int32))
        pre = pre.cumsum(0)
        d = torch.arange(-63, S + 1, device=dev)
        cov_d[h] = pre[(d + 64).clamp(0, S)] > pre[d.clamp(0, S)]
        is_vert[h, vert[0, h].long().to(dev)] = True
    delta_ok, vcol = delta_ok.to(dev), vcol.to(dev)
    qb = torch.arange(nqb, device=dev)[:, None]
    kb = torch.arange(nqb, device=dev)[None, :]
    m64 = torch.stack([(kb <= qb) & (delta_ok[h][(qb - kb).clamp_min(0)] | vcol[h][kb]) for h in range(H)])
    partial = _pool(m64, bs)
    del m64

    def mask_mod(b, h, q_idx, kv_idx):
        d = (q_idx // 64) * 64 - kv_idx
        return (q_idx >= kv_idx) & (cov_d[h, (d + 63).clamp(0, S + 63)] | is_vert[h, kv_idx])

    return partial, None, mask_mod, c


def mask_bytes(case, S, H, bs) -> int:
    """Rough peak bytes to build the block mask (dense tile masks + int64 argsort + int32 indices)."""
    n64, n = -(-S // 64), -(-S // bs)
    h = 1 if case.family == "flex-ashape" else H
    extra = h * n64 * n64 * 2 if case.family != "flex-ashape" else 0
    return h * n * n * (1 + 8 + 4 + 4) + extra + (H * S * 2 if case.family == "flex-vs" else 0)


def prepare(case, q, k, v, S, bs=128):
    free, _ = torch.cuda.mem_get_info()
    need = mask_bytes(case, S, q.shape[1], bs)
    if need > 0.8 * free:
        raise torch.cuda.OutOfMemoryError(f"block mask needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
    H, dev = q.shape[1], q.device

    def build():
        if case.family == "flex-ashape":
            p, f, mm, c = ashape(case, S, H, dev, bs)
        elif case.family == "flex-bs":
            p, f, mm, c = bs_topk(case, q, k, S, bs)
        else:
            p, f, mm, c = vs(case, q, S, bs)
        tiles = _tile_count(p, f) * (H if p.shape[0] == 1 else 1)
        return block_mask(p, f, bs, mm, S), c, tiles

    bm, c, tiles = build()
    flex = compiled_flex()
    fn = lambda: flex(q, k, v, block_mask=bm, enable_gqa=True)  # noqa: E731
    fn()  # compile outside the timing
    tile_cov = cov.tile_density(tiles / H, S, bs)
    idx_fn = build if case.family != "flex-vs" else None  # flex-vs build is host-side set-up, not timed
    return Prepared(fn, c, idx_fn, None, tile_cov=tile_cov, note=f"BLOCK_SIZE={bs}")
