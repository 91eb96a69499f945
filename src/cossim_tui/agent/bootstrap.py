"""Runs the user's script in this process exactly as ``python SCRIPT`` would, with the agent in.

``python -m cossim_tui.agent SCRIPT ARGS`` (or ``-m MODULE ARGS``) is how the launcher starts
the child. Before the script's first line runs we undo every trace of that: ``sys.argv`` is
``[SCRIPT, *ARGS]``, ``sys.path[0]`` is the script's real directory (the cwd for ``-m``),
``__main__`` is a fresh module whose ``__file__`` and ``__loader__`` match CPython's, and the
agent's environment variables are gone so that subprocesses and DataLoader workers never see
them. The script's end (normal, ``sys.exit``, or an exception) is reported to the launcher,
then handled the way the interpreter handles it: same traceback, same exit status.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import json
import os
import socket
import sys
import types

from cossim_tui import protocol
from cossim_tui.agent.controller import Controller
from cossim_tui.protocol import CONFIG_ENV, CONNECT_ENV, FD_ENV, TOKEN_ENV, AgentConfig


def _connect(sock: socket.socket | None = None) -> tuple[protocol.Connection, AgentConfig]:
    """The channel to the launcher (inherited: its fd is in the environment, unless this
    process is a fork of the launcher's and has the socket already), and the agent's settings:
    from the environment, or, for a child started early, from the ``Start`` it waits for."""
    joined = sock is None and CONNECT_ENV in os.environ
    if joined:
        sock = _join_job(os.environ.pop(CONNECT_ENV), os.environ.pop(TOKEN_ENV, ""))
    if sock is None:
        sock = socket.socket(fileno=int(os.environ.pop(FD_ENV)))
        sock.set_inheritable(False)
    connection = protocol.Connection(sock)
    raw = os.environ.pop(CONFIG_ENV, None)
    if raw is not None:
        return connection, protocol.convert(json.loads(raw), AgentConfig, "settings")
    try:
        message = connection.receive()
    except (OSError, protocol.ProtocolError):
        message = None
    if not isinstance(message, protocol.Start):
        if joined:
            # A rank that is refused must not look like one that finished: torchrun ends the job.
            print("cossim-tui: this rank was refused (its COSSIM_TUI_TOKEN is not the job's), or the screen has gone", file=sys.stderr)
            os._exit(1)
        # The launcher went away (or gave up) before the script was to start: nothing runs.
        os._exit(0)
    return connection, message.config


def _join_job(address: str, token: str) -> socket.socket:
    """A rank of a job (``cossim-tui torchrun``): torchrun started this process, so it reaches
    the screen over TCP and proves the job's secret (``protocol.handshake``). A rank that cannot
    reach it runs nothing: unseen, it would only hang its peers' collectives later."""
    from cossim_tui.protocol import handshake

    try:
        return handshake.join(handshake.parse_address(address), token)
    except (OSError, ValueError) as exc:
        print(f"cossim-tui: this rank cannot reach cossim-tui at {address}: {exc}", file=sys.stderr)
        os._exit(1)


def _run_script(path: str) -> None:
    """Run the script in the interpreter's own ``__main__`` module, as ``pymain_run_file`` does.

    Reusing that module (rather than a new one) keeps its identity and its place in the
    interpreter's shutdown order the same as under ``python SCRIPT``.
    """
    # python joins a relative path to the cwd without normalising it ("../b/train.py" stays).
    absolute = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    with open(absolute, "rb") as handle:
        source = handle.read()
    code = compile(source, absolute, "exec", dont_inherit=True)
    loader = importlib.machinery.SourceFileLoader("__main__", absolute)
    exec(code, _fresh_main(__loader__=loader, __file__=absolute, __cached__=None))


def _fresh_main(**given: object) -> dict[str, object]:
    """The ``__main__`` module's namespace, emptied of our names (``python -m
    cossim_tui.agent``'s, or the command's when the child is a fork of it; neither has anything
    left to run) down to what the interpreter starts it with, plus ``given``: for a script,
    what ``pymain_run_file`` sets; for ``python -m MODULE``, runpy adds the rest."""
    namespace = sys.modules["__main__"].__dict__
    loader = namespace.get("__loader__")
    namespace.clear()
    namespace.update(
        __name__="__main__", __doc__=None, __package__=None, __loader__=loader, __spec__=None, __annotations__={}, __builtins__=builtins
    )
    namespace.update(given)
    return namespace


def _user_traceback(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` as python would print it: none of cossim-tui's frames anywhere (a call that raised
    through one of our wrappers, ``intercept.py``, shows the script's line and then torch's
    frames), and no runpy frame of ours above the script's first."""
    import runpy

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    # runpy's frames only above the script's first: a script's own runpy.run_path() keeps
    # them, as under python. (A frozen runpy's are "<frozen runpy>", which python -m shows too.)
    while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, runpy.__file__):
        tb = tb.tb_next
    kept = []
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(package):
            kept.append(tb)
        tb = tb.tb_next
    # A traceback's links can be rewritten (tb_next is writable): the exception ends the process.
    for earlier, later in zip(kept, kept[1:]):
        earlier.tb_next = later
    if kept:
        kept[-1].tb_next = None
    return kept[0] if kept else None


def _trim_chain(exc: BaseException) -> None:
    """Trim the traceback of ``exc`` and of every exception it was raised from or during
    (python prints those above it), each once."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        one = pending.pop()
        if id(one) in seen:
            continue
        seen.add(id(one))
        one.__traceback__ = _user_traceback(one.__traceback__)
        pending.extend(linked for linked in (one.__cause__, one.__context__) if linked is not None)


def main(argv: list[str] | None = None, sock: socket.socket | None = None) -> None:
    """Run the script ``argv`` names (``SCRIPT ARGS`` or ``-m MODULE ARGS``) under the agent;
    ``sock``: the channel, where this process is a fork of the launcher's (``launcher._fork``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    job = sock is None and CONNECT_ENV in os.environ
    connection, config = _connect(sock)
    controller = Controller(connection, config)

    if argv[:1] == ["-m"]:
        module_name, args = argv[1], argv[2:]
        target = f"-m {module_name}"
        if not sys.flags.safe_path:
            sys.path[0] = os.getcwd()
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError) as exc:
            spec, problem = None, f"{type(exc).__name__}: {exc}"
        else:
            problem = f"No module named {module_name!r}"
        if spec is None or spec.origin is None:
            controller.script_ended("not-found", 2, problem)
            sys.exit(2)
        sys.argv = [spec.origin, *args]
    else:
        script, args = argv[0], argv[1:]
        target = script
        if not os.path.isfile(script):
            reason = "not a file" if os.path.exists(script) else "no such file"
            controller.script_ended("not-found", 2, f"{script}: {reason}")
            sys.exit(2)
        sys.argv = [script, *args]
        if not sys.flags.safe_path:
            sys.path[0] = os.path.dirname(os.path.realpath(script))

    # A pipe is block-buffered; a terminal is line-buffered. The user watches output live.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            pass

    controller.hello(target, sys.argv, job=job)
    controller.install()
    try:
        if argv[:1] == ["-m"]:
            import runpy

            # What `python -m` itself calls: the module runs in the real __main__ module, which
            # holds what the interpreter starts it with and nothing of ours.
            _fresh_main()
            runpy._run_module_as_main(argv[1], alter_argv=True)  # type: ignore[attr-defined]
        else:
            _run_script(argv[0])
    except SystemExit as exc:
        controller.script_ended("finished", _exit_status(exc), None)
        raise
    except BaseException as exc:  # noqa: BLE001 - reported, then handled exactly like python does
        controller.script_ended("error", 1, f"{type(exc).__name__}: {exc}")
        # The traceback the hook prints is the exception's own; trim it there.
        _trim_chain(exc)
        sys.excepthook(type(exc), exc, exc.__traceback__)
        sys.exit(1)
    controller.script_ended("finished", 0, None)


def _exit_status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1
