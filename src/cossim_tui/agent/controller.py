"""The agent's side of the conversation: reports each call and holds the script while paused.

One ``Controller`` lives in the script's main process. For every intercepted call it makes
the call's record and asks its ``Pipeline`` for the step (summaries, evidence, findings,
pictures), sends the ``StepCaptured``, and then, if it should stop there, blocks the calling
thread until the user says how to go on. While the script runs freely, a small pair on a CUDA device whose
step gets no pictures is not waited for: its values are copied to the host behind the
device's queued work, and a thread of the agent's summarises, judges and sends its step once
they arrive, in order, while the script goes on (``Summariser``). A small pair on the CPU is
parked the same way: its values copied at the call, its figures made later together with
other parked calls' (``batch``).

A daemon thread receives the commands (resume, pause, mute, the break condition) so that
``p`` reaches a script that is running between calls. If the channel closes, the debugger is
gone, and the script and its workers end rather than run on unseen.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import types
from typing import Any

from cossim_tui import protocol
from cossim_tui.agent import hooks, intercept, summariser
from cossim_tui.agent.call import Call, Intercepted
from cossim_tui.agent.condition import BreakCondition, ConditionError
from cossim_tui.agent.outbox import Outbox
from cossim_tui.agent.pipeline import Pipeline
from cossim_tui.agent.sites import CallSites
from cossim_tui.agent.summariser import Summariser
from cossim_tui.diagnostics.judge import Judge
from cossim_tui.protocol import SEVERITY_RANK, Finding, StepCaptured


class Controller:
    def __init__(self, connection: protocol.Connection, config: protocol.AgentConfig) -> None:
        self.connection = connection
        self.config = config
        self.pid = os.getpid()
        self.steps = 0
        self.mode = config.mode
        self._pause_requested = False
        self._muted: set[tuple[str, str]] = set()
        self.pipeline = Pipeline(Judge(ignore=set(config.ignore)), self._muted, lambda: self.config, self._should_stop)
        self._lock = threading.RLock()
        self._resumed = threading.Condition()
        self._waiting = False
        self._connected = True
        self._outbox = Outbox(connection, self._channel_broke)
        """Writes a step at once when the channel can take it, else queues it: the script never
        waits for the screen."""
        self._ended = False
        self.sites = CallSites()
        self.condition = BreakCondition()
        self._unknown_name_reported = ""
        """The condition whose missing name was last reported: once per condition, not per call."""
        self.followed: Any = None
        """The ranks the script starts itself, and the rank this process becomes among them
        (``ranks.FollowedRanks``); made when torch is loaded."""
        self._summariser: Summariser | None = None
        """Summarises the calls started by ``_send_behind``; made at the first."""
        threading.Thread(target=self._receive, name="cossim-tui-commands", daemon=True).start()

    # -- messages out ---------------------------------------------------------------------

    def _send(self, message: protocol.Message) -> None:
        followed = self.followed
        if followed is not None and followed.rank is not None and isinstance(message, (StepCaptured, protocol.BreakChanged)):
            if message.rank is None:  # (a relayed rank's message carries its own)
                message.rank = followed.rank
        if self._connected:
            self._outbox.put(message)

    def _channel_broke(self) -> None:
        self._connected = False

    def hello(self, target: str, argv: list[str], *, job: bool = False) -> None:
        """Say the script is about to run; a rank of a job (``job``) says which, as torchrun
        told it (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), and on which host."""
        ranks: dict[str, Any] = {}
        if job:
            from cossim_tui.agent.ranks import job_place

            ranks = job_place()
        self._send(protocol.Hello(pid=self.pid, python=sys.version.split()[0], target=target, argv=list(argv), **ranks))

    def install(self) -> None:
        import cossim_tui

        intercept.install(self, self.config.watch)
        cossim_tui._probe = intercept.probe

    def torch_hooked(self, version: str, intercepted: list[str]) -> None:
        """torch is loaded: start watching module calls and training progress too."""
        from cossim_tui.agent.context import TrainingContext
        from cossim_tui.agent.provenance import Provenance

        try:
            context = TrainingContext()
            provenance = Provenance(lambda: self.steps, context.consumed)
            provenance.install()
            context.install()
            self.pipeline.provenance, self.pipeline.context = provenance, context
        except Exception as exc:  # noqa: BLE001 - the pairs are still intercepted without it
            print(f"cossim-tui: no provenance or training context: {type(exc).__name__}: {exc}", file=sys.stderr)
        try:
            from cossim_tui.agent.gathers import Gathers

            gathers = Gathers()
            gathers.install()
            self.pipeline.gathers = gathers
        except Exception as exc:  # noqa: BLE001 - the pairs are still judged without it
            print(f"cossim-tui: all_gather not watched: {type(exc).__name__}: {exc}", file=sys.stderr)
        try:
            from cossim_tui.agent.ranks import FollowedRanks

            self.followed = FollowedRanks(self._send, lambda: self.config, self.pid)
            self.followed.install(hooks.when_imported)
        except Exception as exc:  # noqa: BLE001 - spawned ranks then run unseen
            print(f"cossim-tui: ranks the script starts are not followed: {type(exc).__name__}: {exc}", file=sys.stderr)
        self._send(protocol.TorchHooked(version=version, intercepted=intercepted))

    def script_ended(self, status: str, exit_code: int, exception: str | None) -> None:
        if self._ended or os.getpid() != self.pid:
            return
        if status != "not-found":
            intercept.unloaded_watches()  # said in the script's output, before the run's end
        self._finish_in_flight()
        self._ended = True
        maps = self.pipeline.final_maps()
        self._send(protocol.ScriptEnded(status=status, exit_code=exit_code, exception=exception, maps=maps))  # type: ignore[arg-type]
        self._outbox.flush()  # the process ends next: nothing queued may be lost

    # -- the hot path ---------------------------------------------------------------------

    def on_call(self, seen: Intercepted) -> None:
        if not self._connected:
            return
        with self._lock:
            if self.config.max_steps is not None and self.steps >= self.config.max_steps:
                # --max-steps 0: stopped at the first call, before it is reported (any other N
                # stops once its Nth call is, below).
                self._stop_script()
            step = self.steps
            self.steps += 1
            pictures = False
            try:
                site, exprs = self.sites.place(seen)
                where = site.label
                pictures = self.pipeline.pictures.due(where, self.config.pictures, self.mode == "step" or self._pause_requested)
                call = Call(seen, step, site, exprs, pictures, where)
                if not pictures and self._send_behind(call):
                    if self.config.max_steps is not None and self.steps >= self.config.max_steps:
                        self._stop_script()
                    return
                if call.transfer is not None:
                    # Begun to be sent behind, then refused (no pinned memory): captured afresh.
                    call = Call(seen, step, site, exprs, pictures, where)
                self._finish_in_flight()
                message = self.pipeline.capture(call)
            except Exception as exc:  # noqa: BLE001 - a capture bug must never reach the script
                self._finish_in_flight()
                message = self._capture_failed(step, seen.function, seen.names, seen.frame, exc)
            message.label = seen.label
            stop = self._should_stop(message.findings)
            by_condition = False
            if not stop and self.mode == "continue" and self.condition.text:
                stop = by_condition = self._condition_holds(message, seen.frame, seen.result)
            message.paused = stop
            if stop and not pictures and self.config.pictures != "none":
                self.pipeline.picture_stop(message, seen.x1, seen.x2, seen.dim, with_map=by_condition)
            elif by_condition and pictures:
                self.pipeline.map_now(message)
            if stop:
                # Waiting starts before the step goes out: a Resume that answers it at once
                # must find the script waiting, not be lost before it waits.
                with self._resumed:
                    self._waiting = True
                    self._pause_requested = False
            self._send(message)
            if stop:
                self._wait_for_command()
            if self.config.max_steps is not None and self.steps >= self.config.max_steps:
                self._stop_script()

    # -- calls summarised behind the script ------------------------------------------------

    def _send_behind(self, call: Call) -> bool:
        """Start a call's transfer and return without waiting for it, where nothing can stop at
        this step and it gets no pictures (``check``; the TUI running freely, between the steps
        it pictures): a small pair on a device whose copies run behind (CUDA). The
        ``Summariser`` makes and sends its step once its values have arrived, in order, with
        its findings as if it had been waited for; a call captured at once waits for it first.

        Waiting at the call is what costs there: the copy waits for all the work the script
        queued on the device before it (a forward pass), the device then idles while the host
        summarises, and the script queues nothing meanwhile. Whether ``False``: the call was not
        started, and is captured as usual."""
        x1, x2 = call.x1, call.x2
        if self.mode != "run" or self._pause_requested or call.error is not None or call.matrix:
            # (A similarity matrix's figures are read from the matrix itself, at the call.)
            return False
        tools = self.pipeline.ready()
        copied = tools.small_pair_on_device(x1, x2, call.result)
        park = not copied and call.step >= summariser.AT_ONCE_FIRST and tools.parkable(x1, x2, call.result)
        if not (park or (copied and tools.runs_behind(x1.device))):
            return False
        try:
            with tools.no_grad():
                self.pipeline.begin(call, park=park)
                # Read now what a later summary cannot: the tensors may change, and a backward()
                # frees their graph.
                call.described = tools.describe_pair(x1, x2)
                # (Not read for an argument a module made at this step: it is never matched
                # against earlier steps' arguments.)
                call.graph_live = (None if call.fresh[0] else tools.graph_live_now(x1), None if call.fresh[1] else tools.graph_live_now(x2))
                # Views as the tensors are now (shape, strides, storage): an unsqueeze_(), set_()
                # or `.data =` after the call does not reach them. (One view where one tensor.)
                call.x1 = x1.detach()
                call.x2 = call.x1 if x2 is x1 else x2.detach()
                # (Its values travel in the copies: the graph behind it must not be kept alive.)
                call.result = call.result.detach()
                call.transfer.start()
        except Exception:  # noqa: BLE001 - (no pinned memory, say): captured at once instead
            return False
        if self._summariser is None:
            self._summariser = Summariser(self._finish_one, self._share_batch, around=tools.no_grad)
            intercept.before_graph_capture(self._finish_in_flight)
        self._summariser.put(call, parked=park)
        return True

    def _share_batch(self, calls: list[Call]) -> None:
        """Make together the figures that parked calls of one shape can share (``batch``).
        (Called, as ``_finish_one`` is, inside the ``no_grad`` the summariser enters once a batch.)"""
        self.pipeline.ready().share_batch(calls)

    def _finish_in_flight(self) -> None:
        """Wait until the step of every call started by ``_send_behind`` has been sent."""
        if self._summariser is not None:
            self._summariser.drain()

    def _finish_one(self, call: Call) -> None:
        """Summarise a started call once its values have arrived, and send its step (inside the
        ``no_grad`` the summariser enters once a batch)."""
        try:
            call.transfer.fetch()
            message = self.pipeline.summarise(call, may_stop=False)
        except Exception as exc:  # noqa: BLE001 - a capture bug must never reach the script
            message = self.pipeline.failed_step(call.step, call.function, call.site, call.exprs, exc)
        message.label = call.label
        self._send(message)

    def _condition_holds(self, message: StepCaptured, frame: types.FrameType | None, result: Any) -> bool:
        """Whether the user's break condition holds here; a failing one stops once and is turned off."""
        text = self.condition.text
        try:
            held = self.condition.holds(frame, message, result)
        except ConditionError as exc:
            if exc.missing_name:
                if self._unknown_name_reported != text:
                    self._unknown_name_reported = text
                    error = f"{text}: {exc} (false until the name exists)"
                    self._send(protocol.BreakChanged(condition=text, error=error, step=message.step))
                return False
            self.condition.clear_if(text)
            self._send(protocol.BreakChanged(condition=self.condition.text, error=f"{text}: {exc} (turned off)", step=message.step))
            # Like pdb: a condition that cannot be evaluated stops, once, where it failed.
            return True
        message.break_condition = held
        return held is not None

    def _capture_failed(
        self, step: int, function: str, names: tuple[str, str], frame: types.FrameType | None, exc: Exception
    ) -> StepCaptured:
        try:
            site, _ = self.sites.call_site(frame)
        except Exception:  # noqa: BLE001 - the step is still reported, without its source
            site, _ = self.sites.call_site(None)
        return self.pipeline.failed_step(step, function, site, names, exc)

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
        handlers = {
            protocol.Resume: self._on_resume,
            protocol.Pause: self._on_pause,
            protocol.Mute: self._on_mute,
            protocol.SetBreak: self._on_set_break,
        }
        while True:
            try:
                message = self.connection.receive()
            except (OSError, protocol.ProtocolError):
                message = None
            if message is None:
                break
            handle = handlers.get(type(message))
            if handle is not None:
                with self._resumed:
                    handle(message)
                if self.followed is not None:
                    self.followed.broadcast(message)
        self._debugger_gone()

    # Each runs on the command thread, holding ``_resumed``.

    def _on_resume(self, message: protocol.Resume) -> None:
        self.mode = message.mode
        self._pause_requested = False
        self._waiting = False
        self._resumed.notify_all()

    def _on_pause(self, message: protocol.Pause) -> None:
        self._pause_requested = True

    def _on_mute(self, message: protocol.Mute) -> None:
        self._muted.add((message.code, message.site))

    def _on_set_break(self, message: protocol.SetBreak) -> None:
        error = self.condition.set(message.condition)
        self._unknown_name_reported = ""
        self._send(protocol.BreakChanged(condition=self.condition.text, error=error))

    def _debugger_gone(self) -> None:
        """The launcher closed the channel or died: end the script and its workers with it."""
        with self._resumed:
            self._connected = False
            self._resumed.notify_all()
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(1)
