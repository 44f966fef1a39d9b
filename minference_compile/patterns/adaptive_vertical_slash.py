"""``vertical_and_slash_adaptive``: per head and input, the fewest verticals / slashes holding ``gamma`` of the
estimated column / diagonal mass, at most ``v_cap`` / ``s_cap`` (ops/adaptive.py); the fixed pattern's kernel.
Seed entry ``["vertical_and_slash_adaptive", v_cap, s_cap, score(, {"gamma": g})]``; id 4."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..triton_kernels import naive
from ..ops import cpu
from ..ops.adaptive import adaptive_vertical_slash
from .base import HeadGroup, Pattern, Slot, register
from .vertical_slash import VerticalSlash, vertical_slash_kernel


@register
@dataclasses.dataclass(frozen=True)
class VerticalSlashAdaptive(Pattern):
    v_cap: int
    s_cap: int
    gamma: Optional[float] = None  # None: the default 0.9 (the entry had no 5th element)

    name = "vertical_and_slash_adaptive"
    id = 4
    short = "vsa"
    RATE = VerticalSlash.RATE  # the same kernel
    INDEX = (0.037, 0.013)  # 2.50 ms of 67.3 (NOTES row 34); D=128 not measured: the fixed one's + 10%
    SLOTS = (Slot("v_cap", "vertical cap", 1), Slot("s_cap", "slash cap", 1))
    THRESHOLD = "gamma"
    chunked = False  # the estimate's mass rule is defined on an unchunked pre-fill

    def min_sparse_len(self, fa4: bool = False) -> int:
        return VerticalSlash(self.v_cap, self.s_cap).min_sparse_len()  # unmeasured: the fixed one at the caps

    @classmethod
    def select(cls, group: HeadGroup):
        # the layer's scale and its shared estimate (a layer with fixed vertical-slash heads computes it once)
        return adaptive_vertical_slash(group.q, group.k, group.values("v_cap", 0), group.values("s_cap", 0), group.thresholds(),
                                       group.last_q, scale=group.scale, scores=group.vs_scores())

    @classmethod
    def attend_cpu(cls, group: HeadGroup, selection, head_mask, out) -> torch.Tensor:
        return cpu.vertical_slash_attention(group.q, group.k, group.v, *selection, group.scale, head_mask, out)

    @classmethod
    def attend_cuda(cls, group: HeadGroup, selection, head_mask, out) -> torch.Tensor:
        return vertical_slash_kernel(group.q, group.k, group.v, *selection, group.scale, head_mask, out,
                                     qk_dtype=group.qk_dtype)

    @classmethod
    def reference(cls, group: HeadGroup, selection) -> torch.Tensor:
        return naive.vertical_slash_ref(group.q, group.k, group.v, *selection, group.scale)
