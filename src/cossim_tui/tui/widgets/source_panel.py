"""Where in the user's code the intercepted call was made, with a few lines around it.

The call's own lines carry a ``▶`` in the gutter and a highlighted background, so the eye
finds them at once; the window of lines follows the call when the panel is short.
"""

from __future__ import annotations

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


class SourcePanel(Widget):
    """The call site: ``path:line in function`` as the title, the source lines below."""

    site: reactive[protocol.CallSite | None] = reactive(None)
    context: reactive[dict[str, float]] = reactive(dict)

    def watch_site(self, site: protocol.CallSite | None) -> None:
        self.border_title = Content(f"{site.label} in {site.function}") if site is not None else None

    def watch_context(self, context: dict[str, float]) -> None:
        self.border_subtitle = Content(describe_context(context)) if context else None

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
        rows: list[Content] = []
        for index, line in enumerate(code[: len(site.lines)]):
            number = site.first_line + index
            on_call = site.call_start <= number <= site.call_end
            gutter = Content.assemble(
                ("▶ " if on_call else "  ", palette.ALARM),
                (f"{number:>{number_width}} │ ", palette.LABEL),
            )
            row = gutter + line
            if on_call:
                if width > row.cell_length:
                    row = row.extend_right(width - row.cell_length)
                row = row.stylize_before(palette.CALL_LINE)
            rows.append(row)
        return Content("\n").join(self._window(rows, site))

    def _window(self, rows: list[Content], site: protocol.CallSite) -> list[Content]:
        """The rows that fit, keeping the call in view and roughly centred."""
        height = self.content_size.height
        if not height or len(rows) <= height:
            return rows
        first_call = site.call_start - site.first_line
        last_call = site.call_end - site.first_line
        span = last_call - first_call + 1
        start = first_call - max(0, (height - span) // 2)
        start = max(0, min(start, len(rows) - height))
        return rows[start : start + height]
