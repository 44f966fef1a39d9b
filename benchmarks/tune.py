"""Sweep num_warps / num_stages (and A-shape BLOCK_M) of the three kernels, and profile the index build.

    python -m benchmarks.tune [--seq 64k] [--shapes llama3-8b,qwen2.5-0.5b] [--profile-seq 128k]

Each kernel's config table (`_CFG` right above the kernel) is patched per run; the winner per head dim
goes back into that table by hand, with the measurement in benchmarks/NOTES.md. bf16, B=1, random data,
realistic VS index sets (benchmarks/indexsets.generate_vs) at the seed's default budgets.
"""
from __future__ import annotations

import argparse
import itertools

import torch
import triton

from minference_compile.ops.estimate import estimate_vertical_slash
from minference_compile.triton_kernels import block_sparse, streaming, vertical_slash
from minference_compile.triton_kernels.block_sparse_index import block_sparse_index
from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index

from .indexsets import generate_vs
from .registry import SHAPES, parse_length
from .timing import bench_ms, dense_causal_ms, random_qkv


def _flops(S: int, hq: int, D: int, cov: float) -> float:
    return 4.0 * D * hq * S * (S + 1) / 2 * cov


def sweep(shape: str, S: int, only=None, stages_list=(1, 2, 3, 4), ashape_bn=(64,)) -> None:
    hq, hkv, D = SHAPES[shape]
    q, k, v = random_qkv(S, hq, hkv, D)
    bd = max(16, triton.next_power_of_2(D))
    dense_ms = dense_causal_ms(q, k, v)
    dense_tf = _flops(S, hq, D, 1.0) / dense_ms / 1e9
    print(f"\n## {shape} S={S} D={D}: SDPA (default backend) {dense_ms:.2f} ms = {dense_tf:.0f} TFLOP/s")

    vert, slash = (t.cuda() for t in generate_vs(S, hq, 1000, 6096, seed=0))
    vidx = build_vertical_slash_index(vert, slash, S, pair=False)
    vidx_pair = build_vertical_slash_index(vert, slash, S, pair=True)
    bidx = block_sparse_index(q, k, 100)
    from .coverage import coverage  # noqa: PLC0415
    cov_vs = float(coverage(vert.cpu(), slash.cpu(), S).mean())
    cov_bs = min(1.0, float((bidx >= 0).sum()) * 64 * 64 / (hq * S * (S + 1) / 2))
    cov_as = min(1.0, (128 + 4096) * S / (S * (S + 1) / 2))
    runs = {
        "vs": (vertical_slash, lambda: vertical_slash.vertical_slash_attention_fwd(q, k, v, vidx), cov_vs, False),
        "vs+pair": (vertical_slash, lambda: vertical_slash.vertical_slash_attention_fwd(q, k, v, vidx_pair),
                    cov_vs, False, "_CFG_WIDE"),
        "bs": (block_sparse, lambda: block_sparse.block_sparse_attention_fwd(q, k, v, bidx, compact=True), cov_bs, False),
        "ashape": (streaming, lambda: streaming.streaming_attention_fwd(
            q, k, v, torch.full((hq,), 128, dtype=torch.int32, device="cuda"),
            torch.full((hq,), 4096, dtype=torch.int32, device="cuda")), cov_as, True),
    }
    for name, (mod, fn, cov, has_bm, *attr) in runs.items():
        if only and name not in only:
            continue
        table = getattr(mod, attr[0] if attr else "_CFG")  # the config table this variant reads
        orig = dict(table)
        results = []
        bms = (64, 128) if has_bm else (None,)
        bns = ashape_bn if has_bm else (None,)  # A-shape only: key tile width (streaming._BLOCK_N)
        orig_bn = dict(streaming._BLOCK_N)
        for bm, bn, warps, stages in itertools.product(bms, bns, (4, 8), stages_list):
            table[bd] = (bm, warps, stages) if has_bm else (warps, stages)
            if bn:
                streaming._BLOCK_N[bd] = bn
            try:
                ms = bench_ms(fn)[0]
            except Exception as e:  # out of shared memory / registers for this config
                print(f"  {name:7s} bm={bm} bn={bn} w={warps} s={stages}: {type(e).__name__}")
                continue
            eff = _flops(S, hq, D, cov) / ms / 1e9 / dense_tf
            results.append((ms, bm, bn, warps, stages, eff))
        table.clear()
        table.update(orig)
        streaming._BLOCK_N.clear()
        streaming._BLOCK_N.update(orig_bn)
        results.sort()
        cur = orig.get(bd)
        print(f"  {name:7s} cov={cov:.3f} current {cur}; best 4:")
        for ms, bm, bn, warps, stages, eff in results[:4]:
            print(f"    bm={bm} bn={bn} warps={warps} stages={stages}: {ms:8.3f} ms  efficiency {eff:.2f}")


def profile_index(S: int) -> None:
    q, k, _ = random_qkv(S, 32, 8, 128)
    vert, slash = estimate_vertical_slash(q, k, 1000, 6096)
    parts = {
        "estimate_vertical_slash(1000, 6096)": lambda: estimate_vertical_slash(q, k, 1000, 6096),
        "build_vertical_slash_index": lambda: build_vertical_slash_index(vert, slash, S),
        "block_sparse_index(top100)": lambda: block_sparse_index(q, k, 100),
        "block_sparse_index(top100, impl=torch)": lambda: block_sparse_index(q, k, 100, impl="torch"),
    }
    print(f"\n## index build at S={S}, 32/8/128")
    for name, fn in parts.items():
        print(f"  {name:40s} {bench_ms(fn)[0]:8.3f} ms")
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415
    for name, fn in parts.items():
        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        print(f"  -- {name}: top CUDA kernels")
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=6, max_name_column_width=60)
        print("\n".join(table.splitlines()[:10]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", default="64k")
    ap.add_argument("--shapes", default="llama3-8b,qwen2.5-0.5b")
    ap.add_argument("--profile-seq", default="128k")
    ap.add_argument("--stages", default="1,2,3,4")
    ap.add_argument("--ashape-bn", default="64", help="A-shape key tile widths to sweep, e.g. 64,128")
    ap.add_argument("--kernels", default="", help="comma list of vs,vs+pair,bs,ashape (default: all)")
    args = ap.parse_args(argv)
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}")
    if args.profile_seq:
        profile_index(parse_length(args.profile_seq))
    for shape in args.shapes.split(","):
        sweep(shape, parse_length(args.seq), [x for x in args.kernels.split(",") if x],
              tuple(int(x) for x in args.stages.split(",")), tuple(int(x) for x in args.ashape_bn.split(",")))


if __name__ == "__main__":
    main()
