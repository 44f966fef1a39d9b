"""Vertical-slash index estimation from the last queries (torch ops: CPU or CUDA, no host sync)."""
import math
from typing import Sequence, Union

import torch

Budget = Union[int, Sequence[int], torch.Tensor]


def _budget(size: Budget, hq: int, device) -> tuple:
    """-> (k: int, per-head budgets [Hq] long tensor or None)."""
    if isinstance(size, int):
        return size, None
    if isinstance(size, torch.Tensor):
        # the top-k width must be a host int: read it from a CPU copy of the budgets
        # (callers on the hot path pass a list; a CUDA tensor here costs one sync).
        host = size.detach().cpu().long().expand(hq)
        return int(host.max()), host.to(device)
    sizes = [int(s) for s in size]
    return max(sizes), device_tensor(sizes, device, torch.long)


def device_tensor(values: Sequence[int], device, dtype=torch.int32) -> torch.Tensor:
    """Host list -> tensor on `device` without a device sync (pinned, non-blocking copy)."""
    t = torch.tensor(list(values), dtype=dtype)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def estimate_vertical_slash(q: torch.Tensor, k: torch.Tensor, vertical_size: Budget, slash_size: Budget,
                            last_q: int = 64, sink_tokens: int = 30, local_window: int = 100):
    """Pick vertical columns and slash offsets per head from the attention of the last queries.

    q [B, Hq, S, D], k [B, Hkv, S, D] -> (vertical [B, Hq, min(V, S)] int32 key columns,
    slash [B, Hq, min(NS, S)] int32 diagonal offsets i - j). V/NS are ints or per-head [Hq]
    budgets; with per-head budgets the top-k runs at the max and each head's entries beyond its
    budget are -1. The first `sink_tokens` columns and the offsets < `local_window` are always
    ranked first.
    """
    B, Hq, S, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    nv, v_budget = _budget(vertical_size, Hq, q.device)
    ns, s_budget = _budget(slash_size, Hq, q.device)
    nv, ns = min(max(nv, 0), S), min(max(ns, 0), S)
    L = min(last_q, S)

    qq = q[:, :, S - L:].float().view(B, Hkv, G, L, D)
    s = torch.matmul(qq, k.float().unsqueeze(2).transpose(-1, -2)) / math.sqrt(D)  # [B, Hkv, G, L, S]
    pos = torch.arange(S - L, S, device=q.device).view(-1, 1)
    col = torch.arange(S, device=q.device).view(1, -1)
    s.masked_fill_(col > pos, float("-inf"))
    p = torch.softmax(s, dim=-1).view(B, Hq, L, S)

    vscore = p.sum(2)
    # non-causal entries have probability 0, so clamping their negative offsets to 0 is harmless
    offset = (pos - col).clamp_(min=0).view(1, 1, -1).expand(B, Hq, -1)
    sscore = torch.zeros(B, Hq, S, device=q.device).scatter_add_(-1, offset, p.reshape(B, Hq, -1))
    vscore[..., :sink_tokens] = float("inf")
    sscore[..., :local_window] = float("inf")

    vertical = vscore.topk(nv, dim=-1).indices
    slash = sscore.topk(ns, dim=-1).indices
    return _pad(vertical, v_budget), _pad(slash, s_budget)


def _pad(idx: torch.Tensor, budget) -> torch.Tensor:
    if budget is not None:
        keep = torch.arange(idx.shape[-1], device=idx.device) < budget.view(1, -1, 1)
        idx = torch.where(keep, idx, torch.full_like(idx, -1))
    return idx.to(torch.int32).contiguous()
