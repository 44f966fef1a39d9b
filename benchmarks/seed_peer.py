"""The seed's own vertical-slash Triton kernel (MInference 0.1.6.0) as a peer in the runner (issue 12), on the same
generated index sets as our `vs-*` cases, in the same process as cuDNN.

Nothing of the seed is copied here: its source tree is imported at run time from MINFERENCE_SEED_DIR (the PyPI
sdist, extracted, its CUDA index converter built in place; `bash benchmarks/gpu_check.sh seed-build`). Only two
pieces are used, loaded without running the package's __init__ (which patches transformers):
`minference.cuda.convert_vertical_slash_indexes` (slash offsets i - j, as ours: each merged range becomes
64-key blocks at any start, a superset of our block-rounded pairs) and
`minference.ops.pit_sparse_flash_attention_v2._triton_mixed_sparse_attention` (one launch for all heads, K/V
repeated to the q heads outside the timing). The conversion is timed apart (the index_fn slot), as ours is.

    MINFERENCE_SEED_DIR=/tmp/seedsrc/minference-0.1.6.0 python -m benchmarks.run --seq 128k \
        --cases dense-cudnn,vs-1000/6096,seed-vs-1000/6096,vs-100/800,seed-vs-100/800
"""
from __future__ import annotations

import importlib
import os
import sys
import types

import torch

from . import coverage as cov
from .indexsets import generate_vs

ENV = "MINFERENCE_SEED_DIR"


def load_seed(seed_dir: str | None = None):
    """(convert_vertical_slash_indexes, _triton_mixed_sparse_attention) from the seed's source tree."""
    seed_dir = seed_dir or os.environ.get(ENV)
    if not seed_dir or not os.path.isdir(os.path.join(seed_dir, "minference")):
        raise RuntimeError(f"the seed's source tree is not available: set {ENV} to the extracted minference "
                           "sdist (gpu_check.sh seed-build)")
    root = os.path.join(seed_dir, "minference")
    for name, path in (("minference", root), ("minference.ops", os.path.join(root, "ops"))):
        mod = sys.modules.get(name)
        if mod is None or getattr(mod, "__path__", None) != [path]:  # a namespace stub: no package __init__ runs
            mod = types.ModuleType(name)
            mod.__path__ = [path]
            sys.modules[name] = mod
    cuda = importlib.import_module("minference.cuda")  # the built extension (or a test's stand-in)
    kern = importlib.import_module("minference.ops.pit_sparse_flash_attention_v2")
    return cuda.convert_vertical_slash_indexes, kern._triton_mixed_sparse_attention


def seed_vs(case, q, k, v, S, seed=0):
    """The runner's Prepared for a seed-vs case (benchmarks/cases.py conventions)."""
    from .cases import Prepared
    convert, attention = load_seed()
    nv, ns = case.params["nv"], case.params["ns"]
    B, Hq, _, D = q.shape
    if S % 64 or D not in (16, 32, 64, 128):
        raise RuntimeError(f"the seed's kernel needs S % 64 == 0 and D in 16/32/64/128 (S={S}, D={D})")
    vert, slash = generate_vs(S, Hq, nv, ns, seed=seed)  # the very sets of our vs case (same generator and seed)
    c = float(cov.coverage(vert, slash, S).mean())
    vi = vert.to(q.device, torch.int32).sort(-1)[0].expand(B, Hq, -1).contiguous()
    si = slash.to(q.device, torch.int32).sort(-1, descending=True)[0].expand(B, Hq, -1).contiguous()
    seqlens = torch.full((B,), S, dtype=torch.int32, device=q.device)
    index = convert(seqlens, vi, si, S, 64, 64)
    g = Hq // k.shape[1]
    kr, vr = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)  # the seed's kernel has no GQA
    scale = D ** -0.5
    fn = lambda: attention(q, kr, vr, seqlens, *index, scale, 64, 64)  # noqa: E731
    blocks = float(index[0].float().mean()) / (S / 64)  # its 64-key blocks per query block over the block rows
    return Prepared(fn, c, lambda: convert(seqlens, vi, si, S, 64, 64), None,
                    note=f"seed kernel (MInference 0.1.6.0), generated sets seed={seed}, one launch, K/V repeated; "
                         f"{blocks:.3f} of the block rows in slash blocks; coverage = our semantics' pairs")
