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
        for cfg in itertools.product(*GRID.values()):
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
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)
    if a.best and rows:  # the config with the least summed index time over the shapes (all equal outputs)
        sums = {}
        for r in rows:
            if r["equal"]:
                sums.setdefault(tuple(r["config"]), []).append(r["index_ms"] / r["dense_ms"])
        n = len(a.shapes.split(","))
        full = {c: sum(v) for c, v in sums.items() if len(v) == n}
        if full:
            with open(a.best, "w") as f:
                f.write(",".join(str(x) for x in min(full, key=full.get)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
