"""128-row vs 64-row vertical-slash programs on generated index sets: loop steps and computed work, on CPU (nothing
timed; benchmarks/NOTES.md #21).

    python -m benchmarks.rows128_tiles [--lengths 32k,128k] [--shape llama3-8b] [--budgets 1000/6096,100/800] [--seed 0]

Per budget, means over heads: `coverage` = the pairs the index selects (share of causal pairs); 64 rows (today's
kernel, pairing as the library default for the head dim): `steps` slash loop steps summed over the query blocks (a
wide tile one step), `masked` those on the masked branch, `tile_cov` (`work_share`: tiles + gathered columns over
causal pairs); 128 rows (`row_pair_tiles`): `steps` (128 x 64 each) summed over the programs, `masked`,
`tile_cov` (`row_pair_work_share`); `extra` = pairs computed beyond the selection over the selection
(tile_cov / coverage - 1), for both; `T/comp` = 64-key tiles per slash component (one block).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from minference_compile.triton_kernels.vertical_slash_index import (build_vertical_slash_index, pair_for,
                                                                    row_pair_tiles, row_pair_work_share, work_share)

from . import coverage as cov
from .aligned_tiles import _steps
from .indexsets import generate_vs
from .registry import SHAPES, parse_lengths


def _rows128_steps(tiles, h: int, m0: np.ndarray) -> tuple:
    """(steps, masked steps) of head h's 128-row programs starting at m0 (numpy int64): a tile runs in program p iff
    d < m0 + 64 and is full there iff d <= m0, d <= s_hi - 64, d >= s_lo and d >= 63 (the kernel's condition)."""
    n = int(tiles.tile_count[0, h])
    d, lo, hi = (x[0, h, :n].numpy().astype(np.int64) for x in (tiles.tile_offset, tiles.tile_lo, tiles.tile_hi))
    d_asc = np.sort(d)
    full_asc = np.sort(d[(d <= hi - 64) & (d >= lo) & (d >= 63)])
    runs = np.searchsorted(d_asc, m0 + 64, "left")
    full = np.searchsorted(full_asc, m0, "right")
    return int(runs.sum()), int((runs - full).sum())


def stats(vert, slash, S: int, D: int) -> dict:
    """Means over heads for one budget's sets (vert/slash [1, H, k], no query offset)."""
    idx = build_vertical_slash_index(vert, slash, S, pair=pair_for(D))
    tiles = row_pair_tiles(idx, S)
    m0_64 = np.arange(-(-S // 64), dtype=np.int64) * 64
    m0_128 = np.arange(-(-S // 128), dtype=np.int64) * 128
    r = {k: [] for k in ("steps64", "masked64", "steps128", "masked128", "per_comp")}
    for h in range(slash.shape[1]):
        st, ms = 0, 0
        for off, lo, cnt, width in ((idx.tile_offset, idx.tile_lo, idx.tile_count, 64),
                                    (idx.wide_offset, idx.wide_lo, idx.wide_count, 128)):
            s, m = _steps(off[0, h].numpy().astype(np.int64), lo[0, h].numpy().astype(np.int64), int(cnt[0, h]),
                          m0_64, width)
            st, ms = st + s, ms + m
        s128, m128 = _rows128_steps(tiles, h, m0_128)
        n64 = int(idx.tile_count[0, h]) + 2 * int(idx.wide_count[0, h])
        comps = int(tiles.tile_count[0, h]) - n64  # one added tile per component
        r["steps64"].append(st)
        r["masked64"].append(ms)
        r["steps128"].append(s128)
        r["masked128"].append(m128)
        r["per_comp"].append(n64 / max(comps, 1))
    out = {k: float(np.mean(v)) for k, v in r.items()}
    out["coverage"] = float(cov.coverage(vert, slash, S).mean())
    out["tile_cov64"] = float(work_share(idx, S).mean())
    out["tile_cov128"] = float(row_pair_work_share(tiles, S).mean())
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rows128_tiles", description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="32k,128k")
    ap.add_argument("--shape", default="llama3-8b", choices=list(SHAPES))
    ap.add_argument("--budgets", default="1000/6096,100/800")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    hq, _, D = SHAPES[a.shape]
    print(f"# {a.shape} ({hq} heads, D={D}, 64-row pair={pair_for(D)}), generate_vs seed {a.seed}; means over heads")
    print(f"{'S':>7s} {'budget':>10s} {'coverage':>8s} {'T/comp':>6s} | {'steps64':>9s} {'masked64':>9s} "
          f"{'tile_cov64':>10s} {'extra64':>7s} | {'steps128':>9s} {'masked128':>9s} {'tile_cov128':>11s} "
          f"{'extra128':>8s} {'128/64':>6s}")
    for S in parse_lengths(a.lengths):
        for budget in a.budgets.split(","):
            nv, ns = (int(x) for x in budget.split("/"))
            vert, slash = generate_vs(S, hq, nv, ns, seed=a.seed)
            r = stats(vert, slash, S, D)
            c = r["coverage"]
            print(f"{S:7d} {budget:>10s} {c:8.4f} {r['per_comp']:6.2f} | {r['steps64']:9.0f} {r['masked64']:9.0f} "
                  f"{r['tile_cov64']:10.4f} {r['tile_cov64'] / c - 1:7.3f} | {r['steps128']:9.0f} "
                  f"{r['masked128']:9.0f} {r['tile_cov128']:11.4f} {r['tile_cov128'] / c - 1:8.3f} "
                  f"{r['tile_cov128'] / r['tile_cov64']:6.3f}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
