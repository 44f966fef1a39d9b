"""Peak extra GPU memory of each op beyond q, k, v and the output (issue: <= size of q, never S x S).

    python -m benchmarks.memory [--seq 128k] [--shape 32,8,128]

Measures torch.cuda.max_memory_allocated around one call (after a warm-up call, so Triton's
compile-time buffers are not counted) minus what was allocated before it and the output.
"""
from __future__ import annotations

import argparse

import torch

from minference_compile.ops import (block_sparse_attention, estimate_vertical_slash, streaming_forward,
                                    vertical_slash_sparse_attention)
from minference_compile.ops.library import sparse_prefill

from .registry import parse_length
from .timing import random_qkv


def peak_extra(fn) -> int:
    fn()  # warm-up (compilation, autotuning)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    outs = out if isinstance(out, tuple) else (out,)
    out_bytes = sum(t.numel() * t.element_size() for t in outs)
    return torch.cuda.max_memory_allocated() - base - out_bytes


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", default="128k")
    ap.add_argument("--shape", default="32,8,128", help="Hq,Hkv,D")
    args = ap.parse_args(argv)
    S = parse_length(args.seq)
    Hq, Hkv, D = (int(x) for x in args.shape.split(","))
    q, k, v = random_qkv(S, Hq, Hkv, D)
    vert, slash = estimate_vertical_slash(q, k, 1000, 6096)
    q_bytes = q.numel() * q.element_size()
    cases = {
        "estimate_vertical_slash(1000, 6096)": lambda: estimate_vertical_slash(q, k, 1000, 6096),
        "vertical_slash_sparse_attention": lambda: vertical_slash_sparse_attention(q, k, v, vert, slash),
        "block_sparse_attention(top100)": lambda: block_sparse_attention(q, k, v, 100),
        "streaming_forward(128, 4096)": lambda: streaming_forward(q, k, v, 128, 4096),
        "sparse_prefill(vs 1000/6096, estimate included)": lambda: sparse_prefill(
            q, k, v, [1] * Hq, [1000] * Hq, [6096] * Hq, D ** -0.5, 0, 64),
    }
    print(f"card {torch.cuda.get_device_name()}  S={S} Hq/Hkv/D={Hq}/{Hkv}/{D}  size of q {q_bytes / 2**20:.0f} MiB")
    for name, fn in cases.items():
        extra = peak_extra(fn)
        print(f"{name:50s} peak extra {extra / 2**20:9.1f} MiB  ({extra / q_bytes:.3f} x q)")


if __name__ == "__main__":
    main()
