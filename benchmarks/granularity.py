"""Slash granularity: does computing scattered slashes at finer than 64x64 blocks pay on Hopper?

    python -m benchmarks.granularity [--seq 128k] [--budgets 1000/6096,100/800]

Same generated index sets, the vertical-slash kernel at block 64 (the library's semantics), 32 and 16:
a finer block computes fewer elements per scattered slash (a diagonal crosses `block` keys per `block`
rows) but runs smaller matrix products (64-row wgmma needs 4 warps; 16-row tiles fall back to mma.sync).
Reported per block: element density, block coverage (computed tiles + gathered columns), ms, and the
speedup over cuDNN dense in the same run.
"""
from __future__ import annotations

import argparse

import torch

from minference_compile.triton_kernels.vertical_slash import vertical_slash_attention_fwd
from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index

from . import coverage as cov
from .indexsets import generate_vs
from .registry import parse_length
from .timing import bench_ms, dense_causal_ms, random_qkv


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", default="128k")
    ap.add_argument("--budgets", default="1000/6096,100/800")
    ap.add_argument("--shape", default="32,8,128")
    args = ap.parse_args(argv)
    S = parse_length(args.seq)
    hq, hkv, D = (int(x) for x in args.shape.split(","))
    q, k, v = random_qkv(S, hq, hkv, D)
    dense_ms = dense_causal_ms(q, k, v)
    print(f"# {torch.cuda.get_device_name()} S={S} {hq}/{hkv}/{D}: SDPA dense {dense_ms:.1f} ms")
    print("budget     block  elem_density  block_cov     ms   speedup  efficiency  vs_block64")
    for budget in args.budgets.split(","):
        nv, ns = (int(x) for x in budget.split("/"))
        vert, slash = generate_vs(S, hq, nv, ns, seed=0)
        elem = float(cov.element_density(vert, slash, S).mean())
        vert, slash = vert.cuda(), slash.cuda()
        base = None
        for block in (64, 32, 16):
            index = build_vertical_slash_index(vert, slash, S, block=block)
            bcov = float(cov.vs_block_coverage(index, S, block).mean())
            ms = bench_ms(lambda: vertical_slash_attention_fwd(q, k, v, index, block=block))[0]
            base = base or ms
            print(f"{budget:10s} {block:5d}  {elem:12.3f}  {bcov:9.3f}  {ms:7.2f}  {dense_ms / ms:7.2f}x"
                  f"  {bcov * dense_ms / ms:10.2f}  {base / ms:9.2f}x")


if __name__ == "__main__":
    main()
