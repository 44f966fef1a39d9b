"""torch.library custom ops `minference::*`: CPU -> ops/cpu.py, CUDA -> triton_kernels/*; ``sparse_prefill`` runs
each head's pattern through the registry (minference_compile/patterns/: index build, CPU path or kernel).

The ops do not validate (the public functions in api.py do). Fake and real outputs have the same strides, so
Inductor's assumed layout matches what the kernels write: contiguous for the standalone kernel ops, the layer
layout of ops/layout.py ([B,Sq,Hq,D] storage) for ``sparse_prefill``.
Triton modules are imported inside the CUDA paths only.
"""
import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..patterns import base as registry
from ..patterns.a_shape import streaming as _streaming
from ..patterns.block_sparse import block_sparse as _block_sparse_fwd
from ..patterns.vertical_slash import vertical_slash as _vertical_slash
from ..triton_kernels._torch_util import device_tensor
from . import fa4
from .decide import length_decision
from .dense import dense_attention
from .record import RECORD
from .tp import layer_mean
from .estimate import estimate_vertical_slash as _estimate
from .layout import as_layer_out, layer_out
from .validate import check_head_dim


def _scale(q: Tensor, scale: Optional[float]) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


def _empty(q: Tensor) -> Tensor:
    return q.new_empty(q.shape)


def _block_sparse(q, k, v, topk, scale, head_mask=None, out=None):
    from ..triton_kernels.block_sparse_index import block_sparse_index
    return _block_sparse_fwd(q, k, v, block_sparse_index(q, k, topk), scale, head_mask, out)


def _per_head(value: int, q: Tensor) -> Tensor:
    return torch.full((q.shape[1],), value, dtype=torch.int32, device=q.device)


# ---- ops ----

@torch.library.custom_op("minference::vertical_slash_attention", mutates_args=(), schema=(
    "(Tensor q, Tensor k, Tensor v, Tensor vertical, Tensor slash, float? scale=None) -> Tensor"))
def vertical_slash_attention(q: Tensor, k: Tensor, v: Tensor, vertical: Tensor, slash: Tensor,
                             scale: Optional[float] = None) -> Tensor:
    return _vertical_slash(q, k, v, vertical, slash, _scale(q, scale), out=_empty(q))


@torch.library.custom_op("minference::block_sparse_attention", mutates_args=(), schema=(
    "(Tensor q, Tensor k, Tensor v, int topk, float? scale=None) -> Tensor"))
def block_sparse_attention(q: Tensor, k: Tensor, v: Tensor, topk: int,
                           scale: Optional[float] = None) -> Tensor:
    return _block_sparse(q, k, v, topk, _scale(q, scale), out=_empty(q))


@torch.library.custom_op("minference::streaming_attention", mutates_args=(), schema=(
    "(Tensor q, Tensor k, Tensor v, int init_num, int local_window_num, float? scale=None) -> Tensor"))
def streaming_attention(q: Tensor, k: Tensor, v: Tensor, init_num: int, local_window_num: int,
                        scale: Optional[float] = None) -> Tensor:
    return _streaming(q, k, v, _per_head(init_num, q), _per_head(local_window_num, q), _scale(q, scale),
                      out=_empty(q))


@torch.library.custom_op("minference::estimate_vertical_slash", mutates_args=(), schema=(
    "(Tensor q, Tensor k, int vertical_size, int slash_size, int last_q, int sink_tokens, int local_window,"
    " float? scale=None) -> (Tensor, Tensor)"))
def estimate_vertical_slash(q: Tensor, k: Tensor, vertical_size: int, slash_size: int, last_q: int,
                            sink_tokens: int, local_window: int, scale: Optional[float] = None) -> Tuple[Tensor, Tensor]:
    return _estimate(q, k, vertical_size, slash_size, last_q, sink_tokens, local_window, scale=scale)


@torch.library.custom_op("minference::sparse_prefill", mutates_args=(), schema=(
    "(Tensor q, Tensor k, Tensor v, int[] patterns, int[] vertical_size, int[] slash_size, float scale,"
    " int min_sparse_len, int last_q, float vs_max_work=1.0, int layer=-1, int tp_world=1, str qk_dtype=\"\")"
    " -> Tensor"))
def sparse_prefill(q: Tensor, k: Tensor, v: Tensor, patterns: List[int], vertical_size: List[int],
                   slash_size: List[int], scale: float, min_sparse_len: int, last_q: int,
                   vs_max_work: float = 1.0, layer: int = -1, tp_world: int = 1, qk_dtype: str = "") -> Tensor:
    """One attention layer with per-head patterns. q [B, Hq, Sq, D] are the last Sq of the S positions of
    k/v [B, Hkv, S, D] (Sq < S: a pre-fill chunk over a cached prefix). ``layer`` only labels the run-time
    record; ``tp_world`` > 1: this rank holds a tensor-parallel slice of the layer's heads, and the
    ``vs_max_work`` check averages over every rank's heads (one all-reduce) so all ranks decide alike.
    ``qk_dtype`` "fp8" / "int8": the vertical-slash heads' Q.K^T on block-scaled operands (CUDA; config.qk_dtype)."""
    Sq, S = q.shape[2], k.shape[2]
    if qk_dtype not in ("", "fp8", "int8"):
        raise ValueError(f"qk_dtype must be '' (the input dtype), 'fp8' or 'int8', got {qk_dtype!r}")
    if not len(patterns) == len(vertical_size) == len(slash_size) == q.shape[1]:
        raise ValueError(f"patterns/vertical_size/slash_size need one entry per q head ({q.shape[1]}), got "
                         f"{len(patterns)}/{len(vertical_size)}/{len(slash_size)}")
    # per head its spec (minference_compile/patterns/): an unknown id or a bad budget is a clear error here
    specs = [registry.unpack(p, vs, ss) for p, vs, ss in zip(patterns, vertical_size, slash_size)]
    vs_on_fa4 = fa4.vs_layer_on_fa4(specs, q, k, qk_dtype)  # the route decides the crossover and the kernel
    sparse, reason = length_decision(patterns, vertical_size, slash_size, Sq, S, min_sparse_len, q.device.type,
                                     fa4=vs_on_fa4)
    if not sparse:
        n0 = _fa4_calls()
        out = as_layer_out(q, dense_attention(q, k, v, scale, contiguous=False))
        RECORD.add(layer, "dense", reason + _on_fa4(n0), Sq, S)
        return out
    check_head_dim(q.shape[3])  # same rule on every device; the FX pass checks it before rewriting
    present = sorted(set(patterns))
    masks = {}

    def heads(p: int) -> Optional[Tensor]:
        # one pattern in the layer: no mask (the kernels compile without it); else one device copy per pattern
        if len(present) == 1:
            return None
        if p not in masks:
            masks[p] = device_tensor([x == p for x in patterns], q.device, torch.bool)
        return masks[p]

    shared = {}  # what the layer's patterns compute alike (the vertical-slash estimate, the mean-query index), once
    groups = {p: registry.HeadGroup(q, k, v, scale, last_q, tuple(sp if x == p else None
                                                                   for x, sp in zip(patterns, specs)), qk_dtype,
                                    vs_on_fa4, shared, tuple(specs))
              for p in present}
    # patterns with a work estimate (vertical-slash) select first: a too-dense estimate can send the whole layer
    # to cuDNN (CUDA; CPU runs the masked reference path: no speed to protect there)
    selections = {p: registry.by_id(p).select(groups[p]) for p in present if registry.by_id(p).estimates_work}
    sparse_heads = [p for p in present if p != 0]  # dense heads (id 0) cost what they cost
    if q.device.type == "cuda" and vs_max_work < 1.0 and sparse_heads and all(p in selections for p in sparse_heads):
        total, n = 0, 0
        for p in sparse_heads:
            share = registry.by_id(p).work_share(groups[p], selections[p])
            if heads(p) is not None:
                share = share * heads(p)
            total = total + share.sum()
            n += q.shape[0] * sum(x == p for x in patterns)
        work = layer_mean(total, n, tp_world)  # the one host sync: mean over the layer's heads on every TP rank
        if work > vs_max_work:
            n0 = _fa4_calls()
            out = as_layer_out(q, dense_attention(q, k, v, scale, contiguous=False))
            RECORD.add(layer, "dense", f"vs_max_work: estimated index computes {work:.2f} of the causal "
                       f"pairs > {vs_max_work:.2f}" + _on_fa4(n0), Sq, S)
            return out
    n0 = _fa4_calls()
    # one pattern: its kernel allocates in q's layout (FA4: returns its own output), so no copy after it; several
    # write their heads into one buffer (allocated after the check above: a layer sent to dense never holds it)
    out = None if len(present) == 1 else layer_out(q)
    for p in present:  # each pattern's heads in one launch (index build + kernel, or the CPU path)
        cls = registry.by_id(p)
        sel = selections.pop(p) if p in selections else cls.select(groups[p])
        o = cls.attend(groups[p], sel, heads(p), out)
    out = as_layer_out(q, o if out is None else out)
    RECORD.add(layer, "sparse", reason + _on_fa4(n0), Sq, S)
    return out


def _fa4_calls() -> int:
    return sum(fa4.CALLS.values())


def _on_fa4(before: int) -> str:
    # the run-time record names the kernel when the [hopper] extra ran (part of) the layer
    return " [FlashAttention-4]" if _fa4_calls() != before else ""


@vertical_slash_attention.register_fake
@block_sparse_attention.register_fake
@streaming_attention.register_fake
def _attention_fake(q, k, v, *args, **kwargs) -> Tensor:
    return _empty(q)


@sparse_prefill.register_fake
def _layer_fake(q, k, v, *args, **kwargs) -> Tensor:
    return layer_out(q)


@estimate_vertical_slash.register_fake
def _estimate_fake(q, k, vertical_size, slash_size, last_q, sink_tokens, local_window, scale=None):
    B, H = q.shape[:2]
    S = k.shape[2]
    nv = torch.sym_min(max(vertical_size, 0), S)
    ns = torch.sym_min(max(slash_size, 0), S)
    return q.new_empty((B, H, nv), dtype=torch.int32), q.new_empty((B, H, ns), dtype=torch.int32)
