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

import torch

from ..ops.adaptive import FIXED, meanq_block_sparse_index
from .adaptive_block_sparse import BlockSparseAdaptive
from .base import HeadGroup, register
from .block_sparse import BlockSparse


# the fixed and adaptive pooled patterns' fields, slots, rate and crossover; only the estimate (select) differs
@register
@dataclasses.dataclass(frozen=True)
class BlockSparseMeanQ(BlockSparse):
    name = "block_sparse_meanq"
    id = 8
    short = "bsq"
    # the Triton log-mass launch (key range split, tuned) + fused select at 128K on an H200: 2.88 ms of cuDNN's 66.7
    # (Qwen2.5-0.5B shape), 8.04 ms of 246 (Llama-3-8B shape) (NOTES row 45); one build per layer for both kinds
    INDEX = (0.043, 0.033)
    INDEX_FAMILY = "meanq"
    chunked = False  # the query blocks' means come from the unchunked prompt

    @classmethod
    def select(cls, group: HeadGroup) -> torch.Tensor:
        return layer_index(group)


@register
@dataclasses.dataclass(frozen=True)
class BlockSparseMeanQAdaptive(BlockSparseAdaptive):
    name = "block_sparse_meanq_adaptive"
    id = 9
    short = "bsqa"
    INDEX = BlockSparseMeanQ.INDEX
    INDEX_FAMILY = "meanq"  # layer_index: the fixed and adaptive heads' ids in one build

    @classmethod
    def select(cls, group: HeadGroup) -> torch.Tensor:
        return layer_index(group)


def layer_index(group: HeadGroup) -> torch.Tensor:
    """One mean-query index for the layer call's fixed AND adaptive mean-query heads (each head's own cap and
    threshold; other heads: the diagonal block only): the log-mass pass, which dominates the build, runs once per
    layer instead of once per pattern (16 of the 24 layers of the 32K mean-query search's selection hold both).
    Each head's ids are those of its pattern built alone (rows are selected per head)."""
    specs = group.layer_specs or group.specs
    key = ("meanq_index", group.scale)
    if group.shared is not None and key in group.shared:
        return group.shared[key]
    caps = [s.topk if isinstance(s, BlockSparseMeanQ) else s.topk_cap if isinstance(s, BlockSparseMeanQAdaptive)
            else 1 for s in specs]
    taus = [s.threshold if isinstance(s, BlockSparseMeanQAdaptive) else FIXED for s in specs]
    index = meanq_block_sparse_index(group.q, group.k, caps, taus, scale=group.scale)
    if group.shared is not None:
        group.shared[key] = index
    return index
