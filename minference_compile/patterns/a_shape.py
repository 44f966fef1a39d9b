"""``stream_llm`` (A-shape / StreamingLLM): row i attends j <= i with j < init_num or i - j < local_window_num
(element-exact). Seed entry ``["stream_llm", init_num, local_window_num, score]``; id 2."""
from __future__ import annotations

import dataclasses
from typing import Union

import torch

from ..triton_kernels import naive
from ..triton_kernels._torch_util import device_tensor
from ..ops import cpu, fa4
from ..ops.crossover import round_up
from .base import HeadGroup, Pattern, Slot, register


def streaming_kernel(q, k, v, init_num: Union[int, torch.Tensor], local_window: Union[int, torch.Tensor],
                     scale: float, head_mask=None, out=None) -> torch.Tensor:
    """The Triton A-shape kernel (CUDA; CPU tensors under TRITON_INTERPRET=1): init_num / local_window int or
    per-head [Hq] int32 tensors."""
    from ..triton_kernels.streaming import streaming_attention_fwd
    per_head = lambda x: x if isinstance(x, torch.Tensor) else device_tensor([x] * q.shape[1], q.device)  # noqa: E731
    return streaming_attention_fwd(q, k, v, per_head(init_num), per_head(local_window), scale, head_mask=head_mask,
                                   out=out)


def streaming(q, k, v, init_num: Union[int, torch.Tensor], local_window: Union[int, torch.Tensor], scale: float,
              head_mask=None, out=None) -> torch.Tensor:
    """A-shape attention on q's device: the CPU path or the kernel."""
    if q.device.type == "cpu":
        return cpu.streaming_attention(q, k, v, init_num, local_window, scale, head_mask, out)
    return streaming_kernel(q, k, v, init_num, local_window, scale, head_mask, out)


@register
@dataclasses.dataclass(frozen=True)
class AShape(Pattern):
    init_num: int
    local_window_num: int

    name = "stream_llm"
    id = 2
    short = "ashape"
    RATE = (0.82, 0.80)  # Triton, TMA, 3 stages (NOTES rows 17, 27); FlashAttention-4 runs it at 1.05-1.18
    SLOTS = (Slot("init_num", "init_num", 0), Slot("local_window_num", "local_window_num", 1))  # init 0: a window

    def min_sparse_len(self, fa4: bool = False) -> int:
        # the kernel runs at ~0.7 of cuDNN's rate on the pairs it keeps: it wins once S > 4 * (init + local)
        return round_up(4 * (self.init_num + self.local_window_num))

    @classmethod
    def select(cls, group: HeadGroup):
        dev = group.q.device
        return device_tensor(group.values("init_num", 0), dev), device_tensor(group.values("local_window_num", 0), dev)

    @classmethod
    def attend_cpu(cls, group: HeadGroup, selection, head_mask, out) -> torch.Tensor:
        return cpu.streaming_attention(group.q, group.k, group.v, *selection, group.scale, head_mask, out)

    @classmethod
    def attend_cuda(cls, group: HeadGroup, selection, head_mask, out) -> torch.Tensor:
        windows = [None if s is None else (s.init_num, s.local_window_num) for s in group.specs]
        done = fa4.attend_group(group, windows, out)  # the [hopper] extra where it runs (faster on sm90)
        if done is not None:
            return done
        return streaming_kernel(group.q, group.k, group.v, *selection, group.scale, head_mask, out)

    @classmethod
    def reference(cls, group: HeadGroup, selection) -> torch.Tensor:
        return naive.streaming_ref(group.q, group.k, group.v, *selection, group.scale)
