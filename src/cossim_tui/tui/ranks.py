"""The ranks of a job as the screen knows them: one run model per rank, and which one is shown.

In a ``torchrun`` job every rank numbers its own steps and pauses at its own calls, so each has
its own ``RunView``; the panels show one rank's (``shown``), and the rank bar says where every
rank stands. Plain Python, as ``model`` is: tests drive it without Pilot.

A rank that runs while a peer is paused, and has sent nothing for ``WAITING_AFTER`` seconds,
is most likely blocked in a collective that the paused peer has not joined (DDP's gradient
all-reduce, an ``all_gather``): it says "waiting for rank N" rather than look hung.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cossim_tui import protocol
from cossim_tui.session.events import RankLost, ScriptExited
from cossim_tui.tui.model import RunView

WAITING_AFTER = 1.0
"""Seconds without a step, while a peer is paused, before a running rank is said to wait for it."""


class JobView:
    """Every rank's ``RunView``, made as each rank says hello, and the rank on screen."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.models: dict[int, RunView] = {}
        self.shown: int | None = None
        self.chosen = False
        """The user chose the shown rank (``k``, a digit); until then the lowest rank is shown."""
        self.world_size: int | None = None
        self.hosts: dict[int, str | None] = {}
        self.lost: set[int] = set()
        self._heard: dict[int, float] = {}
        self._clock = clock

    def rank_of(self, event: object) -> int | None:
        return getattr(event, "rank", None)

    def model(self, rank: int) -> RunView:
        """The rank's model (made at its first event); the first rank seen is shown first."""
        model = self.models.get(rank)
        if model is None:
            model = self.models[rank] = RunView()
            if self.shown is None:
                self.shown = rank
        self._heard[rank] = self._clock()
        return model

    def hello(self, hello: protocol.Hello) -> RunView | None:
        if hello.rank is None:
            return None
        self.hosts[hello.rank] = hello.host
        if hello.world_size is not None:
            self.world_size = hello.world_size
        return self.model(hello.rank)

    def rank_lost(self, lost: RankLost) -> None:
        if lost.rank is not None:
            self.lost.add(lost.rank)

    def ended(self, exited: ScriptExited) -> None:
        """The job is over: every rank's model too (a rank that said nothing of its end failed)."""
        for model in self.models.values():
            if not model.over:
                model.phase = model.run_ended(exited if model.script_ended is None else _rank_exit(model.script_ended))[0]

    def step(self, offset: int) -> int | None:
        """The rank ``offset`` places after the shown one, in rank order (wrapping round)."""
        ranks = sorted(self.models)
        if not ranks:
            return None
        index = ranks.index(self.shown) if self.shown in ranks else 0
        return ranks[(index + offset) % len(ranks)]

    def state(self, rank: int) -> str:
        """Where ``rank`` stands, in a few words."""
        model = self.models[rank]
        if rank in self.lost and (model.script_ended is None):
            return "lost"
        if model.script_ended is not None and not model.over:
            return "finished" if model.script_ended.status in ("finished", "stopped") else "failed"
        if model.over:
            return "failed" if model.phase == "failed" else "finished"
        if model.phase == "paused" and model.latest is not None:
            return f"paused at step {model.latest.step}"
        paused = [other for other, m in sorted(self.models.items()) if other != rank and m.phase == "paused"]
        if paused and self._clock() - self._heard.get(rank, 0.0) >= WAITING_AFTER:
            return f"waiting for rank {paused[0]}"
        if model.latest is not None:
            return f"running, step {model.latest.step}"
        return "starting"

    def summary(self) -> list[tuple[int, str, bool]]:
        """(rank, state, shown) of every rank, in rank order."""
        return [(rank, self.state(rank), rank == self.shown) for rank in sorted(self.models)]


def _rank_exit(ended: protocol.ScriptEnded) -> ScriptExited:
    return ScriptExited(ended.status, ended.exit_code, None, ended.exception)  # type: ignore[arg-type]
