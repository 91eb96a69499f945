"""How a rank of a job proves it belongs, before anything it sends is decoded.

The ranks of a ``torchrun`` job are not the screen's children (torchrun starts them, on this
node or on others), so they reach it over TCP rather than an inherited socket. A listener that
anyone on the network could write to must not decode a stranger's bytes: it sends each new
peer a random challenge, and the peer answers with the HMAC-SHA256 of it under the job's
secret (``COSSIM_TUI_TOKEN``). Both are fixed-size, so nothing is parsed before the answer is
checked, and the secret itself never travels. Only then do frames flow, as on a local run.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket

CHALLENGE_SIZE = 32
ANSWER_SIZE = hashlib.sha256().digest_size


def challenge() -> bytes:
    return os.urandom(CHALLENGE_SIZE)


def answer(token: str, challenge_bytes: bytes) -> bytes:
    return hmac.new(token.encode(), b"cossim-tui/1 " + challenge_bytes, hashlib.sha256).digest()


def verify(token: str, challenge_bytes: bytes, given: bytes) -> bool:
    return len(given) == ANSWER_SIZE and hmac.compare_digest(answer(token, challenge_bytes), given)


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from a blocking socket; fewer when the peer closes first."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def join(address: tuple[str, int], token: str, timeout: float = 30.0) -> socket.socket:
    """Connect to a job's listener and answer its challenge (the rank's side)."""
    sock = socket.create_connection(address, timeout=timeout)
    try:
        asked = receive_exactly(sock, CHALLENGE_SIZE)
        if len(asked) != CHALLENGE_SIZE:
            raise ConnectionError(f"cossim-tui at {address[0]}:{address[1]} closed the connection before its challenge")
        sock.sendall(answer(token, asked))
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (``[::1]:PORT`` for IPv6) as (host, port)."""
    host, colon, port = text.rpartition(":")
    if not colon:
        host, port = "", text
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"expected HOST:PORT, got {text!r}") from None
    if not 0 <= number < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, number
