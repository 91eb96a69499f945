"""Which module call made each tensor, and from which input.

``nn.Module.__call__`` is wrapped once, for every module, but only the outermost call is
recorded — ``model(image1)``, not its layers. A call inside another costs one Python frame
and one flag check; torch's global module hooks would cost more, and would turn off the fast
path torch takes for every module call of the script when no hook is registered. For each
recorded call we keep, for the last ``KEEP`` calls, where its output's memory lives (a weak
reference to the storage, so a ``.detach()`` or a view of the output is recognised too) and a
weak reference to its first tensor input. When that input is data of the DataLoader's last
batch and the batch has labels, the record keeps the labels too, so that a vector carries the
labels of the batch it was made from even when it is used as a stale partner steps later.
Nothing else is kept alive and no value is read: the work per outermost call is a few dict
operations, and a lookup happens only at an intercepted cosine call.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from cossim_tui.agent.transfer import HostTransfer
from cossim_tui.protocol import ModuleCall

KEEP = 256


@dataclass
class MadeBy:
    call: ModuleCall
    module: weakref.ref
    input: weakref.ref | None
    """The first tensor argument of the call (``image1`` in ``model(image1)``)."""
    labels: torch.Tensor | None = None
    """The labels of the input's rows, when the input was a labelled DataLoader batch (a strong
    reference: a few integers, which must outlive the batch for a stale partner's sake)."""


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


def _storage_key(x: torch.Tensor) -> tuple[int, int] | None:
    if x.layout != torch.strided or x.is_meta:
        return None
    try:
        return x.untyped_storage().data_ptr(), x.storage_offset()
    except (RuntimeError, NotImplementedError):
        return None


class _Inside(threading.local):
    module_call = False
    """A module call is running on this thread: the calls it makes are not outermost."""


class Provenance:
    """Records outermost module calls; answers "who made this tensor?"."""

    def __init__(self, current_step: Any, labels_of: Callable[[torch.Tensor], torch.Tensor | None] | None = None) -> None:
        self._current_step = current_step
        """A callable giving the number of calls intercepted so far (CONTRACT ``made_by.step``)."""
        self._labels_of = labels_of
        """The labels of a module's input's rows, if any (``TrainingContext.labels_of``)."""
        self._calls = 0
        self._by_storage: OrderedDict[tuple[int, int], tuple[weakref.ref, MadeBy]] = OrderedDict()
        self._original_call: Any = None

    def install(self) -> None:
        module_class = torch.nn.Module
        original = module_class.__call__
        inside = _Inside()
        is_compiling = torch.compiler.is_compiling
        record = self._record
        current_step = self._current_step

        @functools.wraps(original)
        def call(module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
            if inside.module_call or is_compiling():
                return original(module, *args, **kwargs)
            inside.module_call = True
            step = current_step()
            try:
                output = original(module, *args, **kwargs)
            finally:
                inside.module_call = False
            record(module, args, kwargs, output, step)
            return output

        self._original_call = original
        module_class.__call__ = call  # type: ignore[method-assign]

    def _record(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any, step: int) -> None:
        if not isinstance(output, torch.Tensor):
            return
        key = _storage_key(output)
        if key is None:
            return
        call = ModuleCall(module=type(module).__name__, call=self._calls, step=step)
        self._calls += 1
        source = _first_tensor(args, kwargs)
        labels = self._labels_of(source) if source is not None and self._labels_of is not None else None
        try:
            made = MadeBy(call, weakref.ref(module), weakref.ref(source) if source is not None else None, labels)
            self._by_storage[key] = (weakref.ref(output.untyped_storage()), made)
        except TypeError:
            return
        self._by_storage.move_to_end(key)
        while len(self._by_storage) > KEEP:
            self._by_storage.popitem(last=False)

    def made_by(self, x: Any) -> MadeBy | None:
        if not isinstance(x, torch.Tensor):
            return None
        key = _storage_key(x)
        entry = self._by_storage.get(key) if key is not None else None
        if entry is None:
            return None
        storage, made = entry
        # The address may have been freed and reused by an unrelated tensor: the storage
        # object itself must be the one the module's output had.
        if storage() is not x.untyped_storage():
            return None
        return made


class PendingIdenticalInputs:
    """Whether one module made both vectors from equal inputs, with the comparison queued on a
    transfer; ``finish()`` after its fetch."""

    def __init__(self, first: MadeBy | None, second: MadeBy | None, transfer: HostTransfer) -> None:
        self.answer: str | None = None
        self.equal_slot: int | None = None
        if first is None or second is None or first.call.call == second.call.call:
            return
        module = first.module()
        if module is None or module is not second.module():
            return
        a = first.input() if first.input is not None else None
        b = second.input() if second.input is not None else None
        if a is None or b is None:
            return
        self.name = first.call.module
        if a is b:
            self.answer = f"{self.name} from the same input tensor"
            return
        if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device or a.layout != torch.strided:
            return
        with torch.no_grad():
            self.equal_slot = transfer.scalars(torch.eq(a, b).all())

    def finish(self, transfer: HostTransfer) -> str | None:
        if self.equal_slot is not None and transfer[self.equal_slot][0]:
            return f"{self.name} from inputs with equal values"
        return self.answer
