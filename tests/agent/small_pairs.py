"""Small pairs that between them make most findings, a way to send small CPU pairs down the
path a small pair on a GPU takes, and a controller (``agent_harness``'s, running freely) handed
calls as the interceptor hands them: the tests of the host-copy
path and of calls summarised behind the script compare a session taken one way with the same
session taken the other."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from agent_harness import KeptMessages, free_run  # noqa: F401 - shared with the fixture matrix
from cossim_tui.agent import capture
from cossim_tui.agent.call import Intercepted
from cossim_tui.agent.controller import Controller


def call(controller: Controller, x1: torch.Tensor, x2: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """What the interceptor does for ``F.cosine_similarity(x1, x2, dim)`` (without patching torch
    in this process)."""
    result = F.cosine_similarity(x1, x2, dim=dim)
    controller.on_call(Intercepted("cosine_similarity", ("x1", "x2"), x1, x2, dim, 1e-8, result, None, sys._getframe(1)))
    return result


def varied_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fresh pairs, stale partners (the same memory; equal values), the same object, a collapse
    persisting three steps, a common-mode offset, a NaN, batch size 1, float16 and zero norms;
    the same tensors on every call (seeded)."""
    torch.manual_seed(0)
    anchor = torch.randn(8, 16)
    collapsed = torch.randn(1, 16) + 1e-3 * torch.randn(8, 16)
    offset = 3.0 * torch.randn(1, 16) + torch.randn(8, 16)
    broken = torch.randn(8, 16)
    broken[2, 3] = math.nan
    return [
        (anchor, torch.randn(8, 16)),
        (torch.randn(8, 16), anchor.detach()),  # a stale partner, the same memory
        (torch.randn(8, 16), anchor.clone()),  # a stale partner, equal values
        (anchor, anchor),  # the same object
        (collapsed, torch.randn(8, 16)),
        (collapsed + 1e-4, torch.randn(8, 16)),
        (collapsed - 1e-4, torch.randn(8, 16)),
        (offset, torch.randn(8, 16)),
        (broken, torch.randn(8, 16)),
        (torch.randn(1, 16), torch.randn(1, 16)),  # batch size 1: the site's ring
        (torch.randn(2, 16).half(), torch.randn(2, 16).half()),
        (torch.zeros(4, 16), torch.randn(4, 16)),  # zero norms
    ]


def as_if_on_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small CPU pairs take the path of a small pair on a GPU: ``small_pair_on_device`` decides
    for them as if the CPU were a device, so their values are copied whole to the host."""
    real = capture.small_pair_on_device

    def off_cpu(x1: torch.Tensor, x2: torch.Tensor, result: torch.Tensor) -> bool:
        with monkeypatch.context() as patch:
            patch.setattr(torch.Tensor, "is_cpu", property(lambda self: False))
            return real(x1, x2, result)

    monkeypatch.setattr(capture, "small_pair_on_device", lambda x1, x2, result: real(x1, x2, result) or (x1.is_cpu and off_cpu(x1, x2, result)))
