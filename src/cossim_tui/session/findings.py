"""Every finding of a run, one entry per (code, site), in the order both screens show them.

A screen keeps only the last steps, but a finding that appeared at step 3 of a long run must
still be counted; so the tally is kept up as steps arrive. It counts the way the report's
``findings`` do (CONTRACT: count, first and last step, a message); a (code, site) keeps the
worst severity any step gave it, with that step's message. ``check`` and the
TUI both read it: severity order, muting and grouping by call site are decided here once.
"""

from __future__ import annotations

from collections.abc import Iterable

from msgspec import Struct

from cossim_tui.protocol import SEVERITY_RANK, Finding, Severity, StepCaptured


class FindingSummary(Struct):
    """One (code, site) over the run so far."""

    code: str
    severity: Severity
    site: str
    first_step: int
    last_step: int
    count: int
    message: str
    """The message at the step it first appeared, or at the first step that found it worse."""
    muted: bool
    ranks: list[int] = []
    """The ranks of a job it was found on, in order; empty for a single process."""


def severity_order(entry: FindingSummary) -> tuple[int, int]:
    """Most severe first, then in order of appearance."""
    return (-SEVERITY_RANK.get(entry.severity, 0), entry.first_step)


def at_or_above(severity: str, threshold: str) -> bool:
    """Whether a finding of ``severity`` counts for ``--fail-on``/``--break-on`` ``threshold``."""
    return threshold in SEVERITY_RANK and SEVERITY_RANK[severity] >= SEVERITY_RANK[threshold]


SiteFindings = tuple[str, list[FindingSummary]]
"""A call site and its findings, most severe first."""


def _ranks_of(step: StepCaptured, finding: Finding, known: list[int]) -> list[int]:
    """``known`` with the ranks a finding at ``step`` concerns: the step's own, and the others a
    comparison across ranks names."""
    ranks = set(finding.ranks)
    if step.rank is not None:
        ranks.add(step.rank)
    return known if ranks.issubset(known) else sorted(ranks.union(known))


class FindingTally:
    """``add`` each step as it arrives; ``active``, ``muted_codes`` and ``by_site`` to show them."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], FindingSummary] = {}
        """Keyed by (code, site), in the order they first appeared."""

    def add(self, steps: Iterable[StepCaptured]) -> None:
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
                        ranks=_ranks_of(step, finding, []),
                    )
                else:
                    entry.ranks = _ranks_of(step, finding, entry.ranks)
                    entry.last_step = finding.step
                    entry.count += 1
                    if SEVERITY_RANK[finding.severity] > SEVERITY_RANK[entry.severity]:
                        # A later step measured worse (precision-loss off by 0.1 or more): the
                        # entry says what it is at its worst.
                        entry.severity, entry.message = finding.severity, finding.message
                    # The agent marks a code muted from the moment the user mutes it.
                    entry.muted = entry.muted or finding.muted

    def active(self) -> list[FindingSummary]:
        """Findings that count: not muted, most severe first, then in order of appearance."""
        return sorted((f for f in self.entries.values() if not f.muted), key=severity_order)

    def muted_codes(self) -> list[str]:
        return sorted({f.code for f in self.entries.values() if f.muted})

    def any_at_or_above(self, threshold: str) -> bool:
        return any(at_or_above(f.severity, threshold) for f in self.active())

    def by_site(self) -> list[SiteFindings]:
        """Sites in the order their first finding appeared; in each, most severe first, then oldest."""
        sites: dict[str, list[FindingSummary]] = {}
        for entry in self.entries.values():
            sites.setdefault(entry.site, []).append(entry)
        return [(site, sorted(entries, key=severity_order)) for site, entries in sites.items()]

    def __len__(self) -> int:
        return len(self.entries)
