"""Per-layer, per-head sparse attention patterns (reads/writes the seed project's JSON format).

File format: a JSON list with one entry per layer; each entry maps a head index (string) to
``[pattern, vertical_size, slash_size, score]`` (adaptive patterns: an optional 5th element); each pattern's spec
in minference_compile/patterns/ parses, checks and writes its entry. A head or layer without an entry gets
``default``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence, Union

from .patterns import Pattern, PatternError, as_spec, pattern_names

# Per-head patterns are typed specs (minference_compile/patterns/): each parses, validates and writes its own seed
# entry and packs into the op's int lists. The config stores a head as ``(pattern, v_slot, s_slot)``, the op's slots
# (an adaptive threshold packed into s_slot); ``head_spec`` gives the spec.
PATTERNS = pattern_names()  # in id order
PATTERN_IDS = {name: i for i, name in enumerate(PATTERNS)}  # ids of minference::sparse_prefill

DEFAULT_ENTRY = ("vertical_and_slash", 1000, 6096)
# Below this prompt length the op runs dense attention. None = auto: the crossover measured per pattern
# and budget on an H100 (minference_compile/ops/crossover.py); dense on CPU.
DEFAULT_MIN_SPARSE_LEN = None
DEFAULT_LAST_Q = 64
# Both paths pay the estimate, so sparse wins iff work < its efficiency (share of cuDNN's rate): 0.55-0.62 at
# D=128 on an H100 (0.55 on a near-dense index), 0.65-0.72 at D=64 (benchmarks/NOTES.md #12)
DEFAULT_VS_MAX_WORK = 0.55

HeadEntry = tuple  # (pattern: str, v_slot: int, s_slot: int): the op's slots (spec.head_entry())


class ConfigError(ValueError):
    """Invalid MInference config; the message names the file, layer and head."""


def _where(source, layer=None, head=None) -> str:
    parts = [str(source or "<config>")]
    if layer is not None:
        parts.append(f"layer {layer}")
    if head is not None:
        parts.append(f"head {head}")
    return ", ".join(parts)


def _spec(raw: Any, source, layer, head) -> Pattern:
    """A seed entry list, a stored (pattern, v_slot, s_slot) tuple or a spec -> spec; errors name file/layer/head."""
    try:
        return as_spec(raw)
    except PatternError as e:
        raise ConfigError(f"{_where(source, layer, head)}: {e}") from None


def _parse_entry(raw: Any, source, layer, head) -> HeadEntry:
    if not isinstance(raw, Pattern) and not isinstance(raw, (list, tuple)):
        raise ConfigError(f"{_where(source, layer, head)}: expected [pattern, vertical_size, slash_size, score], got {raw!r}")
    return _spec(raw, source, layer, head).head_entry()


@dataclasses.dataclass(frozen=True)
class MInferenceConfig:
    """``layers[l][h] = (pattern, v_slot, s_slot)``; heads/layers missing use ``default``. Entries may be given as
    specs (``VerticalSlash(1000, 6096)``), seed lists or such tuples; ``head_spec`` returns the spec.

    ``scores`` keeps the seed's 4th column (unused by the pass) so ``to_json`` round-trips.
    """

    layers: tuple = ()  # tuple[tuple[tuple[int, HeadEntry], ...], ...]: sparse (head, entry) pairs per layer
    default: HeadEntry = DEFAULT_ENTRY
    starting_layer: int = 0  # layers below stay dense
    min_sparse_len: int | None = DEFAULT_MIN_SPARSE_LEN  # None: auto (measured crossover per pattern)
    last_q: int = DEFAULT_LAST_Q
    # CUDA: a layer of vertical-slash (and dense) heads whose estimated index would compute more than this share
    # of the causal pairs runs dense (cuDNN) instead: at ~0.55 of cuDNN's rate such a layer cannot win. 1.0 = never.
    # (CPU runs the sparse reference path regardless.)
    vs_max_work: float = DEFAULT_VS_MAX_WORK
    # CUDA, vertical-slash heads: Q.K^T on block-scaled "fp8" (e4m3) or "int8" operands (K smoothed), opt-in:
    # model-dependent accuracy (e4m3 +2.7% PPL on SmolLM2 at 4K, +0.37% on Qwen2.5-0.5B at 16K; int8 +0.1-0.5%;
    # benchmarks/NOTES.md "FP8"), speed not yet measured.
    # None: the model's dtype.
    qk_dtype: str | None = None
    source: str | None = None  # file it came from, for error messages and meta
    scores: tuple = ()  # per layer: tuple of (head, score)
    # A per-layer config must cover every layer of the model it is used with (the pass raises otherwise);
    # True lets layers beyond the file use `default` (and a longer file than the model pass `validate_for`).
    allow_layer_mismatch: bool = False

    def __post_init__(self) -> None:
        """Validate whatever way the config was built (constructor, dict, JSON): errors name source/layer/head."""
        # entries may be specs, seed lists or stored (pattern, v_slot, s_slot) tuples: stored as the latter
        object.__setattr__(self, "default", _parse_entry(self.default, self.source, None, "default"))
        for name in ("starting_layer", "last_q"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < (1 if name == "last_q" else 0):
                raise ConfigError(f"{_where(self.source)}: {name} must be a {'positive' if name == 'last_q' else 'non-negative'} "
                                  f"integer, got {val!r}")
        m = self.min_sparse_len
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 0):
            raise ConfigError(f"{_where(self.source)}: min_sparse_len must be None (auto) or a non-negative integer, got {m!r}")
        w = self.vs_max_work
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 < w <= 1.0:
            raise ConfigError(f"{_where(self.source)}: vs_max_work must be a number in (0, 1], got {w!r}")
        if self.qk_dtype not in (None, "fp8", "int8"):
            raise ConfigError(f"{_where(self.source)}: qk_dtype must be None, 'fp8' or 'int8', got {self.qk_dtype!r}")
        if not isinstance(self.layers, tuple):
            raise ConfigError(f"{_where(self.source)}: layers must be a tuple of per-layer (head, entry) pairs; "
                              "use MInferenceConfig.from_dict for the seed's list format")
        object.__setattr__(self, "layers", tuple(tuple((h, _parse_entry(e, self.source, li, h)) for h, e in heads)
                                                 for li, heads in enumerate(self.layers)))

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str | None = None, **overrides) -> "MInferenceConfig":
        """``data``: the seed's list of per-layer dicts, or ``{"layers": [...], "starting_layer": ..}``."""
        opts = {}
        if isinstance(data, Mapping):
            opts = {k: data[k] for k in ("starting_layer", "min_sparse_len", "last_q", "vs_max_work", "qk_dtype",
                                         "allow_layer_mismatch") if k in data}
            if "default" in data:
                opts["default"] = _parse_entry(data["default"], source, None, "default")
            data = data.get("layers", [])
        if not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
            raise ConfigError(f"{_where(source)}: expected a list of per-layer entries, got {type(data).__name__}")
        layers, scores = [], []
        for li, layer in enumerate(data):
            if not isinstance(layer, Mapping):
                raise ConfigError(f"{_where(source, li)}: expected a dict of head -> entry, got {type(layer).__name__}")
            heads, sc = [], []
            for key, raw in layer.items():
                try:
                    h = int(key)
                except (TypeError, ValueError):
                    raise ConfigError(f"{_where(source, li, key)}: head index must be an integer") from None
                if h < 0:
                    raise ConfigError(f"{_where(source, li, h)}: negative head index")
                heads.append((h, _parse_entry(raw, source, li, h)))
                if isinstance(raw, (list, tuple)) and len(raw) > 3:
                    sc.append((h, raw[3]))
            layers.append(tuple(sorted(heads)))
            scores.append(tuple(sorted(sc)))
        opts.update(overrides)
        return cls(layers=tuple(layers), scores=tuple(scores), source=source, **opts)

    @classmethod
    def from_json(cls, path: str | os.PathLike, **overrides) -> "MInferenceConfig":
        path = os.fspath(path)
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: bad JSON: {e}") from e
        return cls.from_dict(data, source=path, **overrides)

    def to_list(self) -> list:
        """The seed's format (a list per layer of {"head": [pattern, v, s, score]})."""
        out = []
        for li, heads in enumerate(self.layers):
            sc = dict(self.scores[li]) if li < len(self.scores) else {}
            out.append({str(h): _spec(e, self.source, li, h).to_entry(sc.get(h, 0)) for h, e in heads})
        return out

    def to_json(self, path: str | os.PathLike) -> None:
        with open(os.fspath(path), "w") as f:
            json.dump(self.to_list(), f)

    # --- queries ------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def head_entry(self, layer: int, head: int) -> HeadEntry:
        """``(pattern, v_slot, s_slot)``: the op's slots of the head (``head_spec`` for the typed spec)."""
        if layer < self.starting_layer:
            return ("dense", 0, 0)
        if layer < len(self.layers):
            for h, entry in self.layers[layer]:
                if h == head:
                    return entry
        return self.default

    def layer_entries(self, layer: int, num_heads: int) -> tuple:
        return tuple(self.head_entry(layer, h) for h in range(num_heads))

    def head_spec(self, layer: int, head: int) -> Pattern:
        """The head's typed spec (minference_compile/patterns/), e.g. ``VerticalSlash(1000, 6096)``."""
        return _spec(self.head_entry(layer, head), self.source, layer, head)

    def layer_specs(self, layer: int, num_heads: int) -> tuple:
        return tuple(self.head_spec(layer, h) for h in range(num_heads))

    def validate_for(self, num_layers: int, num_heads: int) -> "MInferenceConfig":
        """Raise ConfigError unless this config fits a model of ``num_layers`` x ``num_heads`` (q heads)."""
        if self.layers and len(self.layers) != num_layers and not self.allow_layer_mismatch:
            raise ConfigError(
                f"{_where(self.source)}: config has {len(self.layers)} layers, the model has {num_layers} "
                "(set allow_layer_mismatch=True to use `default` for missing layers / ignore extra ones)"
            )
        return self.check_heads(num_heads)

    def check_heads(self, num_heads: int) -> "MInferenceConfig":
        for li, heads in enumerate(self.layers):
            for h, _ in heads:
                if h >= num_heads:
                    raise ConfigError(f"{_where(self.source, li, h)}: head index out of range (model has {num_heads} heads)")
        return self

    def fingerprint(self) -> str:
        """Stable text of everything that changes the rewrite (for the pass uuid)."""
        return json.dumps(
            [self.to_list(), list(self.default), self.starting_layer, self.min_sparse_len, self.last_q,
             self.vs_max_work, self.allow_layer_mismatch] + ([self.qk_dtype] if self.qk_dtype else []), sort_keys=True
        )


ConfigLike = Union[MInferenceConfig, Mapping, Sequence, str, os.PathLike, None]


def as_config(config: ConfigLike) -> MInferenceConfig:
    """Accept a MInferenceConfig, a dict/list in the seed format, a JSON path, or None (all default)."""
    if config is None:
        return MInferenceConfig()
    if isinstance(config, MInferenceConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return MInferenceConfig.from_json(config)
    if isinstance(config, (Mapping, list, tuple)):
        return MInferenceConfig.from_dict(config)
    raise ConfigError(f"config must be a MInferenceConfig, a dict or list in the seed's format, or a JSON path; "
                      f"got {type(config).__name__} {config!r:.60}")


def get_support_models() -> list:
    """Models we ship pattern files for, searched ourselves (``minference-compile search``; never the seed's files):
    names of minference_compile/configs/NAME.json, each with its NAME.search.json (per-head recall, cost,
    calibration). ``minference_compile.search.shipped.shipped_config_path(name)`` gives the file."""
    from .search.shipped import shipped_models
    return shipped_models()
