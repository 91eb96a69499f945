"""Every finding of the run so far, one entry per (code, site), for the findings summary.

The app sees every step, but keeps only the last ``MAX_STEPS_KEPT``; a finding that appeared
at step 3 of a long run must still be counted, so the tally is kept up as steps arrive, not
recomputed from the steps in memory. It counts steps the way the report does (CONTRACT
``findings``: count, first and last step, the first message), grouped by call site.
"""

from __future__ import annotations

from collections.abc import Iterable

from cossim_tui import protocol
from cossim_tui.protocol import SEVERITY_RANK
from cossim_tui.report import FindingSummary

SiteFindings = tuple[str, list[FindingSummary]]
"""A call site and its findings, most severe first."""


class FindingTally:
    """``add`` each step as it arrives; ``by_site`` for the screen."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], FindingSummary] = {}
        """Keyed by (code, site), in the order they first appeared."""

    def add(self, steps: Iterable[protocol.StepCaptured]) -> None:
        for step in steps:
            for finding in step.findings:
                key = (finding.code, finding.site)
                entry = self.entries.get(key)
                if entry is None:
                    self.entries[key] = FindingSummary(
                        code=finding.code,
                        severity=finding.severity,
                        site=finding.site,
                        first_step=finding.step,
                        last_step=finding.step,
                        count=1,
                        message=finding.message,
                        muted=finding.muted,
                    )
                else:
                    entry.last_step = finding.step
                    entry.count += 1
                    if SEVERITY_RANK.get(finding.severity, 0) > SEVERITY_RANK.get(entry.severity, 0):  # a later step measured worse (precision-loss)
                        entry.severity, entry.message = finding.severity, finding.message
                    # The agent marks a code muted from the moment the user mutes it.
                    entry.muted = entry.muted or finding.muted

    def by_site(self) -> list[SiteFindings]:
        """Sites in the order their first finding appeared; in each, most severe first, then oldest."""
        sites: dict[str, list[FindingSummary]] = {}
        for entry in self.entries.values():
            sites.setdefault(entry.site, []).append(entry)
        return [
            (site, sorted(entries, key=lambda e: (-SEVERITY_RANK.get(e.severity, 0), e.first_step)))
            for site, entries in sites.items()
        ]

    def __len__(self) -> int:
        return len(self.entries)
