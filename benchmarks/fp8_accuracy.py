"""Accuracy of an FP8 (e4m3, per-block scales) Q.K^T, by CPU emulation (triton_kernels/naive_fp8.py); no kernel.

    python -m benchmarks.fp8_accuracy capture --model ~/.cache/minference-models/qwen05 --out /tmp/fp8acc/qkv.pt
    python -m benchmarks.fp8_accuracy errors --qkv /tmp/fp8acc/qkv.pt
    python -m benchmarks.fp8_accuracy ppl --model ~/.cache/minference-models/smollm2 --length 4096 --last 1024
    python -m benchmarks.fp8_accuracy ppl --model DIR/qwen05 --length 16384 --device cuda \
        --methods bf16,fp8+smooth,int8+smooth     # the issue's Qwen 16K bar (not run: CPU time)

capture: one dense fp32 forward of qwen05 on the `nat16k` prompt of benchmarks/capture.py (the prompt whose
vertical-slash sets benchmarks/data/qwen05_captures.npz holds; that file has index sets only, no q/k/v), saving
per layer the post-RoPE q of the last --rows positions and all post-RoPE k, v (a local file, not committed).
errors: attention output of those rows, emulated FP8 QK (with/without K smoothing) and bf16 QK, against fp32,
under dense causal attention and under the captured (1000, 6096) vertical-slash sets.
ppl: perplexity of the last --last tokens with every layer's attention computed by the emulation (fp32, bf16,
fp8, fp8 + K smoothing), dense causal and vertical-slash (100, 800) estimated online per layer.
--methods: any of METHODS (also int8 / int8+smooth: SageAttention's INT8 Q.K, and fp8+smooth/tok: per-token scales).
"""
from __future__ import annotations

import argparse
import math
import time

import torch

_CAP: dict = {}
_RUN: dict = {}
# method -> (round q/k/v to bf16 first, fp8_attention_ref keywords); "fp32" is the truth
METHODS = {
    "fp32": (False, dict(qk_format=None, pv_dtype=None)),
    "bf16": (True, dict(qk_format=torch.bfloat16, pv_dtype=torch.bfloat16)),
    "fp8": (True, dict(qk_format=torch.float8_e4m3fn, pv_dtype=torch.bfloat16)),
    "fp8+smooth": (True, dict(qk_format=torch.float8_e4m3fn, pv_dtype=torch.bfloat16, smooth_k=True)),
    # SageAttention's INT8 per-block Q.K (same MMA rate as FP8 on Hopper), for comparison
    "int8": (True, dict(qk_format=torch.int8, pv_dtype=torch.bfloat16)),
    "int8+smooth": (True, dict(qk_format=torch.int8, pv_dtype=torch.bfloat16, smooth_k=True)),
    # finer variant: one scale per query row and per key (not the 64-row tiles)
    "fp8+smooth/tok": (True, dict(qk_format=torch.float8_e4m3fn, pv_dtype=torch.bfloat16, smooth_k=True,
                                  q_block=1, k_block=1)),
}


def attend(method: str, q, k, v, mask=None, scale=None):
    """fp8_attention_ref with a METHODS entry (inputs rounded to bf16 first where a bf16 model would hold them)."""
    from minference_compile.triton_kernels.naive_fp8 import fp8_attention_ref

    to_bf16, kw = METHODS[method]
    if to_bf16:
        q, k, v = (x.bfloat16().float() for x in (q, k, v))
    return fp8_attention_ref(q, k, v, mask, scale=scale, **kw)


def vs_row_mask(vertical, slash, S: int, Sq: int):
    """RowMask (naive_fp8) of block-rounded vertical-slash sets [B, Hq, N] with causality (ops/cpu's mask)."""
    from minference_compile.ops.cpu import vertical_slash_mask_fn

    fn = vertical_slash_mask_fn(vertical, slash, S, Sq)
    qh = torch.arange(vertical.shape[1])
    off = S - Sq

    def mask(r0, r1):
        return fn(qh, r0, r1) & (torch.arange(off + r1)[None, :] <= torch.arange(off + r0, off + r1)[:, None])

    return mask


def _capture_attention(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rows = _CAP["rows"]
    _CAP[module.layer_idx] = tuple(x.detach().float().clone() for x in (query[:, :, -rows:], key, value))
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def run_capture(a) -> None:
    from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    from .capture import build_prompt

    AttentionInterface.register("fp8acc_capture", _capture_attention)
    AttentionMaskInterface.register("fp8acc_capture", sdpa_mask)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, attn_implementation="fp8acc_capture",
                                                 dtype=torch.float32).eval()
    ids, _ = build_prompt(tok, a.prompt)
    _CAP.clear()
    _CAP["rows"] = a.rows
    t0 = time.perf_counter()
    with torch.no_grad():
        model.model(input_ids=ids, use_cache=False)
    layers = sorted(k for k in _CAP if isinstance(k, int))
    torch.save({"prompt": a.prompt, "length": ids.shape[1], "layers": [_CAP[i] for i in layers]}, a.out)
    print(f"captured {a.prompt} ({ids.shape[1]} tokens, {len(layers)} layers, last {a.rows} rows) in "
          f"{time.perf_counter() - t0:.0f}s -> {a.out}", flush=True)


def run_errors(a) -> None:
    from .capture import load

    t0 = time.perf_counter()
    cap = torch.load(a.qkv)
    S = cap["length"]
    sets = load(a.captures)
    nv, ns = (int(x) for x in a.budget.split("/"))
    V, Sl = (torch.from_numpy(sets[f"{cap['prompt']}_v{nv}_s{ns}_{w}"]) for w in ("vertical", "slash"))
    methods = a.methods.split(",")
    res = {}  # (mask, method) -> (rel L2 [L, Hq], max abs [L, Hq], err norm^2, ref norm^2)
    for mname in ("dense", f"vs{nv}/{ns}"):
        rel, mx = {m: [] for m in methods}, {m: [] for m in methods}
        num, den = {m: 0.0 for m in methods}, 0.0
        for layer, (q, k, v) in enumerate(cap["layers"]):
            Sq = q.shape[2]
            mask = None if mname == "dense" else vs_row_mask(V[layer][None], Sl[layer][None], S, Sq)
            ref = attend("fp32", q, k, v, mask)
            den += float(ref.pow(2).sum())
            for m in methods:
                d = attend(m, q, k, v, mask) - ref
                rel[m].append(d.norm(dim=(-1, -2))[0] / ref.norm(dim=(-1, -2))[0])
                mx[m].append(d.abs().amax(dim=(-1, -2))[0])
                num[m] += float(d.pow(2).sum())
        for m in methods:
            res[(mname, m)] = (torch.stack(rel[m]), torch.stack(mx[m]), num[m], den)
        print(f"{mname} done ({time.perf_counter() - t0:.0f}s)", flush=True)
    L, H = res[("dense", methods[0])][0].shape
    print(f"\n{cap['prompt']} qwen05, S={S}, last {Sq} rows, {L} layers x {H} heads; errors vs fp32\n")
    print("| mask | QK | rel L2 (all) | rel L2 median head | rel L2 worst head (layer, head) | max abs |")
    print("|---|---|---|---|---|---|")
    for (mname, m), (rel, mx, num, den) in res.items():
        w = int(rel.argmax())
        print(f"| {mname} | {m} | {math.sqrt(num / den):.2e} | {rel.median():.2e} | {rel.max():.2e} "
              f"({w // H}, {w % H}) | {mx.max():.2e} |")
    print(f"\nper layer, worst head rel L2 (dense: {' / '.join(methods)}; vs: same)")
    for layer in range(L):
        cells = [f"{res[(mn, m)][0][layer].max():.1e}" for mn in ("dense", f"vs{nv}/{ns}") for m in methods]
        print(f"layer {layer:2d}: " + " ".join(cells))
    print(f"errors: {time.perf_counter() - t0:.0f}s")


def _ppl_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    from minference_compile.ops.estimate import estimate_vertical_slash

    method, budget = _RUN["method"], _RUN["budget"]
    S, Sq = key.shape[2], query.shape[2]
    mask = None
    if budget is not None:
        q, k = (x.bfloat16().float() for x in (query, key)) if METHODS[method][0] else (query, key)
        vert, slash = estimate_vertical_slash(q, k, budget[0], budget[1], scale=scaling)
        mask = vs_row_mask(vert, slash, S, Sq)
    out = attend(method, query, key, value, mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def run_ppl(a) -> None:
    from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    from minference_compile.eval.data import NaturalText
    from .search_ppl import nll_last

    AttentionInterface.register("fp8acc_ppl", _ppl_attention)
    AttentionMaskInterface.register("fp8acc_ppl", sdpa_mask)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, attn_implementation="fp8acc_ppl",
                                                 dtype=torch.float32).to(a.device).eval()
    text = NaturalText(tok, a.length)
    ids = text.ids(a.length).to(a.device)
    print(f"{a.model}: {ids.shape[1]} tokens of {text.source}, ppl of the last {a.last}", flush=True)
    if not a.no_stock:
        model.set_attn_implementation("sdpa")  # check: the fp32 emulation's dense row must match the stock model
        t1 = time.perf_counter()
        print(f"dense    sdpa        ppl {math.exp(nll_last(model, ids, a.last)):.4f} (stock, "
              f"{time.perf_counter() - t1:.0f}s)", flush=True)
    model.set_attn_implementation("fp8acc_ppl")
    for pattern in a.patterns.split(","):
        _RUN["budget"] = None if pattern == "dense" else tuple(int(x) for x in pattern.split("/"))
        base = None
        for method in a.methods.split(","):
            _RUN["method"] = method
            t1 = time.perf_counter()
            ppl = math.exp(nll_last(model, ids, a.last))
            base = ppl if base is None else base
            print(f"{pattern:8s} {method:11s} ppl {ppl:.4f} ({100 * (ppl / base - 1):+.3f}% vs "
                  f"{a.methods.split(',')[0]}, {time.perf_counter() - t1:.0f}s)", flush=True)
    print(f"ppl: {time.perf_counter() - t0:.0f}s")


def main(argv=None) -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("--model", required=True)
    c.add_argument("--prompt", default="nat16k")
    c.add_argument("--rows", type=int, default=256)
    c.add_argument("--out", required=True)
    e = sub.add_parser("errors")
    e.add_argument("--qkv", required=True)
    e.add_argument("--captures", default="benchmarks/data/qwen05_captures.npz")
    e.add_argument("--budget", default="1000/6096")
    e.add_argument("--methods", default="bf16,fp8,fp8+smooth")
    p = sub.add_parser("ppl")
    p.add_argument("--model", required=True)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--last", type=int, default=1024)
    p.add_argument("--patterns", default="dense,100/800")
    p.add_argument("--methods", default="fp32,bf16,fp8,fp8+smooth")
    p.add_argument("--device", default="cpu", help="cuda: the same emulation on the GPU (fp32 model; for 16K)")
    p.add_argument("--no-stock", action="store_true", help="skip the stock-SDPA check forward (saves one forward)")
    a = ap.parse_args(argv)
    {"capture": run_capture, "errors": run_errors, "ppl": run_ppl}[a.cmd](a)


if __name__ == "__main__":
    main()
