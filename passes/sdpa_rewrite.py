"""FX pass: rewrite causal SDPA calls of a Dynamo graph into ``minference::sparse_prefill``.

Form 1 (transformers 5.24, no attention_mask), GQA K/V un-repeated::

    %attn = call_function[torch._C._nn.scaled_dot_product_attention](
                %q, %keys, %values, attn_mask=None, is_causal=True, enable_gqa=True, scale=0.25)
  ->
    %attn = call_function[minference.sparse_prefill.default](
                %q, %keys, %values, [1, 1, 2, 1], [1000, ...], [6096, ...], 0.25, -1, 64, 0.55)
                # patterns, vertical / slash budgets, scale, min_sparse_len (-1: auto), last_q, vs_max_work

Form 2 (transformers 5.17; 5.24 with an attention_mask): K/V repeated, boolean mask built from aranges::

    %le    = call_function[operator.le](%kv_indices, %q_indices)
    %pad   = call_function[operator.getitem](%attention_mask_bool, (%batch_indices, %kv_indices))
    %mask  = call_method[expand](%result_2, 1, -1, S, S)
    %k_rep = call_method[reshape](call_method[expand](%keys[:, :, None], B, Hkv, n_rep, S, D), B, Hq, S, D)
    %attn  = call_function[torch._C._nn.scaled_dot_product_attention](%q, %k_rep, %v_rep, attn_mask=%mask, is_causal=False)
  ->
    %attn  = call_function[minference.sparse_prefill_masked.default](
                 %q, %keys, %values, %l_kwargs_attention_mask_, [...], [...], [...], 0.25, -1, 64, 0.55)
    (the mask and repeat_kv nodes are now dead and removed: no S x S tensor is built)

Every SDPA node gets ``node.meta["minference"]`` (:class:`SDPAMatch`): rewritten, or dense + reason.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import math
import operator
import re
import sys
from typing import Optional

import torch
import torch.fx as fx
import torch.nn.functional as F

from minference_compile.ops import fa4, head_dim_supported  # also registers minference::sparse_prefill
import minference_compile.ops.padded  # noqa: F401  (registers minference::sparse_prefill_masked)
import minference_compile.ops.local  # noqa: F401  (registers minference::local_attention)
from minference_compile.patterns import AShape, Dense, from_head_entry, pack_layer
from minference_compile.config import ConfigError, ConfigLike, MInferenceConfig, as_config
from minference_compile.ops.decide import resolve_min_sparse_len

from .causal_mask import known_eq, prove_causal_mask, shape_of
from .tensor_parallel import check_groups, head_shard

try:
    from torch._inductor.custom_graph_pass import CustomGraphPass as _Base
except ImportError:  # pragma: no cover
    _Base = object

log = logging.getLogger("minference_compile")

SDPA_TARGETS = (torch._C._nn.scaled_dot_product_attention, F.scaled_dot_product_attention)
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_SDPA_DEFAULTS = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}


@dataclasses.dataclass(frozen=True)
class SDPAMatch:
    """What the pass decided for one SDPA node (``node.meta["minference"]``).

    ``rewritten`` says the node now calls our op; what that op *runs* at a given length is decided at run
    time (``min_sparse_len``, ``vs_max_work``, padding, packed sequences): ``at_length`` predicts the
    length rule, ``minference_compile.runtime_stats()`` records what ran.
    """

    layer: int
    layer_source: str  # "nn_module_stack" or "order" (no module path found)
    module: str
    q_heads: Optional[int]  # heads this node holds (this rank's, under tensor parallelism)
    kv_heads: Optional[int]
    patterns: tuple  # per q-head pattern names (of the heads this node holds)
    vertical_size: tuple
    slash_size: tuple
    config_source: Optional[str]
    rewritten: bool
    reason: str  # form rewritten ("is_causal", "causal mask", "causal+padding mask", ...) or why dense
    node: str = ""
    op: str = ""  # the minference op the node now calls
    min_sparse_len: int = -1  # as passed to the op (-1: auto, resolved per device at run time)
    device: str = ""  # device type of the traced tensors
    window: int = 0  # sliding window (local_attention) or 0
    tp: str = ""  # tensor parallel: "rank r/w: q heads a-b of H" or ""
    qk_dtype: str = ""  # "fp8" / "int8": the VS heads' Q.K^T operands (config.qk_dtype), "" the input dtype
    head_dim: int = 0  # 0: unknown

    @property
    def specs(self) -> tuple:
        """Per q head: the pattern spec (minference_compile/patterns/) the op's int lists hold."""
        return tuple(from_head_entry(e) for e in zip(self.patterns, self.vertical_size, self.slash_size))

    def at_length(self, length: int, device: Optional[str] = None) -> str:
        """What this node runs for a prompt of ``length`` tokens on ``device`` (default: the traced one),
        before the data-dependent checks (vs_max_work, padding, packed sequences), which are named."""
        if not self.rewritten:
            return "dense: " + self.reason
        dev = device or self.device or "cpu"
        from minference_compile.ops.decide import length_decision

        if self.window:  # the rule minference::local_attention applies (the same length rule as sparse_prefill)
            if length <= self.window:
                return f"dense: sliding window {self.window} >= length"
            sparse, why = length_decision(*pack_layer([AShape(0, self.window)]), length, length, self.min_sparse_len,
                                          dev)
            return f"sparse: A-shape 0 + {self.window} (exact sliding window)" if sparse else "dense: " + why
        on_fa4 = dev == "cuda" and fa4.vs_layer_here(self.patterns, self.head_dim, self.qk_dtype, self.slash_size,
                                                     length)
        sparse, why = length_decision(*pack_layer(self.specs), length, length, self.min_sparse_len, dev, fa4=on_fa4)
        # the [hopper] path, where this machine has it and would take it (ops/fa4.kernel_note)
        fa4_note = (fa4.kernel_note(self.patterns, self.head_dim, sparse, self.qk_dtype, self.slash_size, length)
                    if dev == "cuda" else "")
        if not sparse:
            return "dense: " + why + fa4_note
        checks = []
        if dev == "cuda" and any(s.estimates_work for s in self.specs):
            checks.append("vs_max_work on the estimate")
        if "padding" in self.reason:
            checks.append("padding")
        if "position" in self.reason:
            checks.append("one sequence per row")
        qk = f", Q.K^T in {self.qk_dtype} (CUDA)" if self.qk_dtype and any(s.estimates_work for s in self.specs) else ""
        return "sparse: " + why + qk + fa4_note + (f" (run-time check: {', '.join(checks)})" if checks else "")


_PATH_PREFIX = re.compile(r"^L(\[[^\]]*\])+")  # L['self'] / L['args'][0]
_INDEX = re.compile(r"(?:\.|\[)(\d+)\]?(?=\.|\[|$)")


def layer_from_stack(node: fx.Node) -> tuple[Optional[int], str]:
    """Innermost numbered module on the stack: ``model.layers.3.self_attn`` / ``L['self'].model.layers[3]`` -> 3."""
    stack = node.meta.get("nn_module_stack") or {}
    for key, val in reversed(list(stack.items())):
        path = val[0] if isinstance(val, tuple) else str(val)
        for text in (_PATH_PREFIX.sub("", str(path)), str(key)):
            found = _INDEX.findall(text) or re.findall(r"_(\d+)(?:_|$)", text)
            if found:
                return int(found[-1]), str(path)
    return None, ""


def sdpa_args(node: fx.Node) -> dict:
    out = dict(_SDPA_DEFAULTS)
    out.update(zip(_SDPA_ARGS, node.args))
    out.update(node.kwargs)
    return out


def unrepeat_kv(n: fx.Node) -> fx.Node:
    """``x[:, :, None].expand(B, Hkv, r, S, D).reshape(B, Hkv*r, S, D)`` (repeat_kv) -> ``x``; else ``n``."""
    if not (n.op == "call_method" and n.target in ("reshape", "view")) or not isinstance(n.args[0], fx.Node):
        return n
    ex = n.args[0]
    if not (ex.op == "call_method" and ex.target == "expand" and isinstance(ex.args[0], fx.Node)):
        return n
    gi = ex.args[0]
    full = slice(None)
    if not (gi.op == "call_function" and gi.target is operator.getitem and isinstance(gi.args[1], tuple)):
        return n
    idx = gi.args[1]
    if not (len(idx) >= 3 and idx[0] == full and idx[1] == full and idx[2] is None and all(i == full for i in idx[3:])):
        return n
    src = gi.args[0]
    s_src, s_ex, s_out = shape_of(src), shape_of(ex), shape_of(n)
    if s_src is None or s_ex is None or s_out is None or len(s_src) != 4 or len(s_ex) != 5:
        return n
    same = all(known_eq(a, b) for a, b in zip((s_src[0], s_src[1], s_src[2], s_src[3]), (s_ex[0], s_ex[1], s_ex[3], s_ex[4])))
    if same and known_eq(s_out[1], s_src[1] * s_ex[2]) and known_eq(s_out[2], s_src[2]) and known_eq(s_out[3], s_src[3]):
        return src
    return n


def _producers(n: fx.Node, stop: fx.Node) -> list:
    """The nodes from ``n`` back to ``stop`` along first arguments (the repeat_kv chain ``unrepeat_kv`` skipped)."""
    out = []
    while n is not stop and isinstance(n, fx.Node) and n.args and isinstance(n.args[0], fx.Node):
        out.append(n)
        n = n.args[0]
    return out


def _erase_unused(candidates: list) -> None:
    """Erase the candidates left without users, consumers first.

    Never ``graph.eliminate_dead_code()``: a Dynamo graph holds side effects FX sees as dead, e.g. the
    tensor-parallel ``copy_(out, wait_tensor(all_reduce(out)))`` whose result nobody reads; removing it
    dropped o_proj's all-reduce under ``tp_plan`` (issue 13: rel err 0.95).
    """
    pending = {n: None for n in candidates}
    changed = True
    while changed:
        changed = False
        for n in list(pending):
            if n.graph is not None and not n.users and n.op != "placeholder" and _erasable(n):
                n.graph.erase_node(n)
                del pending[n]
                changed = True


def _erasable(n: fx.Node) -> bool:
    """Only value-producing nodes: no in-place methods, mutating ops or FX's known side effects.
    (Decided here rather than by ``Node.is_impure``, whose rules differ between torch releases.)"""
    t = n.target
    if n.op == "call_method":
        return not str(t).endswith("_")
    if n.op != "call_function" or t in fx.node._side_effectful_functions:
        return False
    if isinstance(t, torch._ops.OpOverload):
        return not t._schema.is_mutable
    name = getattr(t, "__name__", "")
    if getattr(t, "__module__", None) in ("_operator", "operator"):  # and_/or_ are pure; iand/iadd/setitem are not
        inplace = name.startswith("i") and (hasattr(operator, name[1:]) or hasattr(operator, name[1:] + "_"))
        return t is not operator.setitem and t is not operator.delitem and not inplace
    return not name.endswith("_")


def _source_text() -> str:
    # the ops' fake impls are in the key too: Inductor's cached code asserts the output strides they gave
    mods = ("minference_compile.config", "minference_compile.passes.causal_mask",
            "minference_compile.passes.tensor_parallel", "minference_compile.ops.layout",
            "minference_compile.ops.library", "minference_compile.ops.padded", "minference_compile.ops.local", __name__)
    return "".join(inspect.getsource(sys.modules[m]) for m in mods if m in sys.modules)


class MInferenceSDPAPass(_Base):
    """Rewrites every provably causal SDPA node; ``__call__(graph)`` mutates in place and returns matches."""

    def __init__(self, config: ConfigLike = None):
        self.config: MInferenceConfig = as_config(config)
        self._heads_checked: set = set()
        self._dead_candidates: list = []  # producers of rewritten SDPA inputs that may now be unused

    def uuid(self) -> str:
        return hashlib.sha256((_source_text() + self.config.fingerprint()).encode()).hexdigest()

    def __call__(self, graph: fx.Graph) -> list:
        matches = []
        order = 0
        for node in list(graph.nodes):
            if node.op == "call_function" and node.target in SDPA_TARGETS:
                matches.append(self._handle(graph, node, order))
                order += 1
        _erase_unused(self._dead_candidates)  # mask aranges/compares and repeat_kv of rewritten layers
        self._dead_candidates = []
        n_rw = sum(m.rewritten for m in matches)
        log.info("minference: %d SDPA nodes, %d rewritten, %d dense", len(matches), n_rw, len(matches) - n_rw)
        for m in matches:
            log.debug("minference: %s layer %d: %s (%s)", m.node, m.layer, "sparse" if m.rewritten else "dense", m.reason)
        return matches

    def _handle(self, graph: fx.Graph, node: fx.Node, order: int) -> SDPAMatch:
        layer, module = layer_from_stack(node)
        layer_source = "nn_module_stack"
        if layer is None:
            layer, layer_source = order, "order"
        a = sdpa_args(node)
        q, k, v = a["query"], a["key"], a["value"]
        qs = shape_of(q)
        k0, v0 = unrepeat_kv(k), unrepeat_kv(v)
        ks = shape_of(k0)
        hq = int(qs[1]) if qs is not None and not isinstance(qs[1], torch.SymInt) else None
        hkv = int(ks[1]) if ks is not None and not isinstance(ks[1], torch.SymInt) else None
        d = qs[-1] if qs is not None else None
        qval = q.meta.get("example_value", q.meta.get("val"))
        device = getattr(getattr(qval, "device", None), "type", "") or ""
        shard, tp = None, ""
        if hq and hkv and isinstance(d, int):
            shard = head_shard(q, hq, d)
            if shard is not None:
                check_groups(shard, head_shard(k0, hkv, d))
                tp = (f"rank {shard.rank}/{shard.world}: q heads {shard.offset}-{shard.offset + hq - 1} "
                      f"of {shard.total}")
        total = shard.total if shard else hq
        self._check_config(layer, total)
        specs = ()  # per q head of this rank: its pattern spec (minference_compile/patterns/)
        if hq:
            specs = self.config.layer_specs(layer, total)[shard.offset:shard.offset + hq] if shard else \
                self.config.layer_specs(layer, hq)
        ids, vs, ss = pack_layer(specs)  # the op's int lists
        base = dict(
            layer=layer, layer_source=layer_source, module=module, q_heads=hq, kv_heads=hkv,
            patterns=tuple(s.name for s in specs), vertical_size=tuple(vs), slash_size=tuple(ss),
            config_source=self.config.source, node=node.name, device=device, tp=tp,
            head_dim=d if isinstance(d, int) else 0,
        )

        def dense(reason: str) -> SDPAMatch:
            m = SDPAMatch(rewritten=False, reason=reason, **base)
            node.meta["minference"] = m
            return m

        if hq is None or hkv is None or len(qs) != 4 or hq % hkv:
            return dense("head counts unknown or not divisible")
        if hq != hkv and k0 is k and not a["enable_gqa"]:
            return dense("K/V heads differ from Q heads without repeat_kv or enable_gqa")
        if a["dropout_p"] not in (0, 0.0):
            return dense("dropout_p != 0")
        if isinstance(d, torch.SymInt) or not head_dim_supported(int(d)):
            return dense(f"head_dim {d} not supported by the sparse kernels")
        scale = a["scale"]
        if scale is None:
            scale = 1.0 / math.sqrt(int(d))
        elif not isinstance(scale, torch.fx.Node):
            scale = float(scale)
        # else: with dynamic=True Dynamo lifts the module's float `scaling` to a 0-d input and
        # `.item()`s it; the SymFloat node is passed through to the op unchanged.

        mask, proof = a["attn_mask"], None
        if mask is None:
            if not a["is_causal"]:
                return dense("no mask and is_causal=False (bidirectional / single-token decode)")
            if not known_eq(qs[-2], ks[-2]):
                return dense("is_causal=True with q_len != kv_len (SDPA aligns top-left)")
            form = "is_causal"
        else:
            if a["is_causal"]:
                return dense("attn_mask together with is_causal=True")
            proof = prove_causal_mask(mask, q, k0)
            if not proof.ok:
                return dense(proof.reason)
            form = "causal" + "".join(t for c, t in ((proof.padding, "+padding"), (proof.positions, "+positions"))
                                      if c is not None) + " mask"
        min_len = -1 if self.config.min_sparse_len is None else self.config.min_sparse_len  # -1: auto
        if proof is not None and proof.window:
            # a sliding-window layer: exact local attention, whatever the config says for its heads
            new = self._insert(graph, node, torch.ops.minference.local_attention.default,
                               (q, k0, v0, proof.padding, proof.positions, proof.window, scale, min_len, layer))
            ids, vs, ss = pack_layer([AShape(0, proof.window)] * hq)
            base.update(patterns=(AShape.name,) * hq, vertical_size=tuple(vs), slash_size=tuple(ss))
            return self._done(node, new, k, k0, v, v0, mask, proof, base, f"sliding window {proof.window} ({form})",
                              op="local_attention", window=proof.window, min_sparse_len=min_len)
        if all(i == Dense.id for i in ids):
            return dense("config: all heads dense" + (" (below starting_layer)" if layer < self.config.starting_layer else ""))
        tp_world = shard.world if shard else 1
        if shard and min_len < 0 and device:
            # every rank must take the same length decision: resolve "auto" from the whole layer's heads
            min_len = resolve_min_sparse_len(-1, *pack_layer(self.config.layer_specs(layer, total)), device)[0]
        if tp_world > 1 and not _world_is(tp_world):
            tp_world = 1  # the TP group is not the whole world (DP x TP): vs_max_work decides per rank, see DESIGN.md
        tail = (ids, vs, ss, scale, min_len, self.config.last_q, float(self.config.vs_max_work), layer, tp_world)
        if self.config.qk_dtype:  # only when set: default graphs keep their arguments
            tail += (self.config.qk_dtype,)
        if proof is not None and (proof.padding is not None or proof.positions is not None):
            new = self._insert(graph, node, torch.ops.minference.sparse_prefill_masked.default,
                               (q, k0, v0, proof.padding, proof.positions) + tail)
            op = "sparse_prefill_masked"
        else:
            new = self._insert(graph, node, torch.ops.minference.sparse_prefill.default, (q, k0, v0) + tail)
            op = "sparse_prefill"
        return self._done(node, new, k, k0, v, v0, mask, proof, base, form, op=op, min_sparse_len=min_len,
                          qk_dtype=self.config.qk_dtype or "")

    def _check_config(self, layer: int, heads: Optional[int]) -> None:
        """Raise ConfigError (naming file, layer, head) when the config does not fit this model."""
        cfg = self.config
        if cfg.layers and layer >= len(cfg.layers) and not cfg.allow_layer_mismatch:
            raise ConfigError(f"{cfg.source or '<config>'}: has {len(cfg.layers)} layers, the model has layer {layer} "
                              "(set allow_layer_mismatch=True to use `default` for the missing layers)")
        if heads and heads not in self._heads_checked:
            cfg.check_heads(heads)
            self._heads_checked.add(heads)

    @staticmethod
    def _insert(graph: fx.Graph, node: fx.Node, target, args: tuple) -> fx.Node:
        with graph.inserting_before(node):
            new = graph.call_function(target, args)
        new.meta.update({k_: v_ for k_, v_ in node.meta.items() if k_ != "minference"})
        return new

    def _done(self, node, new, k, k0, v, v0, mask, proof, base, reason, **extra) -> SDPAMatch:
        self._dead_candidates += _producers(k, k0) + _producers(v, v0)
        if mask is not None:
            self._dead_candidates += [mask, *proof.nodes]
        m = SDPAMatch(rewritten=True, reason=reason, **{**base, **extra})
        new.meta["minference"] = m
        node.replace_all_uses_with(new)
        node.graph.erase_node(node)
        return m


def _world_is(n: int) -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() == n
