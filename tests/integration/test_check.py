"""``cossim-tui check`` run as a user runs it: a subprocess, its exit status, output and report.

Every run goes through ``python -m cossim_tui check`` from the repository root, with the
script given by a relative path as a user would type it. Each module-scoped fixture runs
one check that several tests then read.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from cossim_tui.diagnostics.codes import CATALOG
from cossim_tui.protocol import ModuleCall
from cossim_tui.report import CosSpread, Report, ReportArg, ReportCall, ReportFinding
from integration.live import REPO, run_check

# A module-scoped run serves several tests: they run on one worker (pyproject's loadgroup), so
# that it runs once; the other tests go wherever a worker is free.
MIX_RUN = pytest.mark.xdist_group("check-mix")
STALE_DEMO = pytest.mark.xdist_group("check-stale-demo")
# The check of same_object.py is test_record_replay's too (integration/conftest.py).
RECORDED_CHECK = pytest.mark.xdist_group("recorded-check")

F = "tests/fixtures/"
STATUSES = {"finished", "stopped", "error", "killed"}
SEVERITIES = {"error", "warning", "info"}


def _no_constants(token: str):
    raise AssertionError(f"the report is not strict JSON: it contains {token}")


def load_report(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    report = json.loads(text, parse_constant=_no_constants)
    assert_follows_schema(text)
    return report


def line_of(script: str, text: str) -> int:
    """The (1-based) line of ``script`` that contains ``text``, exactly once."""
    lines = (REPO / script).read_text(encoding="utf-8").splitlines()
    found = [number for number, line in enumerate(lines, 1) if text in line]
    assert len(found) == 1, (text, found)
    return found[0]


def contract_severity(finding: ReportFinding) -> str:
    """CONTRACT's severity of ``finding``: its code's, except that ``precision-loss`` is an error
    where the result is off by 0.1 or more (the message says by how much)."""
    if finding.code == "precision-loss":
        off = float(finding.message.split("by up to ", 1)[1].split(" ", 1)[0])
        return "error" if off >= 0.1 else "warning"
    return CATALOG[finding.code].severity


# CONTRACT's ``cossim-tui/report/1``: the fields other tools read (the report may add more).
CONTRACT_FIELDS = {
    Report: {"schema", "script", "argv", "status", "exit_code", "exception", "steps", "findings", "calls", "world_size"},
    ReportFinding: {"code", "severity", "site", "first_step", "last_step", "count", "message", "fix", "ranks"},
    ReportCall: {"step", "function", "site", "dim", "args", "cos", "context", "codes", "rank"},
    ReportArg: {"expr", "shape", "dtype", "device", "requires_grad", "grad_fn", "norm_mean", "made_by"},
    ModuleCall: {"module", "call", "step"},
    CosSpread: {"min", "mean", "max"},
}


def test_the_report_types_carry_every_field_of_the_contract() -> None:
    for record, fields in CONTRACT_FIELDS.items():
        assert fields <= {f.encode_name for f in msgspec.structs.fields(record)}, record.__name__


def assert_follows_schema(text: str) -> None:
    """The report decodes strictly into its own types (whose fields the contract names: see
    above), and what the types cannot say holds too."""
    report = msgspec.json.decode(text, type=Report, strict=True)
    assert report.schema == "cossim-tui/report/1"
    assert report.status in STATUSES
    assert report.steps >= 0
    for finding in report.findings:
        assert finding.code in CATALOG
        assert finding.severity == contract_severity(finding), finding
        assert finding.fix == CATALOG[finding.code].fix
        assert finding.site.rsplit(":", 1)[1].isdigit()
        assert 0 <= finding.first_step <= finding.last_step < report.steps
        assert finding.count >= 1
        # count is the number of steps it was found at, not of arguments or repeats within a step
        # (in a job, each rank numbers its own steps: a step number counts once per rank).
        assert finding.count <= (finding.last_step - finding.first_step + 1) * max(1, len(finding.ranks)), finding
        assert finding.ranks == sorted(set(finding.ranks))
        assert bool(finding.ranks) == (report.world_size is not None), finding
        assert finding.message
    assert len({(f.code, f.site) for f in report.findings}) == len(report.findings)
    for call in report.calls:
        assert len(call.args) == 2
        assert all(arg.expr for arg in call.args)
        # CONTRACT keys, plus the optimizer step count this report adds.
        assert set(call.context) <= {"epoch", "batch", "loss", "lr", "optimizer_steps"}
        assert all(code in CATALOG for code in call.codes)
        assert len(call.codes) == len(set(call.codes)), call.codes
        assert (call.rank is not None) == (report.world_size is not None)
    if report.steps <= 1000 and report.world_size is None:  # calls may be capped only beyond 500 + 500
        assert [c.step for c in report.calls] == list(range(report.steps))
    elif report.steps <= 1000:  # in a job, each rank's steps are numbered from 0
        ranks = {c.rank for c in report.calls}
        assert sorted(c.step for c in report.calls) == sorted(s for r in ranks for s in range(sum(c.rank == r for c in report.calls)))


def _codes_at(report: dict, step: int) -> list[str]:
    return report["calls"][step]["codes"]


def _finding(report: dict, code: str) -> dict:
    found = [f for f in report["findings"] if f["code"] == code]
    assert len(found) == 1, (code, report["findings"])
    return found[0]


# --------------------------------------------------------------------------------------
# Exit statuses
# --------------------------------------------------------------------------------------


def test_clean_script_exits_0(tmp_path):
    done = run_check("--json", str(tmp_path / "r.json"), F + "cosine_loop.py", "--count", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "before call 0\n" in done.stdout and "loop done\n" in done.stdout  # the script's output passes through
    report = load_report(tmp_path / "r.json")
    assert (report["status"], report["exit_code"], report["steps"]) == ("finished", 0, 3)
    assert report["argv"] == [F + "cosine_loop.py", "--count", "3"]
    assert not [f for f in report["findings"] if f["severity"] == "error"]


def test_a_reader_that_stops_early_loses_nothing_but_the_output(tmp_path):
    """``cossim-tui check train.py | head``: the pipe closes while the script still prints; the
    script runs on, and the report and the exit status are as if it had been read to the end."""
    command = [sys.executable, "-m", "cossim_tui", "check", "--json", str(tmp_path / "r.json"), F + "cosine_loop.py", "--count", "40"]
    with subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as check:
        assert check.stdout is not None and check.stderr is not None
        assert check.stdout.readline() == b"before call 0\n"
        check.stdout.close()
        stderr = check.stderr.read().decode()
        assert check.wait(timeout=120) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    report = load_report(tmp_path / "r.json")
    assert (report["status"], report["steps"]) == ("finished", 40)


@pytest.fixture(scope="module")
def same_object(same_object_checked):
    done, report = same_object_checked
    return done, load_report(report)


@RECORDED_CHECK
def test_same_object_exits_1(same_object):
    done, report = same_object
    assert done.returncode == 1, done.stdout + done.stderr
    assert report["steps"] == 2
    finding = _finding(report, "same-object")
    site = f"{F}same_object.py:{line_of(F + 'same_object.py', 'F.cosine_similarity(embedding, embedding)')}"
    assert (finding["severity"], finding["site"], finding["first_step"], finding["last_step"], finding["count"]) == (
        "error", site, 1, 1, 1,
    )
    assert "embedding" in finding["message"]
    assert _codes_at(report, 0) == [] and "same-object" in _codes_at(report, 1)
    assert "same-object" in done.stdout and "exit status 1" in done.stdout


def test_ignore_mutes_a_code(tmp_path):
    done = run_check("--ignore", "same-object", "--json", str(tmp_path / "r.json"), F + "same_object.py")
    assert done.returncode == 0, done.stdout + done.stderr
    report = load_report(tmp_path / "r.json")
    assert "same-object" not in [f["code"] for f in report["findings"]]
    assert "same-object" not in _codes_at(report, 1)
    assert report["steps"] == 2


def test_options_after_the_script_belong_to_the_script():
    """``--ignore`` after SCRIPT is the script's argument, so nothing is muted."""
    done = run_check(F + "same_object.py", "--ignore", "same-object")
    assert done.returncode == 1, done.stdout + done.stderr


def test_options_after_dash_m_module_belong_to_the_module(tmp_path):
    """``cossim-tui check -m mymod --epochs 2``: as under ``python -m mymod --epochs 2``."""
    (tmp_path / "mymod.py").write_text("import sys\nprint('argv', sys.argv[1:])\n")
    done = run_check("-m", "mymod", "--epochs", "2", "--json", "r.json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "argv ['--epochs', '2', '--json', 'r.json']\n" in done.stdout
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("launch", ["forked", "spawned"])
def test_the_script_reads_checks_stdin(tmp_path, launch):
    """``printf 'bob\\n' | cossim-tui check ask.py`` prints "hello bob", as python does; the
    script's child (a fork of the command, or a new interpreter) reads check's stdin to its end."""
    (tmp_path / "ask.py").write_text("import sys\nprint('hello', input())\nprint('rest', repr(sys.stdin.read()))\n")
    if launch == "forked":
        command = [sys.executable, "-m", "cossim_tui", "check", "ask.py"]
    else:  # called as a function, not as the command: the child is a new interpreter
        command = [sys.executable, "-c", "import sys; from cossim_tui import cli; sys.exit(cli.main(['check', 'ask.py']))"]
    done = subprocess.run(command, cwd=tmp_path, input="bob\nand more\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("hello bob\nrest 'and more\\n'\n"), done.stdout


def test_missing_script_exits_2_with_one_line(tmp_path):
    done = run_check("no_such_script.py", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "no_such_script.py" in done.stderr


def test_directory_exits_2(tmp_path):
    done = run_check(str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and str(tmp_path) in done.stderr


def test_missing_module_exits_2(tmp_path):
    done = run_check("-m", "no_such_module_for_cossim_tests", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no_such_module_for_cossim_tests" in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr


def test_raising_script_exits_3(tmp_path):
    done = run_check("--json", str(tmp_path / "r.json"), F + "raise_boom.py")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "ValueError: boom" in done.stdout
    report = load_report(tmp_path / "r.json")
    assert (report["status"], report["exception"], report["findings"], report["steps"]) == (
        "error", "ValueError: boom", [], 0,
    )


def test_nonzero_exit_exits_3(tmp_path):
    done = run_check("--json", str(tmp_path / "r.json"), F + "exit_with.py", "4")
    assert done.returncode == 3, done.stdout + done.stderr
    report = load_report(tmp_path / "r.json")
    assert (report["status"], report["exit_code"], report["exception"]) == ("finished", 4, None)
    assert report["argv"] == [F + "exit_with.py", "4"]


def test_killed_script_exits_3(tmp_path):
    done = run_check("--json", str(tmp_path / "r.json"), F + "kill_self.py")
    assert done.returncode == 3, done.stdout + done.stderr
    report = load_report(tmp_path / "r.json")
    assert (report["status"], report["signal"], report["exit_code"]) == ("killed", 9, None)
    assert "killed by signal 9 (SIGKILL)" in done.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_check_ended_by_a_signal_reports_that_signal(tmp_path, sig):
    """``timeout 60 cossim-tui check train.py``, or a closed terminal: check ends the script and
    reports the signal it was given, not Ctrl+C's."""
    command = [sys.executable, "-m", "cossim_tui", "check", "--json", str(tmp_path / "r.json"), F + "sleep_loop.py", "60"]
    with subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as check:
        try:
            assert check.stdout is not None and check.stdout.readline() == "heartbeat 0\n"
            check.send_signal(sig)
            out, err = check.communicate(timeout=60)
        finally:
            if check.poll() is None:  # check ends its script when it is told to end
                check.terminate()
                check.wait(timeout=30)
    assert check.returncode == 3, out + err
    name = signal.Signals(sig).name
    assert f"killed by signal {int(sig)} ({name})" in out, out
    report = load_report(tmp_path / "r.json")
    assert (report["status"], report["signal"]) == ("killed", int(sig))


def test_script_ended_by_sigterm_says_sigterm(tmp_path):
    (tmp_path / "term_self.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(60)\n")
    done = run_check("--json", str(tmp_path / "r.json"), "term_self.py", cwd=tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "killed by signal 15 (SIGTERM)" in done.stdout, done.stdout
    assert load_report(tmp_path / "r.json")["signal"] == 15


def test_max_steps_stops_and_exits_0(tmp_path):
    done = run_check("--max-steps", "2", "--json", str(tmp_path / "r.json"), F + "cosine_loop.py", "--count", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    report = load_report(tmp_path / "r.json")
    assert (report["status"], report["steps"], report["exit_code"]) == ("stopped", 2, 0)
    assert "after call 2" not in done.stdout and "loop done" not in done.stdout


def test_max_steps_0_stops_at_the_first_call(tmp_path):
    """``--max-steps 0``: the script is stopped at its first intercepted call, which is not
    reported; its line after that call never runs."""
    done = run_check("--max-steps", "0", "--json", str(tmp_path / "r.json"), F + "cosine_loop.py", "--count", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    report = load_report(tmp_path / "r.json")  # (which checks it against the schema)
    assert (report["status"], report["steps"], report["exit_code"], report["calls"]) == ("stopped", 0, 0, [])
    assert "before call 0\n" in done.stdout and "after call 0" not in done.stdout
    assert "0 cosine calls intercepted" in done.stdout


# --------------------------------------------------------------------------------------
# The report in detail
# --------------------------------------------------------------------------------------

MIX = F + "report_mix.py"


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    path = tmp_path_factory.mktemp("mix") / "report.json"
    done = run_check("--fail-on", "never", "--json", str(path), MIX)
    return done, load_report(path)


@MIX_RUN
def test_fail_on_never_exits_0_with_findings(mix):
    done, report = mix
    assert done.returncode == 0, done.stdout + done.stderr
    assert {f["code"] for f in report["findings"] if f["severity"] == "error"} >= {"same-object", "non-finite"}
    assert "same-object" in done.stdout and "exit status 0" in done.stdout  # reported, just not failing


@MIX_RUN
def test_report_follows_the_schema(mix):
    done, report = mix
    assert "  report: " in done.stdout
    assert (report["script"], report["argv"], report["status"], report["exit_code"], report["exception"]) == (
        MIX, [MIX], "finished", 0, None,
    )


@MIX_RUN
def test_report_counts_every_call_the_script_made(mix):
    done, report = mix
    made = int(done.stdout.split("made ", 1)[1].split(" cosine calls", 1)[0])
    assert report["steps"] == made == len(report["calls"]) == 4


@MIX_RUN
def test_report_calls_describe_the_tensors(mix):
    _, report = mix
    first, same, broken, loss = report["calls"]

    assert first["function"] == "cosine_similarity"
    assert first["site"] == f"{MIX}:{line_of(MIX, 'F.cosine_similarity(z_left, z_right)')}"
    assert first["dim"] == 1
    assert [a["expr"] for a in first["args"]] == ["z_left", "z_right"]
    for arg in first["args"]:
        assert (arg["shape"], arg["dtype"], arg["device"], arg["requires_grad"], arg["grad_fn"]) == (
            [4, 8], "float32", "cpu", True, "AddmmBackward0",
        )
        assert arg["norm_mean"] > 0
    assert -1.0 <= first["cos"]["min"] <= first["cos"]["mean"] <= first["cos"]["max"] <= 1.0
    assert first["context"] == {}  # no DataLoader, no backward() and no optimizer yet

    assert "same-object" in same["codes"] and same["cos"]["mean"] == pytest.approx(1.0)

    assert [a["expr"] for a in broken["args"]] == ["broken", "z_right.detach()"]
    assert (broken["args"][1]["requires_grad"], broken["args"][1]["grad_fn"]) == (False, None)
    assert broken["cos"] == {"min": None, "mean": None, "max": None}  # NaN similarities become null
    assert "non-finite" in broken["codes"]

    assert loss["function"] == "cosine_embedding_loss"
    assert loss["dim"] == -1
    assert [a["expr"] for a in loss["args"]] == ["z_left", "z_right"]


@MIX_RUN
def test_report_findings_point_at_their_steps(mix):
    _, report = mix
    same = _finding(report, "same-object")
    assert (same["site"], same["first_step"], same["last_step"], same["count"]) == (
        f"{MIX}:{line_of(MIX, 'F.cosine_similarity(z_left, z_left)')}", 1, 1, 1,
    )
    non_finite = _finding(report, "non-finite")
    assert (non_finite["first_step"], non_finite["count"]) == (2, 1)
    assert "broken" in non_finite["message"]
    errors_first = [SEVERITIES_ORDER[f["severity"]] for f in report["findings"]]
    assert errors_first == sorted(errors_first)


SEVERITIES_ORDER = {"error": 0, "warning": 1, "info": 2}


@MIX_RUN
def test_report_names_the_module_that_made_each_tensor(mix):
    _, report = mix
    left, right = report["calls"][0]["args"]
    assert left["made_by"] == {"module": "Linear", "call": 0, "step": 0}
    assert right["made_by"] == {"module": "Linear", "call": 1, "step": 0}


# --------------------------------------------------------------------------------------
# The demos
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stale_demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("stale") / "report.json"
    done = run_check("--json", str(path), "demo/siamese_stale_partner.py", "--images", "8", "--epochs", "1")
    return done, load_report(path)


@STALE_DEMO
def test_demo_stale_partner(stale_demo):
    done, report = stale_demo
    assert done.returncode == 1, done.stdout + done.stderr
    assert (report["status"], report["exit_code"], report["steps"]) == ("finished", 0, 8)
    same = _finding(report, "same-object")
    assert (same["first_step"], same["last_step"]) == (0, 0)
    stale = _finding(report, "stale-partner")
    assert (stale["severity"], stale["first_step"], stale["last_step"], stale["count"]) == ("error", 1, 7, 7)
    assert "step 0's vector1_tensor" in stale["message"]
    assert stale["site"] == same["site"] == "demo/siamese_stale_partner.py:" + str(
        line_of("demo/siamese_stale_partner.py", "F.cosine_similarity(vector1_tensor, vector2_tensor")
    )
    assert "same-object" in _codes_at(report, 0)
    assert all("stale-partner" in _codes_at(report, step) for step in range(1, 8))
    assert [a["expr"] for a in report["calls"][1]["args"]] == ["vector1_tensor", "vector2_tensor"]
    assert "exit status 1" in done.stdout


@STALE_DEMO
def test_demo_report_has_training_context(stale_demo):
    _, report = stale_demo
    context = report["calls"][1]["context"]
    assert (context.get("epoch"), context.get("batch"), context.get("lr")) == (0, 1, 0.01)
    assert isinstance(context.get("loss"), float)


def test_demo_fixed(tmp_path):
    done = run_check("--json", str(tmp_path / "r.json"), "demo/siamese_fixed.py", "--images", "8", "--epochs", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    report = load_report(tmp_path / "r.json")
    assert report["status"] == "finished" and report["steps"] > 0
    assert [f for f in report["findings"] if f["severity"] == "error"] == []
