"""A recorded run replays exactly as it was seen, and a trace file can never hurt the replay.

Written events come back equal, line for line, whatever they held (unicode output, NaN
similarities, a step whose call raised). A recording cut short by a crash still replays every
complete step and then says that it stops early. A hostile or simply wrong file gives a clear
``TraceError`` (not a trace at all) or ``ChannelProblem`` events naming the bad line, and never
an exception, a hang or a crash: ``iter_events`` always ends with exactly one ``ScriptExited``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import error_step, nan_step, stale_step
from cossim_tui import protocol
from cossim_tui.session.events import ChannelProblem, OutputReceived, ScriptExited, Target
from cossim_tui.protocol import COMMAND_KINDS
from cossim_tui.session.replay import (
    CUT_SHORT,
    MAX_LINE,
    MAX_PROBLEMS,
    UNREADABLE,
    TraceSource,
    decode_event,
    iter_events,
    printable,
    read_header,
    read_trace,
)
from cossim_tui.session.trace import SCHEMA, RecordingSource, TraceError, TraceWriter


def event_to_jsonable(event: object) -> dict:
    """One event as its trace line's JSON object: the codec's body of it."""
    if not isinstance(event, protocol.Message):
        raise TypeError(f"not a run event: {type(event).__name__}")
    return json.loads(protocol.encode_body(event))

TARGET = Target(script="train.py", args=["--epochs", "1"])
EVENT_TYPES = (protocol.Message, OutputReceived, ChannelProblem, ScriptExited)

# --------------------------------------------------------------------------------------
# Realistic events: the article's stale-partner loop
# --------------------------------------------------------------------------------------

def whole_run() -> list:
    """Every kind of event a run yields, in a realistic order."""
    return [
        protocol.Hello(pid=4242, python="3.11.7", target="train.py", argv=["train.py", "--epochs", "1"]),
        OutputReceived("loading CIFAR-10… done\n"),
        protocol.TorchHooked(version="2.4.1", intercepted=["torch.nn.functional.cosine_similarity", "torch.cosine_similarity"]),
        stale_step(0),
        OutputReceived("epoch 0 batch 0 loss 0.6931 ✓\n\tτ=0.07\r\n"),
        stale_step(1, mean=0.9995),
        ChannelProblem("unknown message kind 'telemetry'"),
        nan_step(2),
        error_step(3),
        OutputReceived("Traceback (most recent call last):\n  ...\nRuntimeError: boom\n"),
        protocol.ScriptEnded(status="error", exit_code=1, exception="RuntimeError: boom"),
        ScriptExited("error", 1, None, "RuntimeError: boom"),
    ]


def as_json(events: list) -> list[str]:
    """Events compared as their JSON: NaN is not equal to itself, but 'NaN' is."""
    return [json.dumps(event_to_jsonable(e)) for e in events]


def record(path: Path, events: list, target: Target = TARGET) -> Path:
    with TraceWriter(path, target) as writer:
        for event in events:
            assert writer.write(event) is None
    return path


def header_line(**changes) -> str:
    header = {"schema": SCHEMA, "kind": "header", "script": "train.py", "argv": ["train.py"], "versions": {"cossim-tui": "0.1.0"}}
    header.update(changes)
    return json.dumps(header)


def trace_of(tmp_path: Path, *lines: str | bytes, name: str = "t.jsonl") -> Path:
    """A file of ``lines``, each ended by a newline (bytes lines are written as they are)."""
    path = tmp_path / name
    with open(path, "wb") as handle:
        for line in lines:
            handle.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return path


def assert_clean_stream(events: list) -> None:
    """What the app may be handed: only run events, and exactly one ScriptExited, last."""
    assert events, "no events at all"
    assert all(isinstance(e, EVENT_TYPES) for e in events), [type(e).__name__ for e in events]
    assert not any(isinstance(e, (protocol.Resume, protocol.Pause, protocol.Mute)) for e in events)  # commands never replay
    assert isinstance(events[-1], ScriptExited)
    assert sum(isinstance(e, ScriptExited) for e in events) == 1


# --------------------------------------------------------------------------------------
# Writing and reading back
# --------------------------------------------------------------------------------------


def test_every_event_kind_round_trips(tmp_path):
    events = whole_run()
    trace = read_trace(record(tmp_path / "run.jsonl", events))

    assert as_json(trace.events) == as_json(events)
    # Without NaN inside, the dataclasses themselves compare equal: nothing was lost or coerced.
    plain = [e for e in events if not (isinstance(e, protocol.StepCaptured) and e.step == 2)]
    assert [e for e in trace.events if not (isinstance(e, protocol.StepCaptured) and e.step == 2)] == plain
    nan = trace.steps[2]
    assert math.isnan(nan.cos.mean) and nan.cos.max == math.inf and nan.args[0].nan == 3
    assert trace.steps[3].error.startswith("RuntimeError: The size of tensor a (32)")
    assert trace.steps[1].findings[1].muted
    assert trace.exited == ScriptExited("error", 1, None, "RuntimeError: boom")


def test_the_file_is_json_lines_with_a_header_and_kinds(tmp_path):
    path = record(tmp_path / "run.jsonl", whole_run())
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["schema"] == "cossim-tui/trace/1" and header["kind"] == "header"
    assert header["script"] == "train.py" and header["argv"] == ["train.py", "--epochs", "1"]
    assert {"cossim-tui", "python"} <= set(header["versions"])
    kinds = [json.loads(line)["kind"] for line in lines[1:]]
    assert kinds == [
        "hello", "output", "torch-hooked", "step", "output", "step", "channel-problem", "step", "step", "output", "script-ended", "exited"
    ]
    exited = json.loads(lines[-1])
    assert exited == {"kind": "exited", "status": "error", "exit_code": 1, "signal": None, "exception": "RuntimeError: boom"}
    assert read_header(path).script == "train.py"


def test_a_module_target_is_named_as_the_user_typed_it(tmp_path):
    path = record(tmp_path / "m.jsonl", [], Target(module="pkg.train", args=["--lr", "0.1"]))
    header = read_header(path)
    assert (header.script, header.argv) == ("-m pkg.train", ["pkg.train", "--lr", "0.1"])


def test_versions_name_textual_only_where_a_screen_shows_the_run_without_importing_it(tmp_path):
    code = (
        "import json, sys; from cossim_tui.session.trace import TraceWriter; from cossim_tui.session.events import Target\n"
        "TraceWriter(sys.argv[1], Target(script='t.py')).close()\n"
        "TraceWriter(sys.argv[2], Target(script='t.py'), screen='textual').close()\n"
        "print(json.dumps(sorted(m for m in ('torch', 'textual', 'rich') if m in sys.modules)))"
    )
    plain, with_screen = tmp_path / "plain.jsonl", tmp_path / "screen.jsonl"
    out = subprocess.run([sys.executable, "-c", code, str(plain), str(with_screen)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    assert "textual" not in read_header(plain).versions
    import textual

    assert read_header(with_screen).versions["textual"] == textual.__version__


def test_trace_module_imports_neither_torch_nor_textual():
    code = "import json, sys, cossim_tui.session.trace, cossim_tui.session.replay; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert not loaded & {"torch", "numpy", "textual", "rich"}


def test_each_event_is_on_disk_as_soon_as_it_is_written(tmp_path):
    """No buffering in between: a crash right after ``write`` loses nothing already seen."""
    path = tmp_path / "live.jsonl"
    writer = TraceWriter(path, TARGET)
    try:
        for count, event in enumerate(whole_run()[:6], start=2):
            writer.write(event)
            assert len(path.read_bytes().splitlines()) == count
        # Read while the writer is still open, as after a crash: every step so far, then the cut.
        events = list(iter_events(path))
        assert [s.step for s in events if isinstance(s, protocol.StepCaptured)] == [0, 1]
        assert events[-1] == ScriptExited("error", None, None, CUT_SHORT)
    finally:
        writer.close()
    assert writer.write(OutputReceived("late")) is None  # closed: ignored, not an error


def test_writer_refuses_a_path_it_cannot_open(tmp_path):
    with pytest.raises(OSError):
        TraceWriter(tmp_path / "no" / "such" / "dir.jsonl", TARGET)


def test_every_message_from_the_agent_replays_and_no_command_does(tmp_path):
    """A message kind the agent gains later is recorded and replayed without a change to the trace."""
    from_agent = [cls for kind, cls in protocol.MESSAGE_TYPES.items() if kind not in COMMAND_KINDS]
    assert {protocol.Hello, protocol.TorchHooked, protocol.StepCaptured, protocol.ScriptEnded} <= set(from_agent)
    commands = [protocol.Resume("run"), protocol.Pause(), protocol.Mute("same-object", "*")]
    assert {c.kind for c in commands} <= COMMAND_KINDS
    for command in commands:
        with pytest.raises(TraceError, match="a command to the script"):
            decode_event(json.dumps(event_to_jsonable(command)))  # type: ignore[arg-type]


def test_writer_rejects_something_that_is_not_a_run_event():
    with pytest.raises(TypeError):
        event_to_jsonable("hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        event_to_jsonable(Target(script="train.py"))  # type: ignore[arg-type]


def test_a_later_write_failure_is_reported_once_and_stops_recording(tmp_path):
    writer = TraceWriter(tmp_path / "full.jsonl", TARGET)
    writer.write(protocol.Hello(pid=1, python="3.11", target="train.py", argv=["train.py"]))

    class FullDisk:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def flush(self):
            pass

        def close(self):
            pass

    writer._file = FullDisk()  # the disk fills up mid-run
    failure = writer.write(stale_step(0))
    assert failure is not None and "No space left on device" in failure and str(writer.path) in failure
    assert writer.write(stale_step(1)) is None  # said once
    assert "No space left" in (writer.error or "")


# --------------------------------------------------------------------------------------
# Recording a live source on its way to the app
# --------------------------------------------------------------------------------------


class ListSource:
    """An ``EventSource`` over a fixed list, recording what the app would send."""

    target_name = "train.py"

    def __init__(self, events: list) -> None:
        self._events = events
        self.sent: list = []
        self.terminated = False

    def events(self):
        yield from self._events

    def send(self, message) -> None:
        self.sent.append(message)

    def terminate(self) -> None:
        self.terminated = True


def test_recording_source_passes_every_event_on_unchanged_and_writes_it(tmp_path):
    events = whole_run()
    live = ListSource(events)
    writer = TraceWriter(tmp_path / "tee.jsonl", TARGET)
    source = RecordingSource(live, writer)

    seen = list(source.events())
    assert len(seen) == len(events)
    assert all(a is b for a, b in zip(seen, events))  # the very objects: the app sees the run itself
    assert writer.write(OutputReceived("after the end")) is None  # closed once the run ended
    assert as_json(read_trace(writer.path).events) == as_json(events)

    assert source.target_name == "train.py"
    source.send(protocol.Resume("continue"))
    source.terminate()
    assert live.sent == [protocol.Resume("continue")] and live.terminated


def test_recording_source_tells_the_app_when_recording_fails_and_the_run_goes_on(tmp_path):
    events = whole_run()
    writer = TraceWriter(tmp_path / "tee.jsonl", TARGET)

    class Breaks(ListSource):
        def events(self):
            for index, event in enumerate(self._events):
                if index == 4:
                    writer._file.close()  # writing now fails: ValueError on a closed file
                yield event

    seen = list(RecordingSource(Breaks(events), writer).events())
    problems = [e for e in seen if isinstance(e, ChannelProblem) and "recording" in e.reason]
    assert len(problems) == 1 and "stopped" in problems[0].reason
    passed_on = [e for e in seen if not any(e is p for p in problems)]
    assert len(passed_on) == len(events) and all(a is b for a, b in zip(passed_on, events))
    assert problems[0] is seen[4]  # said right away, before the event whose write failed
    assert isinstance(seen[-1], ScriptExited)
    # What was written before the failure replays, and says it was cut short.
    replayed = list(iter_events(writer.path))
    assert [s.step for s in replayed if isinstance(s, protocol.StepCaptured)] == [0]
    assert replayed[-1].exception == CUT_SHORT


# --------------------------------------------------------------------------------------
# Replay as the app's event source
# --------------------------------------------------------------------------------------


def test_replay_source_has_every_step_and_stays_on_the_last(tmp_path):
    events = whole_run()
    for event in events:
        if isinstance(event, protocol.StepCaptured):
            event.paused = True  # recorded interactively: every step was a pause
    source = TraceSource(record(tmp_path / "run.jsonl", events))

    replayed = list(source.events())
    steps = [e for e in replayed if isinstance(e, protocol.StepCaptured)]
    assert [s.step for s in steps] == [0, 1, 2, 3]
    assert [s.paused for s in steps] == [False, False, False, True]
    # Only the flag changes: order and content are the recording's.
    for event in events:
        if isinstance(event, protocol.StepCaptured):
            event.paused = False
    events[8].paused = True
    assert as_json(replayed) == as_json(events)
    assert source.target_name == "train.py (replay of run.jsonl)"


def test_replay_source_ignores_commands_and_stops_when_terminated(tmp_path):
    events = [stale_step(i, paused=False) for i in range(50)] + [ScriptExited("finished", 0, None, None)]
    source = TraceSource(record(tmp_path / "run.jsonl", events))
    source.send(protocol.Resume("step"))  # nothing runs: no error, no effect
    stream = source.events()
    next(stream)
    source.terminate()
    assert list(stream) == []


def test_replay_of_a_trace_without_steps(tmp_path):
    events = [
        protocol.Hello(pid=7, python="3.11.7", target="kill_self.py", argv=["kill_self.py"]),
        OutputReceived("killing myself\n"),
        ScriptExited("killed", None, 9, None),
    ]
    assert list(TraceSource(record(tmp_path / "k.jsonl", events)).events()) == events


def test_escape_sequences_in_a_trace_never_reach_the_terminal(tmp_path):
    """A trace can come from anyone: ESC[2J would clear the screen, OSC 52 write the clipboard."""
    attack = "\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x1b\\\x9b31m\x07\x00"
    step = stale_step(0)
    step.args[0].expr = "emb" + attack
    step.site.lines[2] = attack
    step.findings[0].message = attack
    step.context = {attack: 1.0}
    events = [OutputReceived("epoch 1\t ok\r\n" + attack), step, ScriptExited("error", 1, None, attack)]
    path = record(tmp_path / "attack.jsonl", events[:2], Target(script="train" + attack + ".py"))
    with open(path, "a", encoding="utf-8") as handle:
        bad = event_to_jsonable(stale_step(1))
        bad["context"] = {attack: "x"}
        handle.write(json.dumps(bad) + "\n")  # refused, naming the mapping
        handle.write(json.dumps(event_to_jsonable(events[2])) + "\n")

    # The data API keeps the recording exact ...
    assert as_json(list(iter_events(path))[:2]) == as_json(events[:2])
    # ... the app's source shows every control character as a visible picture.
    replayed = list(TraceSource(path).events())
    everything = json.dumps([event_to_jsonable(e) for e in replayed], ensure_ascii=False)
    everything += TraceSource(path).target_name
    assert not any(ch in everything for ch in "\x1b\x9b\x07\x00")
    assert "␛[2J" in replayed[0].text and replayed[0].text.startswith("epoch 1\t ok\r\n")
    assert replayed[1].args[0].expr == "emb" + printable(attack)
    assert replayed[-1].exception == printable(attack)
    # (msgspec's path names the mapping, not the key: the hostile key never reaches the reason.)
    assert isinstance(replayed[2], ChannelProblem) and replayed[2].reason.startswith("trace line 4: step: ")
    assert "$.context" in replayed[2].reason


# --------------------------------------------------------------------------------------
# Cut short by a crash
# --------------------------------------------------------------------------------------


def test_a_trace_cut_in_the_middle_of_a_line_replays_every_complete_step(tmp_path):
    full = record(tmp_path / "full.jsonl", whole_run()).read_bytes()
    lines = full.splitlines(keepends=True)
    cut_line = 9  # 1-based line number of step 2 (header, hello, output, torch-hooked, step 0, output, step 1, problem, step 2)
    assert b'"step":2' in lines[cut_line - 1]
    path = tmp_path / "cut.jsonl"
    path.write_bytes(b"".join(lines[: cut_line - 1]) + lines[cut_line - 1][:200])

    events = list(iter_events(path))
    assert_clean_stream(events)
    assert [s.step for s in events if isinstance(s, protocol.StepCaptured)] == [0, 1]
    incomplete = events[-2]
    assert isinstance(incomplete, ChannelProblem)
    assert f"trace line {cut_line} is incomplete" in incomplete.reason
    assert events[-1] == ScriptExited("error", None, None, CUT_SHORT)
    assert "recording was cut short" in events[-1].description


def test_a_trace_without_its_last_line_says_how_the_script_itself_ended(tmp_path):
    path = record(tmp_path / "run.jsonl", whole_run()[:-1])  # script-ended, but no exited line
    exited = list(iter_events(path))[-1]
    assert exited.status == "error"  # not "killed": the trace does not say so
    assert exited.exception.startswith(CUT_SHORT)
    assert "error, RuntimeError: boom" in exited.exception


def test_a_trace_killed_by_a_signal_says_killed(tmp_path):
    events = [stale_step(0), ScriptExited("killed", None, 9, None)]
    assert list(iter_events(record(tmp_path / "k.jsonl", events)))[-1] == ScriptExited("killed", None, 9, None)


def test_cut_anywhere_the_replay_is_a_prefix_of_the_run(tmp_path):
    """Whatever byte a crash stopped at: the complete lines before it, then a clean end."""
    events = whole_run()
    full = record(tmp_path / "full.jsonl", events).read_bytes()
    expected = as_json(events)
    header_end = full.index(b"\n") + 1
    cuts = sorted(set(range(header_end, len(full), 97)) | {i + d for i, b in enumerate(full) if b == 10 for d in (-1, 0, 1, 2)})
    path = tmp_path / "cut.jsonl"
    for cut in cuts:
        if cut < header_end or cut > len(full):
            continue
        path.write_bytes(full[:cut])
        replayed = list(iter_events(path))
        assert_clean_stream(replayed)
        recorded = [e for e in replayed[:-1] if not (isinstance(e, ChannelProblem) and "incomplete" in e.reason)]
        assert as_json(recorded) == expected[: len(recorded)], cut
        if cut == len(full):
            assert as_json(replayed) == expected


# --------------------------------------------------------------------------------------
# Files that are not traces
# --------------------------------------------------------------------------------------


def _report_line() -> str:
    return json.dumps({"schema": "cossim-tui/report/1", "script": "train.py", "status": "finished", "steps": 1})


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        pytest.param([], "empty", id="empty"),
        pytest.param(["", "   "], "empty", id="only-blank-lines"),
        pytest.param(["print('hello')"], "not a JSON object", id="python-source"),
        pytest.param([b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"], "not a JSON object", id="binary"),
        pytest.param(["[1, 2, 3]"], "not a JSON object", id="json-array"),
        pytest.param([_report_line()], "report, not a trace", id="check-report"),
        pytest.param([header_line(schema="cossim-tui/trace/2")], "cossim-tui/trace/2", id="newer-schema"),
        pytest.param([header_line(schema="other/1")], "not a cossim-tui trace", id="wrong-schema"),
        pytest.param([header_line(schema=None)], "not a cossim-tui trace", id="no-schema"),
        pytest.param([header_line(kind="step")], "not a header", id="not-kind-header"),
        pytest.param([header_line(argv="train.py")], "malformed header", id="argv-not-a-list"),
        pytest.param([header_line(versions={"torch": 2.4})], "malformed header", id="version-not-a-string"),
        pytest.param(["[" * 100_000], "not a JSON object", id="deeply-nested"),
    ],
)
def test_a_file_that_is_not_a_trace_is_refused_with_a_reason(tmp_path, lines, says):
    path = trace_of(tmp_path, *lines)
    with pytest.raises(TraceError, match=says) as caught:
        TraceSource(path)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200
    # The stream itself never raises: it says why, and ends.
    events = list(iter_events(path))
    assert_clean_stream(events)
    assert [type(e) for e in events] == [ChannelProblem, ScriptExited]
    assert events[-1].exception == UNREADABLE


def test_missing_files_directories_and_fifos_are_refused_at_once(tmp_path):
    with pytest.raises(TraceError, match="no such file"):
        TraceSource(tmp_path / "missing.jsonl")
    with pytest.raises(TraceError, match="directory"):
        TraceSource(tmp_path)
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    # Opening a FIFO for reading blocks until a writer comes: give it one, so the test cannot hang.
    writer = threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True)
    writer.start()
    with pytest.raises(TraceError, match="not a regular file"):
        TraceSource(fifo)
    writer.join(5)
    assert_clean_stream(list(iter_events(tmp_path / "missing.jsonl")))


def test_a_first_line_longer_than_the_cap_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as handle:
        handle.write(b'{"schema": "' + b"x" * (MAX_LINE + 10))
    with pytest.raises(TraceError, match="longer than 16 MiB"):
        read_header(path)


# --------------------------------------------------------------------------------------
# Hostile lines inside a trace
# --------------------------------------------------------------------------------------


def _step_json(**changes) -> str:
    body = event_to_jsonable(stale_step(5))
    body.update(changes)
    return json.dumps(body)


def _nested_step_json(path: tuple, value) -> str:
    body = event_to_jsonable(stale_step(5))
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(body)


HOSTILE_LINES = {
    "not-json": "step 5: cos=1.0",
    "binary": b"\x00\xff\xfe\x80\x81garbage\x00",
    "not-utf8-inside-json": b'{"kind": "output", "text": "\xff\xfe"}',
    "array": "[1, 2, 3]",
    "string": '"step"',
    "number": "1e999",
    "no-kind": json.dumps({"text": "hi"}),
    "unknown-kind": json.dumps({"kind": "telemetry", "gpu": 0.9}),
    "kind-not-a-string": json.dumps({"kind": ["step"]}),
    "very-long-kind": json.dumps({"kind": "x" * 100_000}),
    "a-command": json.dumps({"kind": "resume", "mode": "run"}),
    "second-header": header_line(),
    "step-missing-fields": json.dumps({"kind": "step", "step": 1}),
    "step-is-a-string": _step_json(step="5"),
    "step-is-a-bool": _step_json(step=True),
    "step-is-a-float": _step_json(step=5.0),
    "huge-int-as-float-field": _nested_step_json(("cos", "mean"), 10**400),
    "huge-int-beyond-the-digit-limit": '{"kind": "step", "step": ' + "9" * 5000 + "}",
    "nan-as-int": _nested_step_json(("args", 0, "nan"), math.nan),
    "args-not-a-list": _step_json(args={"0": "vector1"}),
    "severity-unknown": _nested_step_json(("findings", 0, "severity"), "fatal"),
    "severity-huge": _nested_step_json(("findings", 0, "severity"), "y" * 1_000_000),
    "context-nested": _step_json(context={"epoch": {"a": [[[[[[1]]]]]]}}),
    "deep-nesting": '{"kind": "step", "site": ' + "[" * 50_000 + "]" * 50_000 + "}",
    "deep-objects": '{"kind": "output", "text": ' + '{"a": ' * 20_000 + "1" + "}" * 20_000 + "}",
    "exited-unknown-status": json.dumps({"kind": "exited", "status": "exploded", "exit_code": 0, "signal": None, "exception": None}),
    "exited-signal-as-string": json.dumps({"kind": "exited", "status": "killed", "exit_code": None, "signal": "SIGKILL", "exception": None}),
    "output-not-text": json.dumps({"kind": "output", "text": 42}),
    "problem-without-reason": json.dumps({"kind": "channel-problem"}),
    "hello-argv-of-numbers": json.dumps({"kind": "hello", "pid": 1, "python": "3", "target": "t", "argv": [1, 2]}),
}


@pytest.mark.parametrize("line", list(HOSTILE_LINES.values()), ids=list(HOSTILE_LINES))
def test_a_hostile_line_becomes_a_channel_problem_with_its_line_number(tmp_path, line):
    good = json.dumps(event_to_jsonable(stale_step(0, paused=False)))
    after = json.dumps(event_to_jsonable(stale_step(1, paused=False)))
    path = trace_of(tmp_path, header_line(), good, line, after, json.dumps(event_to_jsonable(ScriptExited("finished", 0, None, None))))

    started = time.monotonic()
    events = list(iter_events(path))
    assert time.monotonic() - started < 10

    assert_clean_stream(events)
    problems = [e for e in events if isinstance(e, ChannelProblem)]
    assert len(problems) == 1
    assert problems[0].reason.startswith("trace line 3: ")
    assert len(problems[0].reason) <= 300
    # The lines around it are untouched, and the run's end is the recorded one.
    assert [e.step for e in events if isinstance(e, protocol.StepCaptured)] == [0, 1]
    assert events[-1] == ScriptExited("finished", 0, None, None)
    # The same through the app's source.
    replayed = list(TraceSource(path).events())
    assert_clean_stream(replayed)
    assert sum(isinstance(e, ChannelProblem) for e in replayed) == 1


def test_odd_but_well_typed_values_are_kept_as_they_are(tmp_path):
    """The decoder checks types, not plausibility: huge step numbers and infinities pass through."""
    body = event_to_jsonable(stale_step(0))
    body["step"] = 10**300
    body["cos"]["mean"] = 1e999  # Python's json reads this as inf
    event = decode_event(json.dumps(body))
    assert isinstance(event, protocol.StepCaptured)
    assert event.step == 10**300 and event.cos.mean == math.inf


def test_a_line_longer_than_the_cap_ends_the_replay_with_a_reason(tmp_path):
    path = trace_of(tmp_path, header_line(), json.dumps(event_to_jsonable(stale_step(0))))
    with open(path, "ab") as handle:
        handle.write(b'{"kind": "output", "text": "' + b"a" * (MAX_LINE + 1) + b'"}\n')
        handle.write(json.dumps(event_to_jsonable(stale_step(1))).encode() + b"\n")
    events = list(iter_events(path))
    assert_clean_stream(events)
    assert [e.step for e in events if isinstance(e, protocol.StepCaptured)] == [0]
    assert "trace line 3 is longer than 16 MiB" in events[-2].reason
    assert events[-1].exception == UNREADABLE


def test_a_flood_of_garbage_is_given_up_on_after_a_bounded_number_of_problems(tmp_path):
    path = trace_of(tmp_path, header_line(), *[f"garbage {i}" for i in range(5000)])
    events = list(iter_events(path))
    assert_clean_stream(events)
    assert len(events) == MAX_PROBLEMS + 2
    assert "the rest of the trace is not read" in events[-2].reason
    assert events[-1].exception == UNREADABLE


def test_lines_after_the_end_of_the_run_are_reported_and_ignored(tmp_path):
    end = json.dumps(event_to_jsonable(ScriptExited("finished", 0, None, None)))
    path = trace_of(tmp_path, header_line(), end, json.dumps(event_to_jsonable(stale_step(9))), "junk")
    events = list(iter_events(path))
    assert [type(e) for e in events] == [ChannelProblem, ScriptExited]
    assert events[0].reason == "trace line 3: lines after the end of the run are ignored"


def test_read_trace_keeps_a_bounded_number_of_events(tmp_path):
    path = record(tmp_path / "long.jsonl", [OutputReceived(f"{i}\n") for i in range(50)] + [ScriptExited("finished", 0, None, None)])
    trace = read_trace(path, max_events=10)
    assert len(trace.events) == 12
    assert "more than 10 events" in trace.events[-2].reason
    assert trace.exited.exception == UNREADABLE


# --------------------------------------------------------------------------------------
# Fuzzing: whatever the lines, only clean events
# --------------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_kinds = st.sampled_from(["hello", "torch-hooked", "step", "script-ended", "output", "channel-problem", "exited", "header", "resume"])


@st.composite
def _json_lines(draw) -> bytes:
    """Lines that look more and more like events: raw bytes, any JSON, objects with a real kind."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=200)).replace(b"\n", b" ")
    if choice == 1:
        return json.dumps(draw(_json_values)).encode()
    obj = draw(st.dictionaries(st.text(max_size=10), _json_values, max_size=6))
    obj["kind"] = draw(_kinds)
    return json.dumps(obj).encode()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(_json_lines(), max_size=12), cut=st.booleans())
def test_fuzzed_lines_give_only_clean_events(tmp_path, lines, cut):
    path = tmp_path / "fuzz.jsonl"
    data = header_line().encode() + b"\n" + b"".join(line + b"\n" for line in lines)
    path.write_bytes(data[:-1] if cut and lines else data)
    events = list(iter_events(path))
    assert_clean_stream(events)
    for event in events:
        if isinstance(event, ChannelProblem):
            assert event.reason.startswith("trace line ") and len(event.reason) <= 300
    replayed = list(TraceSource(path).events())
    assert_clean_stream(replayed)
    assert [type(e) for e in replayed] == [type(e) for e in events]


def _paths(value, prefix=()):
    """Every path to a leaf or container inside a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


_STEP = event_to_jsonable(stale_step(3))
_STEP_PATHS = [p for p in _paths(_STEP) if p and p != ("kind",)]


@settings(max_examples=300, deadline=None)
@given(where=st.sampled_from(_STEP_PATHS), value=_json_values)
def test_a_step_with_any_field_replaced_is_a_step_or_a_reason(where, value):
    body = json.loads(json.dumps(_STEP))
    target = body
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    try:
        event = decode_event(json.dumps(body))
    except TraceError as exc:
        assert str(exc) and len(str(exc)) <= 300
    else:
        assert isinstance(event, protocol.StepCaptured)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.binary(max_size=300) | _json_lines())
def test_any_first_line_is_a_trace_or_a_clear_refusal(tmp_path, first):
    path = tmp_path / "first.jsonl"
    path.write_bytes(first + b"\n")
    try:
        read_header(path)
    except TraceError as exc:
        assert str(exc) and "\n" not in str(exc)


# --------------------------------------------------------------------------------------
# Traces recorded by earlier versions (Python's json, before the msgspec codec)
# --------------------------------------------------------------------------------------

EARLIER = Path(__file__).resolve().parents[1] / "fixtures" / "traces"


@pytest.mark.parametrize(
    "name, steps, status",
    [("before-msgspec-stale-partner.jsonl", 12, "stopped"), ("before-msgspec-non-finite.jsonl", 3, "finished")],
)
def test_a_trace_recorded_before_the_msgspec_codec_replays_exactly(name: str, steps: int, status: str) -> None:
    path = EARLIER / name
    trace = read_trace(path)
    assert not [e for e in trace.events if isinstance(e, ChannelProblem)]
    assert len(trace.steps) == steps and trace.exited.status == status
    # Every event reads back to the very JSON it was recorded as (NaN written as NaN both sides).
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    assert len(lines) == len(trace.events)
    for line, event in zip(lines, trace.events):
        recorded, now = json.loads(line), event_to_jsonable(event)
        # Fields added since, at their defaults (a ScriptEnded's maps, a step's rank, a finding's ranks).
        _drop_added_defaults(recorded, now)
        assert json.dumps(recorded, sort_keys=True) == json.dumps(now, sort_keys=True)
    replayed = list(TraceSource(path).events())
    assert [type(e) for e in replayed] == [type(e) for e in trace.events]


def _drop_added_defaults(recorded: object, now: object) -> None:
    """Remove from ``now``, at every depth, the keys that ``recorded`` lacks, each asserted to hold
    its default (``[]`` or ``None``): what a field added since the recording reads as."""
    if isinstance(recorded, dict) and isinstance(now, dict):
        added = set(now) - set(recorded)
        assert all(now.pop(key) in ([], None) for key in added), added
        for key in recorded.keys() & now.keys():
            _drop_added_defaults(recorded[key], now[key])
    elif isinstance(recorded, list) and isinstance(now, list):
        for one, other in zip(recorded, now):
            _drop_added_defaults(one, other)


def test_a_nan_recorded_before_the_msgspec_codec_is_still_nan() -> None:
    steps = read_trace(EARLIER / "before-msgspec-non-finite.jsonl").steps
    assert all(step.args[0].nan > 0 for step in steps)
    assert all(step.cos is not None and math.isnan(step.cos.mean) for step in steps)
