"""Recording a run to a trace file, as it happens.

A trace (CONTRACT ``cossim-tui/trace/1``) is JSON Lines: a header, then one line per event of
the run exactly as the run produced it (the agent's messages, the script's output, channel
problems) and, last, how the run ended. Each event line is the event's body in the protocol's
one codec: what the wire carried, byte for byte. ``TraceWriter`` writes each event through
to the file and flushes it at once, so a crash of the script or of cossim-tui itself loses
nothing already seen, and a long run costs no memory. ``RecordingSource`` tees a live run
into a writer on its way to whoever reads it; the screen never sees the writer.

Reading is ``replay``'s. No torch, no textual.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import threading
from collections.abc import Iterator
from typing import IO

from msgspec import Struct

from cossim_tui.protocol import encode_body
from cossim_tui.session.events import (
    ChannelProblem,
    Command,
    EventSource,
    RunEvent,
    Target,
)
from cossim_tui.version import __version__

SCHEMA = "cossim-tui/trace/1"


class TraceError(Exception):
    """A file that cannot be replayed, or one line of it that is not a valid event."""


class TraceHeader(Struct, kw_only=True, tag_field="kind", tag="header"):
    """The first line of a trace: what was run, and by which versions."""

    schema: str = SCHEMA
    script: str
    """What the user asked to run (``train.py``, ``-m pkg.train``)."""
    argv: list[str]
    versions: dict[str, str]


def _versions(screen: str | None = None) -> dict[str, str]:
    versions = {"cossim-tui": __version__, "python": platform.python_version()}
    # torch is the script's to import (its version arrives in the torch-hooked event); the
    # package that shows the run (textual) is named only where this process shows a screen,
    # and never imported for it: the app may not have loaded it yet when the trace opens.
    if screen is not None:
        version = getattr(sys.modules.get(screen), "__version__", None)
        if not isinstance(version, str):
            try:
                from importlib.metadata import PackageNotFoundError
                from importlib.metadata import version as installed_version

                version = installed_version(screen)
            except (ImportError, PackageNotFoundError, ValueError):
                version = None
        if isinstance(version, str):
            versions[screen] = version
    return versions


class TraceWriter:
    """``TraceWriter(path, target)`` writes the header now, then every event given to ``write``.

    Opening raises ``OSError`` (nothing has run yet, so the caller can refuse to start). A
    failure later, say a full disk, must not end the user's run: ``write`` returns the reason
    once, ``error`` keeps it, and the writer stops. Thread-safe, so closing from another thread
    cannot interleave with a write.
    """

    def __init__(self, path: str | os.PathLike[str], target: Target, *, screen: str | None = None) -> None:
        self.path = os.fspath(path)
        self.error: str | None = None
        """Why recording stopped early; ``None`` while it works."""
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = open(self.path, "wb")
        header = TraceHeader(script=target.name, argv=target.argv, versions=_versions(screen))
        try:
            self._put(header)
        except (OSError, ValueError):
            self.close()
            raise

    def write(self, event: RunEvent) -> str | None:
        """Append ``event`` and flush it.

        ``None`` when it was written, or when recording had already stopped; the reason, once,
        when this very write failed (the writer closes itself then).
        """
        with self._lock:
            if self._file is None:
                return None
            try:
                self._put(event)
            except (OSError, ValueError, TypeError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                self._close()
                return f"recording to {self.path} stopped: {self.error}"
            return None

    def _put(self, record: Struct) -> None:
        assert self._file is not None
        self._file.write(encode_body(record) + b"\n")
        self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError as exc:
                self.error = self.error or f"{type(exc).__name__}: {exc}"

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_recording(path: str | os.PathLike[str], target: Target, *, screen: str | None = None) -> TraceWriter:
    """A writer for ``--record PATH``, before anything runs; ``TraceError`` says in one line why
    not. ``screen``: the package that shows the run (``textual``), named in the header."""
    name = os.fspath(path)
    if target.script is not None and os.path.exists(name) and os.path.samefile(name, target.script):
        raise TraceError(f"--record {name} would overwrite the script itself")
    try:
        return TraceWriter(name, target, screen=screen)
    except OSError as exc:
        raise TraceError(f"cannot write the trace {name}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def recording(path: str | os.PathLike[str] | None, target: Target, *, screen: str | None = None) -> Iterator[TraceWriter | None]:
    """The writer for ``--record PATH`` (``None`` without it), closed when the run is over.

    ``TraceError`` comes only from opening it, before anything runs.
    """
    writer = start_recording(path, target, screen=screen) if path else None
    try:
        yield writer
    finally:
        if writer is not None:
            writer.close()


class RecordingSource:
    """Wraps an event source (a live ``launcher.Run``): every event is written, then passed on.

    It is itself an ``EventSource``, so the app is handed it instead of the run and never
    knows a recording exists. If the recording fails, the reader is told once, as a
    ``ChannelProblem``, and the run goes on unrecorded.
    """

    def __init__(self, source: EventSource, writer: TraceWriter) -> None:
        self.source = source
        self.writer = writer

    @property
    def target_name(self) -> str:
        return self.source.target_name

    def events(self) -> Iterator[RunEvent]:
        try:
            for event in self.source.events():
                failure = self.writer.write(event)
                if failure is not None:
                    yield ChannelProblem(failure)
                yield event
        finally:
            self.writer.close()

    def send(self, message: Command) -> None:
        self.source.send(message)

    def terminate(self) -> None:
        self.source.terminate()
