"""A finding's severity over a run is the worst any step gave it: ``precision-loss`` is a
warning at a step whose result is a little off and an error at one whose result is wrong
(CONTRACT), and the report, check's exit status and the TUI's findings list must not keep
the first step's milder one."""

from __future__ import annotations

from builders import stale_step

from cossim_tui import protocol
from cossim_tui.report import ReportBuilder
from cossim_tui.session.events import ScriptExited, Target
from cossim_tui.session.exits import check_status
from cossim_tui.session.findings import FindingTally


def _precision_step(number: int, severity: str, off: str) -> protocol.StepCaptured:
    step = stale_step(number)
    message = f"the result differs from float64 by up to {off} (float16, float16)"
    step.findings = [protocol.Finding("precision-loss", severity, message, "train.py:42", number, ["cos"])]  # type: ignore[arg-type]
    return step


RUN = [_precision_step(0, "warning", "0.002"), _precision_step(1, "error", "0.998"), _precision_step(2, "warning", "0.003")]


def test_the_report_keeps_the_worst_severity_and_check_fails():
    builder = ReportBuilder(Target(script="train.py"))
    for step in RUN:
        builder.add(step)
    (finding,) = builder.tally.active()
    assert (finding.severity, finding.first_step, finding.last_step, finding.count) == ("error", 0, 2, 3)
    assert "0.998" in finding.message
    assert check_status(ScriptExited("finished", 0, None, None), builder.tally, "error") == 1
    (reported,) = builder.report(ScriptExited("finished", 0, None, None)).findings
    assert (reported.severity, reported.count) == ("error", 3) and "0.998" in reported.message


def test_the_findings_list_keeps_the_worst_severity():
    tally = FindingTally()
    tally.add(RUN)
    ((site, (entry,)),) = tally.by_site()
    assert (site, entry.severity, entry.count) == ("train.py:42", "error", 3)
    assert "0.998" in entry.message
