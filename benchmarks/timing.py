"""GPU timing and memory measurement (CUDA only; imported lazily by the runner)."""
from __future__ import annotations

import statistics

import torch


def bench_ms(fn, slow_ms: float = 250.0, slow_reps: int = 3) -> tuple:
    """Median ms of fn(). Fast calls: triton.testing.do_bench (median). Calls slower than `slow_ms` (1M-token
    dense) would make do_bench run for minutes: those get 1 warm-up + `slow_reps` timed calls with events.
    Returns (median_ms, n_timed)."""
    import triton.testing
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    first = start.elapsed_time(end)
    if first < slow_ms:
        ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
        return float(ms), -1
    times = []
    for _ in range(slow_reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return float(statistics.median(times)), slow_reps


def peak_extra_mb(fn, out_bytes: int) -> float:
    """Peak memory allocated by fn() beyond what is live before it and its output tensor, in MiB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    r = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del r
    return max(0.0, (peak - base - out_bytes) / 2**20)


def random_qkv(S: int, hq: int, hkv: int, D: int, dtype=torch.bfloat16) -> tuple:
    """Random (never zero) q [1,hq,S,D], k/v [1,hkv,S,D] on the GPU."""
    q = torch.randn(1, hq, S, D, device="cuda", dtype=dtype)
    k = torch.randn(1, hkv, S, D, device="cuda", dtype=dtype)
    return q, k, torch.randn_like(k)


def dense_causal_ms(q, k, v) -> float:
    """Median ms of causal SDPA (default backend choice: cuDNN on Hopper) with GQA."""
    return bench_ms(lambda: torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=True, enable_gqa=True))[0]
