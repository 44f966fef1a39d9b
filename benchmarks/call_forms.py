"""Call forms on the GPU: a 4-layer Llama-3-8B-shaped model (random weights, bf16) pre-filling one prompt.

    python -m benchmarks.call_forms --length 131072 [--layers 4] [--out benchmarks/results/call-forms.json]

Same run, same card: eager SDPA and `torch.compile` dense (Inductor) with and without the KV cache, and our
backend (`minference_compile.compile`, an all-A-shape config so that the sparse path is certain to pay)
with the cache on and off. Issue 8: `use_cache=False` used to stay dense (the packed-sequence mask term);
now both forms must run the same sparse op at the same speed. Logits for the last position only
(`logits_to_keep=1`): full logits at 128K would be 67 GB. Prints a table and the run-time record.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import minference_compile


def build(layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=1 << 20,
                      rope_theta=500000.0, attn_implementation="sdpa")
    with torch.device("cuda"):
        torch.manual_seed(0)
        return LlamaForCausalLM(cfg).to(torch.bfloat16).eval()


def timed(fn, reps: int = 3) -> float:
    fn()  # warm-up (compiles)
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return sorted(out)[len(out) // 2]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, default=131072)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    card = torch.cuda.get_device_name()
    config = {"default": ["stream_llm", 128, 4096]}
    ids = torch.randint(0, 32000, (1, args.length), device="cuda")
    rows = []

    def run(name, model, use_cache):
        with torch.no_grad():
            secs = timed(lambda: model(input_ids=ids, use_cache=use_cache, logits_to_keep=1))
        rows.append({"case": name, "use_cache": use_cache, "seconds": secs})
        print(f"{name:28s} use_cache={use_cache!s:5s} {secs * 1e3:9.1f} ms", flush=True)

    model = build(args.layers)
    for use_cache in (True, False):
        run("eager SDPA", model, use_cache)
    torch._dynamo.reset()
    dense = torch.compile(model)
    for use_cache in (True, False):
        run("torch.compile dense", dense, use_cache)
    torch._dynamo.reset()
    minference_compile.compile(model, config)
    for use_cache in (True, False):
        minference_compile.reset_runtime_stats()
        run("minference A-shape 128+4096", model, use_cache)
        print(minference_compile.format_runtime_stats(), flush=True)
        rows[-1]["record"] = {str(k): {" / ".join(r): n for r, n in v.items()}
                              for k, v in minference_compile.runtime_stats().items()}
    on, off = rows[-2]["seconds"], rows[-1]["seconds"]
    print(f"\n{card}, {args.layers} layers, S={args.length}: use_cache=False / use_cache=True = {off / on:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"card": card, "length": args.length, "layers": args.layers, "torch": torch.__version__,
                       "rows": rows, "no_cache_over_cache": off / on}, f, indent=1)


if __name__ == "__main__":
    main()
