"""Where in the user's code the intercepted call was made, with a few lines around it.

The call's own lines carry a ``▶`` in the gutter and a highlighted background, so the eye
finds them at once; the window of lines follows the call when the panel is short. The call's
lines are never cut at the border: in a narrow panel they go on in the next row.
"""

from __future__ import annotations

import re

from textual.app import RenderResult
from textual.content import Content
from textual.highlight import highlight
from textual.reactive import reactive
from textual.widget import Widget

from cossim_tui import protocol
from cossim_tui.tui import palette
from cossim_tui.tui.format import fmt_float

CONTEXT_ORDER = ("epoch", "batch", "loss", "lr")
"""How the loop's position reads best; unknown keys follow in their own order."""


def describe_context(context: dict[str, float]) -> str:
    """``epoch 0 · batch 3 · loss 0.6931 · lr 0.01`` from what the agent knew."""
    keys = [k for k in CONTEXT_ORDER if k in context] + [k for k in context if k not in CONTEXT_ORDER]
    return " · ".join(f"{key} {fmt_float(context[key])}" for key in keys)


def _dedent(lines: list[str]) -> list[str]:
    """Drop the indentation all lines share: a loop body's eight spaces waste a narrow panel."""
    indents = [len(line) - len(line.lstrip(" ")) for line in lines if line.strip()]
    common = min(indents, default=0)
    return [line[common:] for line in lines]


def _break_code(code: Content, first: int, width: int) -> list[Content]:
    """``code`` in rows of at most ``width`` cells, each filled as far as it goes and broken
    after a space, a comma or an opening bracket (``similarity = F.cosine_similarity(`` /
    ``vector1_tensor, vector2_tensor, dim=-1)``); a name longer than a row is folded. The
    first row may be ``first`` cells long (the rest are indented under it)."""
    text = code.plain
    ends = [match.end() for match in re.finditer(r"[ ,(\[{]+", text)] + [len(text)]
    rows: list[Content] = []
    start = 0
    while start < len(text):
        room = first if not rows else width
        fits = [end for end in ends if start < end <= start + room]
        end = fits[-1] if fits else min(start + room, len(text))
        rows.append(code[start:end].rstrip())
        start = end
    return rows or [code]


class SourcePanel(Widget):
    """The call site: ``path:line in function`` as the title, the source lines below."""

    site: reactive[protocol.CallSite | None] = reactive(None)
    context: reactive[dict[str, float]] = reactive(dict)

    def watch_site(self, site: protocol.CallSite | None) -> None:
        if site is None:
            self.border_title = None
            return
        # A call made inside a library: the user's line, and the library function it went through.
        via = f" via {site.via.rpartition(':')[2]}" if site.via else ""
        self.border_title = Content(f"{site.label} in {site.function}{via}")

    def watch_context(self) -> None:
        self._show_context()

    def on_resize(self) -> None:
        self._show_context()

    def _show_context(self) -> None:
        """The training context under the source, whole: where the border is too short, the
        top line's figures (lr, batch, epoch) give way, never a cut number ("lr 0.01…" at 80x24)."""
        context = self.context
        room = self.outer_size.width - 6
        shown = dict(context)
        text = describe_context(shown)
        extra = [key for key in reversed(context) if key not in CONTEXT_ORDER]
        for key in ("lr", *extra, "batch", "epoch"):
            if not self.outer_size.width or len(text) <= room:
                break
            shown.pop(key, None)
            text = describe_context(shown)
        self.border_subtitle = Content(text) if text and (not self.outer_size.width or len(text) <= room) else None

    def render(self) -> RenderResult:
        site = self.site
        if site is None:
            return Content.styled("waiting for the first call…", palette.LABEL)
        if not site.lines:
            return Content.styled(f"source of {site.label} is not available", palette.LABEL)
        code = highlight("\n".join(_dedent(site.lines)), language="python").split("\n")
        last_number = site.first_line + len(site.lines) - 1
        number_width = len(str(last_number))
        width = self.content_size.width
        rows: list[tuple[bool, Content]] = []
        for index, line in enumerate(code[: len(site.lines)]):
            number = site.first_line + index
            on_call = site.call_start <= number <= site.call_end
            gutter = Content.assemble(
                ("▶ " if on_call else "  ", palette.ALARM),
                (f"{number:>{number_width}} │ ", palette.LABEL),
            )
            if not on_call:
                rows.append((False, gutter + line))  # context: cut at the border if need be
                continue
            # The call itself is read whole: a line longer than the panel goes on under itself.
            room = width - gutter.cell_length
            indent = len(line.plain) - len(line.plain.lstrip(" "))
            pieces = [line]
            if width and room - indent - 2 > 8 and line.cell_length > room:
                # Wrapped under its own indentation, two cells further, as a reader would write it.
                pieces = [
                    Content(" " * (indent + (2 if n else 0))) + piece
                    for n, piece in enumerate(_break_code(line[indent:], room - indent, room - indent - 2))
                ]
            blank = Content.styled(f"  {'':>{number_width}} │ ", palette.LABEL)
            for piece_index, piece in enumerate(pieces):
                row = (gutter if piece_index == 0 else blank) + piece
                if width > row.cell_length:
                    row = row.extend_right(width - row.cell_length)
                rows.append((True, row.stylize_before(palette.CALL_LINE)))
        return Content("\n").join(self._window(rows))

    def _window(self, rows: list[tuple[bool, Content]]) -> list[Content]:
        """The rows that fit, keeping the call in view and roughly centred."""
        height = self.content_size.height
        shown = [row for _, row in rows]
        if not height or len(rows) <= height:
            return shown
        calls = [index for index, (on_call, _) in enumerate(rows) if on_call]
        first_call, last_call = (calls[0], calls[-1]) if calls else (0, 0)
        span = last_call - first_call + 1
        start = first_call - max(0, (height - span) // 2)
        start = max(0, min(start, len(rows) - height))
        return shown[start : start + height]
