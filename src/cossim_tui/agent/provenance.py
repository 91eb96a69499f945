"""Which module call made each tensor, and from which input.

Two global module hooks (torch's public ``register_module_forward_pre_hook`` /
``register_module_forward_hook``) watch every module call but only record the outermost
one — ``model(image1)``, not its layers. For each such call we keep, for the last
``KEEP`` calls, where its output's memory lives (a weak reference to the storage, so a
``.detach()`` or a view of the output is recognised too) and a weak reference to its first
tensor input. Nothing is kept alive and no value is read: the work per module call is a few
dict operations, and a lookup happens only at an intercepted cosine call.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from cossim_tui.protocol import ModuleCall

KEEP = 256


@dataclass
class MadeBy:
    call: ModuleCall
    module: weakref.ref
    input: weakref.ref | None
    """The first tensor argument of the call (``image1`` in ``model(image1)``)."""


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


def _storage_key(x: torch.Tensor) -> tuple[int, int] | None:
    if x.layout != torch.strided or x.device.type == "meta":
        return None
    try:
        return x.untyped_storage().data_ptr(), x.storage_offset()
    except (RuntimeError, NotImplementedError):
        return None


class Provenance:
    """Records outermost module calls; answers "who made this tensor?"."""

    def __init__(self, current_step: Any) -> None:
        self._current_step = current_step
        """A callable giving the number of calls intercepted so far (CONTRACT ``made_by.step``)."""
        self._local = threading.local()
        self._calls = 0
        self._by_storage: OrderedDict[tuple[int, int], tuple[weakref.ref, MadeBy]] = OrderedDict()
        self._handles: list[Any] = []

    def install(self) -> None:
        from torch.nn.modules import module

        self._handles = [
            module.register_module_forward_pre_hook(self._before),
            module.register_module_forward_hook(self._after, with_kwargs=True),
        ]

    def _before(self, module: torch.nn.Module, args: tuple) -> None:
        self._local.depth = getattr(self._local, "depth", 0) + 1

    def _after(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        depth = getattr(self._local, "depth", 1)
        self._local.depth = depth - 1
        if depth != 1 or not isinstance(output, torch.Tensor):
            return
        key = _storage_key(output)
        if key is None:
            return
        call = ModuleCall(module=type(module).__name__, call=self._calls, step=self._current_step())
        self._calls += 1
        source = _first_tensor(args, kwargs)
        try:
            made = MadeBy(call, weakref.ref(module), weakref.ref(source) if source is not None else None)
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


def identical_inputs(first: MadeBy | None, second: MadeBy | None) -> str | None:
    """``"VGG from the same input tensor"`` when one module made both vectors from equal inputs.

    Only when both inputs are still alive (the script holds them at the cosine call, as in
    ``cos(model(x1), model(x2))``); then the comparison is exact.
    """
    if first is None or second is None or first.call.call == second.call.call:
        return None
    module = first.module()
    if module is None or module is not second.module():
        return None
    a = first.input() if first.input is not None else None
    b = second.input() if second.input is not None else None
    if a is None or b is None:
        return None
    name = first.call.module
    if a is b:
        return f"{name} from the same input tensor"
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device or a.layout != torch.strided:
        return None
    with torch.no_grad():
        if torch.equal(a, b):
            return f"{name} from inputs with equal values"
    return None
