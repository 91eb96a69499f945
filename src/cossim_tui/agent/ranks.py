"""Ranks a script starts itself (``torch.multiprocessing.spawn``), followed into their processes.

A script run as ``cossim-tui train.py`` that calls ``mp.spawn(train, nprocs=2)`` trains in two
new interpreters, not in the one the agent is in. ``RankSpawns`` wraps ``spawn`` and
``start_processes`` so that each process runs ``RankEntry``: it joins the agent of the
script's process (``RankRelay``, a loopback listener with a fresh secret, challenged as the
ranks of a torchrun job are), takes its settings, hooks torch as the agent does, and then calls
the script's function with the arguments it was given. The relay hands every message of a
rank on to the screen stamped with its rank (the process index), judges the ranks' steps
against each other (``diagnostics.ranks``), and hands every command of the screen to every
rank. DataLoader workers are started by other means and are never entered.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from cossim_tui import protocol
from cossim_tui.diagnostics.ranks import CrossRankJudge
from cossim_tui.protocol import handshake


class RankRelay:
    """The script's process's side: a listener the spawned ranks join, and their messages relayed."""

    def __init__(self, forward: Callable[[protocol.Message], None], config: Callable[[], protocol.AgentConfig]) -> None:
        self._forward = forward
        self._config = config
        self.token = secrets.token_hex(16)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = self._listener.getsockname()[:2]
        self._ranks: list[protocol.Connection] = []
        self._lock = threading.Lock()
        self._judge = CrossRankJudge()
        threading.Thread(target=self._accept, name="cossim-tui-ranks", daemon=True).start()

    def _accept(self) -> None:
        from cossim_tui.agent import intercept

        intercept.agent_thread()
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), name="cossim-tui-rank", daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        from cossim_tui.agent import intercept

        intercept.agent_thread()
        asked = handshake.challenge()
        try:
            sock.settimeout(10)
            sock.sendall(asked)
            if not handshake.verify(self.token, asked, handshake.receive_exactly(sock, handshake.ANSWER_SIZE)):
                sock.close()
                return
            sock.settimeout(None)
        except OSError:
            sock.close()
            return
        connection = protocol.Connection(sock)
        connection.send(protocol.Start(config=self._config()))
        with self._lock:
            self._ranks.append(connection)
        rank = None
        try:
            while True:
                message = connection.receive()
                if message is None:
                    break
                if isinstance(message, protocol.Hello):
                    rank = message.rank
                with self._lock:
                    self._judge.arrived(message, rank)
                self._forward(message)
        except (OSError, protocol.ProtocolError):
            pass
        finally:
            with self._lock:
                if connection in self._ranks:
                    self._ranks.remove(connection)
            connection.close()

    def broadcast(self, message: protocol.Message) -> None:
        """A command of the screen, to every rank."""
        with self._lock:
            ranks = list(self._ranks)
        for connection in ranks:
            try:
                connection.send(message)
            except OSError:
                pass


class RankEntry:
    """What a spawned process runs instead of the script's function: the agent first. Pickled by
    ``spawn`` (it names the function, as ``spawn`` itself would)."""

    def __init__(self, function: Callable[..., Any], address: tuple[str, int], token: str, world_size: int) -> None:
        self.function, self.address, self.token, self.world_size = function, address, token, world_size

    def __call__(self, index: int, *args: Any) -> Any:
        from cossim_tui.agent.controller import Controller

        sock = handshake.join(self.address, self.token)
        connection = protocol.Connection(sock)
        start = connection.receive()
        if not isinstance(start, protocol.Start):
            os._exit(1)
        os.environ.setdefault("RANK", str(index))
        os.environ.setdefault("WORLD_SIZE", str(self.world_size))
        os.environ.setdefault("LOCAL_RANK", str(index))
        controller = Controller(connection, start.config)
        controller.hello(f"rank {index}", list(sys.argv), job=True)
        controller.install()
        try:
            result = self.function(index, *args)
        except SystemExit as exc:
            controller.script_ended("finished", exc.code if isinstance(exc.code, int) else 0, None)
            raise
        except BaseException as exc:
            controller.script_ended("error", 1, f"{type(exc).__name__}: {exc}")
            raise
        controller.script_ended("finished", 0, None)
        return result


class RankSpawns:
    """Wraps ``torch.multiprocessing.spawn`` and ``start_processes`` (the script's results and
    errors untouched) so that every process they start runs under the agent."""

    def __init__(self, relay: Callable[[], RankRelay]) -> None:
        self._relay = relay

    def install(self) -> None:
        import torch.multiprocessing as mp

        for name in ("spawn", "start_processes"):
            original = getattr(mp, name, None)
            if original is None or getattr(original, "__cossim_tui_original__", None) is not None:
                continue
            wrapped = self._wrap(original)
            setattr(mp, name, wrapped)
            spawn_module = sys.modules.get("torch.multiprocessing.spawn")
            if spawn_module is not None and getattr(spawn_module, name, None) is original:
                setattr(spawn_module, name, wrapped)

    def _wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        relay = self._relay

        @functools.wraps(original)
        def started(fn: Callable[..., Any], args: tuple = (), nprocs: int = 1, *rest: Any, **kwargs: Any) -> Any:
            if os.getpid() != _pid_of_script:
                return original(fn, args, nprocs, *rest, **kwargs)
            try:
                one = relay()
                entry = RankEntry(fn, one.address, one.token, int(nprocs))
            except Exception as exc:  # noqa: BLE001 - the ranks run, unseen, rather than not at all
                print(f"cossim-tui: the spawned ranks are not followed: {type(exc).__name__}: {exc}", file=sys.stderr)
                return original(fn, args, nprocs, *rest, **kwargs)
            return original(entry, args, nprocs, *rest, **kwargs)

        started.__cossim_tui_original__ = original  # type: ignore[attr-defined]
        return started


_pid_of_script = os.getpid()
"""The script's process: only its own spawns are followed (a rank that spawns is left alone)."""


LIGHTNING_LAUNCHERS = (
    "pytorch_lightning.strategies.launchers.subprocess_script",
    "lightning_fabric.strategies.launchers.subprocess_script",
    "lightning.pytorch.strategies.launchers.subprocess_script",
    "lightning.fabric.strategies.launchers.subprocess_script",
)
"""Where Lightning's ``ddp`` strategy starts ranks 1…N−1: it runs the script again, as
``python SCRIPT ARGS`` (or ``-m MODULE``), in a subprocess per rank; rank 0 is the script's
own process."""


class RankLaunches:
    """Follows the ranks that Lightning's ``ddp`` strategy starts by running the script again:
    their command runs the agent first (``-m cossim_tui.agent`` before the script), and while
    Lightning starts them, and only then, the environment it copies for them names the relay.
    The script's own process becomes rank 0 of the job from then on (``become_rank``)."""

    def __init__(self, relay: Callable[[], RankRelay], become_rank: Callable[[int, int | None], None]) -> None:
        self._relay = relay
        self._become_rank = become_rank

    def install(self, when_imported: Callable[[str, Callable[[Any], None]], None]) -> None:
        for name in LIGHTNING_LAUNCHERS:
            when_imported(name, self._follow)

    def _follow(self, module: Any) -> None:
        for name in ("_basic_subprocess_cmd", "_hydra_subprocess_cmd"):
            original = getattr(module, name, None)
            if original is not None and getattr(original, "__cossim_tui_original__", None) is None:
                setattr(module, name, _through_the_agent(original))
        launcher = getattr(module, "_SubprocessScriptLauncher", None)
        children = getattr(launcher, "_call_children_scripts", None)
        if children is not None and getattr(children, "__cossim_tui_original__", None) is None:
            launcher._call_children_scripts = self._starting_ranks(children)

    def _starting_ranks(self, original: Callable[..., Any]) -> Callable[..., Any]:
        relay, become_rank = self._relay, self._become_rank

        @functools.wraps(original)
        def call_children_scripts(launcher: Any, *args: Any, **kwargs: Any) -> Any:
            from cossim_tui.protocol import CONNECT_ENV, TOKEN_ENV

            one = relay()
            host, port = one.address
            os.environ[CONNECT_ENV], os.environ[TOKEN_ENV] = f"{host}:{port}", one.token
            try:
                return original(launcher, *args, **kwargs)
            finally:
                # The script never sees them: only the environment Lightning copied for its ranks.
                os.environ.pop(CONNECT_ENV, None)
                os.environ.pop(TOKEN_ENV, None)
                world = os.environ.get("WORLD_SIZE")
                become_rank(int(os.environ.get("LOCAL_RANK", "0")), int(world) if world and world.isdigit() else None)

        call_children_scripts.__cossim_tui_original__ = original  # type: ignore[attr-defined]
        return call_children_scripts


def _through_the_agent(original: Callable[..., Any]) -> Callable[..., Any]:
    """A Lightning command builder whose command runs the agent first: ``python -m
    cossim_tui.agent SCRIPT ARGS`` (or ``-m MODULE ARGS``), which runs it as python would."""

    @functools.wraps(original)
    def command(*args: Any, **kwargs: Any) -> Any:
        built = original(*args, **kwargs)
        command, rest = (built, None) if not isinstance(built, tuple) else (built[0], built[1:])
        command = [command[0], "-m", "cossim_tui.agent", *command[1:]]
        return command if rest is None else (command, *rest)

    command.__cossim_tui_original__ = original  # type: ignore[attr-defined]
    return command


def _env_int(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def job_place() -> dict[str, Any]:
    """Where this process is in its job, as torchrun (or Lightning) told it: ``Hello``'s rank,
    world size, local rank, and the host. A rank without ``RANK`` on one node is its
    ``LOCAL_RANK`` (Lightning's ranks)."""
    place: dict[str, Any] = {name.lower(): _env_int(name) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if place["rank"] is None and os.environ.get("NODE_RANK", "0") == "0":
        place["rank"] = place["local_rank"]
    place["host"] = socket.gethostname()
    return place


class FollowedRanks:
    """The ranks the script's process starts itself (``RankSpawns``, ``RankLaunches``), their
    relay (made at the first start), and the rank this process becomes among them."""

    def __init__(self, send: Callable[[protocol.Message], None], config: Callable[[], protocol.AgentConfig], pid: int) -> None:
        self._send, self._config, self._pid = send, config, pid
        self.rank: int | None = None
        """The rank this process became (Lightning's rank 0); its steps carry it from then on."""
        self._relay: RankRelay | None = None

    def install(self, when_imported: Callable[[str, Callable[[Any], None]], None]) -> None:
        RankSpawns(self.relay).install()
        RankLaunches(self.relay, self.become).install(when_imported)

    def relay(self) -> RankRelay:
        if self._relay is None:
            self._relay = RankRelay(self._send, self._config)
        return self._relay

    def become(self, rank: int, world_size: int | None) -> None:
        """This process is a rank of the job it started: the screen is told, as by a rank's hello."""
        self.rank = rank
        self._send(protocol.Hello(
            pid=self._pid, python=sys.version.split()[0], target=f"rank {rank}", argv=list(sys.argv),
            rank=rank, world_size=world_size, local_rank=rank, host=socket.gethostname(),
        ))

    def broadcast(self, message: protocol.Message) -> None:
        """A command of the screen, to the ranks started so far."""
        if self._relay is not None:
            self._relay.broadcast(message)
