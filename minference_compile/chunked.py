"""Chunked pre-fill: run a HuggingFace causal LM's forward over a long prompt in chunks that fill a K/V cache
(by default a PrefillCache: preallocated, written in place; minference_compile/prefill_cache.py).

    from minference_compile.backend import make_backend
    from minference_compile.chunked import chunked_prefill, greedy_continue

    fwd = torch.compile(model.forward, backend=make_backend(config), dynamic=True)
    cache, logits = chunked_prefill(model, input_ids, chunk_size=65536, forward=fwd, max_new_tokens=16)
    tokens = greedy_continue(model, cache, logits, steps=16, forward=fwd)

Every chunk's attention is the last `chunk` queries against all keys so far (q_len < kv_len); the ops run it
sparse with the query offset (docs/DESIGN.md "Query offset"), so only one chunk's activations (and the cache)
are ever alive. Chunk sizes that are multiples of 64 keep the chunks' 64-row query blocks on the unchunked
prompt's grid (the same vertical-slash rounding and block-sparse blocks as one-shot pre-fill).
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional, Tuple

import torch

from .prefill_cache import PrefillCache

__all__ = ["chunked_prefill", "greedy_continue", "ChunkOutOfMemoryError", "kv_cache_bytes", "check_cache_fits"]


class ChunkOutOfMemoryError(torch.OutOfMemoryError):
    """Out of memory in one pre-fill chunk; the message names the chunk size to try and the length reached."""


def kv_cache_bytes(config, seq_len: int, batch: int = 1, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of a full K/V cache of `seq_len` tokens for a HF decoder `config` (all layers, K and V)."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * batch * heads * head_dim * seq_len * itemsize


def check_cache_fits(model, total_len: int, cached_len: int = 0, batch: int = 1,
                     free_bytes: Optional[int] = None) -> None:
    """Raise ChunkOutOfMemoryError up front when the K/V cache still to be written for `total_len` tokens cannot fit
    in `free_bytes` (default on CUDA: free device memory plus what torch's allocator holds unused; elsewhere no
    check): no chunk size can help then."""
    dtype = next(model.parameters()).dtype
    if free_bytes is None:
        dev = next(model.parameters()).device
        if dev.type != "cuda":
            return
        free, _ = torch.cuda.mem_get_info(dev)
        free_bytes = free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    need = kv_cache_bytes(model.config, total_len - cached_len, batch, dtype)
    if need > free_bytes:
        raise ChunkOutOfMemoryError(
            f"the K/V cache of {total_len} tokens needs {need / 2**30:.1f} GiB more in {dtype} and only "
            f"{free_bytes / 2**30:.1f} GiB are free: no chunk size fits; shorten the prompt, use a GPU with more "
            "memory, or a quantised / offloaded cache.")


def cache_kwarg(model) -> str:
    """transformers >= 5.2x names the cache argument `cache` (`past_key_values` deprecated), earlier 5.x
    `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _dynamic_cache(model):
    from transformers import DynamicCache
    try:
        return DynamicCache(config=model.config)
    except TypeError:  # a transformers without the config argument
        return DynamicCache()


def _new_cache(model, cache, capacity: int):
    """cache: None or "prealloc" -> PrefillCache(capacity); "dynamic" -> DynamicCache; a Cache object as it is."""
    if cache is None or cache == "prealloc":
        return PrefillCache(capacity, config=model.config)
    if cache == "dynamic":
        return _dynamic_cache(model)
    if isinstance(cache, str):
        raise ValueError(f"cache must be a Cache, None, 'prealloc' or 'dynamic', got {cache!r}")
    return cache


def _oom(chunk_size: int, start: int, end: int, total: int, model, batch: int, dtype) -> str:
    cache_gib = kv_cache_bytes(model.config, total, batch, dtype) / 2**30
    smaller = max(64, chunk_size // 2 // 64 * 64)
    return (f"out of memory in the pre-fill chunk of tokens [{start}, {end}) of {total} (chunk_size={chunk_size}; "
            f"{start} tokens already in the cache). Retry with chunk_size={smaller} (or smaller). The K/V cache of "
            f"all {total} tokens takes {cache_gib:.1f} GiB in {dtype}: if that alone does not fit, no chunk size "
            "will.")


@torch.no_grad()
def chunked_prefill(model, input_ids: torch.Tensor, chunk_size: int, cache=None, *,
                    forward: Optional[Callable] = None, attention_mask: Optional[torch.Tensor] = None,
                    max_new_tokens: int = 0, **kw) -> Tuple[object, torch.Tensor]:
    """Pre-fill `input_ids` [B, N] chunk by chunk into a transformers cache.

    model: the HF causal LM (its config and argument names are read); forward: what to call per chunk (default
    `model`; e.g. `torch.compile(model.forward, backend=make_backend(cfg), dynamic=True)`). cache: None (default)
    or "prealloc" for a new PrefillCache of capacity N + max_new_tokens (preallocated, written in place: a compiled
    forward then peaks at ~1x the K/V cache, where a DynamicCache's torch.cat peaks at ~2x); "dynamic" for a new
    DynamicCache; or a cache already holding a prefix (the chunk positions continue from its length; a
    PrefillCache must have room for N more). max_new_tokens: decode room left in a new PrefillCache (greedy_continue
    writes steps - 1 tokens). attention_mask: the 2D [B, prefix + N] padding mask, if any. Extra keywords go to every
    forward call.
    Returns (cache, last_logits [B, vocab]: the logits of the last prompt token).
    A torch.OutOfMemoryError in a chunk becomes ChunkOutOfMemoryError naming a smaller chunk size and the
    length reached; on CUDA a cache that cannot fit at all is reported before the first chunk (check_cache_fits).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be [B, N] with N > 0, got {tuple(input_ids.shape)}")
    fwd = model if forward is None else forward
    B, N = input_ids.shape
    cache = _new_cache(model, cache, N + max_new_tokens)
    name = cache_kwarg(model)
    past = cache.get_seq_length()
    if isinstance(cache, PrefillCache):
        cache.check_room(past + N)
    check_cache_fits(model, past + N + max_new_tokens, past, B)
    logits = None
    for a in range(0, N, chunk_size):
        b = min(N, a + chunk_size)
        args = dict(kw, input_ids=input_ids[:, a:b].clone(), use_cache=True, logits_to_keep=1,
                    position_ids=torch.arange(past + a, past + b, device=input_ids.device)[None].expand(B, -1))
        args[name] = cache
        if attention_mask is not None:
            args["attention_mask"] = attention_mask[:, :past + b]
        failed = False
        try:
            logits = fwd(**args).logits[:, -1]
        except torch.OutOfMemoryError:
            failed = True  # raised below, outside the handler, so the chunk's tensors are freed first
        if failed:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise ChunkOutOfMemoryError(_oom(chunk_size, past + a, past + b, past + N, model, B,
                                             next(model.parameters()).dtype))
        if isinstance(cache, PrefillCache):
            cache.mark_dynamic()  # every chunk: the length tensor is a new one
        elif a == 0:
            _prepare_cache(cache)
    return cache, logits


def _prepare_cache(cache) -> None:
    """After the first chunk: make the cached K/V contiguous and mark their length dynamic, so that every later
    chunk presents the same strides and a symbolic length to Dynamo: one compiled graph for all of them. (The
    first chunk leaves views with transposed strides in a DynamicCache, later chunks torch.cat results; and a
    cached length first seen as a plain int is specialised, which recompiles at the next chunk.)"""
    for layer in getattr(cache, "layers", ()):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor) and t.dim() == 4:
                t = t.contiguous()
                torch._dynamo.maybe_mark_dynamic(t, 2)
                setattr(layer, name, t)


@torch.no_grad()
def greedy_continue(model, cache, last_logits: torch.Tensor, steps: int, *, forward: Optional[Callable] = None,
                    **kw) -> torch.Tensor:
    """Greedy decoding after chunked_prefill: `steps` tokens [B, steps], one forward (q_len 1, dense) per token
    after the first (which comes from `last_logits` [B, vocab]). A PrefillCache needs room for steps - 1 more tokens
    (chunked_prefill's max_new_tokens); CacheCapacityError otherwise, before the first step."""
    fwd = model if forward is None else forward
    name = cache_kwarg(model)
    if isinstance(cache, PrefillCache):  # before any step (a compiled step past the capacity would recompile first)
        cache.check_room(cache.get_seq_length() + steps - 1)
    tok = last_logits.argmax(-1, keepdim=True)
    out = [tok]
    for _ in range(steps - 1):
        pos = cache.get_seq_length()
        args = dict(kw, input_ids=tok, use_cache=True, logits_to_keep=1,
                    position_ids=torch.full_like(tok, pos))
        args[name] = cache
        tok = fwd(**args).logits[:, -1].argmax(-1, keepdim=True)
        out.append(tok)
    return torch.cat(out, 1)
