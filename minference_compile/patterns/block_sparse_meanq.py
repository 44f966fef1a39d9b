"""Block-sparse on the mean query's mass (ops/adaptive.meanq_block_sparse_index): per 64-row query block the
diagonal plus the key blocks on which the block's mean query puts the most softmax mass over the EXACT keys (mean(q)
. k_j summed per key block), where ``block_sparse`` ranks by mean(q) . mean(k). The block-sparse kernel.

* ``block_sparse_meanq`` (id 8): the ``topk`` largest. Seed entry ``["block_sparse_meanq", topk, 0, score]``;
  label ``bsq(16)``.
* ``block_sparse_meanq_adaptive`` (id 9): the fewest reaching ``tau``, at most ``topk_cap``. Seed entry
  ``["block_sparse_meanq_adaptive", topk_cap, 0, score(, {"tau": t})]``; label ``bsqa(128;0.9)``.

The estimate is one query row per block against every key (1/64 of the dense Q.K^T) plus an exp per (block, key);
on Qwen2.5-Coder-0.5B it keeps far more mass than the pooled score at equal top-k (benchmarks/NOTES.md row 44).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..ops.adaptive import FIXED, meanq_block_sparse_index
from .base import HeadGroup, Pattern, Slot, register
from .block_sparse import BlockAttention, BlockSparse


@register
@dataclasses.dataclass(frozen=True)
class BlockSparseMeanQ(BlockAttention, Pattern):
    topk: int

    name = "block_sparse_meanq"
    id = 8
    short = "bsq"
    RATE = BlockSparse.RATE  # the same kernel
    # the Triton log-mass launch + fused select at 128K on an H200: 4.51 ms of cuDNN's 66.6 (Qwen2.5-0.5B shape),
    # 9.88 ms of 244 (Llama-3-8B shape) (NOTES row 44)
    INDEX = (0.068, 0.040)
    SLOTS = (Slot("topk", "topk", 1), None)
    chunked = False  # the query blocks' means come from the unchunked prompt

    def min_sparse_len(self, fa4: bool = False) -> int:
        return BlockSparse(self.topk).min_sparse_len()  # the same kernel work; its index is not measured yet

    @classmethod
    def select(cls, group: HeadGroup) -> torch.Tensor:
        return meanq_block_sparse_index(group.q, group.k, group.values("topk", 1), FIXED, scale=group.scale)


@register
@dataclasses.dataclass(frozen=True)
class BlockSparseMeanQAdaptive(BlockAttention, Pattern):
    topk_cap: int
    tau: Optional[float] = None  # None: the default 0.9 (the entry had no 5th element)

    name = "block_sparse_meanq_adaptive"
    id = 9
    short = "bsqa"
    RATE = BlockSparse.RATE
    INDEX = BlockSparseMeanQ.INDEX
    SLOTS = (Slot("topk_cap", "topk cap", 1), None)
    THRESHOLD = "tau"
    chunked = False

    def min_sparse_len(self, fa4: bool = False) -> int:
        return BlockSparse(self.topk_cap).min_sparse_len()  # unmeasured: the fixed one at the cap

    @classmethod
    def select(cls, group: HeadGroup) -> torch.Tensor:
        return meanq_block_sparse_index(group.q, group.k, group.values("topk_cap", 0), group.thresholds(),
                                        scale=group.scale)
