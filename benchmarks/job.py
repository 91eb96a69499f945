"""Figure 11: what cossim-tui costs a two-rank DDP job, against torchrun alone in the same run.

    python benchmarks/job.py            # 5 repetitions of each, alternating
    python benchmarks/job.py --reps 3

Both run ``fixtures/ddp_loop.py`` (two ranks, gloo on the CPU, one cosine call a step) with
``torchrun --standalone --nproc-per-node 2``: once as ``python -m torch.distributed.run`` and
once as ``cossim-tui check torchrun``. Printed as ``median [min … max, n]``: the ratio of the
training loop's own time (rank 0 times it after warm-up, so torchrun's start-up, which is the
same in both, is left out) and of the whole job's wall time, against the budget of a single
process (figure 1: ≤ 1.05× check / python).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOOP = str(HERE / "fixtures" / "ddp_loop.py")
TORCHRUN = ["--standalone", "--nproc-per-node", "2"]


def _once(command: list[str]) -> tuple[float, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    wall = time.perf_counter() - start
    found = re.search(r"loop_seconds=([0-9.]+)", done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return float(found.group(1)), wall


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}× [{min(values):.3f} … {max(values):.3f}, n={len(values)}]"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    options = parser.parse_args()
    script = [LOOP, "--steps", str(options.steps)]
    commands = {
        "torchrun": [sys.executable, "-m", "torch.distributed.run", *TORCHRUN, *script],
        "check": [sys.executable, "-m", "cossim_tui", "check", "torchrun", *TORCHRUN, *script],
    }
    loop_ratios, wall_ratios = [], []
    for rep in range(options.reps):
        order = ("torchrun", "check") if rep % 2 == 0 else ("check", "torchrun")
        times = {name: _once(commands[name]) for name in order}
        loop_ratios.append(times["check"][0] / times["torchrun"][0])
        wall_ratios.append(times["check"][1] / times["torchrun"][1])
        print(f"  rep {rep}: loop {times['torchrun'][0]:.2f} s → {times['check'][0]:.2f} s, job {times['torchrun'][1]:.2f} s → {times['check'][1]:.2f} s", flush=True)
    print(f"11. two-rank DDP job ({options.steps} steps a rank, one cosine call a step), check torchrun / torchrun")
    print(f"  training loop (rank 0, after warm-up)   {_spread(loop_ratios)}   budget ≤ 1.05× {'ok' if statistics.median(loop_ratios) <= 1.05 else 'OVER'}")
    print(f"  whole job, wall time                    {_spread(wall_ratios)}   (for reference: start-up included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
