"""``vertical_and_slash`` (the seed's block-rounded vertical-slash): per head the ``vertical_size`` key columns and
``slash_size`` diagonals ranked by the estimate of the last ``last_q`` queries (ops/estimate.py). Seed entry
``["vertical_and_slash", vertical_size, slash_size, score]``; id 1."""
from __future__ import annotations

import dataclasses
import logging
from typing import NamedTuple, Optional

import torch

from ..triton_kernels import naive
from ..ops import cpu, fa4
from ..ops.estimate import LOCAL_WINDOW, SINK_TOKENS, estimate_scores, top_vertical_slash
from .base import HeadGroup, Pattern, Slot, register

_log = logging.getLogger("minference_compile")
_cpu_noted: set = set()


class VSSelection(NamedTuple):
    vertical: torch.Tensor  # [B, Hq, NV] int32 key columns, -1 padded
    slash: torch.Tensor  # [B, Hq, NS] int32 diagonal offsets, -1 padded
    index: Optional[object] = None  # CUDA: the kernel's VSIndex, built once (the work check reads it too)


def _estimate(q, k, vertical_size, slash_size, last_q, sink_tokens, local_window, scale=None, scores=None):
    """The fixed heads' (vertical, slash): the top of the estimate's scores (``scores``: already computed at
    ``scale``, else computed here). One function so that benchmarks.e2e can inject index sets in its place."""
    vscore, sscore = scores if scores is not None else estimate_scores(q, k, last_q, scale)
    return top_vertical_slash(vscore, sscore, vertical_size, slash_size, sink_tokens, local_window)


def build_index(q, k, vertical, slash):
    """The vertical-slash kernel's index (triton_kernels/vertical_slash_index.py) for q [B, Hq, Sq, D] over S keys."""
    from ..triton_kernels.vertical_slash_index import build_vertical_slash_index, pair_for
    return build_vertical_slash_index(vertical, slash, k.shape[2], pair=pair_for(q.shape[-1]), q_len=q.shape[2])


def vertical_slash_kernel(q, k, v, vertical, slash, scale: float, head_mask=None, out=None, index=None,
                          qk_dtype: str = ""):
    """The Triton kernel (CUDA; CPU tensors under TRITON_INTERPRET=1) from the column / offset sets (index: the
    prebuilt index of those sets, else built here); qk_dtype "fp8" / "int8": block-scaled Q.K^T operands."""
    from ..triton_kernels.vertical_slash import vertical_slash_attention_fwd
    if index is None:
        index = build_index(q, k, vertical, slash)
    return vertical_slash_attention_fwd(q, k, v, index, scale, head_mask=head_mask, out=out,
                                        qk_format=qk_dtype or None)


def vertical_slash(q, k, v, vertical, slash, scale: float, head_mask=None, out=None, index=None) -> torch.Tensor:
    """Vertical-slash attention on q's device: the CPU path or the kernel."""
    if q.device.type == "cpu":
        return cpu.vertical_slash_attention(q, k, v, vertical, slash, scale, head_mask, out)
    return vertical_slash_kernel(q, k, v, vertical, slash, scale, head_mask, out, index)


@register
@dataclasses.dataclass(frozen=True)
class VerticalSlash(Pattern):
    vertical_size: int
    slash_size: int

    name = "vertical_and_slash"
    id = 1
    short = "vs"
    RATE = (0.65, 0.62)  # on its computed tiles, pointer loads at D=64, TMA at D=128 (NOTES rows 17, 27)
    INDEX = (0.034, 0.012)  # estimate + index: 2.30 ms of 67.3 (NOTES row 34) / 2.1-3.4 ms of ~245 (rows 33, 35)
    estimates_work = True
    SLOTS = (Slot("vertical_size", "vertical_size", 1), Slot("slash_size", "slash_size", 1))

    def min_sparse_len(self, fa4: bool = False) -> int:
        # coverage depends on the prompt: measured by slash budget, (100, 800) wins from 32K, (1000, 6096) from 128K
        # on the Triton kernel; on FA4 tiles (fa4: the layer runs there) (1000, 6096) from 64K: 40.1 ms with its
        # index vs FA4 dense 52.6 ms at 64K, 0.54x at 16K (H200, benchmarks/NOTES.md row 27)
        if self.slash_size <= 1024:
            return 32768
        return 65536 if fa4 else 131072

    @classmethod
    def select(cls, group: HeadGroup) -> VSSelection:
        q, k = group.q, group.k
        # CUDA: the fused Triton estimate (two launches; MINFERENCE_FUSED_ESTIMATE=0: the torch chunks) (ops/estimate.py)
        # the layer's estimate, shared with its adaptive vertical-slash heads (HeadGroup.vs_scores)
        vertical, slash = _estimate(q, k, group.values("vertical_size", 0), group.values("slash_size", 0),
                                    group.last_q, SINK_TOKENS, LOCAL_WINDOW, scale=group.scale, scores=group.vs_scores())
        # CPU runs the masked reference path: no index to build there
        return VSSelection(vertical, slash, build_index(q, k, vertical, slash) if q.device.type == "cuda" else None)

    @classmethod
    def attend_cpu(cls, group: HeadGroup, selection: VSSelection, head_mask, out) -> torch.Tensor:
        if group.qk_dtype and group.qk_dtype not in _cpu_noted:
            _cpu_noted.add(group.qk_dtype)
            _log.info("minference_compile: qk_dtype=%r applies to the CUDA kernel; the CPU path computes Q.K^T in "
                      "the input dtype", group.qk_dtype)
        return cpu.vertical_slash_attention(group.q, group.k, group.v, selection.vertical, selection.slash,
                                            group.scale, head_mask, out)

    @classmethod
    def attend_cuda(cls, group: HeadGroup, selection: VSSelection, head_mask, out) -> torch.Tensor:
        # the [hopper] extra (default at D >= 128; MINFERENCE_FA4_VS=0/1 forces): whole layers of vertical-slash heads
        # on FA4's 128-row tile lists (a superset of the block-rounded pairs: docs/DESIGN.md "Vertical-slash,
        # tiled") plus a columns pass
        on_fa4 = group.vs_on_fa4
        if on_fa4 is None:  # a group built outside sparse_prefill: the same rule
            on_fa4 = fa4.vs_layer_on_fa4(group.specs, group.q, group.k, group.qk_dtype)
        if on_fa4:
            o = fa4.vertical_slash(group.q, group.k, group.v, selection.index, group.scale)
            return o if out is None else out.copy_(o)
        return vertical_slash_kernel(group.q, group.k, group.v, selection.vertical, selection.slash, group.scale,
                                     head_mask, out, selection.index, group.qk_dtype)

    @classmethod
    def reference(cls, group: HeadGroup, selection: VSSelection) -> torch.Tensor:
        return naive.vertical_slash_ref(group.q, group.k, group.v, selection.vertical, selection.slash, group.scale)

    @classmethod
    def work_share(cls, group: HeadGroup, selection: VSSelection) -> Optional[torch.Tensor]:
        if selection.index is None:
            return None
        from ..triton_kernels.vertical_slash_index import work_share
        return work_share(selection.index, group.k.shape[2], q_len=group.q.shape[2])
