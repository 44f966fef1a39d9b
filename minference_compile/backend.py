"""``minference_backend``: torch.compile backend = our FX passes on the Dynamo graph, then Inductor.

    torch.compile(model, backend="minference", options={"config": "patterns.json"})
    torch.compile(model, backend=make_backend(config))

torch forwards ``options`` to a backend registered by name as the keyword ``options=`` (see
torch._TorchCompileWrapper); keys other than ``config`` are passed to Inductor as config patches.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, Optional

import torch

from .config import ConfigLike

log = logging.getLogger("minference_compile")


def run_passes(gm: torch.fx.GraphModule, config: ConfigLike = None) -> list:
    """Rewrite ``gm`` in place; returns the per-SDPA-node matches."""
    from minference_compile.passes import MaterializeRotaryTables, MInferenceSDPAPass  # lazy: cheap import

    matches = MInferenceSDPAPass(config)(gm.graph)
    if os.environ.get("MINFERENCE_COMPILE_ROTARY_TABLES", "1") != "0":  # "0": off, for before/after timing
        MaterializeRotaryTables()(gm.graph)  # after the SDPA pass, which reads the graph as Dynamo traced it
    gm.graph.lint()
    gm.recompile()
    return matches


@functools.lru_cache(maxsize=None)
def _cache_key_pass(uuid: str):
    """A no-op Inductor post-grad pass whose uuid is our pass's: Inductor's FX graph cache key includes custom
    pass uuids, and our pass ran before Inductor saw the graph, so without it a warm cache would serve code
    compiled against another version's op layouts (its generated code asserts the op output strides)."""
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class MInferenceCacheKey(CustomGraphPass):
        def __call__(self, graph) -> None:
            return None

        def uuid(self) -> str:
            return uuid

    return MInferenceCacheKey()


_hinted = [False]


def minference_backend(gm: torch.fx.GraphModule, example_inputs, options: Optional[dict] = None, **kwargs: Any):
    opts = dict(options or {})
    config = opts.pop("config", kwargs.pop("config", None))
    kwargs.pop("mode", None)  # torch.compile(mode=...) is Inductor's business; not forwarded here
    t0 = time.perf_counter()
    matches = run_passes(gm, config)
    from minference_compile.passes import MaterializeRotaryTables, MInferenceSDPAPass

    key = MInferenceSDPAPass(config).uuid() + MaterializeRotaryTables().uuid()
    opts.setdefault("post_grad_custom_pre_pass", _cache_key_pass(key))
    n = sum(m.rewritten for m in matches)
    log.info("minference: graph with %d SDPA node(s): %d rewritten, %d dense; compiling with Inductor ...",
             len(matches), n, len(matches) - n)
    if matches and not _hinted[0]:
        _hinted[0] = True
        log.info("minference: note: `torch.compile(model).generate(...)` runs the *uncompiled* model (torch "
                 "compiles __call__ only); use minference_compile.compile(model) to cover generate and pipeline")
    from torch._inductor.compile_fx import compile_fx

    compiled = compile_fx(gm, example_inputs, config_patches=opts or None)
    log.info("minference: graph compiled in %.1f s", time.perf_counter() - t0)
    return compiled


def make_backend(config: ConfigLike = None, **inductor_options: Any):
    """A backend callable bound to ``config`` (for ``torch.compile(model, backend=make_backend(cfg))``)."""
    return functools.partial(minference_backend, options={"config": config, **inductor_options})


def _register() -> None:
    from torch._dynamo.backends import registry

    # If Dynamo already discovered our entry point, it registers the function itself when it loads
    # it; registering here too would trip its duplicate-name assertion.
    if "minference" in registry._COMPILER_FNS or registry._BACKENDS.get("minference") is not None:
        return
    registry.register_backend(minference_backend, name="minference")


_register()
