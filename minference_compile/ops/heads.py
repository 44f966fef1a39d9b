"""Index builds over one pattern's heads only. A layer's heads of other patterns have zero budgets: estimating their
scores costs as much as a real head's and is thrown away (the estimate is per head and reads all S keys), so the
builds take the heads with a budget, read only their rows, and put the result back with -1 for the rest."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from ..triton_kernels._torch_util import device_tensor


def active_heads(hq: int, *budgets) -> Optional[list]:
    """The q heads with a positive entry in any of ``budgets`` (per-head host lists), when they are not all of
    them; None = every head (a budget given as an int or a tensor counts as every head, as does
    MINFERENCE_HEAD_SUBSET=0)."""
    if os.environ.get("MINFERENCE_HEAD_SUBSET", "1") == "0":
        return None
    lists = []
    for b in budgets:
        if isinstance(b, (int, torch.Tensor)):
            return None
        lists.append([int(x) for x in b])
    act = [h for h in range(hq) if any(v[h] > 0 for v in lists)]
    return act if len(act) < hq else None


def take(values, heads: Sequence[int]):
    """Per-head values of the active heads (a scalar stays a scalar)."""
    if isinstance(values, (int, float)):
        return values
    return [values[h] for h in heads]


def put_heads(sub: torch.Tensor, heads: Sequence[int], hq: int, fill=-1) -> torch.Tensor:
    """sub [B, n, ...] of ``heads`` -> [B, hq, ...] with ``fill`` for the other heads (no host sync)."""
    out = sub.new_full((sub.shape[0], hq) + tuple(sub.shape[2:]), fill)
    if heads:
        out.index_copy_(1, device_tensor(heads, sub.device, torch.long), sub)
    return out
