"""From the command line's options to the agent's settings, for each way of running.

The TUI starts the script paused at its first call and pictures what it shows; ``check``
runs it freely and pictures only what a trace will replay.
"""

from __future__ import annotations

from typing import Any

from cossim_tui.protocol import AgentConfig


def interactive_config(options: Any) -> AgentConfig:
    """``cossim-tui [OPTIONS] SCRIPT``: paused at the first call; ``continue`` stops at ``--break-on``."""
    return AgentConfig(
        mode="step",
        break_on=list(options.break_on),
        ignore=list(options.ignore),
        watch=list(options.watch),
        pictures="paced",
    )


def check_config(options: Any) -> AgentConfig:
    """``cossim-tui check``: never stops; pictures only for a trace (``--record``), which the
    app replays with them."""
    return AgentConfig(
        mode="run",
        break_on=["never"],
        ignore=list(options.ignore),
        watch=list(options.watch),
        max_steps=options.max_steps,
        pictures="paced" if options.record else "none",
    )
