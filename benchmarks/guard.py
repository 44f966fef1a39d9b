"""What the vs_max_work check costs and saves: `sparse_prefill` on an all-VS layer vs cuDNN, same run.

    python -m benchmarks.guard [--seq 128k] [--shape llama3-8b]

Random q/k give the estimate spread-out slashes; the work share it implies is printed. vs_max_work = 1.0 runs
the sparse kernel whatever the work; a limit under the work sends the layer to cuDNN after the estimate (the
check's whole cost: estimate + index build + one host sync).
"""
from __future__ import annotations

import argparse

import torch

from minference_compile import reset_runtime_stats, runtime_stats

from minference_compile.ops.estimate import LOCAL_WINDOW, SINK_TOKENS, estimate_vertical_slash
from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index, work_share

from .registry import SHAPES, VS_DEFAULT, parse_length
from .timing import bench_ms, dense_causal_ms, random_qkv


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", default="128k")
    ap.add_argument("--shape", default="llama3-8b")
    a = ap.parse_args(argv)
    S = parse_length(a.seq)
    hq, hkv, D = SHAPES[a.shape]
    q, k, v = random_qkv(S, hq, hkv, D)
    nv, ns = VS_DEFAULT
    pats, vs, ss = [1] * hq, [nv] * hq, [ns] * hq
    vert, slash = estimate_vertical_slash(q, k, vs, ss, 64, SINK_TOKENS, LOCAL_WINDOW)
    work = float(work_share(build_vertical_slash_index(vert, slash, S), S).mean())
    dense = dense_causal_ms(q, k, v)
    print(f"# {torch.cuda.get_device_name()} {a.shape} S={S}: cuDNN {dense:.2f} ms; VS ({nv}, {ns}) work {work:.3f}")
    from minference_compile.ops.dense import dense_attention
    parts = {"dense_attention (the fallback's SDPA call)": lambda: dense_attention(q, k, v, D ** -0.5),
             "estimate_vertical_slash": lambda: estimate_vertical_slash(q, k, vs, ss, 64, SINK_TOKENS,
                                                                  LOCAL_WINDOW),
             "build_vertical_slash_index": lambda: build_vertical_slash_index(vert, slash, S, pair=D > 64)}
    for name, fn in parts.items():
        print(f"  {name:45s} {bench_ms(fn)[0]:8.2f} ms")
    for limit in (1.0, max(0.01, work - 0.05)):
        reset_runtime_stats()
        ms = bench_ms(lambda: torch.ops.minference.sparse_prefill(q, k, v, pats, vs, ss, D ** -0.5, 0, 64, limit))[0]
        fell = any(ran == "dense" for per in runtime_stats().values() for ran, _ in per)
        print(f"  vs_max_work={limit:.2f}: {ms:8.2f} ms = {dense / ms:.2f}x cuDNN ({'dense fallback' if fell else 'sparse'})")
    print(f"  cuDNN again: {dense_causal_ms(q, k, v):.2f} ms")


if __name__ == "__main__":
    main()
