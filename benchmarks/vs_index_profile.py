"""CPU op count of the vertical-slash index build (estimate + index builder) at one shape, under torch.profiler.

    python -m benchmarks.vs_index_profile [--S 131072] [--hq 32] [--hkv 8] [--d 128] [--budgets 100/800,1000/6096]
    python -m benchmarks.vs_index_profile --cuda ...   # GPU: median ms per stage, torch vs fused estimate (bf16)

Prints per stage (estimate, index builder) every op with its call count, CPU time and the bytes of its inputs
and outputs (from the recorded shapes and dtypes: what a GPU launch of that op moves at least). CPU times are
not GPU times; the counts and bytes are what the GPU reasoning in benchmarks/NOTES.md (row 19) uses.
"""
from __future__ import annotations

import argparse
import collections
import re

import torch

_ITEM = {"float": 4, "c10::BFloat16": 2, "c10::Half": 2, "long int": 8, "int": 4, "bool": 1, "double": 8,
         "signed char": 1, "unsigned char": 1}


# views and no-op casts: no kernel launch on the GPU (a `to` that converts shows as aten::copy_ inside it: counted
# through its parent only when it is top-level, so `to` is kept)
_NO_LAUNCH = {"aten::slice", "aten::view", "aten::alias", "aten::as_strided", "aten::transpose", "aten::reshape",
              "aten::unsqueeze", "aten::lift_fresh", "aten::expand", "aten::select", "aten::detach", "aten::t",
              "aten::empty", "aten::new_empty", "aten::_unsafe_view", "aten::flatten", "aten::squeeze"}


def _bytes(ev) -> int:
    n = 0
    for shape, dt in zip(ev.input_shapes or [], getattr(ev, "input_dtypes", None) or []):
        if isinstance(shape, list) and shape and all(isinstance(x, int) for x in shape):
            numel = 1
            for x in shape:
                numel *= x
            n += numel * _ITEM.get(dt, 4)
    return n


def profile(fn):
    from torch.profiler import ProfilerActivity, profile as prof
    with prof(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        out = fn()
    rows = collections.OrderedDict()
    for ev in p.events():
        if not ev.name.startswith("aten::") or ev.cpu_parent is not None and ev.cpu_parent.name.startswith("aten::"):
            continue  # top-level aten ops only: what a GPU run launches (nested ones are the op's own parts)
        if ev.name in _NO_LAUNCH:
            continue
        key = (ev.name, str(ev.input_shapes)[:90])
        r = rows.setdefault(key, [0, 0.0, 0])
        r[0] += 1
        r[1] += ev.cpu_time_total / 1e3
        r[2] += _bytes(ev)
    return out, rows


def time_stages(a) -> int:
    """GPU stage times (median ms, benchmarks/timing.py): scores (torch chunks vs fused kernels), the two top-ks,
    the index builder, and the whole index build both ways, as benchmarks.run's index_ms times it."""
    from minference_compile.ops.estimate import _torch_scores, estimate_vertical_slash
    from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index, pair_for
    from minference_compile.triton_kernels.vs_estimate import vs_estimate_scores
    from .timing import bench_ms
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, a.hq, a.S, a.d, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, a.hkv, a.S, a.d, device="cuda", dtype=torch.bfloat16, generator=g)
    print(f"# {torch.cuda.get_device_name()} S={a.S} {a.hq}/{a.hkv}/{a.d} bf16, median ms")
    t_torch = bench_ms(lambda: _torch_scores(q, k, 64, None))[0]
    t_fused = bench_ms(lambda: vs_estimate_scores(q, k, 64, a.d ** -0.5))[0]
    vs, ss = vs_estimate_scores(q, k, 64, a.d ** -0.5)
    rv, rs = _torch_scores(q, k, 64, None)
    err = max(float((vs - rv).abs().max()), float((ss - rs).abs().max()))
    print(f"scores: torch {t_torch:.3f}  fused {t_fused:.3f}  (max abs diff {err:.2e})")
    if a.programs:  # the fused scores' launch size: programs per launch (splits per head = programs / heads)
        for n in (int(x) for x in a.programs.split(",")):
            t = bench_ms(lambda: vs_estimate_scores(q, k, 64, a.d ** -0.5, programs=n))[0]
            pv, ps = vs_estimate_scores(q, k, 64, a.d ** -0.5, programs=n)
            e = max(float((pv - rv).abs().max()), float((ps - rs).abs().max()))
            print(f"  fused scores, {n:5d} programs per launch: {t:.3f} ms (max abs diff {e:.2e})")
    for b in a.budgets.split(","):
        nv, ns = (int(x) for x in b.split("/"))
        t_topk = bench_ms(lambda: (vs.topk(nv, dim=-1), ss.topk(ns, dim=-1)))[0]
        ev, es = estimate_vertical_slash(q, k, nv, ns, fused=True)
        kw = dict(pair=pair_for(a.d), q_len=a.S)
        t_build = bench_ms(lambda: build_vertical_slash_index(ev, es, a.S, **kw))[0]
        whole = {f: bench_ms(lambda: build_vertical_slash_index(*estimate_vertical_slash(q, k, nv, ns, fused=f),
                                                                a.S, **kw))[0] for f in (False, True)}
        print(f"{nv}/{ns}: top-k pair {t_topk:.3f}  builder {t_build:.3f}  index build torch {whole[False]:.3f}"
              f"  fused {whole[True]:.3f}")
        kernel_table(lambda: build_vertical_slash_index(*estimate_vertical_slash(q, k, nv, ns, fused=True), a.S, **kw))
    return 0


def kernel_table(fn, reps: int = 10) -> None:
    """GPU time per kernel of `fn` (mean over `reps` calls after a warm-up) and the wall time per call: the
    launches an index build makes, and whether the host (launch overhead) or the kernels set its time."""
    import time
    from torch.profiler import ProfilerActivity, profile as prof
    fn()
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as p:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / reps * 1e3
    rows = [(e.key, e.count // reps, e.device_time_total / reps / 1e3) for e in p.key_averages()
            if e.device_time_total > 0 and e.device_type.name == "CUDA"]
    rows.sort(key=lambda r: -r[2])
    print(f"  per call (profiled): wall {wall:.3f} ms, kernels {sum(r[2] for r in rows):.3f} ms in "
          f"{sum(r[1] for r in rows)} launches")
    for name, n, ms in rows[:14]:
        print(f"    {ms:8.3f} ms  x{n:<3d} {name[:110]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--S", type=int, default=131072)
    ap.add_argument("--hq", type=int, default=32)
    ap.add_argument("--hkv", type=int, default=8)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--budgets", default="100/800,1000/6096")
    ap.add_argument("--cuda", action="store_true", help="time the stages on the GPU instead (bf16 inputs)")
    ap.add_argument("--programs", default="", help="with --cuda: sweep the fused estimate's programs per launch, "
                    "e.g. 512,1024,2048 (at most 64 splits per head)")
    a = ap.parse_args(argv)
    if a.cuda:
        return time_stages(a)
    from minference_compile.ops import estimate_vertical_slash
    from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index, pair_for
    torch.manual_seed(0)
    q = torch.randn(1, a.hq, 64, a.d)  # only the last 64 queries are read by the estimate
    k = torch.randn(1, a.hkv, a.S, a.d)
    for b in a.budgets.split(","):
        nv, ns = (int(x) for x in b.split("/"))
        (ev, es), est = profile(lambda: estimate_vertical_slash(q, k, nv, ns))
        _, idx = profile(lambda: build_vertical_slash_index(ev, es, a.S, pair=pair_for(a.d), q_len=a.S))
        for stage, rows in (("estimate", est), ("index", idx)):
            print(f"\n## budgets {nv}/{ns}, {stage}: {sum(r[0] for r in rows.values())} top-level ops, "
                  f"{sum(r[2] for r in rows.values()) / 1e6:.1f} MB of inputs read, "
                  f"{sum(r[1] for r in rows.values()):.0f} ms CPU")
            print("| op | input shapes | count | CPU ms | input MB | full-S pass |\n|---|---|---|---|---|---|")
            for (name, shapes), (n, ms, by) in sorted(rows.items(), key=lambda kv: -kv[1][2]):
                full = "yes" if re.search(rf"\b{a.S}\b|\b{a.S + 1}\b", shapes) else ""
                print(f"| {name} | {shapes} | {n} | {ms:.1f} | {by / 1e6:.1f} | {full} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
