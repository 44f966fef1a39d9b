"""Shared pieces of the attention kernels: the online-softmax tile update and wrapper plumbing."""
import logging
import math
import os
from typing import Optional

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


# TRITON_INTERPRET only: triton 3.6's interpreter turns scalars (stored as shape-(1,) arrays) into loop bounds
# with int(ndarray), which numpy >= 2.4 rejects, so every runtime-bounded `range` fails. Index the element.
def _fix_interpreter_index():
    from triton.runtime import interpreter

    orig = interpreter._patch_lang_tensor
    if getattr(orig, "_index_fixed", False):
        return

    def patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._index_fixed = True
    interpreter._patch_lang_tensor = patched


if os.environ.get("TRITON_INTERPRET") == "1":
    _fix_interpreter_index()


@triton.jit
def _attn_tile(acc, m_i, l_i, q, k, v, mask, qk_scale, PREC: tl.constexpr, MASKED: tl.constexpr = True):
    # one online-softmax step: q [BM,BD], k/v [BN,BD], mask [BM,BN]; qk_scale = scale * log2(e).
    # Callers start m_i at a finite -1e30 (not -inf): fully masked tiles/rows give p = 0, alpha = 1, no NaN.
    # MASKED=False for tiles known to be fully inside the pattern: the select per element is ALU work
    # that Triton does not overlap with the tensor-core products.
    qk = tl.dot(q, tl.trans(k), input_precision=PREC)
    return _softmax_step(acc, m_i, l_i, qk, v, mask, qk_scale, PREC, MASKED)


@triton.jit
def _softmax_step(acc, m_i, l_i, qk, v, mask, qk_scale, PREC: tl.constexpr, MASKED: tl.constexpr = True):
    # the online-softmax update from a tile's raw products qk [BM,BN] (fp32): shared by _attn_tile and the
    # kernels that form qk differently (vertical_slash's 8-bit operands)
    if MASKED:
        qk = tl.where(mask, qk * qk_scale, float("-inf"))
    else:
        qk = qk * qk_scale
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(qk - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
    return acc, m_new, l_i


@triton.jit
def _q_tile(Q, b, h, m0, sqb, sqh, sqm, S, D, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    # the program's query rows [m0, m0 + BLOCK_M) of head (b, h); rows >= S and columns >= D read as 0
    rm = tl.arange(0, BLOCK_M)
    rd = tl.arange(0, BLOCK_D)
    ptr = Q + b * sqb + h.to(tl.int64) * sqh + (m0 + rm).to(tl.int64)[:, None] * sqm + rd[None, :]
    return tl.load(ptr, mask=((m0 + rm)[:, None] < S) & (rd[None, :] < D), other=0.0)


@triton.jit
def _softmax_init(BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    # (acc, m_i, l_i) before the first tile; m_i starts finite (see _attn_tile)
    return (tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32), tl.full([BLOCK_M], -1e30, dtype=tl.float32),
            tl.zeros([BLOCK_M], dtype=tl.float32))


@triton.jit
def _store_o_tile(O, acc, l_i, b, h, m0, sob, soh, som, S, D, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    # acc / l_i into the output rows [m0, m0 + BLOCK_M); a row that attended no key (l_i == 0) stores 0
    rm = tl.arange(0, BLOCK_M)
    rd = tl.arange(0, BLOCK_D)
    o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    ptr = O + b * sob + h.to(tl.int64) * soh + (m0 + rm).to(tl.int64)[:, None] * som + rd[None, :]
    tl.store(ptr, o.to(O.dtype.element_ty), mask=((m0 + rm)[:, None] < S) & (rd[None, :] < D))


def block_d(D: int) -> int:
    # head dim padded to a power of two (>= 16 for tl.dot); loads are masked on d < D
    return max(16, triton.next_power_of_2(D))


def dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs (CPU interpreter tests) must not be rounded to tf32
    return "ieee" if dtype == torch.float32 else "tf32"


def last_dim_contig(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def head_rows(t: torch.Tensor) -> torch.Tensor:
    """t [B,H,S,D] itself when each head is a block of whole rows (contiguous, or a cache buffer's narrowed view),
    else a [B,H,S,D] copy. Inside a compiled model q/k/v arrive as transposes of [B,S,H,D] projections (heads
    interleaved row by row): TMA descriptors cannot read them, and pointer loads of 64-row tiles spread over
    H times the span run slower. H200, 128K, Qwen2.5-7B shape, full depth: the VS kernel took 147.6 ms per layer
    in the model vs 126 ms on contiguous inputs, block-sparse 36.0 vs ~30.5 ms (benchmarks/NOTES.md E9); the copy
    costs ~0.5 ms per layer there."""
    t = last_dim_contig(t)
    if 0 in t.stride()[:3]:  # a broadcast (expanded) dim: pointer loads read it as is, a copy would materialise it
        return t
    return t if _row_view(t) is not None else t.contiguous()


def qk_scale(scale: Optional[float], D: int) -> float:
    return (1.0 / math.sqrt(D) if scale is None else float(scale)) * LOG2E


def prepare(q, k, v, head_mask, out):
    # -> (q, k, v, head_mask int32 | None, out, work): the kernel writes `work` (stride(-1) == 1), then
    # finish(out, work, head_mask) copies it into `out` if they differ
    q0 = q  # a new out takes the caller's layout (a compiled model's [B,S,H,D] storage: read by o_proj as a view)
    q, k, v = head_rows(q), head_rows(k), head_rows(v)
    hm = None if head_mask is None else head_mask.to(device=q.device, dtype=torch.int32).contiguous()
    if out is None:
        out = torch.zeros_like(q0) if head_mask is not None else torch.empty_like(q0)
    work = out if out.stride(-1) == 1 else torch.empty_like(q)
    return q, k, v, hm, out, work


def finish(out, work, head_mask):
    if work is not out:
        if head_mask is None:
            out.copy_(work)
        else:
            sel = head_mask.to(device=out.device, dtype=torch.bool)
            out[:, sel] = work[:, sel]
    return out


# ---- opt-in TMA (Hopper tensor-memory accelerator) loads: benchmarks/NOTES.md #17 ----
# Q/K/V tiles are read through host tensor descriptors over a 2-D row view [rows, D] of [B, H, S, D]: row of
# (b, h, n) = b * batch_rows + h * head_rows + n. The column bound D is a descriptor edge (zero fill past D),
# the key/query bound S of one head is not: rows past S belong to the next head (or to padding), so the kernels
# keep their j < S score masks and zero V rows past S on the masked tiles.
_log = logging.getLogger("minference_compile")
_tma_logged = set()


def use_tma(tma: Optional[bool], auto: bool = False, *ts: torch.Tensor) -> bool:
    """Whether to read tiles through TMA descriptors. tma=True/False decides; tma=None reads MINFERENCE_TMA:
    "1" on, "0" off, unset or "auto": on where the kernel measured faster with TMA (`auto`, NOTES row 17: A-shape
    at any head dim, vertical-slash at D >= 128; block-sparse tied) and the tensors `ts` qualify on a real sm90+
    GPU (never under the interpreter), otherwise pointer loads without a warning."""
    if tma is not None:
        return bool(tma)
    env = os.environ.get("MINFERENCE_TMA", "auto")
    if env in ("0", "1"):
        return env == "1"
    return (auto and bool(ts) and os.environ.get("TRITON_INTERPRET") != "1" and ts[0].device.type == "cuda"
            and tma_reason(*ts) is None)


def stages_override(stages: int, num_stages: Optional[int]) -> int:
    """num_stages, else MINFERENCE_NUM_STAGES, else the kernel's tuned value (benchmarks' stage sweeps)."""
    if num_stages is None:
        env = os.environ.get("MINFERENCE_NUM_STAGES", "")
        num_stages = int(env) if env else None
    return stages if num_stages is None else max(1, int(num_stages))


def _row_view(t: torch.Tensor):
    # (rows, batch_rows, head_rows) of a [B,H,S,D] tensor whose batch/head strides are whole rows, else None
    B, H, S, D = t.shape
    sb, sh, sn, _ = t.stride()
    if sn <= 0 or sb % sn or sh % sn or (B > 1 and sb <= 0) or (H > 1 and sh <= 0):
        return None
    rows = (B - 1) * (sb // sn) + (H - 1) * (sh // sn) + S
    return rows, sb // sn, sh // sn


def tma_reason(*ts: torch.Tensor) -> Optional[str]:
    """Why the TMA path cannot read these [B,H,S,D] tensors (None: it can)."""
    t0 = ts[0]
    if os.environ.get("TRITON_INTERPRET") != "1":
        if t0.device.type != "cuda":
            return "not a CUDA tensor"
        if torch.cuda.get_device_capability(t0.device)[0] < 9:
            return "no TMA before sm90"
    for t in ts:
        if t.numel() == 0:
            return "empty tensor"
        if t.data_ptr() % 16 or (t.stride(2) * t.element_size()) % 16:
            return "base or row stride not 16-byte aligned"
        view = _row_view(t)
        if view is None:
            return "batch/head strides are not whole rows (e.g. a [B,S,H,D] transpose)"
        if view[0] >= 2**31:
            return "more than 2^31 rows (int32 tile offsets)"
    return None


def tma_descriptors(block_rows, block_d_, *ts: torch.Tensor):
    """Per tensor (descriptor over its 2-D row view with block [rows, block_d_], batch_rows, head_rows), or None
    (logged once per reason) when a tensor does not qualify: the caller then uses pointer loads."""
    reason = tma_reason(*ts)
    if reason is not None:
        if reason not in _tma_logged:
            _tma_logged.add(reason)
            _log.warning("minference_compile: TMA loads requested but %s; using pointer loads", reason)
        return None
    from triton.tools.tensor_descriptor import TensorDescriptor
    out = []
    for t, rows_blk in zip(ts, block_rows):
        rows, br, hr = _row_view(t)
        desc = TensorDescriptor(t, [rows, t.shape[3]], [t.stride(2), 1], [rows_blk, block_d_])
        out.append((desc, br, hr))
    return out


def qkv_load_args(block_rows, block_d_, q, k, v, tma, auto: bool = False) -> tuple:
    """The kernels' (Q, sqb, sqh, sqm, K, .., V, ..) arguments: the tensors and their strides (pointer loads), or,
    with TMA requested (or `auto`, see use_tma) and available, each tensor's descriptor, batch rows, head rows and a
    row stride of 1."""
    descs = tma_descriptors(block_rows, block_d_, q, k, v) if use_tma(tma, auto, q, k, v) else None
    if descs is None:
        return tuple(x for t in (q, k, v) for x in (t, t.stride(0), t.stride(1), t.stride(2)))
    return tuple(x for desc, br, hr in descs for x in (desc, br, hr, 1))
