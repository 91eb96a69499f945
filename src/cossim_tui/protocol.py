"""What crosses the channel between the training script and the user's screen.

The agent (inside the script) and the launcher/TUI (outside it) share nothing but these
types. Every message is a typed dataclass; on the wire it is a 4-byte big-endian length
followed by one UTF-8 JSON object tagged with ``kind``. Decoding validates every field
against the dataclass's annotations, so a malformed or hostile frame becomes a
``ProtocolError`` instead of a crash further in. Standard library only: the TUI side must
be importable without torch, and the agent side without textual.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import itertools
import json
import math
import socket
import struct
import threading
import types
import typing
from collections.abc import Callable
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
class Thumbnail:
    """A small picture of an image a module was fed: the first image of the batch, downsampled.

    ``rows`` top to bottom, each a list of ``[r, g, b]`` from 0 to 255 (a grey image has
    ``r == g == b``), scaled so the image's own minimum is 0 and its maximum 255: two equal
    images give equal thumbnails.
    """

    width: int
    height: int
    channels: int
    """The image's channels: 1 (grey) or 3 (colour)."""
    source_shape: list[int]
    """Shape of the batch the image came from (``[8, 3, 32, 32]``)."""
    rows: list[list[list[int]]]


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
    input_image: Thumbnail | None = None
    """The image batch ``made_by``'s module was fed, when it was one and is still alive."""
    from_loader: bool = False
    """Same memory as a tensor of the batch the DataLoader yielded last."""
    strip: list[float] = field(default_factory=list)
    """Values of the first vector along the reduced dim, evenly sampled down to at most 48, for a heat strip."""


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


@dataclass
class Projection:
    """The recent vectors of both sides at one call site, on their first two principal components.

    Rows are L2-normalised (cosine similarity sees only directions) and coordinates are
    multiplied by √d, so a healthy cloud spreads about 1 per axis and a collapse is a dot well
    under 0.1.
    """

    step: int
    """The step this map was computed at."""
    first_step: int
    """The oldest step whose rows are in it."""
    x: list[float]
    y: list[float]
    side: list[int]
    """Which argument each point came from: 0 (x1) or 1 (x2)."""
    explained: list[float]
    """Fraction of the rows' variance along each of the two axes."""
    spread: float
    """RMS distance of the normalised rows from their mean (= √d · RMS per-channel std): healthy ≈ 1, collapse < 0.1."""
    extent: float
    """The largest |coordinate|."""
    dim_size: int
    label: list[int] | None = None
    """The class of each point's row, as the DataLoader's batch labelled it (-1 where unknown:
    a row not made from a labelled batch); ``None`` when no point has one."""


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
    break_condition: str | None = None
    """The user's break condition, when it held at this step (why ``continue`` stopped here)."""
    projection: Projection | None = None
    """The embedding map of this call site, on the steps it was computed at (every few, and every pause)."""


@dataclass
class ScriptEnded(Message):
    """The script's own code has finished, as the agent saw it."""

    kind: ClassVar[str] = "script-ended"
    status: Literal["finished", "error", "stopped", "not-found"]
    exit_code: int
    exception: str | None
    """``Type: message`` when the script raised."""
    maps: list[Projection] = field(default_factory=list)
    """The embedding map of each call site whose latest rows no step's map shows yet, as of the
    run's end; each map's ``step`` is a step of its site (the last whose rows are in it)."""


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


@dataclass
class SetBreak(Message):
    """Make ``continue`` also stop where this Python expression holds; ``""`` clears it."""

    kind: ClassVar[str] = "set-break"
    condition: str


@dataclass
class BreakChanged(Message):
    """The break condition now in force, after a ``SetBreak`` or an error in evaluating it."""

    kind: ClassVar[str] = "break-changed"
    condition: str
    """The condition in force; ``""`` when there is none."""
    error: str | None = None
    """Why the condition asked for was refused, or why the one in force was turned off."""
    step: int | None = None
    """The step whose evaluation failed, for an error at run time."""


# --------------------------------------------------------------------------------------
# How the launcher configures the agent: JSON in an environment variable, removed at start;
# or, for a child started before the settings were known, a ``Start`` message
# --------------------------------------------------------------------------------------

FD_ENV = "COSSIM_TUI_FD"
CONFIG_ENV = "COSSIM_TUI_CONFIG"


@dataclass
class AgentConfig:
    """Settings the agent needs inside the child; travels as JSON in an environment variable,
    or in a ``Start`` message."""

    mode: Literal["step", "continue", "run"] = "step"
    """How the script starts: paused at the first call, or running."""
    break_on: list[str] = field(default_factory=lambda: ["error"])
    """Severities or codes that make ``continue`` stop."""
    ignore: list[str] = field(default_factory=list)
    max_steps: int | None = None
    watch: list[str] = field(default_factory=list)
    pictures: Literal["every-step", "paced", "none"] = "every-step"
    """Which steps carry the pictures (value strips, input images, embedding maps), which cost
    more than the rest of a step: ``every-step`` (what an agent did before this setting);
    ``paced``, every step the script stops at and, while it runs freely, at most one step
    every ``PICTURE_INTERVAL`` seconds (what a screen can show); ``none`` (nobody will see them:
    ``check`` without ``--record``)."""


@dataclass
class Start(Message):
    """The agent's settings, and the go to run the script: sent to a child started early
    (``launcher.Run.early``), which waits for it before the script's first line."""

    kind: ClassVar[str] = "start"
    config: AgentConfig


PICTURE_INTERVAL = 0.08
"""Seconds between two pictured steps while the script runs freely with ``pictures="paced"``."""


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.kind: cls
    for cls in (Hello, TorchHooked, StepCaptured, ScriptEnded, Resume, Pause, Mute, SetBreak, BreakChanged, Start)
}


# --------------------------------------------------------------------------------------
# Encoding and validated decoding
# --------------------------------------------------------------------------------------


_PLAIN = frozenset({str, int, float, bool, type(None)})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} is not a protocol record")
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def to_jsonable(value: Any) -> Any:
    """Dataclasses to plain dicts, recursively (``dataclasses.asdict`` without deep copies)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind in _FIELD_NAMES or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        return {name: to_jsonable(getattr(value, name)) for name in _field_names(kind)}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


PACKED = 8
"""A list of at least this many numbers (or a rectangular nest of such lists, as a thumbnail's
pixel rows) travels as ``{"f64"|"i64"|"u8": base64 of little-endian values, "shape": [...]}``:
exact, and several times cheaper to write and read than each number in decimal."""
_CODES = {"f64": "d", "i64": "q", "u8": "B"}
_base64 = binascii.b2a_base64  # (what base64.b64encode calls, without its Python frame)


def _pack(flat: list, count: int) -> tuple[str, bytes] | None:
    """The ``count`` numbers of ``flat`` as a packed code and its bytes; ``None`` when they do
    not pack: a float among integers, a string anywhere (struct checks every value).

    ``bytes`` takes exactly what struct's "B" takes (integers 0 to 255, or ``__index__``),
    in a fraction of the time: a map's point sides and a thumbnail's pixels are such bytes."""
    if type(flat[0]) is float:
        try:
            return "f64", struct.pack(f"<{count}d", *flat)
        except struct.error:
            return None
    try:
        return "u8", bytes(flat)
    except (TypeError, ValueError):
        pass
    try:
        return "i64", struct.pack(f"<{count}q", *flat)
    except struct.error:
        return None


def _packed(values: list) -> Any:
    if type(values[0]) is not list and len(values) < PACKED:
        return values  # a few numbers: decimals (what the loop below would decide, sooner)
    shape = [len(values)]
    flat: list = values
    while flat and type(flat[0]) is list:
        shape.append(len(flat[0]))
        flat = list(itertools.chain.from_iterable(flat))
    count = math.prod(shape)
    if count < PACKED or len(flat) != count or not flat:
        return values
    packed = _pack(flat, count)
    if packed is None:
        return values
    code, data = packed
    return {code: _base64(data, newline=False).decode("ascii"), "shape": shape}


def _numbers(value: Any) -> Any:
    """A field that holds (nested lists of) numbers: packed when long enough (see ``PACKED``)."""
    if type(value) is list and value and type(value[0]) in (float, int, list):
        return _packed(value)
    return value


def _fields_of(value: Any) -> dict[str, Any]:
    """``json.dumps``'s ``default``: a record's fields; the encoder (in C) does the rest.

    Only for a record ``encode`` did not expect (one inside a dict); the others go through
    their class's encoder, which writes the same."""
    body = {}
    for name in _field_names(type(value)):
        body[name] = _numbers(getattr(value, name))
    return body


# What ``encode`` writes is exactly what ``json.dumps(fields, separators=(",", ":"))`` would,
# for a record's fields in their order (``_fields_of``), but written by code made once per
# class from its annotations, as ``dataclasses`` writes ``__init__``: one f-string per record
# with its keys already in it, each value turned to JSON by the cheapest code that gives the
# same text for its type, and anything unexpected by the json module itself. A step's dozen
# records and hundred keys cost the generic encoder more than its numbers.
#
# Most of what is left is writing floats: ``repr``, the shortest text that reads back the
# same, takes about 40% of a step's encoding. So when a record's plain fields hold what their
# annotations say, and its floats are finite, its numbers are written by the f-string itself
# (``{x!r}``), with no call each; only when one does not (a NaN, an int where a float is
# expected) is each value checked on its own. Nested records call their class's writer
# directly.

_WRITERS: dict[type, Callable[[Any], str]] = {}
_ascii = json.encoder.encode_basestring_ascii


def _record_json(value: Any) -> str:
    """A record as ``encode`` writes it; anything else as the json module does."""
    write = _WRITERS.get(type(value))
    if write is not None:
        return write(value)
    if value is None:
        return "null"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _writer(type(value))(value)
    return _JSON.encode(value)


_ONLY_INTS, _ONLY_FLOATS = {int}, {float}


def _numbers_json(value: Any) -> str:
    """A list of numbers (or nested lists of them): packed when long enough (``_packed``)."""
    if type(value) is not list:
        return "null" if value is None else _JSON.encode(value)
    count = len(value)
    if not count:
        return "[]"
    if count < PACKED:
        kinds = set(map(type, value))
        if kinds == _ONLY_INTS:  # (a shape, strides)
            return "[" + ",".join(map(int.__repr__, value)) + "]"
        if kinds == _ONLY_FLOATS:  # (a preview)
            text = ",".join(map(float.__repr__, value))
            if "n" not in text:  # no nan or inf, which JSON writes NaN and Infinity
                return f"[{text}]"
            return _JSON.encode(value)
        if list not in kinds:
            return _JSON.encode(value)
    elif type(value[0]) is not list:  # a vector (a strip, a map's coordinates): what _packed does
        packed = _pack(value, count)
        if packed is None:
            return _JSON.encode(value)
        code, data = packed
        return f'{{"{code}":"{_base64(data, newline=False).decode("ascii")}","shape":[{count}]}}'
    packed = _packed(value)
    if packed is not value:
        (code, data), (_, shape) = packed.items()
        return '{"%s":"%s","shape":[%s]}' % (code, data, ",".join(map(int.__repr__, shape)))
    return _JSON.encode(value)


def _floats_json(value: Any) -> str:
    """A field of floats: what ``_numbers_json`` writes, sooner for the usual few finite floats
    (``float.__repr__`` refuses anything else, and json writes a float subclass with it too)."""
    if type(value) is list and len(value) < PACKED:
        if not value:  # (a step without pictures has no strips)
            return "[]"
        try:
            text = ",".join(map(float.__repr__, value))
        except TypeError:
            return _numbers_json(value)
        if "n" not in text:  # no nan or inf, which JSON writes NaN and Infinity
            return f"[{text}]"
    return _numbers_json(value)


def _ints_json(value: Any) -> str:
    """A field of integers (a shape, strides, a span): what ``_numbers_json`` writes, sooner for
    the usual few. ``repr`` writes a list of exact ints as json does, but for its spaces."""
    if type(value) is list and len(value) < PACKED:
        for item in value:
            if type(item) is not int:  # (a bool, which json writes true)
                return _numbers_json(value)
        return repr(value).replace(" ", "")
    return _numbers_json(value)


def _strings_json(value: Any) -> str:
    """A list of strings (a finding's evidence, a call's source lines).

    The escaper refuses anything but a string, and json escapes a str subclass with it too."""
    if type(value) is list:
        try:
            return "[" + ",".join(map(_ascii, value)) + "]"
        except TypeError:
            pass
    return _JSON.encode(value)


def _mapping_json(value: Any) -> str:
    """A dict of numbers by name (a step's training context)."""
    if type(value) is not dict:
        return _JSON.encode(value)
    parts = []
    for key, number in value.items():
        kind = type(number)
        if type(key) is not str or not (kind is int or (kind is float and number - number == 0.0)):
            return _JSON.encode(value)
        parts.append(f"{_ascii(key)}:{int.__repr__(number) if kind is int else float.__repr__(number)}")
    return "{" + ",".join(parts) + "}"


def _writer(cls: type, building: frozenset[type] = frozenset()) -> Callable[[Any], str]:
    """The JSON text of a ``cls`` record (see above); messages end with their ``kind``.

    ``building``: the classes whose writers are being made around this one; a record that
    holds one of them looks it up when it writes it."""
    write = _WRITERS.get(cls)
    if write is None:
        write = _WRITERS[cls] = _make_writer(cls, building)
    return write


def _make_writer(cls: type, building: frozenset[type]) -> Callable[[Any], str]:
    hints = _hints(cls)
    fields = [(name, hints.get(name, Any)) for name in _field_names(cls)]
    if issubclass(cls, Message):
        fields.append(("kind", str))
    namespace: dict[str, Any] = {
        "_ascii": _ascii, "_record_json": _record_json, "_numbers_json": _numbers_json, "_floats_json": _floats_json,
        "_ints_json": _ints_json, "_strings_json": _strings_json, "_mapping_json": _mapping_json,
        "_JSON": _JSON, "_float": float.__repr__, "_int": int.__repr__,
    }
    # Each field is read once into f<i>. Then, when the plain fields hold what they should
    # (``guards``), the fast return; else every field is checked on its own (t<i>).
    loads, guards, finite, fast, fast_parts, checked, parts = [], [], [], [], [], [], []
    for i, (name, tp) in enumerate(fields):
        value, text, key = f"f{i}", f"t{i}", _ascii(name)
        plain, expression = _value_json(tp, value, namespace, building | {cls})
        loads.append(f"{value} = value.{name}")
        checked.append(f"{text} = {expression}")
        parts.append(f"{key}:{{{text}}}")
        if plain is float or plain is int:
            guards.append(f"type({value}) is {plain.__name__}")
            fast_parts.append(f"{key}:{{{value}!r}}")
            if plain is float:
                finite.append(value)
        elif plain is str:
            guards.append(f"type({value}) is str")
            fast_parts.append(f"{key}:{{_ascii({value})}}")
        elif plain is bool:
            guards.append(f"({value} is True or {value} is False)")
            fast.append(f"{text} = 'true' if {value} else 'false'")
            fast_parts.append(f"{key}:{{{text}}}")
        else:
            fast.append(f"{text} = {expression}")
            fast_parts.append(f"{key}:{{{text}}}")
    if finite:
        # 0 times a finite float is 0; times an infinity or a NaN it is NaN.
        guards.append(f"0.0 * {' * '.join(finite)} == 0.0")
    lines = loads
    if guards:  # (else the fields are all checked on their own anyway)
        lines += [f"if {' and '.join(guards)}:", *(f"    {line}" for line in fast), f"    return f{_template(fast_parts)!r}"]
    lines += [*checked, f"return f{_template(parts)!r}"]
    source = f"def write_{cls.__name__}(value):\n" + "".join(f"    {line}\n" for line in lines)
    exec(source, namespace)  # noqa: S102 - our own source, made from field names and types
    return namespace[f"write_{cls.__name__}"]


def _template(parts: list[str]) -> str:
    """The f-string (without its ``f``) of a record whose ``key:{value}`` parts these are."""
    return "{{" + ",".join(parts) + "}}"


def _value_json(tp: Any, v: str, namespace: dict[str, Any], building: frozenset[type]) -> tuple[type | None, str]:
    """A Python expression for the JSON text of the local ``v``, a field of type ``tp``, and the
    type it is written fastest for (float, int, str or bool) when ``tp`` is that type alone.

    A record's writer is made now and put in ``namespace`` (unless it is being made around
    this one: then it is looked up when needed)."""
    options = [tp]
    nullable = False
    if typing.get_origin(tp) in (Union, types.UnionType):
        options = [option for option in typing.get_args(tp) if option is not type(None)]
        nullable = len(options) < len(typing.get_args(tp))
    option = options[0] if len(options) == 1 else Any
    origin = typing.get_origin(option)
    if dataclasses.is_dataclass(option):
        record = _record_writer(option, v, namespace, building)
        return None, f"('null' if {v} is None else {record})" if nullable else record
    if origin is list:
        (item,) = typing.get_args(option) or (Any,)
        if dataclasses.is_dataclass(item):
            record = _record_writer(item, "item", namespace, building)
            return None, f"(('[' + ','.join([{record} for item in {v}]) + ']' if {v} else '[]') if type({v}) is list else _JSON.encode({v}))"
        if item is str:
            return None, f"_strings_json({v})"
        if item is float:
            return None, f"_floats_json({v})"
        if item is int:
            return None, f"_ints_json({v})"
        return None, f"_numbers_json({v})"
    plain: type | None
    if option is str or (origin is Literal and all(type(a) is str for a in typing.get_args(option))):
        plain, expression = str, f"(_ascii({v}) if type({v}) is str else _JSON.encode({v}))"
    elif option is int:
        plain, expression = int, f"(_int({v}) if type({v}) is int else _JSON.encode({v}))"
    elif option is float:
        # v - v is 0 for a finite float; NaN and infinities are the json module's to write.
        plain, expression = float, f"(_float({v}) if type({v}) is float and {v} - {v} == 0.0 else _JSON.encode({v}))"
    elif option is bool:
        plain, expression = bool, f"('true' if {v} is True else 'false' if {v} is False else _JSON.encode({v}))"
    elif origin is dict:
        return None, f"_mapping_json({v})"
    else:
        return None, f"_JSON.encode({v})"
    if nullable:
        return None, f"('null' if {v} is None else {expression})"
    return plain, expression


def _record_writer(cls: Any, v: str, namespace: dict[str, Any], building: frozenset[type]) -> str:
    """An expression for the text of ``v``, which should be a ``cls`` record: its writer,
    called directly when it is exactly one."""
    if cls in building:
        return f"_record_json({v})"
    index = len(namespace)
    namespace[f"_write{index}"], namespace[f"_class{index}"] = _writer(cls, building), cls
    return f"(_write{index}({v}) if type({v}) is _class{index} else _record_json({v}))"


def _unpacked(value: dict, leaf: type, depth: int) -> list:
    """The nested lists of a packed value (see ``PACKED``), checked against the field's type:
    ``depth`` levels of lists of ``leaf`` numbers."""
    if len(value) != 2 or not isinstance(value.get("shape"), list):
        raise _Invalid(f"expected a list, got {_got(value)}")
    codes = [code for code in _CODES if code in value]
    if len(codes) != 1 or type(value[codes[0]]) is not str:
        raise _Invalid("a packed list names one of f64, i64, u8")
    code = codes[0]
    if leaf is float and code != "f64" or leaf is int and code == "f64":
        raise _Invalid(f"packed {code} where {leaf.__name__} values are expected")
    shape = value["shape"]
    if len(shape) != depth or not all(type(n) is int and n >= 0 for n in shape):
        raise _Invalid(f"a packed shape of {depth} sizes is expected")
    try:
        raw = base64.b64decode(value[code], validate=True)
    except (ValueError, binascii.Error):
        raise _Invalid("packed values are not base64") from None
    size = struct.calcsize(_CODES[code])
    count = math.prod(shape)
    if len(raw) != count * size:
        raise _Invalid("packed values do not fill their shape")
    flat: list = list(struct.unpack(f"<{count}{_CODES[code]}", raw))
    for n in reversed(shape[1:]):
        flat = [flat[i : i + n] for i in range(0, len(flat), n)] if n else [[] for _ in range(len(flat))]
    return flat


_JSON = json.JSONEncoder(separators=(",", ":"), default=_fields_of)
"""``json.dumps(..., separators=(",", ":"), default=_fields_of)``, made once: what the writers
hand what they do not expect, and what decides what they write."""


def encode(message: Message) -> bytes:
    write = _WRITERS.get(type(message)) or _writer(type(message))
    data = write(message).encode()
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
    try:
        return _decoder(cls)(data)
    except _Invalid as exc:
        raise ProtocolError(f"{where or cls.__name__}{''.join(reversed(exc.path))}: {exc.problem}") from None


class _Invalid(Exception):
    """A value that does not match its field; ``path`` grows (innermost first) on its way out."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []


def _got(value: Any) -> str:
    return type(value).__name__


_DECODERS: dict[Any, Callable[[Any], Any]] = {}


def _decoder(tp: Any) -> Callable[[Any], Any]:
    """A function that checks and converts JSON data to ``tp``; made once per type, since
    reading the annotations again for every message would cost more than the message."""
    decoder = _DECODERS.get(tp)
    if decoder is None:
        decoder = _DECODERS[tp] = _make_decoder(tp)
    return decoder


def _make_decoder(tp: Any) -> Callable[[Any], Any]:  # noqa: C901 - one branch per kind of type
    origin = typing.get_origin(tp)
    if tp is Any:
        return lambda value: value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        nullable = type(None) in options
        decoders = [_decoder(option) for option in options if option is not type(None)]

        def union(value: Any) -> Any:
            if value is None and nullable:
                return None
            first: _Invalid | None = None
            for decode in decoders:
                try:
                    return decode(value)
                except _Invalid as exc:
                    first = first or exc
            raise first or _Invalid("unexpected null")

        return union
    if origin is Literal:
        allowed = typing.get_args(tp)

        def literal(value: Any) -> Any:
            if value not in allowed:
                raise _Invalid(f"{value!r} is not one of {allowed}")
            return value

        return literal
    if origin is list:
        (item,) = typing.get_args(tp)
        decode_item = _decoder(item)
        plain = item if item in (float, int, str, bool) else None

        leaf, depth = item, 1
        while typing.get_origin(leaf) is list:
            (leaf,) = typing.get_args(leaf)
            depth += 1
        packable = leaf in (float, int)

        def listed(value: Any) -> Any:
            if type(value) is not list:
                if packable and type(value) is dict:
                    return _unpacked(value, leaf, depth)
                raise _Invalid(f"expected a list, got {_got(value)}")
            if plain is not None and all(type(v) is plain for v in value):
                return value
            try:
                return [decode_item(v) for v in value]
            except _Invalid as exc:
                for index, v in enumerate(value):  # where: only when something is wrong
                    try:
                        decode_item(v)
                    except _Invalid:
                        exc.path.append(f"[{index}]")
                        break
                raise

        return listed
    if origin is dict:
        _, item = typing.get_args(tp)
        decode_item = _decoder(item)

        def mapping(value: Any) -> Any:
            if type(value) is not dict:
                raise _Invalid(f"expected an object, got {_got(value)}")
            out = {}
            for k, v in value.items():
                try:
                    out[str(k)] = decode_item(v)
                except _Invalid as exc:
                    exc.path.append(f".{k}")
                    raise
            return out

        return mapping
    if dataclasses.is_dataclass(tp):
        cls = tp
        made: list[list[tuple[str, Callable[[Any], Any], bool]]] = []

        def fields_spec() -> list[tuple[str, Callable[[Any], Any], bool]]:
            # Made on first use (a record may refer to itself); a race only builds it twice.
            hints = _hints(cls)
            spec = [
                (f.name, _decoder(hints[f.name]), f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
                for f in dataclasses.fields(cls)
            ]
            made.append(spec)
            return spec

        def record(value: Any) -> Any:
            spec = made[0] if made else fields_spec()
            if type(value) is not dict:
                raise _Invalid(f"expected an object, got {_got(value)}")
            kwargs = {}
            for name, decode, required in spec:
                if name in value:
                    try:
                        kwargs[name] = decode(value[name])
                    except _Invalid as exc:
                        exc.path.append(f".{name}")
                        raise
                elif required:
                    raise _Invalid(f"missing field {name!r}")
            return cls(**kwargs)

        return record
    if tp is float:

        def number(value: Any) -> float:
            kind = type(value)
            if kind is float:
                return value
            if kind is not int:
                raise _Invalid(f"expected a number, got {_got(value)}")
            try:
                return float(value)
            except OverflowError:
                raise _Invalid("number out of range") from None

        return number
    if tp in (int, bool, str):
        expected = {int: "an integer", bool: "true/false", str: "a string"}[tp]

        def exact(value: Any) -> Any:
            if type(value) is not tp:
                raise _Invalid(f"expected {expected}, got {_got(value)}")
            return value

        return exact
    raise TypeError(f"unsupported type {tp!r}")  # pragma: no cover - a protocol bug, not bad data


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
        self.send_bytes(encode(message))

    def send_bytes(self, data: bytes) -> None:
        """Write encoded frames, waiting for the reader if its buffer is full."""
        with self._send_lock:
            self.sock.sendall(data)

    def send_now(self, data: bytes) -> int:
        """Write what the socket takes right now, without waiting: the number of bytes written."""
        with self._send_lock:
            try:
                return self.sock.send(data, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return 0

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
