"""The user's line first: a cosine call made inside an installed library is placed at the line
of the user's code that called into the library.

lightly's ``NegativeCosineSimilarity`` or sentence-transformers' ``CosineSimilarityLoss`` call
``cosine_similarity`` on their own line with their own names (``x0``, ``embeddings[0]``); what
the user wrote, and can fix, is ``criterion(z0, p1)``. So the frames of installed packages
(site-packages, dist-packages, the standard library) are walked past like torch's own, up to the
first frame of the user's code, and the library function that made the call is kept as ``via``
(``lightly.loss.negative_cosine_similarity:NegativeCosineSimilarity.forward``: the
``--watch`` spelling). Where the library passed the user's tensors through unchanged, they are
named by the user's expressions: the function the user called is read for the parameter that
holds the very tensor that was compared (identity, never equality), and that parameter's
argument in the user's call is its name.

Nothing here runs for a call made directly in the user's code: the first frame outside torch
is then the user's, and it is not a library's.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import types
from collections.abc import Callable
from typing import Any

_VARARGS = 0x04

_library_dirs: tuple[str, ...] | None = None
_script_root: str | None = None
_kinds: dict[str, bool] = {}
"""Per file name: whether it is a library's."""


def _installed_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    found = {paths.get(key) for key in ("purelib", "platlib", "stdlib", "platstdlib")}
    import site

    # An old virtualenv's site module lacks these; its paths are then sysconfig's above.
    found.update(getattr(site, "getsitepackages", list)())
    user = getattr(site, "getusersitepackages", None)
    found.add(user() if user is not None else None)
    return tuple(sorted(os.path.realpath(p) + os.sep for p in found if p))


def _root_of_main() -> str | None:
    """The script's own tree: its directory, or for ``-m PACKAGE.MODULE`` the folder above the
    top package, so that an installed package run as the script is the user's code."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:
        return None
    folder = os.path.dirname(os.path.realpath(path))
    if getattr(main, "__spec__", None) is not None:
        while os.path.exists(os.path.join(folder, "__init__.py")):
            folder = os.path.dirname(folder)
    return folder + os.sep


def is_library(filename: str) -> bool:
    """Whether code in ``filename`` belongs to an installed package rather than to the user."""
    known = _kinds.get(filename)
    if known is not None:
        return known
    global _library_dirs, _script_root
    if _library_dirs is None:
        _library_dirs = _installed_dirs()
        _script_root = _root_of_main()
    if filename.startswith("<frozen "):
        kind = True
    elif filename.startswith("<"):
        kind = False
    else:
        path = os.path.realpath(filename)
        parts = path.split(os.sep)
        installed = "site-packages" in parts or "dist-packages" in parts or path.startswith(_library_dirs)
        # The script's own tree is the user's even where it lies among installed packages, but a
        # library installed inside it (a virtual environment in the project folder) is not.
        inside = _script_root is not None and path.startswith(_script_root)
        kind = installed and not (inside and not _installed_below(path, _script_root))
    if len(_kinds) < 65536:
        _kinds[filename] = kind
    return kind


def _installed_below(path: str, root: str | None) -> bool:
    below = path[len(root or "") :].split(os.sep)
    return "site-packages" in below or "dist-packages" in below


def _function_name(frame: types.FrameType) -> str:
    code = frame.f_code
    module = frame.f_globals.get("__name__") or os.path.basename(code.co_filename)
    return f"{module}:{getattr(code, 'co_qualname', code.co_name)}"


Argument = tuple[int | None, str | None]
"""An argument of the user's call: its position, and the name of the parameter it fills."""


class Passage:
    """How a call inside a library reached it from the user's frame: the library function that
    made the call (``via``) and, for each compared tensor, which argument of the user's call it
    is (its position and its parameter's name, or ``None`` when the library made it itself)."""

    __slots__ = ("inner", "through", "via")

    def __init__(self, via: str, through: tuple[Argument | None, Argument | None], inner: types.FrameType) -> None:
        self.via, self.through = via, through
        self.inner = inner
        """The library's frame that made the call: its names stand in where the user's cannot."""


def past_libraries(
    frame: types.FrameType | None, skip: Callable[[str], bool], x1: Any, x2: Any
) -> tuple[types.FrameType | None, Passage | None]:
    """From the first frame outside torch (``frame``), the first of the user's code, and how the
    call got there; ``frame`` itself, and no passage, when it is the user's already (or when
    nothing above the library is)."""
    if frame is None or not is_library(frame.f_code.co_filename):
        return frame, None
    inner = frame
    entry = frame
    current: types.FrameType | None = frame
    while current is not None:
        filename = current.f_code.co_filename
        if skip(filename):
            current = current.f_back
            continue
        if not is_library(filename):
            break
        entry = current
        current = current.f_back
    if current is None:
        return frame, None
    return current, Passage(_function_name(inner), (_argument_of(entry, x1), _argument_of(entry, x2)), inner)


def _argument_of(entry: types.FrameType, tensor: Any) -> Argument | None:
    """Which argument of the user's call into ``entry`` (the library function it called, a
    bound method's ``self`` aside) holds ``tensor`` still: its position among the positional
    parameters (``None`` for a keyword-only one) and its parameter's name, which the user may
    have passed it by."""
    if tensor is None:
        return None
    code = entry.f_code
    count = code.co_argcount
    names = code.co_varnames[: count + code.co_kwonlyargcount]
    values = entry.f_locals
    method = count > 0 and names[0] in ("self", "cls")
    positional = names[int(method) : count]
    for index, name in enumerate(positional):
        if values.get(name) is tensor:
            return index, name
    for name in names[count:]:
        if values.get(name) is tensor:
            return None, name
    if code.co_flags & _VARARGS:
        extra = values.get(code.co_varnames[count + code.co_kwonlyargcount])
        for index, value in enumerate(extra or ()):
            if value is tensor:
                return len(positional) + index, None
    return None
