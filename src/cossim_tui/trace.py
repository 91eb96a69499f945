"""Recording a run to a trace file and replaying it later, with no script running.

A trace (CONTRACT ``cossim-tui/trace/1``) is JSON Lines: a header, then one line per event of
the run exactly as ``launcher.Run.events()`` produced it (protocol messages, the script's
output, channel problems) and, last, how the run ended. ``TraceWriter`` writes each event
through to the file and flushes it at once, so a crash of the script or of cossim-tui itself
loses nothing already seen, and a long run costs no memory. ``RecordingSource`` tees a live run into a
writer on its way to whoever reads it; the app never sees the writer.

Reading is the other half and trusts nothing: a trace is a file someone hands you. Every line
is parsed as plain JSON (no pickle, no ``torch.load``, nothing executed) and validated through
the protocol's own decoder; a line that fails becomes a ``ChannelProblem`` naming its line
number, never an exception. Lines are capped in length and malformed lines in number, so a
hostile or binary file ends the replay with a clear reason instead of hanging it. Whatever the
file holds, the events end with exactly one ``ScriptExited``: the recorded one, or one saying
that the trace stops before the run did.

Standard library only (and the launcher's plain event types): neither torch nor textual.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from cossim_tui import __version__, protocol
from cossim_tui.launcher import ChannelProblem, Event, OutputReceived, ScriptExited, Target

SCHEMA = "cossim-tui/trace/1"

MAX_LINE = 16 * 1024 * 1024
"""Bytes in one line. An honest step is at most a protocol frame (8 MiB); longer means garbage."""
MAX_PROBLEMS = 100
"""Malformed lines tolerated before the rest of a trace is given up on as not a trace."""
MAX_HELD = 10_000
"""Events the replay keeps while it looks ahead for a later step (see ``TraceSource.events``)."""
_HELD_TEXT = 16 * 1024 * 1024
"""Characters of output the replay keeps while it looks ahead."""
_REASON_CHARS = 300
"""A hostile line can make a validation message as long as itself; the screen needs a sentence."""

CUT_SHORT = "the trace ends before the run did (the recording was cut short)"
UNREADABLE = "the rest of the trace could not be read"

RunEvent = Event
"""One event of a run, as ``launcher.Run.events()`` yields it (``tui.source.RunEvent``)."""

COMMAND_KINDS = frozenset({"resume", "pause", "mute", "set-break", "start"})
"""Protocol messages that go from the app (or the launcher) to the script: never part of a
run's events, so a trace line of one of these kinds is refused. Every other message kind is
replayed, so that a message the agent gains later is recorded and replayed without a change
here."""
_LAUNCHER_KINDS: dict[type, str] = {OutputReceived: "output", ChannelProblem: "channel-problem", ScriptExited: "exited"}
_EVENT_TYPES: dict[str, type] = {
    **{kind: cls for kind, cls in protocol.MESSAGE_TYPES.items() if kind not in COMMAND_KINDS},
    **{kind: cls for cls, kind in _LAUNCHER_KINDS.items()},
}


class TraceError(Exception):
    """A file that cannot be replayed, or one line of it that is not a valid event."""


@dataclass
class TraceHeader:
    """The first line of a trace: what was run, and by which versions."""

    script: str
    """What the user asked to run (``train.py``, ``-m pkg.train``)."""
    argv: list[str]
    versions: dict[str, str]


@dataclass
class Trace:
    """A whole trace read into memory (``read_trace``): for tests and small tools."""

    header: TraceHeader
    events: list[RunEvent]

    @property
    def steps(self) -> list[protocol.StepCaptured]:
        return [e for e in self.events if isinstance(e, protocol.StepCaptured)]

    @property
    def exited(self) -> ScriptExited:
        last = self.events[-1]
        assert isinstance(last, ScriptExited)
        return last


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


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


def event_to_jsonable(event: RunEvent) -> dict[str, Any]:
    """One event as a trace line's JSON object, ``kind`` first."""
    if isinstance(event, protocol.Message):
        kind = event.kind
    else:
        kind = _LAUNCHER_KINDS.get(type(event), "")
    if not kind:
        raise TypeError(f"not a run event: {type(event).__name__}")
    return {"kind": kind, **protocol.to_jsonable(event)}


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
        self._file: IO[str] | None = open(self.path, "w", encoding="utf-8", newline="\n")
        header = {"schema": SCHEMA, "kind": "header", "script": target.name, "argv": target.argv, "versions": _versions(screen)}
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
                self._put(event_to_jsonable(event))
            except (OSError, ValueError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                self._close()
                return f"recording to {self.path} stopped: {self.error}"
            return None

    def _put(self, body: dict[str, Any]) -> None:
        assert self._file is not None
        # ensure_ascii: a lone surrogate in some string cannot make the line unwritable. NaN and
        # Infinity stay as Python's json writes them, as on the protocol's wire: a non-finite
        # similarity is exactly what the user needs to see again.
        self._file.write(json.dumps(body, separators=(",", ":")) + "\n")
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


class _Source(Protocol):
    """``tui.source.EventSource``, restated so that this module needs nothing from ``tui``."""

    @property
    def target_name(self) -> str: ...

    def events(self) -> Iterator[Any]: ...

    def send(self, message: Any) -> None: ...

    def terminate(self) -> None: ...


class RecordingSource:
    """Wraps an event source (a live ``launcher.Run``): every event is written, then passed on.

    It is itself an ``EventSource``, so the app is handed it instead of the run and never
    knows a recording exists. If the recording fails, the reader is told once, as a
    ``ChannelProblem``, and the run goes on unrecorded.
    """

    def __init__(self, source: _Source, writer: TraceWriter) -> None:
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

    def send(self, message: Any) -> None:
        self.source.send(message)

    def terminate(self) -> None:
        self.source.terminate()


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _brief(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def _json_object(line: bytes | str) -> dict[str, Any]:
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise TraceError("not UTF-8 text") from None
    try:
        obj = json.loads(line)
    except RecursionError:
        raise TraceError("JSON nested too deeply") from None
    except ValueError as exc:
        raise TraceError(_brief(f"not JSON: {exc}")) from None
    if not isinstance(obj, dict):
        raise TraceError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


_UNPRINTABLE = {c: 0x2400 + c for c in range(0x20) if chr(c) not in "\t\n\r"} | {0x7F: 0x2421} | {
    c: 0xFFFD for c in range(0x80, 0xA0)
}
"""Control characters to their visible pictures (ESC to ␛). An escape sequence hidden in a
trace must not reach the terminal: it could clear the screen, retitle the window or write to the
clipboard. Tab, newline and carriage return stay; C1 controls (one-byte CSI) become �."""


def printable(text: str) -> str:
    """``text`` with every control character but tab, newline and carriage return made visible."""
    return text.translate(_UNPRINTABLE)


def _printable_json(value: Any) -> Any:
    if isinstance(value, str):
        return value.translate(_UNPRINTABLE)
    if isinstance(value, list):
        return [_printable_json(v) for v in value]
    if isinstance(value, dict):
        return {k.translate(_UNPRINTABLE): _printable_json(v) for k, v in value.items()}
    return value


def decode_event(line: bytes | str, *, for_screen: bool = False) -> RunEvent:
    """One trace line (not the header) to a validated event; ``TraceError`` says what is wrong.

    ``for_screen`` makes every string printable first (see ``printable``), so that nothing in
    the event, or in the reason it is refused, can drive the terminal.
    """
    obj = _json_object(line)
    if for_screen:
        try:
            obj = _printable_json(obj)
        except RecursionError:
            raise TraceError("event nested too deeply") from None
    kind = obj.pop("kind", None)
    if kind == "header":
        raise TraceError("a second header")
    if kind in COMMAND_KINDS:
        raise TraceError(f"{kind!r} is a command to the script, not an event of the run")
    cls = _EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise TraceError(_brief(f"unknown event kind {kind!r}"))
    try:
        return protocol.from_jsonable(cls, obj, kind)
    except protocol.ProtocolError as exc:
        raise TraceError(_brief(str(exc))) from None
    except RecursionError:
        raise TraceError("event nested too deeply") from None


def decode_header(line: bytes | str) -> TraceHeader:
    """The first line of a trace; ``TraceError`` when the file is not a cossim-tui trace."""
    try:
        obj = _json_object(line)
    except TraceError:
        raise TraceError("not a cossim-tui trace: its first line is not a JSON object") from None
    schema = obj.get("schema")
    if schema != SCHEMA:
        if isinstance(schema, str) and schema.startswith("cossim-tui/report/"):
            raise TraceError("this is a cossim-tui check report, not a trace (write one with --record PATH)")
        if isinstance(schema, str) and schema.startswith("cossim-tui/trace/"):
            raise TraceError(_brief(f"trace schema {schema!r} is not one this version reads ({SCHEMA})"))
        raise TraceError(f"not a cossim-tui trace: its first line has no \"schema\": \"{SCHEMA}\"")
    if obj.get("kind") != "header":
        raise TraceError("not a cossim-tui trace: its first line is not a header")
    try:
        return protocol.from_jsonable(TraceHeader, obj, "header")
    except protocol.ProtocolError as exc:
        raise TraceError(printable(_brief(f"a malformed header: {exc}"))) from None
    except RecursionError:
        raise TraceError("a malformed header: nested too deeply") from None


def _open(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a trace for reading; only a regular file, so a FIFO or a device cannot hang us."""
    try:
        handle = open(os.fspath(path), "rb")
    except FileNotFoundError:
        raise TraceError("no such file") from None
    except IsADirectoryError:
        raise TraceError("it is a directory, not a trace file") from None
    except OSError as exc:
        raise TraceError(f"cannot read it: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise TraceError("not a regular file")
    return handle


@dataclass
class _Line:
    number: int
    data: bytes
    complete: bool
    """It ends with a newline: the writer finished it."""
    overlong: bool = False


def _lines(handle: IO[bytes]) -> Iterator[_Line]:
    """Non-blank lines, numbered from 1 as an editor numbers them; never more than ``MAX_LINE`` bytes."""
    number = 0
    while True:
        data = handle.readline(MAX_LINE + 1)
        if not data:
            return
        number += 1
        complete = data.endswith(b"\n")
        if not complete and len(data) > MAX_LINE:
            yield _Line(number, b"", False, overlong=True)
            return
        if data.strip():
            yield _Line(number, data, complete)


def read_header(path: str | os.PathLike[str]) -> TraceHeader:
    """The header of the trace at ``path``; ``TraceError`` if it cannot be read or is not a trace."""
    with _open(path) as handle:
        first = next(_lines(handle), None)
    return _header_of(first)


def _header_of(first: _Line | None) -> TraceHeader:
    if first is None:
        raise TraceError("the file is empty, not a cossim-tui trace")
    if first.overlong:
        raise TraceError("not a cossim-tui trace: its first line is longer than 16 MiB")
    return decode_header(first.data)


def iter_events(path: str | os.PathLike[str], *, for_screen: bool = False) -> Iterator[RunEvent]:
    """Every event recorded at ``path``, validated, in order; never raises.

    Ends with exactly one ``ScriptExited``: the recorded one, or ``status="error"`` with an
    exception saying why the trace stops short (``CUT_SHORT`` for a recording that a crash
    ended). A file that is not a trace yields one ``ChannelProblem`` and that end.
    ``for_screen``: every string made printable (``decode_event``).
    """
    try:
        handle = _open(path)
    except TraceError as exc:
        yield ChannelProblem(printable(f"cannot replay {os.fspath(path)}: {exc}"))
        yield ScriptExited("error", None, None, UNREADABLE)
        return
    with handle:
        yield from _events(_lines(handle), for_screen)


def _events(lines: Iterator[_Line], for_screen: bool) -> Iterator[RunEvent]:
    try:
        _header_of(next(lines, None))
    except TraceError as exc:
        yield ChannelProblem(str(exc))
        yield ScriptExited("error", None, None, UNREADABLE)
        return
    ended: protocol.ScriptEnded | None = None
    end = CUT_SHORT
    problems = 0
    for line in lines:
        if line.overlong:
            yield ChannelProblem(f"trace line {line.number} is longer than 16 MiB; the rest of the trace is not read")
            end = UNREADABLE
            break
        try:
            event = decode_event(line.data, for_screen=for_screen)
        except TraceError as exc:
            if not line.complete:
                # The writer always ends a line; one without its newline is where a crash hit.
                yield ChannelProblem(f"trace line {line.number} is incomplete: the recording stopped in the middle of it")
                break
            problems += 1
            yield ChannelProblem(_brief(f"trace line {line.number}: {exc}"))
            if problems >= MAX_PROBLEMS:
                yield ChannelProblem(f"{MAX_PROBLEMS} malformed lines; the rest of the trace is not read")
                end = UNREADABLE
                break
            continue
        except Exception as exc:  # noqa: BLE001 - a reader must outlive any line; show it instead
            yield ChannelProblem(printable(_brief(f"trace line {line.number}: unreadable ({type(exc).__name__}: {exc})")))
            continue
        if isinstance(event, ScriptExited):
            extra = next(lines, None)
            if extra is not None:
                yield ChannelProblem(f"trace line {extra.number}: lines after the end of the run are ignored")
            yield event
            return
        if isinstance(event, protocol.ScriptEnded):
            ended = event
        yield event
    if ended is not None and end == CUT_SHORT:
        said = f"{ended.status}, {ended.exception}" if ended.exception else ended.status
        end = f"{CUT_SHORT}; the script itself had reported: {said}"
    yield ScriptExited("error", None, None, end)


def read_trace(path: str | os.PathLike[str], max_events: int = 100_000) -> Trace:
    """The whole trace at ``path`` in memory: ``TraceError`` if it is not a trace at all.

    Bounded: after ``max_events`` events the rest is left unread (a ``ChannelProblem`` says so)
    and the list still ends with a ``ScriptExited``. ``TraceSource`` streams instead.
    """
    header = read_header(path)
    events: list[RunEvent] = []
    for event in iter_events(path):
        if len(events) >= max_events and not isinstance(event, ScriptExited):
            events.append(ChannelProblem(f"more than {max_events} events; the rest of the trace is not read"))
            events.append(ScriptExited("error", None, None, UNREADABLE))
            break
        events.append(event)
    return Trace(header, events)


class TraceSource:
    """A recorded run as the app's ``EventSource``: ``InspectorApp(TraceSource(path))`` replays it.

    Raises ``TraceError`` at once if ``path`` is not a cossim-tui trace. Nothing runs, so
    commands are ignored and every step is available at once: each is replayed unpaused
    except the last, which is where the screen stays, followed by how the run ended. A trace
    may come from anyone, so control characters in it are shown, never sent to the terminal.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.header = read_header(self.path)
        self._stopped = threading.Event()

    @property
    def target_name(self) -> str:
        return printable(f"{self.header.script} (replay of {os.path.basename(self.path)})")

    def events(self) -> Iterator[RunEvent]:
        # Which step is the last is known only when the next step or the end arrives, so the
        # newest step waits here with the events after it (output, say) to keep their order.
        held: protocol.StepCaptured | None = None
        after: list[RunEvent] = []
        after_text = 0
        for event in iter_events(self.path, for_screen=True):
            if self._stopped.is_set():
                return
            if isinstance(event, protocol.StepCaptured):
                if held is not None:
                    yield dataclasses.replace(held, paused=False)
                    yield from after
                held, after, after_text = event, [], 0
            elif held is None:
                yield event
            elif isinstance(event, ScriptExited):
                yield dataclasses.replace(held, paused=True)
                yield from after
                yield event
            else:
                after.append(event)
                after_text += len(event.text) if isinstance(event, OutputReceived) else 0
                if len(after) > MAX_HELD or after_text > _HELD_TEXT:
                    # Too much to keep: let this step go unpaused (only its flag is at stake).
                    yield dataclasses.replace(held, paused=False)
                    yield from after
                    held, after, after_text = None, [], 0

    def send(self, message: Any) -> None:
        """Nothing runs in a replay: commands have no one to go to."""

    def terminate(self) -> None:
        self._stopped.set()
