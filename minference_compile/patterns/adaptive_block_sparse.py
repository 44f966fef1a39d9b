"""Adaptive block-sparse: per 64-row query block the diagonal plus the fewest key blocks whose estimated mass
reaches ``tau``, at most ``topk_cap`` (ops/adaptive.select_blocks); the block-sparse kernel. Two estimates:

* ``block_sparse_adaptive`` (id 5): mean-pooled q . k per block pair.
  Seed entry ``["block_sparse_adaptive", topk_cap, 0, score(, {"tau": t})]``; label ``bsa(128;0.9)``.
* ``block_sparse_antidiag`` (id 6): XAttention's strided-antidiagonal sums (ops/adaptive.antidiag_block_mass),
  key block 0 kept after the diagonal.
  Seed entry ``["block_sparse_antidiag", topk_cap, stride, score(, {"tau": t})]``; label ``bsx(128,8;0.9)``.
  A pattern of its own rather than a ``scoring`` field on id 5: the stride fills the slot id 5 leaves unused and
  the estimate is the pattern id, so the entry, the op's int lists and the threshold packing stay as they are.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..ops.adaptive import adaptive_block_sparse_index, antidiag_block_sparse_index, check_stride
from .base import HeadGroup, Pattern, PatternError, Slot, register
from .block_sparse import BlockAttention, BlockSparse


@register
@dataclasses.dataclass(frozen=True)
class BlockSparseAdaptive(BlockAttention, Pattern):
    topk_cap: int
    tau: Optional[float] = None  # None: the default 0.9 (the entry had no 5th element)

    name = "block_sparse_adaptive"
    id = 5
    short = "bsa"
    RATE = BlockSparse.RATE  # the same kernel
    INDEX = (0.031, 0.016)  # fused pooled build 2.09 ms of 67.3 (NOTES row 34); D=128 not measured: its cost does
    # not grow with D, the dense head's does: half the share
    SLOTS = (Slot("topk_cap", "topk cap", 1), None)
    THRESHOLD = "tau"
    chunked = False  # query blocks are scored from the unchunked prompt's block means

    def min_sparse_len(self, fa4: bool = False) -> int:
        return BlockSparse(self.topk_cap).min_sparse_len()  # unmeasured: the fixed one at the cap

    @classmethod
    def select(cls, group: HeadGroup) -> torch.Tensor:
        return adaptive_block_sparse_index(group.q, group.k, group.values("topk_cap", 0), group.thresholds())


@register
@dataclasses.dataclass(frozen=True)
class BlockSparseAntidiag(BlockAttention, Pattern):
    topk_cap: int
    stride: int = 8  # a divisor of 64: the antidiagonal's step within each s x s tile
    tau: Optional[float] = None  # None: the default 0.9

    name = "block_sparse_antidiag"
    id = 6
    short = "bsx"
    RATE = BlockSparse.RATE
    SLOTS = (Slot("topk_cap", "topk cap", 1), Slot("stride", "stride", 1))
    THRESHOLD = "tau"
    chunked = False  # the estimate reads every row of the unchunked prompt

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            check_stride(self.stride)
        except ValueError as e:
            raise PatternError(f"{self.name}: {e}") from None

    def min_sparse_len(self, fa4: bool = False) -> int:
        return BlockSparse(self.topk_cap).min_sparse_len()  # unmeasured: the fixed one at the cap

    def index_share(self, head_dim: int) -> float:
        # the strided estimate is 1/stride of the dense Q.K^T (twice: max, then mass) plus a fixed select: 26.6% of
        # the dense layer at stride 8, 17.3% at 16 (H200, 128K, D=64, NOTES row 34); the same share at D=128
        return 0.080 + 0.186 * 8 / self.stride

    def index_family(self) -> str:
        return f"{self.name}/{self.stride}"  # select: one build per stride in the layer

    @classmethod
    def select(cls, group: HeadGroup) -> torch.Tensor:
        strides = sorted({s.stride for s in group.specs if s is not None})
        parts = []
        for st in strides:  # one build per stride in the layer (searched configs use one); other heads cap 0
            caps = [0 if s is None or s.stride != st else s.topk_cap for s in group.specs]
            parts.append(antidiag_block_sparse_index(group.q, group.k, caps, group.thresholds(), st))
        if len(parts) == 1:
            return parts[0]
        width = max(p.shape[-1] for p in parts)
        out = torch.full(parts[0].shape[:-1] + (width,), -1, dtype=torch.int32, device=group.q.device)
        for st, p in zip(strides, parts):
            mine = torch.tensor([s is not None and s.stride == st for s in group.specs], device=out.device)
            p = torch.nn.functional.pad(p, (0, width - p.shape[-1]), value=-1)
            out = torch.where(mine.view(1, -1, 1, 1), p, out)
        return out
