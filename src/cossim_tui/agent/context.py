"""Where in training the script is, learned without touching the script.

- epoch and batch: from DataLoader iteration. Each new iterator of a loader starts a new
  epoch of that loader; each batch it yields advances the batch index. The loader advanced
  most recently is the one reported. A loader may be read ahead of the training step (the HF
  Trainer and accelerate fetch the next batch before handing out the current one), so the
  step's batch is the one the model consumes: when an outermost module call is fed data of
  one of the iterator's last few batches before any later one has been fed to a module, that
  batch is the step's (``consumed``). Where the model's input cannot be recognised as the
  batch's data (moved to a GPU, it is a copy), the read-ahead is seen in the order of events:
  an iterator whose second batch is fetched before any module call or cosine call since its
  first is read one batch ahead, so its step's batch number is the one before the latest
  fetched, and the latest once the loader is exhausted (the reader hands out the batch it still
  holds). A loop that feeds no module keeps the latest yielded.
- loss: the last scalar passed to ``backward()``, kept as a detached 0-d tensor and read only
  when a step is captured, with the step's other values (no extra device sync anywhere).
- learning rate and optimizer steps: a global optimizer step hook; the first parameter
  group's ``lr`` of the optimizer that stepped most recently.
- the batch itself: weak references to the tensors of the step's batch, so an argument
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
from dataclasses import dataclass, field
from typing import Any

import torch

from cossim_tui.agent.transfer import HostTransfer

RECENT = 3
"""Batches of the iterator read last that a module call may still consume: the one yielded
last and the two before it (a loader read one or two batches ahead)."""


@dataclass(eq=False)
class _Batch:
    epoch: int | None
    index: int | None
    tensors: list[weakref.ref]
    labelled: dict[int, tuple[weakref.ref, torch.Tensor]]
    """Its labelled data: storage address -> (the data tensor, its labels)."""
    consumed: bool = False
    """A module call has been fed data of it."""


@dataclass(eq=False)
class _Recent:
    """The last ``RECENT`` batches of one iterator, and their tensors by storage address."""

    iterator: Callable[[], Any]
    """The iterator, weakly: a loader's workers end when the script drops its iterator."""
    batches: list[_Batch] = field(default_factory=list)
    by_address: dict[int, tuple[weakref.ref, _Batch]] = field(default_factory=dict)
    events_at_first: int = 0
    """``TrainingContext._events`` when the iterator yielded its first batch."""
    ahead: bool = False
    """Its second batch was fetched with nothing done since the first: it is read one ahead."""


class TrainingContext:
    def __init__(self) -> None:
        self.epoch: int | None = None
        self.batch: int | None = None
        self._loss: torch.Tensor | None = None
        self._optimizer: weakref.ref | None = None
        self.optimizer_steps = 0
        self._epochs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._recent: _Recent | None = None
        self._current: _Batch | None = None
        """The step's batch: the latest yielded, or the one a module consumed (see ``consumed``)."""
        self._events = 0
        """Outermost module calls and intercepted calls so far: did anything happen between two
        batches?"""

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
            try:
                item = original_next(iterator)
            except StopIteration:
                context._exhausted(iterator)
                raise
            batch = getattr(iterator, "_cossim_tui_batch", None)
            if batch is not None:
                iterator._cossim_tui_batch = batch + 1
                context.epoch = iterator._cossim_tui_epoch
                context.batch = batch + 1
            context._remember_batch(iterator, item)
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

    def _remember_batch(self, iterator: Any, item: Any) -> None:
        found: list[weakref.ref] = []
        _batch_tensors(item, found, depth=0)
        alive = [tensor for tensor in (ref() for ref in found) if tensor is not None]
        batch = _Batch(self.epoch, self.batch, found, _labelled_data(alive))
        recent = self._recent
        if recent is None or recent.iterator() is not iterator:
            # Another loader (or a new epoch): its batches are not the earlier ones' read ahead.
            try:
                owner: Callable[[], Any] = weakref.ref(iterator)
            except TypeError:
                owner = _nothing  # never the same iterator again: no read-ahead recognised
            recent = self._recent = _Recent(owner, events_at_first=self._events)
        elif len(recent.batches) == 1 and self._events == recent.events_at_first:
            recent.ahead = True
        recent.batches = [*recent.batches[1 - RECENT :], batch]
        by_address: dict[int, tuple[weakref.ref, _Batch]] = {}
        for kept in recent.batches:
            for ref in kept.tensors:
                tensor = ref()
                address = _address(tensor) if tensor is not None else 0
                if address:  # an empty tensor has no memory to recognise it by
                    by_address[address] = (ref, kept)
        recent.by_address = by_address
        # The data is the latest batch's until a module is seen fed an earlier one; the index
        # is the step's already (a copy on a GPU is never seen fed).
        self._current = batch
        step = recent.batches[-2] if recent.ahead else batch
        self.epoch, self.batch = step.epoch, step.index

    def _make_current(self, batch: _Batch) -> None:
        self._current = batch
        self.epoch, self.batch = batch.epoch, batch.index

    def _exhausted(self, iterator: Any) -> None:
        """The loader has no more batches: a reader one ahead hands out the last it holds."""
        recent = self._recent
        if recent is not None and recent.ahead and recent.iterator() is iterator and recent.batches:
            self._make_current(recent.batches[-1])

    def consumed(self, x: torch.Tensor) -> torch.Tensor | None:
        """An outermost module call is about to be fed ``x``: when it is (a view of) data of a
        recent batch, that batch is the step's, unless a later one has been fed to a module
        already (a stale batch fed again does not take the step back). The labels of ``x``'s rows,
        if its batch has them.

        Runs on every outermost module call: without a loader one test of ``None``, with one a
        storage address and a dict lookup.
        """
        self._events += 1
        recent = self._recent
        if recent is None or not recent.by_address:
            return None
        address = _address(x)
        entry = recent.by_address.get(address) if address else None
        if entry is None:
            return None
        ref, batch = entry
        # The batch tensor is alive, so its address is still its memory (see ``from_loader``).
        if ref() is None:
            return None
        if batch is not self._current and not any(b.consumed for b in recent.batches[recent.batches.index(batch) + 1 :]):
            self._make_current(batch)
        batch.consumed = True
        return _labels_for(x, batch, address)

    def labels_of(self, x: torch.Tensor) -> torch.Tensor | None:
        """The labels of ``x``'s rows, when ``x`` is (a view of) data of the step's batch and has
        as many rows as the batch has labels."""
        batch = self._current
        if batch is None or not batch.labelled:
            return None
        return _labels_for(x, batch, _address(x))

    def from_loader(self, x: Any) -> bool:
        """``x`` is (a view of) a tensor of the step's batch."""
        batch = self._current
        if batch is None or not batch.tensors or not isinstance(x, torch.Tensor) or x.layout != torch.strided:
            return False
        try:
            storage = x.untyped_storage()
            address = storage.data_ptr()
            for ref in batch.tensors:
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
        self._events += 1  # an intercepted call: something was done with the batch
        slots: dict[str, int] = {}
        if self._loss is not None:
            _read_or_queue(self._loss, "loss", known, slots, transfer)
        optimizer = self._optimizer() if self._optimizer is not None else None
        if optimizer is not None and optimizer.param_groups:
            lr = optimizer.param_groups[0].get("lr")
            if isinstance(lr, torch.Tensor):
                _read_or_queue(lr.detach(), "lr", known, slots, transfer)
            elif isinstance(lr, (int, float)):
                known["lr"] = float(lr)
            known["optimizer_steps"] = self.optimizer_steps

        if not slots:
            # Nothing to wait for: no closure (a parked call keeps this until it is summarised,
            # and a dict of numbers is nothing for the garbage collector).
            return functools.partial(_in_order, known)

        def finish() -> dict[str, float]:
            for key, slot in slots.items():
                known[key] = float(transfer[slot][0])
            return _in_order(known)

        return finish


def _read_or_queue(value: torch.Tensor, key: str, known: dict[str, float], slots: dict[str, int], transfer: HostTransfer) -> None:
    """A one-value tensor: read now on the CPU, where that waits for nothing (a transfer would
    cost a stack, a copy and a fetch); queued on ``transfer`` on a device."""
    if value.is_cpu and not value.is_complex():
        known[key] = float(value)
    else:
        slots[key] = transfer.scalars(value.reshape(()))


def _in_order(known: dict[str, float]) -> dict[str, float]:
    """The report and the screen list the keys in this order."""
    return {key: known[key] for key in _ORDER if key in known}


_ORDER = ("epoch", "batch", "loss", "lr", "optimizer_steps")


def _nothing() -> None:
    return None


def _address(x: torch.Tensor) -> int:
    """Where ``x``'s memory starts; 0 when it has none to recognise it by."""
    if x.layout != torch.strided:
        return 0
    try:
        return x.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # functorch-wrapped, meta: no plain storage
        return 0


def _labels_for(x: torch.Tensor, batch: _Batch, address: int) -> torch.Tensor | None:
    entry = batch.labelled.get(address) if address else None
    if entry is None:
        return None
    data, labels = entry
    if data() is None or x.dim() == 0 or x.shape[0] != labels.shape[0]:
        return None
    return labels


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
