"""Where in training the script is, learned without touching the script.

- epoch and batch: from DataLoader iteration. Each new iterator of a loader starts a new
  epoch of that loader; each batch it yields advances the batch index. The loader advanced
  most recently is the one reported.
- loss: the last scalar passed to ``backward()``, kept as a detached 0-d tensor and read only
  when a step is captured (no extra device sync on the training path).
- learning rate and optimizer steps: a global optimizer step hook; the first parameter
  group's ``lr`` of the optimizer that stepped most recently.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import torch


class TrainingContext:
    def __init__(self) -> None:
        self.epoch: int | None = None
        self.batch: int | None = None
        self._loss: torch.Tensor | None = None
        self._optimizer: weakref.ref | None = None
        self.optimizer_steps = 0
        self._epochs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def install(self) -> None:
        from torch.utils.data import dataloader

        context = self
        base_iter = dataloader._BaseDataLoaderIter
        original_next = base_iter.__next__
        original_iter = dataloader.DataLoader.__iter__

        @functools.wraps(original_iter)
        def loader_iter(loader: Any) -> Any:
            iterator = original_iter(loader)
            epoch = context._epochs.get(loader, -1) + 1
            context._epochs[loader] = epoch
            try:
                iterator._cossim_tui_epoch = epoch
                iterator._cossim_tui_batch = -1
            except AttributeError:
                pass
            return iterator

        @functools.wraps(original_next)
        def loader_next(iterator: Any) -> Any:
            item = original_next(iterator)
            batch = getattr(iterator, "_cossim_tui_batch", None)
            if batch is not None:
                iterator._cossim_tui_batch = batch + 1
                context.epoch = iterator._cossim_tui_epoch
                context.batch = batch + 1
            return item

        dataloader.DataLoader.__iter__ = loader_iter  # type: ignore[method-assign]
        base_iter.__next__ = loader_next  # type: ignore[method-assign]

        original_backward = torch.Tensor.backward

        @functools.wraps(original_backward)
        def backward(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if tensor.numel() == 1 and tensor.is_floating_point():
                context._loss = tensor.detach()
            return original_backward(tensor, *args, **kwargs)

        torch.Tensor.backward = backward  # type: ignore[method-assign]
        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(self._stepped)

    def _stepped(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._optimizer = weakref.ref(optimizer)
        self.optimizer_steps += 1

    def snapshot(self) -> dict[str, float]:
        """The keys that are known now (CONTRACT ``context``)."""
        known: dict[str, float] = {}
        if self.epoch is not None:
            known["epoch"] = self.epoch
            known["batch"] = self.batch if self.batch is not None else 0
        if self._loss is not None:
            known["loss"] = float(self._loss.reshape(()).item())
        optimizer = self._optimizer() if self._optimizer is not None else None
        if optimizer is not None and optimizer.param_groups:
            lr = optimizer.param_groups[0].get("lr")
            if isinstance(lr, torch.Tensor):
                lr = float(lr.reshape(()).item())
            if isinstance(lr, (int, float)):
                known["lr"] = float(lr)
            known["optimizer_steps"] = self.optimizer_steps
        return known
