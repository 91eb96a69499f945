"""One line that says where every rank of a job stands, and which rank the panels show.

``▸0 paused at step 3 │ 1 waiting for rank 0 │ k next rank``. Hidden for a single process. The
states come from ``tui.ranks.JobView``; this only lays them out, shortest first when the
line is narrow (a state is never cut inside a number: whole states are dropped, and the
line says how many).
"""

from __future__ import annotations

from textual.app import RenderResult
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget


class RankBar(Widget):
    DEFAULT_CSS = """
    RankBar {
        height: 1;
        width: 1fr;
        display: none;
        background: $boost;
    }
    RankBar.-job {
        display: block;
    }
    """

    ranks: reactive[tuple[tuple[int, str, bool], ...]] = reactive((), layout=False)
    """(rank, state, shown) of every rank (``JobView.summary``)."""
    world_size: reactive[int | None] = reactive(None)

    def watch_ranks(self, ranks: tuple[tuple[int, str, bool], ...]) -> None:
        self.set_class(bool(ranks), "-job")

    def render(self) -> RenderResult:
        width = self.size.width or 80
        parts: list[tuple[str, str]] = []
        total = len(self.ranks)
        head = f"ranks {total}/{self.world_size} " if self.world_size is not None else f"ranks {total} "
        parts.append((head, "dim"))
        used = len(head)
        tail = " k next rank"
        for index, (rank, state, shown) in enumerate(self.ranks):
            text = f"{'▸' if shown else ' '}{rank} {state} "
            left = total - index - 1
            more = f"… {left} more" if left else ""
            if used + len(text) + len(tail) + len(more) > width and not shown:
                parts.append((f"… {total - index} more", "dim"))
                used += len(parts[-1][0])
                break
            style = "bold reverse" if shown else ("$error" if state in ("failed", "lost") else "")
            parts.append((text, style))
            parts.append(("│", "dim"))
            used += len(text) + 1
        if used + len(tail) <= width:
            parts.append((tail, "dim"))
        return Content.assemble(*parts)
