"""Aligned vs block-rounded slash tiles on generated index sets: tile counts and work, on CPU (nothing timed).

    python -m benchmarks.aligned_tiles [--lengths 128k] [--shape llama3-8b] [--budgets 1000/6096,100/800] [--seed 0]

Per budget and mode (block-rounded = the default index, aligned = build_vertical_slash_index(aligned=True)), both
with the library's pairing for the head dim (`pair_for`), means over heads:
tiles = slash tile slots per head (a 128-key wide tile counts 2), steps = slash loop steps summed over the query
blocks (wide tiles one step each), masked = those steps that take the masked branch of `_slash_tile` (diagonal,
partly before key 0, or cut at the component end), tile_cov = `work_share` (tiles + gathered columns over causal
pairs, the benchmark's `tile_cov`), coverage = exact share of causal pairs the pattern computes.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from minference_compile.triton_kernels.vertical_slash_index import (aligned_offsets, build_vertical_slash_index,
                                                                    pair_for, work_share)

from . import coverage as cov
from .indexsets import generate_vs
from .registry import SHAPES, parse_lengths


def _steps(offset, lo, count, m0, width: int, block: int = 64):
    """(steps, masked steps) of one tile list of one head over the query blocks at m0 (numpy int64)."""
    d = np.sort(offset[:count])  # ascending
    d_last = d - width + block
    partial = (d_last < lo[:count][np.argsort(offset[:count])]) | (d_last < block - 1)
    cum_p = np.r_[0, np.cumsum(partial)]
    run_end = np.searchsorted(d, m0 + width, "left")   # tiles with d < m0 + width run
    before0 = np.searchsorted(d, m0, "right")          # tiles with d <= m0 start at key >= 0
    steps = run_end.sum()
    # masked: the partial tiles that run, plus the full ones that start before key 0 (m0 < d < m0 + width)
    masked = cum_p[run_end].sum() + ((run_end - before0) - (cum_p[run_end] - cum_p[before0])).sum()
    return int(steps), int(masked)


def mode_stats(vert, slash, S: int, D: int, aligned: bool) -> dict:
    """Means over heads of tiles, steps, masked steps, tile_cov and coverage for one mode (vert/slash [1, H, k])."""
    idx = build_vertical_slash_index(vert, slash, S, pair=pair_for(D), aligned=aligned)
    m0 = np.arange(-(-S // 64), dtype=np.int64) * 64
    tiles, steps, masked = [], [], []
    for h in range(slash.shape[1]):
        st, ms = 0, 0
        for off, lo, cnt, width in ((idx.tile_offset, idx.tile_lo, idx.tile_count, 64),
                                    (idx.wide_offset, idx.wide_lo, idx.wide_count, 128)):
            n = int(cnt[0, h])
            s, m = _steps(off[0, h].numpy().astype(np.int64), lo[0, h].numpy().astype(np.int64), n, m0, width)
            st, ms = st + s, ms + m
        tiles.append(int(idx.tile_count[0, h]) + 2 * int(idx.wide_count[0, h]))
        steps.append(st)
        masked.append(ms)
    pairs = cov.coverage(vert, aligned_offsets(slash, S) if aligned else slash, S)
    return {"tiles": float(np.mean(tiles)), "steps": float(np.mean(steps)), "masked": float(np.mean(masked)),
            "tile_cov": float(work_share(idx, S).mean()), "coverage": float(pairs.mean())}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.aligned_tiles", description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="128k")
    ap.add_argument("--shape", default="llama3-8b", choices=list(SHAPES))
    ap.add_argument("--budgets", default="1000/6096,100/800")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    hq, _, D = SHAPES[a.shape]
    print(f"# {a.shape} ({hq} heads, D={D}, pair={pair_for(D)}), generate_vs seed {a.seed}; means over heads")
    print(f"{'S':>7s} {'budget':>10s} {'mode':>8s} {'tiles':>8s} {'steps':>10s} {'masked':>9s} {'tile_cov':>8s} "
          f"{'coverage':>8s}")
    for S in parse_lengths(a.lengths):
        for budget in a.budgets.split(","):
            nv, ns = (int(x) for x in budget.split("/"))
            vert, slash = generate_vs(S, hq, nv, ns, seed=a.seed)
            for aligned in (False, True):
                r = mode_stats(vert, slash, S, D, aligned)
                print(f"{S:7d} {budget:>10s} {'aligned' if aligned else 'rounded':>8s} {r['tiles']:8.1f} "
                      f"{r['steps']:10.0f} {r['masked']:9.0f} {r['tile_cov']:8.4f} {r['coverage']:8.4f}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
