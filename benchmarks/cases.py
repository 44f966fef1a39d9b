"""Case set-up on CUDA: each returns a Prepared (timed callable + coverage + optional index/op callables).

Imported by the runner only when CUDA is present (imports torch kernels lazily inside functions).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import coverage as cov
from .indexsets import generate_vs


@dataclass
class Prepared:
    fn: Callable                         # timed: the attention kernel itself (index prebuilt)
    coverage: float                      # share of causal pairs computed (pattern semantics)
    index_fn: Optional[Callable] = None  # the index-build step, timed separately
    op_fn: Optional[Callable] = None     # the public function end to end (validation + index from given sets)
    tile_cov: Optional[float] = None     # touched block x block tiles over causal pairs (flex)
    note: str = ""


def dense(case, q, k, v, S):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    if case.params["backend"] == "FA4":  # the dense path of the [hopper] extra (ops/fa4.dense_causal), native GQA
        fa4, scale = _fa4(q, k)
        return Prepared(lambda: fa4.dense_causal(q, k, v, scale), 1.0)
    backend = getattr(SDPBackend, case.params["backend"])
    note = ""

    def run(kk, vv, gqa):
        with sdpa_kernel([backend]):
            return torch.nn.functional.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=gqa)

    try:
        run(k, v, True)
        fn = lambda: run(k, v, True)  # noqa: E731
    except RuntimeError:  # backend without GQA: expand K/V once, outside the timing
        rep = q.shape[1] // k.shape[1]
        ke, ve = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        run(ke, ve, False)  # raises if the backend is unavailable altogether
        fn = lambda: run(ke, ve, False)  # noqa: E731
        note = "kv expanded (no GQA in backend)"
    return Prepared(fn, 1.0, note=note)


def vs(case, q, k, v, S, seed=0):
    from minference_compile.ops import estimate_vertical_slash, vertical_slash_sparse_attention
    from minference_compile.ops.estimate import use_fused_estimate
    from minference_compile.triton_kernels.vertical_slash import vertical_slash_attention_fwd
    from minference_compile.triton_kernels.vertical_slash_index import (aligned_offsets, build_vertical_slash_index,
                                                                        pair_for)
    nv, ns = case.params["nv"], case.params["ns"]
    aligned = case.params.get("aligned", False)
    Hq = q.shape[1]
    vert, slash = generate_vs(S, Hq, nv, ns, seed=seed)
    # aligned: its pairs are the block-rounded pairs of the aligned tile offsets (those >= S reach no key here:
    # no query offset)
    c = float(cov.coverage(vert, aligned_offsets(slash, S) if aligned else slash, S).mean())
    vert, slash = vert.to(q.device), slash.to(q.device)
    pair = case.params.get("pair")
    kw = {"pair": pair_for(q.shape[-1]) if pair is None else pair, "aligned": aligned}  # pair None: the op's
    index = build_vertical_slash_index(vert, slash, S, **kw)

    def index_fn():
        ev, es = estimate_vertical_slash(q, k, nv, ns)
        return build_vertical_slash_index(ev, es, S, **kw)

    index_fn()  # compiles the fused estimate, or falls back to the torch one (logged) before the note names it
    fused = use_fused_estimate(q, k, 64)
    if case.params.get("fa4"):
        return _vs_fa4(q, k, v, S, index, index_fn, fused, seed, case.params.get("tile_k", 128))
    kernel = lambda **kkw: vertical_slash_attention_fwd(q, k, v, index, **kkw)  # noqa: E731
    kernel_kw, variant = _kernel_variant(case, kernel, q, k, v)  # (not `kw`: index_fn reads the index keywords)
    # the public op has block-rounded semantics only: no op timing for aligned (nor for kernel variants)
    op_fn = None if aligned or variant else (lambda: vertical_slash_sparse_attention(q, k, v, vert, slash))
    return Prepared(lambda: kernel(**kernel_kw), c, None if variant else index_fn, op_fn,
                    tile_cov=float(cov.vs_block_coverage(index, S).mean()),
                    note=f"generated sets seed={seed}, {_tile_slots(index):.1f} tile slots/head"
                    + (", fused estimate" if fused else ", torch estimate")
                    + (", aligned tiles" if aligned else "") + (f", {variant}" if variant else ""))


def _fa4(q, k):
    """(the ops.fa4 module, the softmax scale) for a "+fa4" case; RuntimeError naming why FA4 cannot run it."""
    from minference_compile.ops import fa4
    why = fa4.reason(q, k)
    if why is not None:
        raise RuntimeError(f"FA4 unavailable: {why}")
    return fa4, q.shape[-1] ** -0.5


def _vs_fa4(q, k, v, S, index, index_fn, fused, seed, tk):
    """128-tiled vertical-slash through FA4 (ops/fa4.vertical_slash): tile lists + FA4 + columns pass, timed
    together with the index prebuilt. Coverage counted from the lists (full tiles whole, diagonal tiles their causal
    pairs, uncovered columns x rows), so it is the work this path computes."""
    from minference_compile.triton_kernels.vertical_slash_tiled import TILE, tile_lists
    fa4, scale = _fa4(q, k)
    fcnt, _, mcnt, _ = tile_lists(index.slash_prefix, S, S, index.tile_offset.shape[-1], tk)
    pairs = S * (S + 1) / 2
    # a diagonal tile counted as half its area (its causal part, roughly)
    tiles = (fcnt.double().sum(-1) * TILE * tk + mcnt.double().sum(-1) * TILE * tk / 2) / pairs
    cols = index.column_count.double().sum(-1) * 64 / pairs  # an upper bound: columns inside tiles are skipped
    c = float((tiles + cols).mean())
    return Prepared(lambda: fa4.vertical_slash(q, k, v, index, scale, tile_k=tk), c, index_fn, None, tile_cov=c,
                    note=f"FA4 128x{tk} tile lists + Triton columns pass, generated sets seed={seed}, "
                    f"{float(fcnt.double().mean() + mcnt.double().mean()):.1f} tiles per 128-row block"
                    + (", fused estimate" if fused else ", torch estimate"))


def _tile_slots(index) -> float:
    """Mean slash tile slots per head of a VSIndex (a 128-key wide tile counts two)."""
    return float((index.tile_count + 2 * index.wide_count).float().mean())


def _kernel_variant(case, kernel, q, k, v) -> tuple:
    """(kernel keywords, note) of a case's "+tma" / "@sN" variant. A TMA case raises (the runner records an error
    row) when the descriptors cannot be used, or when its output differs from pointer loads on the same inputs.
    Without "+tma" the kernel's default loads run (TMA where it is on by default; MINFERENCE_TMA=0 forces pointer
    loads)."""
    kw = {"tma": True if case.params.get("tma") else None, "num_stages": case.params.get("stages")}
    note = "" if kw["num_stages"] is None else f"num_stages={kw['num_stages']}"
    if case.params.get("qk"):  # VS with 8-bit Q.K^T operands: the error against the same kernel in the input dtype
        kw["qk_format"] = case.params["qk"]
        want, got = kernel(), kernel(qk_format=case.params["qk"])
        rel = float((got.float() - want.float()).norm() / want.float().norm())
        note = f"qk {case.params['qk']} (rel L2 vs {str(q.dtype).split('.')[-1]} Q.K^T {rel:.2e}; random q/k)" + \
            (f", {note}" if note else "")
    if kw["tma"]:
        from minference_compile.triton_kernels._common import tma_reason
        reason = tma_reason(q, k, v)
        if reason is not None:
            raise RuntimeError(f"TMA unavailable: {reason}")
        want, got = kernel(tma=False), kernel(**kw)
        err = float((got.float() - want.float()).abs().max())
        if not err <= 2e-2:  # both bf16, same tiles and order: only rounding differs
            raise RuntimeError(f"TMA output differs from pointer loads: max abs diff {err:.3g}")
        note = f"tma (max abs diff vs pointer loads {err:.1e})" + (f", {note}" if note else "")
    return kw, note


def bs(case, q, k, v, S):
    from minference_compile.ops import block_sparse_attention
    from minference_compile.triton_kernels.block_sparse import block_sparse_attention_fwd
    from minference_compile.triton_kernels.block_sparse_index import block_sparse_index
    topk = case.params["topk"]
    if case.params.get("block") == 128 or case.params.get("fa4"):
        return _bs_variant(case, q, k, v, S, topk)
    if case.params.get("score") == "meanq":  # block_sparse_meanq's index (the mean query over the exact keys)
        from minference_compile.ops.adaptive import FIXED, meanq_block_sparse_index
        build = lambda: meanq_block_sparse_index(q, k, topk, FIXED)  # noqa: E731
        idx = build()
        return Prepared(lambda: block_sparse_attention_fwd(q, k, v, idx, compact=True),
                        cov.block_sparse_coverage(S, topk), build, note="mean-query index (Triton log-mass + fused select on CUDA)")
    idx = block_sparse_index(q, k, topk)
    kernel = lambda **kw: block_sparse_attention_fwd(q, k, v, idx, compact=True, **kw)  # noqa: E731
    kw, note = _kernel_variant(case, kernel, q, k, v)
    variant = bool(note)  # index and op timings only for today's default kernel
    return Prepared(lambda: kernel(**kw), cov.block_sparse_coverage(S, topk),
                    None if variant else (lambda: block_sparse_index(q, k, topk)),
                    None if variant else (lambda: block_sparse_attention(q, k, v, topk)), note=note)


def _bs_variant(case, q, k, v, S, topk):
    """bs-top100+fa4 (FA4 on our 64 x 64 blocks: the same pairs), bs128-top50 (+fa4): block_sparse_128's index, on
    FA4 (ops/fa4.block_sparse_128, the op's route) or the Triton kernel on the equal 64-granular index. Every
    variant is checked against the Triton kernel on the same pairs before timing."""
    from minference_compile.ops.fa4_lists import lists_from_index
    from minference_compile.triton_kernels.block_sparse import block_sparse_attention_fwd
    from minference_compile.triton_kernels.block_sparse_index import block_sparse_index, expand_block_index
    block = case.params.get("block", 64)
    idx = block_sparse_index(q, k, topk, block=block)
    idx64 = idx if block == 64 else expand_block_index(idx, S, S, block)
    triton_fn = lambda: block_sparse_attention_fwd(q, k, v, idx64, compact=True)  # noqa: E731
    coverage = cov.block_sparse_coverage(S, topk, block)
    if not case.params.get("fa4"):
        return Prepared(triton_fn, coverage, lambda: block_sparse_index(q, k, topk, block=block),
                        note=f"{block}x{block} blocks as the 64-granular index, Triton")
    fa4, scale = _fa4(q, k)
    if block == 64:
        from minference_compile.ops.fa4 import block_sparse_tensors
        bst = block_sparse_tensors(lists_from_index(idx, S, 64, 64))
        fn = lambda: fa4._call("block-sparse 64", q, k, v, scale, causal=True, block_sparse_tensors=bst)[0]  # noqa: E731
        note = "FA4 on the same 64x64 blocks"
    else:
        lists = fa4.bs128_lists(idx, S, S)
        bst = fa4.block_sparse_tensors(lists)
        fn = lambda: fa4._call("block-sparse 128", q, k, v, scale, causal=True, block_sparse_tensors=bst)[0]  # noqa: E731
        note = "FA4 128x128 (ops/fa4.block_sparse_128)"
    err = float((fn().float() - triton_fn().float()).abs().max())
    if not err <= 3e-2:
        raise RuntimeError(f"{case.name}: FA4 differs from the Triton kernel on the same pairs: max abs {err:.3g}")
    return Prepared(fn, coverage, lambda: block_sparse_index(q, k, topk, block=block),
                    note=f"{note} (max abs diff vs Triton {err:.1e})")


def ashape(case, q, k, v, S):
    from minference_compile.ops import streaming_forward
    from minference_compile.triton_kernels.streaming import streaming_attention_fwd
    init, local = case.params["init"], case.params["local"]
    Hq = q.shape[1]
    if case.params.get("fa4"):  # the [hopper] path the op takes for A-shape layers (ops/fa4.attend: lists + mask_mod)
        fa4, scale = _fa4(q, k)
        return Prepared(lambda: fa4.attend(q, k, v, [(init, local)] * Hq, scale), cov.streaming_coverage(S, init, local),
                        note="FA4 128x128 block lists + A-shape mask_mod")
    it = torch.full((Hq,), init, dtype=torch.int32, device=q.device)
    lt = torch.full((Hq,), local, dtype=torch.int32, device=q.device)
    kernel = lambda **kw: streaming_attention_fwd(q, k, v, it, lt, **kw)  # noqa: E731
    kw, note = _kernel_variant(case, kernel, q, k, v)
    return Prepared(lambda: kernel(**kw), cov.streaming_coverage(S, init, local), None,
                    None if note else (lambda: streaming_forward(q, k, v, init, local)), note=note)


def prepare(case, q, k, v, S, flex_block=128):
    if case.family == "dense":
        return dense(case, q, k, v, S)
    if case.family == "vs":
        return vs(case, q, k, v, S)
    if case.family == "bs":
        return bs(case, q, k, v, S)
    if case.family == "ashape":
        return ashape(case, q, k, v, S)
    if case.family == "seed-vs":
        from .seed_peer import seed_vs
        return seed_vs(case, q, k, v, S)
    from . import flex_cases
    return flex_cases.prepare(case, q, k, v, S, flex_block)
