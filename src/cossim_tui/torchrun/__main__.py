"""``python -m cossim_tui.torchrun FD [TORCHRUN_OPTIONS] SCRIPT ARGS``: a job's torchrun itself.

torchrun's own parser reads the user's torchrun arguments here, in torchrun's own process,
which imports torch anyway; the command (``job``) only waits for the verdict on socket ``FD``
(``cossim_tui.torchrun``). The command line torchrun then runs is the user's, with one change:
each worker runs ``--module cossim_tui.agent SCRIPT ARGS`` (torchrun's own ``-m`` is passed to
the agent: ``-m MODULE ARGS``), and the agent sets itself up as the ``python -u SCRIPT ARGS``
torchrun would have run. torchrun is not ours to replace: its ``main`` runs here, after the
command's go; rendezvous, restarts, signals and the workers' environment stay its own.
"""

from __future__ import annotations

import io
import os
import socket
import sys
from contextlib import redirect_stderr, redirect_stdout

import torch.distributed.run
from torch.distributed.run import get_args_parser

from cossim_tui.session.exits import EXIT_CANNOT_START
from cossim_tui.torchrun import GO, Ended, Parsed, Verdict, encode

AGENT = "cossim_tui.agent"

REFUSED = {"no_python": "--no-python", "run_path": "--run-path"}
"""torchrun's options that run the script without python: the agent cannot enter its ranks."""


def read(given: list[str]) -> tuple[Verdict, list[str]]:
    """What the user's torchrun arguments ``given`` ask for, and the arguments torchrun's ``main``
    runs the job with (none where the verdict is ``Ended``)."""
    parser = get_args_parser()
    parser.prog = "cossim-tui torchrun"
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            options = parser.parse_args(given)
    except SystemExit as ended:
        # argparse's own ending: --help (0), or a bad option (its usage and message, 2).
        status = ended.code if isinstance(ended.code, int) else EXIT_CANNOT_START
        return Ended(status, out.getvalue(), err.getvalue()), []
    # Whatever the parser said on the way (a deprecated option, say) is torchrun's output.
    sys.stdout.write(out.getvalue())
    sys.stderr.write(err.getvalue())
    for dest, option in REFUSED.items():
        if getattr(options, dest):
            return _cannot_start(f"torchrun {option} does not run the script with python, so cossim-tui cannot enter its ranks; leave it out"), []
    script_args = list(options.training_script_args)
    cut = len(given) - len(script_args) - 1
    script = given[cut]
    if not options.module:
        if not os.path.exists(script):
            return _cannot_start(f"script not found: {script}"), []
        if not os.path.isfile(script):
            return _cannot_start(f"not a file: {script}"), []
    # (torchrun's own -m/--module says that SCRIPT is a module: ours says so to the agent. Ours
    # comes first: the user's options may end with "--", after which it would be the script.)
    kept = [option for option in given[:cut] if option not in ("-m", "--module")]
    target = ["-m", script] if options.module else [script]
    verdict = Parsed(module=script, args=script_args) if options.module else Parsed(script=script, args=script_args)
    return verdict, ["--module", *kept, AGENT, *target, *script_args]


def _cannot_start(reason: str) -> Ended:
    return Ended(EXIT_CANNOT_START, err=f"cossim-tui: error: {reason}\n")


def main() -> None:
    channel = socket.socket(fileno=int(sys.argv[1]))
    verdict, args = read(sys.argv[2:])
    try:
        channel.sendall(encode(verdict))
        channel.shutdown(socket.SHUT_WR)
        go = channel.recv(len(GO)) if isinstance(verdict, Parsed) else b""
    except OSError:
        go = b""
    channel.close()
    if go != GO:
        # The command line starts no job, or the command gave up (or is gone) before the go:
        # the command says why, if anything is to be said.
        sys.exit(verdict.status if isinstance(verdict, Ended) else 0)
    # As under ``python -m torch.distributed.run``, for whatever in torch looks.
    sys.argv = [torch.distributed.run.__file__, *args]
    torch.distributed.run.main(args)


if __name__ == "__main__":
    main()
