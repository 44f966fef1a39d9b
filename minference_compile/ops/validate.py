"""Input checks of the public functions: clear ValueError/TypeError naming the problem.

Head-dim rule: the Triton kernels are built for D in SUPPORTED_HEAD_DIMS; the sparse public
functions enforce the same rule on every device (the CPU path is the reference of the GPU path,
so a call that works on CPU must not fail later on GPU). The dense fallbacks of
`minference::sparse_prefill` (short / decode / chunked prefill) accept any D.
"""
from typing import Sequence, Union

import torch

SUPPORTED_HEAD_DIMS = (64, 96, 128)
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def head_dim_supported(d: int) -> bool:
    return d in SUPPORTED_HEAD_DIMS


def check_head_dim(d: int) -> None:
    if not head_dim_supported(d):
        raise ValueError(f"head_dim {d} is not supported by the Triton kernels "
                         f"(supported: {', '.join(map(str, SUPPORTED_HEAD_DIMS))})")


def check_qkv(q, k, v=None, *, same_len: bool = True, head_dim: bool = True) -> None:
    """q [B, Hq, Sq, D], k/v [B, Hkv, Skv, D]; same_len: Sq <= Skv (the queries are the last Sq positions)."""
    named = [("q", q), ("k", k)] + ([("v", v)] if v is not None else [])
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have rank 4 [B, H, S, D], got shape {tuple(t.shape)}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} dtype {t.dtype} is not supported (float32, bfloat16, float16)")
    for name, t in named[1:]:
        if t.dtype != q.dtype:
            raise TypeError(f"dtype mismatch: q is {q.dtype}, {name} is {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"device mismatch: q is on {q.device}, {name} is on {t.device}")
    if v is not None and k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    B, hq, sq, d = q.shape
    if k.shape[0] != B:
        raise ValueError(f"batch size mismatch: q has {B}, k has {k.shape[0]}")
    if k.shape[3] != d:
        raise ValueError(f"head_dim mismatch: q has {d}, k has {k.shape[3]}")
    if same_len and k.shape[2] < sq:
        raise ValueError(f"sequence length mismatch: q has {sq}, k has {k.shape[2]} "
                         "(sparse prefill needs q_len <= kv_len: the queries are the last q_len positions)")
    hkv = k.shape[1]
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"number of q heads ({hq}) must be a multiple of the number of kv heads ({hkv})")
    if head_dim:
        check_head_dim(d)


def check_index(name: str, idx, q: torch.Tensor) -> None:
    """Index tensor [B, Hq, N] of integer dtype on q's device."""
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(idx).__name__}")
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {idx.dtype}")
    B, hq = q.shape[:2]
    if idx.dim() != 3 or idx.shape[:2] != (B, hq):
        raise ValueError(f"{name} must have shape [B, Hq, N] = [{B}, {hq}, N], got {tuple(idx.shape)}")
    if idx.device != q.device:
        raise ValueError(f"device mismatch: q is on {q.device}, {name} is on {idx.device}")


def check_index_range(seq_len: int, **indices: torch.Tensor) -> None:
    """All entries in [0, seq_len): one host sync for all index tensors together."""
    named = [(n, t) for n, t in indices.items() if t.numel() > 0]
    if not named:
        return
    bounds = torch.stack([x for _, t in named for x in (t.min(), t.max())]).tolist()
    for n, (lo, hi) in zip([n for n, _ in named], zip(bounds[::2], bounds[1::2])):
        if lo < 0:
            raise ValueError(f"{n} has negative index {lo}")
        if hi >= seq_len:
            raise ValueError(f"{n} has out-of-range index {hi} (must be < seq_len {seq_len})")


def check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value}")


def check_budget(name: str, value: Union[int, Sequence[int], torch.Tensor], num_heads: int) -> None:
    """int, or per-head budgets (list/tuple/tensor of length Hq), all positive."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got dtype {value.dtype}")
        if value.dim() != 1 or value.shape[0] != num_heads:
            raise ValueError(f"{name} per-head budgets must have shape [{num_heads}], got {tuple(value.shape)}")
        if value.numel() and int(value.min()) < 1:
            raise ValueError(f"{name} must be positive, got {value.tolist()}")
        return
    if isinstance(value, (list, tuple)):
        if len(value) != num_heads:
            raise ValueError(f"{name} per-head budgets must have {num_heads} entries, got {len(value)}")
        for x in value:
            check_int(name, x)
        return
    check_int(name, value)
