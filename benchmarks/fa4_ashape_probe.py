"""Why the A-shape layer op runs slower inside the model than on random q/k/v (NOTES E23: FA4 kernel 15.6 ms per
layer in the pre-fill's profile vs 12.9 ms in the e2e's attention split at 128K, Qwen2.5-7B shape).

    python -m benchmarks.fa4_ashape_probe [--S 131072] [--hq 28] [--hkv 4] [--d 128]

One process, the same op (`minference::sparse_prefill`, A-shape 128 + 4096: FA4 when `[hopper]` is installed) and
cuDNN causal SDPA on: (a) contiguous [B,H,S,D] randn (the e2e split's inputs), (b) the model's layout, views of
[B,S,H*D] projections, (c) (b) with q and k scaled x3 (score spread of a real model, if the kernel's speed depends
on the data: FA4 skips softmax rescales when the row max does not grow), (d) (a) with a 3584 x 18944 GEMM launched
before every call (the pre-fill's order: the attention starts on a GPU that just ran a GEMM). Median ms of 5 calls
timed with CUDA events around the attention alone."""
from __future__ import annotations

import argparse

import torch


def _time(fn, before=None, reps: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        if before is not None:
            before()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b))
    return sorted(out)[len(out) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--S", type=int, default=131072)
    ap.add_argument("--hq", type=int, default=28)
    ap.add_argument("--hkv", type=int, default=4)
    ap.add_argument("--d", type=int, default=128)
    a = ap.parse_args(argv)
    import minference_compile  # noqa: F401  (registers the ops)
    from minference_compile.config import PATTERN_IDS
    from minference_compile.ops import fa4
    B, S, Hq, Hkv, D = 1, a.S, a.hq, a.hkv, a.d
    dt, dev = torch.bfloat16, "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    args = ([PATTERN_IDS["stream_llm"]] * Hq, [128] * Hq, [4096] * Hq, D ** -0.5, -1, 64, 1.0)
    probe = torch.empty(B, Hq, 2, D, device=dev, dtype=dt)
    print(f"# {torch.cuda.get_device_name()} S={S} {Hq}/{Hkv}/{D} bf16; FA4: "
          f"{fa4.reason(probe, probe[:, :Hkv]) or 'available'}")

    def bhsd(h):
        return torch.randn(B, h, S, D, device=dev, dtype=dt, generator=g)

    def bshd(h, mul=1.0):  # a view of a [B, S, H*D] projection output, as the model hands it over
        return (torch.randn(B, S, h * D, device=dev, dtype=dt, generator=g) * mul).view(B, S, h, D).transpose(1, 2)

    sets = {"a contiguous BHSD": (bhsd(Hq), bhsd(Hkv), bhsd(Hkv)),
            "b model layout BSHD": (bshd(Hq), bshd(Hkv), bshd(Hkv)),
            "c BSHD, q and k x3": (bshd(Hq, 3.0), bshd(Hkv, 3.0), bshd(Hkv))}
    sets["e q BSHD, k/v BHSD"] = (sets["b model layout BSHD"][0], *sets["a contiguous BHSD"][1:])
    sets["f q BHSD, k/v BSHD"] = (sets["a contiguous BHSD"][0], *sets["b model layout BSHD"][1:])
    sets["a again (GPU warm now)"] = sets["a contiguous BHSD"]
    x = torch.randn(S, 3584, device=dev, dtype=dt, generator=g)
    w = torch.randn(3584, 18944, device=dev, dtype=dt, generator=g)
    gemm = lambda: x @ w  # noqa: E731
    for name, (q, k, v) in sets.items():
        ours = _time(lambda: torch.ops.minference.sparse_prefill(q, k, v, *args))
        cudnn = _time(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                               enable_gqa=True))
        print(f"{name:24s} A-shape op {ours:8.3f} ms   cuDNN causal {cudnn:8.3f} ms", flush=True)
    q, k, v = sets["a contiguous BHSD"]
    ours = _time(lambda: torch.ops.minference.sparse_prefill(q, k, v, *args), before=gemm)
    cudnn = _time(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                           enable_gqa=True), before=gemm)
    print(f"{'d BHSD after a GEMM':24s} A-shape op {ours:8.3f} ms   cuDNN causal {cudnn:8.3f} ms")
    print(f"(GEMM alone {_time(gemm):.3f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
