"""What ``protocol.encode`` must write, made the slow and obvious way: every field of every
record through ``json.dumps``, with a list of at least ``protocol.PACKED`` numbers (or a
rectangular nest of them) packed as little-endian base64, as ``protocol.PACKED`` says. The
tests of the encoder's writers compare them with this."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import struct
from typing import Any

from cossim_tui import protocol


def reference_fields(value: Any) -> Any:
    """A record as the generic encoder saw it: every field, a list of ≥ PACKED numbers (or a
    rectangular nest of them) packed as little-endian base64, whatever the field's type."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: reference_fields(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if type(value) is list:
        packed = reference_packed(value)
        if packed is not None:
            return packed
        return [reference_fields(v) for v in value]
    if type(value) is dict:
        return {k: reference_fields(v) for k, v in value.items()}
    return value


def reference_packed(values: list) -> dict | None:
    shape, flat = [len(values)], values
    while flat and type(flat[0]) is list:
        shape.append(len(flat[0]))
        flat = [v for row in flat for v in row]
    if not flat or type(flat[0]) not in (float, int) or math.prod(shape) < protocol.PACKED or len(flat) != math.prod(shape):
        return None
    for code, fmt in (("f64", "d"),) if type(flat[0]) is float else (("u8", "B"), ("i64", "q")):
        try:
            data = struct.pack(f"<{len(flat)}{fmt}", *flat)
        except struct.error:
            continue
        return {code: base64.b64encode(data).decode("ascii"), "shape": shape}
    return None


def reference_frame(message: protocol.Message) -> bytes:
    body = reference_fields(message)
    body["kind"] = message.kind
    data = json.dumps(body, separators=(",", ":")).encode()
    return struct.pack(">I", len(data)) + data
