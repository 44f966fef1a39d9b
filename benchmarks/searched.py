"""Kernel time of a searched (per-head) config at a long length vs cuDNN, on generated realistic index sets.

    python -m benchmarks.searched --config minference_compile/configs/qwen05.json --seq 128k          # CUDA
    python -m benchmarks.searched --config ... --seq 128k --dry                                       # CPU: sets only

Per layer of the config, as minference::sparse_prefill runs it (one launch per pattern, head masks, the layer's
real head count and head_dim from --shape): vertical-slash heads on `generate_vs` sets (benchmarks/indexsets.py)
at the head's budget; adaptive vertical-slash heads at the budget they realised in calibration (sidecar "lines"),
block-sparse heads at their top-k, adaptive ones at their realised blocks per query block (sidecar "blocks"),
A-shape and dense heads as they are. Realised adaptive budgets at the calibration length S_cal are scaled to S
with --scale linear (x S / S_cal, capped by the head's caps: a guess that errs on the slow side) or none.
Timed: the kernels with prebuilt indices (speed = efficiency / coverage), against cuDNN causal SDPA on the same
q/k/v, summed over layers; index builds are reported apart (estimate + conversion per layer, random q/k).
"""
from __future__ import annotations

import argparse
import json
import math
import os

import torch

from .registry import SHAPES as _SHAPES, parse_length

SHAPES = {**_SHAPES, "smollm2-135m": (9, 3, 64)}  # the configs' models (qwen2.5-0.5b is in the registry)


def _head_budgets(cfg, side, layer: int, H: int, S: int, scale: str) -> list:
    """[(kind, a, b)] per head: ("vs", nv, ns), ("bs", topk, 0), ("ashape", init, local), ("dense", 0, 0)."""
    from minference_compile.ops.adaptive import unpack_threshold
    s_cal = max(side["calibration"]["lengths"]) if side else S
    f = S / s_cal if scale == "linear" else 1.0
    out = []
    for h in range(H):
        p, v, s = cfg.head_entry(layer, h)
        info = side["heads"][layer][h] if side else {}
        if p == "vertical_and_slash":
            out.append(("vs", v, s))
        elif p == "vertical_and_slash_adaptive":
            cap_s = unpack_threshold(s)[0]
            nv, ns = info.get("lines", [v, cap_s])
            out.append(("vs", min(v, math.ceil(nv * f)), min(cap_s, math.ceil(ns * f))))
        elif p in ("block_sparse", "block_sparse_meanq"):  # the same kernel work at the same top-k
            out.append(("bs", v, 0))
        elif p in ("block_sparse_adaptive", "block_sparse_antidiag", "block_sparse_meanq_adaptive"):
            out.append(("bs", min(v, math.ceil(info.get("blocks", v) * f)), 0))
        elif p == "stream_llm":
            out.append(("ashape", v, s))
        else:
            out.append(("dense", 0, 0))
    return out


def layer_sets(budgets: list, S: int, layer: int, device) -> dict:
    """Per pattern: head mask and index inputs of one layer."""
    from .indexsets import generate_vs
    H = len(budgets)
    sets = {}
    vs = [h for h, b in enumerate(budgets) if b[0] == "vs"]
    if vs:
        nv = max(budgets[h][1] for h in vs)
        ns = max(budgets[h][2] for h in vs)
        vert = torch.full((1, H, max(nv, 1)), -1, dtype=torch.int32)
        slash = torch.full((1, H, max(ns, 1)), -1, dtype=torch.int32)
        for h in vs:
            _, a, b = budgets[h]
            gv, gs = generate_vs(S, 1, max(a, 1), max(b, 1), seed=1000 * layer + h)
            vert[0, h, :a], slash[0, h, :b] = gv[0, 0, :a], gs[0, 0, :b]
        sets["vs"] = (vs, vert.to(device), slash.to(device))
    for kind in ("bs", "ashape", "dense"):
        heads = [h for h, b in enumerate(budgets) if b[0] == kind]
        if heads:
            sets[kind] = (heads, [budgets[h] for h in heads])
    return sets


def _torch_select(fn):
    def run():
        os.environ["MINFERENCE_FUSED_SELECT"] = "0"  # read per call by ops/adaptive.select_blocks
        try:
            return fn()
        finally:
            os.environ.pop("MINFERENCE_FUSED_SELECT")
    return run


def index_times(q, k, S: int, D: int, dense_ms: float, kernels: bool = False) -> None:
    """Index build per layer (estimate / scores + conversion), as a share of cuDNN's layer time."""
    from minference_compile.ops.adaptive import (adaptive_block_sparse_index, adaptive_vertical_slash,
                                                 antidiag_block_sparse_index)
    from minference_compile.ops.estimate import estimate_vertical_slash
    from minference_compile.triton_kernels.antidiag_mass import antidiag_block_mass_fused
    from minference_compile.triton_kernels.block_sparse_index import block_sparse_index
    from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index, pair_for

    from .timing import bench_ms
    H = q.shape[1]
    pair = pair_for(D)
    builds = {
        "VS (1000,6096) estimate + index": lambda: build_vertical_slash_index(
            *estimate_vertical_slash(q, k, [1000] * H, [6096] * H), S, pair=pair),
        "VS adaptive caps (1000,6096) gamma .9 + index": lambda: build_vertical_slash_index(
            *adaptive_vertical_slash(q, k, [1000] * H, [6096] * H, [0.9] * H), S, pair=pair),
        "BS top-100 index": lambda: block_sparse_index(q, k, [100] * H),
        "BS adaptive cap 128 tau .9 index": lambda: adaptive_block_sparse_index(q, k, [128] * H, [0.9] * H),
        "BS antidiag cap 128 stride 8 tau .9 index": lambda: antidiag_block_sparse_index(q, k, [128] * H, [0.9] * H, 8, impl="triton"),
        # the fused build's parts and tile sweep (triton_kernels/antidiag_mass.py), and the unfused torch build
        "  antidiag stride 8 fused mass only (64x64 tiles)": lambda: antidiag_block_mass_fused(q, k, 8),
        "  antidiag stride 8 fused mass only (128x64 tiles)": lambda: antidiag_block_mass_fused(q, k, 8, block_m=128),
        "  antidiag stride 16 fused mass only (64x64 tiles)": lambda: antidiag_block_mass_fused(q, k, 16),
        "BS antidiag cap 128 stride 8 tau .9 index, torch (unfused)": lambda: antidiag_block_sparse_index(
            q, k, [128] * H, [0.9] * H, 8, impl="torch"),
        "BS antidiag cap 128 stride 16 tau .9 index": lambda: antidiag_block_sparse_index(
            q, k, [128] * H, [0.9] * H, 16, impl="triton"),
        # the same builds with the torch select (topk + cumsum) instead of the fused one (block_mass_select.py)
        "BS adaptive cap 128 tau .9 index, torch select": _torch_select(
            lambda: adaptive_block_sparse_index(q, k, [128] * H, [0.9] * H)),
        "BS antidiag cap 128 stride 8 tau .9 index, torch select": _torch_select(
            lambda: antidiag_block_sparse_index(q, k, [128] * H, [0.9] * H, 8, impl="triton")),
    }
    for name, fn in builds.items():
        ms = bench_ms(fn)[0]
        print(f"#   {name:48s} {ms:8.3f} ms = {100 * ms / dense_ms:5.2f}% of cuDNN")
    if kernels:  # where the adaptive builds' time goes: GPU time per kernel vs wall time per call
        from .vs_index_profile import kernel_table
        for name in ("BS adaptive cap 128 tau .9 index", "VS adaptive caps (1000,6096) gamma .9 + index",
                     "BS antidiag cap 128 stride 8 tau .9 index"):
            print(f"# kernels of {name}:")
            kernel_table(builds[name])


def main(argv=None) -> None:
    from minference_compile.config import MInferenceConfig
    from minference_compile.search.cli import sidecar_path
    from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index, pair_for, work_share

    from .coverage import block_sparse_coverage, streaming_coverage

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--seq", default="128k")
    ap.add_argument("--shape", default="qwen2.5-0.5b", choices=sorted(SHAPES))
    ap.add_argument("--scale", default="linear", choices=["linear", "none"])
    ap.add_argument("--layers", default=None, help="comma list (default: all layers of the config)")
    ap.add_argument("--dry", action="store_true", help="CPU: build the sets, print coverage, no timing")
    ap.add_argument("--index", action="store_true", help="also time the index builds (fixed and adaptive)")
    ap.add_argument("--kernels", action="store_true", help="with --index: GPU time per kernel of the adaptive builds")
    ap.add_argument("--op-index", action="store_true",
                    help="per layer, the index builds as the op runs them (each pattern's select over its heads, "
                         "one estimate shared by the layer's vertical-slash patterns) and with no sharing")
    a = ap.parse_args(argv)
    S = parse_length(a.seq)
    Hq, Hkv, D = SHAPES[a.shape]
    cfg = MInferenceConfig.from_json(a.config)
    try:
        side = json.load(open(sidecar_path(a.config)))
    except FileNotFoundError:
        side = None
    layers = [int(x) for x in a.layers.split(",")] if a.layers else list(range(cfg.num_layers))
    dev = "cpu" if a.dry else "cuda"
    if not a.dry:
        from minference_compile.triton_kernels.block_sparse import block_sparse_attention_fwd
        from minference_compile.triton_kernels.block_sparse_index import block_sparse_index
        from minference_compile.triton_kernels.streaming import streaming_attention_fwd
        from minference_compile.triton_kernels.vertical_slash import vertical_slash_attention_fwd

        from .timing import bench_ms, dense_causal_ms, random_qkv
        q, k, v = random_qkv(S, Hq, Hkv, D)
        dense_ms = dense_causal_ms(q, k, v)
        print(f"# {torch.cuda.get_device_name()} {a.shape} S={S}: cuDNN {dense_ms:.3f} ms per layer")
        if a.index:
            index_times(q, k, S, D, dense_ms, kernels=a.kernels)
    tot_sparse = tot_dense = 0.0
    tot_idx = [0.0, 0.0]
    covs = []
    print("layer  coverage  kernels_ms  speedup  heads(vs/bs/ashape/dense)"
          + ("  index_ms(shared / unshared)" if a.op_index else ""))
    for li in range(cfg.num_layers):
        if li not in layers:
            continue
        budgets = _head_budgets(cfg, side, li, Hq, S, a.scale)
        sets = layer_sets(budgets, S, li, dev)
        cov = torch.zeros(Hq, dtype=torch.float64)
        steps = []
        if "vs" in sets:
            heads, vert, slash = sets["vs"]
            index = build_vertical_slash_index(vert, slash, S, pair=pair_for(D))
            cov[heads] = work_share(index, S)[0, heads].double().cpu()
            if not a.dry:
                mask = torch.zeros(Hq, dtype=torch.bool, device=dev)
                mask[heads] = True
                steps.append(lambda o, index=index, mask=mask: vertical_slash_attention_fwd(
                    q, k, v, index, D ** -0.5, head_mask=mask, out=o))
        for kind in ("bs", "ashape", "dense"):
            if kind not in sets:
                continue
            heads, bud = sets[kind]
            for h, (_, x, y) in zip(heads, bud):
                cov[h] = (block_sparse_coverage(S, x) if kind == "bs" else streaming_coverage(S, x, y)
                          if kind == "ashape" else 1.0)
            if a.dry:
                continue
            mask = torch.zeros(Hq, dtype=torch.bool, device=dev)
            mask[heads] = True
            if kind == "bs":
                topk = [0] * Hq
                for h, (_, x, _) in zip(heads, bud):
                    topk[h] = x
                idx = block_sparse_index(q, k, topk)
                steps.append(lambda o, idx=idx, mask=mask: block_sparse_attention_fwd(
                    q, k, v, idx, D ** -0.5, head_mask=mask, out=o, compact=True))
            elif kind == "dense":  # as Dense.attend_cuda runs them: SDPA per kv head (ops/dense.dense_heads)
                from minference_compile.ops.dense import dense_heads
                which = [h in heads for h in range(Hq)]
                steps.append(lambda o, which=which: dense_heads(q, k, v, D ** -0.5, which, out=o))
            else:
                init = torch.full((Hq,), S, dtype=torch.int32, device=dev)
                local = torch.full((Hq,), S, dtype=torch.int32, device=dev)
                for h, (_, x, y) in zip(heads, bud):
                    if kind == "ashape":
                        init[h], local[h] = x, y
                steps.append(lambda o, i=init, lo=local, mask=mask: streaming_attention_fwd(
                    q, k, v, i, lo, D ** -0.5, head_mask=mask, out=o))
        covs.append(float(cov.mean()))
        counts = "/".join(str(sum(b[0] == kk for b in budgets)) for kk in ("vs", "bs", "ashape", "dense"))
        if a.dry:
            print(f"{li:5d}  {covs[-1]:.3f}  {'-':>10s}  {'-':>7s}  {counts}")
            continue
        out = torch.empty_like(q)

        def layer_fn():
            for step in steps:
                step(out)
            return out
        ms = bench_ms(layer_fn)[0]
        tot_sparse += ms
        tot_dense += dense_ms
        extra = ""
        if a.op_index:
            idx = op_index_ms(cfg.layer_specs(li, Hq), q, k, v)
            tot_idx = [t + x for t, x in zip(tot_idx, idx)]
            extra = f"  {idx[0]:7.3f} / {idx[1]:7.3f}"
        print(f"{li:5d}  {covs[-1]:.3f}  {ms:10.3f}  {dense_ms / ms:6.2f}x  {counts}{extra}")
    print(f"# mean coverage {sum(covs) / len(covs):.3f} over {len(covs)} layers"
          + ("" if a.dry else f"; kernels {tot_sparse:.2f} ms vs cuDNN {tot_dense:.2f} ms: {tot_dense / tot_sparse:.2f}x"))
    if a.op_index and not a.dry:
        for name, t in zip(("estimate shared", "unshared"), tot_idx):
            print(f"# index builds ({name}) {t:.2f} ms = {100 * t / tot_dense:.1f}% of cuDNN; kernels + index "
                  f"{tot_sparse + t:.2f} ms: {tot_dense / (tot_sparse + t):.2f}x cuDNN")


def op_index_ms(specs, q, k, v) -> tuple:
    """(ms as minference::sparse_prefill runs them, ms with nothing shared) of one layer's index builds: each
    pattern's ``select`` on its HeadGroup (heads of other patterns None), on these q/k; the op's groups share one
    dict per call, so patterns ranking by the same estimate compute it once."""
    from minference_compile.patterns import HeadGroup

    from .timing import bench_ms
    D = q.shape[-1]
    kinds = sorted({type(sp) for sp in specs if sp.id != 0}, key=lambda c: c.id)
    if not kinds:
        return 0.0, 0.0

    def run(share: bool):
        shared = {} if share else None
        return [c.select(HeadGroup(q, k, v, D ** -0.5, 64, tuple(sp if type(sp) is c else None for sp in specs), "",
                                   False, shared, tuple(specs) if share else None)) for c in kinds]
    return bench_ms(lambda: run(True))[0], bench_ms(lambda: run(False))[0]


if __name__ == "__main__":
    main()
