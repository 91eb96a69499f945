"""Distributed jobs under ``cossim-tui check``: torchrun (both spellings), ranks a script spawns,
and two "nodes" on this machine. gloo on the CPU; ``torchrun --standalone`` picks its own port.

Each module-scoped fixture runs one job that several tests read; a job that several tests can
share carries what each of them looks at (the healthy job gathers its partners with their
gradient, the two nodes that meet gather theirs without). Every test's job ends before the test
does, and no process of it may be left behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest

from integration.live import REPO
from integration.test_check import load_report
from waiting import processes_mentioning

# A module-scoped job serves several tests: they run on one worker (pyproject's loadgroup), so
# that it runs once; the other tests go wherever a worker is free.
HEALTHY = pytest.mark.xdist_group("job-healthy")
TWO_NODES = pytest.mark.xdist_group("job-two-nodes")

F = "tests/fixtures/"
DDP = F + "ddp_pairs.py"
STEPS = 3
TORCHRUN = ["torchrun", "--standalone", "--nproc-per-node", "2"]


def check_job(tmp_path, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> tuple[subprocess.CompletedProcess, dict, str]:
    """``cossim-tui check --json`` on a job; its result, its report and the tag of its processes
    (every one of which must have ended)."""
    tag = uuid.uuid4().hex
    report = tmp_path / f"{tag}.json"
    command = [sys.executable, "-m", "cossim_tui", "check", "--json", str(report), *args]
    if DDP in args:
        command += ["--tag", tag]
    done = subprocess.run(command, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=env)
    assert processes_mentioning(tag) == []
    return done, load_report(report) if report.exists() else {}, tag


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("healthy")
    done, report, tag = check_job(folder, "--record", str(folder / "job.jsonl"), *TORCHRUN, DDP, "--steps", str(STEPS), "--gather", "grad")
    return done, report, folder / "job.jsonl"


@pytest.fixture(scope="module")
def no_sampler(tmp_path_factory):
    return check_job(tmp_path_factory.mktemp("no-sampler"), "-m", "torch.distributed.run", *TORCHRUN[1:], DDP, "--steps", str(STEPS), "--no-sampler")


@HEALTHY
def test_a_healthy_job_has_every_rank_and_no_error(healthy):
    done, report, _ = healthy
    assert done.returncode == 0, done.stdout + done.stderr
    assert (report["status"], report["world_size"], report["steps"]) == ("finished", 2, 2 * STEPS)
    assert sorted((call["rank"], call["step"]) for call in report["calls"]) == [(r, s) for r in (0, 1) for s in range(STEPS)]
    assert not [f for f in report["findings"] if f["severity"] == "error"]
    for rank in (0, 1):  # the ranks' own output passes through torchrun's
        assert f"rank {rank} step {STEPS - 1} cos" in done.stdout
    assert "on 2 of 2 ranks" in done.stdout


@HEALTHY
def test_every_finding_of_a_job_names_its_ranks(healthy):
    _, report, _ = healthy
    for finding in report["findings"]:
        assert finding["ranks"] and set(finding["ranks"]) <= {0, 1}


@HEALTHY
def test_a_job_is_recorded_with_its_ranks_and_replays_with_them(healthy):
    from cossim_tui.protocol import Hello, StepCaptured
    from cossim_tui.session.replay import TraceSource, read_trace
    from cossim_tui.tui.app import InspectorApp

    trace = read_trace(healthy[2])
    steps = [e for e in trace.events if isinstance(e, StepCaptured)]
    assert sorted((s.rank, s.step) for s in steps) == [(r, s) for r in (0, 1) for s in range(STEPS)]
    assert sorted(e.rank for e in trace.events if isinstance(e, Hello)) == [0, 1]
    assert trace.events[-1].status == "finished"

    async def replay():
        app = InspectorApp(TraceSource(healthy[2]), replay=True)
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in range(500):
                if app.model.over and len(app.job.models) == 2:
                    break
                await pilot.pause(0.01)
            assert sorted(app.job.models) == [0, 1] and app.job.shown == 0
            assert [app.job.models[r].step_count for r in (0, 1)] == [STEPS, STEPS]
            assert [state for _, state, _ in app.job.summary()] == ["finished", "finished"]

    import asyncio

    asyncio.run(replay())


def test_the_same_batch_on_every_rank_is_found(no_sampler):
    done, report, _ = no_sampler
    assert done.returncode == 1, done.stdout + done.stderr
    found = [f for f in report["findings"] if f["code"] == "same-batch-across-ranks"]
    assert len(found) == 1 and found[0]["severity"] == "error" and found[0]["ranks"] == [0, 1]
    assert found[0]["count"] == STEPS  # once a step: the second rank's call finds it
    assert found[0]["site"].endswith(f"ddp_pairs.py:{_line('cos = F.cosine_similarity')}")
    assert "DistributedSampler" in found[0]["fix"]


@HEALTHY
def test_a_sampler_is_not_the_same_batch(healthy):
    _, report, _ = healthy
    assert "same-batch-across-ranks" not in {f["code"] for f in report["findings"]}


@pytest.mark.parametrize(
    "job, found",
    [pytest.param("two_nodes_met", True, marks=TWO_NODES), pytest.param("healthy", False, marks=HEALTHY)],
    ids=["plain-True", "grad-False"],
)
def test_partners_from_all_gather_without_grad(request, job, found):
    """Partners from torch.distributed's all_gather carry no gradient: a warning, once a call (two
    steps on each of two ranks); torch.distributed.nn's keeps it, and nothing is found. The two
    nodes that meet gather the first way (``--gather plain``), the healthy job the second."""
    done, report = request.getfixturevalue(job)[:2]
    assert done.returncode == 0, done.stdout + done.stderr
    codes = {f["code"]: f for f in report["findings"]}
    assert ("gathered-without-grad" in codes) is found
    if found:
        assert codes["gathered-without-grad"]["severity"] == "warning"
        assert codes["gathered-without-grad"]["count"] == 2 * 2


def test_a_rank_that_raises_fails_the_job_and_ends_the_other(tmp_path):
    done, report, _ = check_job(tmp_path, *TORCHRUN, DDP, "--steps", str(STEPS), "--raise-on-rank", "1")
    assert done.returncode == 3, done.stdout + done.stderr
    assert report["status"] == "error"
    # The cause, not its echo: rank 0 fails next, inside its collective, once rank 1 is gone.
    assert report["exception"] == "rank 1: RuntimeError: rank 1 gave up"
    assert "rank 1 gave up" in done.stderr + done.stdout


def test_ranks_the_script_spawns_are_followed(tmp_path):
    done, report, _ = check_job(tmp_path, F + "spawn_ranks.py", "--steps", "2", "--no-sampler")
    assert done.returncode == 1, done.stdout + done.stderr
    assert (report["status"], report["world_size"], report["steps"]) == ("finished", 2, 4)
    assert sorted((c["rank"], c["step"]) for c in report["calls"]) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [f["code"] for f in report["findings"] if f["severity"] == "error"] == ["same-batch-across-ranks"]
    assert "spawned ranks done" in done.stdout


def test_lightning_ddp_ranks_are_followed(tmp_path):
    """Lightning's ddp strategy starts rank 1 by running the script again: under a plain
    `cossim-tui check script.py` both ranks are inspected, the script's own process as rank 0."""
    pytest.importorskip("pytorch_lightning", reason="the [integrations] extra is not installed")
    done, report, _ = check_job(tmp_path, F + "lightning_ddp.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (report["status"], report["world_size"], report["steps"]) == ("finished", 2, 6)
    assert sorted((c["rank"], c["step"]) for c in report["calls"]) == [(r, s) for r in (0, 1) for s in range(3)]
    assert "rank 0 done" in done.stdout and "rank 1 done" in done.stdout


def _identities(output: str) -> list[dict]:
    import json

    return sorted((json.loads(line.split(" ", 1)[1]) for line in output.splitlines() if line.startswith("identity ")), key=lambda i: i["env"]["RANK"])


def test_each_rank_sees_what_it_sees_under_torchrun(tmp_path):
    """argv, __main__, sys.path[0], the working directory, -u (stdout writing through) and the environment of each rank are
    torchrun's own (cossim-tui's channel and secret are gone before the script's first line)."""
    script = [F + "job_identity.py", "--lr", "0.1"]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TORCHELASTIC", "COSSIM_TUI"))}
    plain = subprocess.run([sys.executable, "-m", "torch.distributed.run", *TORCHRUN[1:], *script], cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
    done, _, _ = check_job(tmp_path, *TORCHRUN, *script, env=env)
    assert plain.returncode == 0 and done.returncode == 0, plain.stderr + done.stdout + done.stderr
    expected, seen = _identities(plain.stdout), _identities(done.stdout)
    assert len(expected) == len(seen) == 2
    assert seen == expected
    assert seen[0]["argv"] == [F + "job_identity.py", "--lr", "0.1"] and seen[0]["name"] == "__main__"


def test_torchrun_options_that_bypass_python_are_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cossim_tui", "check", "torchrun", "--no-python", "--standalone", DDP],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "--no-python" in done.stderr and "leave it out" in done.stderr


def test_a_bad_torchrun_option_is_torchruns_message_before_anything_starts():
    """torchrun's own parser reads its options, in torchrun's process: its usage and message,
    status 2, no traceback; and the command itself never imported torch (``-X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cossim_tui", "check", "torchrun", "--standalone", "--bogus", DDP],
        cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    said = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert said[0].startswith("usage: cossim-tui torchrun ") and said[-1] == "cossim-tui torchrun: error: unrecognized arguments: --bogus"
    assert "Traceback" not in done.stderr and done.stdout == ""
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "cossim_tui.cli" in imported and not [name for name in imported if name.split(".")[0] == "torch"]


@pytest.mark.parametrize("spelling", [["torchrun"], ["-m", "torch.distributed.run"]])
def test_a_missing_script_under_torchrun_ends_before_the_screen(capsys, monkeypatch, spelling):
    """One line and status 2, as for a plain script, and no screen: torchrun's process found
    no script, and nothing of the job was started."""
    from cossim_tui import cli

    monkeypatch.chdir(REPO)
    try:
        status = cli.main([*spelling, "--standalone", "--nproc-per-node", "2", F + "missing.py", "--steps", "1"])
    except SystemExit as exited:
        status = exited.code
    out, err = capsys.readouterr()
    assert (status, out, err) == (2, "", f"cossim-tui: error: script not found: {F}missing.py\n")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now (all held open while they are chosen, so that the system
    cannot hand the same one out twice)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def two_nodes(folder, *, same_token: bool) -> tuple[subprocess.CompletedProcess, dict, subprocess.CompletedProcess]:
    """Two launches of ``torchrun --nnodes 2`` on this machine, their partners gathered without
    their gradient: node 0's `check` listens (its result, and its report where the token is the
    same), node 1 connects (its result); ``same_token``: node 1 has the job's COSSIM_TUI_TOKEN,
    else another. Both have ended, with nothing of them left behind."""
    (listen, rendezvous), tag = _free_ports(2), uuid.uuid4().hex
    nodes = ["--nnodes", "2", "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(rendezvous)]
    script = [DDP, "--steps", "2", "--gather", "plain", "--tag", tag]
    env = {**os.environ, "COSSIM_TUI_TOKEN": "s3cret"}
    report = folder / "job.json"
    screen = subprocess.Popen(
        [sys.executable, "-m", "cossim_tui", "check", "--json", str(report), "--listen", f"127.0.0.1:{listen}", "torchrun", *nodes, "--node-rank", "0", *script],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    other = {**env, "COSSIM_TUI_TOKEN": "s3cret" if same_token else "guess"}
    node = subprocess.Popen(
        [sys.executable, "-m", "cossim_tui", "--connect", f"127.0.0.1:{listen}", "torchrun", *nodes, "--node-rank", "1", *script],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=other,
    )
    try:
        node_out, node_err = node.communicate(timeout=240)
        if same_token and node.returncode == 0:
            out, err = screen.communicate(timeout=240)
        else:
            # Node 0's rank waits for a peer that is gone: the test ends the job it started.
            screen.terminate()
            out, err = screen.communicate(timeout=60)
    finally:
        for process in (screen, node):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert processes_mentioning(tag) == []
    data = load_report(report) if same_token and (screen.returncode, node.returncode) == (0, 0) else {}
    return (
        subprocess.CompletedProcess(screen.args, screen.returncode, out, err),
        data,
        subprocess.CompletedProcess(node.args, node.returncode, node_out, node_err),
    )


@pytest.fixture(scope="module")
def two_nodes_met(tmp_path_factory):
    return two_nodes(tmp_path_factory.mktemp("two-nodes"), same_token=True)


@pytest.mark.parametrize("same_token", [pytest.param(True, marks=TWO_NODES), False])
def test_two_nodes_meet_on_one_screen_only_with_the_token(request, tmp_path, same_token):
    """Two nodes on this machine: node 0's `check` listens; node 1 connects. With another token
    node 1's rank is refused before anything it sends is read."""
    screen, data, node = request.getfixturevalue("two_nodes_met") if same_token else two_nodes(tmp_path, same_token=False)
    if same_token:
        assert (screen.returncode, node.returncode) == (0, 0), screen.stdout + screen.stderr + node.stdout + node.stderr
        assert sorted((c["rank"], c["step"]) for c in data["calls"]) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert data["world_size"] == 2
    else:
        assert node.returncode != 0
        assert "refused" in node.stderr
        assert "did not prove the job's COSSIM_TUI_TOKEN" in screen.stderr


def _line(text: str) -> int:
    lines = (REPO / DDP).read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)
