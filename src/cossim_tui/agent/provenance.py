"""Which module call made each tensor, and from which input.

``nn.Module.__call__`` is wrapped once, for every module, but only the outermost call is
recorded — ``model(image1)``, not its layers. A call inside another costs one Python frame
and one flag check; torch's global module hooks would cost more, and would turn off the fast
path torch takes for every module call of the script when no hook is registered.

The output may be a tensor or a container of them (a tuple, list, dict, dataclass or
``ModelOutput``): each tensor inside is recorded as made by the call. A wrapper
(``DataParallel``, ``DistributedDataParallel``, FSDP, ``torch.compile``'s ``OptimizedModule``)
is named by the module it wraps, and calls are numbered per module instance, so a loss module
called between two ``model(x)`` does not shift their numbers.

For the tensors of the last ``KEEP`` outputs we keep where their memory lives (a weak reference
to the storage, so a ``.detach()`` or a view of the output is recognised too) and a weak
reference to the call's first tensor input. When that input is data of a recent DataLoader
batch and the batch has labels, the record keeps the labels too, so that a vector carries the
labels of the batch it was made from even when it is used as a stale partner steps later. The
input is handed to the training context before the call runs, so that a loader that reads
ahead still has the step's batch be the one the model consumes (``TrainingContext.consumed``).
Nothing else is kept alive and no value is read: the work per outermost call is a few dict
operations, and a lookup happens only at an intercepted cosine call.
"""

from __future__ import annotations

import functools
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from cossim_tui.agent.transfer import HostTransfer
from cossim_tui.protocol import ModuleCall

KEEP = 1024
"""Output tensors remembered: a few hundred calls of a model returning a few tensors each."""

COUNTED = 4096
"""Module instances whose calls are counted before the dead ones are dropped."""

TENSORS_PER_OUTPUT = 32
"""At most this many tensors of one output are recorded (a model returning every hidden state
has its first ones recorded, its embeddings among them)."""

WRAPPERS = {
    "DataParallel": "module",
    "DistributedDataParallel": "module",
    "FullyShardedDataParallel": "module",
    "OptimizedModule": "_orig_mod",
}
"""Module classes that only run another module, and the attribute holding it: by class name, so
that recognising them imports nothing (FSDP's module pulls in torch.distributed)."""


@dataclass
class MadeBy:
    """One outermost module call; every tensor of its output shares this record."""

    call: ModuleCall
    module: weakref.ref
    """The module that ran (the wrapped one, for a wrapper)."""
    input: weakref.ref | None
    """The first tensor argument of the call (``image1`` in ``model(image1)``)."""
    labels: torch.Tensor | None = None
    """The labels of the input's rows, when the input was a labelled DataLoader batch (a strong
    reference: a few integers, which must outlive the batch for a stale partner's sake)."""


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The first tensor argument, or the first tensor of the first container argument
    (``model(features)`` with ``features`` a dict of tensors, as sentence-transformers calls)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, Mapping):  # a dict, or transformers' BatchEncoding
            value = tuple(value.values())
        if isinstance(value, (tuple, list)):
            for item in value[:8]:
                if isinstance(item, torch.Tensor):
                    return item
    return None


def _tensors_in(output: Any, found: list[torch.Tensor], depth: int = 0) -> None:
    """The tensors of a module's output: itself, or inside tuples, lists, dicts (``ModelOutput``
    is one), other mappings and dataclasses, two levels deep."""
    if isinstance(output, torch.Tensor):
        if len(found) < TENSORS_PER_OUTPUT:
            found.append(output)
        return
    if depth >= 2 or len(found) >= TENSORS_PER_OUTPUT:
        return
    if isinstance(output, dict):
        values: Any = output.values()
    elif isinstance(output, (tuple, list)):
        values = output
    elif isinstance(output, Mapping):  # transformers' BatchEncoding, which sentence-transformers returns
        values = output.values()
    elif hasattr(type(output), "__dataclass_fields__") and not isinstance(output, type):
        values = [getattr(output, name, None) for name in type(output).__dataclass_fields__]
    else:
        return
    for value in values:
        _tensors_in(value, found, depth + 1)


def inner_module(module: torch.nn.Module) -> torch.nn.Module:
    """The module a wrapper runs (``DataParallel(model).module``), through nested wrappers."""
    for _ in range(4):
        attribute = WRAPPERS.get(type(module).__name__)
        inner = getattr(module, attribute, None) if attribute is not None else None
        if not isinstance(inner, torch.nn.Module):
            return module
        module = inner
    return module


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


_see_through: dict[type, bool] = {}


def runs_the_model(module_class: type) -> bool:
    """Whether a module class is an installed library's loss (``CosineSimilarityLoss(model)``
    of sentence-transformers runs the model on the features it is given): the module calls it
    makes itself are recorded as outermost, since the user's ``loss_fn(features, labels)`` is
    the only call the script makes. torch's own losses call no model."""
    known = _see_through.get(module_class)
    if known is None:
        from cossim_tui.agent import library

        name = getattr(module_class, "__module__", "") or ""
        path = getattr(sys.modules.get(name), "__file__", None) or ""
        parts = name.lower().split(".")
        known = (
            not name.startswith("torch.")
            and bool(path)
            and library.is_library(path)
            and (module_class.__name__.endswith("Loss") or "loss" in parts or "losses" in parts)
        )
        _see_through[module_class] = known
    return known


class Provenance:
    """Records outermost module calls; answers "who made this tensor?"."""

    def __init__(self, current_step: Any, consumed: Callable[[torch.Tensor], torch.Tensor | None] | None = None) -> None:
        self._current_step = current_step
        """A callable giving the number of calls intercepted so far (CONTRACT ``made_by.step``)."""
        self._consumed = consumed
        """Told each outermost call's input before the call runs; gives the labels of its rows,
        if any (``TrainingContext.consumed``)."""
        self._calls: dict[int, list[Any]] = {}
        """Outermost calls so far, per module instance: id -> [weak reference, count] (a plain
        dict and a count bumped in place: no new weak reference per call)."""
        self._by_storage: OrderedDict[tuple[int, int], tuple[weakref.ref, MadeBy]] = OrderedDict()

    def install(self) -> None:
        module_class = torch.nn.Module
        original = module_class.__call__
        inside = _Inside()
        is_compiling = torch.compiler.is_compiling
        record = self._record
        current_step = self._current_step
        consumed = self._consumed

        @functools.wraps(original)
        def call(module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
            if inside.module_call or is_compiling():
                return original(module, *args, **kwargs)
            # A library's loss that runs the model: its own module calls are the outermost ones.
            inside.module_call = not runs_the_model(type(module))
            step = current_step()
            source = _first_tensor(args, kwargs)
            labels = consumed(source) if source is not None and consumed is not None else None
            try:
                output = original(module, *args, **kwargs)
            finally:
                inside.module_call = False
            record(module, source, labels, output, step)
            return output

        module_class.__call__ = call  # type: ignore[method-assign]

    def _record(self, module: torch.nn.Module, source: torch.Tensor | None, labels: Any, output: Any, step: int) -> None:
        module = inner_module(module)
        counted = self._calls.get(id(module))
        if counted is None or counted[0]() is not module:
            try:
                counted = [weakref.ref(module), 0]
            except TypeError:  # a module that cannot be weakly referenced: nothing to recognise it by
                return
            if len(self._calls) >= COUNTED:
                # Modules made and dropped every step (a loss built in the loop) leave dead entries.
                self._calls = {key: value for key, value in self._calls.items() if value[0]() is not None}
            self._calls[id(module)] = counted
        number = counted[1]
        counted[1] = number + 1
        outputs: list[torch.Tensor] = []
        _tensors_in(output, outputs)
        if not outputs:
            return
        call = ModuleCall(module=type(module).__name__, call=number, step=step)
        try:
            made = MadeBy(call, weakref.ref(module), weakref.ref(source) if source is not None else None, labels)
        except TypeError:
            return
        by_storage = self._by_storage
        for tensor in outputs:
            key = _storage_key(tensor)
            if key is None:
                continue
            try:
                by_storage[key] = (weakref.ref(tensor.untyped_storage()), made)
            except TypeError:
                continue
            by_storage.move_to_end(key)
        while len(by_storage) > KEEP:
            by_storage.popitem(last=False)

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

    @classmethod
    def of(cls, first: MadeBy | None, second: MadeBy | None, transfer: HostTransfer) -> PendingIdenticalInputs:
        """The question for a call's two vectors; where no one module call made each of them,
        the one answer ``None``, shared."""
        if first is None or second is None or first is second:
            return _NO_TWO_INPUTS  # one call made both, or not two: no two inputs to compare
        return cls(first, second, transfer)

    def __init__(self, first: MadeBy | None, second: MadeBy | None, transfer: HostTransfer | None) -> None:
        self.answer: str | None = None
        self.equal_slot: int | None = None
        if first is None or second is None or first is second:
            return  # one call made both: there were not two inputs to compare
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


_NO_TWO_INPUTS = PendingIdenticalInputs(None, None, None)
