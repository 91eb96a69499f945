"""cossim-tui's version, in a module of its own: the package's root also offers ``explain``,
which runs the agent, and what only needs the version must not be tied to that."""

__version__ = "0.1.0"
