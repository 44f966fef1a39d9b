"""minference::* custom ops, their CPU paths, input checks and the public functions."""
from .api import (block_sparse_attention, estimate_vertical_slash, streaming_forward,
                  vertical_slash_sparse_attention)
from .dense import dense_attention
from .validate import SUPPORTED_HEAD_DIMS, head_dim_supported

__all__ = ["vertical_slash_sparse_attention", "block_sparse_attention", "streaming_forward",
           "estimate_vertical_slash", "dense_attention", "SUPPORTED_HEAD_DIMS", "head_dim_supported"]
