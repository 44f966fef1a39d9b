"""One registry of the sparse patterns (base.py): a typed spec per pattern, one module each.

Adding a pattern: a module here with a ``@register``-ed frozen dataclass subclass of ``Pattern`` (docs/DESIGN.md,
"Pattern registry"), imported below.
"""
from .. import ops  # noqa: F401  first: ops.library imports this package's modules (see docs/DESIGN.md, layers)
from .base import (BY_ID, DEFAULT_THRESHOLD, REGISTRY, HeadGroup, Pattern, PatternError, Slot, as_spec, by_id,
                   by_name, from_head_entry, pack_layer, parse_entry, parse_label, pattern_names, register,
                   unpack)
from .dense import Dense
from .vertical_slash import VerticalSlash
from .a_shape import AShape
from .block_sparse import BlockSparse
from .block_sparse_128 import BlockSparse128
from .adaptive_vertical_slash import VerticalSlashAdaptive
from .adaptive_block_sparse import BlockSparseAdaptive, BlockSparseAntidiag
from .block_sparse_meanq import BlockSparseMeanQ, BlockSparseMeanQAdaptive

__all__ = ["Pattern", "PatternError", "HeadGroup", "Slot", "REGISTRY", "BY_ID", "DEFAULT_THRESHOLD", "register",
           "parse_entry", "as_spec", "by_id", "by_name", "from_head_entry", "pack_layer", "parse_label", "pattern_names", "unpack",
           "Dense", "VerticalSlash", "AShape", "BlockSparse", "BlockSparse128", "VerticalSlashAdaptive", "BlockSparseAdaptive",
           "BlockSparseAntidiag", "BlockSparseMeanQ", "BlockSparseMeanQAdaptive"]
