"""Tensor helpers every stage of the agent shares: which dim is reduced, how shapes broadcast,
and a tensor seen as rows of vectors along that dim. One definition each."""

from __future__ import annotations

import torch


def reduced_dim(dim: int, ndim: int) -> int:
    """``dim`` as a negative index into a tensor of ``ndim`` dims (torch's wrapping rules)."""
    if ndim == 0:
        return -1
    return dim - ndim if dim >= 0 else dim


def broadcast_shape(a: torch.Size, b: torch.Size) -> list[int] | None:
    """The shape torch broadcasts ``a`` and ``b`` to, ``None`` when it cannot."""
    if a == b:
        return list(a)
    shape = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and x != 1 and y != 1:
            return None
        shape.append(y if x == 1 else x)
    return shape[::-1]


def as_rows(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The tensor as (rows, d) with the reduced dim last; a view where possible."""
    if x.dim() == 0:
        return x.reshape(1, 1)
    if -dim > x.dim():
        # The argument has no such dim of its own; broadcasting gives it size 1.
        return x.reshape(-1, 1)
    if dim != -1:
        x = x.movedim(dim, -1)
    return x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
