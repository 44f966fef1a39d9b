"""Perplexity of the last tokens of a long prompt: dense vs sparse pre-fill with a config (eager, no compile).

    python -m benchmarks.search_ppl --model ~/.cache/minference-models/qwen05 --lengths 16384,32768 \\
        --configs minference_compile/configs/qwen05.json,seed --last 1024 [--prompt natural --offset 40000]

The model runs with a registered transformers attention function that calls minference::sparse_prefill per layer
(the config's per-head patterns, min_sparse_len 0, vs_max_work 1: always sparse), so the sparse path is exactly
the op's (CPU: the masked reference path; CUDA: the Triton kernels). "seed" = the seed's fixed (1000, 6096),
"small" = (100, 800) for every head. The text: by default the built-in natural text starting at token --offset,
past the part the search calibrates on. Prints PPL of the last --last tokens and the change against dense.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

_CFG = {}


def _attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    cfg = _CFG["config"]
    from minference_compile.config import PATTERN_IDS
    entries = cfg.layer_entries(module.layer_idx, query.shape[1])
    out = torch.ops.minference.sparse_prefill(query, key.contiguous(), value.contiguous(),
                                              [PATTERN_IDS[e[0]] for e in entries], [e[1] for e in entries],
                                              [e[2] for e in entries], float(scaling or query.shape[-1] ** -0.5),
                                              0, 64, 1.0)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("minference_ppl", _attention)
    AttentionMaskInterface.register("minference_ppl", sdpa_mask)
    return "minference_ppl"


def nll_last(model, ids: torch.Tensor, last: int) -> float:
    with torch.no_grad():
        h = model.model(input_ids=ids, use_cache=False).last_hidden_state[:, -last - 1:-1]
        logits = model.lm_head(h).float()
    return float(torch.nn.functional.cross_entropy(logits[0], ids[0, -last:].to(logits.device)))


def main(argv=None) -> None:
    from transformers import AutoModelForCausalLM

    import minference_compile.ops.library  # noqa: F401  (registers the ops)
    from minference_compile.config import MInferenceConfig, as_config
    from minference_compile.search.prompts import encoder, prompt_ids

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--configs", default="seed", help="comma list: config JSON paths, 'seed', 'small'")
    ap.add_argument("--lengths", default="16384")
    ap.add_argument("--last", type=int, default=1024)
    ap.add_argument("--prompt", default="natural")
    ap.add_argument("--offset", type=int, default=40000, help="tokens of the text skipped")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    a = ap.parse_args(argv)
    dtype = getattr(torch, a.dtype)
    model = AutoModelForCausalLM.from_pretrained(a.model, attn_implementation="sdpa", dtype=dtype).to(a.device).eval()
    encode = encoder(a.model, model.config.vocab_size)
    named = {"seed": MInferenceConfig(default=("vertical_and_slash", 1000, 6096)),
             "small": MInferenceConfig(default=("vertical_and_slash", 100, 800))}
    for S in [int(x) for x in a.lengths.split(",")]:
        ids = prompt_ids(a.prompt, S + a.offset, encode)[:, a.offset:].to(a.device)
        model.set_attn_implementation("sdpa")
        t0 = time.perf_counter()
        dense = math.exp(nll_last(model, ids, a.last))
        print(f"S={S} dense ppl {dense:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
        model.set_attn_implementation(register())
        for name in a.configs.split(","):
            _CFG["config"] = named.get(name) or as_config(name)
            t0 = time.perf_counter()
            ppl = math.exp(nll_last(model, ids, a.last))
            print(f"S={S} {name:40s} ppl {ppl:.4f} ({100 * (ppl / dense - 1):+.2f}% vs dense, "
                  f"{time.perf_counter() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
