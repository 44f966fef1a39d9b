"""``block_sparse_128``: block-sparse at FlashAttention-4's tile, 128-row query blocks x 128-key blocks: per query
block the ``topk`` key blocks of highest mean-q . mean-k score (128-row / 128-key means), the diagonal always kept
(triton_kernels/block_sparse_index.py with block=128). Same keys per row as ``block_sparse`` at twice the top-k and
the same coverage, but whole 128 x 128 tiles, which FA4 runs at 1.02-1.08 of cuDNN's dense rate on an H200 where our
64-row tiles run at ~0.7 (benchmarks/NOTES.md row 42: top-50 at 128K 22.8 ms vs block_sparse top-100 33.3 ms at
D=128, 7.1 vs 8.2 ms at D=64). Coarser blocks keep less attention mass at equal coverage (Qwen2.5-Coder-0.5B at 32K:
1.7-5.6 points of recall), so the search weighs it per head. Runs on FA4 where it can (the [hopper] extra, sm90),
else as the equal 64-granular index (expand_block_index) on the block-sparse Triton kernel / CPU path. Our entry
``["block_sparse_128", topk, 0, score]`` (the seed has no such pattern); id 7."""
from __future__ import annotations

import dataclasses

import torch

from ..ops import fa4
from ..ops.crossover import round_up
from ..triton_kernels.block_sparse_index import expand_block_index
from .base import HeadGroup, Pattern, Slot, register
from .block_sparse import BlockAttention, topk_index

BLOCK = 128


@register
@dataclasses.dataclass(frozen=True)
class BlockSparse128(Pattern):
    topk: int

    name = "block_sparse_128"
    id = 7
    short = "bs128"
    # the Triton path's rate (the equal 64-granular index), NOTES row 42; on FA4 (sm90 + [hopper]) 0.90 / 1.02-1.08
    RATE = (0.76, 0.70)
    INDEX = (0.004, 0.002)  # pooled scores at 128: a quarter of block_sparse's score matrix
    SLOTS = (Slot("topk", "topk", 1), None)

    def min_sparse_len(self, fa4: bool = False) -> int:
        # coverage 2 * 128 * topk / S, at block_sparse's rate: S > 640 * topk
        return round_up(640 * self.topk)

    @classmethod
    def select(cls, group: HeadGroup) -> torch.Tensor:
        """[B, Hq, ceil(Sq/128), K] absolute 128-key block ids (ascending, -1 padded)."""
        return topk_index(group, BLOCK)

    @classmethod
    def expanded(cls, group: HeadGroup, selection: torch.Tensor) -> torch.Tensor:
        return expand_block_index(selection, group.q.shape[2], group.k.shape[2], BLOCK)

    @classmethod
    def attend_cpu(cls, group: HeadGroup, selection, head_mask, out) -> torch.Tensor:
        return BlockAttention.attend_cpu(group, cls.expanded(group, selection), head_mask, out)

    @classmethod
    def attend_cuda(cls, group: HeadGroup, selection, head_mask, out) -> torch.Tensor:
        heads = [h for h, s in enumerate(group.specs) if s is not None]
        if fa4.bs128_reason(group.q, group.k) is None:
            return fa4.block_sparse_128(group.q, group.k, group.v, selection, group.scale, heads, out)
        return BlockAttention.attend_cuda(group, cls.expanded(group, selection), head_mask, out)

    @classmethod
    def reference(cls, group: HeadGroup, selection) -> torch.Tensor:
        return BlockAttention.reference(group, cls.expanded(group, selection))
