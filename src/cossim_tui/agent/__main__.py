"""``python -m cossim_tui.agent SCRIPT ARGS``: how the launcher starts the user's script."""

from cossim_tui.agent.bootstrap import main

main()
