"""cossim-tui: pause a PyTorch training script at every cosine-similarity call and see why it is 1.

``cossim_tui.explain(a, b)`` runs the same diagnosis in-process. Importing this package does
not import torch; ``explain`` loads it on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["explain", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("explain", "Explanation"):
        from cossim_tui import explanation as module

        return getattr(module, name)
    raise AttributeError(f"module 'cossim_tui' has no attribute {name!r}")
