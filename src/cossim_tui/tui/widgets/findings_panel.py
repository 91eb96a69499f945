"""What the diagnostics found at this step, and for the selected finding, why and how to fix it.

Each finding is one line (severity badge, code, message) in an ``OptionList``; the
explanation and the fix from ``diagnostics.codes.CATALOG`` appear under the list for the
highlighted one. Muted findings stay listed, dimmed, so muting never hides what happened.
Whenever the highlighted finding changes (the cursor moved, a new step arrived) the panel says
so with ``FindingHighlighted``, so that the app can light up the evidence in the other panels.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from cossim_tui import protocol
from cossim_tui.diagnostics.codes import CATALOG
from cossim_tui.tui import palette

MutedKey = tuple[str, str]
"""``(code, site)``: what one Mute command silences."""

_BADGE_TEXT = {"error": " error ", "warning": " warn  ", "info": " info  "}


def badge(severity: str) -> Content:
    """`` error `` on the severity's colours, always seven cells wide so that codes line up."""
    return Content.styled(_BADGE_TEXT.get(severity, f" {severity[:5]:<5} "), palette.BADGE.get(severity, ""))


def finding_line(finding: protocol.Finding, muted: bool) -> Content:
    """`` error  stale-partner (muted) vector2_tensor is …``: the mark comes before the message,
    which the list cuts, so that it is never the part cut off."""
    return Content.assemble(
        badge(finding.severity),
        " ",
        (finding.code, palette.EMPHASIS),
        (" (muted)", palette.LABEL) if muted else "",
        " ",
        finding.message,
    ).stylize("dim" if muted else "")


def explain(finding: protocol.Finding) -> Content:
    """The finding's whole message (the list cuts it), then the catalogue's explanation and fix."""
    message = Content.styled(finding.message, palette.EMPHASIS)
    info = CATALOG.get(finding.code)
    if info is None:
        return Content.assemble(
            message, "\n", (f"no explanation is known for '{finding.code}'", palette.CAUTION)
        )
    return Content.assemble(
        message,
        "\n",
        (f"{info.title}. ", palette.EMPHASIS),
        info.explanation,
        "\n",
        ("Fix: ", palette.EMPHASIS),
        info.fix,
    )


class FindingsPanel(Vertical):
    """The current step's findings; ``selected_finding`` is the one under the cursor."""

    class FindingHighlighted(Message):
        """The finding under the cursor is now ``finding`` (``None``: the step has none)."""

        def __init__(self, finding: protocol.Finding | None) -> None:
            super().__init__()
            self.finding = finding

    findings: reactive[list[protocol.Finding]] = reactive(list, init=False)
    muted: reactive[frozenset[MutedKey]] = reactive(frozenset, init=False)
    """Findings muted from this screen; the agent marks later ones itself (``Finding.muted``)."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._selected: MutedKey | None = None
        """The highlighted finding's (code, site), to find it again in the next step's list."""
        self._chosen = False
        """``_selected`` was chosen by ``select_finding``: kept at the next step even if muted."""

    def compose(self) -> ComposeResult:
        yield OptionList(id="finding-list")
        with VerticalScroll(id="finding-help-scroll"):
            yield Static("", id="finding-help")

    def on_mount(self) -> None:
        self._show_findings()

    def watch_findings(self) -> None:
        self._show_findings(leave_muted=not self._chosen)
        self._chosen = False

    def watch_muted(self) -> None:
        self._show_findings()

    def is_muted(self, finding: protocol.Finding) -> bool:
        return finding.muted or (finding.code, finding.site) in self.muted

    @property
    def selected_finding(self) -> protocol.Finding | None:
        highlighted = self.query_one("#finding-list", OptionList).highlighted
        if highlighted is None or highlighted >= len(self.findings):
            return None
        return self.findings[highlighted]

    def _show_findings(self, leave_muted: bool = False) -> None:
        option_list = self.query_one("#finding-list", OptionList)
        findings = self.findings
        self.border_title = f"findings ({len(findings)})" if findings else "findings"
        if not findings:
            option_list.set_options([Option(Content.styled("no findings at this step", palette.LABEL), disabled=True)])
            self._show_help(None)
            return
        option_list.set_options(
            Option(finding_line(finding, self.is_muted(finding)), id=str(index))
            for index, finding in enumerate(findings)
        )
        # Keep the cursor on the same finding as steps go by, so an explanation being read
        # does not jump away when the next step arrives; but a new step (``leave_muted``) moves
        # it off a muted one to one that is not: ``c`` goes past muted findings, so the one it
        # stopped at is new, and that is the one to explain.
        keys = [(finding.code, finding.site) for finding in findings]
        unmuted = [index for index, finding in enumerate(findings) if not self.is_muted(finding)]
        if self._selected in keys and not (leave_muted and unmuted and keys.index(self._selected) not in unmuted):
            keep = keys.index(self._selected)
        else:
            keep = unmuted[0] if unmuted and leave_muted else 0
        option_list.highlighted = keep
        self._show_help(findings[keep])

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        index = event.option_index
        if 0 <= index < len(self.findings):
            self._show_help(self.findings[index])

    def select_finding(self, key: MutedKey) -> None:
        """Put the cursor on the finding ``(code, site)``, now or as soon as a step has it."""
        self._selected = key
        self._chosen = True
        self._show_findings()

    def _show_help(self, finding: protocol.Finding | None) -> None:
        if finding is not None:
            self._selected = (finding.code, finding.site)
        self.query_one("#finding-help", Static).update(explain(finding) if finding is not None else "")
        self.post_message(self.FindingHighlighted(finding))
