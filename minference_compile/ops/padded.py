"""``minference::sparse_prefill_masked``: sparse_prefill behind an O(S) run-time check of the mask's inputs.

The FX pass routes here the inputs transformers builds its B x S x S boolean mask from, instead of the mask:

* ``padding_mask`` [B, >= kv_len] (the model's 2D ``attention_mask``): all ones -> sparse (also for a pre-fill
  chunk, q_len < kv_len, of at least MIN_CHUNK_ROWS rows);
* ``position_ids`` [B or 1, S] (no cache: transformers then masks by positions, ``pos[j] <= pos[i]``, AND
  by packed-sequence ids ``cumsum(diff(pos) != 1)``): one sequence per row (every diff == 1) -> the mask
  is plain causal -> sparse.

Otherwise (real padding, several packed documents) it runs exact dense attention with the original
semantics, built per row chunk so the S x S mask never exists at once (ops/dense.py), and records why.
Both conditions are read with one host sync per (input tensor, version), not per layer.
"""
from __future__ import annotations

import weakref
from typing import Optional

import torch

from . import library  # noqa: F401  (registers minference::sparse_prefill)
from .crossover import MIN_CHUNK_ROWS
from .dense import dense_attention
from .layout import as_layer_out, layer_out
from .record import RECORD


@torch.library.custom_op("minference::sparse_prefill_masked", mutates_args=())
def sparse_prefill_masked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    padding_mask: Optional[torch.Tensor],
    position_ids: Optional[torch.Tensor],
    patterns: list[int],
    vertical_size: list[int],
    slash_size: list[int],
    scale: float,
    min_sparse_len: int,
    last_q: int,
    vs_max_work: float = 1.0,
    layer: int = -1,
    tp_world: int = 1,
    qk_dtype: str = "",
) -> torch.Tensor:
    B, sq, skv = q.shape[0], q.shape[2], k.shape[2]
    if padding_mask is not None and (padding_mask.dim() != 2 or padding_mask.shape[0] != B
                                     or padding_mask.shape[1] < skv):
        raise ValueError(f"padding_mask must be [B, >= S_kv], got {tuple(padding_mask.shape)} for k {tuple(k.shape)}")
    if position_ids is not None and (position_ids.dim() != 2 or position_ids.shape[0] not in (1, B)
                                     or position_ids.shape[1] != skv or sq != skv):
        raise ValueError(f"position_ids must be [B or 1, S] with q_len == kv_len, got {tuple(position_ids.shape)} "
                         f"for q {tuple(q.shape)}, k {tuple(k.shape)}")
    keep, pos = mask_inputs(padding_mask, position_ids, k, B)
    if sq > skv or (sq < skv and sq < MIN_CHUNK_ROWS):
        # decode (and short chunk tails) run dense anyway: the padding goes straight into their small
        # q_len x kv_len mask, with no host check per layer and token
        RECORD.add(layer, "dense", f"q_len {sq} < {MIN_CHUNK_ROWS} rows against kv_len {skv} (decode / short chunk "
                   "tail run dense)", sq, skv)
        return as_layer_out(q, dense_attention(q, k, v, scale, keep, contiguous=False))
    why = _irregular(padding_mask, position_ids, keep, pos)
    if why:
        RECORD.add(layer, "dense", why + ": exact dense attention with the model's mask", sq, skv)
        return as_layer_out(q, dense_attention(q, k, v, scale, keep, positions=pos, contiguous=False))
    return torch.ops.minference.sparse_prefill(
        q, k, v, patterns, vertical_size, slash_size, scale, min_sparse_len, last_q, vs_max_work, layer, tp_world,
        qk_dtype)


def mask_inputs(padding_mask, position_ids, k, batch: int):
    """(keep [B, kv_len] bool or None, positions [B, S] or None) on k's device."""
    keep = None if padding_mask is None else padding_mask[:, :k.shape[2]].to(device=k.device, dtype=torch.bool)
    pos = None if position_ids is None else position_ids.to(k.device).expand(batch, -1)
    return keep, pos


# (weakref to the input tensor, its version) -> reason ("" = regular); the inputs are shared by every layer of
# one forward, so the host sync happens once per forward, not once per layer.
_CHECKED: list = []


def _irregular(padding_mask, position_ids, keep, pos) -> str:
    key = tuple((weakref.ref(t), t._version) for t in (padding_mask, position_ids) if t is not None)
    for ref_key, why in _CHECKED:
        if len(ref_key) == len(key) and all(r() is n() and v == w for (r, v), (n, w) in zip(ref_key, key)):
            return why
    checks = []  # (condition tensor, what a False means)
    if keep is not None:
        checks.append((keep.all(), "padding in attention_mask"))
    if pos is not None:
        checks.append(((pos[:, 1:] - pos[:, :-1] == 1).all(), "several packed sequences in position_ids"))
    oks = torch.stack([c for c, _ in checks]).tolist()  # the one host sync
    why = "; ".join(w for ok, (_, w) in zip(oks, checks) if not ok)
    _CHECKED[:] = [(key, why)] + _CHECKED[:3]
    return why


@sparse_prefill_masked.register_fake
def _(q, k, v, padding_mask, position_ids, patterns, vertical_size, slash_size, scale, min_sparse_len, last_q,
      vs_max_work=1.0, layer=-1, tp_world=1, qk_dtype=""):
    return layer_out(q)
