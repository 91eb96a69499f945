"""The GPU check (issue 7, figure 8): one device→host transfer per captured call, and the demo
on the GPU at most 1.05× plain python.

    python benchmarks/gpu_check.py            # on a machine with a CUDA device

1. Transfers and syncs per captured call. The interceptor is installed in this process (a
   ``Controller`` whose channel encodes and drops every message), with ``check``'s settings and
   with the TUI's running freely. torch's profiler counts the device→host copies (``Memcpy
   DtoH``, and whether into pinned memory) over the calls with the embedding map left out, and
   ``torch.cuda.set_sync_debug_mode("warn")`` makes every synchronising CUDA operation warn: the
   warnings raised while a call is being captured are counted, those of the embedding map
   (drawn every 16th pictured call at a site and at stops; its eigendecomposition reads back by
   itself) apart. On fresh (8, 64) and (256, 4096) float32 pairs and on the demo's training
   loop (``fixtures/siamese_device.py``: a stale partner at every step). A small pair that is
   not pictured is copied without waiting and summarised by the agent's own thread: its syncs
   are 0 and its copy still 1.
2. The same steps either way: calls under ``check``'s settings summarised behind the script
   against the same calls each waited for (every figure of 30 fixed calls; the findings of the
   demo's loop); the time a call adds, both ways; and a GPU-bound training step with the cosine
   call not intercepted (provenance's module-call wrapper stays), at each call and behind the
   script.
3. The demo's loop on the GPU under ``cossim-tui check`` vs plain ``python``, whole-process wall
   time, alternating runs.

Without a CUDA device it says so and exits 0. With one, it exits 1 if a budget is not met.
"""

from __future__ import annotations

import os
import re
import runpy
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from run import (  # (benchmarks/ is this script's directory)
    _alternate,
    _check,
    _Discard,
    _s,
    _x,
    report,
)

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "benchmarks" / "fixtures" / "siamese_device.py"
SYNC_BUDGET = 1
RATIO_BUDGET = 1.05


class _Keep(_Discard):
    """A channel that drops every message, as ``_Discard``, or keeps the steps while ``keep``."""

    def __init__(self) -> None:
        super().__init__()
        self.keep = False
        self.steps: list[Any] = []

    def send_now(self, data: bytes) -> int:
        self.send_bytes(data)
        return len(data)

    def send_bytes(self, data: bytes) -> None:
        from cossim_tui import protocol

        self.sent += 1
        if self.keep:
            message = protocol.decode_message(data[4:])
            if isinstance(message, protocol.StepCaptured):
                self.steps.append(message)


def _syncs(caught: list[warnings.WarningMessage]) -> int:
    return sum("synchroniz" in str(w.message) for w in caught)


def _count_syncs(controller: Any) -> tuple[list[int], list[int]]:
    """Wrap ``controller.on_call`` so that each captured call records the syncs it made: those
    of the embedding map (``ProjectionMaps``, drawn every few calls and at stops; its
    eigendecomposition reads back by itself) apart from all the others."""
    from cossim_tui.agent import projection

    counts: list[int] = []
    maps: list[int] = []
    on_call = controller.on_call
    observe = projection.ProjectionMaps.observe

    def observe_counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = observe(self, *args, **kwargs)
        maps[-1] += _syncs(caught)
        return result

    def counted(*args: Any, **kwargs: Any) -> None:
        maps.append(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            on_call(*args, **kwargs)
        counts.append(_syncs(caught))

    projection.ProjectionMaps.observe = observe_counted  # type: ignore[method-assign]
    controller.on_call = counted
    return counts, maps


CHECK = {"pictures": "none"}
"""``check``'s settings (``headless._check``); the TUI running freely has pictures ``paced``."""


def _controller() -> Any:
    """The one interceptor of this process (installing a second would wrap torch's module
    calls twice), its channel, and the syncs it counts."""
    from cossim_tui.agent.controller import Controller
    from cossim_tui.protocol import AgentConfig

    channel = _Keep()
    controller = Controller(channel, AgentConfig(mode="run", break_on=["never"]))
    controller.install()
    counts, maps = _count_syncs(controller)
    return controller, channel, counts, maps


def _start_over(controller: Any, settings: dict[str, Any], behind: bool = True) -> None:
    """A fresh session on the same interceptor: no steps, no history, these settings; with
    ``behind=False`` every call is waited for, as it was before calls could be summarised later."""
    import msgspec.structs

    from cossim_tui.agent import transfer
    from cossim_tui.diagnostics.judge import Judge

    controller._finish_in_flight()
    with controller._lock:
        controller.config = msgspec.structs.replace(controller.config, **settings)
        controller.steps = 0
        pipeline = controller.pipeline
        pipeline.evidence = pipeline.projections = None
        pipeline.judge = Judge(ignore=set())
        pipeline.pictures._pictured_at.clear()
        context = pipeline.context
        if context is not None:  # the training context seen so far: none yet
            context.epoch = context.batch = context._loss = context._optimizer = None
            context.optimizer_steps = 0
        tools = pipeline.ready()
        tools.runs_behind = transfer.runs_behind if behind else (lambda device: False)


def _run_fixture(epochs: int = 1, images: int = 20) -> None:
    argv = sys.argv
    sys.argv = [str(FIXTURE), "--device", "cuda", "--epochs", str(epochs), "--images", str(images)]
    try:
        runpy.run_path(str(FIXTURE), run_name="__main__")
    finally:
        sys.argv = argv


def _copies(run: Any) -> tuple[int, int]:
    """Device→host copies made while ``run()`` runs, and how many of them went to pinned memory;
    without the embedding map (its syncs are counted apart, by ``_count_syncs``)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from cossim_tui.agent import projection

    observe = projection.ProjectionMaps.observe
    projection.ProjectionMaps.observe = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            run()
            torch.cuda.synchronize()
    finally:
        projection.ProjectionMaps.observe = observe  # type: ignore[method-assign]
    # (kineto names each copy once as a device activity, e.g. "Memcpy DtoH (Device -> Pinned)")
    copies = [e.name for e in prof.events() if e.name.startswith("Memcpy DtoH")]
    return len(copies), sum("Pinned" in n for n in copies)


def syncs_per_call(session: Any, settings: dict[str, Any], label: str) -> bool:
    import torch
    import torch.nn.functional as F

    print(f"  {label}:", flush=True)
    controller, _, counts, maps = session
    _start_over(controller, settings)
    ok = True
    torch.manual_seed(0)
    for shape in ((8, 64), (256, 4096)):
        pairs = [(torch.randn(*shape, device="cuda"), torch.randn(*shape, device="cuda")) for _ in range(12)]
        for a, b in pairs[:3]:  # first calls make the per-shape caches (index tensors, once)
            F.cosine_similarity(a, b, dim=-1)

        def calls(pairs: list[Any] = pairs) -> None:
            for i in range(40):
                a, b = pairs[i % len(pairs)]
                F.cosine_similarity(a, b, dim=-1)
            controller._finish_in_flight()  # the last calls' steps: their copies were made above

        torch.cuda.synchronize()
        copies, pinned = _copies(calls)
        counts.clear()
        maps.clear()
        torch.cuda.set_sync_debug_mode("warn")
        calls()
        torch.cuda.set_sync_debug_mode("default")
        ok &= _report(f"{shape[0]}×{shape[1]} float32 pairs", counts, maps, copies, pinned, 40)

    # The demo's loop, run here so that its calls are counted; warm-up on its first epoch.
    _run_fixture()
    controller._finish_in_flight()
    counts.clear()
    maps.clear()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        _run_fixture()
        controller._finish_in_flight()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    demo_counts, demo_maps = list(counts), list(maps)
    copies, pinned = _copies(lambda: (_run_fixture(), controller._finish_in_flight()))
    ok &= _report("the demo's loop (stale partner)", demo_counts, demo_maps, copies, pinned, len(demo_counts))
    return ok


def _fixed_calls() -> None:
    """30 calls whose tensors are the same in every run (no optimiser step, so no training
    nondeterminism): fresh pairs, a partner kept across ``backward()`` (stale), the same object,
    a clone, a NaN, batch size 1 and float16."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64).cuda()
    inputs = [torch.randn(8, 64, device="cuda") for _ in range(6)]
    previous = None
    for step in range(30):
        z, partner = model(inputs[step % 6]), model(inputs[(step + 1) % 6])
        kind = step % 6
        if kind == 1 and previous is not None:
            a, b = z, previous
        elif kind == 2:
            a, b = z, z
        elif kind == 3:
            a, b = z, z.detach().clone()
        elif kind == 4:
            a, b = z, partner.detach().clone()
            b[0, 0] = float("nan")
        elif kind == 5:
            a, b = z[:1].half(), partner[:1].half()
        else:
            a, b = z, partner
        F.cosine_similarity(a, b, dim=-1)
        (z.sum() + partner.sum()).backward()
        previous = z


def _summary(step: Any) -> tuple[Any, ...]:
    """What a step shows, but for where its tensors happen to be in memory, when it was made, and
    the running count of module calls (which goes on from one run to the next here)."""
    args = tuple(
        (x.expr, x.shape, x.dtype, x.requires_grad, x.grad_fn, repr(x.stats), repr(x.norm), x.nan, x.inf, repr(x.preview),
         None if x.made_by is None else (x.made_by.module, x.made_by.step))
        for x in step.args
    )
    findings = tuple((f.code, f.severity, f.message) for f in step.findings)
    relation = None if step.relation is None else repr((step.relation.same_object, step.relation.shares_storage, step.relation.equal_values, step.relation.max_abs_diff))
    return step.step, args, repr(step.cos), relation, findings, repr(step.context)


def same_steps_either_way(session: Any) -> bool:
    """Calls under check's settings, summarised behind the script and at each call: exactly the
    same steps for calls whose tensors are the same in both runs, the same findings for the
    demo's loop (whose training differs in the last bits from run to run on a GPU)."""
    import torch
    import torch.nn.functional as F

    controller, channel, _, _ = session
    runs: dict[tuple[str, str], list[Any]] = {}
    added: dict[str, float] = {}
    behind: list[bool] = []
    send_behind = controller._send_behind
    controller._send_behind = lambda *args: behind.append(send_behind(*args)) or behind[-1]
    for way in ("at the call", "behind the script"):
        for name, calls in (("fixed", _fixed_calls), ("demo", lambda: _run_fixture(epochs=1, images=40))):
            _start_over(controller, CHECK, behind=way == "behind the script")
            channel.keep, channel.steps = True, []
            behind.clear()
            torch.manual_seed(0)
            calls()
            controller._finish_in_flight()
            channel.keep = False
            runs[(name, way)] = channel.steps
            print(f"  {way}: {sum(behind)} of {len(behind)} calls ({name}) summarised behind the script", flush=True)
        # The time a call adds, 8×64 float32, against the bare call.
        pairs = [(torch.randn(8, 64, device="cuda"), torch.randn(8, 64, device="cuda")) for _ in range(12)]
        bare = F.cosine_similarity.__cossim_tui_original__
        for fn in (bare, F.cosine_similarity):
            for a, b in pairs:
                fn(a, b, dim=-1)
        timings: dict[str, list[float]] = {"bare": [], "intercepted": []}
        for _ in range(5):
            for name, fn in (("bare", bare), ("intercepted", F.cosine_similarity)):
                torch.cuda.synchronize()
                start = time.perf_counter()
                for i in range(200):
                    a, b = pairs[i % 12]
                    fn(a, b, dim=-1)
                controller._finish_in_flight()
                torch.cuda.synchronize()
                timings[name].append((time.perf_counter() - start) / 200)
        added[way] = statistics.median(timings["intercepted"]) - statistics.median(timings["bare"])
    controller._send_behind = send_behind
    problems = []
    fixed = [runs[("fixed", way)] for way in ("at the call", "behind the script")]
    if [_summary(step) for step in fixed[0]] != [_summary(step) for step in fixed[1]] or len(fixed[0]) != 30:
        for a, b in zip(*fixed):
            if _summary(a) != _summary(b):
                problems.append(f"fixed calls, step {a.step}: {_summary(a)} against {_summary(b)}")
        problems.append(f"fixed calls: {len(fixed[0])} and {len(fixed[1])} steps")
    demo = [runs[("demo", way)] for way in ("at the call", "behind the script")]
    codes = [[[f.code for f in step.findings] for step in steps] for steps in demo]
    if codes[0] != codes[1]:
        problems.append(f"the demo's loop: findings {codes[0]} against {codes[1]}")
    fixed_codes = sorted({f.code for step in fixed[1] for f in step.findings})
    demo_codes = sorted({f.code for step in demo[1] for f in step.findings})
    print(f"  fixed calls: {len(fixed[1])} steps, findings {fixed_codes}; the demo's loop: {len(demo[1])} steps, findings {demo_codes}: "
          f"{'the same' if not problems else 'DIFFERENT'}")
    for problem in problems[:10]:
        print(f"    {problem[:600]}")
    for way, value in added.items():
        print(f"  8×64 float32, added per call under check's settings, {way}: {value * 1e6:.0f} µs")
    return not problems


def gpu_bound_loop(session: Any, reps: int = 4) -> None:
    """A training step the GPU takes longer over than the host (six 4096-wide layers, batch
    2048, one 8×64 cosine call a step), its cosine call not intercepted (provenance's wrapper of
    module calls stays: a frame and a flag a module call) and under check's settings: at each call, the
    call's wait drains the device's queue and it idles while the host summarises; behind the
    script, neither. Printed, not judged: the budget is the demo's."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from cossim_tui.agent import intercept

    controller = session[0]
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(4096, 4096) for _ in range(6)]).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    x = torch.randn(2048, 4096, device="cuda")

    def loop(steps: int = 40) -> float:
        previous = None
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            out = model(x)
            embedding = out[:8, :64]
            partner = previous if previous is not None else embedding.detach()
            loss = (1 - F.cosine_similarity(embedding, partner, dim=-1)).mean() + out.pow(2).mean() * 1e-6
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            previous = embedding.detach()
        controller._finish_in_flight()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    ways = {"not intercepted": None, "at the call": False, "behind the script": True}
    times: dict[str, list[float]] = {way: [] for way in ways}
    loop(5)
    for rep in range(reps):
        for way, behind in list(ways.items())[:: 1 if rep % 2 == 0 else -1]:
            if behind is None:
                intercept._sink = None  # every call passes straight through
            else:
                intercept._sink = controller
                _start_over(controller, CHECK, behind=behind)
            times[way].append(loop())
    intercept._sink = controller
    bare = statistics.median(times["not intercepted"])
    for way, values in times.items():
        median = statistics.median(values)
        print(f"  {way:<18} {median:.3f} s for 40 steps [{min(values):.3f} … {max(values):.3f}]  {median / bare:.3f}×")


def _report(label: str, counts: list[int], maps: list[int], copies: int, pinned: int, calls: int) -> bool:
    worst = max(counts, default=0)
    mean = statistics.mean(counts) if counts else 0.0
    drawn = sum(1 for m in maps if m)
    per_call = copies / max(calls, 1)
    ok = worst <= SYNC_BUDGET and per_call <= SYNC_BUDGET
    print(f"    {label}: device→host copies {per_call:.2f} a call ({copies} in {calls} calls, {pinned} into pinned memory); "
          f"syncs max {worst}, mean {mean:.2f}   budget ≤ {SYNC_BUDGET}  {'ok' if ok else 'OVER'}")
    print(f"      and the embedding map: {sum(maps)} more syncs, at the {drawn} calls it was drawn at")
    return ok


def demo_ratio(reps: int = 5, device: str = "cuda") -> bool:
    script = [str(FIXTURE), "--device", device]
    commands = {"python": [sys.executable, *script], "check": _check(*script)}
    times: dict[str, list[float]] = {"python": [], "check": []}
    loops: dict[str, list[float]] = {"python": [], "check": []}
    for name, (elapsed, out) in _alternate(commands, reps):
        times[name].append(elapsed)
        match = re.search(r"loop_seconds=([0-9.]+)", out)
        if match:
            loops[name].append(float(match.group(1)))
    for name in commands:
        report(f"{name}: whole process", times[name], _s)
        if loops[name]:
            report(f"{name}: training loop", loops[name], _s)
    ratios = [c / p for c, p in zip(times["check"], times["python"])]
    report("ratio check / python (whole process)", ratios, _x, RATIO_BUDGET)
    return statistics.median(ratios) <= RATIO_BUDGET


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print(f"No CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): the GPU check did not run.")
        print("Run `python benchmarks/gpu_check.py` on a machine with a CUDA GPU to get figure 8.")
        return 0
    print(f"GPU check on {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})", flush=True)
    print("1. device→host transfers per captured call", flush=True)
    session = _controller()
    ok = syncs_per_call(session, CHECK, "check's settings")
    ok &= syncs_per_call(session, {"pictures": "paced"}, "the TUI running freely")
    print("2. the same steps behind the script as at each call (check's settings, the demo's loop)", flush=True)
    ok &= same_steps_either_way(session)
    print("   a GPU-bound training step, its cosine call not intercepted and under check's settings", flush=True)
    gpu_bound_loop(session)
    print("3. the demo's training loop on the GPU, check vs plain python", flush=True)
    ok &= demo_ratio()
    return 0 if ok else 1


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
