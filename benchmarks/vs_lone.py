"""Lone slashes on the exact-diagonal pass (NOTES rows 39, 41): per lone_k, the FA4 tiles the band offsets still
touch, the split's cost, and the columns pass with the lone diagonals, timed apart on one GPU (no FA4 needed:
the pass continues any (out, lse); FA4's part is predicted from its tiles at the rate row 26 measured).

    python -m benchmarks.vs_lone [--shape 28,4,128] [--cases 1048576:65536,131072:131072] [--budgets 1000/6096,100/800]
        [--lone 0,1,2,4] [--ns-per-tile 14.37]

Generated realistic sets (benchmarks/indexsets.generate_vs), random q/k/v, bf16, CUDA. lone_k 0 = today's path.
"""
from __future__ import annotations

import argparse
import math

import torch

# FA4's sm90 block-sparse forward on the H200 per 128 x 128 tile at D = 128 (NOTES row 26: 332.1 ms for
# 1411 tiles x 512 blocks x 32 heads on the last 64K chunk of 1M)
NS_PER_TILE = 332.1e6 / (1411 * 512 * 32)


def run_case(shape, S, q_len, nv, ns, lone_ks, ns_per_tile, seed=0) -> list:
    from minference_compile.triton_kernels import vertical_slash_tiled as vt
    from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index

    from .indexsets import generate_vs
    from .timing import bench_ms
    hq, hkv, D = shape
    q = torch.randn(1, hq, q_len, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, hkv, S, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    scale = 1 / math.sqrt(D)
    vert, slash = generate_vs(S, hq, nv, ns, seed=seed)
    vert, slash = vert.cuda(), slash.cuda()
    index = build_vertical_slash_index(vert, slash, S, q_len=q_len)
    o0 = torch.randn(1, q_len, hq, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    lse = torch.randn(1, hq, q_len, device="cuda", dtype=torch.float32) + 10.0
    rows = []
    for lk in lone_ks:
        lone = vt.split_lone(slash, index.slash_prefix, index.columns, S, lk) if lk > 0 else None
        prefix = lone[0] if lone is not None else index.slash_prefix
        fcnt, _, mcnt, _ = vt.tile_lists(prefix, q_len, S, index.tile_offset.shape[-1])
        tiles = int(fcnt.sum() + mcnt.sum())
        split_ms = bench_ms(lambda: vt.split_lone(slash, index.slash_prefix, index.columns, S, lk))[0] if lk else 0.0
        out = o0.clone()
        cols_ms = bench_ms(lambda: vt.columns_after(q, k, v, out, lse, index, scale, lone=lone))[0]
        row = {"S": S, "q_len": q_len, "budget": f"{nv}/{ns}", "lone_k": lk, "tiles": tiles,
               "lone_per_head": float(lone[2].float().mean()) if lone is not None else 0.0,
               "fa4_pred_ms": tiles * ns_per_tile * 1e-6, "split_ms": split_ms, "columns_ms": cols_ms}
        row["total_pred_ms"] = row["fa4_pred_ms"] + split_ms + cols_ms
        rows.append(row)
        print(f"S={S:8d} q={q_len:7d} {nv}/{ns} lone_k={lk}: tiles {tiles:10d} (lone/head {row['lone_per_head']:6.1f}) "
              f"FA4 pred {row['fa4_pred_ms']:8.2f} ms + split {split_ms:6.3f} + columns(+lone) {cols_ms:7.3f} "
              f"= {row['total_pred_ms']:8.2f} ms ({row['total_pred_ms'] / rows[0]['total_pred_ms']:.3f})", flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="28,4,128")
    ap.add_argument("--cases", default="1048576:65536,131072:131072")
    ap.add_argument("--budgets", default="1000/6096,100/800")
    ap.add_argument("--lone", default="0,1,2,4")
    ap.add_argument("--ns-per-tile", type=float, default=NS_PER_TILE)
    a = ap.parse_args(argv)
    shape = tuple(int(x) for x in a.shape.split(","))
    print(f"# {torch.cuda.get_device_name()} shape {shape}, FA4 {a.ns_per_tile:.2f} ns per 128x128 tile (row 26)")
    for case in a.cases.split(","):
        S, q_len = (int(x) for x in case.split(":"))
        for b in a.budgets.split(","):
            nv, ns = (int(x) for x in b.split("/"))
            run_case(shape, S, q_len, nv, ns, [int(x) for x in a.lone.split(",")], a.ns_per_tile)


if __name__ == "__main__":
    main()
