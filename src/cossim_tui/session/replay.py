"""Replaying a trace: reading it back, line by line, trusting nothing.

A trace is a file someone hands you. Every line is parsed as plain JSON (no pickle, no
``torch.load``, nothing executed) and validated by the protocol's own codec against the run's
event types; a line that fails becomes a ``ChannelProblem`` naming its line number, never an
exception. Lines are capped in length and malformed lines in number, so a hostile or binary
file ends the replay with a clear reason instead of hanging it. Whatever the file holds, the
events end with exactly one ``ScriptExited``: the recorded one, or one saying that the trace
stops before the run did. Traces written by earlier versions (Python's json throughout, NaN
as a bare token) replay as they always did.

No torch, no textual.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from msgspec.structs import replace

from cossim_tui.protocol import (
    COMMAND_KINDS,
    Decoder,
    ProtocolError,
    ScriptEnded,
    StepCaptured,
)
from cossim_tui.session.events import (
    ChannelProblem,
    Command,
    OutputReceived,
    RunEvent,
    ScriptExited,
)
from cossim_tui.session.trace import SCHEMA, TraceError, TraceHeader

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

_events_of_a_run = Decoder(RunEvent)
_header = Decoder(TraceHeader, "header")


@dataclass
class Trace:
    """A whole trace read into memory (``read_trace``): for tests and small tools."""

    header: TraceHeader
    events: list[RunEvent]

    @property
    def steps(self) -> list[StepCaptured]:
        return [e for e in self.events if isinstance(e, StepCaptured)]

    @property
    def exited(self) -> ScriptExited:
        last = self.events[-1]
        assert isinstance(last, ScriptExited)
        return last


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
    if not for_screen:
        try:
            return _events_of_a_run.decode(line)
        except ProtocolError:
            pass  # said below, in the words of the line's kind
    obj = _json_object(line)
    if for_screen:
        try:
            obj = _printable_json(obj)
        except RecursionError:
            raise TraceError("event nested too deeply") from None
    kind = obj.get("kind")
    if kind == "header":
        raise TraceError("a second header")
    if kind in COMMAND_KINDS:
        raise TraceError(f"{kind!r} is a command to the script, not an event of the run")
    if not isinstance(kind, str) or kind not in _EVENT_KINDS:
        raise TraceError(_brief(f"unknown event kind {kind!r}"))
    try:
        return _events_of_a_run.convert(obj)
    except ProtocolError as exc:
        raise TraceError(_brief(f"{kind}: {exc}")) from None


_EVENT_KINDS = frozenset(cls.kind for cls in RunEvent.__args__)


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
        return _header.convert(obj)
    except ProtocolError as exc:
        raise TraceError(printable(_brief(f"a malformed header: {exc}"))) from None


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
    ended: ScriptEnded | None = None
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
        if isinstance(event, ScriptEnded):
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
        held: StepCaptured | None = None
        after: list[RunEvent] = []
        after_text = 0
        for event in iter_events(self.path, for_screen=True):
            if self._stopped.is_set():
                return
            if isinstance(event, StepCaptured):
                if held is not None:
                    yield replace(held, paused=False)
                    yield from after
                held, after, after_text = event, [], 0
            elif held is None:
                yield event
            elif isinstance(event, ScriptExited):
                yield replace(held, paused=True)
                yield from after
                yield event
            else:
                after.append(event)
                after_text += len(event.text) if isinstance(event, OutputReceived) else 0
                if len(after) > MAX_HELD or after_text > _HELD_TEXT:
                    # Too much to keep: let this step go unpaused (only its flag is at stake).
                    yield replace(held, paused=False)
                    yield from after
                    held, after, after_text = None, [], 0

    def send(self, message: Command) -> None:
        """Nothing runs in a replay: commands have no one to go to."""

    def terminate(self) -> None:
        self._stopped.set()
