"""Steps and tensor summaries made by hand, for tests that feed the report, the trace, the break
condition or the pictures without running torch: one set of builders, with the defaults a small
plain call has, so that each test spells out only what it is about.

``stale_step`` (with ``nan_step`` and ``error_step``) is a realistic step, the article's recycled
partner at ``train.py:42``: the trace and the report tests replay it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cossim_tui import protocol


def tensor(
    expr: str = "a",
    shape: Sequence[int] = (4, 32),
    *,
    grad_fn: str | None = None,
    requires_grad: bool | None = None,
    layout: str = "torch.strided",
    norm: protocol.Spread | None = None,
    stats: protocol.ValueStats | None = None,
    nan: int = 0,
    inf: int = 0,
    preview: Sequence[float] = (),
    storage: protocol.StorageInfo | None = None,
    made_by: protocol.ModuleCall | None = None,
    **more: Any,
) -> protocol.TensorSummary:
    """A float32 CPU tensor's summary; ``requires_grad`` follows ``grad_fn`` unless given."""
    return protocol.TensorSummary(
        expr=expr,
        shape=list(shape),
        dtype=more.pop("dtype", "float32"),
        device=more.pop("device", "cpu"),
        layout=layout,
        numel=math.prod(shape),
        requires_grad=grad_fn is not None if requires_grad is None else requires_grad,
        grad_fn=grad_fn,
        is_leaf=grad_fn is None,
        norm=norm,
        rows=math.prod(shape[:-1]) if len(shape) else 1,
        stats=stats,
        nan=nan,
        inf=inf,
        preview=list(preview),
        storage=storage,
        made_by=made_by,
        **more,
    )


def site(
    path: str = "train.py", line: int = 42, function: str = "train", *, first_line: int | None = None, lines: Sequence[str] = ()
) -> protocol.CallSite:
    """The call at ``path:line``, one line long; ``lines`` the source shown from ``first_line``."""
    return protocol.CallSite(
        path=path, line=line, function=function, first_line=line if first_line is None else first_line,
        lines=list(lines), call_start=line, call_end=line,
    )


def step(
    number: int = 0,
    args: Sequence[protocol.TensorSummary] = (),
    *,
    at: protocol.CallSite | None = None,
    function: str = "cosine_similarity",
    relation: protocol.Relation | None = None,
    cos: protocol.Similarity | None = None,
    error: str | None = None,
    findings: Sequence[protocol.Finding] = (),
    context: dict[str, float] | None = None,
    paused: bool = False,
    **more: Any,
) -> protocol.StepCaptured:
    """Step ``number`` of a call at ``at`` (``site()`` if not given)."""
    return protocol.StepCaptured(
        step=number,
        function=function,
        site=site() if at is None else at,
        args=list(args),
        relation=relation,
        cos=cos,
        error=error,
        findings=list(findings),
        context={} if context is None else context,
        paused=paused,
        **more,
    )


# -- the article's stale-partner loop -------------------------------------------------------

LINES = [
    "    for i, (image1, label1) in enumerate(train_loader):",
    "        vector1_tensor = model(image1)",
    "        similarity = F.cosine_similarity(vector1_tensor, vector2_tensor, dim=-1)",
    "        vector2_tensor = vector1_tensor.detach()",
]


def article_tensor(expr: str, ptr: int, *, grad_fn: str | None, made_by: protocol.ModuleCall | None, nan: int = 0) -> protocol.TensorSummary:
    return tensor(
        expr,
        (4, 32),
        grad_fn=grad_fn,
        norm=protocol.Spread(5.41, 5.657, 5.93),
        stats=protocol.ValueStats(min=-1.204, max=1.731, mean=0.0821, std=0.9977),
        nan=nan,
        preview=[0.3121, -1.204, 0.8834, 0.0472, -0.5566, 1.731, -0.2213, 0.6409],
        storage=protocol.StorageInfo(ptr=ptr, offset=0, strides=[32, 1], element_size=4, span=[ptr, ptr + 512]),
        made_by=made_by,
    )


def article_site() -> protocol.CallSite:
    return site("train.py", 42, "train", first_line=40, lines=LINES)


def stale_step(number: int, *, paused: bool = True, mean: float = 0.9993) -> protocol.StepCaptured:
    """Step ``number`` of the loop: ``vector2_tensor`` is step 0's ``vector1_tensor``, detached."""
    return step(
        number,
        [
            article_tensor("vector1_tensor", 0x7F3A2C003000 + number * 4096, grad_fn="AddmmBackward0",
                           made_by=protocol.ModuleCall(module="VGG", call=number, step=number)),
            article_tensor("vector2_tensor", 0x7F3A2C001000, grad_fn=None, made_by=protocol.ModuleCall(module="VGG", call=0, step=0)),
        ],
        at=article_site(),
        relation=protocol.Relation(
            same_object=False, shares_storage=False, equal_values=False, max_abs_diff=0.0382, dim=-1, dim_size=32, broadcast_shape=None
        ),
        cos=protocol.Similarity(count=4, min=0.9981, mean=mean, max=0.9999, first=[0.9981, 0.9993, 0.9999, 0.9990],
                                angle_deg=protocol.Spread(0.81, 2.142, 3.5)),
        findings=[
            protocol.Finding("stale-partner", "error", "vector2_tensor is step 0's vector1_tensor (same memory), recycled",
                             "train.py:42", number, ["args.1.storage.ptr"]),
            protocol.Finding("detached-partner", "info", "vector1_tensor carries autograd history, vector2_tensor does not",
                             "train.py:42", number, ["args.1.grad_fn"], muted=True),
        ],
        context={"epoch": 0.0, "batch": float(number), "loss": 0.6904, "lr": 0.01},
        paused=paused,
        label=None,
        wall_time=1712345678.25 + number,
    )


def nan_step(number: int) -> protocol.StepCaptured:
    """NaN and Inf in the similarity: exactly what a user replays a trace to look at again."""
    made = stale_step(number)
    made.args[0] = article_tensor("logits", 0x7F00, grad_fn="DivBackward0", made_by=None, nan=3)
    made.cos = protocol.Similarity(
        count=4, min=math.nan, mean=math.nan, max=math.inf, first=[math.nan, 1.0], angle_deg=protocol.Spread(math.nan, math.nan, 0.0), nan=2
    )
    made.findings = [protocol.Finding("non-finite", "error", "logits holds 3 NaN", "train.py:42", number, ["args.0.nan"])]
    return made


def error_step(number: int) -> protocol.StepCaptured:
    """torch raised at this call: no relation, no similarity."""
    made = stale_step(number)
    made.relation, made.cos, made.findings = None, None, []
    made.error = "RuntimeError: The size of tensor a (32) must match the size of tensor b (16) at non-singleton dimension 1"
    made.label = "probe: contrastive head"
    return made


# -- a job's ranks ----------------------------------------------------------------------------


def rank_arg(expr: str, mean: float, first: float = 0.5) -> protocol.TensorSummary:
    """A (8, 16) argument whose summary is set by ``mean`` (equal means: equal summaries)."""
    return tensor(
        expr, (8, 16), grad_fn="AddmmBackward0",
        norm=protocol.Spread(min=0.5, mean=1.0, max=1.5),
        stats=protocol.ValueStats(min=-1.0, max=1.0, mean=mean, std=0.3),
        preview=[first, 0.25, -0.125],
    )


def rank_step(rank: int, number: int, mean: float, *, paused: bool = False) -> protocol.StepCaptured:
    """Step ``number`` of ``rank`` in a job, its two arguments set by ``mean``."""
    return step(number, [rank_arg("anchor", mean), rank_arg("partner", -mean)], rank=rank, paused=paused)


def rank_hello(rank: int, world_size: int = 2) -> protocol.Hello:
    return protocol.Hello(pid=1, python="3.11", target="train.py", argv=["train.py"], rank=rank, world_size=world_size, host="node")
