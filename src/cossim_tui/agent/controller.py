"""The agent's side of the conversation: reports each call and holds the script while paused.

One ``Controller`` lives in the script's main process. For every intercepted call it asks
``capture`` for the summaries and ``diagnostics`` for the findings, sends one
``StepCaptured``, and then, if it should stop there, blocks the calling thread until the
user says how to go on. A daemon thread receives the commands (resume, pause, mute) so that
``p`` reaches a script that is running between calls. If the channel closes, the debugger is
gone, and the script and its workers end rather than run on unseen.
"""

from __future__ import annotations

import os
import platform
import signal
import sys
import threading
import time
import traceback
import types
from typing import Any

from cossim_tui import protocol
from cossim_tui.agent import intercept, source
from cossim_tui.diagnostics.judge import Judge
from cossim_tui.protocol import SEVERITY_RANK, CallSite, Finding, StepCaptured, TensorSummary


class Controller:
    def __init__(self, connection: protocol.Connection, config: protocol.AgentConfig) -> None:
        self.connection = connection
        self.config = config
        self.pid = os.getpid()
        self.steps = 0
        self.mode = config.mode
        self.judge = Judge(ignore=set(config.ignore))
        # These need torch, which only the script may import first: made when it does.
        self.evidence: Any = None
        self.provenance: Any = None
        self.context: Any = None
        self._pause_requested = False
        self._muted: set[tuple[str, str]] = set()
        self._lock = threading.RLock()
        self._resumed = threading.Condition()
        self._waiting = False
        self._connected = True
        self._ended = False
        self._sites: dict[source.SiteInfo, CallSite] = {}
        threading.Thread(target=self._receive, name="cossim-tui-commands", daemon=True).start()

    # -- messages out ---------------------------------------------------------------------

    def _send(self, message: protocol.Message) -> None:
        if not self._connected:
            return
        try:
            self.connection.send(message)
        except OSError:
            self._connected = False

    def hello(self, target: str, argv: list[str]) -> None:
        self._send(protocol.Hello(pid=self.pid, python=platform.python_version(), target=target, argv=list(argv)))

    def install(self) -> None:
        import cossim_tui

        intercept.install(self, self.config.watch)
        cossim_tui._probe = intercept.probe

    def torch_hooked(self, version: str, intercepted: list[str]) -> None:
        """torch is loaded: start watching module calls and training progress too."""
        from cossim_tui.agent.context import TrainingContext
        from cossim_tui.agent.provenance import Provenance

        try:
            provenance, context = Provenance(lambda: self.steps), TrainingContext()
            provenance.install()
            context.install()
            self.provenance, self.context = provenance, context
        except Exception as exc:  # noqa: BLE001 - the pairs are still intercepted without it
            print(f"cossim-tui: no provenance or training context: {type(exc).__name__}: {exc}", file=sys.stderr)
        self._send(protocol.TorchHooked(version=version, intercepted=intercepted))

    def script_ended(self, status: str, exit_code: int, exception: str | None) -> None:
        if self._ended or os.getpid() != self.pid:
            return
        self._ended = True
        self._send(protocol.ScriptEnded(status=status, exit_code=exit_code, exception=exception))  # type: ignore[arg-type]

    # -- the hot path ---------------------------------------------------------------------

    def on_call(
        self,
        function: str,
        names: tuple[str, str],
        x1: Any,
        x2: Any,
        dim: Any,
        eps: Any,
        result: Any,
        error: BaseException | None,
        frame: types.FrameType | None,
        label: str | None = None,
    ) -> None:
        if not self._connected:
            return
        with self._lock:
            step = self.steps
            self.steps += 1
            try:
                message = self._capture(step, function, names, x1, x2, dim, eps, result, error, frame)
            except Exception as exc:  # noqa: BLE001 - a capture bug must never reach the script
                message = self._capture_failed(step, function, names, frame, exc)
            message.label = label
            stop = self._should_stop(message.findings)
            message.paused = stop
            self._send(message)
            if stop:
                self._wait_for_command()
            if self.config.max_steps is not None and self.steps >= self.config.max_steps:
                self._stop_script()

    def _call_site(self, frame: types.FrameType | None) -> tuple[CallSite, source.SiteInfo | None]:
        if frame is None:
            return CallSite("<unknown>", 0, "<unknown>", 0, [], 0, 0), None
        info = source.site_of(frame)
        site = self._sites.get(info)
        if site is None:
            first, lines = source.source_lines(frame.f_code.co_filename, info)
            site = self._sites[info] = CallSite(
                path=info.path,
                line=info.line,
                function=info.function,
                first_line=first,
                lines=lines,
                call_start=info.call_start,
                call_end=info.call_end,
            )
        return site, info

    def _capture(
        self,
        step: int,
        function: str,
        names: tuple[str, str],
        x1: Any,
        x2: Any,
        dim: Any,
        eps: Any,
        result: Any,
        error: BaseException | None,
        frame: types.FrameType | None,
    ) -> StepCaptured:
        from cossim_tui.agent.capture import capture_pair
        from cossim_tui.agent.evidence import EvidenceCollector
        from cossim_tui.agent.provenance import identical_inputs

        if self.evidence is None:
            self.evidence = EvidenceCollector()
        site, info = self._call_site(frame)
        exprs = source.argument_names(info, names) if info is not None else ("arg0", "arg1")
        dim_value = dim if isinstance(dim, int) else -1
        eps_value = float(eps) if isinstance(eps, (int, float)) else 1e-8
        pair = capture_pair(x1, x2, dim_value, result, exprs)
        made = [self.provenance.made_by(x) if self.provenance is not None else None for x in (x1, x2)]
        for summary, made_one in zip(pair.args, made):
            summary.made_by = made_one.call if made_one is not None else None
        equal_pair = pair.relation is not None and bool(pair.relation.equal_values or pair.relation.shares_storage)
        fresh = tuple(m is not None and m.call.step == step for m in made)
        evidence = self.evidence.observe(
            step, site.label, exprs, x1, x2, dim_value, eps_value, equal_pair, result, fresh  # type: ignore[arg-type]
        )
        evidence.identical_inputs = identical_inputs(*made)
        error_text = f"{type(error).__name__}: {error}" if error is not None else None
        findings = self.judge.judge(step, site.label, pair.args, pair.relation, pair.cos, evidence, error_text)
        for finding in findings:
            finding.muted = finding.muted or (finding.code, finding.site) in self._muted or (finding.code, "*") in self._muted
        return StepCaptured(
            step=step,
            function=function,
            site=site,
            args=pair.args,
            relation=pair.relation,
            cos=pair.cos,
            error=error_text,
            findings=findings,
            context=self.context.snapshot() if self.context is not None else {},
            paused=False,
            wall_time=time.time(),
        )

    def _capture_failed(
        self, step: int, function: str, names: tuple[str, str], frame: types.FrameType | None, exc: Exception
    ) -> StepCaptured:
        try:
            site, _ = self._call_site(frame)
        except Exception:  # noqa: BLE001 - the step is still reported, without its source
            site, _ = self._call_site(None)
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        args = [
            TensorSummary(
                expr=name, shape=[], dtype="?", device="?", layout="?", numel=0, requires_grad=False,
                grad_fn=None, is_leaf=True, norm=None, rows=0, stats=None, nan=0, inf=0, preview=[],
                storage=None, note=f"cossim-tui could not summarise this call: {detail}",
            )
            for name in names
        ]
        return StepCaptured(
            step=step, function=function, site=site, args=args, relation=None, cos=None, error=None,
            findings=[], context={}, paused=False, wall_time=time.time(),
        )

    # -- stepping -------------------------------------------------------------------------

    def _breaks(self, finding: Finding) -> bool:
        if finding.muted:
            return False
        for rule in self.config.break_on:
            if rule == "never":
                return False
            if rule in SEVERITY_RANK:
                if SEVERITY_RANK[finding.severity] >= SEVERITY_RANK[rule]:
                    return True
            elif rule == finding.code:
                return True
        return False

    def _should_stop(self, findings: list[Finding]) -> bool:
        with self._resumed:
            if self.mode == "step" or self._pause_requested:
                return True
            if self.mode == "continue":
                return any(self._breaks(f) for f in findings)
            return False

    def _wait_for_command(self) -> None:
        with self._resumed:
            self._waiting = True
            self._pause_requested = False
            while self._waiting and self._connected:
                self._resumed.wait()

    def _stop_script(self) -> None:
        self.script_ended("stopped", 0, None)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(0)

    # -- messages in ----------------------------------------------------------------------

    def _receive(self) -> None:
        while True:
            try:
                message = self.connection.receive()
            except (OSError, protocol.ProtocolError):
                message = None
            if message is None:
                break
            with self._resumed:
                if isinstance(message, protocol.Resume):
                    self.mode = message.mode
                    self._pause_requested = False
                    self._waiting = False
                    self._resumed.notify_all()
                elif isinstance(message, protocol.Pause):
                    self._pause_requested = True
                elif isinstance(message, protocol.Mute):
                    self._muted.add((message.code, message.site))
        self._debugger_gone()

    def _debugger_gone(self) -> None:
        """The launcher closed the channel or died: end the script and its workers with it."""
        with self._resumed:
            self._connected = False
            self._resumed.notify_all()
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(1)
