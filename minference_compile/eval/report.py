"""Tables, checks and files from the stored cells: summary.md / .json / .csv, needle heatmap, recall map."""
from __future__ import annotations

import csv
import json
import math
import pathlib
from dataclasses import dataclass
from typing import Sequence


@dataclass
class Thresholds:
    ppl_rise: float = 0.01  # sparse ppl may exceed dense by at most this fraction
    kv_drop: float = 0.02  # sparse accuracy may trail dense by at most this
    min_recall: float = 0.8  # mean per-head recall at every measured length


def _by(records: list, *keys) -> dict:
    out = {}
    for r in records:
        out[tuple(r.get(k) for k in keys)] = r
    return out


def recall_rows(records: list) -> list:
    """Recall measured in the dense ppl cells -> [{mode, length, recall, recall_mean, recall_min, density_mean}]."""
    out = []
    for r in records:
        if r["task"] == "ppl" and r["mode"] == "dense":
            for mode, x in (r.get("recall") or {}).items():
                out.append({"mode": mode, "length": r["length"], **x})
    return out


def checks(records: list, modes: Sequence[str], th: Thresholds) -> list:
    """-> [(mode, check name, passed, detail)] for the tasks measured."""
    out = []
    for mode in modes:
        if mode == "dense":
            continue
        needle = [r for r in records if r["task"] == "needle"]
        dense = _by([r for r in needle if r["mode"] == "dense"], "length", "depth")
        sparse = _by([r for r in needle if r["mode"] == mode], "length", "depth")
        both = [k for k in dense if k in sparse]
        if both and not any(dense[k]["found"] for k in both):  # nothing to lose: the check could not fail
            out.append((mode, "needle: dense baseline finds some needle", False,
                        f"dense found 0/{len(both)}: the comparison cannot judge the sparse path (check the "
                        "model, the prompt lengths and the answer decoding)"))
        elif both:
            lost = [k for k in both if dense[k]["found"] and not sparse[k]["found"]]
            out.append((mode, "needle: found wherever dense found", not lost,
                        f"{sum(sparse[k]['found'] for k in both)}/{len(both)} vs dense "
                        f"{sum(dense[k]['found'] for k in both)}/{len(both)}"
                        + (f"; lost at {', '.join(f'{L}@{d:g}' for L, d in lost)}" if lost else "")))
        ppl = [r for r in records if r["task"] == "ppl"]
        dense = _by([r for r in ppl if r["mode"] == "dense"], "length")
        for (L,), r in sorted(_by([r for r in ppl if r["mode"] == mode], "length").items()):
            if (L,) in dense:
                rise = r["ppl"] / dense[(L,)]["ppl"] - 1
                out.append((mode, f"ppl@{L}: within +{th.ppl_rise:.0%} of dense", rise <= th.ppl_rise,
                            f"{r['ppl']:.3f} vs {dense[(L,)]['ppl']:.3f} ({rise:+.2%})"))
        for r in sorted((x for x in recall_rows(records) if x["mode"] == mode), key=lambda x: x["length"]):
            out.append((mode, f"recall@{r['length']}: mean >= {th.min_recall}", r["recall_mean"] >= th.min_recall,
                        f"mean {r['recall_mean']:.3f}, min head {r['recall_min']:.3f}"))
        kv = [r for r in records if r["task"] == "kv"]
        for L in sorted({r["length"] for r in kv}):
            d = [r["found"] for r in kv if r["mode"] == "dense" and r["length"] == L]
            s = [r["found"] for r in kv if r["mode"] == mode and r["length"] == L]
            if d and s and not any(d):
                out.append((mode, f"kv@{L}: dense baseline answers some", False,
                            f"dense 0% over {len(d)} samples: the comparison cannot judge the sparse path"))
            elif d and s:
                ad, as_ = sum(d) / len(d), sum(s) / len(s)
                out.append((mode, f"kv@{L}: accuracy >= dense - {th.kv_drop:.0%}", as_ >= ad - th.kv_drop,
                            f"{as_:.0%} vs {ad:.0%} over {len(s)}/{len(d)} samples"))
    return out


def tables(records: list, modes: Sequence[str]) -> str:
    """Markdown tables: needle found per length, ppl per length, kv accuracy, recall."""
    lines = []
    lines += _found_table(records, "needle", "needle (found / depths per length)", modes,
                          lambda c: f"{sum(c)}/{len(c)}")
    ppl = [r for r in records if r["task"] == "ppl"]
    if ppl:
        lengths = sorted({r["length"] for r in ppl})
        dense = _by([r for r in ppl if r["mode"] == "dense"], "length")
        lines += ["perplexity of the last tokens (change vs dense)", "",
                  "| mode | " + " | ".join(f"{L}" for L in lengths) + " |", "|---|" + "---|" * len(lengths)]
        for m in modes:
            row = []
            for L in lengths:
                r = _by([r for r in ppl if r["mode"] == m], "length").get((L,))
                if r is None:
                    row.append("-")
                elif m == "dense" or (L,) not in dense:
                    row.append(f"{r['ppl']:.3f}")
                else:
                    row.append(f"{r['ppl']:.3f} ({r['ppl'] / dense[(L,)]['ppl'] - 1:+.2%})")
            lines.append(f"| {m} | " + " | ".join(row) + " |")
        lines.append("")
        rec = recall_rows(records)
        if rec:
            lines += ["attention recall of the selected pattern (mean / min over layers x heads)", "",
                      "| mode | length | mean | min | heads < 0.9 | keys kept |", "|---|---|---|---|---|---|"]
            for r in sorted(rec, key=lambda r: (modes.index(r["mode"]) if r["mode"] in modes else 99, r["length"])):
                flat = [x for row in r["recall"] for x in row if not math.isnan(x)]
                low = sum(x < 0.9 for x in flat)
                lines.append(f"| {r['mode']} | {r['length']} | {r['recall_mean']:.3f} | {r['recall_min']:.3f} | "
                             f"{low}/{len(flat)} | {r.get('density_mean') or float('nan'):.1%} |")
            lines.append("")
    lines += _found_table(records, "kv", "key-value retrieval accuracy (samples)", modes,
                          lambda c: f"{sum(c) / len(c):.0%} ({len(c)})")
    return "\n".join(lines)


def _found_table(records: list, task: str, title: str, modes: Sequence[str], cell) -> list:
    """A markdown table of `found` per mode and length for one task; `cell(found_list) -> str`."""
    rows = [r for r in records if r["task"] == task]
    if not rows:
        return []
    lengths = sorted({r["length"] for r in rows})
    out = [title, "", "| mode | " + " | ".join(f"{L}" for L in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for m in modes:
        found = [[r["found"] for r in rows if r["mode"] == m and r["length"] == L] for L in lengths]
        out.append(f"| {m} | " + " | ".join(cell(c) if c else "-" for c in found) + " |")
    return out + [""]


def write_csv(records: list, path: pathlib.Path) -> None:
    cols = ["task", "mode", "length", "depth", "sample", "found", "answer", "text", "ppl", "nll", "prefill_s",
            "wall_s", "prompt_tokens"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow(r)


def _wrap(title: str, fig) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(title, width=max(30, int(fig.get_figwidth() * 15))))


def needle_heatmap(records: list, modes: Sequence[str], path: pathlib.Path, title: str) -> bool:
    """One panel per mode: depth x length, green found / red missed (the seed's figure style)."""
    needle = [r for r in records if r["task"] == "needle"]
    if not needle:
        return False
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
    except ImportError:
        return False
    lengths = sorted({r["length"] for r in needle})
    depths = sorted({r["depth"] for r in needle})
    modes = [m for m in modes if any(r["mode"] == m for r in needle)]
    fig, axes = plt.subplots(1, len(modes), figsize=(1.6 + 1.1 * len(lengths) * len(modes), 0.5 * len(depths) + 2.0),
                             squeeze=False, constrained_layout=True)
    cmap = ListedColormap(["#d7301f", "#1a9850"])
    cells = _by(needle, "mode", "length", "depth")
    for ax, m in zip(axes[0], modes):
        grid = [[float("nan")] * len(lengths) for _ in depths]
        for i, d in enumerate(depths):
            for j, L in enumerate(lengths):
                r = cells.get((m, L, d))
                if r is not None:
                    grid[i][j] = float(r["found"])
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(lengths)), [f"{L // 1024}K" if L % 1024 == 0 else str(L) for L in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        ax.set_xlabel("context length")
        ax.set_title(m, fontsize=10)
        found = sum(1 for row in grid for x in row if x == 1.0)
        total = sum(1 for row in grid for x in row if not math.isnan(x))
        ax.text(0.5, -0.35 if len(depths) < 4 else -0.22, f"{found}/{total} found", transform=ax.transAxes,
                ha="center", fontsize=9)
    axes[0][0].set_ylabel("needle depth")
    fig.suptitle(_wrap(title, fig), fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def recall_map(records: list, modes: Sequence[str], path: pathlib.Path, title: str) -> bool:
    """Layer x head recall of each sparse mode at its longest measured length."""
    rec = recall_rows(records)
    if not rec:
        return False
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    picks = []
    for m in modes:
        mine = [r for r in rec if r["mode"] == m]
        if mine:
            picks.append(max(mine, key=lambda r: r["length"]))
    fig, axes = plt.subplots(1, len(picks), figsize=(3.6 * len(picks) + 1.2, 4.4), squeeze=False,
                             constrained_layout=True)
    im = None
    for ax, r in zip(axes[0], picks):
        im = ax.imshow(r["recall"], vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(f"{r['mode']} @ {r['length']}\nmean {r['recall_mean']:.3f}", fontsize=9)
        ax.set_xlabel("q head")
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="attention mass kept")
    fig.suptitle(_wrap(title, fig), fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(records: list, modes: Sequence[str], out: pathlib.Path, header: dict, th: Thresholds) -> dict:
    """summary.md, summary.json, cells.csv, needle.png, recall.png in ``out``; -> summary dict."""
    out.mkdir(parents=True, exist_ok=True)
    found = checks(records, modes, th)
    table = tables(records, modes)
    title = f"{header.get('model', '')} | {header.get('device', '')}"
    files = ["summary.md", "summary.json", "cells.csv"]
    if needle_heatmap(records, modes, out / "needle.png", "needle-in-a-haystack: " + title):
        files.append("needle.png")
    if recall_map(records, modes, out / "recall.png", "per-head attention recall: " + title):
        files.append("recall.png")
    write_csv(records, out / "cells.csv")
    check_lines = [f"- [{'x' if ok else ' '}] {m}: {name} — {detail}" for m, name, ok, detail in found]
    md = ["# minference-compile eval", ""] + [f"- {k}: {v}" for k, v in header.items()] + ["", table, "checks", ""] \
        + check_lines + [""]
    (out / "summary.md").write_text("\n".join(md), encoding="utf-8")
    summary = {"header": header, "checks": [dict(mode=m, check=n, passed=ok, detail=d) for m, n, ok, d in found],
               "passed": all(ok for _, _, ok, _ in found), "files": files}
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    summary["table"] = table
    summary["check_lines"] = check_lines
    return summary
