"""``minference_compile.compile(model, config)``: the zero-code-change entry point for every call form.

``torch.compile(model, backend=...)`` wraps ``model.__call__`` only: ``compiled.generate(...)`` and
``pipeline(model=compiled)`` reach the original module and run dense. Compiling ``model.forward`` in place
covers ``model(...)``, ``model.generate(...)`` (whose steps call ``self(...)``) and ``pipeline(...)``
alike, and keeps the model object, its attributes and its ``generate`` as they were.
"""
from __future__ import annotations

from typing import Any

import torch

from .backend import make_backend
from .config import ConfigLike, as_config


def _model_dims(model) -> tuple:
    """(num_layers, num_q_heads) from a HF config (text sub-config for multimodal models), or (None, None)."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "get_text_config", lambda: cfg)() if cfg is not None else None
    return getattr(cfg, "num_hidden_layers", None), getattr(cfg, "num_attention_heads", None)


def compile(model: torch.nn.Module, config: ConfigLike = None, *, dynamic: bool | None = None,
            inductor_options: dict | None = None, **compile_kwargs: Any) -> torch.nn.Module:
    """Compile ``model.forward`` in place with the MInference backend and return ``model``.

    config: MInferenceConfig, the seed's per-head JSON (path, list or dict) or None (default budgets);
    checked against the model's layer and head counts (ConfigError naming the file, layer and head).
    dynamic / compile_kwargs go to ``torch.compile``; inductor_options are Inductor config patches.
    """
    cfg = as_config(config)
    layers, heads = _model_dims(model)
    if layers is not None and heads is not None:
        cfg.validate_for(layers, heads)
    backend = make_backend(cfg, **(inductor_options or {}))
    model.forward = torch.compile(model.forward, backend=backend, dynamic=dynamic, **compile_kwargs)
    return model
