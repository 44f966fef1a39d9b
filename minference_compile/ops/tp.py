"""Tensor-parallel agreement: a whole-layer run-time decision taken on the mean over *all* ranks' heads."""
from __future__ import annotations

import torch


def layer_mean(local_sum: torch.Tensor, local_count: int, tp_world: int) -> float:
    """Mean of a per-head quantity over the layer's heads on every tensor-parallel rank (one host sync).

    ``tp_world`` > 1 all-reduces (sum, count) over the default process group, which must be the
    tensor-parallel group (the FX pass passes ``tp_world`` > 1 only when the world is exactly that group).
    Every rank then compares the same number with the same threshold: no rank goes dense while another
    goes sparse, and the decision equals the single-process one.
    """
    both = torch.stack([local_sum.float().reshape(()), torch.tensor(float(local_count), device=local_sum.device)])
    if tp_world > 1:
        import torch.distributed as dist

        if not dist.is_initialized() or dist.get_world_size() != tp_world:
            raise RuntimeError(f"tensor-parallel layer compiled for {tp_world} ranks, but the default process group "
                               f"has {dist.get_world_size() if dist.is_initialized() else 'no'} ranks")
        dist.all_reduce(both)
    total, count = both.tolist()
    return total / max(count, 1.0)
