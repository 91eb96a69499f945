"""Frames over a byte stream: a 4-byte big-endian length, then one ``codec`` body.

``FrameDecoder`` is fed whatever ``recv`` returned and never trusts a length prefix beyond
``MAX_FRAME``; ``Connection`` is blocking, thread-safe message I/O on one connected socket.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any

from cossim_tui.protocol.codec import MAX_FRAME, ProtocolError, decode_message, encode

_HEADER = struct.Struct(">I")


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

    def send(self, message: Any) -> None:
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

    def receive(self) -> Any:
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
