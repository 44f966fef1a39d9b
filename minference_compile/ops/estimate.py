"""Vertical-slash index estimation from the last queries (torch ops: CPU or CUDA, no host sync)."""
import logging
import math
import os
from typing import Optional, Sequence, Union

import torch

from ..triton_kernels._torch_util import bmm_fp32_out, device_tensor

Budget = Union[int, Sequence[int], torch.Tensor]
SINK_TOKENS, LOCAL_WINDOW = 30, 100  # the seed's estimate defaults: always-kept first columns / diagonals


def _budget(size: Budget, hq: int, device) -> tuple:
    """-> (k: int, per-head budgets [Hq] long tensor or None)."""
    if isinstance(size, int):
        return size, None
    if isinstance(size, torch.Tensor):
        # the top-k width must be a host int: read it from a CPU copy of the budgets
        # (callers on the hot path pass a list; a CUDA tensor here costs one sync).
        host = size.detach().cpu().long().expand(hq)
        return int(host.max()), host.to(device)
    sizes = [int(s) for s in size]
    return max(sizes), device_tensor(sizes, device, torch.long)


def estimate_vertical_slash(q: torch.Tensor, k: torch.Tensor, vertical_size: Budget, slash_size: Budget,
                            last_q: int = 64, sink_tokens: int = SINK_TOKENS,
                            local_window: int = LOCAL_WINDOW, scale: Optional[float] = None,
                            fused: Optional[bool] = None):
    """Pick vertical columns and slash offsets per head from the attention of the last queries.

    q [B, Hq, Sq, D], k [B, Hkv, S, D] (Sq <= S: the queries are the last Sq positions; the last min(last_q, Sq)
    of them score all S keys) -> (vertical [B, Hq, min(V, S)] int32 key columns,
    slash [B, Hq, min(NS, S)] int32 diagonal offsets i - j of absolute positions). V/NS are ints or per-head [Hq]
    budgets; with per-head budgets the top-k runs at the max and each head's entries beyond its
    budget are -1. The first `sink_tokens` columns and the offsets < `local_window` are always
    ranked first. ``scale`` is the attention's softmax scale (default 1/sqrt(D)): the estimate must rank at the
    temperature the layer runs at (Gemma's query_pre_attn_scalar, any model's own ``scaling``).
    ``fused``: the scores by the Triton kernel (triton_kernels/vs_estimate.py: two launches, no [L, S] tensor)
    instead of the chunked torch ops; None = on CUDA unless MINFERENCE_FUSED_ESTIMATE=0 (`use_fused_estimate`).
    """
    vscore, sscore = estimate_scores(q, k, last_q, scale, fused)
    return top_vertical_slash(vscore, sscore, vertical_size, slash_size, sink_tokens, local_window)


def top_vertical_slash(vscore: torch.Tensor, sscore: torch.Tensor, vertical_size: Budget, slash_size: Budget,
                       sink_tokens: int = SINK_TOKENS, local_window: int = LOCAL_WINDOW):
    """The fixed-budget choice from the estimate's scores (estimate_scores, [B, Hq, S] fp32; read, not written: the
    layer's other vertical-slash patterns may share them): the first `sink_tokens` columns and the offsets
    < `local_window` first (ascending), then the top scores of the rest -> (vertical, slash) int32, -1 past each
    head's budget (see estimate_vertical_slash)."""
    Hq = vscore.shape[1]
    nv, v_budget = _budget(vertical_size, Hq, vscore.device)
    ns, s_budget = _budget(slash_size, Hq, vscore.device)
    return _pad(_forced_top(vscore, nv, sink_tokens), v_budget), _pad(_forced_top(sscore, ns, local_window), s_budget)


def _forced_top(score: torch.Tensor, n: int, forced: int) -> torch.Tensor:
    """The first `forced` positions, then the top n - forced of the rest: [..., min(n, S)] indices."""
    S = score.shape[-1]
    n = min(max(n, 0), S)
    f = min(max(forced, 0), n)
    head = torch.arange(f, device=score.device).expand(*score.shape[:-1], f)
    if n == f:
        return head
    start = min(max(forced, 0), S)  # a forced count over n still keeps the rest out of the ranking
    rest = score[..., start:].topk(n - f, dim=-1).indices + start
    return torch.cat([head, rest], -1)


def estimate_scores(q: torch.Tensor, k: torch.Tensor, last_q: int = 64, scale: Optional[float] = None,
                    fused: Optional[bool] = None):
    """(vscore, sscore) fp32 [B, Hq, S]: column and diagonal sums of the softmax of the last min(last_q, Sq) rows
    of q [B, Hq, Sq, D] against k [B, Hkv, S, D], no sink / local forcing. fused: the Triton kernels
    (triton_kernels/vs_estimate.py), else the torch chunks; None = `use_fused_estimate`, and a fused launch that
    raises (e.g. a kernel that does not compile on this card) falls back to the torch path for the process, logged."""
    auto = fused is None
    if auto:
        fused = use_fused_estimate(q, k, last_q)
    if fused:
        from ..triton_kernels.vs_estimate import vs_estimate_scores
        try:
            return vs_estimate_scores(q, k, last_q, 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
        except Exception as e:  # noqa: BLE001 (auto only: an explicit fused=True raises)
            if not auto:
                raise
            _FUSED_FAILED.append(repr(e))
            _log.warning("fused vertical-slash estimate failed (%s); the torch estimate from now on", e)
    return _torch_scores(q, k, min(last_q, q.shape[2]), scale)


_log = logging.getLogger("minference_compile")
_FUSED_FAILED = []  # reasons the fused estimate failed in this process: non-empty = torch path from then on


def use_fused_estimate(q: torch.Tensor, k: torch.Tensor, last_q: int) -> bool:
    """The default of `estimate_vertical_slash(fused=None)`: CUDA inputs the kernel takes, unless the environment
    sets MINFERENCE_FUSED_ESTIMATE=0 or it has failed here before. On by default since its H200 run (its GPU tests
    passed; index build -26% at 128K, (100, 800): benchmarks/NOTES.md row 19)."""
    if not q.is_cuda or os.environ.get("MINFERENCE_FUSED_ESTIMATE", "1") == "0" or _FUSED_FAILED:
        return False
    from ..triton_kernels.vs_estimate import fused_applies
    return fused_applies(q, k, last_q)


def _torch_scores(q: torch.Tensor, k: torch.Tensor, L: int, scale: Optional[float]):
    """The reference scores: (vscore, sscore) fp32 [B, Hq, S] by `_score_chunk` over kv-head chunks."""
    B, Hq, Sq, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G = Hq // Hkv
    vscore = q.new_empty(B, Hq, S, dtype=torch.float32)
    sscore = q.new_empty(B, Hq, S, dtype=torch.float32)
    # kv-head chunks bound the fp32 temporaries (scores + one K chunk) by _CHUNK_BYTES,
    # so the estimate never holds more than last_q x S scores per head of the chunk.
    per_kv_head = 4 * B * (2 * G * L * S + S * D)
    step = max(1, min(Hkv, _CHUNK_BYTES // max(per_kv_head, 1)))
    for h0 in range(0, Hkv, step):
        h1 = min(Hkv, h0 + step)
        _score_chunk(q[:, h0 * G:h1 * G, Sq - L:], k[:, h0:h1], vscore[:, h0 * G:h1 * G],
                     sscore[:, h0 * G:h1 * G], scale)
    return vscore, sscore


_CHUNK_BYTES = 256 << 20


def _scores(q_last: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[B, Hk, G, L, D] x [B, Hk, S, D] -> fp32 [B, Hk, G, L, S] (q_last already scaled)."""
    B, Hk, G, L, D = q_last.shape
    S = k.shape[2]
    s = bmm_fp32_out(q_last.reshape(B * Hk, G * L, D), k.reshape(B * Hk, S, D).transpose(1, 2))
    if s is not None:  # bf16/fp16 on CUDA: tensor cores with an fp32 result, and no fp32 copy of K
        return s.view(B, Hk, G, L, S)
    return torch.matmul(q_last.float(), k.float().unsqueeze(2).transpose(-1, -2))


def _score_chunk(q_last: torch.Tensor, k: torch.Tensor, vscore: torch.Tensor, sscore: torch.Tensor,
                 scale: Optional[float] = None) -> None:
    """Column sums and diagonal sums of softmax(q_last k^T) for one chunk of heads, written in place.

    q_last [B, Hc, L, D] (the last L positions of S), k [B, Hc/G, S, D], vscore/sscore [B, Hc, S].
    """
    B, Hc, L, D = q_last.shape
    Hk, S = k.shape[1], k.shape[2]
    qs = (q_last.float() * (1.0 / math.sqrt(D) if scale is None else scale)).to(q_last.dtype if q_last.is_cuda else torch.float32)
    s = _scores(qs.view(B, Hk, Hc // Hk, L, D), k)
    # only the last L columns hold keys beyond some query's position
    s[..., S - L:].masked_fill_(torch.ones(L, L, dtype=torch.bool, device=s.device).triu_(1), float("-inf"))
    p = torch.softmax(s, dim=-1).view(B, Hc, L, S)
    del s
    vscore.copy_(p.sum(2))
    # Diagonal sums without scatter or padding: row r read from column r on (row stride S + 1) lines up
    # offset pos_r - j = S - L - c in column c for every row, for the offsets 0..S-L ...
    bulk = p.as_strided((B, Hc, L, S - L + 1), (Hc * L * S, L * S, S + 1, 1)).sum(2)
    sscore[..., :S - L + 1].copy_(bulk.flip(-1))
    # ... and the last L-1 offsets (keys below row r's reach: only p[..., :L]) the same way after a pad of L
    if L > 1:
        head = torch.nn.functional.pad(p[..., :L], (L, 0)).contiguous()  # [B, Hc, L, 2L]
        tail = head.as_strided((B, Hc, L, L), (Hc * L * 2 * L, L * 2 * L, 2 * L + 1, 1)).sum(2)
        sscore[..., S - L + 1:].copy_(tail[..., 1:].flip(-1))


def _pad(idx: torch.Tensor, budget) -> torch.Tensor:
    if budget is not None:
        keep = torch.arange(idx.shape[-1], device=idx.device) < budget.view(1, -1, 1)
        idx = torch.where(keep, idx, torch.full_like(idx, -1))
    return idx.to(torch.int32).contiguous()
