"""The benchmark runner: dense SDPA (cuDNN, flash), FlexAttention and our sparse ops, bf16, B=1.

    python -m benchmarks.run [--lengths 8k,16k,...,1m] [--shapes llama3-8b,qwen2.5-7b,qwen2.5-0.5b]
                             [--cases a,b] [--out DIR] [--quick] [--crossover] [--commit SHA] [--max-minutes M]

Per row: ms (kernel with its index prebuilt), op_ms (public function: validation + index from the given
sets), index_ms (index build from q/k: estimate_vertical_slash (the torch scores; the fused Triton
ones with MINFERENCE_FUSED_ESTIMATE=1, NOTES.md #19) + build_vertical_slash_index, or
block_sparse_index, or the flex BlockMask build), coverage (share of causal pairs computed), speedup
vs cuDNN dense (same shape/S), efficiency = achieved TFLOP/s on the computed pairs / cuDNN's dense TFLOP/s
(= coverage x speedup), peak extra memory beyond inputs, prebuilt index and output. CSV + JSON are
rewritten after every row, so a run cut short keeps what it measured. Imports on machines without CUDA.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import time
import traceback

from . import registry as R

FIELDS = ["shape", "Hq", "Hkv", "D", "S", "case", "family", "status", "ms", "n_timed", "op_ms", "index_ms",
          "index_share", "coverage", "tile_cov", "tflops", "speedup", "efficiency", "peak_extra_mb",
          "op_peak_extra_mb", "note"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default=None, help=f"comma list, k/m suffixes (default {R.DEFAULT_LENGTHS})")
    ap.add_argument("--shapes", default=None, help=f"comma list of {list(R.SHAPES)} (default all)")
    ap.add_argument("--cases", default=None, help=f"comma list of {list(R.CASE_BY_NAME)} (default all)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--quick", action="store_true", help="a few sizes/cases, < 3 minutes")
    ap.add_argument("--crossover", action="store_true", help="sparse vs cuDNN at 1K..32K: where dense wins")
    ap.add_argument("--commit", default=None, help="git commit to record (when the machine has no git)")
    ap.add_argument("--tag", default="", help="suffix for the output file names")
    ap.add_argument("--max-minutes", type=float, default=9.0, help="stop starting new cases after this")
    ap.add_argument("--flex-block", type=int, default=128, choices=[64, 128], help="FlexAttention BLOCK_SIZE")
    ap.add_argument("--no-index", action="store_true", help="skip index-build and op timings")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def resolve(a) -> tuple:
    """(lengths, shapes, cases) from the arguments (quick / crossover presets, explicit lists win)."""
    if a.crossover:
        lengths = R.parse_lengths(a.lengths) if a.lengths else R.CROSSOVER_LENGTHS
        cases = R.parse_cases(a.cases or ",".join(["dense-cudnn"] + R.CROSSOVER_CASES))
        shapes = R.parse_shapes(a.shapes or ",".join(R.SHAPES))
        return lengths, shapes, cases
    q = R.QUICK if a.quick else {}
    lengths = R.parse_lengths(a.lengths or q.get("lengths", R.DEFAULT_LENGTHS))
    shapes = R.parse_shapes(a.shapes or q.get("shapes", ",".join(R.SHAPES)))
    cases = R.parse_cases(a.cases or q.get("cases"))
    return lengths, shapes, cases


def metadata(a) -> dict:
    import torch
    m = {"argv": sys.argv, "time": datetime.datetime.now().isoformat(timespec="seconds"),
         "torch": torch.__version__, "cuda": torch.version.cuda,
         "card": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    for mod in ("triton", "transformers", "numpy"):
        try:
            m[mod] = __import__(mod).__version__
        except Exception:
            m[mod] = None
    commit = a.commit
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                    cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
        except Exception:
            commit = None
    m["commit"] = commit
    m["env"] = {k: v for k, v in os.environ.items() if k.startswith(("PYTORCH_", "TORCHINDUCTOR_", "TRITON_", "CUDA_"))}
    return m


def _fmt(x, nd=3):
    return "" if x is None or x == "" else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def write(rows, meta, path_base):
    with open(path_base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k), 5) for k in FIELDS})
    with open(path_base + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1, default=str)


def run_case(case, q, k, v, S, a) -> dict:
    import torch
    from . import cases as C, timing as T
    out_bytes = q.numel() * q.element_size()
    r = {"case": case.name, "family": case.family}
    p = C.prepare(case, q, k, v, S, a.flex_block)
    r["coverage"], r["tile_cov"], r["note"] = p.coverage, p.tile_cov, p.note
    r["ms"], r["n_timed"] = T.bench_ms(p.fn)
    r["peak_extra_mb"] = T.peak_extra_mb(p.fn, out_bytes)
    if not a.no_index:
        if p.index_fn is not None:
            r["index_ms"], _ = T.bench_ms(p.index_fn)
            r["index_share"] = r["index_ms"] / (r["index_ms"] + r["ms"])
        if p.op_fn is not None:
            r["op_ms"], _ = T.bench_ms(p.op_fn)
            r["op_peak_extra_mb"] = T.peak_extra_mb(p.op_fn, out_bytes)
    del p
    torch.cuda.empty_cache()
    r["status"] = "ok"
    return r


def finish_group(group, S, Hq, D):
    """Fill tflops, speedup and efficiency of one (shape, S) group from its cuDNN (else flash) row."""
    ref = next((r for r in group if r["case"] == "dense-cudnn" and r["status"] == "ok"), None) or \
        next((r for r in group if r["case"] == "dense-flash" and r["status"] == "ok"), None)
    for r in group:
        if r["status"] != "ok":
            continue
        r["tflops"] = R.dense_flops(S, Hq, D) * r["coverage"] / (r["ms"] * 1e-3) / 1e12
        if ref is not None:
            r["speedup"] = ref["ms"] / r["ms"]
            # efficiency on the work the kernel does: its computed tiles (tile_cov) where known, else pairs
            r["efficiency"] = (r["tile_cov"] or r["coverage"]) * r["speedup"]
            if ref["case"] != "dense-cudnn":
                r["note"] = (r.get("note") or "") + " [ref: flash]"


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    lengths, shapes, cases = resolve(a)
    import torch
    if not torch.cuda.is_available():
        print("benchmarks.run: no CUDA device; nothing to time (arguments parsed fine).", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    meta = metadata(a)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    mode = "crossover" if a.crossover else ("quick" if a.quick else "full")
    base = os.path.join(a.out, f"bench-{mode}-{stamp}{('-' + a.tag) if a.tag else ''}")
    meta.update(mode=mode, lengths=lengths, shapes=shapes, cases=[c.name for c in cases])
    print(f"# {meta['card']} torch {meta['torch']} triton {meta['triton']} commit {meta['commit']} -> {base}.csv",
          flush=True)
    t0 = time.time()
    rows, dead = [], {}  # dead: (shape, case) -> reason larger S is skipped
    last = {}            # (shape, case) -> (S, ms) for time prediction
    for shape in shapes:
        Hq, Hkv, D = R.SHAPES[shape]
        for S in lengths:
            group = []
            need = 2 * S * D * (2 * Hq + 2 * Hkv) * 2  # q, k, v, out, and as much again of headroom
            free, _ = torch.cuda.mem_get_info()
            qkv = None
            if need <= free:
                try:
                    g = torch.Generator(device="cuda").manual_seed(a.seed)
                    mk = lambda h: torch.randn(1, h, S, D, device="cuda", dtype=torch.bfloat16, generator=g)  # noqa
                    qkv = (mk(Hq), mk(Hkv), mk(Hkv))
                except torch.cuda.OutOfMemoryError:
                    qkv = None
            for case in cases:
                r = {"shape": shape, "Hq": Hq, "Hkv": Hkv, "D": D, "S": S, "case": case.name, "family": case.family}
                left = a.max_minutes * 60 - (time.time() - t0)
                prev = last.get((shape, case.name))
                predicted = prev[1] * (S / prev[0]) ** 2 * 8 / 1000 if prev else 0.0  # ~8 calls, s
                if qkv is None:
                    r["status"] = "oom (inputs)"
                elif (shape, case.name) in dead:
                    r["status"] = dead[(shape, case.name)]
                elif left <= 0 or predicted > left:
                    r["status"] = "skip (time)"
                else:
                    try:
                        r.update(run_case(case, *qkv, S, a))
                        last[(shape, case.name)] = (S, r["ms"])
                    except Exception as e:  # one case failing must not end the run
                        oom = isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()
                        r["status"] = "oom" if oom else f"error: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
                        if oom:
                            dead[(shape, case.name)] = "oom (smaller S oom)"
                        else:
                            traceback.print_exc(limit=3)
                        torch.cuda.empty_cache()
                group.append(r)
                rows.append(r)
                print(f"  {shape:13s} S={S:>8d} {case.name:22s} {r['status']:>6s} ms={_fmt(r.get('ms'))} "
                      f"cov={_fmt(r.get('coverage'))} idx={_fmt(r.get('index_ms'))} "
                      f"t={time.time() - t0:.0f}s", flush=True)
                finish_group(group, S, Hq, D)
                write(rows, meta, base)
            del qkv
            torch.cuda.empty_cache()
    meta["wall_s"] = time.time() - t0
    write(rows, meta, base)
    from .report import print_tables, crossover_table
    print_tables(rows)
    if a.crossover:
        print(crossover_table(rows))
    print(f"# wrote {base}.csv and .json ({meta['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
