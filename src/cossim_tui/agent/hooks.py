"""How the agent enters torch without changing what it does: code run as a module is imported,
and wrappers that TorchScript still compiles.

``when_imported`` runs a callback on a module as soon as it is loaded, before the importer sees
it (so ``from torch import cosine_similarity`` binds the wrapper): a finder placed first on
``sys.meta_path`` that lets the real finder load the module. A scripted function
(``torch.jit.script``) that calls a wrapped function must compile as it does under python:
``as_builtin`` registers a builtin's wrapper as its aten op, and ``scriptable`` makes a Python
function's wrapper compile as the original.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable
from typing import Any


class _PostImportHook(importlib.abc.MetaPathFinder):
    """Lets the real finder load each named module, then runs its callback before the
    importer sees the module (so ``from torch import cosine_similarity`` binds our wrapper)."""

    def __init__(self) -> None:
        self.pending: dict[str, list[Callable[[types.ModuleType], None]]] = {}

    def add(self, name: str, callback: Callable[[types.ModuleType], None]) -> None:
        self.pending.setdefault(name, []).append(callback)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        callbacks = self.pending.pop(fullname, None)
        if callbacks is None:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_and_patch(module: types.ModuleType) -> None:
            exec_module(module)
            for callback in callbacks:
                callback(module)

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


_hook = _PostImportHook()


def when_imported(name: str, callback: Callable[[types.ModuleType], None]) -> None:
    """Run ``callback`` on the module ``name`` now if it is loaded, else as soon as it is."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    if _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)
    _hook.add(name, callback)


_registered: list[Any] = []
"""Wrappers registered as TorchScript builtins: the table is keyed by id, which must stay theirs."""


def as_builtin(wrapper: Any) -> Any:
    """TorchScript compiles a call to a torch builtin (``torch.matmul``, ``F.cosine_similarity``)
    in a scripted function as its aten op, found by the function's identity: the wrapper is
    registered as the same op, or scripting would try (and fail) to compile the wrapper itself.
    In scripted code the op then runs as TorchScript runs it, unseen, like compiled code."""
    try:
        from torch.jit import _builtins

        op = _builtins._find_builtin(wrapper.__cossim_tui_original__)
        if op is not None:
            _builtins._register_builtin(wrapper, op)
            _registered.append(wrapper)
    except Exception:  # noqa: BLE001 - (a torch without this table): eager code is unaffected
        pass
    return wrapper


def scriptable(wrapper: Any, original: Any) -> Any:
    """``wrapper`` of a Python function of torch's (``F.normalize``), made so that TorchScript
    can still compile a scripted function that calls it: it compiles the original's source
    (``__wrapped__``), resolving its names in the wrapper's globals and closure, so the wrapper
    runs with the original's globals and takes everything of ours from its closure. In scripted
    code the original then runs, unseen, like compiled code."""
    made = types.FunctionType(wrapper.__code__, original.__globals__, wrapper.__name__, wrapper.__defaults__, wrapper.__closure__)
    made.__kwdefaults__ = wrapper.__kwdefaults__
    functools.update_wrapper(made, original)
    made.__cossim_tui_original__ = original  # type: ignore[attr-defined]
    return made
