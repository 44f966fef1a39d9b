"""End-to-end pre-fill of full-depth decoders with random weights (bf16, one GPU): eager SDPA vs torch.compile
dense vs our backend (A-shape, block-sparse, vertical-slash on injected index sets, the seed's per-head config).

    python -m benchmarks.e2e --shape qwen2.5-7b --lengths 32k,128k [--methods a,b] [--seed-config PATH]
    python -m benchmarks.e2e --shape qwen2.5-7b --lengths 1m --chunk 65536 --generate 16 --methods ashape
                              [--cache dynamic]    # chunked rows: the DynamicCache instead of the in-place PrefillCache
    python -m benchmarks.e2e --shape qwen2.5-7b --lengths 1m --chunk 65536 --methods eager-sdpa --layers 4
    python -m benchmarks.e2e --dry-run            # tiny random Llama on CPU, seconds: checks the plumbing only

Per row: ttft_ms (input ids -> first greedy token on the host), prefill_ms (the forward(s) alone, CUDA events),
peak_mem_gib (max allocated during the pre-fill: weights + cache + activations), attention_ms / rest_ms (one-shot
only: the layer's attention op timed apart on random q/k/v of the same shape, times the layers; rest = prefill -
attention), speedup vs eager SDPA and vs compiled dense of the same length. `--layers N` builds the model N layers
deep and adds prefill_ms_full_depth = prefill_ms x full depth / N (linear in depth: embedding and head are ~0.1%).

Random weights give no realistic attention: an estimate on them picks near-uniform index sets. The `vs-*` methods
and `seed-config` therefore run the estimate (its cost is real) and then replace its output by index sets generated
from real-model captures (benchmarks/indexsets.py, Qwen2.5-0.5B), labelled `injected`. Chunked mode: the dense
baseline is our flash-based bottom-right dense attention (transformers' own chunked SDPA path builds a q_len x
kv_len mask: 64 GB at a 64K chunk of 1M). CSV + JSON under benchmarks/results, rewritten after every row; a plot of
the speedups (benchmarks/plot.py) at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import logging
import os
import sys
import time
import traceback
from unittest import mock

from .registry import parse_lengths

# name -> (transformers config class, model class, config kwargs, seed config file name that matches the shape)
MODEL_SHAPES = {
    "qwen2.5-7b": ("Qwen2Config", "Qwen2ForCausalLM",
                   dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                        num_key_value_heads=4, vocab_size=152064, max_position_embeddings=1 << 21,
                        rope_theta=1e7, rms_norm_eps=1e-6, tie_word_embeddings=False),
                   "Qwen2.5_7B_Instruct_1M.json"),
    "llama3-8b": ("LlamaConfig", "LlamaForCausalLM",
                  dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, max_position_embeddings=1 << 21, rope_theta=5e5,
                       rms_norm_eps=1e-5, tie_word_embeddings=False),
                   "Llama_3_8B_Instruct_262k_kv_out_v32_fit_o_best_pattern.json"),
    "tiny": ("LlamaConfig", "LlamaForCausalLM",
             dict(hidden_size=256, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=128, max_position_embeddings=1 << 16), None),
}

# name -> (label, our config dict or None (dense), inject VS sets)
METHODS = {
    "eager-sdpa": ("eager SDPA (causal; cuDNN/flash one-shot, flash prefix+square merge when chunked)", None, False),
    "compile-dense": ("torch.compile dense (Inductor)", None, False),
    "ashape": ("ours: A-shape 128 + 4096", {"default": ["stream_llm", 128, 4096]}, False),
    "ashape-norope": ("ours: A-shape 128 + 4096, rotary tables recomputed per kernel (MINFERENCE_COMPILE_ROTARY_TABLES=0, "
                      "the behaviour before passes/rotary_tables.py)", {"default": ["stream_llm", 128, 4096]}, False),
    "block-sparse": ("ours: block-sparse top-100", {"default": ["block_sparse", 100, 0]}, False),
    "vs-injected": ("ours: vertical-slash (1000, 6096), injected sets", {"default": ["vertical_and_slash", 1000, 6096]},
                    True),
    "vs-injected-fa4": ("ours: vertical-slash (1000, 6096), injected sets, on FA4 128x128 tile lists + columns "
                        "(MINFERENCE_FA4_VS=1)", {"default": ["vertical_and_slash", 1000, 6096]}, True),
    "vs-injected-small": ("ours: vertical-slash (100, 800), injected sets",
                          {"default": ["vertical_and_slash", 100, 800]}, True),
    "seed-config": ("ours: seed per-head config, injected sets", "seed", True),
}
DEFAULT_METHODS = "eager-sdpa,compile-dense,ashape,block-sparse,vs-injected,seed-config"
FIELDS = ["shape", "layers", "full_layers", "S", "chunk", "case", "label", "status", "ttft_ms", "prefill_ms",
          "prefill_ms_full_depth", "peak_mem_gib", "attention_ms", "rest_ms", "speedup", "speedup_vs_compiled",
          "decode_ms", "tokens", "compile_s", "fa4_calls", "note"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="qwen2.5-7b", choices=list(MODEL_SHAPES))
    ap.add_argument("--lengths", default="32k,128k", help="comma list, k/m suffixes")
    ap.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma list of {list(METHODS)}")
    ap.add_argument("--chunk", default="0", help="chunked pre-fill with this chunk size (0: one shot); a comma list "
                    "(e.g. 0,32768) runs every method in each mode in this one process (chunked vs one-shot, same run)")
    ap.add_argument("--generate", type=int, default=0, help="greedy tokens to generate after the pre-fill")
    ap.add_argument("--cache", default="prealloc", choices=["prealloc", "dynamic"],
                    help="chunked rows' K/V cache: prealloc (PrefillCache, written in place: ~1x the cache at the "
                         "compiled peak) or dynamic (DynamicCache, torch.cat: ~2x); one-shot rows use DynamicCache")
    ap.add_argument("--layers", type=int, default=0, help="build the model this many layers deep (0: full)")
    ap.add_argument("--seed-config", default=None, help="the seed's per-head JSON for this shape (method seed-config)")
    ap.add_argument("--min-sparse-len", type=int, default=None, help="override the configs' (default: auto crossover)")
    ap.add_argument("--via", default="pass", choices=["pass", "direct"],
                    help="pass: torch.compile(model.forward, backend=make_backend(cfg)); direct: a transformers "
                         "attention function calling minference::sparse_prefill, model compiled by Inductor")
    ap.add_argument("--reps", type=int, default=0, help="timed runs per row (0: 2 below 256K tokens and for every chunked "
                    "sparse row, else 1)")
    ap.add_argument("--no-split", action="store_true", help="skip the attention / rest split")
    ap.add_argument("--profile", action="store_true",
                    help="one more pre-fill per row under the profiler; GPU time by kernel class (attention, GEMM, "
                         "Inductor/Triton, copies, other) and the top kernels go to the JSON row")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--commit", default=None, help="git commit to record (when the machine has no git)")
    ap.add_argument("--max-minutes", type=float, default=9.0, help="start no new row after this")
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny random Llama on CPU (fp32, sparse forced, --via direct, nothing compiled): checks the "
                         "plumbing in seconds")
    return ap


# ---------------------------------------------------------------------------------------------- model set-up
def build_model(shape: str, layers: int, device, dtype, attn: str):
    import torch
    import transformers
    cfg_cls, model_cls, kw, _ = MODEL_SHAPES[shape]
    kw = dict(kw)
    if layers:
        kw["num_hidden_layers"] = layers
    cfg = getattr(transformers, cfg_cls)(**kw, attn_implementation=attn)
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = getattr(transformers, model_cls)(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval().requires_grad_(False)


def method_config(name: str, a, num_layers: int, num_heads: int):
    """Our MInferenceConfig for a method (None for the dense ones); raises ValueError when the seed config does not
    fit the model."""
    from minference_compile.config import MInferenceConfig
    _, spec, _ = METHODS[name]
    if spec is None:
        return None
    over = {}
    if a.min_sparse_len is not None:
        over["min_sparse_len"] = a.min_sparse_len
    if spec == "seed":
        if not a.seed_config:
            raise ValueError("seed-config needs --seed-config PATH")
        cfg = MInferenceConfig.from_json(a.seed_config, **over)
        cfg.validate_for(num_layers, num_heads)
        if cfg.num_layers() < num_layers and not a.layers:
            raise ValueError(f"seed config has {cfg.num_layers()} layers, the model {num_layers}")
        return cfg
    return MInferenceConfig.from_dict(spec, **over)


def layer_args(cfg, layer: int, num_heads: int, scale: float) -> tuple:
    """The minference::sparse_prefill arguments after q, k, v for one layer (what the FX pass writes)."""
    from minference_compile.config import PATTERN_IDS
    entries = cfg.layer_entries(layer, num_heads)
    min_len = -1 if cfg.min_sparse_len is None else cfg.min_sparse_len
    return ([PATTERN_IDS[e[0]] for e in entries], [int(e[1]) for e in entries], [int(e[2]) for e in entries], scale,
            min_len, cfg.last_q, float(cfg.vs_max_work))


_DIRECT = {}  # layer -> sparse_prefill arguments, for the "direct" attention function


def _direct_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    import torch
    out = torch.ops.minference.sparse_prefill(query, key, value, *_DIRECT[module.layer_idx])
    return out.transpose(1, 2).contiguous(), None


def _dense_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    # bottom-right causal without a mask tensor: SDPA is_causal one-shot, flash prefix + causal square for chunks
    from minference_compile.ops.dense import dense_attention
    return dense_attention(query, key, value, scaling).transpose(1, 2).contiguous(), None


def register_attention() -> None:
    import transformers

    import minference_compile.ops.library  # noqa: F401  (registers minference::sparse_prefill)
    for name, fn in (("minference_direct", _direct_attention), ("minference_dense", _dense_attention)):
        transformers.AttentionInterface.register(name, fn)
        try:  # no 4D mask for these (they never read it): 64 GB at a 64K chunk of 1M otherwise
            transformers.AttentionMaskInterface.register(name, lambda *args, **kw: None)
        except AttributeError:
            pass


# ---------------------------------------------------------------------------------------------- VS injection
class VSInjector:
    """Replaces the estimate's output inside minference::sparse_prefill by index sets generated from real-model
    captures (the estimate still runs: its cost is part of the pre-fill). Sets are generated before timing for
    every (kv_len, budgets) the run needs, `seeds` variants each, rotated over the calls (layers)."""

    def __init__(self, hq: int, device, seeds: int = 2):
        self.hq, self.device, self.seeds = hq, device, seeds
        self.sets, self.calls, self.generated_late = {}, 0, 0

    def prepare(self, kv_len: int, nv: int, ns: int) -> None:
        from .indexsets import generate_vs
        nv, ns = min(nv, kv_len), min(ns, kv_len)
        key = (kv_len, nv, ns)
        if key not in self.sets:
            self.sets[key] = [tuple(t.to(self.device) for t in generate_vs(kv_len, self.hq, nv, ns, seed=s))
                              for s in range(self.seeds)]

    def __call__(self, orig, q, k, vertical_size, slash_size, *args, **kwargs):
        import torch
        vert, slash = orig(q, k, vertical_size, slash_size, *args, **kwargs)
        key = (k.shape[2], vert.shape[-1], slash.shape[-1])
        if key not in self.sets:
            self.generated_late += 1
            self.prepare(*key)
        gv, gs = self.sets[key][self.calls % self.seeds]
        self.calls += 1

        def per_head(g, budget, like):
            b = torch.as_tensor(budget if not isinstance(budget, int) else [budget] * self.hq, device=g.device)
            keep = torch.arange(g.shape[-1], device=g.device) < b.view(1, -1, 1)
            return torch.where(keep, g, -1).to(like.dtype).expand_as(like).contiguous()

        return per_head(gv, vertical_size, vert), per_head(gs, slash_size, slash)

    @contextlib.contextmanager
    def active(self):
        from minference_compile.patterns import vertical_slash  # sparse_prefill's estimate call
        orig = vertical_slash._estimate
        vertical_slash._estimate = functools.partial(self, orig)
        try:
            yield self
        finally:
            vertical_slash._estimate = orig


def vs_budgets(cfg, num_layers: int, num_heads: int) -> set:
    """(max vertical, max slash) of each layer with VS heads: the shapes the estimate returns."""
    out = set()
    for layer in range(num_layers):
        ents = [e for e in cfg.layer_entries(layer, num_heads) if e[0] == "vertical_and_slash"]
        if ents:
            out.add((max(int(e[1]) for e in ents), max(int(e[2]) for e in ents)))
    return out


# ---------------------------------------------------------------------------------------------- timing
class Clock:
    """CUDA events on a GPU, perf_counter on CPU."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def sync(self):
        if self.cuda:
            import torch
            torch.cuda.synchronize()

    def ms(self, fn):
        import torch
        if self.cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            r = fn()
            b.record()
            torch.cuda.synchronize()
            return r, a.elapsed_time(b)
        t0 = time.perf_counter()
        r = fn()
        return r, (time.perf_counter() - t0) * 1e3


def prefill_fn(model, fwd, chunk: int, cache: str = "prealloc", max_new_tokens: int = 0):
    """ids -> (cache, last logits [B, vocab]). Chunked: a new `cache` ("prealloc" | "dynamic") with room for
    max_new_tokens after the prompt; one shot: a DynamicCache (as in every earlier one-shot row)."""
    from minference_compile.chunked import chunked_prefill
    if chunk:
        return lambda ids: chunked_prefill(model, ids, chunk, cache, forward=fwd, max_new_tokens=max_new_tokens)
    return lambda ids: chunked_prefill(model, ids, ids.shape[1], "dynamic", forward=fwd)


def _heat(fn, dev, seconds: float = 1.0) -> None:
    """Run fn for about `seconds` before it is timed: a GPU that has just idled runs a short kernel ~15% faster than
    one under sustained load, as inside a pre-fill (NOTES E24: FA4's A-shape 12.1 ms first, 14.2 ms after other
    work), so the split would understate the attention in the model."""
    import torch
    if torch.device(dev).type != "cuda":
        return
    t0 = time.time()
    while time.time() - t0 < seconds:
        fn()
        torch.cuda.synchronize()


def attention_split_ms(a, method: str, cfg, model, S: int, clock: Clock, injector) -> float:
    """Attention time of one pre-fill: each distinct layer's op (sparse_prefill, or causal SDPA for the dense
    methods) timed on random q/k/v of the model's shape, summed over the layers."""
    import torch
    c = model.config
    hq, hkv = c.num_attention_heads, c.num_key_value_heads
    D = getattr(c, "head_dim", None) or c.hidden_size // hq
    dev, dt = next(model.parameters()).device, next(model.parameters()).dtype
    g = torch.Generator(device=dev).manual_seed(1)
    q = torch.randn(1, hq, S, D, device=dev, dtype=dt, generator=g)
    k = torch.randn(1, hkv, S, D, device=dev, dtype=dt, generator=g)
    v = torch.randn(1, hkv, S, D, device=dev, dtype=dt, generator=g)
    scale = D ** -0.5
    per = {}
    total = 0.0
    for layer in range(c.num_hidden_layers):
        args = None if cfg is None else tuple(tuple(x) if isinstance(x, list) else x
                                             for x in layer_args(cfg, layer, hq, scale))
        if args not in per:
            if args is None:
                fn = lambda: torch.nn.functional.scaled_dot_product_attention(  # noqa: E731
                    q, k, v, is_causal=True, enable_gqa=True)
            else:
                la = [list(x) if isinstance(x, tuple) else x for x in args]
                fn = lambda la=la: torch.ops.minference.sparse_prefill(q, k, v, *la)  # noqa: E731
            ctx = injector.active() if injector is not None else contextlib.nullcontext()
            with ctx:
                fn()  # warm-up (Triton JIT)
                _heat(fn, dev)
                times = [clock.ms(fn)[1] for _ in range(3)]
            per[args] = sorted(times)[1]
        total += per[args]
    return total


# ---------------------------------------------------------------------------------------------- the run
def _fmt(x):
    return "" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))


def write(rows, meta, base):
    import csv
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in FIELDS})
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1, default=str)


def finish_group(group):
    ref = {r["case"]: r for r in group if r.get("status") == "ok"}
    eager, comp = ref.get("eager-sdpa"), ref.get("compile-dense")
    for r in group:
        if r.get("status") != "ok":
            continue
        if eager:
            r["speedup"] = eager["prefill_ms"] / r["prefill_ms"]
        if comp:
            r["speedup_vs_compiled"] = comp["prefill_ms"] / r["prefill_ms"]


_KERNEL_CLASSES = (  # GPU kernel name -> class, first match wins (profile_prefill)
    ("attention", ("attention", "attn", "_streaming_", "_vs_", "_bs_", "antidiag", "fmha", "flash", "cudnn", "sdpa",
                   "kernel_cutlass")),  # ours (Triton: _vs_fwd_kernel, ...), cuDNN / flash SDPA, FA4
    ("gemm", ("gemm", "xmma", "cutlass", "nvjet", "sm90_", "cublas", "wgmma")),
    ("inductor", ("triton_",)),
    ("copy/fill", ("copy", "memcpy", "memset", "fill", "cat", "elementwise")),
)


def profile_prefill(prefill, ids, top: int = 30, device: str = "cuda") -> dict:
    """One pre-fill under torch.profiler: GPU time per kernel class and the top kernels (name, ms, calls)."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    cuda = device == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        out = prefill(ids)
        if cuda:
            torch.cuda.synchronize()
    del out
    want = DeviceType.CUDA if cuda else DeviceType.CPU
    per = {}
    for e in prof.events():
        if e.device_type == want:
            ms, n = per.get(e.name, (0.0, 0))
            per[e.name] = (ms + e.time_range.elapsed_us() / 1e3, n + 1)
    classes = {c: 0.0 for c, _ in _KERNEL_CLASSES}
    classes["other"] = 0.0
    for name, (ms, _) in per.items():
        low = name.lower()
        cls = next((c for c, keys in _KERNEL_CLASSES if any(k in low for k in keys)), "other")
        classes[cls] += ms
    ranked = sorted(((n, ms, c) for n, (ms, c) in per.items()), key=lambda t: -t[1])
    return {"classes": classes, "total_ms": sum(classes.values()), "top": ranked[:top]}


def run_method(a, method, lengths, shape, dev, dtype, clock, rows, meta, base, t0):
    import torch
    from minference_compile.ops import fa4
    from minference_compile.backend import make_backend
    _, _, kw, _ = MODEL_SHAPES[shape]
    full_layers = kw["num_hidden_layers"]
    label, _, inject = METHODS[method]
    sparse = METHODS[method][1] is not None
    dense_attn = "minference_dense" if (method == "eager-sdpa" and a.chunk) else "sdpa"
    attn = "minference_direct" if (sparse and a.via == "direct") else dense_attn
    model = build_model(shape, a.layers, dev, dtype, attn)
    L, hq = model.config.num_hidden_layers, model.config.num_attention_heads
    D = getattr(model.config, "head_dim", None) or model.config.hidden_size // hq
    base_row = {"shape": shape, "layers": L, "full_layers": full_layers, "chunk": a.chunk or "", "case": method,
                "label": label}
    try:
        cfg = method_config(method, a, L, hq)
    except Exception as e:
        for S in lengths:
            rows.append(dict(base_row, S=S, status=f"skip ({type(e).__name__}: {e})"))
        return
    if cfg is not None and a.dry_run:  # CPU: auto means dense; force the sparse reference path
        cfg = type(cfg).from_dict({"layers": cfg.to_list(), "default": list(cfg.default), "min_sparse_len": 0,
                                   "starting_layer": cfg.starting_layer, "last_q": cfg.last_q})
    injector = None
    if inject and cfg is not None:
        injector = VSInjector(hq, dev, seeds=1 if a.chunk else 2)  # chunked: one set per chunk length
        for S in lengths:
            kvs = range(min(a.chunk, S), S + 1, a.chunk) if a.chunk else [S]
            for kv in list(kvs) + ([S] if a.chunk and S % a.chunk else []):
                for nv, ns in vs_budgets(cfg, L, hq):
                    injector.prepare(kv, nv, ns)
    if method == "eager-sdpa":
        fwd = model
    elif cfg is None:
        fwd = torch.compile(model.forward, dynamic=True, backend="eager" if a.dry_run else "inductor")
    elif a.via == "direct":
        for layer in range(L):
            _DIRECT[layer] = layer_args(cfg, layer, hq, D ** -0.5)
        fwd = model if a.dry_run else torch.compile(model.forward, dynamic=True)
    else:
        fwd = torch.compile(model.forward, dynamic=True, backend=make_backend(cfg))
    prefill = prefill_fn(model, fwd, a.chunk, a.cache, a.generate)
    vocab = model.config.vocab_size
    ctx = injector.active() if injector is not None else contextlib.nullcontext()
    compile_s = None
    with ctx:
        for S in lengths:
            r = dict(base_row, S=S)
            rows.append(r)
            if (time.time() - t0) / 60 > a.max_minutes:
                r["status"] = "skip (time)"
                write(rows, meta, base)
                continue
            try:
                ids = torch.randint(0, vocab, (1, S), device=dev, generator=torch.Generator(dev).manual_seed(S))
                if compile_s is None:  # compile (dynamic shapes) and JIT on a short prompt of the same chunking
                    w = min(S, 2 * a.chunk + 64 if a.chunk else 4096)
                    t1 = time.time()
                    prefill(ids[:, :w])
                    clock.sync()
                    compile_s = time.time() - t1
                    r["compile_s"] = compile_s
                # chunked sparse rows: the warm-up's chunks reach 2 x chunk keys only, and kernels specialised on
                # the key length (the block-sparse select's lanes: 4096 .. 16384 at 512K .. 1M) JIT-compile in
                # the first timed run (session 7's long rows, NOTES E10): time a second, warm one
                reps = a.reps or (2 if S < 262144 or (a.chunk and cfg is not None) else 1)
                best = None
                fa4_before = dict(fa4.CALLS)
                if injector is not None:  # count only sets generated inside the timed runs (not the warm-up's)
                    injector.generated_late = 0
                for _ in range(reps):
                    gc.collect()
                    if clock.cuda:
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                    t1 = time.perf_counter()
                    (cache, logits), ms = clock.ms(lambda: prefill(ids))
                    first = logits.argmax(-1)
                    first.tolist()  # on the host: the first token exists
                    ttft = (time.perf_counter() - t1) * 1e3
                    if best is None or ms < best[0]:
                        best = (ms, ttft)
                    peak = torch.cuda.max_memory_allocated() / 2**30 if clock.cuda else None
                    if a.generate:
                        from minference_compile.chunked import greedy_continue
                        # decode runs dense (q_len 1) in every method: the eager model, no second (decode) compile
                        toks, dms = clock.ms(lambda: greedy_continue(model, cache, logits, a.generate))
                        r["decode_ms"], r["tokens"] = dms, toks[0].tolist()
                    del cache, logits
                r.update(status="ok", prefill_ms=best[0], ttft_ms=best[1], peak_mem_gib=peak)
                # which kernel ran: FlashAttention-4 calls (the [hopper] extra) during the timed pre-fills
                r["fa4_calls"] = " ".join(f"{k.replace(' ', '-')}:{n - fa4_before.get(k, 0)}"
                                          for k, n in sorted(fa4.CALLS.items()) if n - fa4_before.get(k, 0)) or "0"
                if a.profile and clock.cuda:
                    r["profile"] = profile_prefill(prefill, ids)
                    print("  profile (GPU ms by class): " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                                      r["profile"]["classes"].items()), flush=True)
                    for name, ms, n in r["profile"]["top"][:12]:
                        print(f"    {ms:9.2f} ms {n:5d}x  {name[:110]}", flush=True)
                r["prefill_ms_full_depth"] = best[0] * full_layers / L
                notes = []
                if L != full_layers:
                    notes.append(f"timed on {L} of {full_layers} layers; full depth scaled linearly")
                if injector is not None:
                    notes.append("VS index sets injected (generated from Qwen2.5-0.5B captures)")
                    if injector.generated_late:
                        notes.append(f"{injector.generated_late} sets generated inside the timed run")
                if a.chunk:
                    notes.append(f"chunked pre-fill, chunk {a.chunk}, {a.cache} cache")
                if not a.chunk and not a.no_split:
                    del ids
                    att = attention_split_ms(a, method, cfg, model, S, clock, injector)
                    r["attention_ms"], r["rest_ms"] = att, best[0] - att
                    notes.append("attention = per-layer op on random q/k/v x layers")
                r["note"] = "; ".join(notes)
            except Exception as e:  # one row failing must not end the run
                oom = isinstance(e, torch.OutOfMemoryError)
                r["status"] = f"{'oom' if oom else 'error'}: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
                if not oom:
                    traceback.print_exc(limit=4)
            print(f"  {shape} L={L} S={S:>8d} {method:18s} {r['status'][:60]:>6s} "
                  f"prefill={_fmt(r.get('prefill_ms'))}ms "
                  f"ttft={_fmt(r.get('ttft_ms'))}ms peak={_fmt(r.get('peak_mem_gib'))}GiB "
                  f"att={_fmt(r.get('attention_ms'))} t={time.time() - t0:.0f}s", flush=True)
            write(rows, meta, base)
    del fwd, model, prefill
    gc.collect()
    if clock.cuda:
        torch.cuda.empty_cache()
    torch._dynamo.reset()


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    import torch
    from .run import metadata
    if a.dry_run:  # seconds on CPU: no compile (sparse methods through the attention function, eager)
        a.shape, a.via = "tiny", "direct"
        if a.lengths == "32k,128k":
            a.lengths = "256,384"
        if a.methods == DEFAULT_METHODS:
            a.methods = "eager-sdpa,ashape,vs-injected"
    cuda = torch.cuda.is_available() and not a.dry_run
    if not cuda and not a.dry_run:
        print("benchmarks.e2e: no CUDA device; use --dry-run for the CPU plumbing check.", file=sys.stderr)
        return 2
    lengths = parse_lengths(a.lengths)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown methods {bad}; known: {list(METHODS)}")
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    register_attention()
    os.makedirs(a.out, exist_ok=True)
    meta = metadata(a)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger("minference_compile").setLevel(logging.INFO)  # e.g. "A-shape attention runs on FlashAttention-4"
    if cuda:
        from minference_compile.ops import fa4
        probe = torch.zeros(1, 2, 8, 64, device="cuda", dtype=torch.bfloat16)
        meta["fa4"] = fa4.reason(probe, probe) or "on"
        print(f"# FlashAttention-4 ([hopper] extra): {meta['fa4']}", flush=True)
    chunks = [int(parse_lengths(c)[0]) if c.strip() not in ("", "0") else 0 for c in str(a.chunk).split(",")]
    a.chunk = chunks[0]
    meta.update(shape=a.shape, model=MODEL_SHAPES[a.shape][2], lengths=lengths, methods=methods, chunk=chunks,
                cache=a.cache, via=a.via, layers=a.layers,
                seed_config=a.seed_config and os.path.basename(a.seed_config),
                labels={m: METHODS[m][0] for m in methods})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    mode = "-".join(("chunk%d" % c) if c else "oneshot" for c in chunks)
    base = os.path.join(a.out, f"e2e-{a.shape}-{mode}-{stamp}{('-' + a.tag) if a.tag else ''}")
    print(f"# {meta['card']} torch {meta['torch']} commit {meta['commit']} -> {base}.csv", flush=True)
    t0 = time.time()
    rows = []
    clock = Clock(cuda)
    for c in chunks:
        a.chunk = c
        for m in methods:
            # a "-fa4" method forces the FA4 vertical-slash path (read by the op per call), restored after it
            env = {"MINFERENCE_FA4_VS": "1"} if m.endswith("-fa4") else {}
            if m.endswith("-norope"):
                env["MINFERENCE_COMPILE_ROTARY_TABLES"] = "0"
            with mock.patch.dict(os.environ, env):
                run_method(a, m, lengths, a.shape, dev, dtype, clock, rows, meta, base, t0)
    for S in lengths:
        for c in chunks:
            finish_group([r for r in rows if r["S"] == S and (r.get("chunk") or 0) == c])
    if len(chunks) > 1:  # chunked against one-shot, per method and length, same process
        for r in rows:
            one = [o for o in rows if o["S"] == r["S"] and o["case"] == r["case"] and not o.get("chunk")
                   and o.get("status") == "ok"]
            if r.get("chunk") and r.get("status") == "ok" and one:
                r["note"] = (r.get("note", "") + "; " if r.get("note") else "") + \
                    "chunked / one-shot pre-fill %.3f" % (r["prefill_ms"] / one[0]["prefill_ms"])
    meta["wall_s"] = time.time() - t0
    write(rows, meta, base)
    print(format_table(rows))
    if not a.dry_run:
        try:
            from .plot import main as plot_main
            plot_main([base + ".csv", "--metric", "speedup"])
        except Exception as e:  # matplotlib missing: the CSV stands alone
            print(f"(no plot: {e})")
    print(f"# wrote {base}.csv and .json ({meta['wall_s']:.0f} s)")
    return 0


def format_table(rows) -> str:
    head = f"{'S':>8} {'chunk':>6} {'method':18} {'status':8} {'prefill ms':>11} {'ttft ms':>10} {'peak GiB':>9} {'attn ms':>9} " \
           f"{'rest ms':>9} {'x eager':>8} {'x compiled':>10}"
    out = [head]
    for r in rows:
        out.append(f"{r['S']:>8} {str(r.get('chunk') or '-'):>6} {r['case']:18} {r.get('status', '')[:8]:8} {_fmt(r.get('prefill_ms')):>11} "
                   f"{_fmt(r.get('ttft_ms')):>10} {_fmt(r.get('peak_mem_gib')):>9} {_fmt(r.get('attention_ms')):>9} "
                   f"{_fmt(r.get('rest_ms')):>9} {_fmt(r.get('speedup')):>8} {_fmt(r.get('speedup_vs_compiled')):>10}"
                   + (f"  {r['note'].split('; ')[-1]}" if "chunked / one-shot" in (r.get("note") or "") else ""))
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
