"""Recognises similarity matrices: products of L2-normalised rows (``F.normalize(a) @ F.normalize(b).T``).

Contrastive losses (SimCLR, CLIP, InfoNCE, MoCo), pytorch-metric-learning's
``CosineSimilarity`` and sentence-transformers' ``cos_sim`` never call a cosine function: they
normalise the rows and multiply. So ``F.normalize`` is wrapped to remember its outputs (by
``id``, with a weak reference, and the input it normalised, for ``made_by``), and the
matrix products (``@``, ``torch.matmul``, ``torch.mm``, their Tensor methods, ``torch.einsum``)
are wrapped to ask, in O(1), whether both operands are such outputs or views of their rows.
A product of anything else (a model's own layers, attention) costs one Python call, one truth
test of a dict and, only once something has been normalised, two dict look-ups: nothing is
read from its tensors.

Only 2-D products of rows normalised along their last dim are steps: ``a @ b.T`` (the
columns of ``b.T`` are rows of a normalised ``b``), ``torch.mm``, and an einsum ``ik,jk->ij``.
"""

from __future__ import annotations

import functools
import os
import sys
import weakref
from collections.abc import Callable
from typing import Any

from cossim_tui.agent import intercept, library
from cossim_tui.agent.call import Intercepted
from cossim_tui.agent.hooks import as_builtin, scriptable

_normalised: dict[int, tuple[weakref.ref, weakref.ref | None]] = {}
"""``id`` of each live output of ``F.normalize`` over its last dim → a weak reference to it
and to the tensor it normalised. The entry goes when the output dies."""

_products: dict[int, tuple[weakref.ref, Any, Any]] = {}
"""``id`` of each live ``a * b`` of two normalised tensors of one shape (BYOL's loss multiplies
the normalised rows and sums along the last dim) → a weak reference to it and to ``a`` and
``b``. The entry goes when the product dies."""

INTERCEPTED = ("products of F.normalize rows (@, mm, matmul, einsum, (a * b).sum(-1))",)
"""What the agent says it intercepts besides the cosine functions (one short entry: the TUI
lists them on one line)."""


def _remember(out: Any, source: Any) -> None:
    key = id(out)

    def forget(ref: weakref.ref) -> None:
        entry = _normalised.get(key)
        if entry is not None and entry[0] is ref:
            _normalised.pop(key, None)

    ref = weakref.ref(out, forget)
    try:
        source_ref = weakref.ref(source)
    except TypeError:
        source_ref = None
    _normalised[key] = (ref, source_ref)


def _marked(t: Any) -> tuple[weakref.ref, weakref.ref | None] | None:
    entry = _normalised.get(id(t))
    if entry is not None and entry[0]() is t:
        return entry
    return None


def _rows(t: Any, columns: bool) -> tuple[Any, Any] | None:
    """``(rows, normalised input)`` when ``t`` holds normalised rows (``columns``: as its columns,
    a transposed view of them), else ``None``: ``t`` itself, or a view of a normalised tensor
    that keeps its last dim whole (a slice of rows, a transpose)."""
    if t.dim() != 2:
        return None
    entry = _marked(t)
    base = t
    if entry is None:
        base = t._base
        if base is None:
            return None
        entry = _marked(base)
        if entry is None:
            return None
    width = base.shape[-1]
    if columns:
        if t.shape[0] != width or (width > 1 and t.stride(0) != base.stride(-1)):
            return None
        rows = base if base is not t and t.shape[1] == base.shape[0] and t.storage_offset() == base.storage_offset() \
            and base.dim() == 2 and t.stride(1) == base.stride(0) else t.t()
    else:
        if t.shape[1] != width or (width > 1 and t.stride(1) != base.stride(-1)):
            return None
        rows = t
    source = entry[1]() if entry[1] is not None else None
    return rows, source


def _einsum_rows(equation: Any, operands: tuple) -> tuple[Any, Any, bool | None] | None:
    """The two operands of ``'ik,jk->ij'`` (any letters; ``'ik,kj->ij'`` too, as columns), or
    of the row-wise ``'nc,nc->n'`` (MoCo's positives), whose third value is ``None``."""
    if not isinstance(equation, str) or len(operands) != 2 or "->" not in equation:
        return None
    inputs, _, output = equation.replace(" ", "").partition("->")
    left, _, right = inputs.partition(",")
    if len(left) != 2 or len(right) != 2:
        return None
    if left == right and output == left[0] and left[0] != left[1]:
        return operands[0], operands[1], None
    if len(output) != 2:
        return None
    shared = left[1]
    if right[1] == shared and output == left[0] + right[0]:
        return operands[0], operands[1], False
    if right[0] == shared and output == left[0] + right[1]:
        return operands[0], operands[1], True
    return None


def _report(function: str, a: Any, b: Any, columns: bool | None, result: Any) -> None:
    """Report the product of ``a`` and ``b`` as a step if both are normalised rows: a matrix,
    or (``columns`` ``None``) row by row, a pair like a cosine call's."""
    sink = intercept._sink
    if sink is None or getattr(intercept._state, "busy", False) or os.getpid() != sink.pid:
        return
    first = _rows(a, False)
    second = _rows(b, bool(columns)) if first is not None else None
    if first is None or second is None:
        return
    if columns is None and first[0].shape != second[0].shape:
        return
    intercept._state.busy = True
    try:
        frame, via = intercept.user_frame(sys._getframe(2))
        # Inside a library's loss (pytorch-metric-learning, sentence-transformers), the user's line
        # that called into it; the sides are named there by the tensors their rows were normalised
        # from, where the library was handed those.
        frame, passage = library.past_libraries(frame, intercept._is_internal, first[1], second[1])
        seen = Intercepted(via or function, ("input", "other"), first[0], second[0], -1, 1e-12, result, None, frame, passage=passage)
        seen.matrix = columns is not None
        seen.made_from = (first[1], second[1])
        sink.on_call(seen)
    finally:
        intercept._state.busy = False


def _wrap_product(original: Callable[..., Any], function: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def product(*args: Any, **kwargs: Any) -> Any:
        # Asked first: while dynamo traces it is a constant, so a compiled graph neither reads
        # nor guards on the set of normalised tensors (which changes every step).
        if intercept._is_compiling():
            return original(*args, **kwargs)
        result = original(*args, **kwargs)
        # Nothing normalised yet (or an odd call): the model's own products stop here.
        if not _normalised or len(args) != 2 or kwargs:
            return result
        a, b = args
        if (id(a) in _normalised or id(getattr(a, "_base", None)) in _normalised) and (
            id(b) in _normalised or id(getattr(b, "_base", None)) in _normalised
        ):
            try:
                _report(function, a, b, True, result)
            except Exception:  # noqa: BLE001 - the script's product went through; we cannot show it
                pass
        return result

    product.__cossim_tui_original__ = original  # type: ignore[attr-defined]
    return product


def _wrap_einsum(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def einsum(*args: Any, **kwargs: Any) -> Any:
        if intercept._is_compiling():
            return original(*args, **kwargs)
        result = original(*args, **kwargs)
        if not _normalised or kwargs or not args:
            return result
        operands = tuple(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
        found = _einsum_rows(args[0], operands)
        if found is not None:
            try:
                _report("einsum", found[0], found[1], found[2], result)
            except Exception:  # noqa: BLE001 - as for a product
                pass
        return result

    einsum.__cossim_tui_original__ = original  # type: ignore[attr-defined]
    return einsum


def _remember_product(out: Any, a: Any, b: Any) -> None:
    key = id(out)

    def forget(ref: weakref.ref) -> None:
        entry = _products.get(key)
        if entry is not None and entry[0] is ref:
            _products.pop(key, None)

    _products[key] = (weakref.ref(out, forget), weakref.ref(a), weakref.ref(b))


def _wrap_mul(original: Callable[..., Any]) -> Callable[..., Any]:
    """``a * b``: remembered when both are normalised rows of one 2-D shape (the sum that
    follows is the step). Anything else costs one truth test of a dict."""

    @functools.wraps(original)
    def mul(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if not _normalised or len(args) != 2 or kwargs or intercept._is_compiling():
            return result
        a, b = args
        try:
            if (
                id(a) in _normalised and id(b) in _normalised
                and a.dim() == 2 and a.shape == b.shape and _marked(a) is not None and _marked(b) is not None
            ):
                _remember_product(result, a, b)
        except Exception:  # noqa: BLE001 - the script's product went through
            pass
        return result

    mul.__cossim_tui_original__ = original  # type: ignore[attr-defined]
    return mul


def _wrap_sum(original: Callable[..., Any]) -> Callable[..., Any]:
    """``(a * b).sum(-1)`` of normalised rows: each row's cosine, a pair step (``kind: pair``)."""

    @functools.wraps(original)
    def total(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if not _products or intercept._is_compiling() or not args:
            return result
        entry = _products.get(id(args[0]))
        if entry is None or entry[0]() is not args[0]:
            return result
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if dim not in (-1, 1, (-1,), (1,), [-1], [1]) or kwargs.get("keepdim", args[2] if len(args) > 2 else False):
            return result
        a, b = entry[1](), entry[2]()
        if a is not None and b is not None:
            try:
                _report("sum of products", a, b, None, result)
            except Exception:  # noqa: BLE001 - as for a product
                pass
        return result

    total.__cossim_tui_original__ = original  # type: ignore[attr-defined]
    return total


def _wrap_normalize(original: Callable[..., Any]) -> Callable[..., Any]:
    # Everything the wrapper uses is a closure variable, not a global of this module: it runs
    # with ``F``'s globals (``hooks.scriptable``).
    agent, remember, busy_state = intercept, _remember, intercept._state

    def normalize(input: Any, p: Any = 2.0, dim: Any = 1, eps: Any = 1e-12, out: Any = None) -> Any:
        if agent._is_compiling():
            return original(input, p, dim, eps, out)
        result = original(input, p, dim, eps, out)
        if out is not None or p != 2:
            return result
        try:
            ndim = result.dim()
            if ndim >= 1 and isinstance(dim, int) and -ndim <= dim < ndim and dim % ndim == ndim - 1 \
                    and not getattr(busy_state, "busy", False):
                remember(result, input)
        except Exception:  # noqa: BLE001 - never worth breaking the script's normalize
            pass
        return result

    return scriptable(normalize, original)


def patch(torch: Any) -> list[str]:
    """Wrap ``F.normalize`` and the matrix products; the names of what is now intercepted."""
    import torch.nn.functional as F

    def original(owner: Any, name: str) -> Any:
        found = getattr(owner, name)
        return getattr(found, "__cossim_tui_original__", found)

    F.normalize = _wrap_normalize(original(F, "normalize"))
    torch.matmul = as_builtin(_wrap_product(original(torch, "matmul"), "matmul"))
    torch.mm = as_builtin(_wrap_product(original(torch, "mm"), "mm"))
    torch.einsum = as_builtin(_wrap_einsum(original(torch, "einsum")))
    tensor = torch.Tensor
    tensor.__matmul__ = _wrap_product(original(tensor, "__matmul__"), "matmul")
    tensor.matmul = _wrap_product(original(tensor, "matmul"), "matmul")
    tensor.mm = _wrap_product(original(tensor, "mm"), "mm")
    torch.mul = as_builtin(_wrap_mul(original(torch, "mul")))
    tensor.__mul__ = _wrap_mul(original(tensor, "__mul__"))
    tensor.mul = _wrap_mul(original(tensor, "mul"))
    torch.sum = as_builtin(_wrap_sum(original(torch, "sum")))
    tensor.sum = _wrap_sum(original(tensor, "sum"))
    return list(INTERCEPTED)
