"""The agent in the test process: a channel that keeps what it sends, and a script run under it
the way the child runs one under ``check``, without starting the child.

A ``check`` subprocess costs about two seconds, most of it importing torch; the same script run
here costs what the script costs. ``run_script`` does what ``agent.bootstrap`` does around the
script (argv, ``__main__``, ``sys.path[0]``, the cwd, the end reported as the script ended) and
what ``headless`` does with the messages (the report, the exit status), and then puts back
everything the agent patched in torch and everything the script could have changed in this
process, so that the next test finds torch as it was.

``ScriptThread`` runs a script the same way on a thread of its own, with any settings, and lets
the test drive it over the channel as the launcher drives a child (pause, step, resume, the
break condition): the agent's behaviour at a pause is tested here, and only what needs a real
process (the command line, exit statuses, killing, workers) starts one.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import json
import os
import queue
import random
import runpy
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

from waiting import parked_in, until

from cossim_tui import protocol
from cossim_tui.agent import hooks, intercept
from cossim_tui.agent.controller import Controller
from cossim_tui.protocol import AgentConfig, encode_for_tools
from cossim_tui.report import ReportBuilder
from cossim_tui.session.config import check_config
from cossim_tui.session.events import ScriptExited, Target
from cossim_tui.session.exits import check_status


class KeptMessages:
    """A channel (what ``Controller`` sends on) that decodes and keeps every message."""

    def __init__(self) -> None:
        self.messages: list[protocol.Message] = []
        self.controller: Controller | None = None
        """The controller sending on it, once ``_run_under_agent`` has made one."""

    def send_now(self, data: bytes) -> int:
        self.send_bytes(data)
        return len(data)

    def send_bytes(self, data: bytes) -> None:
        self.messages.append(protocol.decode_message(data[4:]))

    def receive(self) -> Any:
        # No command ever comes; returning would tell the controller its launcher is gone.
        threading.Event().wait()

    @property
    def steps(self) -> list[protocol.StepCaptured]:
        return [m for m in self.messages if isinstance(m, protocol.StepCaptured)]


def free_run(channel: Any, pictures: str = "none") -> Controller:
    """The agent as ``check`` sets it (``pictures="paced"``: the TUI running freely)."""
    return Controller(channel, AgentConfig(mode="run", break_on=["never"], pictures=pictures))  # type: ignore[arg-type]


_MISSING = object()


def _patched_places() -> list[tuple[Any, str]]:
    """Every attribute the agent replaces (``intercept``, ``Provenance``, ``TrainingContext``)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import dataloader

    import cossim_tui

    places = [
        (F, "cosine_similarity"),
        (F, "cosine_embedding_loss"),
        (torch, "cosine_similarity"),
        (torch.nn.Module, "__call__"),
        (dataloader.DataLoader, "__iter__"),
        (dataloader._BaseDataLoaderIter, "__next__"),
        (torch.Tensor, "backward"),
        (cossim_tui, "_probe"),
        (intercept, "_sink"),
        # intercept_matrix: F.normalize and the matrix products
        (F, "normalize"),
        (torch, "matmul"),
        (torch, "mm"),
        (torch, "einsum"),
        (torch.Tensor, "__matmul__"),
        (torch.Tensor, "matmul"),
        (torch.Tensor, "mm"),
    ]
    graph = getattr(torch.cuda, "CUDAGraph", None)
    if graph is not None:
        places.append((graph, "capture_begin"))
    return places


@contextmanager
def torch_restored() -> Iterator[None]:
    """Whatever the agent patches or remembers, and a script may change, in this process is put
    back after."""
    import numpy
    import torch
    from torch.optim import optimizer

    places = [(owner, name, vars(owner).get(name, _MISSING)) for owner, name in _patched_places()]
    post_hooks = dict(optimizer._global_optimizer_post_hooks)
    pre_hooks = dict(optimizer._global_optimizer_pre_hooks)
    meta_path = list(sys.meta_path)
    # What the agent remembers of ``--watch`` targets: said once per process, wrapped at import.
    watches, pending = dict(intercept._watches), {name: list(c) for name, c in hooks._hook.pending.items()}
    rng = (torch.get_rng_state(), random.getstate(), numpy.random.get_state())
    settings = (torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled())
    try:
        yield
    finally:
        for owner, name, value in places:
            if value is _MISSING:
                if name in vars(owner):
                    delattr(owner, name)
            else:
                setattr(owner, name, value)
        for registered, kept in ((optimizer._global_optimizer_post_hooks, post_hooks), (optimizer._global_optimizer_pre_hooks, pre_hooks)):
            registered.clear()
            registered.update(kept)
        sys.meta_path[:] = meta_path
        intercept._watches.clear()
        intercept._watches.update(watches)
        hooks._hook.pending.clear()
        hooks._hook.pending.update(pending)
        torch.set_rng_state(rng[0])
        random.setstate(rng[1])
        numpy.random.set_state(rng[2])
        torch.set_num_threads(settings[0])
        torch.set_default_dtype(settings[1])
        torch.set_grad_enabled(settings[2])


@contextmanager
def _own_modules_forgotten(*folders: Path) -> Iterator[None]:
    """Modules the script imported from its own folders (``mypkg`` next to ``train.py``) are
    dropped after it, as its process would drop them: the next test's ``mypkg`` is its own."""
    before = set(sys.modules)
    roots = tuple(str(Path(folder).resolve()) + os.sep for folder in folders)
    try:
        yield
    finally:
        for name in set(sys.modules) - before:
            where = getattr(sys.modules.get(name), "__file__", None) or ""
            if where.startswith(roots):
                del sys.modules[name]


@dataclass
class ScriptRun:
    """What ``check`` would have said of a script run in this process."""

    script: str
    messages: list[protocol.Message]
    exited: ScriptExited
    report: dict[str, Any]
    """The ``--json`` report, as the file reads back."""
    returncode: int
    """``check``'s exit status, with the ``fail_on`` it was run with."""
    output: str = ""

    @property
    def steps(self) -> list[protocol.StepCaptured]:
        return [m for m in self.messages if isinstance(m, protocol.StepCaptured)]


def run_script(
    path: Path,
    *args: str,
    cwd: Path | None = None,
    fail_on: str = "error",
    ignore: tuple[str, ...] = (),
    watch: tuple[str, ...] = (),
    threads: int | None = 1,
) -> ScriptRun:
    """``cossim-tui check --fail-on FAIL_ON [--watch W ...] SCRIPT ARGS`` from ``cwd`` (the script's directory
    if not given; ``SCRIPT`` is the path relative to it), run here.

    As under ``check``: the agent's settings are ``check_config``'s; the script sees
    ``sys.argv == [SCRIPT, *ARGS]``, ``__name__ == "__main__"``, its directory first on
    ``sys.path``, ``cwd`` as its working directory, and torch's ``threads`` (``OMP_NUM_THREADS``
    of the ``check`` it stands for; ``None``: torch's default); its end is reported as
    ``agent.bootstrap`` reports it. What it prints (and the agent says in its output, as of a
    ``--watch`` target) is kept in ``output``, stdout and stderr together.
    """
    path = Path(path).resolve()
    cwd = path.parent if cwd is None else Path(cwd)
    name = os.path.relpath(path, cwd)
    config = check_config(SimpleNamespace(ignore=list(ignore), watch=list(watch), max_steps=None, record=None))
    channel = KeptMessages()
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        _run_under_agent(channel, config, path, name, args, cwd, threads)
    run = _as_check(name, args, channel.messages, fail_on)
    run.output = output.getvalue()
    return run


def _run_under_agent(
    channel: Any, config: AgentConfig, path: Path, name: str, args: tuple[str, ...], cwd: Path, threads: int | None
) -> None:
    """The script run here under a ``Controller`` on ``channel``, as ``agent.bootstrap`` runs it
    (see ``run_script``); this process is put back as it was after."""
    import torch

    saved_argv, saved_path, saved_cwd = list(sys.argv), list(sys.path), os.getcwd()
    with torch_restored(), _own_modules_forgotten(path.parent):
        controller = Controller(channel, config)  # type: ignore[arg-type]
        channel.controller = controller
        try:
            os.chdir(cwd)
            sys.argv = [name, *args]
            sys.path.insert(0, os.path.dirname(os.path.realpath(path)))
            if threads is not None:
                torch.set_num_threads(threads)
            controller.hello(name, sys.argv)
            controller.install()
            try:
                # A fresh __main__ module for the script; runpy puts the test's back after.
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as exc:
                code = exc.code
                controller.script_ended("finished", code if isinstance(code, int) else (0 if code is None else 1), None)
            except Exception as exc:  # noqa: BLE001 - the script failed: reported as bootstrap does
                controller.script_ended("error", 1, f"{type(exc).__name__}: {exc}")
            else:
                controller.script_ended("finished", 0, None)
        finally:
            sys.argv, sys.path[:] = saved_argv, saved_path
            os.chdir(saved_cwd)


@functools.cache
def run_plain_here(path: Path, *args: str) -> str:
    """What ``python SCRIPT ARGS`` prints (stdout and stderr, in order), the script run here
    without the agent, from its directory, with one torch thread; once per script and args."""
    import torch

    path = Path(path).resolve()
    output = io.StringIO()
    saved_argv, saved_path, saved_cwd = list(sys.argv), list(sys.path), os.getcwd()
    with torch_restored(), _own_modules_forgotten(path.parent), contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            os.chdir(path.parent)
            sys.argv = [path.name, *args]
            sys.path.insert(0, str(path.parent))
            torch.set_num_threads(1)
            runpy.run_path(str(path), run_name="__main__")
        finally:
            sys.argv, sys.path[:] = saved_argv, saved_path
            os.chdir(saved_cwd)
    return output.getvalue()

def _as_check(name: str, args: tuple[str, ...], messages: list[protocol.Message], fail_on: str) -> ScriptRun:
    """What ``headless._check`` makes of the messages: the report and the exit status. The
    process's exit code is the one the agent reported (``launcher.Run._exit_event``)."""
    exited = _exited(next(m for m in messages if isinstance(m, protocol.ScriptEnded)))
    builder = ReportBuilder(Target(script=name, args=list(args)))
    for message in messages:
        if isinstance(message, protocol.StepCaptured):
            builder.add(message)
    report = json.loads(encode_for_tools(builder.report(exited)))
    return ScriptRun(name, messages, exited, report, check_status(exited, builder.tally, fail_on))


# -- a script the test talks to while it runs ------------------------------------------------


class _Stopped(BaseException):
    """Raised in the script at its next write once the test is over: it ends there."""


class _Commands(KeptMessages):
    """A channel the test sends commands on; what the agent sends can be awaited."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: queue.Queue[protocol.Message] = queue.Queue()
        self.arrived: queue.Queue[protocol.Message] = queue.Queue()

    def send_bytes(self, data: bytes) -> None:
        super().send_bytes(data)
        self.arrived.put(self.messages[-1])

    def receive(self) -> Any:
        # Never None: the controller would take that for a launcher gone and end this process.
        return self.commands.get()


class _Output(io.TextIOBase):
    """The script's stdout and stderr, kept in the order written."""

    def __init__(self, stopped: threading.Event) -> None:
        self._parts: list[str] = []
        self._lock = threading.Lock()
        self._stopped = stopped

    def write(self, text: str) -> int:
        if self._stopped.is_set():
            raise _Stopped
        with self._lock:
            self._parts.append(text)
        return len(text)

    def writable(self) -> bool:
        return True

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self._parts)


class ScriptThread:
    """A script run here under the agent with ``config``, on a thread of its own, driven by the
    test over the channel as the launcher's ``Run`` is: the same calls as ``integration.live.LiveRun``
    (``next_step``, ``send``, ``wait_exit``, ``output``...), without a child importing torch.

    The script starts as ``run_script`` starts it (argv, ``__main__``, ``sys.path[0]``, the
    cwd); its output is kept, not printed. ``stop()`` (the fixture's teardown) ends it at its
    next write or call, wherever the test left it.
    """

    def __init__(self, path: Path, args: tuple[str, ...], config: AgentConfig, cwd: Path | None = None) -> None:
        path = Path(path).resolve()
        cwd = path.parent if cwd is None else Path(cwd)
        self.events: list[Any] = []
        self._channel = _Commands()
        self._stopped = threading.Event()
        self._output = _Output(self._stopped)
        self._failure: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run, args=(config, path, os.path.relpath(path, cwd), args, cwd), name="test-script", daemon=True
        )
        self.thread.start()

    def _run(self, config: AgentConfig, path: Path, name: str, args: tuple[str, ...], cwd: Path) -> None:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self._output
        try:
            _run_under_agent(self._channel, config, path, name, args, cwd, threads=1)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test as an event
            self._failure = exc
        finally:
            if sys.stdout is self._output:  # pytest's capture, between a test's phases, may have put its own
                sys.stdout, sys.stderr = saved
            ended = next((m for m in self._channel.messages if isinstance(m, protocol.ScriptEnded)), None)
            self._channel.arrived.put(_exited(ended))  # type: ignore[arg-type]

    # -- waiting (as LiveRun) -------------------------------------------------------------

    def next_event(self, timeout: float = 60.0) -> Any:
        try:
            event = self._channel.arrived.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s; output:\n{self.output}") from None
        self.events.append(event)
        if isinstance(event, ScriptExited) and self._failure is not None and not isinstance(self._failure, _Stopped):
            raise AssertionError("the harness failed around the script") from self._failure
        return event

    def next_step(self, timeout: float = 60.0) -> protocol.StepCaptured:
        """The next ``StepCaptured``; fails if the script ends first."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if isinstance(event, protocol.StepCaptured):
                return event
            if isinstance(event, ScriptExited):
                raise AssertionError(f"the script ended ({event}) before the next step; output:\n{self.output}")

    def wait_exit(self, timeout: float = 60.0) -> ScriptExited:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if isinstance(event, ScriptExited):
                self.thread.join(timeout=5)
                return event

    def wait_output(self, text: str, timeout: float = 60.0) -> None:
        """Wait until ``text`` has appeared in the script's output."""
        until(lambda: text in self.output or not self.thread.is_alive(), timeout, f"{text!r} in the output")
        assert text in self.output, f"the script ended before printing {text!r}; output:\n{self.output}"

    def assert_no_step(self) -> None:
        """The script waits for a command (its thread is parked in the agent's wait, where only
        a command wakes it), and no step or end has come since the last one read: none can."""
        until(lambda: parked_in(self.thread, "_wait_for_command"), 30, "the script to wait for a command")
        while True:
            try:
                event = self._channel.arrived.get_nowait()
            except queue.Empty:
                return
            self.events.append(event)
            assert not isinstance(event, (protocol.StepCaptured, protocol.ScriptEnded, ScriptExited)), f"unexpected {event!r}"

    # -- what arrived so far --------------------------------------------------------------

    @property
    def output(self) -> str:
        return self._output.text

    @property
    def steps(self) -> list[protocol.StepCaptured]:
        return [e for e in self.events if isinstance(e, protocol.StepCaptured)]

    def send(self, message: protocol.Message) -> None:
        self._channel.commands.put(message)

    def stop(self) -> None:
        """End the script wherever it is: its next write raises, and the agent lets it go on
        from a pause and stops capturing (as when the launcher is gone, without ending this
        process)."""
        self._stopped.set()
        controller = self._channel.controller
        if controller is not None:
            with controller._resumed:
                controller._connected = False
                controller._resumed.notify_all()
        # A script that writes nothing more (or writes where pytest's capture put stdout back)
        # ends at its next bytecode.
        if self.thread.ident is not None and self.thread.is_alive():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread.ident), ctypes.py_object(_Stopped))
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the script did not end"


def _exited(ended: protocol.ScriptEnded | None) -> ScriptExited:
    """The launcher's ``ScriptExited`` for the agent's end (``launcher.Run._exit_event``)."""
    if ended is None:
        return ScriptExited("error", 1, None, "the script ended without the agent saying so")
    if ended.status == "finished" and ended.exit_code != 0:
        return ScriptExited("finished", ended.exit_code, None, None)
    return ScriptExited(ended.status, ended.exit_code, None, ended.exception)
