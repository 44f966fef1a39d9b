"""An emulated flash_attn.cute for CPU tests: what FA4 computes from the arguments we hand it (the pairs its block
lists and mask_mod allow), by dense masks and the fp32 reference. Says nothing about FA4 itself; it catches wrong
lists, layouts, head gathers and scales in our code before a GPU run."""
import functools
import sys
import types
from argparse import Namespace

import torch

from minference_compile.ops.fa4_lists import FA4Lists, pair_mask
from minference_compile.triton_kernels import naive


def fake_flash_attn_func(q, k, v, softmax_scale=None, causal=False, window_size=(None, None),
                         block_sparse_tensors=None, mask_mod=None, return_lse=False):
    """q [B,Sq,Hq,D], k/v [B,S,Hkv,D] -> (out [B,Sq,Hq,D], lse [B,Hq,Sq] fp32 natural log if return_lse else None)."""
    assert all(x.stride(-1) == 1 for x in (q, k, v)), "FA4 takes a unit last stride only"
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    B, H, Sq, _ = q.shape
    S = k.shape[2]
    assert Sq == S or causal or mask_mod is not None, "chunks: a causal mask or a mask_mod"
    i, j = torch.arange(S - Sq, S)[:, None], torch.arange(S)[None, :]  # bottom-right aligned, as FA4's causal
    if mask_mod is not None:
        # FA4 (flash_attn/cute/mask.py) hands a mask_mod the row within q and its run-time lengths in seqlen_info
        info = Namespace(seqlen_q=Sq, seqlen_k=S)
        allowed = lambda i, j: mask_mod(0, 0, i - (S - Sq), j, info, None)  # noqa: E731
    elif causal:
        allowed = None
    else:
        allowed = lambda i, j: torch.ones(S, S, dtype=torch.bool)  # noqa: E731
    if block_sparse_tensors is not None:
        t = block_sparse_tensors
        # FA4 (block_sparsity.py, 4.0.0b36) rejects a mask list wider than the key blocks ("n-block dimension must be
        # <= ..."); the full list's width is not checked
        assert t.mask_block_idx.shape[-1] <= -(-S // t.block_size[1]), "n-block dimension"
        lists = FA4Lists(t.mask_block_cnt, t.mask_block_idx, t.full_block_cnt, t.full_block_idx, t.block_size)
        mask = pair_mask(lists, S, allowed, q_len=Sq)
    else:
        mask = j <= i
        if window_size[0] is not None:
            mask = mask & (i - j <= window_size[0])
    mask = mask.expand(B, H, Sq, S)
    out = naive.masked_attention_ref(q, k, v, mask, softmax_scale)
    lse = masked_lse(q, k, mask, softmax_scale) if return_lse else None
    return out.transpose(1, 2).contiguous().to(q.dtype), lse  # [B,S,Hq,D] contiguous, as FA4 allocates it


def masked_lse(q, k, mask, scale=None):
    """fp32 natural-log sum of exp(scale * q.k) over the attended keys: q [B,Hq,Sq,D], k [B,Hkv,S,D] (GQA by head
    counts), mask [B,Hq,Sq,S]; -inf where a row attends nothing."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    g = q.shape[1] // k.shape[1]
    sc = (q.float() @ k.float().repeat_interleave(g, 1).transpose(-1, -2)) * scale
    return torch.logsumexp(sc.masked_fill(~mask, float("-inf")), -1)


def python_mask_mod(init, local, chunk=False):
    """ops/fa4.ashape_mask_mod in Python: rows chunk-relative, the offset from seqlen_info (chunks only, as there)."""
    def mask(b, h, i, j, info, aux):
        i = i + (info.seqlen_k - info.seqlen_q) if chunk else i
        return (j <= i) & ((j < init) | (i - j < local))
    return mask


def install_fake_fa4(monkeypatch, fn=fake_flash_attn_func):
    fa = types.ModuleType("flash_attn")
    cute = types.ModuleType("flash_attn.cute")
    bs = types.ModuleType("flash_attn.cute.block_sparsity")
    cute.flash_attn_func = fn
    bs.BlockSparseTensorsTorch = Namespace
    for name, mod in (("flash_attn", fa), ("flash_attn.cute", cute), ("flash_attn.cute.block_sparsity", bs)):
        monkeypatch.setitem(sys.modules, name, mod)
    return cute


def emulate_fa4(monkeypatch, fn=fake_flash_attn_func):
    """The [hopper] path on CPU tensors for one test: the emulated flash_attn.cute (fn: it, or a spy around it), FA4
    allowed on CPU, the Python A-shape mask_mod, MINFERENCE_FA4 unset, and fresh import / list caches (swapped in
    through monkeypatch, so the real ones come back untouched after the test)."""
    import transformers

    from minference_compile.ops import fa4
    # transformers' lazy modules probe for flash_attn once (find_spec fails on the stand-in): load them first
    transformers.LlamaForCausalLM, transformers.GenerationConfig  # noqa: B018
    install_fake_fa4(monkeypatch, fn)
    monkeypatch.setattr(fa4, "_ALLOW_CPU", True)
    monkeypatch.setattr(fa4, "ashape_mask_mod", python_mask_mod)
    monkeypatch.delenv("MINFERENCE_FA4", raising=False)
    for name in ("_import_reason", "_ashape_lists"):
        cached = getattr(fa4, name)
        monkeypatch.setattr(fa4, name, functools.lru_cache(maxsize=cached.cache_info().maxsize)(cached.__wrapped__))
