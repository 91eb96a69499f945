"""Every finding of the run so far, grouped by call site: what went wrong, where, how often.

The inspector shows one step; this screen answers "what has this run found?" without stepping
back through it. One row per (code, site): severity, code, how many steps had it, the first and
last of them, and the first message. Enter closes the screen with the chosen row, and the app
shows the step where it first appeared; escape (or ``f`` again, or enter when there is nothing
to choose) closes it with nothing chosen, and the inspector's other keys work here too
(``InspectorView``).
The app keeps the rows up to date while the screen is open (``groups``).
"""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from cossim_tui.session.findings import FindingSummary, SiteFindings
from cossim_tui.tui import palette
from cossim_tui.tui.format import fmt_int, fmt_plural
from cossim_tui.tui.screens.view import InspectorView
from cossim_tui.tui.widgets.findings_panel import MutedKey, badge

_NUMBER = 7
"""Width of the count, first and last columns."""


def summary_row(entry: FindingSummary, code_width: int, muted: bool) -> Content:
    """`` error  stale-partner      16      1     16  vector2 is step 0's …``."""
    row = Content.assemble(
        badge(entry.severity),
        " ",
        (f"{entry.code:<{code_width}}", palette.EMPHASIS),
        f"{fmt_int(entry.count):>{_NUMBER}}",
        f"{entry.first_step:>{_NUMBER}}",
        f"{entry.last_step:>{_NUMBER}}",
        "  ",
        ("muted ", palette.LABEL) if muted else "",
        entry.message,
    )
    return row.stylize("dim") if muted else row


def header_row(code_width: int) -> Content:
    return Content.styled(
        f"{'':7} {'code':<{code_width}}{'steps':>{_NUMBER}}{'first':>{_NUMBER}}{'last':>{_NUMBER}}  first message",
        palette.LABEL,
    )


class FindingsSummaryScreen(InspectorView[FindingSummary | None]):
    """``FindingsSummaryScreen(groups, muted)``; dismissed with the row chosen by enter, or ``None``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("f", "close", "Close", show=False),
    ]

    groups: reactive[list[SiteFindings]] = reactive(list, always_update=True, init=False)
    """Call sites and their findings, as ``FindingTally.by_site`` gives them."""
    muted: reactive[frozenset[MutedKey]] = reactive(frozenset, init=False)
    """Muted from the inspector (``m``); findings the agent marked muted say so themselves."""

    def __init__(self, groups: list[SiteFindings], muted: frozenset[MutedKey] = frozenset()) -> None:
        super().__init__()
        self._entries: dict[str, FindingSummary] = {}
        self._selected: MutedKey | None = None
        self.set_reactive(FindingsSummaryScreen.groups, groups)
        self.set_reactive(FindingsSummaryScreen.muted, muted)

    def compose(self) -> ComposeResult:
        with Vertical(id="summary-box"):
            yield Static(id="summary-header")
            yield OptionList(id="summary-list")

    def on_mount(self) -> None:
        self._show_hint()
        self.call_after_refresh(self._show_hint)  # (once the box has its width)
        self._show()

    def on_resize(self) -> None:
        self._show_hint()

    def _show_hint(self) -> None:
        """The keys under the list, in as many words as the border holds: at 80 columns the
        full hint lost its "escape: close"."""
        box = self.query_one("#summary-box")
        room = box.outer_size.width - 6
        hints = (
            "↑ ↓ choose · enter: show the step where it first appeared · escape: close",
            "↑ ↓ choose · enter: its first step · escape: close",
            "enter: first step · escape: close",
        )
        box.border_subtitle = next((hint for hint in hints if room <= 0 or len(hint) <= room), hints[-1])

    def watch_groups(self) -> None:
        self._show()

    def watch_muted(self) -> None:
        self._show()

    def _show(self) -> None:
        if not self.query("#summary-list"):
            return  # not composed yet; on_mount shows the rows
        groups = self.groups
        entries = [entry for _, site_entries in groups for entry in site_entries]
        box = self.query_one("#summary-box")
        box.border_title = (
            f"findings so far: {fmt_plural(len(entries), 'kind')} at {fmt_plural(len(groups), 'call site')}"
            if entries
            else "findings so far"
        )
        code_width = max([len(entry.code) for entry in entries] + [4]) + 1
        self.query_one("#summary-header", Static).update(header_row(code_width))
        option_list = self.query_one("#summary-list", OptionList)
        if not entries:
            option_list.set_options([Option(Content.styled("no findings so far", palette.LABEL), disabled=True)])
            return
        self._entries = {}
        options: list[Option | None] = []
        for site, site_entries in groups:
            if options:
                options.append(None)
            options.append(Option(Content.assemble(("at ", palette.LABEL), (site, palette.EMPHASIS)), disabled=True))
            for entry in site_entries:
                key = (entry.code, entry.site)
                option_id = f"{entry.code}@{entry.site}"
                self._entries[option_id] = entry
                muted = entry.muted or key in self.muted
                options.append(Option(summary_row(entry, code_width, muted), id=option_id))
        option_list.set_options(options)
        # Keep the cursor on the same row as the counts go up while the run goes on.
        wanted = f"{self._selected[0]}@{self._selected[1]}" if self._selected else None
        if wanted is not None and wanted in self._entries:
            option_list.highlighted = option_list.get_option_index(wanted)
        else:
            option_list.highlighted = option_list.get_option_index(next(iter(self._entries)))

    @property
    def selected_entry(self) -> FindingSummary | None:
        option = self.query_one("#summary-list", OptionList).highlighted_option
        return self._entries.get(option.id) if option is not None and option.id is not None else None

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        entry = self._entries.get(event.option_id or "")
        if entry is not None:
            self._selected = (entry.code, entry.site)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        entry = self._entries.get(event.option_id or "")
        if entry is not None:
            self.dismiss(entry)

    def on_key(self, event: events.Key) -> None:
        if event.key == "enter" and not self._entries:
            # Nothing to choose: enter leaves, as it would after choosing.
            event.stop()
            event.prevent_default()
            self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
