"""What the attention ops actually ran, per layer and call: sparse (which patterns) or dense, and why.

The FX pass decides what *can* run sparse; the op decides at run time what *does* (prompt length vs
``min_sparse_len``, the ``vs_max_work`` check on the estimated index, real padding, several packed
sequences, a sliding window shorter than the prompt). Every such decision lands here:

    minference_compile.runtime_stats()        # {layer: {("sparse" | "dense", reason): calls}}
    minference_compile.reset_runtime_stats()

Each new (layer, q_len, kv_len, outcome) is logged once at INFO on the ``minference_compile`` logger;
repeats only count (no per-call logging on the hot path).
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Dict, Tuple

log = logging.getLogger("minference_compile")

SPARSE, DENSE = "sparse", "dense"


class RunRecord:
    """Counts of (outcome, reason) per layer since the last reset. Thread-safe; cheap on repeats."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
        self._logged: set = set()

    def add(self, layer: int, ran: str, reason: str, q_len: int, kv_len: int, detail: str = "") -> None:
        key = (ran, reason)
        with self._lock:
            self._counts[layer][key] += 1
            first = (layer, q_len, kv_len, ran, reason) not in self._logged
            if first:
                self._logged.add((layer, q_len, kv_len, ran, reason))
        if first:
            where = f"layer {layer}" if layer >= 0 else "attention"
            log.info("minference: %s q_len=%d kv_len=%d ran %s: %s%s", where, q_len, kv_len, ran, reason,
                     f" ({detail})" if detail else "")

    def snapshot(self) -> Dict[int, Dict[Tuple[str, str], int]]:
        with self._lock:
            return {layer: dict(c) for layer, c in sorted(self._counts.items())}

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._logged.clear()

    def calls(self, ran: str | None = None) -> int:
        """Total calls recorded (of one outcome if ``ran`` is given)."""
        with self._lock:
            return sum(n for c in self._counts.values() for (r, _), n in c.items() if ran in (None, r))


RECORD = RunRecord()


def runtime_stats() -> Dict[int, Dict[Tuple[str, str], int]]:
    """``{layer: {(outcome, reason): calls}}`` since the last reset; outcome is "sparse" or "dense"."""
    return RECORD.snapshot()


def reset_runtime_stats() -> None:
    RECORD.reset()


def format_runtime_stats(stats: Dict[int, Dict[Tuple[str, str], int]] | None = None) -> str:
    """The record as a small table: one line per layer and outcome."""
    stats = runtime_stats() if stats is None else stats
    lines = [f"{'layer':>5}  {'calls':>5}  outcome  reason"]
    for layer, counts in stats.items():
        for (ran, reason), n in sorted(counts.items()):
            lines.append(f"{layer:>5}  {n:>5}  {ran:<7}  {reason}")
    return "\n".join(lines)
