"""``dense``: exact causal attention for the head (id 0; both slots unused)."""
from __future__ import annotations

import dataclasses

import torch

from ..triton_kernels import naive
from ..ops import cpu, fa4
from .a_shape import streaming_kernel
from .base import HeadGroup, Pattern, register


@register
@dataclasses.dataclass(frozen=True)
class Dense(Pattern):
    name = "dense"
    id = 0
    short = "dense"
    # in a layer with sparse heads the dense ones run on the streaming kernel (A-shape's rate; FA4 with [hopper]);
    # a layer of dense heads only runs SDPA at rate 1, which this per-head model does not see: conservative
    RATE = (0.82, 0.80)

    def min_sparse_len(self, fa4: bool = False) -> int:
        return 0  # a dense head never holds its layer back

    @classmethod
    def attend_cpu(cls, group: HeadGroup, selection, head_mask, out) -> torch.Tensor:
        return cpu.causal_attention(group.q, group.k, group.v, group.scale, head_mask, out)

    @classmethod
    def attend_cuda(cls, group: HeadGroup, selection, head_mask, out) -> torch.Tensor:
        done = fa4.attend_group(group, [None if s is None else fa4.DENSE for s in group.specs], out)
        if done is not None:  # the [hopper] extra: FA4 dense causal (1.15-1.19x cuDNN on the H200)
            return done
        # A-shape with init_num >= S is dense causal attention (one launch with the sparse heads' conventions)
        whole = torch.full((group.q.shape[1],), group.k.shape[2], dtype=torch.int32, device=group.q.device)
        return streaming_kernel(group.q, group.k, group.v, whole, whole, group.scale, head_mask, out)

    @classmethod
    def reference(cls, group: HeadGroup, selection) -> torch.Tensor:
        return naive.dense_causal_ref(group.q, group.k, group.v, group.scale)
