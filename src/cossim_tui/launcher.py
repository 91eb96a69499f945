"""Starts the training script in a child process and owns everything that comes out of it.

The child runs ``python -m cossim_tui.agent``, which sets itself up exactly as ``python
SCRIPT`` would and then runs the script. We talk to it over one end of a socket pair that it
inherits (no port, nothing another user can reach). Its stdout and stderr go to one pipe,
so their order survives, and reach the caller as ``OutputReceived`` events; its stdin is
``/dev/null``, never the terminal. The child leads its own process group, so DataLoader
workers and anything else it starts end with it.

``Run.events()`` is the one reader: it yields protocol messages, output and, last, a
``ScriptExited`` that merges what the agent said with how the process really ended.
"""

from __future__ import annotations

import codecs
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Union

from cossim_tui import protocol
from cossim_tui.protocol import CONFIG_ENV, FD_ENV, AgentConfig



@dataclass
class Target:
    """What to run: a script path or a module, and the arguments that belong to it."""

    script: str | None = None
    module: str | None = None
    args: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.script if self.script is not None else f"-m {self.module}"

    @property
    def argv(self) -> list[str]:
        return [self.script if self.script is not None else str(self.module), *self.args]


@dataclass
class OutputReceived:
    """Text the script wrote to stdout or stderr."""

    text: str


@dataclass
class ChannelProblem:
    """Something malformed arrived on the channel; the run goes on without it."""

    reason: str


@dataclass
class ScriptExited:
    """The child is gone. Always the last event of a run."""

    status: Literal["finished", "error", "stopped", "killed", "not-found"]
    exit_code: int | None
    signal: int | None
    exception: str | None

    @property
    def description(self) -> str:
        if self.status == "killed":
            name = _signal_name(self.signal)
            return f"killed by signal {self.signal} ({name})" if name else "killed"
        if self.status == "error":
            return f"failed: {self.exception}" if self.exception else f"failed (exit code {self.exit_code})"
        if self.status == "stopped":
            return "stopped after --max-steps"
        if self.status == "not-found":
            return f"could not start: {self.exception}"
        return f"finished (exit code {self.exit_code})"


Event = Union[protocol.Message, OutputReceived, ChannelProblem, ScriptExited]


def _signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


class Run:
    """One run of the user's script under the agent."""

    def __init__(
        self,
        target: Target,
        config: AgentConfig | None = None,
        *,
        python: str | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.target = target
        self.config = config or AgentConfig()
        self._parent_sock, child_sock = socket.socketpair()
        child_env = dict(os.environ if env is None else env)
        child_env[FD_ENV] = str(child_sock.fileno())
        child_env[CONFIG_ENV] = json.dumps(protocol.to_jsonable(self.config))
        command = [python or sys.executable, "-m", "cossim_tui.agent"]
        command += ["-m", target.module] if target.module is not None else [str(target.script)]
        command += target.args
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(child_sock.fileno(),),
                env=child_env,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            child_sock.close()
        self.connection = protocol.Connection(self._parent_sock)
        self.exited: ScriptExited | None = None
        self._ended: protocol.ScriptEnded | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def target_name(self) -> str:
        return self.target.name

    def send(self, message: protocol.Message) -> None:
        """A command to the agent; quietly dropped when the script has already gone."""
        try:
            self.connection.send(message)
        except OSError:
            pass

    def events(self) -> Iterator[protocol.Message | OutputReceived | ChannelProblem | ScriptExited]:
        """Everything the run produces, in order, until and including ``ScriptExited``."""
        assert self.process.stdout is not None
        out_fd = self.process.stdout.fileno()
        sock = self._parent_sock
        sock.setblocking(False)
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        frames = protocol.FrameDecoder()
        selector = selectors.DefaultSelector()
        selector.register(out_fd, selectors.EVENT_READ, "out")
        selector.register(sock, selectors.EVENT_READ, "sock")
        open_streams = 2
        try:
            while open_streams:
                ready = selector.select(timeout=0.05)
                # Once the child is gone, its DataLoader workers may still hold the pipe and the
                # socket open: drain what is there, then stop waiting for an EOF that may never come.
                if not ready and self.process.poll() is not None:
                    break
                for key, _ in ready:
                    if key.data == "out":
                        chunk = os.read(out_fd, 65536)
                        if not chunk:
                            selector.unregister(out_fd)
                            open_streams -= 1
                            tail = text.decode(b"", final=True)
                            if tail:
                                yield OutputReceived(tail)
                            continue
                        decoded = text.decode(chunk)
                        if decoded:
                            yield OutputReceived(decoded)
                    else:
                        try:
                            chunk = sock.recv(262144)
                        except (BlockingIOError, InterruptedError):
                            continue
                        except OSError:
                            chunk = b""
                        if not chunk:
                            selector.unregister(sock)
                            open_streams -= 1
                            continue
                        try:
                            bodies = frames.feed(chunk)
                        except protocol.ProtocolError as exc:
                            yield ChannelProblem(str(exc))
                            selector.unregister(sock)
                            open_streams -= 1
                            continue
                        for body in bodies:
                            try:
                                message = protocol.decode_message(body)
                            except protocol.ProtocolError as exc:
                                yield ChannelProblem(str(exc))
                                continue
                            if isinstance(message, protocol.ScriptEnded):
                                self._ended = message
                            yield message
        finally:
            selector.close()
        self.process.wait()
        self._kill_group()
        self.exited = self._exit_event()
        yield self.exited

    def _exit_event(self) -> ScriptExited:
        code = self.process.returncode
        ended = self._ended
        if code is not None and code < 0:
            return ScriptExited("killed", None, -code, ended.exception if ended else None)
        if ended is not None:
            if ended.status == "finished" and code != 0:
                # sys.exit(n) inside the script, or a failure during interpreter shutdown.
                return ScriptExited("finished", code, None, None)
            return ScriptExited(ended.status, code if ended.status != "not-found" else ended.exit_code, None, ended.exception)
        return ScriptExited("error", code, None, "the script ended before the agent could report")

    def terminate(self, grace: float = 0.5) -> None:
        """End the child and its whole process group: SIGTERM, then SIGKILL after ``grace``."""
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass
        self.connection.close()

    def _kill_group(self) -> None:
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
