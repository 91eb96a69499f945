"""What both screens share about a run: its events, its findings, its exit, its settings, its trace.

``headless`` (``check``) and ``tui`` are built on this layer and on nothing of each other's.
No torch, no textual: import-linter's contracts in ``pyproject.toml`` keep it so.
"""
