"""Where the time of vertical-slash on FA4 tiles goes (ops/fa4.vertical_slash, NOTES row 26): the tile lists, FA4's
block-sparse forward, and the Triton columns pass timed apart, the columns pass under each of its configs
(triton_kernels/vertical_slash_tiled.COLS_CONFIGS), with cuDNN dense and the whole path in the same process.

    python -m benchmarks.vs_fa4_split [--shape llama3-8b] [--cases 131072:131072,1048576:65536] [--budgets ...]

A case is kv_len:q_len (q_len < kv_len: the last chunk of a chunked pre-fill). Generated realistic sets
(benchmarks/indexsets.generate_vs), random q/k/v, bf16. CUDA with the [hopper] extra only. Every config's output is
checked against the default config's on the same inputs (max abs difference printed).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import torch


def _ms(fn):
    from .timing import bench_ms
    return bench_ms(fn)[0]


def run_case(shape, S, q_len, nv, ns, seed=0) -> dict:
    from minference_compile.ops import fa4
    from minference_compile.ops.fa4_lists import FA4Lists
    from minference_compile.triton_kernels import vertical_slash_tiled as vt
    from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index
    from .indexsets import generate_vs
    hq, hkv, D = shape
    q = torch.randn(1, hq, q_len, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, hkv, S, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    scale = 1 / math.sqrt(D)
    vert, slash = generate_vs(S, hq, nv, ns, seed=seed)
    index = build_vertical_slash_index(vert.cuda(), slash.cuda(), S, q_len=q_len)
    row = {"S": S, "q_len": q_len, "nv": nv, "ns": ns, "shape": f"{hq}/{hkv}/{D}"}
    if q_len == S:
        row["cudnn_ms"] = _ms(lambda: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=True))
    slots = index.tile_offset.shape[-1]
    lists = lambda: vt.tile_lists(index.slash_prefix, q_len, S, slots, vt.TILE)  # noqa: E731
    row["lists_ms"] = _ms(lists)
    fcnt, fidx, mcnt, midx = lists()
    bst = fa4.block_sparse_tensors(FA4Lists(mcnt, midx, fcnt, fidx, (vt.TILE, vt.TILE)))
    fa4_call = lambda: fa4._call("vertical-slash", q, k, v, scale, causal=True, block_sparse_tensors=bst,  # noqa: E731
                                 return_lse=True)
    row["fa4_ms"] = _ms(fa4_call)
    # the same call on FA4's native [B,S,H,D] storage (what a compiled model hands it for q): the layout's own cost
    qn, kn, vn = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    row["fa4_native_ms"] = _ms(lambda: fa4._call("vertical-slash", qn, kn, vn, scale, causal=True,
                                                 block_sparse_tensors=bst, return_lse=True))
    del qn, kn, vn
    o, lse = fa4_call()
    row["tiles_per_block"] = float(fcnt.double().mean() + mcnt.double().mean())
    ref = None
    scratch = o.clone()  # the timed calls rewrite it in place, over and over: never the compared output
    for cfg in vt.COLS_CONFIGS:
        work = o.clone()
        vt.columns_after(q, k, v, work, lse, index, scale, vt.TILE, cfg)
        if ref is None:
            ref = work
        name = "x".join(map(str, cfg))
        row[f"cols_{name}_maxdiff"] = float((work.float() - ref.float()).abs().max())
        row[f"cols_{name}_ms"] = _ms(lambda: vt.columns_after(q, k, v, scratch, lse, index, scale, vt.TILE, cfg))
    row["path_ms"] = _ms(lambda: fa4.vertical_slash(q, k, v, index, scale))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="32,8,128", help="hq,hkv,D (default llama3-8b 32,8,128)")
    ap.add_argument("--cases", default="131072:131072,1048576:65536", help="kv_len:q_len list")
    ap.add_argument("--budgets", default="1000/6096,100/800")
    ap.add_argument("--out", default=None, help="JSON file for the rows")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("vs_fa4_split: needs CUDA", file=sys.stderr)
        return 2
    from minference_compile.ops import fa4
    probe = torch.zeros(1, 2, 8, 128, device="cuda", dtype=torch.bfloat16)
    why = fa4.reason(probe, probe)
    if why is not None:
        print(f"vs_fa4_split: FA4 unavailable: {why}", file=sys.stderr)
        return 2
    shape = tuple(int(x) for x in a.shape.split(","))
    rows = []
    print(f"card: {torch.cuda.get_device_name()}  torch {torch.__version__}  shape {a.shape}")
    for case in a.cases.split(","):
        S, q_len = (int(x) for x in case.split(":"))
        for b in a.budgets.split(","):
            nv, ns = (int(x) for x in b.split("/"))
            row = run_case(shape, S, q_len, nv, ns)
            rows.append(row)
            cols = " ".join(f"{key[5:-3]} {val:.2f}" for key, val in row.items()
                            if key.startswith("cols_") and key.endswith("_ms"))
            diff = max(val for key, val in row.items() if key.endswith("_maxdiff"))
            print(f"S={S} q={q_len} ({nv},{ns}): cudnn {row.get('cudnn_ms', float('nan')):.2f} | path "
                  f"{row['path_ms']:.2f} = lists {row['lists_ms']:.3f} + FA4 {row['fa4_ms']:.2f} (native layout "
                  f"{row['fa4_native_ms']:.2f}) + columns [{cols}] "
                  f"ms (max diff between column configs {diff:.1e}; {row['tiles_per_block']:.1f} tiles/block)",
                  flush=True)
            torch.cuda.empty_cache()
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"card": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
