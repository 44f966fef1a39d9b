"""``explain(model, *args, config=..., length=N)``: which SDPA nodes the backend rewrites, why others stay dense,
and what each rewritten node will run for an N-token prompt on a device."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from .config import ConfigLike, as_config


def _summary(values: tuple) -> str:
    if not values:
        return "-"
    uniq = sorted(set(values), key=values.index)
    return ",".join(f"{v}x{values.count(v)}" if len(uniq) > 1 else str(v) for v in uniq)


@dataclasses.dataclass
class ExplainReport:
    rows: list  # SDPAMatch per SDPA node, in graph order
    graphs: list  # rewritten torch.fx.GraphModule per Dynamo graph
    length: Optional[int] = None  # the prompt length the "at" column is for
    device: str = ""

    @property
    def rewritten(self) -> int:
        return sum(r.rewritten for r in self.rows)

    @property
    def pinned(self) -> int:
        """cos/sin values the rotary-tables pass pinned (passes/rotary_tables.py: computed once per forward)."""
        return sum(n.op == "call_function" and n.target is torch.ops.minference.materialize.default
                   for gm in self.graphs for n in gm.graph.nodes)

    def at(self, row) -> str:
        return row.at_length(self.length, self.device or None)

    def __str__(self) -> str:
        head = ["layer", "node", "heads q/kv", "patterns", "rewrite"]
        if self.length is not None:
            head.append(f"at {self.length} on {self.device or 'traced device'}")
        lines = [tuple(head)]
        for r in self.rows:
            res = ("sparse: " if r.rewritten else "dense: ") + r.reason
            layer = f"{r.layer}" + ("" if r.layer_source == "nn_module_stack" else "?")
            heads = f"{r.q_heads}/{r.kv_heads}" + (f" ({r.tp})" if r.tp else "")
            # each head's pattern label (minference_compile/patterns/): vs(1000,6096), ashape(128,1024), bs(16), ...
            row = [layer, r.node, heads, _summary(tuple(s.label for s in r.specs)), res]
            if self.length is not None:
                row.append(self.at(r))
            lines.append(tuple(row))
        widths = [max(len(str(l[i])) for l in lines) for i in range(len(head) - 1)]
        out = ["  ".join(str(c).ljust(w) for c, w in zip(l[:-1], widths)) + "  " + l[-1] for l in lines]
        out.append(f"{self.rewritten}/{len(self.rows)} SDPA nodes rewritten in {len(self.graphs)} graph(s)")
        if self.pinned:
            out.append(f"{self.pinned} rotary cos/sin value(s) pinned: computed once per forward, not in each "
                       "layer's RoPE kernel")
        return "\n".join(out)

    __repr__ = __str__


def _example_inputs(model, length: int) -> dict:
    vocab = getattr(getattr(model, "config", None), "vocab_size", 2) or 2
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    return {"input_ids": torch.randint(0, vocab, (1, min(length, 64)), device=dev)}


def explain(model, *args: Any, config: ConfigLike = None, length: Optional[int] = None,
            device: Optional[str] = None, **kwargs: Any) -> ExplainReport:
    """Trace ``model(*args, **kwargs)`` with Dynamo, run the pass (no Inductor) and report per SDPA node.

    length: also report what each node runs for a prompt of that many tokens (the length rule: threshold,
    auto crossover on the device; run-time checks are named). Without inputs, a short ``input_ids`` prompt is
    traced with ``dynamic=True`` (the graph does not depend on the length). device: "cuda"/"cpu" to predict
    for another device than the traced one.
    """
    from .backend import run_passes
    from .compile_model import _model_dims

    cfg = as_config(config)
    layers, heads = _model_dims(model)
    if layers is not None and heads is not None:
        cfg.validate_for(layers, heads)
    report = ExplainReport(rows=[], graphs=[], length=length, device=device or "")
    if not args and not kwargs:
        kwargs = _example_inputs(model, length or 64)

    def capture(gm: torch.fx.GraphModule, example_inputs):
        report.rows.extend(run_passes(gm, cfg))
        report.graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()  # fresh trace, so each graph reaches the capturing backend
    try:
        with torch.no_grad():
            torch.compile(model, backend=capture, dynamic=True if length is not None else None)(*args, **kwargs)
    finally:
        torch._dynamo.reset()
    if not report.device:
        report.device = next((r.device for r in report.rows if r.device), "cpu")
    return report
