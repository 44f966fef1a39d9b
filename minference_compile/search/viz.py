"""``minference-compile explain MODEL`` (a one-page map of a config: pattern, budget, recall per head) and
``minference-compile viz MODEL --layer L --head H`` (a PNG heatmap of one head's attention, downsampled, with the
lines / blocks its config entry selects on the same prompt drawn over it). Needs matplotlib (the `viz` extra)."""
from __future__ import annotations

import json
import math
import os

import torch

from .candidates import Candidate

explain_describe = "one-page map of a config (pattern, budget, recall per layer and head) as PNG and text"
viz_describe = "PNG heatmap of one head's attention with the config's selected lines / blocks drawn over it"
COLORS = {"dense": "#9e9e9e", "vertical_and_slash": "#1f77b4", "stream_llm": "#2ca02c", "block_sparse": "#ff7f0e", "block_sparse_128": "#ffbb78",
          "vertical_and_slash_adaptive": "#17becf", "block_sparse_adaptive": "#d62728",
          "block_sparse_antidiag": "#8c564b", "block_sparse_meanq": "#e377c2", "block_sparse_meanq_adaptive": "#9467bd"}


def _config_for(model_dir: str, path):
    """(MInferenceConfig, sidecar dict or None): --config, else the config we ship for this model, else default."""
    from ..config import MInferenceConfig, as_config
    from .shipped import shipped_config_path

    path = path or shipped_config_path(os.path.basename(os.path.normpath(model_dir)))
    if path is None:
        return MInferenceConfig(), None
    from .cli import sidecar_path

    side = sidecar_path(path)
    return as_config(path), (json.load(open(side)) if os.path.exists(side) else None)


def _entry_candidate(entry) -> Candidate:
    from ..patterns import as_spec
    return Candidate.from_spec(as_spec(entry))


# ---------------------------------------------------------------------------------------------------- explain
def explain_add_arguments(p) -> None:
    p.add_argument("model", help="HF model folder or a name under $MINFERENCE_MODEL_CACHE")
    p.add_argument("--config", help="config JSON (default: the one shipped for this model)")
    p.add_argument("--out", default=None, help="PNG to write (default MODEL-map.png)")


def explain_run(args) -> int:
    from transformers import AutoConfig

    from .cli import resolve_model

    model_dir = resolve_model(args.model)
    mcfg = AutoConfig.from_pretrained(model_dir)
    cfg, side = _config_for(model_dir, args.config)
    L, H = mcfg.num_hidden_layers, mcfg.num_attention_heads
    out = args.out or f"{os.path.basename(os.path.normpath(model_dir))}-map.png"
    model_map(cfg, side, L, H, out, title=f"{os.path.basename(os.path.normpath(model_dir))}: {cfg.source or 'default'}")
    print(f"wrote {out}")
    return 0


def model_map(cfg, side, L: int, H: int, out: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(max(6, 0.9 * H + 2), max(4, 0.32 * L + 1.5)))
    for li in range(L):
        for h in range(H):
            c = _entry_candidate(cfg.head_entry(li, h))
            info = side["heads"][li][h] if side and li < len(side["heads"]) else None
            ax.add_patch(plt.Rectangle((h, li), 1, 1, color=COLORS[c.pattern], alpha=0.85))
            label = c.name.replace("vertical", "")
            if info:
                label += f"\nr{info['recall']:.3f} w{info['cost']:.2f}"
            ax.text(h + 0.5, li + 0.5, label, ha="center", va="center", fontsize=4.5)
    ax.set_xlim(0, H)
    ax.set_ylim(L, 0)
    ax.set_xticks([h + 0.5 for h in range(H)], [str(h) for h in range(H)], fontsize=7)
    ax.set_yticks([li + 0.5 for li in range(L)], [str(li) for li in range(L)], fontsize=6)
    ax.set_xlabel("q head")
    ax.set_ylabel("layer")
    used = {_entry_candidate(cfg.head_entry(li, h)).pattern for li in range(L) for h in range(H)}
    ax.legend(handles=[Patch(color=COLORS[p], label=p) for p in COLORS if p in used], fontsize=6,
              loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    sub = ""
    if side:
        cal = side["calibration"]
        sub = (f"\ncalibration {','.join(cal['prompts'])} @ {cal['lengths']}; r = block recall, w = work share"
               f" (target {cal['target_recall']})")
    ax.set_title(title + sub, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- viz
def viz_add_arguments(p) -> None:
    p.add_argument("model", help="HF model folder or a name under $MINFERENCE_MODEL_CACHE")
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--head", type=int, required=True)
    p.add_argument("--config", help="config JSON (default: the one shipped for this model)")
    p.add_argument("--prompt", default="natural", help="built-in 'natural' / 'kv' or a text file")
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--grid", type=int, default=256, help="heatmap side (attention summed into grid x grid bins)")
    p.add_argument("--out", default=None, help="PNG (default MODEL-L{layer}-H{head}.png)")


def viz_run(args) -> int:
    from transformers import AutoConfig

    from .capture import capture, load_model
    from .cli import resolve_model
    from .prompts import encoder, prompt_ids

    model_dir = resolve_model(args.model)
    mcfg = AutoConfig.from_pretrained(model_dir)
    cfg, _ = _config_for(model_dir, args.config)
    ids = prompt_ids(args.prompt, args.length, encoder(model_dir, mcfg.vocab_size))
    rec = capture(load_model(model_dir), ids, 64, full_q_layer=args.layer)[args.layer]
    G = rec["q"].shape[0] // rec["k"].shape[0]
    q, k = rec["q"][args.head], rec["k"][args.head // G]
    cand = _entry_candidate(cfg.head_entry(args.layer, args.head))
    sel = selection_rows(q, k, cand)
    att, mask = heatmap(q, k, sel, args.grid)
    out = args.out or f"{os.path.basename(os.path.normpath(model_dir))}-L{args.layer}-H{args.head}.png"
    recall = float((att * mask).sum() / att.sum())
    plot_head(att, mask, out, f"layer {args.layer} head {args.head}: {cand.name}, {args.prompt} {ids.shape[1]} tokens"
              f"\nkept attention mass {recall:.3f}, selected area {float(sel.density):.3f} of causal")
    print(f"wrote {out}")
    return 0


class _Selection:
    """Row -> selected keys of one head under the kernels' semantics (block-rounded VS, 64-block BS, A-shape)."""

    def __init__(self, S: int, cand: Candidate, vertical=None, slash=None, blocks=None):
        self.S, self.cand = S, cand
        self.blocks = blocks
        if vertical is not None:
            self.cols = torch.zeros(S + 1, dtype=torch.bool)
            self.cols[torch.where((vertical >= 0) & (vertical < S), vertical.long(), S)] = True
            pres = torch.zeros(S + 1, dtype=torch.int32)
            pres[torch.where((slash >= 0) & (slash < S), slash.long(), S)] = 1
            self.prefix = torch.nn.functional.pad(pres[:S].cumsum(0), (1, 0))
        self.density = 0.0

    def rows(self, r: torch.Tensor) -> torch.Tensor:
        S, c = self.S, self.cand
        j = torch.arange(S)[None]
        causal = j <= r[:, None]
        if c.pattern == "dense":
            return causal
        if c.pattern == "stream_llm":
            return causal & ((j < c.v) | (r[:, None] - j < c.s))
        if c.pattern.startswith("block"):
            ids = self.blocks[r // 64].long()  # [R, K]
            pres = torch.zeros(r.numel(), -(-S // 64) + 1, dtype=torch.bool)
            pres.scatter_(1, torch.where(ids >= 0, ids, pres.shape[1] - 1), True)
            return causal & pres[:, j[0] // 64]
        m0 = (r // 64 * 64)[:, None]
        lo, hi = (m0 - j).clamp(0, S), (m0 - j + 64).clamp(0, S)
        return causal & ((self.prefix[hi] - self.prefix[lo] > 0) | self.cols[:S][None])


def selection_rows(q: torch.Tensor, k: torch.Tensor, cand: Candidate) -> _Selection:
    """q [S, D], k [S, D] of one head -> its selection, made as the op makes it."""
    from ..ops.adaptive import adaptive_block_sparse_index, adaptive_vertical_slash, antidiag_block_sparse_index

    S = q.shape[0]
    thr = cand.threshold if cand.adaptive else 2.0  # > 1: the fixed top-k
    if cand.pattern.startswith("vertical"):
        v, s = adaptive_vertical_slash(q[None, None], k[None, None], cand.v, cand.s, thr)
        return _Selection(S, cand, vertical=v[0, 0], slash=s[0, 0])
    if cand.pattern == "block_sparse_antidiag":
        blocks = antidiag_block_sparse_index(q[None, None], k[None, None], cand.v, cand.threshold, cand.s)
        return _Selection(S, cand, blocks=blocks[0, 0])
    if cand.pattern == "block_sparse_128":  # as the 64-granular index of the same pairs
        from ..triton_kernels.block_sparse_index import block_sparse_index, expand_block_index
        blocks = expand_block_index(block_sparse_index(q[None, None], k[None, None], cand.v, block=128), S, S)
        return _Selection(S, cand, blocks=blocks[0, 0])
    if cand.pattern.startswith("block_sparse_meanq"):
        from ..ops.adaptive import meanq_block_sparse_index
        blocks = meanq_block_sparse_index(q[None, None], k[None, None], cand.v, thr)
        return _Selection(S, cand, blocks=blocks[0, 0])
    if cand.pattern.startswith("block"):
        return _Selection(S, cand, blocks=adaptive_block_sparse_index(q[None, None], k[None, None], cand.v, thr)[0, 0])
    return _Selection(S, cand)


def heatmap(q: torch.Tensor, k: torch.Tensor, sel: _Selection, grid: int, rows_per_step: int = 256) -> tuple:
    """Exact attention mass summed into [n, n] bins (rows chunked, never S x S), and the selected share per bin."""
    S, D = q.shape
    n = min(grid, S)
    bins = torch.arange(S) * n // S
    att = torch.zeros(n, n, dtype=torch.float64)
    sel_area = torch.zeros(n, n, dtype=torch.float64)
    total = torch.zeros(n, n, dtype=torch.float64)
    picked = 0
    for r0 in range(0, S, rows_per_step):
        r = torch.arange(r0, min(S, r0 + rows_per_step))
        s = (q[r] @ k.T / math.sqrt(D)).masked_fill(torch.arange(S)[None] > r[:, None], float("-inf"))
        p = torch.softmax(s, -1).double()
        m = sel.rows(r)
        picked += int(m.sum())
        rb = bins[r]
        att.index_add_(0, rb, torch.zeros(r.numel(), n, dtype=torch.float64).index_add_(1, bins, p))
        sel_area.index_add_(0, rb, torch.zeros(r.numel(), n, dtype=torch.float64).index_add_(1, bins, (p * m).double()))
        total.index_add_(0, rb, torch.zeros(r.numel(), n, dtype=torch.float64).index_add_(1, bins, m.double()))
    sel.density = picked / (S * (S + 1) / 2)
    return att, (total > 0).double() * torch.where(att > 0, sel_area / att.clamp(min=1e-30), 1.0)


def plot_head(att: torch.Tensor, kept: torch.Tensor, out: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    a = att.numpy()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.4))
    img = np.log10(np.where(a > 0, a, np.nan))
    axes[0].imshow(img, cmap="viridis", interpolation="nearest")
    axes[0].set_title("attention mass per bin (log10)", fontsize=9)
    axes[1].imshow(img, cmap="gray_r", interpolation="nearest", alpha=0.6)
    sel = np.where(kept.numpy() > 0, kept.numpy(), np.nan)
    axes[1].imshow(sel, cmap="autumn_r", vmin=0, vmax=1, interpolation="nearest", alpha=0.65)
    axes[1].set_title("selected (colour: share of the bin's mass kept)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("key bin")
        ax.set_ylabel("query bin")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
