"""The run-time length rule of ``minference::sparse_prefill``, shared with ``explain(length=N)``."""
from __future__ import annotations

import sys
from typing import Sequence, Tuple

from .crossover import MIN_CHUNK_ROWS, auto_min_sparse_len, effective_len, runs_sparse


def pattern_summary(patterns: Sequence[int]) -> str:
    from ..patterns import BY_ID  # the registry imports this package
    counts = {}
    for p in patterns:
        name = BY_ID[p].name if p in BY_ID else str(p)
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{n} x{c}" for n, c in counts.items())


def resolve_min_sparse_len(min_sparse_len: int, patterns, vertical_size, slash_size, device_type: str,
                           fa4: bool = False) -> Tuple[int, str]:
    """-> (threshold, how it was set). ``min_sparse_len < 0`` is auto: the measured crossover (ops/crossover.py);
    fa4: the layer runs on FlashAttention-4 (ops/fa4.vs_layer_on_fa4), whose crossover applies."""
    if min_sparse_len >= 0:
        return min_sparse_len, "min_sparse_len"
    t = auto_min_sparse_len(patterns, vertical_size, slash_size, device_type, fa4)
    return t, "auto min_sparse_len" + (" (FlashAttention-4 tiles)" if fa4 and device_type == "cuda" else "")


def length_decision(patterns, vertical_size, slash_size, q_len: int, kv_len: int, min_sparse_len: int,
                    device_type: str, fa4: bool = False) -> Tuple[bool, str]:
    """(runs sparse, reason) for a layer at these lengths, before any data-dependent check.

    The rule is ``crossover.runs_sparse`` (q_len < kv_len: a pre-fill chunk over a cached prefix); this adds why.
    """
    if all(p == 0 for p in patterns):
        return False, "config: all heads dense"
    if q_len > kv_len:
        return False, f"q_len {q_len} > kv_len {kv_len}"
    if q_len < kv_len:
        from ..patterns import by_id
        unchunked = sorted({by_id(p).name for p in patterns if not by_id(p).chunked})
        if unchunked:  # (the adaptive patterns)
            return False, (f"{', '.join(unchunked)} run unchunked pre-fill only (chunk of {q_len} rows at kv_len "
                           f"{kv_len})")
    if q_len < kv_len and q_len < MIN_CHUNK_ROWS:
        return False, f"q_len {q_len} < {MIN_CHUNK_ROWS} rows against kv_len {kv_len} (decode / short chunk tail run dense)"
    t, how = resolve_min_sparse_len(min_sparse_len, patterns, vertical_size, slash_size, device_type, fa4)
    if t == sys.maxsize:
        return False, f"{how}: dense on {device_type} (set min_sparse_len to run the {device_type} sparse path)"
    chunk = f" (chunk of {q_len} rows after {kv_len - q_len} cached)" if q_len < kv_len else ""
    if not runs_sparse(q_len, kv_len, min_sparse_len, t):
        n = q_len if min_sparse_len >= 0 else effective_len(q_len, kv_len)
        what = "q_len" if n == q_len else "effective length 2 * kv_len - q_len ="
        return False, f"{what} {n} < {how} {t}{chunk}"
    return True, pattern_summary(patterns) + chunk
