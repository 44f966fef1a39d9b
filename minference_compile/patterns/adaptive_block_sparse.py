"""``block_sparse_adaptive``: per 64-row query block the diagonal plus the fewest key blocks whose estimated mass
reaches ``tau``, at most ``topk_cap`` (ops/adaptive.py); the block-sparse kernel.
Seed entry ``["block_sparse_adaptive", topk_cap, 0, score(, {"tau": t})]``; id 5."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..ops.adaptive import adaptive_block_sparse_index
from .base import HeadGroup, Pattern, Slot, register
from .block_sparse import BlockAttention, BlockSparse


@register
@dataclasses.dataclass(frozen=True)
class BlockSparseAdaptive(BlockAttention, Pattern):
    topk_cap: int
    tau: Optional[float] = None  # None: the default 0.9 (the entry had no 5th element)

    name = "block_sparse_adaptive"
    id = 5
    short = "bsa"
    SLOTS = (Slot("topk_cap", "topk cap", 1), None)
    THRESHOLD = "tau"
    chunked = False  # query blocks are scored from the unchunked prompt's block means

    def min_sparse_len(self) -> int:
        return BlockSparse(self.topk_cap).min_sparse_len()  # unmeasured: the fixed one at the cap

    @classmethod
    def select(cls, group: HeadGroup) -> torch.Tensor:
        return adaptive_block_sparse_index(group.q, group.k, group.values("topk_cap", 0), group.thresholds())
