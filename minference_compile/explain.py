"""``explain(model, *args, config=...)``: which SDPA nodes the backend rewrites, and why others stay dense."""
from __future__ import annotations

import dataclasses
from typing import Any

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

    @property
    def rewritten(self) -> int:
        return sum(r.rewritten for r in self.rows)

    def __str__(self) -> str:
        head = ("layer", "node", "heads q/kv", "patterns", "vertical", "slash", "result")
        lines = [head]
        for r in self.rows:
            res = ("sparse: " if r.rewritten else "dense: ") + r.reason
            layer = f"{r.layer}" + ("" if r.layer_source == "nn_module_stack" else "?")
            lines.append((layer, r.node, f"{r.q_heads}/{r.kv_heads}", _summary(r.patterns),
                          _summary(r.vertical_size), _summary(r.slash_size), res))
        widths = [max(len(str(l[i])) for l in lines) for i in range(len(head) - 1)]
        out = ["  ".join(str(c).ljust(w) for c, w in zip(l[:-1], widths)) + "  " + l[-1] for l in lines]
        out.append(f"{self.rewritten}/{len(self.rows)} SDPA nodes rewritten in {len(self.graphs)} graph(s)")
        return "\n".join(out)

    __repr__ = __str__


def explain(model, *args: Any, config: ConfigLike = None, **kwargs: Any) -> ExplainReport:
    """Trace ``model(*args, **kwargs)`` with Dynamo, run the pass (no Inductor) and report per SDPA node."""
    from .backend import run_passes

    cfg = as_config(config)
    report = ExplainReport(rows=[], graphs=[])

    def capture(gm: torch.fx.GraphModule, example_inputs):
        report.rows.extend(run_passes(gm, cfg))
        report.graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()  # fresh trace, so each graph reaches the capturing backend
    try:
        with torch.no_grad():
            torch.compile(model, backend=capture)(*args, **kwargs)
    finally:
        torch._dynamo.reset()
    return report
