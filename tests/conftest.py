"""The tests' shared helpers (``waiting``, ``builders``, ``agent_harness``) live next to this file;
pytest puts this directory on ``sys.path`` for it, so every test directory imports them the same
way, whichever of them is run alone."""
