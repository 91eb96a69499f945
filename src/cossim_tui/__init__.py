"""cossim-tui: pause a PyTorch training script at every cosine-similarity call and see why it is 1.

``cossim_tui.explain(a, b)`` runs the same diagnosis in-process; ``cossim_tui.probe(a, b)``
marks a pair to inspect. Importing this package does not import torch.
"""

from __future__ import annotations

from typing import Any

from cossim_tui.version import __version__
__all__ = ["explain", "probe", "__version__"]

_probe: Any = None
"""Set by the agent when the script runs under cossim-tui; ``None`` otherwise."""


def probe(a: Any, b: Any, *, dim: int = -1, label: str | None = None) -> None:
    """Show the pair ``a``, ``b`` as a step of its own when running under cossim-tui.

    Without cossim-tui this is one global look-up and a return: leave it in your script.
    The similarity shown is taken over ``dim``; nothing is returned and nothing is changed.
    """
    report = _probe
    if report is not None:
        import sys

        report(a, b, dim, label, sys._getframe(1))


def __getattr__(name: str) -> Any:
    if name in ("explain", "Explanation"):
        from cossim_tui import explanation as module

        return getattr(module, name)
    raise AttributeError(f"module 'cossim_tui' has no attribute {name!r}")
