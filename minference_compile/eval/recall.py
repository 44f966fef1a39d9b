"""Per-head attention recall of the pattern the sparse path would select.

recall(layer, head) = mean over sampled query rows i of sum_{j in pattern(i)} softmax(q_i k^T * scale)_j:
the share of the dense attention mass that the selected sparse pattern keeps (1.0 = nothing lost).

It runs during a *dense* forward: a registered transformers attention implementation
(``minference_recall``) sees each layer's post-RoPE q [B, Hq, S, D] and k [B, Hkv, S, D], selects the
pattern through the pattern registry with each spec's own ``select`` (the op's selection: the vertical-slash
estimate, the adaptive mass thresholds, block scores, A-shape windows), measures the
mass inside it on rows sampled from the second half of the prompt (chunks of rows, never S x S), then
calls the stock SDPA attention, so the forward's output is the dense one.
"""
from __future__ import annotations

import contextlib
import torch
import torch.nn.functional as F

from ..config import MInferenceConfig
from ..patterns import AShape, Dense
from ..patterns.base import HeadGroup, as_spec
from ..patterns.block_sparse import BlockAttention

BLOCK = 64
# what a selection means as a key mask, per family of patterns (each family's masks below are this module's own)
DENSE, VERTICAL_SLASH, STREAM_LLM, BLOCK_SPARSE = 0, 1, 2, 3
IMPL = "minference_recall"
_STATE: dict = {}  # active collection: {"configs", "rows", "min_len", "out"}


def sample_rows(S: int, n: int) -> torch.Tensor:
    """``n`` query rows evenly spread over the second half of the prompt (long contexts only)."""
    lo = S // 2
    return torch.linspace(lo, S - 1, min(n, S - lo)).round().long().unique()


def _family(cls) -> int:
    if cls is Dense:
        return DENSE
    if cls is AShape:
        return STREAM_LLM
    if issubclass(cls, BlockAttention):  # block-sparse: fixed top-k, mass threshold, antidiagonal scores
        return BLOCK_SPARSE
    if cls.name.startswith("vertical_and_slash"):  # fixed and adaptive: (vertical, slash) index lists
        return VERTICAL_SLASH
    raise NotImplementedError(f"recall: no key mask for pattern {cls.name!r}")


def pattern_masks(q: torch.Tensor, k: torch.Tensor, entries: tuple, last_q: int, scale: float = None):
    """-> mask_fn(rows [r] long) -> bool [Hq, r, S] of the keys each head's pattern keeps (causal
    added by the caller). ``entries``: per q-head spec or (pattern, v_slot, s_slot); batch 1. Each pattern's
    heads are selected by its registered spec's ``select`` (what the op computes), then read as a mask."""
    Hq, S = q.shape[1], q.shape[2]
    specs = tuple(as_spec(e) for e in entries)
    classes = [type(sp) for sp in specs]
    fam = [_family(c) for c in classes]
    dev = q.device
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    cols = torch.zeros(Hq, S, dtype=torch.bool, device=dev)
    slashes = torch.zeros(Hq, S, dtype=torch.bool, device=dev)
    blocks = torch.zeros(Hq, -(-S // BLOCK), -(-S // BLOCK), dtype=torch.bool, device=dev) \
        if BLOCK_SPARSE in fam else None
    for cls in dict.fromkeys(classes):
        if _family(cls) in (DENSE, STREAM_LLM):
            continue
        mine = torch.tensor([c is cls for c in classes], device=dev)
        group = HeadGroup(q, k, k, scale, last_q, tuple(sp if c is cls else None for sp, c in zip(specs, classes)))
        sel = cls.select(group)
        if _family(cls) == VERTICAL_SLASH:
            cols |= _presence(sel[0][0], S) & mine[:, None]
            slashes |= _presence(sel[1][0], S) & mine[:, None]
        else:
            blocks |= _presence(sel[0], blocks.shape[-1]) & mine[:, None, None]
    prefix = F.pad(slashes.int().cumsum(-1, dtype=torch.int32), (1, 0))
    pid = torch.tensor(fam, device=dev).view(-1, 1, 1)
    init = torch.tensor([sp.init_num if isinstance(sp, AShape) else 0 for sp in specs], device=dev).view(-1, 1, 1)
    local = torch.tensor([sp.local_window_num if isinstance(sp, AShape) else 0 for sp in specs],
                         device=dev).view(-1, 1, 1)

    def mask_fn(rows: torch.Tensor) -> torch.Tensor:
        i = rows.view(1, -1, 1)
        j = torch.arange(S, device=dev).view(1, 1, -1)
        m0 = i - i % BLOCK
        lo, hi = (m0 - j).clamp(0, S), (m0 - j + BLOCK).clamp(0, S)
        pre = prefix.unsqueeze(1).expand(Hq, rows.numel(), S + 1)
        shape = (Hq, rows.numel(), S)
        covered = (pre.gather(-1, hi.expand(shape)) - pre.gather(-1, lo.expand(shape))) > 0
        vs = covered | cols.unsqueeze(1)
        stream = (j < init) | (i - j < local)
        keep = torch.where(pid == VERTICAL_SLASH, vs, torch.where(pid == STREAM_LLM, stream, pid == DENSE))
        if blocks is not None:
            bs = blocks[:, rows // BLOCK].repeat_interleave(BLOCK, dim=-1)[..., :S]
            keep = torch.where(pid == BLOCK_SPARSE, bs, keep)
        return keep

    return mask_fn


def _presence(idx: torch.Tensor, n: int) -> torch.Tensor:
    """[..., N] int (negative / >= n select nothing) -> bool [..., n]."""
    idx = idx.long()
    pres = torch.zeros(*idx.shape[:-1], n + 1, dtype=torch.bool, device=idx.device)
    pres.scatter_(-1, torch.where((idx >= 0) & (idx < n), idx, n), True)
    return pres[..., :n]


def head_recall(q: torch.Tensor, k: torch.Tensor, entries: tuple, scale: float, rows: torch.Tensor,
                last_q: int = 64, chunk: int = 32, density: bool = False):
    """q [1, Hq, S, D], k [1, Hkv, S, D] -> fp32 [Hq]: mean attention mass kept on ``rows``
    (``density=True``: -> (recall, density), density = share of the rows' causal keys kept)."""
    Hq, S, Hkv = q.shape[1], q.shape[2], k.shape[1]
    mask_fn = pattern_masks(q, k, entries, last_q, scale)
    kk = k[0].float().repeat_interleave(Hq // Hkv, dim=0)  # [Hq, S, D]; fp32, one copy per layer
    total = torch.zeros(Hq, device=q.device)
    kept = torch.zeros(Hq, device=q.device)
    for r0 in range(0, rows.numel(), chunk):
        r = rows[r0:r0 + chunk].to(q.device)
        s = torch.matmul(q[0][:, r].float(), kk.transpose(1, 2)) * scale  # [Hq, r, S]
        causal = torch.arange(S, device=q.device).view(1, 1, -1) <= r.view(1, -1, 1)
        p = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1)
        keep = mask_fn(r) & causal
        total += (p * keep).sum(-1).sum(-1)
        kept += (keep.sum(-1).float() / (r + 1).view(1, -1)).sum(-1)
    if density:
        return total / rows.numel(), kept / rows.numel()
    return total / rows.numel()


def _recall_attention(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    st = _STATE
    S = query.shape[2]
    if st and S == key.shape[2] and S >= st["min_len"]:
        scale = kwargs.get("scaling") or query.shape[-1] ** -0.5
        rows = sample_rows(S, st["rows"])
        for name, cfg in st["configs"].items():
            entries = cfg.layer_entries(module.layer_idx, query.shape[1])
            rec, dens = head_recall(query.detach(), key.detach(), entries, scale, rows, cfg.last_q, density=True)
            st["out"][name]["recall"][module.layer_idx] = rec.cpu()
            st["out"][name]["density"][module.layer_idx] = dens.cpu()
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPL, _recall_attention)
    AttentionMaskInterface.register(IMPL, sdpa_mask)


@contextlib.contextmanager
def measuring(model, configs: dict, rows: int = 128, min_len: int = 2 * BLOCK):
    """Inside: eager forwards of ``model`` stay dense and record, for each named config,
    ``out[name]["recall"][layer]`` (attention mass kept, [Hq]) and ``out[name]["density"][layer]``
    (share of the rows' causal keys kept, [Hq]). One dense forward serves every config."""
    _register()
    old = model.config._attn_implementation
    out = {name: {"recall": {}, "density": {}} for name in configs}
    _STATE.update(configs=dict(configs), rows=rows, min_len=min_len, out=out)
    _set_impl(model, IMPL)
    try:
        yield out
    finally:
        _set_impl(model, old)
        _STATE.clear()


def _set_impl(model, name: str) -> None:
    for cfg in {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}.values():
        cfg._attn_implementation = name


def as_matrix(per_layer: dict) -> torch.Tensor:
    """{layer: [Hq]} -> [L, Hq] in layer order (empty if nothing was measured)."""
    return torch.stack([per_layer[i] for i in sorted(per_layer)]) if per_layer else torch.empty(0, 0)
