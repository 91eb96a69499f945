"""Fixtures the agent's in-process tests share."""

from __future__ import annotations

import pytest


class Watched:
    """A training context and a provenance wired together as the controller wires them; ``step``
    is the number of calls intercepted so far, as the provenance reads it."""

    def __init__(self) -> None:
        from cossim_tui.agent.context import TrainingContext
        from cossim_tui.agent.provenance import Provenance

        self.step = 0
        self.context = TrainingContext()
        self.provenance = Provenance(lambda: self.step, self.context.consumed)
        self.provenance.install()
        self.context.install()


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> Watched:
    """``Watched`` installed in this process; the torch entry points it patches are put back at
    teardown, and no optimizer hook is left registered."""
    import torch
    from torch import nn
    from torch.optim import optimizer as optimizer_module
    from torch.utils.data import dataloader

    for owner, name in (
        (nn.Module, "__call__"),
        (dataloader.DataLoader, "__iter__"),
        (dataloader._BaseDataLoaderIter, "__next__"),
        (torch.Tensor, "backward"),
    ):
        monkeypatch.setattr(owner, name, owner.__dict__[name])
    monkeypatch.setattr(optimizer_module, "register_optimizer_step_post_hook", lambda hook: None)
    return Watched()
