"""``dense``: exact causal attention for the head (id 0; both slots unused)."""
from __future__ import annotations

import dataclasses

import torch

from ..triton_kernels import naive
from ..ops import cpu, fa4
from ..ops.dense import dense_heads
from .base import HeadGroup, Pattern, register


@register
@dataclasses.dataclass(frozen=True)
class Dense(Pattern):
    name = "dense"
    id = 0
    short = "dense"
    # in a layer with sparse heads the dense ones run SDPA per kv head (ops/dense.dense_heads; FA4 with [hopper])
    RATE = (1.0, 1.0)

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
        # SDPA (cuDNN / flash) on the dense heads, one call per kv head that has some: the streaming kernel with
        # init_num >= S ran them at ~0.82 of cuDNN's rate (NOTES row 46)
        return dense_heads(group.q, group.k, group.v, group.scale, [s is not None for s in group.specs], out)

    @classmethod
    def reference(cls, group: HeadGroup, selection) -> torch.Tensor:
        return naive.dense_causal_ref(group.q, group.k, group.v, group.scale)
