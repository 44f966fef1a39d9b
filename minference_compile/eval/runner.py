"""Dense and sparse forwards of one model in one process, through the real backend.

``dense``: the model's own forward (HF SDPA, eager). ``sparse``: the same forward compiled with
``minference_backend`` (the FX pass rewrites every SDPA node into ``minference::*``; Inductor compiles the
rest), ``dynamic=True`` so one compilation serves every prompt length. Both pre-fill the prompt; answers
are then decoded greedily with the model's *eager* forward on the KV cache the pre-fill produced: decode
(q_len 1) runs dense attention in the compiled model too, so this changes nothing but saves compiling
decode graphs.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..backend import minference_backend
from ..chunked import cache_kwarg
from ..config import MInferenceConfig


def load_model(path: str, device: str = "cpu", dtype: Optional[torch.dtype] = None):
    """HF folder -> (model in eval mode with SDPA attention, tokenizer). fp32 on CPU, bf16 on CUDA."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the per-tensor loading bar would drown the eval's own lines
    dtype = dtype or (torch.bfloat16 if str(device).startswith("cuda") else torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", dtype=dtype).to(device).eval()
    return model, tok


@dataclass
class CompileStats:
    """What the pass did, per Dynamo graph (filled by the backend wrapper at compile time)."""

    graphs: list = field(default_factory=list)  # {"rewritten": n, "left_dense": n, "secs": t}

    @property
    def rewritten(self) -> int:
        return sum(g["rewritten"] for g in self.graphs)

    @property
    def left_dense(self) -> int:
        return sum(g["left_dense"] for g in self.graphs)


def _counting_backend(stats: CompileStats):
    def backend(gm, example_inputs, **kwargs):
        t0 = time.perf_counter()
        fn = minference_backend(gm, example_inputs, **kwargs)  # the pass runs on gm in place first
        targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
        rewritten = sum(getattr(n.meta.get("minference"), "rewritten", False) for n in gm.graph.nodes)
        stats.graphs.append({"rewritten": rewritten,
                             "left_dense": sum("scaled_dot_product_attention" in t for t in targets),
                             "secs": round(time.perf_counter() - t0, 1)})
        return fn
    return backend


def compile_forward(model, config: MInferenceConfig, stats: CompileStats):
    """The model's forward through the backend (not installed on the model: dense stays available).
    With the project's ``minference_compile.compile`` helper this is the one line to swap."""
    return torch.compile(model.forward, backend=_counting_backend(stats), options={"config": config}, dynamic=True)


def force_sparse(config: MInferenceConfig) -> MInferenceConfig:
    """The config with the sparse path on at every length (min_sparse_len 0) and no CUDA dense guard
    (vs_max_work 1.0): what the accuracy eval measures unless told to keep the deployed thresholds."""
    import dataclasses

    return dataclasses.replace(config, min_sparse_len=0, vs_max_work=1.0)


class Runner:
    """``prefill/answer/nll(mode, ...)``: mode "dense" (eager) or the name of a sparse config."""

    def __init__(self, model, configs: dict):
        self.model = model
        self.configs = dict(configs)
        self.stats = {name: CompileStats() for name in self.configs}
        self.forwards = {"dense": model.forward}
        for name, config in self.configs.items():
            self.forwards[name] = compile_forward(model, config, self.stats[name])
        self.device = next(model.parameters()).device
        self._cache_kw = cache_kwarg(model)  # "cache" (transformers >= 5.2x) or "past_key_values" (5.17)

    @torch.no_grad()
    def prefill(self, mode: str, ids: torch.Tensor, keep: int = 1):
        """-> (logits [1, keep, V] fp32, the KV cache, seconds).

        Always with a cache: with ``use_cache=False`` transformers (5.24) builds a mask with a packed-sequence
        test on position_ids that the pass cannot prove causal, so it would leave every layer dense."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        t0 = time.perf_counter()
        # positions as a tensor, at least 2: an int logits_to_keep (and a size-1 tensor) is specialised by
        # Dynamo, one compilation per value; this way one compilation serves every length and keep
        n = min(max(keep, 2), ids.shape[1])
        keep_at = torch.arange(ids.shape[1] - n, ids.shape[1], device=self.device)
        out = self.forwards[mode](input_ids=ids.to(self.device), use_cache=True, logits_to_keep=keep_at,
                                  **{self._cache_kw: cache})
        logits = out.logits[:, -keep:].float()
        _sync(self.device)
        return logits, cache, time.perf_counter() - t0

    @torch.no_grad()
    def answer(self, mode: str, ids: torch.Tensor, new_tokens: int) -> tuple:
        """Greedy answer: pre-fill in ``mode``, decode eagerly. -> (token ids, pre-fill seconds)."""
        logits, cache, secs = self.prefill(mode, ids, keep=1)
        toks = []
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        eos = self.model.config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
        for i in range(new_tokens):
            toks.append(int(nxt[0, 0]))
            if toks[-1] in eos or i == new_tokens - 1:
                break
            out = self.forwards["dense"](input_ids=nxt, use_cache=True, **{self._cache_kw: cache})
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        return toks, secs

    @torch.no_grad()
    def nll(self, mode: str, ids: torch.Tensor, last: int) -> tuple:
        """Mean negative log-likelihood of the last ``last`` tokens of ``ids``. -> (nll, seconds)."""
        logits, _, secs = self.prefill(mode, ids, keep=last + 1)
        target = ids[0, -last:].to(logits.device)
        lp = torch.log_softmax(logits[0, :-1], dim=-1)
        return float(-lp.gather(-1, target[:, None]).mean()), secs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_ops(fn) -> dict:
    """Run ``fn()`` under torch.profiler; -> counts of minference::* ops and of dense SDPA kernels
    outside them, so a caller can confirm that the sparse path (not a dense fallback) ran."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.events()
    sparse = [e for e in events if e.name.startswith("minference::sparse_prefill")]
    spans = [(e.time_range.start, e.time_range.end) for e in sparse]

    def inside(e) -> bool:
        return any(a <= e.time_range.start and e.time_range.end <= b for a, b in spans)

    sdpa = [e for e in events if e.name.startswith("aten::_scaled_dot_product")]
    return {"sparse_prefill": len(sparse), "sdpa_outside": sum(not inside(e) for e in sdpa),
            "sdpa_inside": sum(inside(e) for e in sdpa)}


@contextlib.contextmanager
def timer():
    t = {"secs": 0.0}
    t0 = time.perf_counter()
    yield t
    t["secs"] = time.perf_counter() - t0
