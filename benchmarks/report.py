"""Compact text tables of benchmark rows (`python -m benchmarks.report results/x.csv` prints all of them)."""
from __future__ import annotations

import csv
import sys


def _f(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def load_csv(path) -> list:
    with open(path) as f:
        return list(csv.DictReader(f))


def _len(S) -> str:
    S = int(S)
    return f"{S // 1048576}M" if S % 1048576 == 0 else (f"{S // 1024}K" if S % 1024 == 0 else str(S))


def _short(status: str) -> str:
    """'oom (smaller S oom)' -> 'oom', 'error: ...' -> 'error', 'skip (time)' -> 'skip'."""
    return (status or "").split(":")[0].split(" ")[0][:8]


def pivot(rows, key, fmt, title) -> str:
    """One block per shape: rows = cases, columns = S, cells = fmt(row[key]) or the status."""
    out = [f"## {title}"]
    for shape in dict.fromkeys(r["shape"] for r in rows):
        rs = [r for r in rows if r["shape"] == shape]
        Ss = sorted({int(r["S"]) for r in rs})
        cases = list(dict.fromkeys(r["case"] for r in rs))
        out.append(f"{shape:22s}" + "".join(f"{_len(S):>9s}" for S in Ss))
        for c in cases:
            cells = []
            for S in Ss:
                r = next((x for x in rs if x["case"] == c and int(x["S"]) == S), None)
                v = _f(r.get(key)) if r else None
                cells.append(fmt(v) if v is not None else (_short(r["status"]) if r and r["status"] != "ok" else "-"))
            out.append(f"  {c:20s}" + "".join(f"{x:>9s}" for x in cells))
    return "\n".join(out)


def print_tables(rows, full: bool = False):
    """Kept under ~11k characters for 3 shapes x 6 lengths (the lead sees the last 12k of output)."""
    sparse = [r for r in rows if r["family"] != "dense"]
    print(pivot(rows, "ms", lambda v: f"{v:.3g}", "ms (kernel, index prebuilt; statuses: oom/error/skip)"))
    print(pivot(rows, "speedup", lambda v: f"{v:.2f}x", "speedup vs cuDNN dense"))
    print(pivot(sparse, "efficiency", lambda v: f"{v:.2f}", "efficiency = work x speedup (TFLOP/s on computed tiles (tile_cov) or pairs / cuDNN's)"))
    print(pivot(sparse, "coverage", lambda v: f"{v:.3f}", "coverage (share of causal pairs computed)"))
    print(pivot(sparse, "index_share", lambda v: f"{100 * v:.0f}%", "index-build share of (index + kernel)"))
    if full:
        print(pivot(sparse, "tile_cov", lambda v: f"{v:.3f}", "tile_cov: computed tiles x block^2 (+ gathered columns) / causal pairs"))
        print(pivot(rows, "peak_extra_mb", lambda v: f"{v:.0f}", "peak extra MiB (kernel)"))
        print(pivot(sparse, "op_ms", lambda v: f"{v:.3g}", "ms of the public function (validation + index from sets)"))
        print(pivot(sparse, "index_ms", lambda v: f"{v:.3g}", "index-build ms"))


def crossover(rows, shape, case, with_index: bool):
    """Smallest S from which the sparse case beats cuDNN at every measured S >= it (None: never)."""
    Ss = sorted({int(r["S"]) for r in rows if r["shape"] == shape})
    wins = {}
    for S in Ss:
        d = next((r for r in rows if r["shape"] == shape and int(r["S"]) == S and r["case"] == "dense-cudnn"), None)
        s = next((r for r in rows if r["shape"] == shape and int(r["S"]) == S and r["case"] == case), None)
        if not d or not s or _f(d.get("ms")) is None or _f(s.get("ms")) is None:
            continue
        t = _f(s["ms"]) + ((_f(s.get("index_ms")) or 0.0) if with_index else 0.0)
        wins[S] = t < _f(d["ms"])
    if not wins:
        return None
    best = None
    for S in sorted(wins, reverse=True):
        if not wins[S]:
            break
        best = S
    return best


def crossover_table(rows) -> str:
    out = ["## crossover: sparse beats cuDNN dense from S = (kernel only / kernel + index build)"]
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    cases = [c for c in dict.fromkeys(r["case"] for r in rows) if c != "dense-cudnn"]
    for shape in shapes:
        cells = []
        for c in cases:
            a, b = crossover(rows, shape, c, False), crossover(rows, shape, c, True)
            lo = min(int(r["S"]) for r in rows if r["shape"] == shape)
            name = lambda x: "never" if not x else ("<=" if x == lo else "") + _len(x)  # noqa: E731
            cells.append(f"{c}: {name(a)} / {name(b)}")
        out.append(f"  {shape:14s} " + "; ".join(cells))
    out.append("  (min_sparse_len: the largest 'kernel + index' value over the patterns used)")
    return "\n".join(out)


if __name__ == "__main__":
    rs = load_csv(sys.argv[1])
    print_tables(rs, full=True)
    if any(r["case"] == "dense-cudnn" for r in rs):
        print(crossover_table(rs))
