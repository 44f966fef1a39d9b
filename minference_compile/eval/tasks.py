"""The four accuracy tasks, each dense and sparse (one or more configs) on the same prompts.

* needle: a pass key at ``depth`` of ``length`` tokens of filler; found iff the greedy answer contains it.
* ppl: perplexity of the last ``last`` tokens of ``length`` tokens of natural text.
* kv: RULER-style multi-key retrieval (``pairs`` key-value sentences, ask one); accuracy over samples.
* recall: per-head attention recall of each sparse config's pattern (measured during the dense ppl forward).

Cells are run mode by mode (dense first, then each sparse config: one compilation each) and stored as
soon as measured (``Store``), so a run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from . import data
from .recall import as_matrix, measuring
from .runner import Runner
from .store import Store


@dataclass
class EvalSpec:
    tasks: Sequence[str] = ("needle", "ppl", "kv", "recall")
    lengths: Sequence[int] = (1024, 2048, 4096)
    depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)
    ppl_lengths: Optional[Sequence[int]] = None  # None: the lengths
    ppl_last: int = 1024
    kv_lengths: Optional[Sequence[int]] = None  # None: the largest length
    kv_samples: int = 20
    kv_pairs: int = 8
    recall_lengths: Optional[Sequence[int]] = None  # None: the ppl lengths
    recall_rows: int = 128
    new_tokens: int = 10
    seed: int = 0

    def __post_init__(self):
        if "ppl" in self.tasks or "recall" in self.tasks:
            short = [L for L in list(self.ppl_lengths or self.lengths) + list(self.recall_lengths or [])
                     if L <= self.ppl_last]
            if short:
                raise ValueError(f"perplexity of the last {self.ppl_last} tokens needs longer texts: ppl/recall "
                                 f"length(s) {short} <= ppl_last; lower --ppl-last or raise --ppl-lengths")


@dataclass
class Context:
    runner: Runner
    tok: object
    store: Store
    model_id: str
    fingerprints: dict  # mode -> fingerprint text
    log: Callable[[str], None] = print
    progress: Optional[object] = None  # tqdm-like: update(n), set_postfix_str(s)
    texts: dict = field(default_factory=dict)
    device: str = ""  # recorded in every cell


def fingerprint(model_id: str, mode: str, config=None) -> str:
    text = model_id + "|" + mode + "|" + (config.fingerprint() if config is not None else "")
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def plan(spec: EvalSpec) -> list:
    """-> [(task, cell dict)] in run order (a mode runs every cell before the next mode compiles)."""
    cells = []
    ppl_lengths = list(spec.ppl_lengths or spec.lengths)
    if "needle" in spec.tasks:
        for L in spec.lengths:
            for d in spec.depths:
                cells.append(("needle", {"length": L, "depth": d}))
    if "ppl" in spec.tasks or "recall" in spec.tasks:
        for L in sorted(set(ppl_lengths) | set(_recall_lengths(spec))):
            cells.append(("ppl", {"length": L}))
    if "kv" in spec.tasks:
        for L in spec.kv_lengths or [max(spec.lengths)]:
            for i in range(spec.kv_samples):
                cells.append(("kv", {"length": L, "sample": i}))
    return cells


def _recall_lengths(spec: EvalSpec) -> list:
    if "recall" not in spec.tasks:
        return []
    return list(spec.recall_lengths or spec.ppl_lengths or spec.lengths)


def _cell_seed(spec: EvalSpec, task: str, cell: dict) -> int:
    text = f"{spec.seed}|{task}|{sorted(cell.items())}"
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)


def run_all(ctx: Context, spec: EvalSpec, modes: Sequence[str], text_ids: Optional[Callable] = None) -> None:
    """Measure every (mode, cell) not in the store. ``text_ids(length) -> [1, length]`` overrides the
    natural text of the ppl task (tests use text sampled from the model itself)."""
    cells = plan(spec)
    pb = None
    if text_ids is None and any(t == "ppl" for t, _ in cells):
        longest = max(c["length"] for t, c in cells if t == "ppl")
        natural = data.NaturalText(ctx.tok, longest)
        ctx.texts["ppl"] = natural.source
        text_ids = natural.ids
    recall_at = set(_recall_lengths(spec))
    for mode in modes:
        for task, cell in cells:
            key = Store.key(task, mode, ctx.fingerprints[mode], **cell)
            with_recall = mode == "dense" and task == "ppl" and cell["length"] in recall_at
            done = ctx.store.get(key)
            if done is not None and with_recall and not set(ctx.runner.configs) <= set(done.get("recall") or {}):
                done = None  # stored before this set of sparse configs: measure again (the later line wins)
            if done is None:
                if task in ("needle", "kv") and pb is None:
                    pb = data.PromptBuilder(ctx.tok, spec.seed)
                    ctx.texts["filler"] = pb.filler_source
                if ctx.progress is not None:
                    ctx.progress.set_postfix_str(f"{mode} {task} {cell}")
                t0 = time.perf_counter()
                rec = _measure(ctx, spec, task, mode, cell, pb, text_ids, with_recall)
                rec.update(task=task, mode=mode, model=ctx.model_id, device=ctx.device,
                           wall_s=round(time.perf_counter() - t0, 2), **cell)
                ctx.store.put(key, rec)
                ctx.log(_line(rec))
            if ctx.progress is not None:
                ctx.progress.update(1)


def _measure(ctx: Context, spec: EvalSpec, task: str, mode: str, cell: dict, pb, text_ids, with_recall: bool) -> dict:
    r = ctx.runner
    if task == "needle":
        p = data.needle_prompt(pb, cell["length"], cell["depth"], _cell_seed(spec, task, cell))
        return _answer(r, mode, p, spec.new_tokens, ctx.tok)
    if task == "kv":
        p = data.kv_prompt(pb, cell["length"], spec.kv_pairs, _cell_seed(spec, task, cell))
        return _answer(r, mode, p, spec.new_tokens, ctx.tok)
    ids = text_ids(cell["length"])
    if not with_recall:
        nll, secs = r.nll(mode, ids, spec.ppl_last)
        return {"nll": nll, "ppl": math.exp(nll), "prefill_s": round(secs, 2)}
    # the dense forward also measures the recall of every sparse config's pattern on this text
    with measuring(r.model, r.configs, rows=spec.recall_rows) as out:
        nll, secs = r.nll(mode, ids, spec.ppl_last)
    by_mode = {}
    for name, got in out.items():
        rec, dens = as_matrix(got["recall"]), as_matrix(got["density"])
        if rec.numel():
            by_mode[name] = {"recall": rec.tolist(), "recall_mean": float(rec.mean()), "recall_min": float(rec.min()),
                             "density_mean": float(dens.mean())}
    return {"nll": nll, "ppl": math.exp(nll), "prefill_s": round(secs, 2), "recall": by_mode}


def _answer(r: Runner, mode: str, p: data.Prompt, new_tokens: int, tok) -> dict:
    toks, secs = r.answer(mode, p.ids, new_tokens)
    text = tok.decode(toks, skip_special_tokens=True)
    return {"found": p.answer in text, "answer": p.answer, "text": text, "prefill_s": round(secs, 2),
            "prompt_tokens": p.ids.shape[1], **{f"meta_{k}": v for k, v in p.meta.items()}}


def _line(rec: dict) -> str:
    cell = " ".join(f"{k}={rec[k]}" for k in ("length", "depth", "sample") if k in rec)
    if rec["task"] in ("needle", "kv"):
        res = f"{'FOUND ' if rec['found'] else 'missed'} {rec['text']!r}"
    else:
        res = f"ppl {rec['ppl']:.3f}" + "".join(f"; recall of {m}: mean {x['recall_mean']:.3f} min {x['recall_min']:.3f}"
                                                for m, x in (rec.get("recall") or {}).items())
    return f"[{rec['mode']:>8s}] {rec['task']:6s} {cell:24s} {res} ({rec['wall_s']:.1f}s)"
