"""A fake run for the TUI tests: a queue the test feeds, and realistic captured steps.

``FakeSource`` satisfies ``session.events.EventSource`` the way ``launcher.Run`` does, but its
events come from the test (``feed``) and the commands the app sends are recorded. The step
factory builds the article's case: at step 0 the partner *is* the anchor; at step 1 it is
step 0's anchor, detached.
"""

from __future__ import annotations

import msgspec.structs
import queue
from collections.abc import Iterator
from typing import Any

import pytest

from cossim_tui import protocol
from cossim_tui.session.events import ChannelProblem, OutputReceived, ScriptExited
from cossim_tui.session.events import Command, RunEvent

_END = object()


class FakeSource:
    """An ``EventSource`` fed from a queue by the test."""

    def __init__(self, target_name: str = "train.py") -> None:
        self.target_name = target_name
        self._queue: queue.Queue[Any] = queue.Queue()
        self.sent: list[Command] = []
        self.terminated = False

    def feed(self, *events: RunEvent) -> None:
        for event in events:
            self._queue.put(event)

    def events(self) -> Iterator[RunEvent]:
        while True:
            event = self._queue.get()
            if event is _END:
                return
            yield event
            if isinstance(event, ScriptExited):
                return

    def send(self, message: Command) -> None:
        self.sent.append(message)

    def terminate(self) -> None:
        self.terminated = True
        self._queue.put(_END)

    def close(self) -> None:
        """Let the app's reader thread end, whatever the test did."""
        self._queue.put(_END)


@pytest.fixture
def source() -> Iterator[FakeSource]:
    fake = FakeSource()
    yield fake
    fake.close()


# --------------------------------------------------------------------------------------
# Realistic steps
# --------------------------------------------------------------------------------------

TRAIN_LINES = [
    "    for i, (image1, label1) in enumerate(train_loader):",
    "        vector1_tensor = model(image1)",
    "        if i == 0:",
    "            image2, label2, vector2_tensor = image1, label1, vector1_tensor",
    "        similarity = F.cosine_similarity(vector1_tensor, vector2_tensor, dim=-1)",
    "        cost = bce(torch.sigmoid(similarity), target)",
    "        optimizer.zero_grad()",
    "        cost.backward()",
    "        optimizer.step()",
    "        vector2_tensor = vector1_tensor.detach()",
]
CALL_LINE = 42
FIRST_LINE = 38

PREVIEW_STEP0 = [0.3121, -1.204, 0.8834, 0.0472, -0.5566, 1.731, -0.2213, 0.6409]
PREVIEW_STEP1 = [0.2987, -1.187, 0.9012, 0.0391, -0.5702, 1.702, -0.2301, 0.6533]


def call_site() -> protocol.CallSite:
    return protocol.CallSite(
        path="train.py",
        line=CALL_LINE,
        function="train",
        first_line=FIRST_LINE,
        lines=list(TRAIN_LINES),
        call_start=CALL_LINE,
        call_end=CALL_LINE,
    )


def tensor(
    expr: str,
    *,
    grad_fn: str | None = "AddmmBackward0",
    requires_grad: bool = True,
    ptr: int = 0x7F3A2C001000,
    preview: list[float] | None = None,
    norm: float = 5.657,
    nan: int = 0,
    made_by: protocol.ModuleCall | None = None,
) -> protocol.TensorSummary:
    return protocol.TensorSummary(
        expr=expr,
        shape=[1, 32],
        dtype="float32",
        device="cpu",
        layout="torch.strided",
        numel=32,
        requires_grad=requires_grad,
        grad_fn=grad_fn,
        is_leaf=grad_fn is None,
        norm=protocol.Spread(norm, norm, norm),
        rows=1,
        stats=protocol.ValueStats(min=-1.204, max=1.731, mean=0.0821, std=0.9977),
        nan=nan,
        inf=0,
        preview=list(preview if preview is not None else PREVIEW_STEP0),
        storage=protocol.StorageInfo(ptr=ptr, offset=0, strides=[32, 1], element_size=4, span=[ptr, ptr + 128]),
        made_by=made_by,
    )


def similarity(value: float, angle: float) -> protocol.Similarity:
    return protocol.Similarity(
        count=1, min=value, mean=value, max=value, first=[value], angle_deg=protocol.Spread(angle, angle, angle)
    )


def finding(
    code: str, severity: str, message: str, step: int, *evidence: str, site: str = f"train.py:{CALL_LINE}"
) -> protocol.Finding:
    """A finding as the judge makes it; ``evidence`` names the fields that prove it (``relation.same_object``)."""
    return protocol.Finding(
        code=code, severity=severity, message=message, site=site, step=step, evidence=list(evidence)  # type: ignore[arg-type]
    )


def step0(*, paused: bool = True) -> protocol.StepCaptured:
    """The first batch: ``vector2_tensor`` is ``vector1_tensor``, the same object."""
    made_by = protocol.ModuleCall(module="VGG", call=0, step=0)
    return protocol.StepCaptured(
        step=0,
        function="cosine_similarity",
        site=call_site(),
        args=[tensor("vector1_tensor", made_by=made_by), tensor("vector2_tensor", made_by=made_by)],
        relation=protocol.Relation(
            same_object=True,
            shares_storage=True,
            equal_values=True,
            max_abs_diff=0.0,
            dim=-1,
            dim_size=32,
            broadcast_shape=None,
        ),
        cos=similarity(1.0, 0.0),
        error=None,
        findings=[
            finding(
                "same-object",
                "error",
                "vector1_tensor and vector2_tensor are the same tensor object",
                0,
                "relation.same_object",
            ),
        ],
        context={"epoch": 0, "batch": 0, "loss": 0.6931, "lr": 0.01},
        paused=paused,
    )


def step1(*, paused: bool = True, step: int = 1, mean: float = 0.9993) -> protocol.StepCaptured:
    """The next batch: the partner is step 0's anchor, detached; no storage shared now."""
    return protocol.StepCaptured(
        step=step,
        function="cosine_similarity",
        site=call_site(),
        args=[
            tensor(
                "vector1_tensor",
                ptr=0x7F3A2C003000,
                preview=PREVIEW_STEP1,
                norm=5.702,
                made_by=protocol.ModuleCall(module="VGG", call=1, step=1),
            ),
            tensor(
                "vector2_tensor",
                grad_fn=None,
                requires_grad=False,
                made_by=protocol.ModuleCall(module="VGG", call=0, step=0),
            ),
        ],
        relation=protocol.Relation(
            same_object=False,
            shares_storage=False,
            equal_values=False,
            max_abs_diff=0.0382,
            dim=-1,
            dim_size=32,
            broadcast_shape=None,
        ),
        cos=similarity(mean, 2.142),
        error=None,
        findings=[
            finding(
                "stale-partner",
                "error",
                "vector2_tensor is step 0's vector1_tensor (same memory), recycled from the previous batch",
                step,
                "args.1",
            ),
            finding(
                "detached-partner",
                "info",
                "vector1_tensor carries autograd history (AddmmBackward0), vector2_tensor does not",
                step,
                "args.grad_fn",
            ),
        ],
        context={"epoch": 0, "batch": 1, "loss": 0.6904, "lr": 0.01},
        paused=paused,
    )


def error_step(step: int = 2) -> protocol.StepCaptured:
    """torch raised: the shapes do not broadcast."""
    return protocol.StepCaptured(
        step=step,
        function="cosine_similarity",
        site=call_site(),
        args=[tensor("vector1_tensor"), tensor("vector2_tensor")],
        relation=None,
        cos=None,
        error=(
            "RuntimeError: The size of tensor a (32) must match the size of tensor b (16) "
            "at non-singleton dimension 1"
        ),
        findings=[],
        context={"epoch": 0, "batch": 2},
        paused=True,
    )


EVAL_SITE = "eval.py:7"
EVAL_LINES = [
    "    for batch in val_loader:",
    "        z = model(batch)",
    "        score = F.cosine_similarity(z, z, dim=-1).mean()",
    "        scores.append(score.item())",
]


def eval_step(step: int, *, paused: bool = False) -> protocol.StepCaptured:
    """A second call site: an evaluation loop that compares ``z`` with itself."""
    site = protocol.CallSite(
        path="eval.py", line=7, function="evaluate", first_line=5, lines=list(EVAL_LINES), call_start=7, call_end=7
    )
    same = finding("same-object", "error", "z and z are the same tensor object", step, "relation.same_object", site=EVAL_SITE)
    pair = step0(paused=paused)
    pair.args = [msgspec.structs.replace(pair.args[0], expr="z"), msgspec.structs.replace(pair.args[1], expr="z")]
    return msgspec.structs.replace(pair, step=step, site=site, findings=[same], context={"epoch": 0, "batch": step})


def two_sites(count: int) -> list[protocol.StepCaptured]:
    """``count`` steps from two call sites, the last one paused.

    Every third step (0, 3, 6, …) is at eval.py:7 (same-object); the others are at train.py:42
    (stale-partner and detached-partner).
    """
    steps = [
        eval_step(i) if i % 3 == 0 else step1(paused=False, step=i, mean=0.99 + i * 1e-4) for i in range(count)
    ]
    steps[-1].paused = True
    return steps


def hello() -> protocol.Hello:
    return protocol.Hello(pid=4242, python="3.11.7", target="train.py", argv=["train.py"])


def output(text: str) -> OutputReceived:
    return OutputReceived(text)


def problem(reason: str) -> ChannelProblem:
    return ChannelProblem(reason)


def exited(
    status: str = "finished", exit_code: int | None = 0, signal: int | None = None, exception: str | None = None
) -> ScriptExited:
    return ScriptExited(status, exit_code, signal, exception)  # type: ignore[arg-type]


class Make:
    """The builders above, handed to tests by the ``make`` fixture (test modules never import conftest)."""

    call_site = staticmethod(call_site)
    tensor = staticmethod(tensor)
    finding = staticmethod(finding)
    step0 = staticmethod(step0)
    step1 = staticmethod(step1)
    error_step = staticmethod(error_step)
    eval_step = staticmethod(eval_step)
    two_sites = staticmethod(two_sites)
    hello = staticmethod(hello)
    output = staticmethod(output)
    problem = staticmethod(problem)
    exited = staticmethod(exited)


@pytest.fixture
def make() -> Make:
    return Make()
