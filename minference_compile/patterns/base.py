"""The pattern registry: one typed spec class per sparse pattern, owning everything pattern-specific.

A spec (frozen dataclass) is one head's pattern with its budgets, e.g. ``VerticalSlash(1000, 6096)``. Its class
owns, for that pattern:

* the seed's JSON entry ``[name, v, s, score(, {threshold})]``: ``from_entry`` / ``to_entry`` (``SLOTS`` says
  which field each of the two numbers holds and its minimum; ``THRESHOLD`` the optional 5th element's key);
* validation (``__post_init__``: ``PatternError`` naming the pattern, the field and the value);
* the op's int lists (``minference::sparse_prefill`` takes ``patterns, vertical_size, slash_size``):
  ``id`` and ``pack() -> (v_slot, s_slot)`` / ``unpack(v_slot, s_slot)``;
* the length rule: ``min_sparse_len()``, the measured crossover on CUDA (ops/crossover.py);
* running the pattern's heads of a layer in one launch: ``select`` (the index build from q/k), ``attend_cpu``
  (ops/cpu.py) and ``attend_cuda`` (triton_kernels), and ``reference`` (the triton_kernels/naive*.py full-mask
  reference of the same selection, small S only);
* a short ``label`` (``vs(1000,6096)``), used by explain() and as the search's candidate name.

Layers: this package sits at the ops layer (it imports triton_kernels and minference_compile.ops helpers, never
ops.library / ops.api, which import it). Adding a pattern = one module in this folder with a registered subclass.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import torch

from ..ops.adaptive import DEFAULT_THRESHOLD, pack_threshold, unpack_threshold

REGISTRY: Dict[str, Type["Pattern"]] = {}  # seed JSON name -> spec class
BY_ID: Dict[int, Type["Pattern"]] = {}  # minference::sparse_prefill pattern id -> spec class


class PatternError(ValueError):
    """An invalid pattern spec or entry; the message names the pattern, the field and the value."""


@dataclasses.dataclass(frozen=True)
class Slot:
    """What one number of the seed entry holds: the spec field, its name in messages, the smallest valid value."""

    field: str
    label: str
    minimum: int


@dataclasses.dataclass
class HeadGroup:
    """The heads of one pattern in one layer call. q [B, Hq, Sq, D], k/v [B, Hkv, S, D] (Sq <= S: the last Sq
    positions); ``specs[h]`` is head h's spec of this pattern, None for heads of other patterns."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    scale: float
    last_q: int
    specs: Tuple[Optional["Pattern"], ...]
    qk_dtype: str = ""  # "fp8" / "int8": the vertical-slash kernel's Q.K^T operands (config.qk_dtype)
    # the layer's vertical-slash route, decided once per call by sparse_prefill (ops/fa4.vs_layer_on_fa4, which also
    # picked the crossover): True FA4 tiles, False Triton; None (a group built elsewhere): the kernel call decides
    vs_on_fa4: Optional[bool] = None
    # one dict for all the groups of one layer call (sparse_prefill): what several patterns compute alike, once
    shared: Optional[dict] = dataclasses.field(default=None, repr=False, compare=False)
    # every head's spec in the layer call (sparse_prefill), for an index build that serves several patterns' heads
    # at once (the mean-query block-sparse ones); None: only ``specs`` is known
    layer_specs: Optional[Tuple[Any, ...]] = dataclasses.field(default=None, repr=False, compare=False)

    def values(self, field: str, fill: Any) -> list:
        """Per q head: this pattern's ``field``, ``fill`` for heads of other patterns (they select nothing)."""
        return [fill if s is None else getattr(s, field) for s in self.specs]

    def vs_scores(self):
        """(vscore, sscore) fp32 [B, Hq, S]: the column and diagonal mass of the last ``last_q`` queries at the
        layer's scale (ops/estimate.estimate_scores), computed once per layer call for the vertical-slash patterns
        that rank by it (fixed and adaptive heads in one layer). Callers must not write into them."""
        from ..ops.estimate import estimate_scores
        if self.shared is None:
            return estimate_scores(self.q, self.k, self.last_q, self.scale)
        key = ("vs_scores", self.last_q, self.scale)
        if key not in self.shared:
            self.shared[key] = estimate_scores(self.q, self.k, self.last_q, self.scale)
        return self.shared[key]

    def thresholds(self) -> list:
        """Per q head: an adaptive pattern's mass threshold (the default for heads of other patterns)."""
        return [DEFAULT_THRESHOLD if s is None else s.threshold for s in self.specs]


@dataclasses.dataclass(frozen=True)
class Pattern:
    """Base of the spec classes; subclasses are frozen dataclasses registered with ``@register``."""

    name: ClassVar[str]  # the seed's JSON name
    id: ClassVar[int]  # minference::sparse_prefill pattern id
    short: ClassVar[str]  # label prefix: vs, ashape, bs, ...
    SLOTS: ClassVar[Tuple[Optional[Slot], Optional[Slot]]] = (None, None)  # entry elements 2, 3 (None: unused, 0)
    THRESHOLD: ClassVar[Optional[str]] = None  # key of the optional 5th element {key: x} (a spec field, x in (0, 1])
    chunked: ClassVar[bool] = True  # runs a pre-fill chunk (q_len < kv_len); False: such a call runs dense
    estimates_work: ClassVar[bool] = False  # True: work_share() gives the vs_max_work check its estimate
    # the search's time model (`minference-compile search --cost time`), per head_dim (<= 64, >= 96): the kernel's
    # rate on the work it computes as a share of cuDNN's dense rate, and the index build as a share of the head's
    # dense attention time; measured at 128K on an H200, Triton kernels (benchmarks/NOTES.md rows cited per pattern)
    RATE: ClassVar[Tuple[float, float]] = (1.0, 1.0)
    INDEX: ClassVar[Tuple[float, float]] = (0.0, 0.0)
    # patterns whose heads of one layer share ONE index build (the op builds it once per layer call for all of
    # them): the same name here; "" = its own (its class name). ``search --cost layer`` charges INDEX once per layer
    # and family present, not per head
    INDEX_FAMILY: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for slot in self.SLOTS:
            if slot is not None:
                _check_int(self.name, slot.label, getattr(self, slot.field), slot.minimum)
        if self.THRESHOLD is not None:
            for slot in self.SLOTS:  # the threshold rides in a budget slot above 1e9 (ops/adaptive.pack_threshold)
                if slot is not None and getattr(self, slot.field) >= 10**9:
                    raise PatternError(f"{self.name} {slot.label} must be below 1e9, got {getattr(self, slot.field)}")
            t = getattr(self, self.THRESHOLD)
            if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < t <= 1.0):
                raise PatternError(f"{self.name} {self.THRESHOLD} must be a number in (0, 1], got {t!r}")

    # ---- the seed's JSON entry ----
    @classmethod
    def from_entry(cls, raw: Sequence) -> "Pattern":
        """``[name, v, s(, score(, {threshold}))]`` -> spec (raw[0] must be this pattern's name)."""
        if len(raw) > 5 or (len(raw) == 5 and cls.THRESHOLD is None):
            raise PatternError(f"{cls.name} takes [pattern, {_slot_names(cls)}, score"
                               + (f", {{\"{cls.THRESHOLD}\": x}}]" if cls.THRESHOLD else "]")
                               + f" ({4 + (cls.THRESHOLD is not None)} elements at most), got {list(raw)!r}")
        kwargs = {}
        for slot, val in zip(cls.SLOTS, raw[1:3]):
            label, lo = (slot.label, slot.minimum) if slot else ("(unused)", 0)
            _check_int(cls.name, label, val, lo, integral_float=True)
            if slot is not None:
                kwargs[slot.field] = int(val)
        if cls.THRESHOLD is not None:
            extra = raw[4] if len(raw) > 4 else {}
            if not isinstance(extra, Mapping) or set(extra) - {cls.THRESHOLD}:
                raise PatternError(f"{cls.name} takes an optional 5th element {{\"{cls.THRESHOLD}\": x}}, got {extra!r}")
            kwargs[cls.THRESHOLD] = extra.get(cls.THRESHOLD)
        return cls(**kwargs)

    def to_entry(self, score: Any = 0) -> list:
        """The seed's list form (unused slots 0; an explicit threshold as the 5th element)."""
        out = [self.name] + [0 if s is None else getattr(self, s.field) for s in self.SLOTS] + [score]
        if self.THRESHOLD is not None and getattr(self, self.THRESHOLD) is not None:
            out.append({self.THRESHOLD: getattr(self, self.THRESHOLD)})
        return out

    # ---- the op's int lists ----
    def pack(self) -> Tuple[int, int]:
        """(vertical_size slot, slash_size slot) of minference::sparse_prefill; a threshold rides in the slash slot
        (``permille * 10**9 + value``; none given: the plain value, read back as the default 0.9)."""
        v, s = (0 if sl is None else getattr(self, sl.field) for sl in self.SLOTS)
        return v, s if self.THRESHOLD is None else pack_threshold(s, getattr(self, self.THRESHOLD))

    @classmethod
    def unpack(cls, v_slot: int, s_slot: int) -> "Pattern":
        """Inverse of ``pack`` (validated like any spec)."""
        kwargs = {}
        if cls.THRESHOLD is not None:
            packed = s_slot >= 10**9
            s_slot, t = unpack_threshold(s_slot)
            kwargs[cls.THRESHOLD] = t if packed else None  # a plain slot: no threshold given (the default)
        for slot, val in zip(cls.SLOTS, (v_slot, s_slot)):
            if slot is not None:
                kwargs[slot.field] = val  # no int(): the spec's checks reject bools and floats
        return cls(**kwargs)

    def head_entry(self) -> tuple:
        """``(name, v_slot, s_slot)``: the form MInferenceConfig stores and the FX pass hands to the op."""
        return (self.name,) + self.pack()

    @property
    def threshold(self) -> float:
        """The adaptive threshold in effect (the default when the entry gave none)."""
        t = getattr(self, self.THRESHOLD) if self.THRESHOLD else None
        return DEFAULT_THRESHOLD if t is None else t

    @property
    def label(self) -> str:
        """Short label: ``dense``, ``vs(1000,6096)``, ``bsa(128;0.9)`` (explain(), search candidate names)."""
        args = ",".join(str(getattr(self, s.field)) for s in self.SLOTS if s is not None)
        if self.THRESHOLD is not None and getattr(self, self.THRESHOLD) is not None:
            args += f";{getattr(self, self.THRESHOLD):g}"
        return f"{self.short}({args})" if args else self.short

    # ---- the length rule ----
    def min_sparse_len(self, fa4: bool = False) -> int:
        """Auto ``min_sparse_len`` of this head on CUDA: the prompt length from which it beats dense attention.
        fa4: the layer runs on FlashAttention-4 (the ``[hopper]`` path, dense fallback included); a pattern whose
        crossover was measured there says so, the others keep their rule."""
        raise NotImplementedError

    def index_family(self) -> str:
        """Specs with one name here share one index build per layer call (``INDEX_FAMILY``, else the pattern)."""
        return self.INDEX_FAMILY or self.name

    def index_share(self, head_dim: int) -> float:
        """The layer's index build for this spec over the layer's dense attention time (INDEX per head_dim)."""
        return self.INDEX[0 if head_dim <= 64 else 1]

    def relative_time(self, work, head_dim: int):
        """Predicted time of one head with this spec over its dense attention (cuDNN, same length) from the share
        of the causal pairs its kernel computes (``work``: float or tensor): work / RATE + index_share."""
        return work / self.RATE[0 if head_dim <= 64 else 1] + self.index_share(head_dim)

    # ---- running the pattern's heads of one layer (head_mask / out: the kernel-level conventions) ----
    @classmethod
    def select(cls, group: HeadGroup) -> Any:
        """The selection (index) of the group's heads from q/k, on q's device; None if the pattern needs none."""
        return None

    @classmethod
    def attend(cls, group: HeadGroup, selection: Any, head_mask: Optional[torch.Tensor], out: torch.Tensor):
        """Compute the group's heads (only those in head_mask; None: all) into out: CPU path or Triton kernel."""
        if group.q.device.type == "cpu":
            return cls.attend_cpu(group, selection, head_mask, out)
        return cls.attend_cuda(group, selection, head_mask, out)

    @classmethod
    def attend_cpu(cls, group: HeadGroup, selection: Any, head_mask, out) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def attend_cuda(cls, group: HeadGroup, selection: Any, head_mask, out) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def reference(cls, group: HeadGroup, selection: Any) -> torch.Tensor:
        """Full-mask fp32 reference (triton_kernels/naive*.py) of every head under the group's selection;
        compare the group's heads only. O(S^2) memory: small S."""
        raise NotImplementedError

    @classmethod
    def work_share(cls, group: HeadGroup, selection: Any) -> Optional[torch.Tensor]:
        """[B, Hq] share of the causal pairs the selection computes (CUDA), for the ``vs_max_work`` check; None:
        this pattern has no such estimate (a layer holding it skips the check)."""
        return None


def _check_int(pattern: str, label: str, val: Any, minimum: int, integral_float: bool = False) -> None:
    ok = not isinstance(val, bool) and (isinstance(val, int) or (integral_float and isinstance(val, float)
                                                                  and val == int(val)))
    if not ok:
        raise PatternError(f"{pattern} {label} must be an integer, got {val!r}")
    if val < minimum:
        raise PatternError(f"{pattern} {label} must be >= {minimum}, got {val}")


def _slot_names(cls) -> str:
    return ", ".join("(unused)" if s is None else s.label.replace(" ", "_") for s in cls.SLOTS)


def register(cls: Type[Pattern]) -> Type[Pattern]:
    """Class decorator: add a spec class to the registry (name and id must be new)."""
    if cls.name in REGISTRY or cls.id in BY_ID:
        raise ValueError(f"pattern {cls.name!r} / id {cls.id} registered twice")
    REGISTRY[cls.name] = BY_ID[cls.id] = cls
    return cls


def pattern_names() -> Tuple[str, ...]:
    """Registered names in id order (the op's ids: dense 0, vertical_and_slash 1, ...)."""
    return tuple(BY_ID[i].name for i in sorted(BY_ID))


def _known() -> str:
    return ", ".join(f"{i} {BY_ID[i].name}" for i in sorted(BY_ID))


def by_name(name: Any) -> Type[Pattern]:
    if name not in REGISTRY:
        raise PatternError(f"unknown pattern {name!r} (known: {', '.join(pattern_names())})")
    return REGISTRY[name]


def by_id(pid: Any) -> Type[Pattern]:
    if pid not in BY_ID:
        raise PatternError(f"unknown pattern id {pid!r} ({_known()})")
    return BY_ID[pid]


def parse_entry(raw: Any) -> Pattern:
    """The seed's JSON entry ``[pattern_name, v, s, score(, extras)]`` -> its spec (PatternError if invalid)."""
    if not isinstance(raw, (list, tuple)) or len(raw) < 3:
        raise PatternError(f"expected [pattern, vertical_size, slash_size, score], got {raw!r}")
    return by_name(raw[0]).from_entry(raw)


def parse_label(label: str) -> Pattern:
    """Inverse of ``Pattern.label``: ``vs(1000,6096)``, ``bsa(128;0.9)``, ``dense`` -> spec."""
    short, _, args = label.rstrip(")").partition("(")
    cls = next((c for c in REGISTRY.values() if c.short == short), None)
    if cls is None:
        raise PatternError(f"unknown pattern label {label!r} (known: {', '.join(c.short for c in REGISTRY.values())})")
    args, _, thr = args.partition(";")
    fields = [s.field for s in cls.SLOTS if s is not None]
    nums = [int(x) for x in args.split(",")] if args else []
    if len(nums) != len(fields):
        raise PatternError(f"{label!r}: {cls.short} takes {len(fields)} number(s) ({', '.join(fields) or 'none'})")
    kwargs = dict(zip(fields, nums))
    if thr:
        if cls.THRESHOLD is None:
            raise PatternError(f"{label!r}: {cls.name} takes no threshold")
        kwargs[cls.THRESHOLD] = float(thr)
    return cls(**kwargs)


@functools.lru_cache(maxsize=4096)
def unpack(pid: int, v_slot: int, s_slot: int) -> Pattern:
    """One head of the op's int lists -> its spec (cached: the op unpacks every call)."""
    return by_id(pid).unpack(v_slot, s_slot)


def from_head_entry(entry: Sequence) -> Pattern:
    """``(name, v_slot, s_slot)`` (MInferenceConfig's stored form) -> spec."""
    return by_name(entry[0]).unpack(entry[1], entry[2])


def as_spec(entry: Any) -> Pattern:
    """A spec, a stored ``(name, v_slot, s_slot)`` tuple, or a seed entry list (``[name, v, s(, score, ..)]``)."""
    if isinstance(entry, Pattern):
        return entry
    if isinstance(entry, tuple) and len(entry) == 3 and all(isinstance(x, int) for x in entry[1:]):
        return from_head_entry(entry)  # (a packed threshold is an int too)
    return parse_entry(entry)


def pack_layer(specs: Sequence[Pattern]) -> Tuple[List[int], List[int], List[int]]:
    """Per-head specs -> (patterns, vertical_size, slash_size), the int lists of minference::sparse_prefill."""
    slots = [s.pack() for s in specs]
    return [s.id for s in specs], [v for v, _ in slots], [s for _, s in slots]
