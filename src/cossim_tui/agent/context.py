"""Where in training the script is, learned without touching the script.

- epoch and batch: from DataLoader iteration. Each new iterator of a loader starts a new
  epoch of that loader; each batch it yields advances the batch index. The loader advanced
  most recently is the one reported.
- loss: the last scalar passed to ``backward()``, kept as a detached 0-d tensor and read only
  when a step is captured, with the step's other values (no extra device sync anywhere).
- learning rate and optimizer steps: a global optimizer step hook; the first parameter
  group's ``lr`` of the optimizer that stepped most recently.
- the batch itself: weak references to the tensors the DataLoader yielded last, so an argument
  of the cosine call can be recognised as (a view of) the batch, without keeping it alive.
- the batch's labels: the integer 1-D tensor of the batch with one entry per row of a
  floating-point tensor of it (the ``targets`` of ``(images, targets)``; in
  ``(image1, label1, image2, label2)`` each image's own). They are found by
  where the batch's data lives, so that provenance can hand them, at the cost of a dict lookup
  per module call, to the call that made vectors from that data; their values are never read
  here.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch

from cossim_tui.agent.transfer import HostTransfer


class TrainingContext:
    def __init__(self) -> None:
        self.epoch: int | None = None
        self.batch: int | None = None
        self._loss: torch.Tensor | None = None
        self._optimizer: weakref.ref | None = None
        self.optimizer_steps = 0
        self._epochs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._batch_tensors: list[weakref.ref] = []
        self._labelled: dict[int, tuple[weakref.ref, torch.Tensor]] = {}
        """The last batch's labelled data: storage address -> (the data tensor, its labels)."""

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
            context._remember_batch(item)
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

    def _remember_batch(self, item: Any) -> None:
        found: list[weakref.ref] = []
        _batch_tensors(item, found, depth=0)
        self._batch_tensors = found
        self._labelled = _labelled_data([tensor for tensor in (ref() for ref in found) if tensor is not None])

    def labels_of(self, x: torch.Tensor) -> torch.Tensor | None:
        """The labels of ``x``'s rows, when ``x`` is (a view of) data of the last batch and has as
        many rows as the batch has labels.

        Runs on every outermost module call: with an unlabelled batch it is one test of an
        empty dict, with a labelled one a storage address and a dict lookup.
        """
        if not self._labelled:
            return None
        try:
            entry = self._labelled.get(x.untyped_storage().data_ptr())
        except (RuntimeError, NotImplementedError):  # sparse, functorch-wrapped: no plain storage
            return None
        if entry is None:
            return None
        data, labels = entry
        # The batch tensor is alive, so its address is still its memory (see ``from_loader``).
        if data() is None or x.dim() == 0 or x.shape[0] != labels.shape[0]:
            return None
        return labels

    def from_loader(self, x: Any) -> bool:
        """``x`` is (a view of) a tensor of the batch the DataLoader yielded last."""
        if not self._batch_tensors or not isinstance(x, torch.Tensor) or x.layout != torch.strided:
            return False
        try:
            storage = x.untyped_storage()
            address = storage.data_ptr()
            for ref in self._batch_tensors:
                tensor = ref()
                if tensor is None:
                    continue
                if tensor is x:
                    return True
                # The batch tensor is alive, so its memory cannot have been handed to another
                # tensor: the same address is the same memory (a view, a ``.detach()``).
                if address and tensor.untyped_storage().data_ptr() == address:
                    return True
        except (RuntimeError, NotImplementedError):
            return False
        return False

    def _stepped(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._optimizer = weakref.ref(optimizer)
        self.optimizer_steps += 1

    def queue_snapshot(self, transfer: HostTransfer) -> Callable[[], dict[str, float]]:
        """The keys that are known now (CONTRACT ``context``), with the device values it reads (the
        loss, a tensor learning rate) queued on ``transfer``: call what it returns once the
        transfer has been fetched."""
        known: dict[str, float] = {}
        if self.epoch is not None:
            known["epoch"] = self.epoch
            known["batch"] = self.batch if self.batch is not None else 0
        slots: dict[str, int] = {}
        if self._loss is not None:
            slots["loss"] = transfer.scalars(self._loss.reshape(()))
        optimizer = self._optimizer() if self._optimizer is not None else None
        if optimizer is not None and optimizer.param_groups:
            lr = optimizer.param_groups[0].get("lr")
            if isinstance(lr, torch.Tensor):
                slots["lr"] = transfer.scalars(lr.detach().reshape(()))
            elif isinstance(lr, (int, float)):
                known["lr"] = float(lr)
            known["optimizer_steps"] = self.optimizer_steps

        def finish() -> dict[str, float]:
            for key, slot in slots.items():
                known[key] = float(transfer[slot][0])
            # The report and the screen list the keys in this order.
            return {key: known[key] for key in _ORDER if key in known}

        return finish


_ORDER = ("epoch", "batch", "loss", "lr", "optimizer_steps")


LABEL_DTYPES = frozenset({torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8})
"""Dtypes of class labels; ``bool`` is a mask, not a class."""


def _labelled_data(tensors: list[torch.Tensor]) -> dict[int, tuple[weakref.ref, torch.Tensor]]:
    """The floating-point tensors of a batch that its labels describe, by storage address.

    Labels are integer 1-D tensors whose length is the leading size of a floating-point tensor
    of the batch. With one of them, every floating-point tensor of that leading size gets it
    (``(image1, image2, label)`` labels both images). With several, each data tensor gets the
    labels that follow it in the batch (``(image1, label1, image2, label2)``), or, when none
    follow, the last ones before it.
    """
    sizes = {t.shape[0] for t in tensors if t.dim() > 0 and t.is_floating_point()}
    candidates = [i for i, t in enumerate(tensors) if t.dim() == 1 and t.dtype in LABEL_DTYPES and t.shape[0] in sizes]
    if not candidates:
        return {}
    labelled: dict[int, tuple[weakref.ref, torch.Tensor]] = {}
    for index, tensor in enumerate(tensors):
        if tensor.dim() == 0 or not tensor.is_floating_point() or tensor.is_meta:
            continue
        after = [i for i in candidates if i > index]
        labels = tensors[after[0] if after else candidates[-1]]
        if tensor.shape[0] != labels.shape[0]:
            continue
        try:
            address = tensor.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):
            continue
        if address:  # an empty tensor has no memory to recognise it by
            labelled[address] = (weakref.ref(tensor), labels)
    return labelled


def _batch_tensors(item: Any, found: list[weakref.ref], depth: int) -> None:
    """Weak references to the tensors in a collated batch (tensors, tuples, lists, dicts)."""
    if isinstance(item, torch.Tensor):
        if item.layout == torch.strided and len(found) < 64:
            try:
                found.append(weakref.ref(item))
            except TypeError:
                pass
    elif depth < 3 and isinstance(item, (tuple, list)):
        for value in item[:64]:
            _batch_tensors(value, found, depth + 1)
    elif depth < 3 and isinstance(item, dict):
        for value in list(item.values())[:64]:
            _batch_tensors(value, found, depth + 1)
