"""FX pass: compute the rotary cos/sin tables once per forward instead of once per element of q and k.

HF decoders compute ``cos``/``sin`` of (position x inv_freq) once in the model and hand them to every layer.
Inductor's reuse heuristic (``StorageBox.mark_reuse``: realise a shared pointwise value only if it reads more
than ``realize_reads_threshold`` buffers or is a large expression) keeps that short chain unrealised, so each
layer's RoPE kernel recomputes ``cos`` and ``sin`` for every element of q and k: Hq x S x D transcendentals
per layer, with arguments up to S radians (libdevice's slow range reduction past ~1e5). On an H200 at 128K
(Qwen2.5-7B shape) those two kernels took 77 ms of a 3.16 s A-shape pre-fill (E21 profile), ~4x their
bandwidth floor.

Before::

    %cos   = call_method[cos](%emb)
    %mul   = call_function[operator.mul](%cos, 1.0)
    %cos_1 = call_method[to](%mul, dtype=torch.bfloat16)      # users: every layer's RoPE
After::

    %cos_1 = call_method[to](%mul, dtype=torch.bfloat16)
    %cos_m = call_function[minference.materialize.default](%cos_1)   # users: every layer's RoPE

The table is [B, S, D]: one small extra copy per forward.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import operator

import torch
import torch.fx as fx

import minference_compile.ops.materialize  # noqa: F401  (registers minference::materialize)

log = logging.getLogger("minference_compile")

_TRIG_FUNCS = {torch.cos, torch.sin, torch.ops.aten.cos.default, torch.ops.aten.sin.default}
_TRIG_METHODS = {"cos", "sin"}
# cheap single-input steps between the trig call and the fan-out (scaling, dtype casts, layout)
_CHAIN_FUNCS = {operator.mul, operator.truediv, torch.mul, torch.ops.aten.mul.Tensor, torch.ops.aten.mul.Scalar,
                torch.ops.prims.convert_element_type.default, torch.ops.aten._to_copy.default}
_CHAIN_METHODS = {"mul", "to", "type", "float", "half", "bfloat16", "contiguous"}


def _is_trig(n: fx.Node) -> bool:
    return (n.op == "call_function" and n.target in _TRIG_FUNCS) or (
        n.op == "call_method" and n.target in _TRIG_METHODS)


def _is_chain_step(n: fx.Node, prev: fx.Node) -> bool:
    if not n.args or n.args[0] is not prev:
        return False
    return (n.op == "call_function" and n.target in _CHAIN_FUNCS) or (
        n.op == "call_method" and n.target in _CHAIN_METHODS)


class MaterializeRotaryTables:
    """Pins every cos/sin chain's final value to one buffer; ``__call__(graph)`` returns how many it pinned."""

    def uuid(self) -> str:
        return hashlib.sha256(inspect.getsource(MaterializeRotaryTables).encode()).hexdigest()

    def __call__(self, graph: fx.Graph) -> int:
        target = torch.ops.minference.materialize.default
        pinned_count = 0
        for node in list(graph.nodes):
            if not _is_trig(node):
                continue
            end = node
            while len(end.users) == 1:
                (user,) = end.users
                if not _is_chain_step(user, end):
                    break
                end = user
            if any(u.op == "call_function" and u.target is target for u in end.users):
                continue  # pinned already (sin and cos of one chain, or a second run)
            if not end.users or any(u.op == "output" for u in end.users):
                continue  # a graph output is realised anyway
            with graph.inserting_after(end):
                pinned = graph.call_function(target, (end,))
            end.replace_all_uses_with(pinned, delete_user_cb=lambda u: u is not pinned)
            pinned.meta.update({k: v for k, v in end.meta.items() if k in ("val", "example_value", "stack_trace",
                                                                             "nn_module_stack", "source_fn_stack")})
            pinned_count += 1
        if pinned_count:
            log.info("minference: rotary tables: %d cos/sin value(s) computed once per forward (were recomputed "
                     "in every consumer kernel)", pinned_count)
        return pinned_count
