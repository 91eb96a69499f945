"""What crosses the channel between the training script and the user's screen.

The agent (inside the script) and the launcher/TUI (outside it) share nothing but these
types. Every message is a typed dataclass; on the wire it is a 4-byte big-endian length
followed by one UTF-8 JSON object tagged with ``kind``. Decoding validates every field
against the dataclass's annotations, so a malformed or hostile frame becomes a
``ProtocolError`` instead of a crash further in. Standard library only: the TUI side must
be importable without torch, and the agent side without textual.
"""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import struct
import threading
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Union

MAX_FRAME = 8 * 1024 * 1024
"""No honest message comes near this; a larger length prefix means a broken peer."""

_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """A frame or message that does not match this protocol."""


# --------------------------------------------------------------------------------------
# What the agent captures at one intercepted call
# --------------------------------------------------------------------------------------


@dataclass
class Spread:
    """min / mean / max of some per-row quantity (norms, similarities, angles)."""

    min: float
    mean: float
    max: float


@dataclass
class ValueStats:
    """lovely-tensors style summary of the finite values of one tensor."""

    min: float
    max: float
    mean: float
    std: float


@dataclass
class StorageInfo:
    """Where a tensor's elements live: enough to tell views of one memory apart."""

    ptr: int
    """Address of the tensor's storage (``untyped_storage().data_ptr()``)."""
    offset: int
    """Element offset of the tensor inside that storage."""
    strides: list[int]
    element_size: int
    span: list[int]
    """Byte range ``[start, end)`` the tensor can touch, as addresses."""


@dataclass
class ModuleCall:
    """The outermost module call that produced a tensor (CONTRACT ``made_by``)."""

    module: str
    call: int
    step: int


@dataclass
class TensorSummary:
    """One argument of the call, summarised where it lives; never the tensor itself."""

    expr: str
    """Its source expression at the call site (``vector1_tensor``), ``arg0`` when unknown."""
    shape: list[int]
    dtype: str
    device: str
    layout: str
    numel: int
    requires_grad: bool
    grad_fn: str | None
    """Name of the autograd node that made it; ``None`` for a leaf or a detached tensor."""
    is_leaf: bool
    norm: Spread | None
    """L2 norms along the reduced dim, over rows. ``None`` when they cannot be computed."""
    rows: int
    """How many vectors the norms were taken over."""
    stats: ValueStats | None
    nan: int
    inf: int
    preview: list[float]
    """The first values of the first vector along the reduced dim."""
    storage: StorageInfo | None
    sampled: bool = False
    """True when the statistics come from a bounded sample of a very large tensor."""
    made_by: ModuleCall | None = None
    note: str | None = None
    """Why something could not be summarised (sparse, meta, non-numeric...)."""


@dataclass
class Relation:
    """How the two arguments relate to each other."""

    same_object: bool
    shares_storage: bool
    equal_values: bool | None
    """Element-wise equal. ``None`` when the shapes differ, so the question does not apply."""
    max_abs_diff: float | None
    dim: int
    dim_size: int
    """Size of the reduced dimension after broadcasting."""
    broadcast_shape: list[int] | None
    """The shape both were broadcast to, when their shapes differ."""


@dataclass
class Similarity:
    """The cosine similarity the call computed, per row."""

    count: int
    min: float
    mean: float
    max: float
    first: list[float]
    angle_deg: Spread
    """Angles in degrees for the max, mean and min similarity (note: min angle ↔ max cos)."""
    nan: int = 0


@dataclass
class CallSite:
    """Where in the user's source the call was made."""

    path: str
    """The file as the user would name it (relative to the working directory when inside it)."""
    line: int
    function: str
    first_line: int
    """Line number of ``lines[0]``."""
    lines: list[str]
    """The call's line with a few lines of context either side."""
    call_start: int
    call_end: int
    """The lines the call expression spans (multi-line calls)."""

    @property
    def label(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Finding:
    """One diagnosis at one step."""

    code: str
    severity: Literal["error", "warning", "info"]
    message: str
    site: str
    step: int
    evidence: list[str] = field(default_factory=list)
    """Names of the fields that prove it (``relation.same_object``, ``args.1.grad_fn``)."""
    muted: bool = False


SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}


# --------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------


@dataclass
class Message:
    kind: ClassVar[str] = ""


@dataclass
class Hello(Message):
    """The agent is connected; the script is about to run."""

    kind: ClassVar[str] = "hello"
    pid: int
    python: str
    target: str
    argv: list[str]


@dataclass
class TorchHooked(Message):
    """torch has been imported by the script and its cosine entry points are wrapped."""

    kind: ClassVar[str] = "torch-hooked"
    version: str
    intercepted: list[str]


@dataclass
class StepCaptured(Message):
    """One intercepted call, with everything the screen shows for it."""

    kind: ClassVar[str] = "step"
    step: int
    function: str
    site: CallSite
    args: list[TensorSummary]
    relation: Relation | None
    cos: Similarity | None
    error: str | None
    """The exception torch raised for this call, as ``Type: message``; it reached the script."""
    findings: list[Finding]
    context: dict[str, float]
    paused: bool
    """The script is waiting for a command before it goes on."""
    label: str | None = None
    wall_time: float = 0.0


@dataclass
class ScriptEnded(Message):
    """The script's own code has finished, as the agent saw it."""

    kind: ClassVar[str] = "script-ended"
    status: Literal["finished", "error", "stopped", "not-found"]
    exit_code: int
    exception: str | None
    """``Type: message`` when the script raised."""


@dataclass
class Resume(Message):
    """Go on from a pause: stop at the next call, at the next finding, or never."""

    kind: ClassVar[str] = "resume"
    mode: Literal["step", "continue", "run"]


@dataclass
class Pause(Message):
    """Stop at the next intercepted call."""

    kind: ClassVar[str] = "pause"


@dataclass
class Mute(Message):
    """Stop breaking on ``code`` at ``site`` (``*`` for every site)."""

    kind: ClassVar[str] = "mute"
    code: str
    site: str


# --------------------------------------------------------------------------------------
# How the launcher configures the agent (JSON in an environment variable, removed at start)
# --------------------------------------------------------------------------------------

FD_ENV = "COSSIM_TUI_FD"
CONFIG_ENV = "COSSIM_TUI_CONFIG"


@dataclass
class AgentConfig:
    """Settings the agent needs inside the child; travels as JSON in an environment variable."""

    mode: Literal["step", "continue", "run"] = "step"
    """How the script starts: paused at the first call, or running."""
    break_on: list[str] = field(default_factory=lambda: ["error"])
    """Severities or codes that make ``continue`` stop."""
    ignore: list[str] = field(default_factory=list)
    max_steps: int | None = None
    watch: list[str] = field(default_factory=list)


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.kind: cls for cls in (Hello, TorchHooked, StepCaptured, ScriptEnded, Resume, Pause, Mute)
}


# --------------------------------------------------------------------------------------
# Encoding and validated decoding
# --------------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Dataclasses to plain dicts, recursively (``dataclasses.asdict`` without deep copies)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


def encode(message: Message) -> bytes:
    body = to_jsonable(message)
    body["kind"] = message.kind
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {MAX_FRAME}-byte limit")
    return _HEADER.pack(len(data)) + data


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def from_jsonable(cls: type, data: Any, where: str = "") -> Any:
    """Build ``cls`` from plain JSON data, checking every field's type."""
    return _convert(cls, data, where or cls.__name__)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except ProtocolError as exc:
                errors.append(str(exc))
        raise ProtocolError(errors[0] if errors else f"{where}: unexpected null")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ProtocolError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object, got {type(value).__name__}")
        _, item = typing.get_args(tp)
        return {str(k): _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object, got {type(value).__name__}")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = _convert(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"{where}: missing field {f.name!r}")
        return tp(**kwargs)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{where}: expected a number, got {type(value).__name__}")
        try:
            return float(value)
        except OverflowError:
            raise ProtocolError(f"{where}: number out of range") from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{where}: expected an integer, got {type(value).__name__}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ProtocolError(f"{where}: expected true/false, got {type(value).__name__}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ProtocolError(f"{where}: expected a string, got {type(value).__name__}")
        return value
    raise ProtocolError(f"{where}: unsupported type {tp!r}")  # pragma: no cover


def decode_message(data: bytes | str) -> Message:
    """One JSON body (without its length prefix) to a validated message."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = obj.pop("kind", None)
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message kind {kind!r}")
    try:
        return from_jsonable(cls, obj)
    except RecursionError:
        raise ProtocolError("message nested too deeply") from None


def finite_or_none(x: float | None) -> float | None:
    """JSON for other tools has no NaN or Infinity; those become null."""
    if x is None or not math.isfinite(x):
        return None
    return x


# --------------------------------------------------------------------------------------
# Framing over a stream
# --------------------------------------------------------------------------------------


class FrameDecoder:
    """Turns a byte stream into message bodies; feed it whatever ``recv`` returned."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        bodies = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > MAX_FRAME:
                raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            bodies.append(bytes(self._buffer[_HEADER.size : end]))
            del self._buffer[:end]
        return bodies

    @property
    def pending(self) -> int:
        return len(self._buffer)


class Connection:
    """Blocking, thread-safe message I/O on one connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._decoder = FrameDecoder()
        self._ready: list[bytes] = []
        self._send_lock = threading.Lock()

    def send(self, message: Message) -> None:
        data = encode(message)
        with self._send_lock:
            self.sock.sendall(data)

    def receive(self) -> Message | None:
        """The next message, or ``None`` at end of stream."""
        while not self._ready:
            chunk = self.sock.recv(65536)
            if not chunk:
                if self._decoder.pending:
                    raise ProtocolError("stream ended inside a frame")
                return None
            self._ready.extend(self._decoder.feed(chunk))
        return decode_message(self._ready.pop(0))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
