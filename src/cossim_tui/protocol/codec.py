"""The one codec: a message (or any run event) to one JSON body and back, strictly validated.

The body that crosses the channel is the body a trace records and a replay reads: one
serialised form of every step. msgspec writes and checks it against the records' annotations
(``messages``), so a malformed or hostile body becomes a ``ProtocolError`` instead of a
crash further in.

JSON has no NaN or infinity, and msgspec writes them as ``null``; but a NaN similarity or an
overflowed norm is exactly what the user needs to see. So a body holding a non-finite float
(found in the message's msgpack form, where every such float is ``0xcb`` followed by an
all-ones exponent) is written by Python's json instead, as ``NaN``/``Infinity``, as traces
have always had them; so is a string Unicode cannot encode (a lone surrogate from a
mis-decoded file name), or an integer beyond 64 bits. Reading takes the fast strict path
first and falls back to Python's parser, whose output msgspec then checks as strictly:
traces written before this codec (Python's json throughout) read the same way.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any, TypeVar

import msgspec

from cossim_tui.protocol.messages import AgentMessage, Command

MAX_FRAME = 8 * 1024 * 1024
"""No honest message comes near this; a larger body means a broken peer."""

T = TypeVar("T")


class ProtocolError(Exception):
    """A frame or message that does not match this protocol."""


def _plain(value: Any) -> Any:
    """What msgspec does not encode itself: a subclass of str, int or float (``torch.__version__``
    is a ``TorchVersion``, a str) travels as its plain value, as Python's json writes it."""
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base(value)
    raise TypeError(f"a {type(value).__name__} cannot travel on the channel")


_json = msgspec.json.Encoder(enc_hook=_plain)
_msgpack = msgspec.msgpack.Encoder(enc_hook=_plain)
_NON_FINITE = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]")
"""A float64 in msgpack whose exponent is all ones: an infinity or a NaN (or, rarely, the same
bytes inside a string: then the slower writer runs for nothing, and writes the same)."""
_python_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def encode_body(value: msgspec.Struct) -> bytes:
    """The JSON body of a message or run event (a trace line without its newline)."""
    try:
        packed = _msgpack.encode(value)
    except (UnicodeEncodeError, OverflowError):  # (msgpack's integers stop at 64 bits; JSON's do not)
        packed = None
    if packed is not None and not _NON_FINITE.search(packed):
        return _json.encode(value)
    return _python_json(msgspec.to_builtins(value, enc_hook=_plain)).encode("ascii")


_HEADER = struct.Struct(">I")


def encode(message: msgspec.Struct) -> bytes:
    """One frame: a 4-byte big-endian length, then the body."""
    body = encode_body(message)
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"message of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    return _HEADER.pack(len(body)) + body


class Decoder:
    """Bodies to validated values of ``kind`` (a record, or a union of tagged messages).

    ``where`` names what is decoded in error messages (``header``, a trace line's kind)."""

    def __init__(self, kind: Any, where: str = "") -> None:
        self._kind = kind
        self._fast = msgspec.json.Decoder(kind)
        self._where = where

    def decode(self, body: bytes | str) -> Any:
        try:
            return self._fast.decode(body)
        except msgspec.ValidationError as exc:
            raise self._error(exc) from None
        except (msgspec.DecodeError, RecursionError, UnicodeError):
            pass  # NaN or Infinity, a lone surrogate, or not JSON at all: Python's parser says
        return self.convert(_python_loads(body))

    def convert(self, data: Any) -> Any:
        """Plain JSON data (from ``json.loads``) to a validated value."""
        try:
            return msgspec.convert(data, self._kind, strict=True)
        except msgspec.ValidationError as exc:
            raise self._error(exc) from None
        except RecursionError:
            raise ProtocolError("message nested too deeply") from None

    def _error(self, exc: Exception) -> ProtocolError:
        text = str(exc)
        return ProtocolError(f"{self._where}: {text}" if self._where else text)


def _python_loads(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise ProtocolError("message nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None


def convert(data: Any, kind: type[T], where: str = "") -> T:
    """Plain data (a settings object, a JSON header) to a validated ``kind``."""
    return Decoder(kind, where).convert(data)


_messages = Decoder(AgentMessage | Command)


def decode_message(body: bytes | str) -> Any:
    """One body (without its length prefix) to a validated message of the channel."""
    return _messages.decode(body)


def to_builtins(value: Any) -> Any:
    """A record as plain JSON data (dicts, lists, numbers), as it is encoded."""
    return msgspec.to_builtins(value, enc_hook=_plain)


def encode_for_tools(value: msgspec.Struct) -> bytes:
    """Strict, indented JSON for other tools (a ``check`` report): a non-finite number is
    ``null``, since their parsers refuse ``NaN``; a string Unicode cannot encode (a lone
    surrogate in an argument that was not UTF-8) is escaped, as Python's json escapes it."""
    try:
        return msgspec.json.format(_json.encode(value), indent=2)
    except (UnicodeEncodeError, OverflowError):
        data = _finite_only(msgspec.to_builtins(value, enc_hook=_plain))
        return json.dumps(data, indent=2, ensure_ascii=True, allow_nan=False).encode("ascii")


def _finite_only(data: Any) -> Any:
    if isinstance(data, float):
        return finite_or_none(data)
    if isinstance(data, list):
        return [_finite_only(item) for item in data]
    if isinstance(data, dict):
        return {key: _finite_only(item) for key, item in data.items()}
    return data


def finite_or_none(x: float | None) -> float | None:
    """JSON for other tools has no NaN or Infinity; those become null."""
    if x is None or not math.isfinite(x):
        return None
    return x
