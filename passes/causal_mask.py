"""Prove that an SDPA boolean ``attn_mask`` is plain causal (optionally AND a 2D padding mask).

transformers' ``sdpa_mask`` (non-vmap path, 5.17 and 5.24) builds, in the Dynamo graph::

    q_arange  = torch.arange(q_len) + q_offset           kv_arange = torch.arange(kv_len) + kv_offset
    q_indices = q_arange[None, None, :, None]             kv_indices = kv_arange[None, None, None, :]
    result    = q_indices.new_ones((), dtype=torch.bool)
    le        = kv_indices <= q_indices                   # causal_mask_function
    result_1  = result & le.to(device)
    pad       = attention_mask_bool[batch_indices, kv_indices]   # padding_mask_function (only with a 2D mask)
    result_2  = result_1 & pad.to(device)
    mask      = result_2.expand(B, -1, q_len, kv_len)

Without a cache transformers masks by *positions* instead of aranges, and adds packed-sequence ids::

    pos  = position_ids (a graph input) or arange(S).unsqueeze(0)        seg = cumsum(diff(pos, prepend=pos[:, :1] - 1) != 1, -1)
    le   = pos[batch, kv_indices] <= pos[batch, q_indices]             eq  = seg[batch, q_indices] == seg[batch, kv_indices]

With arange positions both reduce statically (to CAUSAL and TRUE). With a user ``position_ids`` input they
reduce to CAUSAL iff every row is one sequence (``diff(pos) == 1``): the proof returns that input as
``positions`` and the op checks it at run time (several packed sequences -> exact dense). A sliding
window adds ``kv_indices > q_indices - W`` (a WINDOW atom): the proof returns ``window = W``.

We evaluate that producer subgraph abstractly: every node maps to an index vector, TRUE, a CAUSAL,
PAD, WINDOW or POSITIONS atom, or a conjunction of atoms. Any node we do not understand (``|``,
chunked-attention ``//``, float/additive masks, vmap) makes the proof fail with a reason naming that
node, and the layer stays dense.
"""
from __future__ import annotations

import dataclasses
import operator
from typing import Any, Optional

import torch
import torch.fx as fx
from torch.fx.experimental.symbolic_shapes import statically_known_true


@dataclasses.dataclass(frozen=True)
class MaskProof:
    ok: bool
    reason: str = ""
    padding: Optional[fx.Node] = None  # 2D [B, >= kv_len] graph input, bool-castable; None = no padding term
    nodes: tuple = ()  # the mask's producer nodes (dead after the rewrite unless shared)
    positions: Optional[fx.Node] = None  # [B or 1, S] position_ids input checked at run time (one sequence per row)
    window: int = 0  # sliding window W (> 0: also q - kv < W)


class _Fail(Exception):
    pass


def _val(x: Any) -> Any:
    """Python int / SymInt behind an FX argument."""
    if isinstance(x, fx.Node):
        v = x.meta.get("example_value", x.meta.get("val"))
        if v is None:
            raise _Fail(f"no value for {x.name}")
        return v
    return x


def known_eq(a: Any, b: Any) -> bool:
    """a == b for every value of the symbols, without installing a guard (never specialises on S)."""
    try:
        return bool(statically_known_true(_val(a) == _val(b)))
    except _Fail:
        return False


def shape_of(n: fx.Node):
    v = n.meta.get("example_value", n.meta.get("val"))
    return getattr(v, "shape", None)


@dataclasses.dataclass(frozen=True)
class _Range:  # 1D arange(length) + offset
    length: Any
    offset: Any


@dataclasses.dataclass(frozen=True)
class _Idx:  # _Range broadcast onto one of the 4 mask axes (0 batch, 2 q, 3 kv)
    axis: int
    rng: _Range


@dataclasses.dataclass(frozen=True)
class _Pos:  # a [1 or B, L] position tensor: arange + offset (rng) or the graph input `node`
    rng: Optional[_Range] = None
    node: Optional[fx.Node] = None


@dataclasses.dataclass(frozen=True)
class _Seg:  # packed-sequence ids cumsum(diff(pos) != 1) of a _Pos
    pos: _Pos


@dataclasses.dataclass(frozen=True)
class _At:  # a _Pos / _Seg gathered at [batch_indices, idx] (idx an _Idx on axis 2 or 3)
    src: Any
    idx: _Idx


_TRUE = ("true",)
_FULL = slice(None, None, None)


def _add_offset(off: Any, c: Any) -> Any:
    if isinstance(off, int) and isinstance(c, int):
        return off + c
    return ("+", off, c)  # kept symbolic; compared through _offset_val


def _offset_val(off: Any) -> Any:
    if isinstance(off, tuple) and off and off[0] == "+":
        return _offset_val(off[1]) + _offset_val(off[2])
    return _val(off)


_AND = {operator.and_, torch.logical_and, torch.bitwise_and, "__and__", "logical_and", "bitwise_and", "logical_and_"}
_LE = {operator.le, torch.le, "le", "__le__"}
_GE = {operator.ge, torch.ge, "ge", "__ge__"}
_GT = {operator.gt, torch.gt, "gt", "__gt__"}
_LT = {operator.lt, torch.lt, "lt", "__lt__"}
_NE = {operator.ne, torch.ne, "ne", "__ne__"}
_EQ = {operator.eq, torch.eq, "eq", "__eq__"}
_SAME = {"to", "expand", "contiguous", "bool", "clone", "expand_as"}
_NOTE = {  # why common non-causal terms are refused
    "sub": "window / chunk term with a non-constant width",
    "lt": "window/chunk comparison",
    "or_": "or-overlay (bidirectional/prefix/block mask)",
    "eq": "document / segment mask (== of ids not derived from position_ids)",
    "where": "float/additive mask",
    "floordiv": "chunked attention term",
    "tanh": "soft-capping",
}


def _target_note(n: fx.Node) -> tuple:
    """(target name, why it is refused or "")"""
    tgt = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
    return tgt, _NOTE.get(str(tgt).strip("_"), "")


class _Eval:
    def __init__(self) -> None:
        self.memo: dict = {}
        self.nodes: list = []

    def __call__(self, n: Any) -> Any:
        if not isinstance(n, fx.Node):
            raise _Fail(f"non-node mask operand {n!r}")
        if n not in self.memo:
            self.memo[n] = self._eval(n)
            self.nodes.append(n)
        return self.memo[n]

    def _fail(self, n: fx.Node) -> None:
        tgt, note = _target_note(n)
        raise _Fail(f"unrecognised mask node {n.name} ({n.op} {tgt})" + (f": {note}" if note else ""))

    def _eval(self, n: fx.Node) -> Any:
        t, a, kw = n.target, n.args, n.kwargs
        if n.op == "placeholder":
            return ("input", n)
        if n.op not in ("call_function", "call_method"):
            self._fail(n)
        if t is torch.arange:
            if kw.get("dtype") not in (None, torch.int64, torch.long) or len(a) not in (1, 2) or "step" in kw:
                self._fail(n)
            start, end = (0, a[0]) if len(a) == 1 else a
            return _Range(("+", end, ("neg", start)) if start != 0 else end, start)
        if t in (operator.add, torch.add, "add", "__add__") and len(a) == 2:
            x = self(a[0])
            if isinstance(x, _Range) and not isinstance(a[1], torch.Tensor) and _is_scalar(a[1]):
                return _Range(x.length, _add_offset(x.offset, a[1]))
            self._fail(n)
        if t is operator.getitem:
            return self._getitem(n, a)
        if (t in ("new_ones", "ones_like") or t in (torch.ones, torch.ones_like)) and kw.get("dtype") is torch.bool:
            return _TRUE
        if t in _LE or t in _GE:
            lo, hi = (a[0], a[1]) if t in _LE else (a[1], a[0])  # lo <= hi
            x, y = self(lo), self(hi)
            if isinstance(x, _Idx) and isinstance(y, _Idx) and x.axis == 3 and y.axis == 2:
                return ("causal", y.rng, x.rng)
            if (isinstance(x, _At) and isinstance(y, _At) and x.src == y.src and isinstance(x.src, _Pos)
                    and x.idx.axis == 3 and y.idx.axis == 2):
                # pos[kv] <= pos[q] with input positions: causal iff each row is one sequence (checked at run time)
                return ("and", ("causal", y.idx.rng, x.idx.rng), ("positions", x.src.node))
            self._fail(n)
        if t in _GT or t in _LT:
            big, small = (a[0], a[1]) if t in _GT else (a[1], a[0])  # big > small
            x, y = self(big), self(small)
            if isinstance(x, _Idx) and x.axis == 3 and isinstance(y, tuple) and y[0] == "shift" and y[1].axis == 2:
                return ("window", y[1].rng, x.rng, y[2])  # kv > q - W
            self._fail(n)
        if t in (operator.sub, torch.sub, "sub", "__sub__") and len(a) == 2:
            x = self(a[0])
            if isinstance(x, _Idx) and isinstance(a[1], int) and a[1] > 0:
                return ("shift", x, a[1])
            self._fail(n)
        if t in ("unsqueeze",) or t is torch.unsqueeze:
            x = self(a[0])
            if isinstance(x, _Range) and a[1:] in ((0,), ()) and kw.get("dim", 0) == 0:
                return _Pos(rng=x)
            self._fail(n)
        if t in ("cumsum",) or t is torch.cumsum:
            x = self(a[0])
            dim = a[1] if len(a) > 1 else kw.get("dim")
            if isinstance(x, tuple) and x[0] == "breaks" and dim in (-1, 1):
                return _Seg(x[1])
            self._fail(n)
        if t in _NE and len(a) == 2 and a[1] == 1:
            x = self(a[0])
            if isinstance(x, tuple) and x[0] == "diff":
                return ("breaks", x[1])
            self._fail(n)
        if t is torch.diff or t == "diff":
            return ("diff", self._diff(n, a, kw))
        if t in _EQ and len(a) == 2:
            x, y = self(a[0]), self(a[1])
            if (isinstance(x, _At) and isinstance(y, _At) and isinstance(x.src, _Seg) and x.src == y.src
                    and {x.idx.axis, y.idx.axis} == {2, 3}):
                pos = x.src.pos
                return _TRUE if pos.node is None else ("positions", pos.node)  # arange positions: one sequence
            self._fail(n)
        if t in _AND:
            x, y = self(a[0]), self(a[1])
            return ("and", *_atoms(x, n), *_atoms(y, n))
        if t in _SAME:
            x = self(a[0])
            if t in ("to", "bool"):
                dts = [v for v in list(a[1:]) + list(kw.values()) if isinstance(v, torch.dtype)]
                if any(d is not torch.bool for d in dts):
                    raise _Fail(f"mask cast to {dts[0]} at {n.name}: float/additive mask")
            return x
        self._fail(n)

    def _getitem(self, n: fx.Node, a) -> Any:
        base, idx = a[0], a[1]
        x = self(base)
        if isinstance(x, _Range) and isinstance(idx, tuple) and len(idx) == 4:
            full = [i for i, s in enumerate(idx) if s == _FULL]
            if len(full) == 1 and all(s is None for i, s in enumerate(idx) if i != full[0]) and full[0] in (0, 2, 3):
                return _Idx(full[0], x)
        if isinstance(idx, tuple) and len(idx) == 2 and isinstance(idx[0], fx.Node) and isinstance(idx[1], fx.Node):
            b, i = self(idx[0]), self(idx[1])
            if isinstance(b, _Idx) and b.axis == 0 and isinstance(i, _Idx) and i.axis in (2, 3):
                if isinstance(x, tuple) and x[0] == "input":  # padding mask or position_ids: the consumer decides
                    return _At(_Pos(node=x[1]), i)
                if isinstance(x, _Pos) and x.rng is not None:  # arange positions: pos[idx] = idx + offset
                    return _Idx(i.axis, _Range(i.rng.length, _add_offset(i.rng.offset, x.rng.offset)))
                if isinstance(x, (_Pos, _Seg)):
                    return _At(x, i)
        raise _Fail(f"unrecognised indexing at {n.name} (not padding_mask / positions [batch_idx, idx])")

    def _diff(self, n: fx.Node, a, kw) -> _Pos:
        """``torch.diff(pos, prepend=pos[:, :1] - 1, dim=-1)``: transformers' packed-sequence breaks."""
        src = a[0]
        pre = kw.get("prepend")
        pos = self(src)
        if isinstance(pos, tuple) and pos[0] == "input":
            pos = _Pos(node=pos[1])
        ok = (isinstance(pos, _Pos) and kw.get("dim", -1) in (-1, 1) and len(a) == 1 and isinstance(pre, fx.Node)
              and pre.target in (operator.sub, "sub") and pre.args[1] == 1 and isinstance(pre.args[0], fx.Node))
        first = pre.args[0] if ok else None
        ok = ok and first.target is operator.getitem and first.args[1] == (_FULL, slice(None, 1, None))
        if not ok or not _same_source(first.args[0], src):
            raise _Fail(f"unrecognised position diff at {n.name}")
        self.nodes += [pre, first]
        return pos


def _same_source(x: fx.Node, y: fx.Node) -> bool:
    """x and y are the same tensor up to expand/unsqueeze views of it."""
    def root(n):
        while isinstance(n, fx.Node) and n.op == "call_method" and n.target in ("expand", "contiguous"):
            n = n.args[0]
        return n
    return root(x) is root(y)


def _is_scalar(x: Any) -> bool:
    if isinstance(x, fx.Node):
        return isinstance(_val(x), (int, torch.SymInt))
    return isinstance(x, int)


def _atoms(x: Any, n: fx.Node) -> tuple:
    if x == _TRUE:
        return ()
    if isinstance(x, tuple) and x[0] == "and":
        return x[1:]
    if isinstance(x, tuple) and x[0] in ("causal", "pad", "window", "positions"):
        return (x,)
    if isinstance(x, _At) and isinstance(x.src, _Pos) and x.src.node is not None and x.idx.axis == 3:
        return (("pad", x.src.node, x.idx.rng),)  # padding_mask[batch_idx, kv_idx]
    raise _Fail(f"non-boolean operand of & at {n.name}")


def _len_val(length: Any) -> Any:
    if isinstance(length, tuple) and length[0] == "+":
        return _len_val(length[1]) - _len_val(length[2][1])
    return _val(length)


def prove_causal_mask(mask: fx.Node, q: fx.Node, k: fx.Node) -> MaskProof:
    """Is ``mask`` (for SDPA(q, k, ...)) exactly bottom-right causal, optionally AND padding[b, kv], AND a
    sliding window, AND one-sequence-per-row positions (the last two returned for the op to handle)?"""
    ev = _Eval()
    try:
        val = mask.meta.get("example_value", mask.meta.get("val"))
        if val is not None and getattr(val, "dtype", torch.bool) is not torch.bool:
            raise _Fail(f"mask dtype {val.dtype}: float/additive mask")
        top = ev(mask)
        if isinstance(top, tuple) and top[0] == "input":
            raise _Fail(f"mask is the graph input {mask.name} (user-supplied 4D mask)")
        atoms = _atoms(top, mask)
        causal = [x for x in atoms if x[0] == "causal"]
        pads = [x for x in atoms if x[0] == "pad"]
        if not causal:
            raise _Fail("no causal term (bidirectional mask)")
        windows = [x for x in atoms if x[0] == "window"]
        positions = {x[1] for x in atoms if x[0] == "positions"}
        if len(positions) > 1:
            raise _Fail("several position_ids inputs")
        if len({w[3] for w in windows}) > 1:
            raise _Fail("several sliding windows")
        qs, ks = shape_of(q), shape_of(k)
        for _, qr, kr, *_ in causal + windows:
            if not (known_eq(_len_val(qr.length), qs[-2]) and known_eq(_len_val(kr.length), ks[-2])):
                raise _Fail("mask aranges do not match the q/kv lengths")
            # kv + kv_off <= q + q_off  is bottom-right causal iff q_off - kv_off == kv_len - q_len
            if not known_eq(_offset_val(qr.offset) - _offset_val(kr.offset), ks[-2] - qs[-2]):
                raise _Fail("causal offsets are not bottom-right aligned")
        src = {p[1] for p in pads}
        if len(src) > 1:
            raise _Fail("several padding masks")
        padding = None
        if pads:
            for p in pads:
                if not known_eq(_offset_val(p[2].offset), 0):
                    raise _Fail("padding mask indexed with a kv offset (cache in use)")
            padding = pads[0][1]
        return MaskProof(True, "", padding, tuple(ev.nodes), next(iter(positions), None),
                         windows[0][3] if windows else 0)
    except _Fail as e:
        terms = _known_terms(mask)
        return MaskProof(False, f"{terms} [{e}]" if terms else str(e))


def _known_terms(mask: fx.Node, limit: int = 256) -> str:
    """Name the recognisable non-causal terms (window, packed ids, or-overlays) among the mask's producers."""
    seen, todo, notes = set(), [mask], []
    while todo and len(seen) < limit:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        note = _target_note(n)[1]
        if note and n.op in ("call_function", "call_method"):
            notes.append(f"{note} at {n.name}")
        todo.extend(n.all_input_nodes)
    return "; ".join(sorted(set(notes)))
