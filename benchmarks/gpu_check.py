"""The GPU check (issue 7, figure 8): one device→host transfer per captured call, and the demo
on the GPU at most 1.05× plain python.

    python benchmarks/gpu_check.py            # on a machine with a CUDA device

1. Syncs per captured call. The interceptor is installed in this process (a ``Controller``
   whose channel encodes and drops every message) and ``torch.cuda.set_sync_debug_mode("warn")``
   makes every synchronising CUDA operation warn; the warnings raised while a call is being
   captured are counted, those of the embedding map (drawn every 16th call at a site and at
   stops; its eigendecomposition reads back by itself) apart. Measured on fresh (8, 64) and (256, 4096) float32 pairs and on the
   demo's training loop (``fixtures/siamese_device.py``: a stale partner at every step).
2. The demo's loop on the GPU under ``cossim-tui check`` vs plain ``python``, whole-process wall
   time, alternating runs.

Without a CUDA device it says so and exits 0. With one, it exits 1 if a budget is not met.
"""

from __future__ import annotations

import os
import re
import runpy
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "benchmarks" / "fixtures" / "siamese_device.py"
SYNC_BUDGET = 1
RATIO_BUDGET = 1.05


class _Discard:
    """A channel that encodes every message, as the real one does, and drops it."""

    def send(self, message: Any) -> None:
        from cossim_tui import protocol

        protocol.encode(message)

    def send_now(self, data: bytes) -> int:
        return len(data)

    def send_bytes(self, data: bytes) -> None:
        pass

    def receive(self) -> Any:
        threading.Event().wait()


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


def syncs_per_call() -> bool:
    import torch
    import torch.nn.functional as F

    from cossim_tui.agent.controller import Controller
    from cossim_tui.protocol import AgentConfig

    controller = Controller(_Discard(), AgentConfig(mode="run", break_on=["never"]))  # type: ignore[arg-type]
    controller.install()
    counts, maps = _count_syncs(controller)
    ok = True
    torch.manual_seed(0)
    for shape in ((8, 64), (256, 4096)):
        pairs = [(torch.randn(*shape, device="cuda"), torch.randn(*shape, device="cuda")) for _ in range(12)]
        for a, b in pairs[:3]:  # first calls make the per-shape caches (index tensors, once)
            F.cosine_similarity(a, b, dim=-1)
        counts.clear()
        maps.clear()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        for i in range(40):
            a, b = pairs[i % len(pairs)]
            F.cosine_similarity(a, b, dim=-1)
        torch.cuda.set_sync_debug_mode("default")
        ok &= _report(f"{shape[0]}×{shape[1]} float32 pairs", counts, maps)

    # The demo's loop, run here so that its calls are counted; warm-up on its first epoch.
    counts.clear()
    argv = sys.argv
    sys.argv = [str(FIXTURE), "--device", "cuda", "--epochs", "1", "--images", "20"]
    try:
        runpy.run_path(str(FIXTURE), run_name="__main__")
        counts.clear()
        maps.clear()
        torch.cuda.set_sync_debug_mode("warn")
        runpy.run_path(str(FIXTURE), run_name="__main__")
    finally:
        torch.cuda.set_sync_debug_mode("default")
        sys.argv = argv
    ok &= _report("the demo's loop (stale partner)", counts, maps)
    return ok


def _report(label: str, counts: list[int], maps: list[int]) -> bool:
    worst = max(counts, default=0)
    verdict = "ok" if worst <= SYNC_BUDGET else "OVER"
    mean = statistics.mean(counts) if counts else 0.0
    print(f"  syncs per captured call, {label}: max {worst}, mean {mean:.2f} over {len(counts)} calls   budget ≤ {SYNC_BUDGET}  {verdict}")
    drawn = sum(1 for m in maps if m)
    print(f"    and the embedding map: {sum(maps)} more syncs, at the {drawn} calls it was drawn at")
    return worst <= SYNC_BUDGET


def demo_ratio(reps: int = 5) -> bool:
    script = [str(FIXTURE), "--device", "cuda"]
    commands = {
        "python": [sys.executable, *script],
        "check": [sys.executable, "-m", "cossim_tui", "check", "--fail-on", "never", *script],
    }
    times: dict[str, list[float]] = {"python": [], "check": []}
    loops: dict[str, list[float]] = {"python": [], "check": []}
    for rep in range(reps):
        for name in commands if rep % 2 == 0 else reversed(list(commands)):
            start = time.perf_counter()
            done = subprocess.run(commands[name], cwd=REPO, capture_output=True, text=True, timeout=900)
            times[name].append(time.perf_counter() - start)
            if done.returncode not in (0, 1):
                print(done.stdout, done.stderr)
                raise SystemExit(f"{name} run failed with exit status {done.returncode}")
            match = re.search(r"loop_seconds=([0-9.]+)", done.stdout)
            if match:
                loops[name].append(float(match.group(1)))
    ratios = [c / p for c, p in zip(times["check"], times["python"])]
    ratio = statistics.median(ratios)
    for name in commands:
        print(f"  {name:<7} whole process {statistics.median(times[name]):.2f} s [{min(times[name]):.2f} … {max(times[name]):.2f}], "
              f"training loop {statistics.median(loops[name]):.2f} s")
    verdict = "ok" if ratio <= RATIO_BUDGET else "OVER"
    print(f"  ratio check / python (whole process): {ratio:.3f}× [{min(ratios):.3f} … {max(ratios):.3f}, n={reps}]   budget ≤ {RATIO_BUDGET}×  {verdict}")
    return ratio <= RATIO_BUDGET


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print(f"No CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): the GPU check did not run.")
        print("Run `python benchmarks/gpu_check.py` on a machine with a CUDA GPU to get figure 8.")
        return 0
    print(f"GPU check on {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})", flush=True)
    print("1. device→host transfers per captured call", flush=True)
    ok = syncs_per_call()
    print("2. the demo's training loop on the GPU, check vs plain python", flush=True)
    ok &= demo_ratio()
    return 0 if ok else 1


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
