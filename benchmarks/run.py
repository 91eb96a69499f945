"""cossim-tui's performance budgets (issue 7), each measured side by side in one run.

    python benchmarks/run.py                 every figure
    python benchmarks/run.py --only 3,4      some of them
    python benchmarks/run.py --quick         fewer repetitions (a smoke test, not numbers to quote)
    python benchmarks/run.py --only 1 --instructions 3
                                             figure 1, and three counts of its instructions

Every figure is a ratio or a time taken against its baseline in the same run, the two
alternating so that a machine that gets busier or quieter treats both alike. Each line
gives the median over the repetitions and, in brackets, the spread (min … max) and how
many there were. The budget follows, and ``ok`` or ``OVER``. cossim_tui's bytecode is compiled
first, as installing the package does (see ``compile_bytecode``).

1. ``check`` on the demo vs plain ``python``, wall time of the whole process; and, from the
   same runs (of a copy of the demo that notes the time), phase by phase: until the script's
   first line, its imports, its training loop, and its end until the process exits. With
   ``--instructions N``, also N counts of the instructions the script's process executes under
   each (valgrind), and ``check``'s own process beside it: counts of one tree differ by a tenth
   of a percent, where the clock's ratios differ by several percent from run to run. They leave
   out what the budget's wall time also holds: the kernel's work, waits, ``check``'s process.
2. Torch ops that are not intercepted: the MLP loop of ``fixtures/mlp_loop.py`` times its own
   forward/backward/step work, under ``check`` and under ``python``.
3. Per intercepted call: ``F.cosine_similarity`` through the installed interceptor (capture,
   evidence, judging and encoding the message) vs the original function, in this process, with
   ``check``'s settings (no pictures); and, for reference, with the TUI's while the script runs
   freely (pictures for one step in every ``PICTURE_INTERVAL``).
4. Step latency: ``n`` pressed in the real app (Pilot, real child) until the status says
   ``paused at step N+1``, until the first frame that shows step N+1 is handed to the
   terminal (the budget), and until the app is idle again.
5. Free run at 10,000 calls a second: ``p`` pressed while the script runs until it is acted on
   (``pausing…``) and until the pause is on screen; and the script's call rate under the TUI,
   under ``check`` and under plain ``python``.
6. Memory: resident memory of the ``check`` process and of the script's process, grown over
   100,000 calls (after the first 5,000).
7. Start-up: the command typed in a terminal (tmux) until the status line is on screen, and
   whether torch had loaded in the child by then.
10. Matrix products that are not similarity matrices: ``fixtures/product_loops.py``, an MLP, a
   CNN and a small transformer encoder whose layers are ``@``/``matmul``/``einsum`` (so every
   product passes the matrix interceptor, with a normalised tensor alive), under ``check`` and
   under ``python``, each timing its own work as figure 2 does; and, steadier on a busy machine,
   ``fixtures/product_overhead.py``: each product's added cost in one process, times the
   products one step makes, over the step's time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "benchmarks" / "fixtures"
DEMO = ["demo/siamese_stale_partner.py", "--images", "40", "--epochs", "2"]
PYTHON = sys.executable


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def _spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(statistics.median(values))} [{fmt(min(values))} … {fmt(max(values))}, n={len(values)}]"


def _ms(x: float) -> str:
    return f"{x * 1e3:.1f} ms"


def _us(x: float) -> str:
    return f"{x * 1e6:.0f} µs"


def _s(x: float) -> str:
    return f"{x:.2f} s"


def _x(x: float) -> str:
    return f"{x:.3f}×"


def _mb(x: float) -> str:
    return f"{x:.1f} MB"


def _g(x: float) -> str:
    return f"{x / 1e9:.3f} G"


LABEL_WIDTH = 44


def report(label: str, values: Sequence[float], fmt: Callable[[float], str], budget: float | None = None, budget_text: str = "") -> None:
    # A label too long for its column gets a line of its own, so that the figures stay aligned.
    head = f"  {label}\n{'':<{LABEL_WIDTH + 2}}" if len(label) > LABEL_WIDTH else f"  {label:<{LABEL_WIDTH}}"
    line = f"{head} {_spread(values, fmt)}"
    if budget is not None:
        verdict = "ok" if statistics.median(values) <= budget else "OVER"
        line += f"   budget ≤ {budget_text or fmt(budget)}  {verdict}"
    print(line, flush=True)


def note(text: str) -> None:
    print(f"  {text}", flush=True)


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


def _timed(command: list[str], timeout: float = 900) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """When ``command`` started and ended (``time.monotonic``: one clock for every process), and
    what it wrote."""
    start = time.monotonic()
    done = subprocess.run(command, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False)
    end = time.monotonic()
    if done.returncode not in (0, 1):  # 1: check found something, which the demo is meant to show
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return start, end, done


def _wall(command: list[str]) -> tuple[float, str]:
    start, end, done = _timed(command)
    return end - start, done.stdout


def _alternate(commands: dict[str, list[str]], reps: int, run: Callable[[list[str]], Any] = _wall) -> Iterator[tuple[str, Any]]:
    """Runs each command ``reps`` times with ``run`` (by default: its wall time and its output),
    swapping the order every repetition."""
    names = list(commands)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            yield name, run(commands[name])


def _check(*args: str) -> list[str]:
    return [PYTHON, "-m", "cossim_tui", "check", "--fail-on", "never", *args]


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


# --------------------------------------------------------------------------------------
# 1 and 2: whole processes
# --------------------------------------------------------------------------------------


_PHASES = ("before the script's first line", "the script's imports (torch, torchvision)", "the script after its imports (80 calls)", "after the script's end, until exit")
_CLOCK_LINE = "cossim-tui-benchmark-clock"


def _timed_demo() -> list[str]:
    """The demo's command line, run from a copy that notes (``time.monotonic``, one clock for
    every process) when its first line runs, when its imports are done and when it ends."""
    source = (REPO / DEMO[0]).read_text(encoding="utf-8")
    first, imported = "import argparse\n", "from torchvision.datasets import FakeData\n"
    ending = 'if __name__ == "__main__":\n    main()\n'
    assert first in source and imported in source and source.endswith(ending), "the demo moved: update _timed_demo"
    clock = "import sys as _sys, time as _time\n_first_line = _time.monotonic()\n"
    # The end is noted as the script's code returns: what the agent does when a script ends
    # (the last steps sent) and the interpreter's exit are the last phase's.
    ended = f"    print({_CLOCK_LINE!r}, _first_line, _imported, _time.monotonic(), file=_sys.stderr)\n"
    source = source.replace(first, clock + first, 1).replace(imported, imported + "_imported = _time.monotonic()\n", 1) + ended
    copy = Path(tempfile.mkdtemp(prefix="cossim-tui-bench-")) / Path(DEMO[0]).name
    copy.write_text(source, encoding="utf-8")
    return [str(copy), *DEMO[1:]]


def _phases(command: list[str]) -> list[float]:
    """Wall time of ``command``, whole and in ``_PHASES``."""
    start, end, done = _timed(command)
    found = re.search(rf"{_CLOCK_LINE} (\S+) (\S+) (\S+)", done.stdout + done.stderr)
    if found is None:
        raise RuntimeError(f"{' '.join(command)} noted no times:\n{done.stdout}\n{done.stderr}")
    first, imported, ended = map(float, found.groups())
    return [end - start, first - start, imported - first, ended - imported, end - ended]


def figure_check_vs_python(reps: int) -> None:
    print("1. check on the demo vs plain python (whole process, wall time)", flush=True)
    demo = _timed_demo()
    runs: dict[str, list[list[float]]] = {"python": [], "check": []}
    commands = {"python": [PYTHON, *demo], "check": _check(*demo)}
    try:
        for name, phases in _alternate(commands, reps, _phases):
            runs[name].append(phases)
    finally:
        shutil.rmtree(Path(demo[0]).parent, ignore_errors=True)
    python, check = runs["python"], runs["check"]
    report("python " + " ".join(DEMO), [r[0] for r in python], _s)
    report("cossim-tui check (same)", [r[0] for r in check], _s)
    report("ratio check / python", [c[0] / p[0] for c, p in zip(check, python)], _x, 1.05)
    # Where the difference is, phase by phase, from the same runs: check's own cost lies in the
    # first and the third; the second (reading torch from disk) swings by hundreds of ms from
    # one run to the next on a shared machine, under either command, and sets the ratio's spread.
    for index, phase in enumerate(_PHASES, start=1):
        report(f"{phase}: python", [r[index] for r in python], _ms)
        report(f"{phase}: check − python", [c[index] - p[index] for c, p in zip(check, python)], _ms)
    # For reference, not the budget: each pair's ratio with the imports taken as python's own.
    steady = [(p[0] + (c[1] - p[1]) + (c[3] - p[3]) + (c[4] - p[4])) / p[0] for c, p in zip(check, python)]
    report("ratio, check's imports counted as python's", steady, _x)


def _instructions(command: list[str], folder: Path) -> dict[int, tuple[int | None, int]]:
    """The instructions each process of ``command`` executed, by pid, with its parent's pid:
    valgrind's callgrind follows forks and the processes started, and writes an output file and
    a log for each. A forked child's count starts with what its parent had executed then."""
    folder.mkdir()
    tool = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={folder}/out.%p", f"--log-file={folder}/log.%p"]
    _timed([*tool, *command], timeout=3600)  # (valgrind exits as the command does)
    processes: dict[int, tuple[int | None, int]] = {}
    for output in folder.glob("out.*"):
        pid = int(output.suffix[1:])
        with output.open("rb") as handle:  # the totals are the file's last line; the file is tens of MB
            handle.seek(max(0, output.stat().st_size - 4096))
            totals = [line for line in handle.read().decode(errors="replace").splitlines() if line.startswith("totals:")]
        log = folder / f"log.{pid}"
        parent = re.search(r"Parent PID: (\d+)", log.read_text(errors="replace")) if log.exists() else None
        if totals:
            processes[pid] = (int(parent.group(1)) if parent else None, int(totals[-1].split()[1]))
    if not processes:
        logs = "".join(log.read_text(errors="replace")[-1000:] for log in folder.glob("log.*"))
        raise RuntimeError(f"valgrind counted nothing of {' '.join(command)}:\n{logs}")
    return processes


def _first_process(processes: dict[int, tuple[int | None, int]]) -> int:
    """The process the command started as: the one whose parent is none of them."""
    (first,) = [pid for pid, (parent, _) in processes.items() if parent not in processes]
    return first


def _count_both(commands: dict[str, list[str]]) -> dict[str, dict[int, tuple[int | None, int]]]:
    """``_instructions`` of each command, the two at once, one on each CPU: what a process
    executes does not depend on what else runs (but for the few waits whose outcome depends on
    timing)."""
    folder = Path(tempfile.mkdtemp(prefix="cossim-tui-instructions-"))
    counted: dict[str, dict[int, tuple[int | None, int]]] = {}

    def count(name: str) -> None:
        counted[name] = _instructions(commands[name], folder / name)

    try:
        threads = [threading.Thread(target=count, args=(name,)) for name in commands]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if set(counted) != set(commands):
        raise RuntimeError("an instruction count failed (above)")
    return counted


def figure_instructions(reps: int) -> None:
    """Figure 1 counted in instructions rather than timed: counts of one tree differ by a tenth
    of a percent from run to run, where the clock's differ by several percent."""
    print("1. (instructions) check on the demo vs plain python, instructions executed (valgrind)", flush=True)
    if shutil.which("valgrind") is None:
        note("valgrind is not installed (apt-get install valgrind): not counted")
        return
    commands = {"python": [PYTHON, *DEMO], "check": _check(*DEMO)}
    script: dict[str, list[int]] = {"python": [], "check": []}
    own: list[int] = []
    for _ in range(reps):
        counted = _count_both(commands)
        # Under python the script's process is the one started; under check, the command's
        # child (its fork, whose count starts with what the command ran before it: that part,
        # up to the script's first line, is on the script's way too). The script's own
        # children (DataLoader workers, helpers) are left out under both.
        python, check = counted["python"], counted["check"]
        script["python"].append(python[_first_process(python)][1])
        command = _first_process(check)
        children = [total for pid, (parent, total) in check.items() if parent == command]
        script["check"].append(max(children))
        own.append(check[command][1])
    report("the script's process under python", script["python"], _g)
    report("the script's process under check", script["check"], _g)
    report("ratio check / python (not the budget: no kernel time, no waits)", [c / p for c, p in zip(script["check"], script["python"])], _x)
    report("check's own process (beside it)", own, _g)


def figure_untouched_ops(reps: int, steps: int, width: int = 512, batch: int = 64) -> None:
    print("2. torch ops that are not intercepted (MLP loop, its own timing of the un-intercepted work)", flush=True)
    script = [str(FIXTURES / "mlp_loop.py"), "--steps", str(steps), "--width", str(width), "--batch", str(batch)]
    loops: dict[str, list[float]] = {"python": [], "check": []}
    for name, (_, out) in _alternate({"python": [PYTHON, *script], "check": _check(*script)}, reps):
        match = re.search(r"loop_seconds=([0-9.]+)", out)
        assert match, out
        loops[name].append(float(match.group(1)))
    report(f"python mlp_loop.py ({steps} steps, 6×{width} wide, batch {batch})", loops["python"], _s)
    report("cossim-tui check (same)", loops["check"], _s)
    report("ratio check / python", [c / p for c, p in zip(loops["check"], loops["python"])], _x, 1.02)


def figure_small_steps(reps: int, steps: int) -> None:
    print("9. a loop of small training steps, whole process (12-layer 64-wide MLP, batch 32, one cosine call a step)", flush=True)
    script = [str(FIXTURES / "mlp_loop.py"), "--steps", str(steps), "--layers", "12", "--width", "64", "--batch", "32"]
    walls: dict[str, list[float]] = {"python": [], "check": []}
    for name, (wall, _) in _alternate({"python": [PYTHON, *script], "check": _check(*script)}, reps):
        walls[name].append(wall)
    report(f"python mlp_loop.py ({steps} steps)", walls["python"], _s)
    report("cossim-tui check (same)", walls["check"], _s)
    report("ratio check / python", [c / p for c, p in zip(walls["check"], walls["python"])], _x, 1.05)


def figure_products(reps: int, steps: int) -> None:
    print("10. matrix products that are not similarity matrices (layers written as @, matmul, einsum; their own timing)", flush=True)
    for model in ("mlp", "cnn", "transformer"):
        script = [str(FIXTURES / "product_loops.py"), "--model", model, "--steps", str(steps)]
        loops: dict[str, list[float]] = {"python": [], "check": []}
        for name, (_, out) in _alternate({"python": [PYTHON, *script], "check": _check(*script)}, reps):
            match = re.search(r"loop_seconds=([0-9.]+)", out)
            assert match, out
            loops[name].append(float(match.group(1)))
        report(f"python product_loops.py --model {model} ({steps} steps)", loops["python"], _s)
        report("cossim-tui check (same)", loops["check"], _s)
        report("ratio check / python", [c / p for c, p in zip(loops["check"], loops["python"])], _x, 1.02)
    # The steadier part: the wrappers' cost per product, in one process, times the products a step
    # makes, over the step's best time (two processes on a busy machine differ by more than 2%).
    done = subprocess.run([PYTHON, str(FIXTURES / "product_overhead.py")], capture_output=True, text=True, check=True)
    for line in done.stdout.splitlines():
        fields = dict(part.split("=") for part in line.split()[2:])
        if line.startswith("per_product"):
            added = float(fields["wrapped_ns"]) - float(fields["plain_ns"])
            print(f"  {line.split()[1]:<44} {fields['plain_ns']} ns plain, +{added:.0f} ns wrapped (best of 300 each)")
        else:
            model, ratio = line.split()[1], float(fields["estimated_ratio"])
            verdict = "ok" if ratio <= 1.02 else "OVER"
            print(
                f"  {model}: {fields['products_per_step']} products a step of {fields['step_ms']} ms"
                f"{'':<10} estimated ratio {ratio:.4f}×   budget ≤ 1.020×  {verdict}"
            )


# --------------------------------------------------------------------------------------
# 3: one intercepted call, in this process
# --------------------------------------------------------------------------------------


class _Discard:
    """A channel (what ``Controller`` sends on) that counts the messages it is handed, encoded by
    the agent's outbox as for the real one, and drops them."""

    def __init__(self) -> None:
        self.sent = 0
        self._never = threading.Event()

    def send_now(self, data: bytes) -> int:
        self.sent += 1
        return len(data)

    def send_bytes(self, data: bytes) -> None:
        self.sent += 1

    def receive(self) -> Any:
        self._never.wait()


def figure_per_call(reps: int) -> None:
    print("3. one intercepted call: capture + evidence + judging + encoding vs the bare call", flush=True)
    import torch
    import torch.nn.functional as F

    from cossim_tui.agent.controller import Controller
    from cossim_tui.protocol import AgentConfig

    # What `check` asks of the agent (no pictures: nothing shows them); and what the TUI asks
    # while the script runs freely (`r`): pictures for one step in every PICTURE_INTERVAL.
    configs = {
        "check": AgentConfig(mode="run", break_on=["never"], pictures="none"),
        "TUI running freely": AgentConfig(mode="run", break_on=["never"], pictures="paced"),
    }
    controller = Controller(_Discard(), configs["check"])  # type: ignore[arg-type]
    controller.install()
    outbox = getattr(controller, "_outbox", None)  # (absent before messages were sent from a thread)
    flush_outbox = outbox.flush if outbox is not None else (lambda: None)
    # Steps summarised behind the script (parked calls) are part of the calls' cost: every one
    # is made and sent before the clock stops.
    finish_in_flight = getattr(controller, "_finish_in_flight", lambda: None)

    def flush() -> None:
        finish_in_flight()
        flush_outbox()

    intercepted = F.cosine_similarity
    bare = intercepted.__cossim_tui_original__
    torch.manual_seed(0)
    for shape, calls, budget in (((8, 64), 200, None), ((256, 4096), 4, 3.0)):
        # Distinct pairs, more than the evidence window, so no call looks like a recycled partner.
        pool = [(torch.randn(*shape), torch.randn(*shape)) for _ in range(12)]
        for config_name, config in configs.items():
            controller.config = config
            for a, b in pool[:3]:  # first calls parse the call site and warm the caches
                intercepted(a, b, dim=-1)
            added, ratios, cpu_added = [], [], []
            for rep in range(reps):
                timings, cpu = {}, {}
                for name in ("bare", "intercepted") if rep % 2 == 0 else ("intercepted", "bare"):
                    function = bare if name == "bare" else intercepted
                    flush()
                    start, start_cpu = time.perf_counter(), time.process_time()
                    for i in range(calls):
                        a, b = pool[i % len(pool)]
                        function(a, b, dim=-1)
                    if name == "intercepted":
                        flush()  # queued messages are encoded (on the outbox's thread) too
                    timings[name] = (time.perf_counter() - start) / calls
                    cpu[name] = (time.process_time() - start_cpu) / calls
                added.append(timings["intercepted"] - timings["bare"])
                ratios.append(timings["intercepted"] / timings["bare"])
                cpu_added.append(cpu["intercepted"] - cpu["bare"])
            label = f"{shape[0]}×{shape[1]} float32, {config_name}"
            if config_name != "check":
                # The TUI's pictures are on top of check's work: its own budget for a small pair.
                report(f"{label}: added per call", added, _us if budget is None else _ms, 200e-6 if budget is None else None)
                report(f"{label}: ratio", ratios, _x)
            elif budget is None:
                report(f"{label}: added per call", added, _us, 150e-6)
                # The median leaves out the rare window with a full garbage collection in it
                # (~1 in 1,700 calls); a long run pays for those too.
                note(f"(mean over the repetitions, full collections included: {_us(statistics.fmean(added))})")
                report(f"{label}: added CPU time per call (all threads)", cpu_added, _us)
                report(f"{label}: ratio (for reference)", ratios, _x)
            else:
                report(f"{label}: added per call (for reference)", added, _ms)
                report(f"{label}: added CPU time per call (all threads)", cpu_added, _ms)
                report(f"{label}: ratio intercepted / bare", ratios, _x, budget)
    flush()
    note(f"({controller.steps} calls captured, {controller.connection.sent} messages encoded)")


# --------------------------------------------------------------------------------------
# 4 and 5: the real app through Pilot
# --------------------------------------------------------------------------------------


class _TeeRun:
    """A ``launcher.Run`` whose output is also kept, so the script's own figures can be read."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.output: list[str] = []
        self.target_name = run.target_name

    def events(self) -> Iterator[Any]:
        from cossim_tui.session.events import OutputReceived

        for event in self.run.events():
            if isinstance(event, OutputReceived):
                self.output.append(event.text)
            yield event

    def send(self, message: Any) -> None:
        self.run.send(message)

    def terminate(self) -> None:
        self.run.terminate()


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.0005)


def _app(script_args: list[str], mode: str) -> tuple[Any, _TeeRun]:
    from cossim_tui.launcher import Run
    from cossim_tui.session.events import Target
    from cossim_tui.protocol import AgentConfig
    from cossim_tui.tui.app import InspectorApp

    run = _TeeRun(Run(Target(script=str(FIXTURES / "small_calls.py"), args=script_args), AgentConfig(mode=mode)))  # type: ignore[arg-type]
    return InspectorApp(run), run


class _StepsSeen:
    """A run whose reader notes when each step reached this process (before the app had it)."""

    def __init__(self, tee: _TeeRun) -> None:
        self.tee = tee
        self.arrived: dict[int, float] = {}
        self.target_name = tee.target_name

    def events(self) -> Iterator[Any]:
        for event in self.tee.events():
            step = getattr(event, "step", None)
            if type(event).__name__ == "StepCaptured" and step is not None:
                self.arrived.setdefault(step, time.perf_counter())
            yield event

    def send(self, message: Any) -> None:
        self.tee.send(message)

    def terminate(self) -> None:
        self.tee.terminate()


async def _step_latency(steps: int) -> dict[str, list[float]]:
    """Per ``n``: when the step reached this process, when the status said so, when the app was
    idle again (everything redrawn). The key is posted as a terminal would send it
    (``simulate_key``): ``pilot.press`` would itself wait for the app to go idle."""
    from cossim_tui.launcher import Run
    from cossim_tui.session.events import Target
    from cossim_tui.protocol import AgentConfig
    from cossim_tui.tui.app import InspectorApp
    from cossim_tui.tui.widgets.status_bar import StatusBar

    run = _StepsSeen(_TeeRun(Run(Target(script=str(FIXTURES / "small_calls.py")), AgentConfig(mode="step"))))
    app = InspectorApp(run)
    times: dict[str, list[float]] = {"arrived": [], "status": [], "painted": [], "drawn": []}
    painted: dict[int, float] = {}
    display = app._display  # textual's hand-over of each finished frame to the terminal

    def frame(screen: Any, update: Any) -> None:
        display(screen, update)
        if update is not None and app.current is not None:
            painted.setdefault(app.current.step, time.perf_counter())

    app._display = frame  # type: ignore[method-assign]
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            status = app.query_one(StatusBar)
            await _until(lambda: status.state == "paused at step 0", 120)
            await pilot.pause()
            for step in range(1, steps + 1):
                start = time.perf_counter()
                app.simulate_key("n")
                await _until(lambda: status.state == f"paused at step {step}", 10)
                times["status"].append(time.perf_counter() - start)
                await pilot.pause()  # the app is idle: the screen has been redrawn
                times["drawn"].append(time.perf_counter() - start)
                times["arrived"].append(run.arrived[step] - start)
                times["painted"].append(painted[step] - start)
            await pilot.press("q")
    finally:
        run.terminate()
    return times


def figure_step_latency(steps: int) -> None:
    print("4. step latency: n pressed until the next step is on screen (Pilot, real app, real child)", flush=True)
    times = asyncio.run(_step_latency(steps))
    report("n → the step reaches the TUI process", times["arrived"], _ms)
    report("n → status 'paused at step N+1'", times["status"], _ms)
    report(f"n → the first frame showing step N+1 ({steps} steps)", times["painted"], _ms, 0.050)
    report("n → app idle again (textual's wait_for_idle)", times["drawn"], _ms)
    ordered = sorted(times["painted"])
    note(f"p95 of the first frame {_ms(ordered[int(0.95 * (len(ordered) - 1))])}")


async def _free_run_keys(presses: int) -> tuple[list[float], list[float]]:
    from cossim_tui.tui.widgets.status_bar import StatusBar

    app, run = _app(["--rate", "10000"], "step")
    acted, landed = [], []
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            status = app.query_one(StatusBar)
            await _until(lambda: status.state == "paused at step 0", 120)
            for _ in range(presses):
                app.simulate_key("r")
                await _until(lambda: status.state == "running", 30)
                await asyncio.sleep(1.0)
                start = time.perf_counter()
                app.simulate_key("p")
                await _until(lambda: status.state != "running", 30)
                acted.append(time.perf_counter() - start)
                await _until(lambda: status.state.startswith("paused at step"), 30)
                landed.append(time.perf_counter() - start)
            await pilot.press("q")
    finally:
        run.terminate()
    return acted, landed


async def _free_run_rate(calls: int) -> tuple[float, int]:
    from cossim_tui.tui.widgets.status_bar import StatusBar

    app, run = _app(["--rate", "10000", "--calls", str(calls), "--warm", "2000"], "run")
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            status = app.query_one(StatusBar)
            await _until(lambda: status.phase in ("ended", "failed"), 300)
            shown = app.model.step_count
            await pilot.press("q")
    finally:
        run.terminate()
    match = re.search(r"calls_per_second=([0-9.]+)", "".join(run.output))
    assert match, "".join(run.output)
    return float(match.group(1)), shown


def figure_free_run(presses: int, calls: int) -> None:
    print("5. free run at 10,000 calls/s: keys while the script runs, and the script's own rate", flush=True)
    acted, landed = asyncio.run(_free_run_keys(presses))
    report("p → acted on (status leaves 'running')", acted, _ms, 0.100)
    report("p → 'paused at step N' on screen", landed, _ms)
    script = [str(FIXTURES / "small_calls.py"), "--rate", "10000", "--calls", str(calls), "--warm", "2000"]
    rates: dict[str, list[float]] = {"python": [], "check": [], "tui": []}
    for name, (_, out) in _alternate({"python": [PYTHON, *script], "check": _check(*script)}, 2):
        rates[name].append(float(re.search(r"calls_per_second=([0-9.]+)", out).group(1)))  # type: ignore[union-attr]
    for _ in range(2):
        rate, shown = asyncio.run(_free_run_rate(calls))
        rates["tui"].append(rate)
    fmt = lambda r: f"{r:,.0f}/s"  # noqa: E731
    report("calls/s, plain python (target 10,000)", rates["python"], fmt)
    report("calls/s under check", rates["check"], fmt)
    report("calls/s under the TUI (free run)", rates["tui"], fmt)
    report("TUI / check call rate", [t / statistics.median(rates["check"]) for t in rates["tui"]], _x)
    note(f"(the TUI counted {shown:,} of {calls:,} steps)")


# --------------------------------------------------------------------------------------
# 6: memory
# --------------------------------------------------------------------------------------


def figure_memory(calls: int, warm: int) -> None:
    print(f"6. memory: resident memory grown over {calls:,} calls in check (after the first {warm:,})", flush=True)
    command = _check(str(FIXTURES / "small_calls.py"), "--calls", str(calls), "--warm", str(warm), "--linger", "1.5")
    process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    samples: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    for line in process.stdout:
        if line.strip() in ("warm", "done"):
            (child,) = _children(process.pid)
            samples[line.strip()] = {"check": _rss_mb(process.pid), "script": _rss_mb(child), "t": time.perf_counter()}
    process.wait()
    grown = {who: samples["done"][who] - samples["warm"][who] for who in ("check", "script")}
    report("check process grew", [grown["check"]], _mb)
    report("script process grew", [grown["script"]], _mb)
    report("both together", [grown["check"] + grown["script"]], _mb, 50.0)
    note(
        f"(RSS at warm: check {_mb(samples['warm']['check'])}, script {_mb(samples['warm']['script'])}; "
        f"{calls - warm:,} calls in {samples['done']['t'] - samples['warm']['t']:.1f} s; total {time.perf_counter() - start:.1f} s)"
    )


# --------------------------------------------------------------------------------------
# 7: start-up in a real terminal
# --------------------------------------------------------------------------------------


_TMUX_SOCKET = str(Path(tempfile.gettempdir()) / f"cossim-bench-{os.getpid()}.tmux")
"""A tmux server of our own: nobody else's sessions are touched, and it outlives each run; its
socket is removed with it."""


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-S", _TMUX_SOCKET, *args], capture_output=True, text=True, check=True).stdout


def _startup_once() -> tuple[float, bool, str, float, float]:
    """Seconds until the status line is on screen, whether torch was loaded by then, seconds until
    the first step is on screen; and the same terminal's time to show a plain ``python`` print."""
    session = f"cossim-bench-{uuid.uuid4().hex[:8]}"
    env_script = str(FIXTURES / "small_calls.py")
    start = time.perf_counter()
    _tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", f"{PYTHON} -m cossim_tui {env_script} --calls 5")
    try:
        first = torch_loaded = None
        deadline = start + 60
        while time.perf_counter() < deadline:
            screen = _tmux("capture-pane", "-p", "-t", session)
            if first is None and "cossim-tui ·" in screen:
                first = time.perf_counter() - start
                # The agent says "torch … hooked" once the script's `import torch` has finished.
                torch_loaded = "hooked" in screen or "paused at step" in screen
                state = screen.split("cossim-tui ·", 1)[1].split("·", 1)[0].strip()
            if "paused at step 0" in screen:
                paused = time.perf_counter() - start
                break
            time.sleep(0.005)
        else:
            raise TimeoutError("the TUI never showed step 0")
        _tmux("send-keys", "-t", session, "q")
    finally:
        time.sleep(0.3)
        subprocess.run(["tmux", "-S", _TMUX_SOCKET, "kill-session", "-t", session], capture_output=True)
    # The terminal's own delay: a plain python that prints one line.
    session = f"cossim-bench-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    _tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", f"{PYTHON} -c \"print('ready'); import time; time.sleep(3)\"")
    try:
        while "ready" not in _tmux("capture-pane", "-p", "-t", session):
            time.sleep(0.005)
        baseline = time.perf_counter() - start
    finally:
        subprocess.run(["tmux", "-S", _TMUX_SOCKET, "kill-session", "-t", session], capture_output=True)
    assert first is not None and torch_loaded is not None
    return first, torch_loaded, state, paused, baseline


def figure_startup(reps: int) -> None:
    print("7. start-up: the command in a terminal (tmux) until the status line is on screen", flush=True)
    if shutil.which("tmux") is None:
        note("tmux is not installed: skipped")
        return
    firsts, loaded, states, paused, baselines = [], [], [], [], []
    # A session that lives through the figure keeps the server up between runs.
    _tmux("new-session", "-d", "-s", "keep", "sleep 3600")
    try:
        for _ in range(reps):
            first, torch_loaded, state, step0, baseline = _startup_once()
            firsts.append(first)
            loaded.append(torch_loaded)
            states.append(state)
            paused.append(step0)
            baselines.append(baseline)
    finally:
        subprocess.run(["tmux", "-S", _TMUX_SOCKET, "kill-server"], capture_output=True)
        Path(_TMUX_SOCKET).unlink(missing_ok=True)
    report("command → status line on screen", firsts, _s, 0.5)
    report("(terminal + python start-up alone)", baselines, _s)
    report("command → step 0 on screen (torch loaded)", paused, _s)
    note(f"torch already loaded in the child at first paint: {sum(loaded)} of {len(loaded)} runs; "
         f"the status then said: {', '.join(sorted(set(states)))}")


# --------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    import cossim_tui

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads), load average {load:.2f} at start, "
        f"cossim_tui from {Path(cossim_tui.__file__).parent}"
    )


def compile_bytecode() -> None:
    """Make sure cossim_tui's bytecode is cached, as it is for an installed package.

    pip compiles a package's bytecode when it installs it, and Python caches what it compiles on
    a first run; with ``PYTHONDONTWRITEBYTECODE`` set (as on some CI machines) neither happens
    for an editable install, and every process would compile the agent and the launcher from
    source again, some 60 ms of each run that no installed copy pays. Python still reads a cache
    that exists, so it is written here once (``__pycache__`` is ignored by git)."""
    import compileall

    import cossim_tui

    package = Path(cossim_tui.__file__).parent
    if not compileall.compile_dir(str(package), quiet=2):
        note(f"(could not write cossim_tui's bytecode in {package}: its modules are compiled in every process)")
    elif sys.dont_write_bytecode:
        note("(PYTHONDONTWRITEBYTECODE is set: cossim_tui's bytecode was compiled once, as installing it does)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="1,2,3,4,5,6,7,9,10", help="comma-separated figure numbers (8 is gpu_check.py)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="N",
        help="also count figure 1's instructions, N times (valgrind; about 2.5 minutes each)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads, here and in every process started (0: torch's default). "
        "1 by default: on a shared machine, idle-waiting worker threads make timings swing by 10x",
    )
    options = parser.parse_args(argv)
    if options.threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(options.threads)
    only = {int(n) for n in options.only.split(",")}
    quick = options.quick
    print(f"cossim-tui benchmarks — {machine()}", flush=True)
    compile_bytecode()
    figures: dict[int, Callable[[], None]] = {
        1: lambda: figure_check_vs_python(3 if quick else 7),
        2: lambda: figure_untouched_ops(3 if quick else 9, 100 if quick else 200),
        3: lambda: figure_per_call(5 if quick else 15),
        4: lambda: figure_step_latency(20 if quick else 100),
        5: lambda: figure_free_run(2 if quick else 6, 10_000 if quick else 30_000),
        6: lambda: figure_memory(20_000 if quick else 100_000, 5_000),
        7: lambda: figure_startup(2 if quick else 5),
        9: lambda: figure_small_steps(3 if quick else 7, 1500),
        10: lambda: figure_products(3 if quick else 9, 100 if quick else 200),
    }
    for number in sorted(only):
        figures[number]()
    if options.instructions:
        figure_instructions(options.instructions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
