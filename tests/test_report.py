"""The report other tools read: strict JSON whatever the run held (a NaN, an argument that was
not UTF-8), and written whole or not at all."""

from __future__ import annotations

import json
import math

import msgspec

from builders import stale_step
from cossim_tui.report import Report, ReportBuilder, write_report
from cossim_tui.session.events import ScriptExited, Target


def _no_constants(token: str) -> None:
    raise AssertionError(f"the report is not strict JSON: it contains {token}")


def _report(argv: list[str], loss: float) -> Report:
    builder = ReportBuilder(Target(script="train.py", args=argv))
    step = stale_step(0)
    step.context = {**step.context, "loss": loss}
    builder.add(step)
    return builder.report(ScriptExited("finished", 0, None, None))


def test_an_argument_that_was_not_utf8_is_written_escaped_and_nan_as_null(tmp_path) -> None:
    """``check --json r.json train.py $'\\xff'``: Python hands the script a lone surrogate."""
    path = tmp_path / "r.json"
    write_report(str(path), _report(["\udcff"], math.nan))
    text = path.read_text(encoding="ascii")
    report = json.loads(text, parse_constant=_no_constants)
    assert report["argv"] == ["train.py", "\udcff"]
    assert report["calls"][0]["context"]["loss"] is None
    assert msgspec.convert(report, Report, strict=True).steps == 1


def test_a_report_of_plain_text_is_strict_json_with_null_for_nan(tmp_path) -> None:
    path = tmp_path / "r.json"
    write_report(str(path), _report(["--epochs", "1"], math.inf))
    report = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constants)
    assert report["calls"][0]["context"]["loss"] is None and report["argv"] == ["train.py", "--epochs", "1"]
