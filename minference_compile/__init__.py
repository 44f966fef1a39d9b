from .config import ConfigError, MInferenceConfig, get_support_models
from .backend import make_backend, minference_backend
from .compile_model import compile
from .explain import explain
from .ops import (block_sparse_attention, estimate_vertical_slash, streaming_forward,
                  vertical_slash_sparse_attention)
from .ops.record import format_runtime_stats, reset_runtime_stats, runtime_stats

__all__ = [
    "compile", "minference_backend", "make_backend", "MInferenceConfig", "ConfigError", "explain",
    "get_support_models", "runtime_stats", "reset_runtime_stats", "format_runtime_stats",
    "vertical_slash_sparse_attention", "block_sparse_attention", "streaming_forward", "estimate_vertical_slash",
    "PrefillCache",
]


def __getattr__(name):
    # PrefillCache subclasses transformers' Cache: imported on first use, so `import minference_compile` stays light
    if name == "PrefillCache":
        from .prefill_cache import PrefillCache
        return PrefillCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
