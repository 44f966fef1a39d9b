"""Per-layer, per-head sparse attention patterns (reads/writes the seed project's JSON format).

File format: a JSON list with one entry per layer; each entry maps a head index (string) to
``[pattern, vertical_size, slash_size, score]``. A head or layer without an entry gets ``default``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence, Union

PATTERNS = ("dense", "vertical_and_slash", "stream_llm", "block_sparse",
            "vertical_and_slash_adaptive", "block_sparse_adaptive")  # ids 4, 5: ops/adaptive.py
# Adaptive entries: [pattern, v_cap, s_cap, score, {"gamma": 0.9}] / [pattern, topk_cap, 0, score, {"tau": 0.9}];
# the threshold (optional, default 0.9) is packed into the slash slot the op receives (ops/adaptive.pack_threshold)
ADAPTIVE_THRESHOLD_KEYS = {"vertical_and_slash_adaptive": "gamma", "block_sparse_adaptive": "tau"}
PATTERN_IDS = {name: i for i, name in enumerate(PATTERNS)}  # ids of minference::sparse_prefill

DEFAULT_ENTRY = ("vertical_and_slash", 1000, 6096)
# Below this prompt length the op runs dense attention. None = auto: the crossover measured per pattern
# and budget on an H100 (minference_compile/ops/crossover.py); dense on CPU.
DEFAULT_MIN_SPARSE_LEN = None
DEFAULT_LAST_Q = 64
# Both paths pay the estimate, so sparse wins iff work < its efficiency (share of cuDNN's rate): 0.55-0.62 at
# D=128 on an H100 (0.55 on a near-dense index), 0.65-0.72 at D=64 (benchmarks/NOTES.md #12)
DEFAULT_VS_MAX_WORK = 0.55

HeadEntry = tuple  # (pattern: str, vertical_size: int, slash_size: int)


class ConfigError(ValueError):
    """Invalid MInference config; the message names the file, layer and head."""


def _where(source, layer=None, head=None) -> str:
    parts = [str(source or "<config>")]
    if layer is not None:
        parts.append(f"layer {layer}")
    if head is not None:
        parts.append(f"head {head}")
    return ", ".join(parts)


# The smallest value each pattern's kernel accepts for its two slots (the public functions check the same):
# vertical-slash needs >= 1 column and >= 1 diagonal; A-shape init may be 0 (a pure sliding window), local >= 1;
# block-sparse needs topk >= 1 (its second slot is unused).
_MINIMUM = {"dense": (0, 0), "vertical_and_slash": (1, 1), "stream_llm": (0, 1), "block_sparse": (1, 0),
            "vertical_and_slash_adaptive": (1, 1), "block_sparse_adaptive": (1, 0)}
_SLOTS = {"vertical_and_slash": ("vertical_size", "slash_size"), "stream_llm": ("init_num", "local_window_num"),
          "block_sparse": ("topk", "(unused)"), "dense": ("(unused)", "(unused)"),
          "vertical_and_slash_adaptive": ("vertical cap", "slash cap"), "block_sparse_adaptive": ("topk cap", "(unused)")}


def _parse_entry(raw: Any, source, layer, head) -> HeadEntry:
    if not isinstance(raw, (list, tuple)) or len(raw) < 3:
        raise ConfigError(f"{_where(source, layer, head)}: expected [pattern, vertical_size, slash_size, score], got {raw!r}")
    pattern, v, s = raw[0], raw[1], raw[2]
    if pattern not in PATTERNS:
        raise ConfigError(f"{_where(source, layer, head)}: unknown pattern {pattern!r} (known: {', '.join(PATTERNS)})")
    for name, val, lo in zip(_SLOTS[pattern], (v, s), _MINIMUM[pattern]):
        if isinstance(val, bool) or not isinstance(val, (int, float)) or int(val) != val:
            raise ConfigError(f"{_where(source, layer, head)}: {pattern} {name} must be an integer, got {val!r}")
        if val < lo:
            raise ConfigError(f"{_where(source, layer, head)}: {pattern} {name} must be >= {lo}, got {val}")
    if pattern in ADAPTIVE_THRESHOLD_KEYS:
        return (pattern, int(v), _adaptive_slot(raw, int(s), source, layer, head))
    return (pattern, int(v), int(s))


def _adaptive_slot(raw, cap: int, source, layer, head) -> int:
    from .ops.adaptive import pack_threshold
    key = ADAPTIVE_THRESHOLD_KEYS[raw[0]]
    extra = raw[4] if len(raw) > 4 else {}
    if not isinstance(extra, Mapping) or set(extra) - {key}:
        raise ConfigError(f"{_where(source, layer, head)}: {raw[0]} takes an optional 5th element {{\"{key}\": x}}, "
                          f"got {extra!r}")
    thr = extra.get(key)
    ok = thr is None or (not isinstance(thr, bool) and isinstance(thr, (int, float)) and 0.0 < thr <= 1.0)
    if not ok or cap >= 10**9:
        raise ConfigError(f"{_where(source, layer, head)}: {key} must be a number in (0, 1] and the cap below 1e9, "
                          f"got {thr!r}, {cap}")
    return pack_threshold(cap, thr)


def _entry_list(entry: HeadEntry, score) -> list:
    """A head entry in the seed's list form; adaptive entries with a threshold get it back as a 5th element."""
    p, v, s = entry
    if p in ADAPTIVE_THRESHOLD_KEYS and s >= 10**9:
        from .ops.adaptive import unpack_threshold
        cap, thr = unpack_threshold(s)
        return [p, v, cap, score, {ADAPTIVE_THRESHOLD_KEYS[p]: thr}]
    return [p, v, s, score]


@dataclasses.dataclass(frozen=True)
class MInferenceConfig:
    """``layers[l][h] = (pattern, vertical_size, slash_size)``; heads/layers missing use ``default``.

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
    source: str | None = None  # file it came from, for error messages and meta
    scores: tuple = ()  # per layer: tuple of (head, score)
    # A per-layer config must cover every layer of the model it is used with (the pass raises otherwise);
    # True lets layers beyond the file use `default` (and a longer file than the model pass `validate_for`).
    allow_layer_mismatch: bool = False

    def __post_init__(self) -> None:
        """Validate whatever way the config was built (constructor, dict, JSON): errors name source/layer/head."""
        # (parsed entries hold adaptive thresholds packed: back to the list form to check them like a file's)
        default = self.default if isinstance(self.default, list) or len(self.default) > 3 else _entry_list(self.default, 0)
        object.__setattr__(self, "default", _parse_entry(default, self.source, None, "default"))
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
        if not isinstance(self.layers, tuple):
            raise ConfigError(f"{_where(self.source)}: layers must be a tuple of per-layer (head, entry) pairs; "
                              "use MInferenceConfig.from_dict for the seed's list format")
        for li, heads in enumerate(self.layers):
            for h, entry in heads:
                _parse_entry(_entry_list(entry, 0), self.source, li, h)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str | None = None, **overrides) -> "MInferenceConfig":
        """``data``: the seed's list of per-layer dicts, or ``{"layers": [...], "starting_layer": ..}``."""
        opts = {}
        if isinstance(data, Mapping):
            opts = {k: data[k] for k in ("starting_layer", "min_sparse_len", "last_q", "vs_max_work",
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
            out.append({str(h): _entry_list(e, sc.get(h, 0)) for h, e in heads})
        return out

    def to_json(self, path: str | os.PathLike) -> None:
        with open(os.fspath(path), "w") as f:
            json.dump(self.to_list(), f)

    # --- queries ------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def head_entry(self, layer: int, head: int) -> HeadEntry:
        if layer < self.starting_layer:
            return ("dense", 0, 0)
        if layer < len(self.layers):
            for h, entry in self.layers[layer]:
                if h == head:
                    return entry
        return self.default

    def layer_entries(self, layer: int, num_heads: int) -> tuple:
        return tuple(self.head_entry(layer, h) for h in range(num_heads))

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
             self.vs_max_work, self.allow_layer_mismatch], sort_keys=True
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
