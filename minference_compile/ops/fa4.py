"""Optional Hopper path (`pip install minference-compile[hopper]`): FlashAttention-4 (`flash-attn-4`, CuTe DSL,
JIT-compiled, no build step) runs the A-shape heads, dense causal attention and, at head dim >= 128, the
vertical-slash heads (on 128-row tile lists plus a Triton columns pass: the tiled semantics of docs/DESIGN.md), where
each measured faster than our Triton kernels on one H200 at 128K (benchmarks/NOTES.md rows 20, 21, 25: A-shape
128 + 4096 14.9 vs 19.5 ms at D=128, 4.6 vs 5.1 ms at D=64; dense causal 1.15-1.19x cuDNN; vertical-slash
(1000, 6096) 120.0 vs 142.3 ms at D=128). Block-sparse stays on Triton: on the same 64x64 blocks FA4 was 5% faster
at D=128 and 25% slower at D=64.

FA4 runs a call when flash_attn.cute imports, the tensors are CUDA fp16/bf16 on sm90, the head dim is a multiple of
8 up to 256, and MINFERENCE_FA4 is not "0"; otherwise the Triton kernels (and the flash prefix path for dense chunks)
run. Pre-fill chunks (q_len < kv_len: the last q_len positions) run too: FA4's causal mask is bottom-right aligned,
and the A-shape chunk mask reads its query offset kv_len - q_len from FA4's run-time sequence lengths (its mask_mod
gets chunk-relative rows), so one compiled kernel serves every chunk. The first call of each (dtype, head dim, A-shape
window, one shot or chunk) JIT-compiles (2-6 s on the H200)."""
from __future__ import annotations

import collections
import functools
import logging
import os
from typing import Optional, Sequence, Tuple, Union

import torch

from ..triton_kernels._torch_util import device_tensor
from .fa4_lists import FA4Lists, ashape_blocks, to_lists

_log = logging.getLogger("minference_compile")
BLOCK = (128, 128)  # FA4's sm90 tile: block lists at its granularity (a 128 x 128 A-shape superset, mask_mod exact)
_ALLOW_CPU = False  # tests: run the plumbing against an emulated flash_attn.cute on CPU tensors
DENSE = "dense"
Window = Union[None, str, Tuple[int, int]]  # per q head: None untouched, DENSE causal, (init, local) A-shape


@functools.lru_cache(maxsize=1)
def _import_reason() -> Optional[str]:
    try:
        import flash_attn.cute  # noqa: F401
        from flash_attn.cute.block_sparsity import BlockSparseTensorsTorch  # noqa: F401
    except Exception as e:  # not installed, or the DSL / driver failed to load: the Triton path runs
        return f"flash_attn.cute not importable ({type(e).__name__}: {e})"
    return None


def reason(q: torch.Tensor, k: torch.Tensor) -> Optional[str]:
    """Why FA4 cannot run attention of q [B,Hq,Sq,D] over k [B,Hkv,S,D] here (None: it can). A pre-fill chunk
    (1 < Sq < S, the last Sq positions) runs: FA4's bottom-right causal mask, the A-shape chunk mask_mod and the
    vertical-slash tile lists all take the offset; a decode step (Sq = 1) stays on SDPA."""
    if os.environ.get("MINFERENCE_FA4", "auto") == "0":
        return "MINFERENCE_FA4=0"
    if not _ALLOW_CPU:
        if not q.is_cuda:
            return "not a CUDA tensor"
        if torch.cuda.get_device_capability(q.device)[0] != 9:
            return "not an sm90 GPU (measured on the H200 only)"
        if q.dtype not in (torch.float16, torch.bfloat16):
            return f"dtype {q.dtype}"
    if not _head_dim_ok(q.shape[-1]):
        return f"head dim {q.shape[-1]}"
    if q.shape[2] != k.shape[2] and not 1 < q.shape[2] < k.shape[2]:
        return "a decode step (q_len 1)" if q.shape[2] == 1 else f"q_len {q.shape[2]} > kv_len {k.shape[2]}"
    if q.shape[1] % k.shape[1]:
        return "q heads not a multiple of kv heads"
    return _import_reason()


@functools.lru_cache(maxsize=64)
def ashape_mask_mod(init: int, local: int, chunk: bool = False):
    """The A-shape element mask as a CuTe DSL mask_mod: j <= i and (j < init or i - j < local). One function per
    window: FA4 compiles its closure constants in. FA4 hands the mask the row within q; chunk=True: a pre-fill chunk,
    i = that row + kv_len - q_len, the offset read from FA4's run-time lengths (one kernel for every chunk; the
    one-shot mask keeps no offset arithmetic)."""
    import cutlass
    import cutlass.cute as cute
    from flash_attn.cute.utils import scalar_to_ssa

    if not chunk:
        @cute.jit
        def ashape_mask(batch_idx, head_idx, q_idx, kv_idx, seqlen_info, aux_tensors):
            return (kv_idx <= q_idx) & ((kv_idx < init) | (q_idx - kv_idx < local))
        return ashape_mask

    @cute.jit
    def ashape_chunk_mask(batch_idx, head_idx, q_idx, kv_idx, seqlen_info, aux_tensors):
        i = q_idx + scalar_to_ssa(seqlen_info.seqlen_k - seqlen_info.seqlen_q, cutlass.Int32)
        return (kv_idx <= i) & ((kv_idx < init) | (i - kv_idx < local))
    return ashape_chunk_mask


@functools.lru_cache(maxsize=16)
def _ashape_lists(Sq: int, S: int, init: int, local: int, device: torch.device):
    # O(Sq / 128 x S / 128) bools once per (chunk, length, window): every layer of a chunk reuses them; broadcast
    # over batch and heads
    touched, full = ashape_blocks(S, init, local, *BLOCK, device, q_len=Sq)
    return to_lists(touched, full, S, *BLOCK)


def block_sparse_tensors(lists):
    """FA4Lists (ops/fa4_lists.py) -> FA4's BlockSparseTensorsTorch."""
    from flash_attn.cute.block_sparsity import BlockSparseTensorsTorch
    return BlockSparseTensorsTorch(mask_block_cnt=lists.mask_cnt, mask_block_idx=lists.mask_idx,
                                   full_block_cnt=lists.full_cnt, full_block_idx=lists.full_idx,
                                   block_size=lists.block_size)


_announced = set()
CALLS = collections.Counter()  # FA4 calls by kind ("dense causal", "A-shape", "vertical-slash"): benchmarks record them


def _call(kind: str, q, k, v, scale: float, **kw):
    """One FA4 forward on [B,H,S,D] tensors (GQA by head counts), counted in CALLS and announced once per kind ->
    (out [B,Hq,Sq,D], a transposed view of FA4's [B,Sq,Hq,D] output; lse or None)."""
    from flash_attn.cute import flash_attn_func
    CALLS[kind] += 1
    if kind not in _announced:  # once per kind: which kernel really runs (explain() records the pattern only)
        _announced.add(kind)
        _log.info("minference_compile: %s attention runs on FlashAttention-4 (the [hopper] extra; "
                  "MINFERENCE_FA4=0 for the Triton / SDPA path)", kind)
    # FA4 takes any strides with a unit last one (its layouts are dynamic; it copies only misaligned tensors), so the
    # [B,S,H,D] views go in as they are: no copy of q, nor of a long K/V prefix per pre-fill chunk
    qf, kf, vf = (x.transpose(1, 2) for x in (q, k, v))
    o, lse = flash_attn_func(qf, kf, vf, softmax_scale=scale, **kw)[:2]
    return o.transpose(1, 2), lse


def _run(q, k, v, scale: float, window: Union[str, Tuple[int, int]]) -> torch.Tensor:
    """FA4 dense causal or A-shape of q [B,Hq,Sq,D] (the last Sq of k's S positions) -> [B,Hq,Sq,D] (a transposed
    view of FA4's output)."""
    if window == DENSE:
        return _call("dense causal", q, k, v, scale, causal=True)[0]
    Sq, S = q.shape[2], k.shape[2]
    bst = block_sparse_tensors(_ashape_lists(Sq, S, *window, q.device))
    return _call("A-shape", q, k, v, scale, block_sparse_tensors=bst, mask_mod=ashape_mask_mod(*window, Sq < S))[0]


def _key(window: Window, S: int) -> Window:
    if window is None or window == DENSE:
        return window
    init, local = int(window[0]), int(window[1])
    return DENSE if init >= S or local >= S else (init, local)  # a window covering every key is dense causal


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, windows: Sequence[Window], scale: float,
           out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """q [B,Hq,Sq,D] (the last Sq of the S positions), k/v [B,Hkv,S,D] (check `reason` first); windows[h] per q
    head: None (left as in `out`), DENSE (causal) or (init, local) (A-shape). Heads sharing a window run in one FA4
    call: all Hq with native GQA, a subset with its K/V heads gathered. Returns out [B,Hq,Sq,D] (written in place if
    given; without `out`, one call covering every head returns FA4's output itself, stored [B,Sq,Hq,D])."""
    Hq = q.shape[1]
    g = Hq // k.shape[1]
    keys = [_key(w, k.shape[2]) for w in windows]  # a window covering every key of the cache runs dense
    groups = {}
    for h, w in enumerate(keys):
        if w is not None:
            groups.setdefault(w, []).append(h)
    if out is None and len(groups) == 1:
        (w, heads), = groups.items()
        if len(heads) == Hq:
            return _run(q, k, v, scale, w)  # one call for every head: FA4's own output, no copy
    if out is None:
        out = torch.zeros_like(q) if any(w is None for w in keys) else torch.empty_like(q)
    for w, heads in groups.items():
        if len(heads) == Hq:
            o = _run(q, k, v, scale, w)
            out.copy_(o)
        else:
            idx = device_tensor(heads, q.device, torch.long)  # pinned, non-blocking: no stream sync
            o = _run(q.index_select(1, idx), k.index_select(1, idx // g), v.index_select(1, idx // g), scale, w)
            out[:, heads] = o.to(out.dtype)
    return out


def attend_group(group, windows: Sequence[Window], out: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A pattern's heads (windows[h] None for the other patterns' heads: the group's head mask, from the host-side
    specs, so no device sync) through FA4 when it can run them; None otherwise (the caller runs Triton)."""
    if reason(group.q, group.k) is not None:
        return None
    return attend(group.q, group.k, group.v, windows, group.scale, out)


def vs_reason(q: torch.Tensor, k: torch.Tensor, slash_sizes: Sequence[int] = ()) -> Optional[str]:
    """Why vertical-slash heads do not run on FA4 here (None: they do). MINFERENCE_FA4_VS: "0" never, "1" wherever FA4
    runs, unset / "auto": at head dim >= 128, where it measured faster (benchmarks/NOTES.md row 25, H200: 128K
    (1000, 6096) 120.0 vs 142.3 ms for the Triton kernel, (100, 800) a tie; D=64 not measured, and FA4's
    block-sparse lost 25% to ours there in row 20), and where the slash budget (slash_sizes: the heads') is dense
    enough in the keys for 128-row tiles to pay (`VS_MIN_BAND_DENSITY`). Pre-fill chunks too (FA4's causal mask is
    bottom-right aligned, the tile lists absolute)."""
    return _vs_rule(q.shape[-1], slash_sizes, k.shape[2]) or reason(q, k)


def vs_layer_on_fa4(specs: Sequence, q: torch.Tensor, k: torch.Tensor, qk_dtype: str = "") -> bool:
    """Whether a layer of these pattern specs runs on FA4 tiles (the rule of patterns/vertical_slash.attend_cuda:
    every head vertical-slash, so no head mask; no qk_dtype; `vs_reason`); its crossover then applies. specs[h] None:
    head h has another pattern (a HeadGroup's specs), so not this route."""
    return (bool(specs) and all(s is not None and s.name == "vertical_and_slash" for s in specs) and not qk_dtype
            and vs_reason(q, k, [s.slash_size for s in specs]) is None)


def vs_layer_here(pattern_names: Sequence[str], head_dim: int, qk_dtype: str = "", slash_sizes: Sequence[int] = (),
                  kv_len: int = 0) -> bool:
    """`vs_layer_on_fa4` predicted on the host for this machine (explain(); the dtype is checked at run time)."""
    return (os.environ.get("MINFERENCE_FA4", "auto") != "0" and _import_reason() is None and _sm90_here()
            and _head_dim_ok(head_dim) and bool(pattern_names) and set(pattern_names) == {"vertical_and_slash"}
            and not qk_dtype and _vs_rule(head_dim, slash_sizes, kv_len) is None)


# Slash budget per 128-key diagonal band (the heads' budget-weighted mean) under which the Triton kernel wins: sparse diagonals cost FA4's
# 128-row tiles ~2x the Triton kernel's 64-row area, more than FA4's ~1.7x rate makes up (H200, NOTES row 27,
# generated sets: (100, 800) at 512K = 0.20 per band, Triton 147.5 vs FA4 153.7 ms; at 1M 0.10, 273.8 vs 287.6;
# FA4 won at 0.74 ((1000, 6096) at 1M: 2924 vs 3307 ms), 0.78 ((100, 800) at 128K: 21.8 vs 24.4) and above)
VS_MIN_BAND_DENSITY = 0.4


def _vs_rule(head_dim: int, slash_sizes: Sequence[int] = (), kv_len: int = 0) -> Optional[str]:
    env = os.environ.get("MINFERENCE_FA4_VS", "auto")
    if env == "0":
        return "MINFERENCE_FA4_VS=0"
    if env == "1":
        return None
    if head_dim < 128:
        return f"head dim {head_dim} < 128 (not measured faster; MINFERENCE_FA4_VS=1 forces it)"
    if slash_sizes and kv_len > 0 and sum(slash_sizes) > 0:
        # weighted by budget (a head's tile work grows with it): a few dense heads among many sparse ones keep FA4
        mean = sum(s * s for s in slash_sizes) / sum(slash_sizes)
        density = mean * 128 / kv_len
        if density < VS_MIN_BAND_DENSITY:
            return (f"{mean:.0f} slashes per head over {kv_len} keys = {density:.2f} per 128-key band < "
                    f"{VS_MIN_BAND_DENSITY}: the Triton kernel's 64-row tiles cost about half (MINFERENCE_FA4_VS=1 "
                    f"forces FA4)")
    return None


def _head_dim_ok(D: int) -> bool:
    return D % 8 == 0 and D <= 256


def _sm90_here() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


def kernel_note(pattern_names: Sequence[str], head_dim: int, sparse: bool, qk_dtype: str = "",
                slash_sizes: Sequence[int] = (), kv_len: int = 0) -> str:
    """For explain(): which heads of a layer the [hopper] path runs on FA4 in a one-shot CUDA pre-fill on this
    machine, by the rules the ops apply (ops/dense.py, patterns/*.attend_cuda; "" when none: FA4 absent, off, not an
    sm90 device, or an unsupported head dim). sparse: the layer runs its patterns (else the dense fallback). The
    dtype is checked at run time (fp16 / bf16 only)."""
    if os.environ.get("MINFERENCE_FA4", "auto") == "0" or _import_reason() is not None:
        return ""
    if not _sm90_here() or not _head_dim_ok(head_dim):
        return ""
    if not sparse:
        return " [FlashAttention-4: dense causal]"
    present = set(pattern_names)
    parts = []
    # vertical-slash: whole layers only (no head mask), no qk_dtype, the head-dim rule of vs_reason
    if vs_layer_here(pattern_names, head_dim, qk_dtype, slash_sizes, kv_len):
        parts.append("vertical-slash on 128-row tiles (a superset: docs/DESIGN.md \"Vertical-slash, tiled\")")
    if "stream_llm" in present:
        parts.append("A-shape")
    if "block_sparse_128" in present and os.environ.get("MINFERENCE_FA4_BS128", "auto") != "0":
        parts.append("block-sparse 128")
    if "dense" in present:
        parts.append("dense heads")
    return f" [FlashAttention-4: {', '.join(parts)}]" if parts else ""


def vs_tile_k() -> int:
    """Key tile of the FA4 vertical-slash lists: MINFERENCE_FA4_VS_TILE_K (128 default, or 64)."""
    return int(os.environ.get("MINFERENCE_FA4_VS_TILE_K", "128"))


def vertical_slash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index, scale: float,
                   tile_k: Optional[int] = None) -> torch.Tensor:
    """Tiled vertical-slash (triton_kernels/vertical_slash_tiled.py) of q [B,Hq,Sq,D] over k/v [B,Hkv,S,D]: the
    touched 128 x tile_k tiles of index.slash_prefix on FA4's block-sparse forward (full tiles unmasked, the
    diagonal's under its causal mask), then the vertical columns outside them by our Triton pass, continuing FA4's
    softmax from its log-sum-exp. index: the VSIndex of the sets (vertical_slash_index.py); tile_k None:
    `vs_tile_k()`. Returns [B,Hq,Sq,D] stored as FA4 writes it ([B,Sq,Hq,D]). Check `vs_reason` first."""
    from ..triton_kernels.vertical_slash_tiled import TILE, columns_after, tile_lists
    tk = vs_tile_k() if tile_k is None else int(tile_k)
    fcnt, fidx, mcnt, midx = tile_lists(index.slash_prefix, q.shape[2], k.shape[2], index.tile_offset.shape[-1], tk)
    bst = block_sparse_tensors(FA4Lists(mcnt, midx, fcnt, fidx, (TILE, tk)))
    out, lse = _call("vertical-slash", q, k, v, scale, causal=True, block_sparse_tensors=bst, return_lse=True)
    return columns_after(q, k, v, out, lse, index, scale, tk)  # lse [B,Hq,Sq] fp32


def bs128_reason(q: torch.Tensor, k: torch.Tensor) -> Optional[str]:
    """Why block_sparse_128 heads do not run on FA4 here (None: they do). MINFERENCE_FA4_BS128="0": never (the
    Triton kernel on the equal 64-granular index); otherwise wherever FA4 runs: its 128 x 128 tiles beat that kernel
    at both head dims measured (H200, 128K, top-50, NOTES row 42: 22.8 vs 34.6 ms at D=128, 7.1 vs 8.4 ms at D=64)."""
    if os.environ.get("MINFERENCE_FA4_BS128", "auto") == "0":
        return "MINFERENCE_FA4_BS128=0"
    return reason(q, k)


def bs128_lists(index: torch.Tensor, q_len: int, kv_len: int, heads: Optional[Sequence[int]] = None) -> FA4Lists:
    """block_sparse_128's index [B,H,ceil(q_len/128),K] (ascending absolute ids, -1 pad; block_sparse_index with
    block=128) -> FA4Lists at (128, 128) for causal=True: ids below the query block's first row in the full list, the
    diagonal one or two in the mask list. heads: the q heads to compute (None: all); the others get empty lists."""
    B, H, M, K = index.shape
    idx = index.long()
    first = kv_len - q_len + 128 * torch.arange(M, device=index.device)
    lo = (first // 128)[:, None]
    valid = idx >= 0
    full = valid & (idx < lo)
    diag = valid & (idx >= lo)
    if heads is not None and len(heads) < H:
        keep = torch.zeros(H, dtype=torch.bool, device=index.device)
        keep[device_tensor(list(heads), index.device, torch.long)] = True
        full, diag = full & keep[:, None, None], diag & keep[:, None, None]
    fcnt = full.sum(-1, dtype=torch.int32)
    fidx = torch.where(full, idx, 0).to(torch.int32)  # ascending ids: the full ones are each row's first
    mcnt = diag.sum(-1, dtype=torch.int32)
    # the diagonal ids (one or two) follow them; FA4 rejects lists wider than the key blocks ("n-block dimension")
    w = min(2, -(-kv_len // 128))
    slot = fcnt.long()[..., None] + torch.arange(w, device=index.device)
    midx = torch.where(torch.arange(w, device=index.device) < mcnt[..., None],
                       idx.gather(-1, slot.clamp(max=K - 1)), 0).to(torch.int32)
    return FA4Lists(mcnt.contiguous(), midx.contiguous(), fcnt.contiguous(), fidx.contiguous(), (128, 128))


def block_sparse_128(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, scale: float,
                     heads: Optional[Sequence[int]] = None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """block_sparse_128 on FA4's block-sparse forward: q [B,Hq,Sq,D] (the last Sq of S), k/v [B,Hkv,S,D], index
    [B,Hq,ceil(Sq/128),K] -> [B,Hq,Sq,D]. One call over every head (native GQA), empty lists for heads outside
    ``heads``; with ``out``, only ``heads`` are written into it. Check `bs128_reason` first."""
    Hq = q.shape[1]
    heads = list(range(Hq)) if heads is None else list(heads)
    bst = block_sparse_tensors(bs128_lists(index, q.shape[2], k.shape[2], heads))
    o = _call("block-sparse 128", q, k, v, scale, causal=True, block_sparse_tensors=bst)[0]
    if out is None and len(heads) == Hq:
        return o
    if out is None:
        out = torch.zeros_like(q)
    if len(heads) == Hq:
        out.copy_(o)
    else:
        out[:, heads] = o[:, heads].to(out.dtype)
    return out


def dense_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Dense causal attention [B,Hq,Sq,D] (Sq <= S: the last Sq positions) through FA4, stored as FA4 writes it
    ([B,Sq,Hq,D], a transposed view; check `reason(q, k)` first)."""
    return _run(q, k, v, scale, DENSE)
