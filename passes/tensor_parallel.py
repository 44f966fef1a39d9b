"""Which global attention heads an SDPA node holds under tensor parallelism (transformers ``tp_plan``).

Under ``tp_plan="auto"`` the q/k/v projections are colwise-sharded DTensors; Dynamo traces them as
``linear(x, to_local(W))`` with ``W`` a DTensor graph input, and SDPA sees this rank's heads as plain
tensors. A per-head config is indexed by *global* head, so the pass must know the slice::

    %w_local = call_method[to_local](%L_..._q_proj_parameters_weight_)   # DTensor [Hq * D, hidden], Shard(0)
    %q       = linear(%x, %w_local) -> view(B, S, -1, D) -> transpose(1, 2) -> RoPE -> SDPA
                 => rank r of W holds rows [off, off + Hq_local * D): global q heads off / D ...

The shard offset comes from the DTensor's own mesh and placements (never from user input).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Optional

import torch
import torch.fx as fx


class TensorParallelError(ValueError):
    """A tensor-parallel head split the sparse rewrite cannot honour (e.g. one that breaks a GQA group)."""


@dataclasses.dataclass(frozen=True)
class HeadShard:
    offset: int  # first global head held by this rank
    local: int  # heads held
    total: int  # heads of the whole layer
    world: int  # ranks the projection is sharded over
    rank: int  # this rank's coordinate on that mesh dimension


_LINEAR = (torch._C._nn.linear, torch.nn.functional.linear)


def _dtensor_weight(n: fx.Node):
    """The DTensor example value behind a linear's weight argument, or None."""
    if n.op == "call_method" and n.target == "to_local" and isinstance(n.args[0], fx.Node):
        n = n.args[0]
    val = n.meta.get("example_value", n.meta.get("val"))
    return val if type(val).__name__ == "DTensor" else None


def _projection(x: fx.Node, limit: int = 64) -> Optional[fx.Node]:
    """The nearest ``linear`` producing ``x`` (breadth-first over its producers, not through the linear)."""
    seen, todo = set(), collections.deque([x])
    while todo and len(seen) < limit:
        n = todo.popleft()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "call_function" and n.target in _LINEAR:
            return n
        todo.extend(a for a in n.all_input_nodes if a.op != "placeholder")
    return None


def head_shard(x: fx.Node, local_heads: int, head_dim: int) -> Optional[HeadShard]:
    """This rank's slice of global heads for the q or k input ``x`` of an SDPA node; None if not sharded."""
    lin = _projection(x)
    if lin is None or len(lin.args) < 2 or not isinstance(lin.args[1], fx.Node):
        return None
    w = _dtensor_weight(lin.args[1])
    if w is None:
        return None
    from torch.distributed.tensor import Replicate, Shard

    placements = tuple(w.placements)
    if all(isinstance(p, Replicate) for p in placements):
        return None
    if len(placements) != 1 or not isinstance(placements[0], Shard) or placements[0].dim != 0:
        raise TensorParallelError(f"projection {lin.name}: weight placements {placements} (only a colwise Shard(0) "
                                  "over one mesh dimension is understood)")
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    mesh = w.device_mesh
    local_shape, offset = compute_local_shape_and_global_offset(w.shape, mesh, placements)
    rows, total_rows = int(local_shape[0]), int(w.shape[0])
    if rows != local_heads * head_dim or offset[0] % head_dim or total_rows % head_dim:
        raise TensorParallelError(f"projection {lin.name}: rank holds rows [{offset[0]}, {offset[0] + rows}) of "
                                  f"{total_rows}, not whole heads of {head_dim} ({local_heads} local heads)")
    coord = mesh.get_coordinate()
    return HeadShard(offset[0] // head_dim, local_heads, total_rows // head_dim, mesh.size(0),
                     int(coord[0]) if coord else 0)


def check_groups(q: HeadShard, kv: Optional[HeadShard]) -> None:
    """GQA: every local q head's kv head must be local, in the same order (kv heads split with their groups)."""
    if kv is None:
        raise TensorParallelError(f"q heads are sharded ({q.offset}..{q.offset + q.local - 1} of {q.total}) but "
                                  "k/v are not: the q-head -> kv-head mapping would change")
    g = q.total // kv.total if kv.total and q.total % kv.total == 0 else 0
    if not g or q.offset != kv.offset * g or q.local != kv.local * g:
        raise TensorParallelError(
            f"tensor-parallel split breaks GQA groups: q heads {q.offset}..{q.offset + q.local - 1} of {q.total}, "
            f"kv heads {kv.offset}..{kv.offset + kv.local - 1} of {kv.total} (each rank needs whole groups of "
            f"{g or '?'} q heads per kv head)")
