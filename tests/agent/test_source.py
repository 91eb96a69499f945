"""Call sites name the tensors the way the user wrote them: ``source.site_of`` +
``source.argument_names`` turn the frame of a cosine call into the source expressions shown
in every finding message and next to every tensor summary (``vector1_tensor``, ``self.memory``),
find the lines a multi-line call spans, and fall back to ``arg0``/``arg1`` when the source
cannot be read. ``display_path`` names the file as the user would."""

from __future__ import annotations

import ast
import linecache
import os
import sys
import textwrap
from pathlib import Path

import pytest

from cossim_tui.agent import source

# The script under test calls ``cs``/``F.cosine_similarity``; like the real interceptor, the fake
# resolves the call site while the caller's frame is still executing the call.
FAKE_TORCH = """
import sys as _sys

SITES = []

def cs(x1=None, x2=None, dim=1, eps=1e-8):
    frame = _sys._getframe(1)
    site = _source.site_of(frame)
    SITES.append((site, _source.argument_names(site, ("x1", "x2"))))
    return 0.0

class F:
    cosine_similarity = staticmethod(cs)
"""


def run_script(path: Path, body: str, filename: str | None = None) -> list[tuple[source.SiteInfo, tuple[str, str]]]:
    """Write ``body`` to ``path``, run it as a script would run, return the sites it reached."""
    text = FAKE_TORCH + textwrap.dedent(body)
    path.write_text(text)
    namespace: dict = {"_source": source, "__name__": "__main__"}
    exec(compile(text, filename or str(path), "exec"), namespace)
    return namespace["SITES"]


def line_of(path: Path, needle: str, occurrence: int = 0) -> int:
    numbers = [i for i, text in enumerate(path.read_text().splitlines(), start=1) if needle in text]
    return numbers[occurrence]


def test_simple_call_names_both_tensors(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    (site, names), = run_script(
        script,
        """
        def train_step(vector1_tensor, vector2_tensor):
            return F.cosine_similarity(vector1_tensor, vector2_tensor, dim=-1)

        train_step(1, 2)
        """,
    )
    assert names == ("vector1_tensor", "vector2_tensor")
    line = line_of(script, "F.cosine_similarity(vector1_tensor")
    assert (site.line, site.call_start, site.call_end) == (line, line, line)
    assert site.function == "train_step"
    assert dict(site.keywords)["dim"] == "-1"


def test_call_spread_over_three_lines(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    (site, names), = run_script(
        script,
        """
        def train_step(query_embedding, key_embedding):
            similarity = F.cosine_similarity(
                query_embedding,
                key_embedding, dim=-1,
            )
            return similarity

        train_step(1, 2)
        """,
    )
    assert names == ("query_embedding", "key_embedding")
    start = line_of(script, "similarity = F.cosine_similarity(")
    assert (site.call_start, site.call_end) == (start, start + 3)
    assert start <= site.line <= start + 3
    first, lines = source.source_lines(str(script), site)
    shown = "\n".join(lines)
    assert "query_embedding," in shown and "key_embedding, dim=-1," in shown
    assert first <= start and first + len(lines) - 1 >= start + 3


def test_keyword_arguments(tmp_path: Path) -> None:
    (site, names), = run_script(tmp_path / "t.py", "anchor, positive = 1, 2\nF.cosine_similarity(x1=anchor, x2=positive)\n")
    assert names == ("anchor", "positive")
    assert site.exprs == ()


def test_keyword_order_does_not_matter(tmp_path: Path) -> None:
    (_, names), = run_script(tmp_path / "t.py", "anchor, positive = 1, 2\nF.cosine_similarity(x2=positive, x1=anchor)\n")
    assert names == ("anchor", "positive")


def test_positional_then_keyword(tmp_path: Path) -> None:
    (_, names), = run_script(tmp_path / "t.py", "anchor, positive = 1, 2\ncs(anchor, x2=positive, dim=0)\n")
    assert names == ("anchor", "positive")


def test_alias_bound_by_the_script(tmp_path: Path) -> None:
    (_, names), = run_script(
        tmp_path / "t.py",
        """
        similarity = F.cosine_similarity
        z1, z2 = 1, 2
        similarity(z1, z2)
        """,
    )
    assert names == ("z1", "z2")


def test_two_calls_on_one_line_each_get_their_own_arguments(tmp_path: Path) -> None:
    script = tmp_path / "t.py"
    sites = run_script(script, "a, b, c, d = 1, 2, 3, 4\nloss = cs(a, b) - cs(c, d)\n")
    assert [names for _, names in sites] == [("a", "b"), ("c", "d")]
    line = line_of(script, "loss = cs(a, b)")
    assert [s.line for s, _ in sites] == [line, line]


def test_nested_call_names_the_outer_arguments(tmp_path: Path) -> None:
    sites = run_script(tmp_path / "t.py", "a, b, c = 1, 2, 3\ncs(cs(a, b), c)\n")
    assert [names for _, names in sites] == [("a", "b"), ("cs(a, b)", "c")]


def test_method_call_through_a_module_attribute(tmp_path: Path) -> None:
    (site, names), = run_script(
        tmp_path / "t.py",
        """
        class MemoryBankHead:
            def __init__(self):
                self.cos = cs
                self.memory = 0

            def forward(self, z):
                return self.cos(z, self.memory)

        MemoryBankHead().forward(1)
        """,
    )
    assert names == ("z", "self.memory")
    assert site.function == "MemoryBankHead.forward"


def test_attribute_and_subscript_expressions(tmp_path: Path) -> None:
    (_, names), = run_script(
        tmp_path / "t.py",
        """
        class T:
            def float(self):
                return self
        out = [T()]
        key = "emb"
        batch = {key: T()}
        cs(out[0], batch[key].float())
        """,
    )
    assert names == ("out[0]", "batch[key].float()")


def test_expressions_are_shown_as_written(tmp_path: Path) -> None:
    (_, names), = run_script(
        tmp_path / "t.py",
        """
        class T:
            def float(self):
                return self
        out = [T()]
        batch = {"emb": T()}
        cs(out[0], batch["emb"].float())
        """,
    )
    assert names == ("out[0]", 'batch["emb"].float()')


def test_unreadable_source_falls_back_to_arg0_arg1(tmp_path: Path) -> None:
    ghost = tmp_path / "deleted_before_the_run.py"
    sites = run_script(tmp_path / "written.py", "anchor, positive = 1, 2\ncs(anchor, positive)\n", filename=str(ghost))
    (site, names), = sites
    assert not ghost.exists()
    assert names == ("arg0", "arg1")
    assert site.line == FAKE_TORCH.count("\n") + 2
    assert source.source_lines(str(ghost), site) == (site.line, [])


def test_only_one_argument_known_falls_back_for_the_other(tmp_path: Path) -> None:
    (_, names), = run_script(tmp_path / "t.py", "pair = (1, 2)\ncs(*pair)\n")
    assert names[1] == "arg1"


def test_display_path_inside_the_working_directory_is_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "experiments" / "train.py"
    assert source.display_path(str(inside)) == os.path.join("experiments", "train.py")


def test_display_path_outside_the_working_directory_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    outside = tmp_path / "library" / "losses.py"
    assert source.display_path(str(outside)) == str(outside)


def test_site_path_is_what_the_user_would_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (site, _), = run_script(tmp_path / "train.py", "online, target = 1, 2\ncs(online, target)\n")
    assert site.path == "train.py"


def test_identical_helpers_in_two_files_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two heads copied from one template: the same helper at the same line, in different files.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "heads").mkdir()
    helper = """
        def similarity(z, memory):
            return F.cosine_similarity(z, memory, dim=-1)

        similarity(1, 2)
        """
    (simclr, _), = run_script(tmp_path / "heads" / "simclr.py", helper)
    (byol, _), = run_script(tmp_path / "heads" / "byol.py", helper)
    assert simclr.path == os.path.join("heads", "simclr.py")
    assert byol.path == os.path.join("heads", "byol.py")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="co_positions is 3.11+")
def test_same_code_object_different_calls_are_not_confused(tmp_path: Path) -> None:
    sites = run_script(
        tmp_path / "t.py",
        """
        def step(online, target, memory):
            cs(online, target)
            cs(online, memory)

        for _ in range(2):
            step(1, 2, 3)
        """,
    )
    assert [names for _, names in sites] == [("online", "target"), ("online", "memory")] * 2


# Non-ASCII names and text before and inside arguments (column offsets count UTF-8 bytes),
# arguments spread over lines, CRLF and lone CR line ends, and a form feed (which ends no line
# for the parser, though str.splitlines ends one there).
TRICKY_SOURCE = (
    "ém = {'ü': 1}\r\n"
    "cs(ém['ü'] +\r\n"
    "   ém['ü'], 'naïve ✓')\r\n"
    "\x0ccs(1, (2,\r"
    "  3))\n"
    "cs('é', [\n"
    "    'straße',\n"
    "])\n"
    "cs(x1=[\n"
    "    1,\n"
    "], x2=ém)\n"
)


def _arguments_read_both_ways(filename: str) -> list[tuple[str | None, str]]:
    """Each call argument in ``filename`` as ``source`` reads it, and as ast does (line ends as
    the parser counts them)."""
    parsed = source._calls_in(filename)
    assert parsed is not None
    calls, lines = parsed
    text = "".join(linecache.getlines(filename))
    read = []
    for call in calls.values():
        for node in [*call.args, *(keyword.value for keyword in call.keywords)]:
            expected = ast.get_source_segment(text, node)
            assert expected is not None
            read.append((source._source_text(lines, node), expected.replace("\r\n", "\n").replace("\r", "\n")))
    return read


def test_arguments_are_read_as_ast_reads_them_across_lines_and_encodings(tmp_path: Path) -> None:
    path = tmp_path / "t.py"
    path.write_bytes(TRICKY_SOURCE.encode())
    read = _arguments_read_both_ways(str(path))
    assert len(read) == 8
    for got, expected in read:
        assert got == expected


def test_arguments_are_read_as_ast_reads_them_with_the_line_ends_kept() -> None:
    # A file read from disk reaches linecache with its line ends made \n; source a loader gave
    # (or that linecache was handed) keeps \r\n and \r, which the parser ends lines at too.
    name = "<cossim-tui test: line ends kept>"
    linecache.cache[name] = (len(TRICKY_SOURCE), None, TRICKY_SOURCE.splitlines(keepends=True), name)
    try:
        assert "\r" in "".join(linecache.getlines(name))
        read = _arguments_read_both_ways(name)
    finally:
        del linecache.cache[name]
    assert len(read) == 8
    for got, expected in read:
        assert got == expected
