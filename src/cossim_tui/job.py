"""A distributed job under cossim-tui: torchrun itself, every rank's agent, one event stream.

``cossim-tui [check] torchrun [TORCHRUN_OPTIONS] SCRIPT ARGS`` runs torchrun with the user's
own options, and only one change: each worker runs ``-m cossim_tui.agent SCRIPT ARGS``
(torchrun's ``--module``), which sets itself up as the ``python -u SCRIPT ARGS`` torchrun would
have run, environment and all, and then runs the script. torchrun is not ours to replace:
rendezvous, restarts, signals and the worker environment stay its own. Its options are read
by its own parser in its own process (``python -m cossim_tui.torchrun``), which imports torch
anyway; this process, which never does, waits for what that parser found (the script: the
job's ``Target``) or for why the command line starts no job, and gives the go when the
screen is ready.

Ranks are torchrun's children, not ours, and may be on other nodes, so they reach this process
over TCP: ``JobRun`` listens (loopback unless ``--listen`` says otherwise), challenges every
peer (``protocol.handshake``) and only then reads frames from it. Each rank's messages reach
the screen stamped with its rank; commands go to every rank. The job's output is torchrun's
(the workers write to its stdout and stderr), in one pipe as for a single process.

How the job ended is the worst over its ranks: a rank that raised makes it ``error``; a rank
whose connection ended before its script did (killed, or its node lost) is reported as lost
(``RankLost``) and makes it ``killed``; ``q`` makes it ``quit``.
"""

from __future__ import annotations

import os
import secrets
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from cossim_tui import protocol, torchrun
from cossim_tui.diagnostics.ranks import CrossRankJudge
from cossim_tui.launcher import OutputReader, end_group, signal_group
from cossim_tui.protocol import CONNECT_ENV, TOKEN_ENV, AgentConfig, handshake
from cossim_tui.session.events import (
    ChannelProblem,
    RankLost,
    RunEvent,
    ScriptExited,
)

PROVE_WITHIN = 10.0
"""Seconds a new peer has to answer the challenge before it is dropped."""



class JobError(Exception):
    """The job cannot start: what to tell the user (exit status 2)."""


@dataclass
class _Peer:
    sock: socket.socket
    address: str
    challenge: bytes
    since: float
    proven: bool = False
    answer: bytes = b""
    frames: protocol.FrameDecoder = field(default_factory=protocol.FrameDecoder)
    rank: int | None = None
    host: str | None = None
    ended: protocol.ScriptEnded | None = None


class JobRun:
    """A ``torchrun`` job whose ranks run under the agent: an ``EventSource`` like ``launcher.Run``."""

    def __init__(
        self,
        torchrun_args: list[str],
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        token: str | None = None,
        pass_stdin: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start torchrun on the user's ``torchrun_args`` (everything after ``torchrun``), once
        its parser has read them (``torchrun.NoJob`` when they start no job). Its workers wait
        for ``start``; ``terminate`` ends it if that never comes."""
        self.token = token or secrets.token_hex(16)
        self.config = AgentConfig()
        self.listener = socket.create_server(listen, family=socket.AF_INET6 if ":" in listen[0] else socket.AF_INET)
        self.address = self.listener.getsockname()[:2]
        env = dict(os.environ if env is None else env)
        host, port = self.address
        env[CONNECT_ENV] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        env[TOKEN_ENV] = self.token
        try:
            self.process, self._go, self.target = torchrun.start(
                torchrun_args,
                env,
                stdin=None if pass_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            self.listener.close()
            raise
        self.started = False
        self.exited: ScriptExited | None = None
        self.world_size: int | None = None
        self._peers: dict[socket.socket, _Peer] = {}
        self._ranks: dict[int, _Peer] = {}
        self._lost: list[int | None] = []
        self._failures: list[tuple[int | None, protocol.ScriptEnded]] = []
        """Ranks whose script failed, in the order they said so: the first is the cause (a peer
        then fails in its collective)."""
        self._quit = False
        self._judge = CrossRankJudge()

    @property
    def target_name(self) -> str:
        return f"torchrun {self.target.name}"

    def start(self, config: AgentConfig) -> None:
        """torchrun's go: it starts the workers; each rank gets ``config`` once it has proved the
        job's secret."""
        if self.started:
            return
        self.config, self.started = config, True
        try:
            self._go.sendall(torchrun.GO)
        except OSError:
            pass  # (torchrun is gone: ``events`` says so, with its output)
        self._go.close()

    # -- what the job says -----------------------------------------------------------------

    def events(self) -> Iterator[RunEvent]:
        """Everything the job produces, in order of arrival, until and including ``ScriptExited``."""
        assert self.started and self.process.stdout is not None, "start() first"
        out_fd = self.process.stdout.fileno()
        reader = OutputReader(out_fd)
        selector = selectors.DefaultSelector()
        selector.register(out_fd, selectors.EVENT_READ, "out")
        self.listener.setblocking(False)
        selector.register(self.listener, selectors.EVENT_READ, "listen")
        try:
            while True:
                ready = selector.select(timeout=0.05)
                if not ready and self.process.poll() is not None and not self._peers:
                    # torchrun is gone and so are its ranks (whose workers may hold the pipe open).
                    break
                for key, _ in ready:
                    if key.data == "out":
                        output, still_open = reader.read()
                        if output is not None:
                            yield output
                        if not still_open:
                            selector.unregister(out_fd)
                    elif key.data == "listen":
                        self._accept(selector)
                    else:
                        yield from self._read(selector, key.data)
                yield from self._drop_slow_provers(selector)
        finally:
            for peer in list(self._peers.values()):
                self._close(selector, peer)
            selector.close()
        self.process.wait()
        self._kill_group()
        self.exited = self._exit_event()
        yield self.exited

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            sock, address = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        challenge = handshake.challenge()
        try:
            sock.setblocking(True)
            sock.sendall(challenge)  # (32 bytes: the socket buffer takes them at once)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        peer = _Peer(sock, f"{address[0]}:{address[1]}", challenge, time.monotonic())
        self._peers[sock] = peer
        selector.register(sock, selectors.EVENT_READ, peer)

    def _read(self, selector: selectors.BaseSelector, peer: _Peer) -> Iterator[RunEvent]:
        try:
            chunk = peer.sock.recv(262144 if peer.proven else handshake.ANSWER_SIZE - len(peer.answer))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(selector, peer)
            if peer.proven and peer.ended is None:
                self._lost.append(peer.rank)
                yield RankLost(peer.rank, peer.host)
            return
        if not peer.proven:
            peer.answer += chunk
            if len(peer.answer) < handshake.ANSWER_SIZE:
                return
            if not handshake.verify(self.token, peer.challenge, peer.answer):
                self._close(selector, peer)
                yield ChannelProblem(f"refused a connection from {peer.address}: it did not prove the job's COSSIM_TUI_TOKEN")
                return
            peer.proven = True
            self._send_to(peer, protocol.Start(config=self.config))
            return
        try:
            bodies = peer.frames.feed(chunk)
        except protocol.ProtocolError as exc:
            self._close(selector, peer)
            yield ChannelProblem(f"rank {peer.rank}: {exc}")
            return
        for body in bodies:
            try:
                message = protocol.decode_message(body)
            except protocol.ProtocolError as exc:
                yield ChannelProblem(f"rank {peer.rank}: {exc}")
                continue
            yield from self._arrived(peer, message)

    def _arrived(self, peer: _Peer, message: protocol.Message) -> Iterator[RunEvent]:
        if isinstance(message, protocol.Hello):
            peer.rank, peer.host = message.rank, message.host
            if message.rank is not None:
                self._ranks[message.rank] = peer
            if message.world_size is not None:
                self.world_size = message.world_size
        elif isinstance(message, protocol.ScriptEnded):
            peer.ended = message
            if message.status in ("error", "not-found"):
                self._failures.append((peer.rank, message))
        self._judge.arrived(message, peer.rank)
        yield message

    def _drop_slow_provers(self, selector: selectors.BaseSelector) -> Iterator[RunEvent]:
        now = time.monotonic()
        for peer in [p for p in self._peers.values() if not p.proven and now - p.since > PROVE_WITHIN]:
            self._close(selector, peer)
            yield ChannelProblem(f"refused a connection from {peer.address}: no answer to the challenge within {PROVE_WITHIN:.0f} s")

    def _close(self, selector: selectors.BaseSelector, peer: _Peer) -> None:
        if self._peers.pop(peer.sock, None) is None:
            return
        try:
            selector.unregister(peer.sock)
        except (KeyError, ValueError):
            pass
        try:
            peer.sock.close()
        except OSError:
            pass

    def _exit_event(self) -> ScriptExited:
        code = self.process.returncode
        ended = [p.ended for p in self._ranks.values() if p.ended is not None]
        if self._failures:
            rank, end = self._failures[0]
            exception = f"rank {rank}: {end.exception}" if end.exception else f"rank {rank} failed"
            if end.status == "not-found":
                return ScriptExited("not-found", end.exit_code, None, end.exception)
            return ScriptExited("error", code if code else end.exit_code, None, exception)
        if self._quit:
            return ScriptExited("quit", None, None, None)
        if self._lost:
            named = ", ".join(str(rank) for rank in sorted(r for r in self._lost if r is not None)) or "?"
            return ScriptExited("killed", None, None, f"rank {named} ended without finishing (killed, or its node was lost)")
        if not ended:
            return ScriptExited("error", code, None, "no rank of the job reached cossim-tui (see torchrun's output)")
        if code not in (0, None) and (self.world_size is None or len(ended) < self.world_size):
            return ScriptExited("error", code, None, f"torchrun exited with status {code} after {len(ended)} of {self.world_size or '?'} ranks finished")
        # Every rank finished: torchrun's own status after that (its exit barrier between nodes,
        # say) is not the job's failure.
        statuses = {end.status for end in ended}
        status = "stopped" if "stopped" in statuses else "finished"
        return ScriptExited(status, 0, None, None)

    # -- what the screen says --------------------------------------------------------------

    def send(self, message: protocol.Message) -> None:
        """A command to every rank that has proved itself; dropped for ranks already gone."""
        for peer in list(self._peers.values()):
            if peer.proven:
                self._send_to(peer, message)

    def _send_to(self, peer: _Peer, message: protocol.Message) -> None:
        try:
            peer.sock.setblocking(True)
            peer.sock.sendall(protocol.encode(message))
        except OSError:
            pass
        finally:
            try:
                peer.sock.setblocking(False)
            except OSError:
                pass

    def terminate(self, grace: float = 0.5) -> None:
        """End every rank and torchrun. Closing a rank's channel ends it and its DataLoader
        workers (the agent's ``_debugger_gone``), even inside a collective a paused peer
        never joins; torchrun, told by SIGTERM, ends whatever is left of its workers."""
        if not self.started:
            # Closed without the go, torchrun ends before its workers start.
            self._go.close()
        elif self.process.poll() is None:
            self._quit = True
        for peer in list(self._peers.values()):
            try:
                peer.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        # torchrun, told by SIGTERM, ends its workers (each its own group) before it exits.
        end_group(self.process, max(grace, 5.0))
        self.listener.close()

    def _kill_group(self) -> None:
        signal_group(self.process, signal.SIGKILL)


def join_job(torchrun_args: list[str], address: tuple[str, int]) -> int:
    """``cossim-tui --connect HOST:PORT torchrun ...``: this node's part of a job whose screen
    listens at ``address``. torchrun runs here with the terminal's input and output; its ranks
    reach the screen themselves, proving ``COSSIM_TUI_TOKEN``. The exit status is torchrun's."""
    host, port = address
    env = dict(os.environ)
    env[CONNECT_ENV] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    process, go, _ = torchrun.start(torchrun_args, env)
    try:
        go.sendall(torchrun.GO)
    except OSError:
        pass  # (torchrun is gone: its status says how)
    go.close()
    try:
        return process.wait()
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait()
