"""Starts the training script in a child process and owns everything that comes out of it.

The child runs ``python -m cossim_tui.agent``, which sets itself up exactly as ``python
SCRIPT`` would and then runs the script. We talk to it over one end of a socket pair that it
inherits (no port, nothing another user can reach). Its stdout and stderr go to one pipe,
so their order survives, and reach the caller as ``OutputReceived`` events. Its stdin is
``/dev/null``, since the terminal belongs to the app, unless the caller passes its own on
(``check``: ``printf 'bob\n' | cossim-tui check ask.py`` reads as under python). The child
leads its own process group, so DataLoader workers and anything else it starts end with it.

The commands start the child first of all (``Run.early``), before their own imports and
settings, and it waits for a ``Start`` before the script's first line. Where this process
may be forked (POSIX, one thread, nothing imported that keeps threads of its own) the child
is a fork of it: an interpreter already up, whose ``site`` and whose imports the agent needs
have run, which is most of what a second interpreter would cost before the script's first
line. The agent's ``bootstrap`` then makes the script's process what ``python SCRIPT``
would have made it, in either case.

``Run.events()`` is the one reader: it yields protocol messages, output and, last, a
``ScriptExited`` that merges what the agent said with how the process really ended: ``quit``
when ``terminate`` ended a process that was still running and whose script had not failed on
its own (a script that raised is reported as failed even when ``terminate`` ended the threads
it left running).
"""

from __future__ import annotations

import codecs
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from cossim_tui import protocol
from cossim_tui.protocol import CONFIG_ENV, FD_ENV, AgentConfig
from cossim_tui.session.events import (
    ChannelProblem,
    OutputReceived,
    RunEvent,
    ScriptExited,
    Target,
)

if TYPE_CHECKING:
    import subprocess

# subprocess is imported where a child is spawned or waited for: never before a fork, since
# the forked child would keep it (see ``Run.early``).



_FORK_BREAKS = ("torch", "numpy", "textual")
"""Modules that start threads of their own (thread pools, an event loop): a fork of a process
that has imported one is not started early by forking."""


def can_fork() -> bool:
    """Whether the child can be a fork of this process: POSIX, one thread (a fork copies only
    the thread that calls it; on Linux, threads started outside Python count too), and none
    of ``_FORK_BREAKS`` imported."""
    if not hasattr(os, "fork") or threading.active_count() != 1:
        return False
    if any(name in sys.modules for name in _FORK_BREAKS):
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # no /proc: Python's own count it is
        return True


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
        pass_stdin: bool = False,
        _early: Literal["fork", "spawn"] | None = None,
        _forget: frozenset[str] = frozenset(),
    ) -> None:
        self.target = target
        self.config = config or AgentConfig()
        self._parent_sock, child_sock = socket.socketpair()
        self.process: subprocess.Popen | _ForkedChild
        self.started = _early is None
        """Whether the child has its settings (``start``): until then it waits, the script unrun."""
        if _early == "fork" and python is None and cwd is None and env is None and can_fork():
            self.process = _fork(target, child_sock, self._parent_sock, _forget, pass_stdin)
        else:
            settings = None if _early else protocol.encode_body(self.config).decode()
            self.process = _spawn(target, child_sock, settings, python, cwd, env, pass_stdin)
        self.connection = protocol.Connection(self._parent_sock)
        self.exited: ScriptExited | None = None
        self._ended: protocol.ScriptEnded | None = None
        self._quit = False
        """``terminate`` found the script still running: the user (or the caller) ended it."""
        self._ended_before_quit: protocol.ScriptEnded | None = None
        """What the agent had said of the script's end when ``terminate`` began."""

    @classmethod
    def early(cls, target: Target, *, fork: bool = False, forget: frozenset[str] = frozenset(), pass_stdin: bool = False) -> Run:
        """Start the child now, before this process knows the agent's settings or has imported
        what it needs: the two get ready side by side. The child waits, its script unrun,
        until ``start``; ``terminate`` ends it if that never comes. With ``fork`` (only for
        the command itself: ``cli.command``) a fork of this process where ``can_fork``, else
        a new interpreter; a forked child drops the modules named in ``forget`` from
        ``sys.modules``, so that its script imports its own of those names, as under python.
        With ``pass_stdin`` the script reads this process's stdin, else ``/dev/null``."""
        return cls(target, pass_stdin=pass_stdin, _early="fork" if fork else "spawn", _forget=forget)

    def start(self, config: AgentConfig) -> None:
        """Hand an early child its settings: the script starts."""
        if self.started:
            return
        self.config, self.started = config, True
        self.send(protocol.Start(config=config))

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

    def events(self) -> Iterator[RunEvent]:
        """Everything the run produces, in order, until and including ``ScriptExited``."""
        assert self.process.stdout is not None
        out_fd = self.process.stdout.fileno()
        sock = self._parent_sock
        sock.setblocking(False)
        reader = OutputReader(out_fd)
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
                        output, still_open = reader.read()
                        if output is not None:
                            yield output
                        if not still_open:
                            selector.unregister(out_fd)
                            open_streams -= 1
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
                            if isinstance(message, protocol.ScriptEnded) and message.rank is None:
                                # (A rank the script spawned says when its function ends: not the script's end.)
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
        killed_by = -code if code is not None and code < 0 else None
        # What the script said of its own end before anyone ended it (a SIGTERM handler of the
        # script's that raises once ``terminate`` has begun is the quit, not a failure).
        own_end = self._ended_before_quit if self._quit else ended
        if own_end is not None and own_end.status in ("error", "not-found"):
            # The script had failed on its own before anything ended it: that is how it ended.
            exit_code = None if killed_by is not None else (code if own_end.status != "not-found" else own_end.exit_code)
            return ScriptExited(own_end.status, exit_code, killed_by, own_end.exception)
        if self._quit:
            # ``terminate`` ended it while it still ran; its own SIGTERM handler may have exited 0.
            return ScriptExited("quit", None if killed_by is not None else code, killed_by, None)
        if killed_by is not None:
            return ScriptExited("killed", None, killed_by, ended.exception if ended else None)
        if ended is not None:
            if ended.status == "finished" and code != 0:
                # sys.exit(n) inside the script, or a failure during interpreter shutdown.
                return ScriptExited("finished", code, None, None)
            return ScriptExited(ended.status, code if ended.status != "not-found" else ended.exit_code, None, ended.exception)
        return ScriptExited("error", code, None, "the script ended before the agent could report")

    def terminate(self, grace: float = 0.5) -> None:
        """End the child and its whole process group: SIGTERM, then SIGKILL after ``grace``."""
        if self.process.poll() is None:
            self._quit, self._ended_before_quit = True, self._ended
        end_group(self.process, grace)
        self.connection.close()

    def _kill_group(self) -> None:
        signal_group(self.process, signal.SIGKILL)


class OutputReader:
    """The child's output pipe (stdout and stderr together), read as text: a character split
    between two reads arrives whole, and what is left at the end is decoded then."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def read(self) -> tuple[OutputReceived | None, bool]:
        """What one read of a ready pipe gives (``None`` when no whole character yet), and
        whether the pipe is still open."""
        chunk = os.read(self.fd, 65536)
        text = self._text.decode(chunk, final=not chunk)
        return (OutputReceived(text) if text else None), bool(chunk)


def signal_group(process: subprocess.Popen | _ForkedChild, sig: int) -> None:
    """``sig`` to the process group ``process`` leads."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        # A child forked a moment ago may not lead its group yet: the child alone, then.
        if process.poll() is None:
            try:
                os.kill(process.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def end_group(process: subprocess.Popen | _ForkedChild, grace: float) -> None:
    """End the process group ``process`` leads: SIGTERM if it still runs, SIGKILL after ``grace``
    seconds (to whatever of the group is left, its DataLoader workers say), and reap it."""
    import subprocess

    if process.poll() is None:
        signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    signal_group(process, signal.SIGKILL)
    try:
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        pass


def _spawn(
    target: Target,
    child_sock: socket.socket,
    settings: str | None,
    python: str | None,
    cwd: str | None,
    env: dict[str, str] | None,
    pass_stdin: bool,
) -> subprocess.Popen:
    """``python -m cossim_tui.agent`` on ``target``, handed ``child_sock`` and, unless it is to
    wait for a ``Start``, its ``settings`` (JSON), both in its environment."""
    import subprocess

    child_env = dict(os.environ if env is None else env)
    child_env[FD_ENV] = str(child_sock.fileno())
    if settings is not None:
        child_env[CONFIG_ENV] = settings
    command = [python or sys.executable, "-m", "cossim_tui.agent", *target.command_line]
    try:
        return subprocess.Popen(
            command,
            stdin=None if pass_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(child_sock.fileno(),),
            env=child_env,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        child_sock.close()


class _ForkedChild:
    """What ``Run`` uses of a ``subprocess.Popen``, for a child made by ``os.fork``. As Popen
    does, one thread at a time waits for the child (the app's reader, and ``terminate`` on the
    main thread, may both ask); a status once read is never overwritten."""

    def __init__(self, pid: int, stdout: int) -> None:
        self.pid = pid
        self.stdout = os.fdopen(stdout, "rb", buffering=0)
        self.returncode: int | None = None
        self._waiting = threading.Lock()

    def poll(self) -> int | None:
        if self.returncode is None and self._waiting.acquire(blocking=False):
            try:
                self._reap(os.WNOHANG)
            finally:
                self._waiting.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            with self._waiting:
                while self.returncode is None:
                    self._reap(0)
            return self.returncode
        deadline, delay = time.monotonic() + timeout, 0.0005
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                import subprocess

                raise subprocess.TimeoutExpired(["cossim-tui", "(forked child)"], timeout)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)
        return self.returncode  # type: ignore[return-value]

    def _reap(self, options: int) -> None:
        """``waitpid`` once; the caller holds ``_waiting``."""
        if self.returncode is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, options)
        except ChildProcessError:  # reaped by someone else (a SIGCHLD set to ignore): unknown
            self.returncode = 0
            return
        except InterruptedError:
            return
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)


def _fork(
    target: Target, child_sock: socket.socket, parent_sock: socket.socket, forget: frozenset[str], pass_stdin: bool
) -> _ForkedChild:
    """Fork; in the parent, the child. In the child this never returns: the agent runs the
    script there, and the interpreter ends the way ``python SCRIPT``'s would (``SystemExit``
    travels up through the caller's frames, which hold no handlers: see ``cli.command``)."""
    read, write = os.pipe()
    for stream in (sys.stdout, sys.stderr):  # what is buffered now must not be written twice
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    pid = os.fork()
    if pid:
        child_sock.close()
        os.close(write)
        return _ForkedChild(pid, read)
    try:
        os.setsid()
        parent_sock.close()
        os.close(read)
        if not pass_stdin:
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        for name in forget:
            sys.modules.pop(name, None)
        from cossim_tui.agent import bootstrap

        bootstrap.main(target.command_line, sock=child_sock)
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - never back into the launcher's code in the child
        import traceback

        traceback.print_exc()
        os._exit(1)
    raise SystemExit(0)
