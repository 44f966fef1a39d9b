"""Configs we searched ourselves and ship (minference_compile/configs/: MODEL.json + MODEL.search.json)."""
from __future__ import annotations

import os
from typing import Optional

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# folder / hub names -> shipped config name
ALIASES = {"smollm2": "smollm2", "SmolLM2-135M-Instruct": "smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2",
           "qwen05": "qwen05", "Qwen2.5-Coder-0.5B-Instruct": "qwen05", "Qwen/Qwen2.5-Coder-0.5B-Instruct": "qwen05"}


def shipped_models() -> list:
    """Names of the shipped configs, sorted."""
    if not os.path.isdir(CONFIG_DIR):
        return []
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json") and not f.endswith(".search.json"))


def shipped_config_path(model: str) -> Optional[str]:
    name = ALIASES.get(model, model)
    path = os.path.join(CONFIG_DIR, f"{name}.json")
    return path if os.path.exists(path) else None
