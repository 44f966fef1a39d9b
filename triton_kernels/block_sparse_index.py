"""Block-sparse key-block selection by mean pooling (docs/DESIGN.md "Block-sparse"): chunked scores (torch),
top-k per row by a Triton radix select (CUDA) or torch topk + sort."""
from typing import Sequence, Union

import torch

from ._torch_util import bmm_fp32_out, device_tensor

_SCORE_BYTES = 128 << 20  # per-chunk score matrix; topk/sort temporaries stay within a few times this
_SELECT_LANES = 2048  # Triton select (a power of 2): shorter score rows share a program, R * NP lanes


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


def _scores(qm: torch.Tensor, km: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # [N,M,D] @ [N,D,K] -> fp32 [N,M,K]. Half-precision inputs: means rounded to that dtype, fp32 accumulation on
    # tensor cores (an fp32 SIMT GEMM was 0.6 ms of ~2 ms at 128K); selection can differ only among scores within
    # that rounding. fp32 inputs keep the exact fp32 product (the CPU tests compare ids exactly).
    if dtype in (torch.float16, torch.bfloat16):
        sc = bmm_fp32_out(qm.to(dtype), km.to(dtype))
        if sc is not None:
            return sc
    return torch.bmm(qm, km)


def block_sparse_index(q: torch.Tensor, k: torch.Tensor, topk: Union[int, Sequence[int], torch.Tensor],
                       block: int = 64, impl: str = "auto") -> torch.Tensor:
    """q [B,Hq,Sq,D], k [B,Hkv,S,D] (Sq <= S: the queries are the last Sq positions), topk int, or per head a list
    or int tensor [Hq] -> [B,Hq,NQB,Kmax] int32 absolute key-block ids, NQB = ceil(Sq/block), Kmax = clamp(max(max
    topk, diagonal blocks per row), 1, ceil(S/block)). ``block``: the query and key block size (64: the seed's
    block_sparse; 128: block_sparse_128, see expand_block_index).

    Row (b, h, qb): the diagonal blocks lo..hi (the key blocks holding the row positions of query block qb: one
    when S - Sq is a multiple of the block, else one or two) and the highest-scoring key blocks below lo,
    naive.block_sparse_count(topk[h], lo, hi) ids in all (min(topk[h], qb + 1) without an offset), ascending,
    then -1. A tensor topk costs one host sync (its max sets the output width); a list none.
    impl: "triton" (radix select; equal scores: the lowest kb wins), "torch" (topk + sort; tie order unspecified),
    "auto" = triton on CUDA, torch otherwise.
    """
    B, Hq, Sq, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    assert Sq <= S, "q_len must be <= kv_len"
    qm = _block_means(q, block) if Sq else q.new_zeros(B, Hq, 0, D, dtype=torch.float32)
    return index_from_means(qm, _block_means(k, block), Sq, S, topk, block, impl, q.dtype)


def index_from_means(qm: torch.Tensor, km: torch.Tensor, Sq: int, S: int,
                     topk: Union[int, Sequence[int], torch.Tensor], block: int = 64, impl: str = "auto",
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """block_sparse_index from the block means: qm [B,Hq,ceil(Sq/block),D], km [B,Hkv,ceil(S/block),D] fp32 (the
    search scores captured means with it); ``dtype``: the q/k dtype (half precision: scores on tensor cores)."""
    B, Hq, n, D = qm.shape
    dev = qm.device
    nk = -(-S // block)
    off = S - Sq
    if isinstance(topk, torch.Tensor):
        tk = topk.to(device=dev, dtype=torch.int64).reshape(-1).expand(Hq)
        kmax = int(tk.max())
    elif isinstance(topk, (list, tuple)):  # per head, known on the host: no sync
        tk = device_tensor(topk, dev, torch.int64).expand(Hq)
        kmax = max(topk)
    else:
        tk = torch.full((Hq,), int(topk), dtype=torch.int64, device=dev)
        kmax = int(topk)
    # diagonal blocks per row: those of block 0 (every other block is as long, or a shorter last one)
    n_diag = (min(off + block, S) - 1) // block - off // block + 1 if n else 1
    kmax = max(1, min(max(kmax, n_diag), nk))
    if n == 0:
        return torch.empty(B, Hq, 0, kmax, dtype=torch.int32, device=dev)
    Hkv = km.shape[1]
    g = Hq // Hkv
    qm = qm.view(B, Hkv, g, n, D)
    km_t = km.view(B, Hkv, 1, nk, D).transpose(-1, -2)
    out = torch.empty(B, Hq, n, kmax, dtype=torch.int32, device=dev)
    chunk = max(1, min(n, _SCORE_BYTES // max(1, B * Hq * nk * 4)))

    def width(c1):  # key blocks the query blocks < c1 can reach: up to the last diagonal block of block c1 - 1
        return min(nk, (min(off + block * c1, S) - 1) // block + 1)

    if impl == "auto":
        impl = "triton" if qm.is_cuda else "torch"
    if impl == "triton":
        import triton  # here, not at the top: CPU users of the torch path never build a Triton kernel

        from .block_sparse_select import _bs_select_kernel
        tk = tk.contiguous()
        for c0 in range(0, n, chunk):
            c1 = min(n, c0 + chunk)
            w = width(c1)
            np2 = triton.next_power_of_2(w)  # lanes: the chunk's causal width, not nk
            rows = max(1, _SELECT_LANES // np2)  # short rows share a program: fewer, fuller programs
            warps = 4 if np2 <= 2048 else 8  # H100: best at 2048 and at 16384 lanes (1M tokens; 16 warps 7% slower)
            # one matrix per kv head (no broadcast copy of k); rows qb < c1 need only key blocks < w
            qc = qm[:, :, :, c0:c1].reshape(B * Hkv, g * (c1 - c0), D)
            kc = km_t[:, :, 0, :, :w].reshape(B * Hkv, D, w)
            sc = _scores(qc, kc, dtype).view(B, Hq, c1 - c0, w)
            nrows = B * Hq * (c1 - c0)
            _bs_select_kernel[(triton.cdiv(nrows, rows),)](sc, tk, out, c1 - c0, w, c0, n, Hq, kmax, nrows, off, S,
                                                           R=rows, NP=np2, KP=triton.next_power_of_2(kmax),
                                                           BLOCK=block, num_warps=warps)
        return out
    assert impl == "torch", impl
    slot = torch.arange(kmax, device=dev)
    big = torch.iinfo(torch.int64).max
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        w = width(c1)
        kb = torch.arange(w, device=dev)
        first = off + block * torch.arange(c0, c1, device=dev)[:, None]
        lo, hi = first // block, torch.clamp(first + block - 1, max=S - 1) // block  # diagonal blocks lo..hi
        sc = (qm[:, :, :, c0:c1] @ km_t[..., :w]).view(B, Hq, c1 - c0, w)
        sc.masked_fill_(kb > hi, float("-inf")).masked_fill_((kb >= lo) & (kb <= hi), float("inf"))
        top = sc.topk(min(kmax, w), dim=-1).indices            # descending: diagonals first, non-causal last
        top = torch.nn.functional.pad(top, (0, kmax - top.shape[-1]), value=0)
        kk = torch.maximum(torch.minimum(tk[:, None, None], hi + 1), hi - lo + 1)
        keep = slot < torch.where(tk[:, None, None] > 0, kk, 0)  # [Hq, C, kmax]
        top = torch.where(keep, top, big).sort(-1).values
        out[:, :, c0:c1] = torch.where(top == big, -1, top).to(torch.int32)
    return out


def expand_block_index(index: torch.Tensor, q_len: int, kv_len: int, block: int = 128) -> torch.Tensor:
    """A ``block``-granular index [B,H,ceil(q_len/block),K] (block_sparse_index(block=block): ascending absolute
    ids, -1 padded) -> the same pairs as a 64-granular one [B,H,ceil(q_len/64),K * block/64] for the 64x64 kernels,
    CPU path and reference: 64-row query block r (local rows 64 r.., inside block r // (block/64)) lists the 64-key
    blocks of its block's ids, up to the key block of its own last row (the rest would be non-causal for every one
    of its rows). Ascending, unique, -1 padded: block_sparse_attention_fwd(compact=True) input."""
    assert block % 64 == 0, block
    f = block // 64
    B, H, n, K = index.shape
    nq = -(-q_len // 64)
    off = kv_len - q_len
    sub = torch.arange(f, device=index.device)
    ids = torch.where(index[..., None] >= 0, index[..., None].long() * f + sub, -1).flatten(-2)  # [B,H,n,K*f] asc.
    ids = ids.repeat_interleave(f, dim=2)[:, :, :nq]  # row block r reads its block's list
    last = torch.clamp(off + 64 * torch.arange(nq, device=index.device) + 63, max=kv_len - 1) // 64
    ok = (ids >= 0) & (ids <= last[:, None])
    # dropping only trailing (highest) ids keeps the kept ones first and ascending
    return torch.where(ok, ids, -1).to(torch.int32).contiguous()
