"""torch.library custom ops `minference::*`: CPU -> ops/cpu.py, CUDA -> triton_kernels/*.

The ops do not validate (the public functions in api.py do). Outputs are always contiguous
(fake and real alike), so Inductor's assumed layout matches what the kernels write.
Triton modules are imported inside the CUDA paths only.
"""
import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..triton_kernels._torch_util import device_tensor
from . import cpu
from .adaptive import BS_ADAPTIVE, VS_ADAPTIVE
from .crossover import BLOCK_SPARSE, DENSE, STREAM_LLM, VERTICAL_SLASH
from .decide import length_decision
from .dense import dense_attention
from .record import RECORD
from .tp import layer_mean
from .estimate import LOCAL_WINDOW, SINK_TOKENS, estimate_vertical_slash as _estimate
from .validate import check_head_dim



def _scale(q: Tensor, scale: Optional[float]) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


def _empty(q: Tensor) -> Tensor:
    return q.new_empty(q.shape)


# ---- device dispatch of the pattern kernels (head_mask / out: kernel-level conventions) ----

def _vertical_slash(q, k, v, vertical, slash, scale, head_mask=None, out=None, index=None):
    if q.device.type == "cpu":
        return cpu.vertical_slash_attention(q, k, v, vertical, slash, scale, head_mask, out)
    from ..triton_kernels.vertical_slash import vertical_slash_attention_fwd
    from ..triton_kernels.vertical_slash_index import build_vertical_slash_index, pair_for
    if index is None:
        index = build_vertical_slash_index(vertical, slash, k.shape[2], pair=pair_for(q.shape[-1]), q_len=q.shape[2])
    return vertical_slash_attention_fwd(q, k, v, index, scale, head_mask=head_mask, out=out)


def _block_sparse(q, k, v, topk, scale, head_mask=None, out=None):
    from ..triton_kernels.block_sparse_index import block_sparse_index
    block_index = block_sparse_index(q, k, topk)
    if q.device.type == "cpu":
        return cpu.block_sparse_attention(q, k, v, block_index, scale, head_mask, out)
    from ..triton_kernels.block_sparse import block_sparse_attention_fwd
    return block_sparse_attention_fwd(q, k, v, block_index, scale, head_mask=head_mask, out=out, compact=True)


def _streaming(q, k, v, init_num: Tensor, local_window: Tensor, scale, head_mask=None, out=None):
    if q.device.type == "cpu":
        return cpu.streaming_attention(q, k, v, init_num, local_window, scale, head_mask, out)
    from ..triton_kernels.streaming import streaming_attention_fwd
    return streaming_attention_fwd(q, k, v, init_num, local_window, scale, head_mask=head_mask, out=out)


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
    " int min_sparse_len, int last_q, float vs_max_work=1.0, int layer=-1, int tp_world=1) -> Tensor"))
def sparse_prefill(q: Tensor, k: Tensor, v: Tensor, patterns: List[int], vertical_size: List[int],
                   slash_size: List[int], scale: float, min_sparse_len: int, last_q: int,
                   vs_max_work: float = 1.0, layer: int = -1, tp_world: int = 1) -> Tensor:
    """One attention layer with per-head patterns. q [B, Hq, Sq, D] are the last Sq of the S positions of
    k/v [B, Hkv, S, D] (Sq < S: a pre-fill chunk over a cached prefix). ``layer`` only labels the run-time
    record; ``tp_world`` > 1: this rank holds a tensor-parallel slice of the layer's heads, and the
    ``vs_max_work`` check averages over every rank's heads (one all-reduce) so all ranks decide alike."""
    Sq, S = q.shape[2], k.shape[2]
    if not len(patterns) == len(vertical_size) == len(slash_size) == q.shape[1]:
        raise ValueError(f"patterns/vertical_size/slash_size need one entry per q head ({q.shape[1]}), got "
                         f"{len(patterns)}/{len(vertical_size)}/{len(slash_size)}")
    if not set(patterns) <= {DENSE, VERTICAL_SLASH, STREAM_LLM, BLOCK_SPARSE, VS_ADAPTIVE, BS_ADAPTIVE}:
        raise ValueError(f"unknown pattern id in {list(patterns)} (0 dense, 1 vertical_and_slash, "
                         "2 stream_llm, 3 block_sparse, 4 vertical_and_slash_adaptive, 5 block_sparse_adaptive)")
    sparse, reason = length_decision(patterns, vertical_size, slash_size, Sq, S, min_sparse_len, q.device.type)
    if not sparse:
        RECORD.add(layer, "dense", reason, Sq, S)
        return dense_attention(q, k, v, scale)
    check_head_dim(q.shape[3])  # same rule on every device; the FX pass checks it before rewriting
    present = set(patterns)
    masks = {}

    def heads(p: int) -> Optional[Tensor]:
        # one pattern in the layer: no mask (the kernels compile without it); else one device copy per pattern
        if present == {p}:
            return None
        if p not in masks:
            masks[p] = device_tensor([x == p for x in patterns], q.device, torch.bool)
        return masks[p]

    def budget(p: int, fill: int) -> List[int]:
        return [s if x == p else fill for x, s in zip(patterns, vertical_size)]

    vs_index = None
    if VERTICAL_SLASH in present:  # first: a too-dense estimate can send the whole layer to cuDNN
        slash_budget = [s if x == VERTICAL_SLASH else 0 for x, s in zip(patterns, slash_size)]
        vertical, slash = _estimate(q, k, budget(VERTICAL_SLASH, 0), slash_budget, last_q, SINK_TOKENS,
                                    LOCAL_WINDOW, scale=scale)
        if q.device.type == "cuda":  # CPU runs the masked reference path: no speed to protect there
            from ..triton_kernels.vertical_slash_index import build_vertical_slash_index, pair_for, work_share
            vs_index = build_vertical_slash_index(vertical, slash, S, pair=pair_for(q.shape[-1]), q_len=Sq)
            if vs_max_work < 1.0 and present <= {VERTICAL_SLASH, DENSE}:
                # mean over the VS heads (the others' budgets are 0), over all tensor-parallel ranks
                share = work_share(vs_index, S, q_len=Sq)
                vs_heads = heads(VERTICAL_SLASH)
                if vs_heads is not None:
                    share = share * vs_heads
                n_vs = q.shape[0] * sum(p == VERTICAL_SLASH for p in patterns)
                work = layer_mean(share.sum(), n_vs, tp_world)  # the one host sync
                if work > vs_max_work:
                    RECORD.add(layer, "dense", f"vs_max_work: estimated index computes {work:.2f} of the causal "
                               f"pairs > {vs_max_work:.2f}", Sq, S)
                    return dense_attention(q, k, v, scale)
    RECORD.add(layer, "sparse", reason, Sq, S)
    out = _empty(q)  # after the check above: a layer sent to dense never holds this buffer
    if DENSE in present:
        if q.device.type == "cpu":
            cpu.causal_attention(q, k, v, scale, heads(DENSE), out)
        else:  # streaming with init_num >= S is dense causal attention
            whole = _per_head(S, q)
            _streaming(q, k, v, whole, whole, scale, heads(DENSE), out)
    if VERTICAL_SLASH in present:
        _vertical_slash(q, k, v, vertical, slash, scale, heads(VERTICAL_SLASH), out, vs_index)
    if STREAM_LLM in present:
        init = device_tensor(vertical_size, q.device)
        local = device_tensor(slash_size, q.device)
        _streaming(q, k, v, init, local, scale, heads(STREAM_LLM), out)
    if BLOCK_SPARSE in present:
        topks = {s for x, s in zip(patterns, vertical_size) if x == BLOCK_SPARSE}
        topk = topks.pop() if len(topks) == 1 else budget(BLOCK_SPARSE, 1)  # a list: its max needs no sync
        _block_sparse(q, k, v, topk, scale, heads(BLOCK_SPARSE), out)
    if present & {VS_ADAPTIVE, BS_ADAPTIVE}:
        _adaptive(q, k, v, patterns, vertical_size, slash_size, scale, last_q, heads, out)
    return out


def _adaptive(q, k, v, patterns, vertical_size, slash_size, scale, last_q, heads, out) -> None:
    """Heads of patterns 4/5 (ops/adaptive.py): caps in vertical_size (and slash_size), thresholds packed in
    slash_size; other heads get cap 0 (they select nothing and are not computed)."""
    from .adaptive import adaptive_block_sparse_index, adaptive_vertical_slash, unpack_threshold
    slots = [unpack_threshold(s) for s in slash_size]
    for p in (VS_ADAPTIVE, BS_ADAPTIVE):
        if p not in patterns:
            continue
        cap_v = [vv if x == p else 0 for x, vv in zip(patterns, vertical_size)]
        cap_s = [c if x == p else 0 for x, (c, _) in zip(patterns, slots)]
        thr = [t for _, t in slots]
        if p == VS_ADAPTIVE:
            vertical, slash = adaptive_vertical_slash(q, k, cap_v, cap_s, thr, last_q)
            _vertical_slash(q, k, v, vertical, slash, scale, heads(p), out)
        else:
            index = adaptive_block_sparse_index(q, k, cap_v, thr)
            if q.device.type == "cpu":
                cpu.block_sparse_attention(q, k, v, index, scale, heads(p), out)
            else:
                from ..triton_kernels.block_sparse import block_sparse_attention_fwd
                block_sparse_attention_fwd(q, k, v, index, scale, head_mask=heads(p), out=out, compact=True)


@vertical_slash_attention.register_fake
@block_sparse_attention.register_fake
@streaming_attention.register_fake
@sparse_prefill.register_fake
def _attention_fake(q, k, v, *args, **kwargs) -> Tensor:
    return _empty(q)


@estimate_vertical_slash.register_fake
def _estimate_fake(q, k, vertical_size, slash_size, last_q, sink_tokens, local_window, scale=None):
    B, H = q.shape[:2]
    S = k.shape[2]
    nv = torch.sym_min(max(vertical_size, 0), S)
    ns = torch.sym_min(max(slash_size, 0), S)
    return q.new_empty((B, H, nv), dtype=torch.int32), q.new_empty((B, H, ns), dtype=torch.int32)
