"""Peak host memory of chunked pre-fill, eager vs compiled, on a tiny Llama whose K/V cache dominates (CPU, fp32).

    OMP_NUM_THREADS=1 python -m benchmarks.cache_peak MODE N CHUNK     # e.g. inductor 8192 2048

MODE: eager | inductor | dynamo (a DynamicCache), or the same with -prealloc (minference_compile.PrefillCache:
preallocated, written in place; e.g. inductor-prealloc). Tests NOTES E5/E7: under one compiled graph, every layer's
old and new DynamicCache are alive together in the last chunk, so the peak is ~2x the cache where eager pre-fill
needs ~1x; the preallocated cache should bring the compiled peak back to ~1x. Reads VmHWM after resetting it (Linux
only). `dynamo` (backend="eager") overstates: its FX code keeps every intermediate until the graph returns."""
import os, sys, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from minference_compile.chunked import chunked_prefill, kv_cache_bytes
from minference_compile.prefill_cache import PrefillCache

def hwm_reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

mode, N, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
mode, _, kind = mode.partition("-")
assert mode in ("eager", "inductor", "dynamo") and kind in ("", "prealloc"), sys.argv[1]
torch.manual_seed(0)
torch.set_num_threads(1)
cfg = LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=256, num_hidden_layers=4, num_attention_heads=16,
                  num_key_value_heads=16, head_dim=128, max_position_embeddings=N + 64, attn_implementation="sdpa")
model = LlamaForCausalLM(cfg).eval()
fwd = model if mode == "eager" else torch.compile(model.forward, backend=("eager" if mode == "dynamo" else "inductor"), dynamic=True)
ids = torch.randint(0, 256, (1, N))
new_cache = (lambda n: PrefillCache(n, cfg)) if kind else (lambda n: "dynamic")
chunked_prefill(model, ids[:, :3 * chunk], chunk, forward=fwd, cache=new_cache(3 * chunk))  # warm (compile): 3 chunks
import gc; gc.collect()
base = rss("VmRSS:")
hwm_reset()
t = time.time()
cache, _ = chunked_prefill(model, ids, chunk, forward=fwd, cache=new_cache(N))
peak = rss("VmHWM:")
c = kv_cache_bytes(cfg, N, dtype=torch.float32)
print(f"{sys.argv[1]}: N={N} chunk={chunk} cache {c/2**30:.3f} GiB; peak - before = {(peak-base)/2**30:.3f} GiB "
      f"({(peak-base)/c:.2f} x cache); {time.time()-t:.0f}s")
