"""``minference::materialize``: an identity (a copy) that Inductor cannot inline into its consumers.

Used by ``passes/rotary_tables.py``: a value computed once per forward and read by every layer (the rotary
cos/sin tables) must exist as one buffer; Inductor otherwise recomputes its cheap-looking pointwise chain inside
each consumer's kernel (custom-op inputs are always realised, so this op pins it).
"""
from __future__ import annotations

import torch


@torch.library.custom_op("minference::materialize", mutates_args=())
def materialize(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@materialize.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def _backward(ctx, grad: torch.Tensor) -> torch.Tensor:
    return grad


materialize.register_autograd(_backward)
