"""Speedup vs length per case (log x), one panel per shape: `python -m benchmarks.plot results/x.csv [y.csv ...]
[-o out.png]` (several CSVs: their rows merged, e.g. an e2e one-shot run and a chunked one)."""
from __future__ import annotations

import argparse
import os
import sys

from .report import _f, load_csv


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv", nargs="+")
    ap.add_argument("-o", "--output", default=None, help="PNG path (default: next to the CSV)")
    ap.add_argument("--metric", default="speedup", choices=["speedup", "efficiency", "ms", "coverage"])
    ap.add_argument("--ylabel", default=None, help="y axis label (default: the metric, 'vs cuDNN dense' for speedup)")
    ap.add_argument("--title", default=None, help="panel title (default: the shape)")
    a = ap.parse_args(argv)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("benchmarks.plot needs matplotlib (pip install matplotlib); the CSV is readable as is.", file=sys.stderr)
        return 1
    rows = [r for path in a.csv for r in load_csv(path) if _f(r.get(a.metric)) is not None]
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    if not shapes:
        print(f"no '{a.metric}' values in {', '.join(a.csv)}", file=sys.stderr)
        return 1
    colors = plt.get_cmap("tab20")  # more than 10 cases: tab10 would repeat colours
    fig, axes = plt.subplots(1, len(shapes), figsize=(6 * len(shapes), 4.5), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        rs = [r for r in rows if r["shape"] == shape]
        for i, case in enumerate(dict.fromkeys(r["case"] for r in rs)):
            pts = sorted((int(r["S"]), _f(r[a.metric])) for r in rs if r["case"] == case)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=case, color=colors(i % 20),
                    linestyle="--" if case.startswith(("dense", "flex")) else "-")
        ax.set_xscale("log", base=2)
        if a.metric in ("speedup", "ms"):
            ax.set_yscale("log")
        if a.metric == "speedup":
            ax.axhline(1.0, color="gray", linewidth=0.8)
        ax.set_xlabel("sequence length S")
        ax.set_ylabel(a.ylabel or (a.metric + (" vs cuDNN dense" if a.metric == "speedup" else "")))
        ax.set_title(a.title or shape, fontsize=9 if a.title else None)
        ax.grid(True, which="both", alpha=0.3)
    # one legend for all panels: a case missing from the last panel (e.g. flex at one shape) still gets an entry
    handles = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    axes[0][-1].legend(list(handles.values()), list(handles.keys()), fontsize=7, loc="best")
    fig.tight_layout()
    out = a.output or os.path.splitext(a.csv[0])[0] + f"-{a.metric}.png"
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
