"""Default `min_sparse_len`: the prompt length from which a layer's sparse patterns beat dense attention.

Measured on an H100 (torch 2.11, bf16, llama3-8b shape, benchmarks/results/bench-crossover-*.csv and
bench-full-*.csv; `python -m benchmarks.run --crossover`), kernel + index build against cuDNN SDPA in the same run:

Each pattern's rule lives with its spec (``min_sparse_len()`` in minference_compile/patterns/*.py):

* A-shape 128 + 4096: 0.94x at 8K, 1.54-1.64x at 16K. The kernel runs at ~0.7 of cuDNN's rate on the pairs
  it keeps, so it wins once coverage (init + local) * S / (S^2 / 2) < ~0.5: S > 4 * (init + local).
* block-sparse top-100: 0.93x at 16K (index build included), 1.88x at 32K. Coverage 2 * 64 * topk / S
  and ~0.65 efficiency with a 3-10% index share: S > 320 * topk.
* vertical-slash: coverage depends on the prompt, so a table by slash budget: (1000, 6096) is 0.9-0.96x at
  64K and 1.52-1.57x at 128K; (100, 800) is 0.75x at 16K and 1.48-1.55x at 32K (generated index sets). A layer
  of vertical-slash heads on FlashAttention-4's tiles (the ``[hopper]`` path at D >= 128; H200, NOTES row 27):
  (1000, 6096) with its index 40.1 ms vs FA4 dense 52.6 ms at 64K (1.31x), 0.54x at 16K: from 64K there. On
  CUDA, `sparse_prefill` also checks the estimated index itself (`vs_max_work`, config.py) and runs a VS layer
  dense when its work share exceeds the kernel's efficiency.

A layer is sparse only when S reaches the largest threshold of the patterns in it, so a layer never
mixes our dense path with sparse heads below the crossover.

Chunked pre-fill (q_len < kv_len, the queries are the last q_len positions): dense attention of the chunk costs
q_len * (kv_len - q_len / 2) pairs, the sparse patterns a budget per row that does not grow with the position, so
the sparse/dense ratio is the one of an unchunked prompt whose rows see as many keys on average: length
2 * kv_len - q_len (`effective_len`), which the thresholds above are applied to. A chunk of fewer than
MIN_CHUNK_ROWS rows (decode, a short tail) always runs dense: one partial 64-row query block saves nothing. On CPU the sparse ops are a masked dense
computation (a reference path, never faster than SDPA), so "auto" means dense there; pass an explicit
`min_sparse_len` to run them on CPU.
"""
from __future__ import annotations

import sys
from typing import Sequence

MIN_CHUNK_ROWS = 64


def effective_len(q_len: int, kv_len: int) -> int:
    """The unchunked prompt length whose rows attend as many keys on average as this chunk's (q_len == kv_len:
    kv_len)."""
    return 2 * kv_len - q_len


def round_up(x: int, to: int = 1024) -> int:
    return -(-x // to) * to


def pattern_min_len(pattern: int, vertical_size: int, slash_size: int, fa4: bool = False) -> int:
    """One head's crossover from its op slots: the pattern's own rule (``min_sparse_len`` of its spec in
    minference_compile/patterns/, where the measurements above are applied); fa4: the layer runs on
    FlashAttention-4 (ops/fa4.vs_layer_on_fa4)."""
    from ..patterns import unpack  # the registry imports this module
    return unpack(pattern, vertical_size, slash_size).min_sparse_len(fa4=fa4)


def auto_min_sparse_len(patterns: Sequence[int], vertical_size: Sequence[int], slash_size: Sequence[int],
                        device_type: str, fa4: bool = False) -> int:
    """Length from which the layer runs sparse (dense below it); `sys.maxsize` on CPU."""
    if device_type != "cuda":
        return sys.maxsize
    return max((pattern_min_len(p, v, s, fa4) for p, v, s in zip(patterns, vertical_size, slash_size)), default=0)


def runs_sparse(q_len: int, kv_len: int, min_sparse_len: int, auto_len: int) -> bool:
    """Whether sparse_prefill runs the layer sparse. min_sparse_len >= 0 (explicit) applies to q_len; < 0 (auto)
    compares effective_len(q_len, kv_len) with `auto_len` (auto_min_sparse_len of the layer). q_len > kv_len and
    chunks shorter than MIN_CHUNK_ROWS rows (q_len < kv_len) run dense."""
    if q_len > kv_len or (q_len < kv_len and q_len < MIN_CHUNK_ROWS):
        return False
    if min_sparse_len < 0:
        return effective_len(q_len, kv_len) >= auto_len
    return q_len >= min_sparse_len
