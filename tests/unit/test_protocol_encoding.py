"""What the fast writers of ``protocol.encode`` must never change: a message is written exactly as
the generic JSON encoding of its fields writes it, whatever its fields hold (a NaN, an int where
a float is expected, a subclass of str), and a call site, the same object at every call made
there, is written as it is now: never as another site, nor as itself before it changed."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cossim_tui import protocol
from cossim_tui.protocol import (
    CallSite,
    Finding,
    Relation,
    Similarity,
    Spread,
    StepCaptured,
    StorageInfo,
    TensorSummary,
    ValueStats,
)
from reference_encoding import reference_frame

def _site(**changes: Any) -> CallSite:
    site = CallSite(
        path="train.py",
        line=42,
        function="train_epoch",
        first_line=40,
        lines=["    for batch in loader:", "        z = model(batch)", "        sim = F.cosine_similarity(z, z.roll(1), dim=-1)"],
        call_start=42,
        call_end=42,
    )
    return dataclasses.replace(site, **changes)


def _summary(expr: str) -> TensorSummary:
    return TensorSummary(
        expr=expr,
        shape=[8, 64],
        dtype="float32",
        device="cpu",
        layout="strided",
        numel=512,
        requires_grad=True,
        grad_fn="AddmmBackward0",
        is_leaf=False,
        norm=Spread(min=7.325217076377433, mean=7.658502410791509, max=8.669381151245059),
        rows=8,
        stats=ValueStats(min=-2.7854325771331787, max=3.0973734855651855, mean=-0.007374723808879935, std=0.959752361588688),
        nan=0,
        inf=0,
        preview=[0.6656972765922546, 0.8846983909606934, -0.6452186107635498, 1e-07, -3.0, 0.0],
        storage=StorageInfo(ptr=94426025452480, offset=0, strides=[64, 1], element_size=4, span=[94426025452480, 94426025454528]),
    )


def _step(site: CallSite | None = None) -> StepCaptured:
    return StepCaptured(
        step=3,
        function="cosine_similarity",
        site=site or _site(),
        args=[_summary("z"), _summary("z.roll(1)")],
        relation=Relation(False, False, False, 2.75, -1, 64, None),
        cos=Similarity(count=8, min=-0.25, mean=0.125, max=0.5, first=[0.5, -0.25], angle_deg=Spread(60.0, 82.8, 104.5)),
        error=None,
        findings=[Finding("stale-partner", "error", "z.roll(1) is step 2's z", "train.py:42", 3, ["args.1.storage.ptr"])],
        context={"loss": 0.6931471805599453, "epoch": 3},
        paused=False,
        label="epoch 3",
        wall_time=1795684119.1753287,
    )


def test_a_step_is_written_as_the_generic_encoding_writes_it() -> None:
    assert protocol.encode(_step()) == reference_frame(_step())


# --------------------------------------------------------------------------------------
# A call site, written again after it changed
# --------------------------------------------------------------------------------------
# No text is kept from one message to the next now (a cache of the site's text saved ~1 µs of
# a step's ~29, and was dropped): these hold any such saving that comes back to what a site
# holds when it is written.


def _changes() -> list[Any]:
    """One change of each field of a site, made in place after the site was written once."""

    def set_field(name: str, value: Any) -> Any:
        return pytest.param(lambda site: setattr(site, name, value), id=f"{name}={value!r}")

    def on_lines(how: str, change: Any) -> Any:
        return pytest.param(change, id=f"lines.{how}")

    return [
        set_field("path", "eval.py"),
        set_field("line", 43),
        set_field("line", True),  # equal to 1, but written true
        set_field("function", "evaluate"),
        set_field("first_line", 41),
        set_field("call_start", 41),
        set_field("call_end", 44),
        set_field("lines", ["        sim = F.cosine_similarity(z, z.roll(1), dim=-1)"]),
        on_lines("append", lambda site: site.lines.append("        loss = sim.mean()")),
        on_lines("replace", lambda site: site.lines.__setitem__(0, "    for batch in val_loader:")),
        on_lines("pop", lambda site: site.lines.pop()),
        on_lines("replace-with-a-number", lambda site: site.lines.__setitem__(1, 7)),
        on_lines("emptied", lambda site: site.lines.clear()),
    ]


def test_every_field_of_a_site_is_changed_by_one_of_the_changes_below() -> None:
    """A field added to ``CallSite`` gets a change here too, so its text is proven to follow it."""
    changed = {param.id.split("=")[0].split(".")[0] for param in _changes()}
    assert changed == {f.name for f in dataclasses.fields(CallSite)}


@pytest.mark.parametrize("change", _changes())
def test_a_site_changed_after_it_was_written_is_written_anew(change: Any) -> None:
    step = _step()
    before = protocol.encode(step)
    assert protocol.encode(step) == before  # (the same object, written again)
    change(step.site)
    after = protocol.encode(step)
    assert after == reference_frame(step)
    assert after != before


def test_an_equal_site_is_written_from_its_own_values() -> None:
    first, equal = _site(line=1), _site(line=True)
    assert first == equal  # dataclass equality: 1 == True
    protocol.encode(_step(first))
    assert b'"line":true' in protocol.encode(_step(equal))
    assert protocol.encode(_step(equal)) == reference_frame(_step(equal))
    assert b'"line":1,' in protocol.encode(_step(first))


def test_a_site_holding_something_that_can_change_is_written_as_it_is_now() -> None:
    class Text(str):
        pass

    path = ["train.py"]  # (not a string: json writes it as a list, and it can change)
    step = _step(_site(path=path, function=Text("train_epoch")))
    protocol.encode(step)
    path.append("eval.py")
    assert protocol.encode(step) == reference_frame(step)


def test_many_sites_are_each_written_as_themselves() -> None:
    steps = [_step(_site(line=n)) for n in range(200)]
    for _ in range(2):
        for step in steps:
            assert protocol.encode(step) == reference_frame(step)


# --------------------------------------------------------------------------------------
# Values that are not what the annotations say
# --------------------------------------------------------------------------------------


class _Text(str):
    pass


class _Number(float):
    def __repr__(self) -> str:
        return "0.5"  # json writes float.__repr__ of it, never this


class _Code(enum.IntEnum):
    THREE = 3


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.text(max_size=6).map(_Text),
    st.floats(-10, 10).map(_Number),
    st.just(_Code.THREE),
)
# A list of numbers; a bool goes after the first value only, where it cannot decide the packing.
NUMBERS = st.builds(
    lambda first, rest: [first, *rest],
    st.one_of(st.integers(-300, 300), st.floats(allow_nan=True, allow_infinity=True)),
    st.lists(st.one_of(st.integers(0, 255), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True), st.booleans()), max_size=12),
)
SHORT_LISTS = st.lists(SCALARS, max_size=protocol.PACKED - 1)

# Where each kind of value goes: (record in the step, field).
FIELDS = [
    ("step", "step"), ("step", "wall_time"), ("step", "paused"), ("step", "label"), ("step", "function"),
    ("arg", "expr"), ("arg", "numel"), ("arg", "requires_grad"), ("arg", "grad_fn"), ("arg", "nan"),
    ("norm", "min"), ("norm", "max"), ("stats", "std"), ("storage", "ptr"), ("storage", "element_size"),
    ("relation", "equal_values"), ("relation", "max_abs_diff"), ("cos", "count"), ("cos", "mean"),
    ("finding", "severity"), ("finding", "muted"), ("site", "line"), ("site", "path"),
]
NUMBER_LISTS = [
    ("arg", "shape"), ("arg", "preview"), ("arg", "strip"), ("storage", "strides"), ("storage", "span"),
    ("cos", "first"), ("relation", "broadcast_shape"),
]
STRING_LISTS = [("finding", "evidence"), ("site", "lines")]  # (never packed, whatever they hold)


def _record(step: StepCaptured, where: str) -> Any:
    arg = step.args[0]
    return {
        "step": step, "arg": arg, "norm": arg.norm, "stats": arg.stats, "storage": arg.storage,
        "relation": step.relation, "cos": step.cos, "finding": step.findings[0], "site": step.site,
    }[where]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scalars=st.lists(st.tuples(st.sampled_from(FIELDS), SCALARS), max_size=4),
    lists=st.lists(
        st.one_of(st.tuples(st.sampled_from(NUMBER_LISTS), st.one_of(NUMBERS, SHORT_LISTS)), st.tuples(st.sampled_from(STRING_LISTS), SHORT_LISTS)),
        max_size=3,
    ),
    written_before=st.booleans(),
)
def test_any_values_are_written_as_the_generic_encoding_writes_them(scalars: list, lists: list, written_before: bool) -> None:
    step = _step()
    if written_before:
        protocol.encode(step)  # (written once before: the changes below must show)
    for (where, name), value in [*scalars, *lists]:
        setattr(_record(step, where), name, value)
    assert protocol.encode(step) == reference_frame(step)


@pytest.mark.parametrize(
    "numbers",
    [
        pytest.param([1] * 8, id="bytes"),
        pytest.param([255, 0, 1, 2, 3, 4, 5, True], id="bytes-with-a-bool"),
        pytest.param([256] + [1] * 7, id="above-a-byte"),
        pytest.param([-1] * 8, id="negative"),
        pytest.param([2**63] + [1] * 7, id="above-i64"),
        pytest.param([1] * 7 + [1.5], id="a-float-among-ints"),
        pytest.param([1.5] + [1] * 7, id="ints-among-floats"),
        pytest.param([1] * 7 + ["1"], id="a-string"),
        pytest.param([0.25] * 300, id="long-floats"),
    ],
)
def test_long_lists_of_numbers_are_packed_as_the_generic_encoding_packs_them(numbers: list) -> None:
    step = _step()
    step.args[0].shape = numbers
    step.args[1].preview = numbers
    assert protocol.encode(step) == reference_frame(step)
