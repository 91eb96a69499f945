"""A job's torchrun, started by the command: what it tells the command before the job starts.

``cossim-tui [check] torchrun [TORCHRUN_OPTIONS] SCRIPT ARGS`` hands the user's torchrun
arguments, unread, to ``python -m cossim_tui.torchrun`` (``__main__``), the job's torchrun
process (``start``): it reads them with torchrun's own parser, which imports torch, and the
command itself never does (torch's import is ~1.5 s that a job's start would otherwise pay
twice). That process answers over a socket the command gave it: the script or module it found
and the script's arguments (``Parsed``), or what to print and the exit status when the command
line starts no job (``Ended``: a bad option, ``--help``, a missing script). Then it waits for
the command's go (``GO``; the socket closing instead means "give up") and runs torchrun's
``main`` itself.

Nothing here imports torch: the command (``job``) imports this, and only ``__main__`` does.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import msgspec

from cossim_tui.launcher import end_group
from cossim_tui.session.events import Target
from cossim_tui.session.exits import EXIT_CANNOT_START

GO = b"g"
"""The command's go: torchrun may start the workers now."""


class Parsed(msgspec.Struct, tag="parsed"):
    """torchrun read the command line: what its workers run (a script, or a module with ``-m``)."""

    script: str | None = None
    module: str | None = None
    args: list[str] = []


class Ended(msgspec.Struct, tag="ended"):
    """The command line starts no job: what the command prints (``out`` on its stdout, ``err``
    on its stderr), and its exit status: 0 after ``--help``, 2 for a bad or refused option or a
    missing script (CONTRACT: "could not start the run")."""

    status: int
    out: str = ""
    err: str = ""


Verdict = Parsed | Ended

_DECODER = msgspec.json.Decoder(Verdict)


def encode(verdict: Verdict) -> bytes:
    return msgspec.json.encode(verdict)


def decode(data: bytes) -> Verdict:
    """The verdict in ``data``; ``msgspec.DecodeError`` when it is not one."""
    return _DECODER.decode(data)


def command_line(fd: int, torchrun_args: list[str]) -> list[str]:
    """How the command starts a job's torchrun: the socket's ``fd`` (inherited: ``pass_fds``) goes
    in this process's argv, never in the environment, which the workers would inherit."""
    return [sys.executable, "-m", "cossim_tui.torchrun", str(fd), *torchrun_args]


class NoJob(Exception):
    """The command line starts no job (``ended``: what the command prints, and its exit status)."""

    def __init__(self, ended: Ended) -> None:
        super().__init__((ended.err or ended.out).strip())
        self.ended = ended


def start(torchrun_args: list[str], env: dict[str, str], **popen: object) -> tuple[subprocess.Popen, socket.socket, Target]:
    """Start the job's torchrun on the user's ``torchrun_args`` and wait for what its parser
    read: the process (waiting for the go), the socket to give the go on (``GO``; closing it
    gives up), and the target. ``NoJob`` when there is no job to run; nothing is left running."""
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(command_line(theirs.fileno(), torchrun_args), env=env, pass_fds=(theirs.fileno(),), start_new_session=True, **popen)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    try:
        verdict = _verdict(ours)
    except BaseException:
        ours.close()
        end_group(process, 1.0)
        raise
    if isinstance(verdict, Parsed):
        return process, ours, Target(script=verdict.script, module=verdict.module, args=verdict.args)
    ours.close()
    try:
        process.wait(timeout=10)  # (it ends by itself once it has answered)
    except subprocess.TimeoutExpired:
        pass
    end_group(process, 1.0)
    if verdict is None:
        # It ended before it had read its options (torch is missing, say): its output says why.
        said = process.stdout.read().decode(errors="replace").strip() if process.stdout is not None else ""
        reason = f"torchrun ended before it read its options (status {process.returncode})" + (f":\n{said}" if said else "")
        verdict = Ended(EXIT_CANNOT_START, err=f"cossim-tui: error: {reason}\n")
    raise NoJob(verdict)


def _verdict(channel: socket.socket) -> Verdict | None:
    """What torchrun's process says (all of it: it shuts its side once it has), or ``None``
    when it ended without a word."""
    data = b""
    while chunk := channel.recv(65536):
        data += chunk
    if not data:
        return None
    try:
        return decode(data)
    except msgspec.DecodeError as exc:
        return Ended(EXIT_CANNOT_START, err=f"cossim-tui: error: torchrun's process answered what cossim-tui cannot read ({exc})\n")
