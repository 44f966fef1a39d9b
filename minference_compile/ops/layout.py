"""The layer ops' output layout (``sparse_prefill``, ``sparse_prefill_masked``): [B, Hq, Sq, D] stored as
[B, Sq, Hq, D], a transposed view. The model's next op is ``transpose(1, 2).reshape(B, Sq, Hq * D)`` into o_proj,
which reads this layout as a view; a contiguous [B, Hq, Sq, D] output cost a relayout copy there (Inductor's
``clone_transpose``, 0.45 ms per layer at 128K on the H200) plus, on the FlashAttention-4 path, a transposing copy
of FA4's own [B, S, H, D] output into ours (~1.4 ms per layer): benchmarks/NOTES.md E12.

Fake and real outputs must have the same strides: Inductor indexes the op's output by the fake tensor's strides,
so every return path goes through ``as_layer_out``."""
from typing import Tuple

import torch


def layer_out(q: torch.Tensor) -> torch.Tensor:
    """An empty [B, Hq, Sq, D] tensor like q, stored as [B, Sq, Hq, D]."""
    B, H, S, D = q.shape
    return q.new_empty((B, S, H, D)).transpose(1, 2)


def layer_out_strides(shape) -> Tuple[int, ...]:
    B, H, S, D = shape
    return (S * H * D, D, H * D, 1)


def as_layer_out(q: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """o [B, Hq, Sq, D] itself when it has ``layer_out``'s strides (e.g. FA4's or cuDNN's output on the model's
    [B, S, H, D] projections), else a copy that has them."""
    if tuple(o.stride()) == layer_out_strides(o.shape):
        return o
    out = layer_out(q)
    out.copy_(o)
    return out
