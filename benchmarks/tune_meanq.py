"""Launch configs of the mean query's log-mass kernel (triton_kernels/meanq_mass.py) at one length, CUDA only.

    python -m benchmarks.tune_meanq --seq 128k --shapes llama3-8b,qwen2.5-0.5b

Per shape: cuDNN's dense causal attention (the share's base), then for each (BLOCK_M, KCHUNK, warps, stages) the
kernel alone and the whole index build (`meanq_block_sparse_index`, top-100 fixed, which adds the fused select),
each checked equal to the default config's output. Prints the fastest; the default stays what CONFIG says.
"""
from __future__ import annotations

import argparse
import itertools
import json

import torch

from benchmarks.registry import SHAPES, parse_length as parse_len
from benchmarks.timing import bench_ms, dense_causal_ms, random_qkv

GRID = {"bm": (32, 64, 128), "kch": (16, 64, 100000), "warps": (4, 8), "stages": (2, 3)}  # 100000: one slice (the old launch)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", default="128k")
    ap.add_argument("--shapes", default="llama3-8b,qwen2.5-0.5b")
    ap.add_argument("--out", default="", help="every row as JSON")
    ap.add_argument("--configs", default="", help="log-mass launches to time, 'BM,KCHUNK,warps,stages;...' (default GRID)")
    ap.add_argument("--best", default="", help="write the best config over all shapes here (MINFERENCE_MEANQ_CONFIG form)")
    a = ap.parse_args(argv)
    from minference_compile.ops.adaptive import FIXED, meanq_block_sparse_index
    from minference_compile.triton_kernels import meanq_mass
    from minference_compile.triton_kernels.block_sparse_index import _block_means

    S = parse_len(a.seq)
    rows = []
    default = meanq_mass.CONFIG
    for shape in a.shapes.split(","):
        hq, hkv, D = SHAPES[shape]
        torch.manual_seed(0)
        q, k, v = random_qkv(S, hq, hkv, D)
        dense = dense_causal_ms(q, k, v)
        qm = _block_means(q, 64)
        ref_lse = meanq_mass.meanq_block_lse(qm, k, S, 0, D ** -0.5)
        ref_idx = meanq_block_sparse_index(q, k, 100, FIXED)
        print(f"{shape} S={S}: cuDNN {dense:.2f} ms; default {default}", flush=True)
        grid = ([tuple(int(x) for x in c.split(",")) for c in a.configs.split(";")] if a.configs
                else itertools.product(*GRID.values()))
        for cfg in grid:
            if cfg[0] == 128 and cfg[2] == 4:  # a [128, 64] fp32 tile per 4 warps spills
                continue
            try:
                lse = meanq_mass.meanq_block_lse(qm, k, S, 0, D ** -0.5, config=cfg)
                ok = torch.equal(torch.isinf(lse), torch.isinf(ref_lse)) and bool(
                    torch.allclose(lse.nan_to_num(0, 0, 0), ref_lse.nan_to_num(0, 0, 0), atol=1e-3, rtol=1e-3))
                kms = bench_ms(lambda: meanq_mass.meanq_block_lse(qm, k, S, 0, D ** -0.5, config=cfg))[0]
                meanq_mass.CONFIG = cfg
                ok = ok and torch.equal(meanq_block_sparse_index(q, k, 100, FIXED), ref_idx)
                ims = bench_ms(lambda: meanq_block_sparse_index(q, k, 100, FIXED))[0]
            except Exception as e:  # noqa: BLE001 (a config that does not compile: reported, skipped)
                print(f"  {cfg}: {type(e).__name__}: {str(e)[:120]}")
                continue
            finally:
                meanq_mass.CONFIG = default
            rows.append(dict(shape=shape, S=S, config=cfg, kernel_ms=kms, index_ms=ims, dense_ms=dense, equal=ok))
            print(f"  {cfg}: kernel {kms:.3f} ms, index {ims:.3f} ms ({100 * ims / dense:.2f}% of cuDNN)"
                  + ("" if ok else "  OUTPUT DIFFERS"), flush=True)
        mine = [r for r in rows if r["shape"] == shape and r["equal"]]
        if mine:
            best = min(mine, key=lambda r: r["index_ms"])
            dflt = next((r for r in mine if tuple(r["config"]) == tuple(default)), None)
            print(f"  best {best['config']}: index {best['index_ms']:.3f} ms ({100 * best['index_ms'] / dense:.2f}%)"
                  + (f"; default {dflt['index_ms']:.3f} ms" if dflt else ""), flush=True)
    # the fused select's warps per row (rows of 2048 blocks at 128K), at the best log-mass launch: top-100 and an
    # adaptive build (tau 0.95, cap 256: its mass bisection runs), each checked equal to the default warps' ids
    from minference_compile.triton_kernels import block_mass_select as bms
    best_cfg = _best(rows, a.shapes)
    for shape in a.shapes.split(","):
        hq, hkv, D = SHAPES[shape]
        torch.manual_seed(0)
        q, k, v = random_qkv(S, hq, hkv, D)
        meanq_mass.CONFIG = best_cfg or default
        refs = [meanq_block_sparse_index(q, k, 100, FIXED), meanq_block_sparse_index(q, k, 256, 0.95)]
        for w in (2, 4, 8, 16):
            bms.WARPS[2048] = w
            try:
                same = all(torch.equal(meanq_block_sparse_index(q, k, *ct), r)
                           for ct, r in zip(((100, FIXED), (256, 0.95)), refs))
                t = [bench_ms(lambda: meanq_block_sparse_index(q, k, *ct))[0] for ct in ((100, FIXED), (256, 0.95))]
            except Exception as e:  # noqa: BLE001
                print(f"  select warps {w}: {type(e).__name__}: {str(e)[:120]}")
                continue
            rows.append(dict(shape=shape, S=S, select_warps=w, config=meanq_mass.CONFIG, index_ms=t[0],
                             adaptive_index_ms=t[1], equal=same))
            print(f"  {shape} select warps {w}: index top-100 {t[0]:.3f} ms, tau 0.95 cap 256 {t[1]:.3f} ms"
                  + ("" if same else "  IDS DIFFER"), flush=True)
        bms.WARPS.pop(2048, None)
    meanq_mass.CONFIG = default
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)
    sel = {}
    for r in rows:
        if "select_warps" in r and r["equal"]:
            sel.setdefault(r["select_warps"], []).append(r["index_ms"] + r["adaptive_index_ms"])
    sel = {w: sum(v) for w, v in sel.items() if len(v) == len(a.shapes.split(","))}
    if sel:
        print(f"best select warps at 2048 blocks: {min(sel, key=sel.get)}")
        if a.best:
            with open(a.best + ".select", "w") as f:
                f.write(f"2048:{min(sel, key=sel.get)}")
    if a.best and best_cfg:
        with open(a.best, "w") as f:
            f.write(",".join(str(x) for x in best_cfg))
    return 0


def _best(rows: list, shapes: str):
    """The log-mass launch with the least summed index share over the shapes (equal outputs only), or None."""
    sums = {}
    for r in rows:
        if r["equal"] and "dense_ms" in r:
            sums.setdefault(tuple(r["config"]), []).append(r["index_ms"] / r["dense_ms"])
    full = {c: sum(v) for c, v in sums.items() if len(v) == len(shapes.split(","))}
    return min(full, key=full.get) if full else None


if __name__ == "__main__":
    raise SystemExit(main())
