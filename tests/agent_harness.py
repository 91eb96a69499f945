"""The agent in the test process: a channel that keeps what it sends, and a script run under it
the way the child runs one under ``check``, without starting the child.

A ``check`` subprocess costs about two seconds, most of it importing torch; the same script run
here costs what the script costs. ``run_script`` does what ``agent.bootstrap`` does around the
script (argv, ``__main__``, ``sys.path[0]``, the cwd, the end reported as the script ended) and
what ``headless`` does with the messages (the report, the exit status), and then puts back
everything the agent patched in torch and everything the script could have changed in this
process, so that the next test finds torch as it was.
"""

from __future__ import annotations

import json
import os
import random
import runpy
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

from cossim_tui import protocol
from cossim_tui.agent import intercept
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
    """Whatever the agent patches and a script may change in this process is put back after."""
    import numpy
    import torch
    from torch.optim import optimizer

    places = [(owner, name, vars(owner).get(name, _MISSING)) for owner, name in _patched_places()]
    post_hooks = dict(optimizer._global_optimizer_post_hooks)
    pre_hooks = dict(optimizer._global_optimizer_pre_hooks)
    meta_path = list(sys.meta_path)
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
        for hooks, kept in ((optimizer._global_optimizer_post_hooks, post_hooks), (optimizer._global_optimizer_pre_hooks, pre_hooks)):
            hooks.clear()
            hooks.update(kept)
        sys.meta_path[:] = meta_path
        torch.set_rng_state(rng[0])
        random.setstate(rng[1])
        numpy.random.set_state(rng[2])
        torch.set_num_threads(settings[0])
        torch.set_default_dtype(settings[1])
        torch.set_grad_enabled(settings[2])


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
    path: Path, *args: str, cwd: Path | None = None, fail_on: str = "error", ignore: tuple[str, ...] = (), threads: int | None = 1
) -> ScriptRun:
    """``cossim-tui check --fail-on FAIL_ON SCRIPT ARGS`` from ``cwd`` (the script's directory
    if not given; ``SCRIPT`` is the path relative to it), run here.

    As under ``check``: the agent's settings are ``check_config``'s; the script sees
    ``sys.argv == [SCRIPT, *ARGS]``, ``__name__ == "__main__"``, its directory first on
    ``sys.path``, ``cwd`` as its working directory, and torch's ``threads`` (``OMP_NUM_THREADS``
    of the ``check`` it stands for; ``None``: torch's default); its end is reported as
    ``agent.bootstrap`` reports it.
    """
    import torch

    path = Path(path).resolve()
    cwd = path.parent if cwd is None else Path(cwd)
    name = os.path.relpath(path, cwd)
    config = check_config(SimpleNamespace(ignore=list(ignore), watch=[], max_steps=None, record=None))
    channel = KeptMessages()
    saved_argv, saved_path, saved_cwd = list(sys.argv), list(sys.path), os.getcwd()
    with torch_restored():
        controller = Controller(channel, config)  # type: ignore[arg-type]
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
    return _as_check(name, args, channel.messages, fail_on)


def _as_check(name: str, args: tuple[str, ...], messages: list[protocol.Message], fail_on: str) -> ScriptRun:
    """What ``headless._check`` makes of the messages: the report and the exit status. The
    process's exit code is the one the agent reported (``launcher.Run._exit_event``)."""
    ended = next(m for m in messages if isinstance(m, protocol.ScriptEnded))
    if ended.status == "finished" and ended.exit_code != 0:
        exited = ScriptExited("finished", ended.exit_code, None, None)
    else:
        exited = ScriptExited(ended.status, ended.exit_code, None, ended.exception)
    builder = ReportBuilder(Target(script=name, args=list(args)))
    for message in messages:
        if isinstance(message, protocol.StepCaptured):
            builder.add(message)
    report = json.loads(encode_for_tools(builder.report(exited)))
    return ScriptRun(name, messages, exited, report, check_status(exited, builder.tally, fail_on))
