"""cossim-tui: pause a PyTorch training script at every cosine-similarity call and see why it is 1."""

from __future__ import annotations

__version__ = "0.1.0"
