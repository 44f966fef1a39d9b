"""Public functions (the seed's names and argument order): validate, then call `minference::*`."""
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from . import library  # noqa: F401  (registers the ops)
from .estimate import LOCAL_WINDOW, SINK_TOKENS, estimate_vertical_slash as _estimate_per_head
from .validate import check_budget, check_index, check_index_range, check_int, check_qkv

_ops = torch.ops.minference


def vertical_slash_sparse_attention(q: Tensor, k: Tensor, v: Tensor, vertical_topk: Tensor, slash: Tensor,
                                    scale: Optional[float] = None) -> Tensor:
    """Causal vertical-slash sparse attention (block-rounded, as the seed's kernel).

    q [B, Hq, Sq, D], k/v [B, Hkv, S, D] (Hq % Hkv == 0; Sq <= S: the queries are the last Sq positions,
    row r at position i = S - Sq + r), vertical_topk [B, Hq, NV] key columns, slash [B, Hq, NS] diagonal
    offsets i - j; integer, in [0, S), duplicates ignored.
    Row i of the 64-row query block starting at m0 (blocks start at the first query row) attends key j <= i
    iff j is a vertical column or some selected offset s has m0 - s <= j < m0 - s + 64 (each offset covers
    the 64 keys its diagonal crosses inside the block). Returns [B, Hq, Sq, D] in q's dtype.
    """
    check_qkv(q, k, v)
    check_index("vertical_topk", vertical_topk, q)
    check_index("slash", slash, q)
    check_index_range(k.shape[2], vertical_topk=vertical_topk, slash=slash)
    return _ops.vertical_slash_attention(q, k, v, vertical_topk.to(torch.int32), slash.to(torch.int32), scale)


def block_sparse_attention(q: Tensor, k: Tensor, v: Tensor, topk: int, scale: Optional[float] = None) -> Tensor:
    """Causal block-sparse attention: per 64-row query block, the `topk` 64-key blocks of highest
    mean-q . mean-k score (the diagonal block always kept), token-causal inside.

    q [B, Hq, Sq, D], k/v [B, Hkv, S, D] -> [B, Hq, Sq, D] in q's dtype. Sq < S: the queries are the last Sq
    positions; key blocks are absolute, and a query block that straddles two key blocks keeps both as diagonals.
    """
    check_qkv(q, k, v)
    check_int("topk", topk)
    return _ops.block_sparse_attention(q, k, v, topk, scale)


def streaming_forward(q: Tensor, k: Tensor, v: Tensor, init_num: int, local_window_num: int,
                      scale: Optional[float] = None) -> Tensor:
    """A-shape (StreamingLLM) attention: row i attends j <= i with j < init_num or i - j < local_window_num.

    q [B, Hq, Sq, D], k/v [B, Hkv, S, D] -> [B, Hq, Sq, D] in q's dtype (Sq <= S: row r at position S - Sq + r).
    """
    check_qkv(q, k, v)
    check_int("init_num", init_num, minimum=0)  # 0: pure sliding window
    check_int("local_window_num", local_window_num)
    return _ops.streaming_attention(q, k, v, init_num, local_window_num, scale)


def estimate_vertical_slash(q: Tensor, k: Tensor, vertical_size: Union[int, Sequence[int], Tensor],
                            slash_size: Union[int, Sequence[int], Tensor], last_q: int = 64,
                            sink_tokens: int = SINK_TOKENS, local_window: int = LOCAL_WINDOW,
                            scale: Optional[float] = None):
    """Vertical columns and slash offsets per head from the softmax of the last `last_q` queries.

    q [B, Hq, Sq, D], k [B, Hkv, S, D] (Sq <= S: the last queries of a chunk score all S keys)
    -> (vertical [B, Hq, min(V, S)] int32, slash [B, Hq, min(NS, S)] int32 offsets i - j of absolute
    positions). The first `sink_tokens` columns and the
    `local_window` nearest diagonals rank first. V/NS may be per-head budgets ([Hq] list or
    tensor): top-k at the max, entries beyond a head's budget are -1. ``scale``: the softmax scale the
    attention runs at (default 1/sqrt(D)).
    """
    check_qkv(q, k, same_len=True, head_dim=False)
    check_budget("vertical_size", vertical_size, q.shape[1])
    check_budget("slash_size", slash_size, q.shape[1])
    check_int("last_q", last_q)
    check_int("sink_tokens", sink_tokens, minimum=0)
    check_int("local_window", local_window, minimum=0)
    if isinstance(vertical_size, int) and isinstance(slash_size, int):
        return _ops.estimate_vertical_slash(q, k, vertical_size, slash_size, last_q, sink_tokens, local_window, scale)
    return _estimate_per_head(q, k, vertical_size, slash_size, last_q, sink_tokens, local_window, scale=scale)
