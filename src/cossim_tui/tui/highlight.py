"""Which fields on screen prove the selected finding, so that the panels can light them up.

A finding names its proof as field paths (``Finding.evidence``): ``relation.same_object``,
``args.1.grad_fn``, ``args.0`` (the whole argument), ``cos``. The app hands every panel one
``Highlight`` (attributes down) and each panel asks it about the fields it draws, by the same
paths. ``args.<field>`` without an index (``args.nan``, ``args.grad_fn``) is about both
arguments. Paths no panel draws (``evidence.collapse``, measured by the agent only) light
nothing up.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.widget import Widget

from cossim_tui import protocol
from cossim_tui.tui import palette

EVIDENCE_CLASSES = ("-evidence-error", "-evidence-warning", "-evidence-info")
"""CSS classes (``app.tcss``) of a whole widget that proves the selected finding."""


@dataclass(frozen=True)
class Highlight:
    """The fields that prove one finding, and that finding's severity (it picks the colour)."""

    fields: frozenset[str] = frozenset()
    severity: str = "info"

    @classmethod
    def of(cls, finding: protocol.Finding | None) -> Highlight:
        if finding is None:
            return NO_HIGHLIGHT
        return cls(frozenset(finding.evidence), finding.severity)

    def shows(self, *paths: str) -> bool:
        """Whether any of ``paths`` (as a panel names what it draws) proves the finding."""
        return any(self._shows(path) for path in paths)

    def _shows(self, path: str) -> bool:
        if path in self.fields:
            return True
        head, _, rest = path.partition(".")
        index, _, field = rest.partition(".")
        return head == "args" and index.isdigit() and bool(field) and f"args.{field}" in self.fields

    @property
    def line_style(self) -> str:
        """The background of a line of text that proves the finding."""
        return palette.EVIDENCE.get(self.severity, palette.EVIDENCE["info"])

    @property
    def css_class(self) -> str:
        return f"-evidence-{self.severity}" if self.severity in ("error", "warning") else "-evidence-info"


NO_HIGHLIGHT = Highlight()


def mark(widget: Widget, highlight: Highlight, proves: bool) -> None:
    """Give ``widget`` the evidence class of ``highlight``'s severity, or none."""
    widget.remove_class(*EVIDENCE_CLASSES)
    if proves:
        widget.add_class(highlight.css_class)


def light_up(line: Content, highlight: Highlight, width: int) -> Content:
    """``line`` on the evidence background, across the whole ``width`` so that the eye finds it."""
    if width > line.cell_length:
        line = line.extend_right(width - line.cell_length)
    return line.stylize_before(highlight.line_style)
