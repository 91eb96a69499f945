"""The script's output reaches the caller complete and in order, however much there is."""

from __future__ import annotations

from integration.live import FIXTURES, run_plain


def test_stdout_and_stderr_arrive_in_order(start_run):
    live = start_run(FIXTURES / "output_order.py")
    exited = live.wait_exit()

    assert (exited.status, exited.exit_code) == ("finished", 0)
    expected = "".join(f"out {i} ✓\nerr {i} ünïcödé\n" for i in range(5))
    expected += "partial line\nthe end, no newline"
    assert live.output == expected


def test_output_matches_plain_python(start_run):
    """Under plain python stdout is block-buffered in a pipe; the text itself is the same."""
    script = FIXTURES / "output_order.py"
    plain = run_plain([str(script)]).stdout
    live = start_run(script)
    live.wait_exit()
    assert sorted(live.output.splitlines()) == sorted(plain.splitlines())


def test_five_megabytes_of_output_do_not_deadlock(start_run):
    live = start_run(FIXTURES / "big_output.py")
    exited = live.wait_exit(timeout=60)

    assert (exited.status, exited.exit_code) == ("finished", 0)
    output = live.output
    assert output.count("x" * 99 + "\n") == 50_000
    assert output.endswith("stderr is read too\nbig output done\n")
    assert len(output) == 50_000 * 100 + len("stderr is read too\nbig output done\n")
