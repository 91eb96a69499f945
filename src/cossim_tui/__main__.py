"""``python -m cossim_tui`` is the same as the ``cossim-tui`` command."""

from __future__ import annotations

from cossim_tui.cli import command

raise SystemExit(command())
