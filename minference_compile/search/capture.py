"""Post-RoPE q/k of every layer from one dense forward, written to disk layer by layer (bounded memory).

A registered transformers attention function (``AttentionInterface``) sees each layer's post-RoPE query and
un-repeated key, saves what the search needs, and calls the stock SDPA function, so the forward is the sdpa one:
``k`` [Hkv, S, D], ``q_rows`` [Hq, R, D] at the sampled ``rows`` (the last 64 included), ``q_means`` [Hq, NQB, D]
(64-row block means), fp32; with ``full_q``, also ``q`` [Hq, S, D] (the antidiagonal block scores read every q row).
``full_q_layer``: that layer's whole q instead of the rows (viz).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

NAME = "minference_search_capture"
BLOCK = 64
_STATE: dict = {}


def sample_rows(S: int, n_rows: int, last_q: int = 64) -> torch.Tensor:
    """The last ``last_q`` rows plus rows spread evenly over [S/4, S - last_q): far from the estimation window too."""
    last = torch.arange(max(0, S - last_q), S)
    lo, hi = S // 4, max(S // 4, S - last_q - 1)
    spread = torch.linspace(lo, hi, max(0, n_rows - last.numel())).round().long() if hi > lo else last[:0]
    return torch.unique(torch.cat([spread, last]))


def _hook(module, query, key, value, attention_mask, **kwargs):
    layer = getattr(module, "layer_idx", None)
    st = _STATE
    if layer is not None and st:
        q = query[0].detach().float()
        S = q.shape[1]
        rec = {"k": key[0].detach().float().clone(), "S": S}
        if st.get("full_q_layer") == layer:
            rec["q"] = q.clone()
        else:
            rec["rows"] = st["rows"]
            rec["q_rows"] = q[:, st["rows"]].clone()
            n = S // BLOCK
            parts = [q[:, :n * BLOCK].unflatten(1, (n, BLOCK)).mean(2)] if n else []
            if S % BLOCK:
                parts.append(q[:, n * BLOCK:].mean(1, keepdim=True))
            rec["q_means"] = torch.cat(parts, 1)
            if st.get("full_q"):
                rec["q"] = q.clone()
        if st.get("dir"):
            torch.save(rec, os.path.join(st["dir"], f"layer{layer:03d}.pt"))
        else:
            st.setdefault("layers", {})[layer] = rec
    # capture() runs one unpadded sequence: plain causal attention, no mask tensor. K/V heads are repeated rather than
    # passed with enable_gqa: SDPA's memory-efficient kernel (the fp32 one on CUDA) takes no enable_gqa, and the math
    # fallback builds [Hq, S, S] (14 GiB asked at 32K on an H200, with 120 GiB already held)
    g = query.shape[1] // key.shape[1]
    if g > 1:
        key, value = key.repeat_interleave(g, 1), value.repeat_interleave(g, 1)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=query.shape[2] > 1,
                                                           scale=kwargs.get("scaling"))
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs) -> None:
    """The capture forward is one unpadded causal sequence: no [S, S] mask is built (at 32K transformers'
    no-cache mask is 1 GiB, and CUDA SDPA expanded it per head: 14 GiB on an H200)."""
    return None


def register() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, _hook)
    AttentionMaskInterface.register(NAME, _no_mask)
    return NAME


def load_model(path: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=register(), dtype=dtype)
    return model.to(device).eval()


def capture(model, ids: torch.Tensor, n_rows: int, out_dir: Optional[str] = None,
            full_q_layer: Optional[int] = None, full_q: bool = False, rows: Optional[torch.Tensor] = None) -> dict:
    """One forward of ``ids`` [1, S]. With ``out_dir``: files layer###.pt there, returns {}; else {layer: record}.
    ``full_q``: every record also holds the whole q (antidiagonal block-sparse candidates need it). ``rows``: the
    query rows to keep (ascending; default ``sample_rows(S, n_rows)``)."""
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"capture takes one unpadded sequence [1, S], got {tuple(ids.shape)}")
    S = ids.shape[1]
    _STATE.clear()
    _STATE.update(rows=sample_rows(S, n_rows) if rows is None else rows, dir=out_dir, full_q_layer=full_q_layer,
                  full_q=full_q)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    try:
        with torch.no_grad():
            base = getattr(model, "model", model)  # no lm_head over the whole prompt
            base(input_ids=ids.to(model.device), use_cache=False)
        return dict(_STATE.get("layers", {}))
    finally:
        _STATE.clear()
