"""The ``cossim-tui`` command line (CONTRACT.md): argument parsing and dispatch, nothing else.

Options come before SCRIPT; everything after SCRIPT (or after ``-m MODULE``) belongs to the
script, untouched. Exit status 2 means we could not start the run (or, for ``replay``, that
the file is missing or not a trace).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

_BEFORE_ARGPARSE = frozenset(sys.modules)
import argparse  # (after the look at what was loaded before it)

COMMAND_ONLY = frozenset({"argparse", "gettext", "locale", "_locale"}) - _BEFORE_ARGPARSE
"""Modules the command loads before it starts the child (to read its own arguments) that the
agent never does: a child forked from the command forgets them, so that the script finds its
own modules of these names, as under python (``launcher.Run.early``)."""

from cossim_tui.version import __version__
from cossim_tui.diagnostics.codes import CATALOG, SEVERITIES

from cossim_tui.session.exits import EXIT_CANNOT_START

if TYPE_CHECKING:
    from cossim_tui.session.events import Target


class _Parser(argparse.ArgumentParser):
    option_takes_value: dict[str, bool] = {}
    """Each option string of ours, and whether a value follows it (``_split_at_target``)."""

    def add_argument(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        action = super().add_argument(*args, **kwargs)
        self.option_takes_value = {**self.option_takes_value, **dict.fromkeys(action.option_strings, action.nargs != 0)}
        return action

    def takes_value(self, option: str) -> bool:
        """Whether ``option`` (as typed: ``--max`` is argparse's abbreviation of ``--max-steps``)
        is one of ours that a value follows."""
        if option in self.option_takes_value:
            return self.option_takes_value[option]
        if option.startswith("--") and self.allow_abbrev:
            meanings = {value for name, value in self.option_takes_value.items() if name.startswith(option)}
            return meanings == {True}
        return False

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_CANNOT_START, f"{self.prog}: error: {message}\n")


_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
"""What argparse reads as a value rather than as an option (none of ours looks like one)."""


def _split_at_target(parser: _Parser, argv: list[str]) -> tuple[list[str], str | None, str | None, list[str]]:
    """``argv`` cut where the target begins: (our options, SCRIPT, MODULE, the target's arguments).

    CONTRACT: options come before SCRIPT or ``-m MODULE``, and everything after either belongs
    to the script, untouched. Argparse cannot be told so (after ``-m MODULE`` it goes on reading
    options: ``-m mymod --epochs 2`` is an unknown ``--epochs``), so it is given only what comes
    before the target, and keeps its help, its version and its errors for that. The target
    begins at the first argument that is neither an option nor an option's value, at ``-m``
    (or ``-mMODULE``, as python takes it), or after ``--``. Where the target is incomplete
    (``-m`` last) argparse gets everything, and says what is missing."""
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            script = argv[index + 1] if index + 1 < len(argv) else None
            return argv[:index], script, None, argv[index + 2 :]
        if arg.startswith("-m") and not arg.startswith("--"):
            if arg != "-m":
                return argv[:index], None, arg[2:], argv[index + 1 :]
            if index + 1 == len(argv):
                break
            return argv[:index], None, argv[index + 1], argv[index + 2 :]
        if arg == "-" or not arg.startswith("-") or _NEGATIVE_NUMBER.match(arg):
            return argv[:index], arg, None, argv[index + 1 :]
        index += 1
        if "=" not in arg and parser.takes_value(arg) and index < len(argv):
            value = argv[index]
            # As argparse: an option-like word is not a value (it then says the value is missing).
            if not value.startswith("-") or _NEGATIVE_NUMBER.match(value):
                index += 1
    return argv, None, None, []


def _parse(parser: _Parser, argv: list[str]) -> argparse.Namespace:
    ours, script, module, rest = _split_at_target(parser, argv)
    options = parser.parse_args(ours)
    if script is not None or module is not None:
        options.script, options.module, options.args = script, module, rest
    return options


def _codes(value: str) -> list[str]:
    codes = [c.strip() for c in value.split(",") if c.strip()]
    unknown = [c for c in codes if c not in CATALOG]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown finding code {', '.join(unknown)} (known: {', '.join(CATALOG)})")
    return codes


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a number of calls (0 or more), got {value!r}")
    return number


WATCH_KINDS = ("similarity", "distance", "loss")
"""What ``--watch MODULE:FUNCTION=KIND`` may say the function returns; the agent's
``intercept.WATCH_KINDS`` (not imported here: the agent's module imports torch in its functions)."""


def _watch(value: str) -> str:
    target, equals, kind = value.partition("=")
    module, _, function = target.partition(":")
    if not module or not function or not all(part.isidentifier() for part in (*module.split("."), *function.split("."))):
        raise argparse.ArgumentTypeError(
            f"expected MODULE:FUNCTION or MODULE:FUNCTION=similarity (e.g. mypkg.losses:cos_sim=similarity), got {value!r}"
        )
    if equals and kind not in WATCH_KINDS:
        raise argparse.ArgumentTypeError(
            f"--watch {target}=KIND: KIND is one of {', '.join(WATCH_KINDS)} (what the function returns), got {kind!r}"
        )
    return value


def _break_on(value: str) -> list[str]:
    if value in ("error", "warning", "info", "never"):
        return [value]
    return _codes(value)


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", dest="module", metavar="MODULE", help="run a module, as python -m does")
    parser.add_argument("--ignore", type=_codes, default=[], metavar="CODE[,CODE...]", help="mute codes that are deliberate in this script")
    parser.add_argument(
        "--watch",
        type=_watch,
        action="append",
        default=[],
        metavar="MODULE:FUNCTION[=KIND]",
        help=(
            "also intercept this function (or Class.method); its first two arguments (after self) are the pair. "
            "Add =similarity when it returns the pair's similarity, to have the result read as the cosine; "
            "=distance, =loss or nothing: the arguments are judged, the result is not (repeatable)"
        ),
    )
    parser.add_argument(
        "--record",
        metavar="PATH",
        help="also write a trace of the run to PATH (JSON Lines, schema cossim-tui/trace/1); open it with 'cossim-tui replay PATH'",
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="for torchrun jobs on several nodes: where the ranks reach this screen (default: loopback, any free port); "
        "every node's ranks must prove the secret in COSSIM_TUI_TOKEN",
    )
    parser.add_argument(
        "--connect",
        metavar="HOST:PORT",
        help="run this node's part of a torchrun job whose screen runs elsewhere with --listen HOST:PORT (needs COSSIM_TUI_TOKEN)",
    )
    parser.add_argument("script", nargs="?", metavar="SCRIPT", help="the training script to run, or torchrun [TORCHRUN_OPTIONS] SCRIPT")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments for the script")


def _interactive_parser() -> _Parser:
    parser = _Parser(
        prog="cossim-tui",
        description="Run a PyTorch script and pause at every cosine-similarity call to see both tensors side by side.",
        epilog=(
            "Subcommands: 'cossim-tui check ...' runs the same diagnosis headless (see 'cossim-tui check --help'); "
            "'cossim-tui replay TRACE.jsonl' opens a run recorded with --record, without running anything."
        ),
    )
    parser.add_argument("--version", action="version", version=f"cossim-tui {__version__}")
    parser.add_argument(
        "--break-on",
        type=_break_on,
        default=["error"],
        metavar="CODE[,CODE...]|error|warning|never",
        help="what 'continue' stops at (default: error)",
    )
    _target_arguments(parser)
    return parser


def _check_parser() -> _Parser:
    parser = _Parser(
        prog="cossim-tui check",
        description="Run a script headless, diagnose every cosine-similarity call, print a summary and exit with a status.",
        epilog="Exit status: 0 clean, 1 findings at or above --fail-on, 2 could not start, 3 the script failed.",
    )
    parser.add_argument("--json", metavar="PATH", help="write the report (schema cossim-tui/report/1)")
    parser.add_argument("--max-steps", type=_count, metavar="N", help="stop the script after N intercepted calls")
    parser.add_argument("--fail-on", choices=[*SEVERITIES, "never"], default="error", help="lowest severity that fails (default: error)")
    _target_arguments(parser)
    return parser


def _replay_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cossim-tui replay",
        description="Open a run recorded with --record in the inspector. No script runs: the recorded steps are all there, ending at the last one.",
        epilog="Exit status: 0 after quitting, 2 the file is missing or is not a cossim-tui trace.",
    )
    parser.add_argument("trace", metavar="TRACE.jsonl", help="a trace written by 'cossim-tui --record' or 'cossim-tui check --record'")
    return parser


def _target(parser: argparse.ArgumentParser, options: argparse.Namespace) -> Target:
    from cossim_tui.session.events import Target

    if options.module is not None:
        return Target(module=options.module, args=list(options.args))
    if options.script is None:
        parser.error("the following arguments are required: SCRIPT (or -m MODULE)")
    if not os.path.exists(options.script):
        parser.exit(EXIT_CANNOT_START, f"cossim-tui: error: script not found: {options.script}\n")
    if not os.path.isfile(options.script):
        parser.exit(EXIT_CANNOT_START, f"cossim-tui: error: not a file: {options.script}\n")
    return Target(script=options.script, args=options.args)


def command() -> int:
    """The ``cossim-tui`` command itself: the console script, and ``python -m cossim_tui``.

    Only here may the child be a fork of this process (``launcher.Run.early``): its script's
    end leaves by ``SystemExit`` through every frame below this one, so those must be the
    interpreter's own way in and nothing else (not a profiler, a debugger, or a program that
    calls us, whose code would then run in the script's process)."""
    return main(fork=_entered_directly(sys._getframe(1)))


def _entered_directly(frame: object) -> bool:
    """Whether ``frame`` and those below it are only the command's own top level (the console
    script, or this package's ``__main__``) and, for ``python -m``, runpy's."""
    main_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")
    while frame is not None:
        code, module = frame.f_code, frame.f_globals.get("__name__")  # type: ignore[attr-defined]
        if module != "runpy":  # (a frozen module in 3.11: its code has no file name of its own)
            name = code.co_filename
            ours = os.path.abspath(name) == main_file or os.path.basename(name) == "cossim-tui"
            if not (ours and code.co_name == "<module>" and module == "__main__"):
                return False
        frame = frame.f_back  # type: ignore[attr-defined]
    return True


TORCHRUN_MODULES = ("torch.distributed.run", "torch.distributed.launch")


def _job(parser: argparse.ArgumentParser, options: argparse.Namespace) -> None:
    """Where the target is ``torchrun ...`` (or ``-m torch.distributed.run ...``): everything
    after it is torchrun's (``options.torchrun``), for torchrun's own parser to read in the
    job's torchrun process (``job.JobRun``), which finds the script; torch is never imported here."""
    options.torchrun = None
    if not (options.script == "torchrun" or options.module in TORCHRUN_MODULES):
        if options.listen or options.connect:
            parser.error("--listen and --connect are for torchrun jobs: cossim-tui [check] --listen HOST:PORT torchrun ... SCRIPT")
        return
    options.torchrun, options.script, options.module, options.args = list(options.args), None, None, []
    if options.listen and options.connect:
        parser.error("--listen and --connect: one side listens (the screen), every other node connects")
    if options.connect and not os.environ.get("COSSIM_TUI_TOKEN"):
        parser.error("--connect needs the job's secret in COSSIM_TUI_TOKEN (the same on every node)")


def parse(argv: Sequence[str]) -> tuple[str, argparse.Namespace, Target | None]:
    """What the command line asks for: ``"run"`` (the TUI), ``"check"`` or ``"replay"``, its
    options, and what to run: ``None`` for replay, and for a torchrun job, whose script its
    torchrun finds (``options.torchrun``: its arguments, unread). Bad arguments end the process
    with status 2, after one line saying why; ``--help`` and ``--version`` with 0."""
    argv = list(argv)
    if argv[:1] == ["replay"]:
        return "replay", _replay_parser().parse_args(argv[1:]), None
    mode, parser = ("check", _check_parser()) if argv[:1] == ["check"] else ("run", _interactive_parser())
    options = _parse(parser, argv[1:] if mode == "check" else argv)
    _job(parser, options)
    return mode, options, None if options.torchrun is not None else _target(parser, options)


def main(argv: Sequence[str] | None = None, *, fork: bool = False) -> int:
    # The child is started (``Run.early``) as soon as the target is known, before anything else
    # is imported here: it gets ready beside us. Where it is a fork of this process (``fork``:
    # see ``command``), it leaves this function by ``SystemExit`` when its script ends
    # (``launcher._fork``): nothing here around that point may catch it, or run a ``finally``
    # of ours in the script's process.
    mode, options, target = parse(sys.argv[1:] if argv is None else argv)
    if mode == "replay":
        from cossim_tui.tui.run import run_replay

        return run_replay(options.trace)
    if target is None:
        return _run_job(mode, options)
    from cossim_tui.launcher import Run

    if mode == "check":
        # CONTRACT: check passes its stdin on to the script; the TUI's terminal is the app's.
        run = Run.early(target, fork=fork, forget=COMMAND_ONLY, pass_stdin=True)
        from cossim_tui.headless import run_check

        status = run_check(run, options)
        # The process ends next, and the caller waits for its exit status. The interpreter's
        # last garbage collections would only take apart, one by one, the modules and classes
        # that exit frees anyway: most of its shutdown (~7 of ~10 ms). They skip frozen objects.
        import gc

        gc.freeze()
        return status
    run = Run.early(target, fork=fork, forget=COMMAND_ONLY)
    from cossim_tui.tui.run import run_interactive

    return run_interactive(run, options)


def _run_job(mode: str, options: argparse.Namespace) -> int:
    """A torchrun job: this node's part of it (``--connect``), or the whole job on one screen.
    torchrun reads its own options before anything is shown: a command line that starts no
    job ends here, with what torchrun's parser said (or ours: a missing script) and its status."""
    from cossim_tui.job import JobError, JobRun, join_job
    from cossim_tui.protocol.handshake import parse_address
    from cossim_tui.torchrun import NoJob

    try:
        if options.connect:
            return join_job(options.torchrun, parse_address(options.connect))
        listen = parse_address(options.listen) if options.listen else ("127.0.0.1", 0)
        token = os.environ.get("COSSIM_TUI_TOKEN")
        if listen[0] not in ("127.0.0.1", "localhost", "::1") and not token:
            raise JobError(f"--listen {options.listen} reaches beyond this machine: set the job's secret in COSSIM_TUI_TOKEN first")
        run = JobRun(options.torchrun, listen=listen, token=token, pass_stdin=mode == "check")
    except NoJob as no_job:
        sys.stdout.write(no_job.ended.out)
        sys.stderr.write(no_job.ended.err)
        return no_job.ended.status
    except (JobError, ValueError, OSError) as exc:
        print(f"cossim-tui: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    if mode == "check":
        from cossim_tui.headless import run_check

        return run_check(run, options)
    from cossim_tui.tui.run import run_interactive

    return run_interactive(run, options)
