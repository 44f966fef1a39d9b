"""``block_sparse``: per 64-row query block the ``topk`` key blocks of highest mean-q . mean-k score, the diagonal
always kept (triton_kernels/block_sparse_index.py). Seed entry ``["block_sparse", topk, 0, score]``; id 3."""
from __future__ import annotations

import dataclasses

import torch

from ..triton_kernels import naive
from ..ops import cpu
from ..ops.crossover import round_up
from .base import HeadGroup, Pattern, Slot, register


def block_sparse_kernel(q, k, v, block_index, scale: float, head_mask=None, out=None) -> torch.Tensor:
    """The Triton kernel (CUDA; CPU tensors under TRITON_INTERPRET=1) over a compact block index [B, Hq, NQB, K]
    (ascending ids, -1 padded)."""
    from ..triton_kernels.block_sparse import block_sparse_attention_fwd
    return block_sparse_attention_fwd(q, k, v, block_index, scale, head_mask=head_mask, out=out, compact=True)


def block_sparse(q, k, v, block_index, scale: float, head_mask=None, out=None) -> torch.Tensor:
    """Block-sparse attention on q's device: the CPU path or the kernel."""
    if q.device.type == "cpu":
        return cpu.block_sparse_attention(q, k, v, block_index, scale, head_mask, out)
    return block_sparse_kernel(q, k, v, block_index, scale, head_mask, out)


class BlockAttention:
    """The attention half of the block-sparse patterns (fixed and adaptive): the selection is a
    [B, Hq, NQB, K] tensor of key-block ids, run by the block-sparse kernel / CPU path / reference."""

    @classmethod
    def attend_cpu(cls, group: HeadGroup, selection, head_mask, out) -> torch.Tensor:
        return cpu.block_sparse_attention(group.q, group.k, group.v, selection, group.scale, head_mask, out)

    @classmethod
    def attend_cuda(cls, group: HeadGroup, selection, head_mask, out) -> torch.Tensor:
        return block_sparse_kernel(group.q, group.k, group.v, selection, group.scale, head_mask, out)

    @classmethod
    def reference(cls, group: HeadGroup, selection) -> torch.Tensor:
        return naive.block_sparse_ref(group.q, group.k, group.v, selection, group.scale)


@register
@dataclasses.dataclass(frozen=True)
class BlockSparse(BlockAttention, Pattern):
    topk: int

    name = "block_sparse"
    id = 3
    short = "bs"
    RATE = (0.80, 0.68)  # NOTES rows 17, 27 (qwen2.5-0.5b / llama3-8b shapes)
    INDEX = (0.014, 0.005)  # pooled scores + radix select: 0.97 ms of 67.3 (NOTES row 34) / ~1 ms of ~245 ms
    SLOTS = (Slot("topk", "topk", 1), None)

    def min_sparse_len(self, fa4: bool = False) -> int:
        # coverage 2 * 64 * topk / S at ~0.65 of cuDNN's rate with a 3-10% index share: S > 320 * topk
        return round_up(320 * self.topk)

    @classmethod
    def select(cls, group: HeadGroup) -> torch.Tensor:
        return topk_index(group)


def topk_index(group: HeadGroup, block: int = 64) -> torch.Tensor:
    """block_sparse_index of the group's heads at their ``topk`` (the fixed block-sparse patterns' select)."""
    from ..triton_kernels.block_sparse_index import block_sparse_index
    topks = {s.topk for s in group.specs if s is not None}
    # one budget: an int; else per head (other heads 1), whose max needs no device sync
    return block_sparse_index(group.q, group.k, topks.pop() if len(topks) == 1 else group.values("topk", 1),
                              block=block)
