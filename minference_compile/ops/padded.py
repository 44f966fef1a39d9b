"""``minference::sparse_prefill_masked``: sparse_prefill behind an O(S) run-time padding check.

The FX pass routes the model's 2D ``attention_mask`` here instead of the B x S x S mask transformers
would build. All ones -> ``minference::sparse_prefill`` (sparse; also for a pre-fill chunk, q_len < kv_len, of
at least MIN_CHUNK_ROWS rows). Real padding -> dense attention with
the original semantics (bottom-right causal AND ``padding_mask[b, j]``, ops/dense.py), built per row
chunk so the full S x S mask never exists at once. Rows with no attended key output 0 (DESIGN.md).
"""
from __future__ import annotations

import torch

from . import library  # noqa: F401  (registers minference::sparse_prefill)
from .crossover import MIN_CHUNK_ROWS
from .dense import dense_attention


@torch.library.custom_op("minference::sparse_prefill_masked", mutates_args=())
def sparse_prefill_masked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    padding_mask: torch.Tensor,
    patterns: list[int],
    vertical_size: list[int],
    slash_size: list[int],
    scale: float,
    min_sparse_len: int,
    last_q: int,
    vs_max_work: float = 1.0,
) -> torch.Tensor:
    if padding_mask.dim() != 2 or padding_mask.shape[0] != q.shape[0] or padding_mask.shape[1] < k.shape[-2]:
        raise ValueError(f"padding_mask must be [B, >= S_kv], got {tuple(padding_mask.shape)} for k {tuple(k.shape)}")
    if q.shape[2] > k.shape[2] or (q.shape[2] < k.shape[2] and q.shape[2] < MIN_CHUNK_ROWS):
        # decode (and short chunk tails) run dense anyway: the padding goes straight into their small
        # q_len x kv_len mask, with no host check per layer and token
        return dense_attention(q, k, v, scale, _keep(padding_mask, k))
    if bool(padding_mask[:, : k.shape[-2]].all()):  # one O(B*S) host check
        return torch.ops.minference.sparse_prefill(
            q, k, v, patterns, vertical_size, slash_size, scale, min_sparse_len, last_q, vs_max_work
        )
    return dense_attention(q, k, v, scale, _keep(padding_mask, k))


def _keep(padding_mask, k):
    return padding_mask[:, : k.shape[-2]].to(device=k.device, dtype=torch.bool)


@sparse_prefill_masked.register_fake
def _(q, k, v, padding_mask, patterns, vertical_size, slash_size, scale, min_sparse_len, last_q, vs_max_work=1.0):
    return q.new_empty(q.shape)
