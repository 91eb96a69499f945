"""Small pairs on the CPU in a free run: copied at the call, summarised later, many calls at once.

A call of two small tensors costs the agent some two dozen tiny torch ops (stack, norms, the
statistics, the comparison, the batch figures, the float64 recomputation), each a few µs of
dispatch for a few hundred values of work. Where nothing can stop at a step and it gets no
pictures (``check``; the TUI running freely, between the steps it pictures), the controller
*parks* such a call instead: what cannot be read later is read at the call (``describe_pair``,
whether its graph is live, provenance and the training context) and its values and result
are copied (``HostCopy``, one ``cat``); the summariser then makes the figures of up to
``summariser.PARKED`` parked calls of one shape with those same ops run once over all of
them (``share_batch``), and each call reads its own ``Share`` in place of the ops it would
have run. Everything after the figures (the summaries, partners, rings, judges, the step
sent) is made call by call, in order, as for any call.

Every figure of a call is a reduction within one of its two arguments, or within its pair:
made over a stack of many calls, it is the same reduction over the same values (``stats_of``
is written for a stack of k), so a call's step is the step it would have had.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cossim_tui.agent.capture import HOST_COPY_LIMIT
from cossim_tui.agent.precision import deviations
from cossim_tui.agent.spread import COLLAPSE_ROWS, batch_statistics, centred_statistics, may_drop
from cossim_tui.agent.summaries import COS_ON_HOST, PREVIEW, stats_of, stats_width


def parkable(x1: Any, x2: Any, result: Any) -> bool:
    """Whether a call's pair can be parked: two small real floating tensors of one shape and
    dtype on the CPU (strided, not meta), with a small result there."""
    return (
        isinstance(x1, torch.Tensor)
        and isinstance(x2, torch.Tensor)
        and isinstance(result, torch.Tensor)
        and x1.is_cpu
        and x2.is_cpu
        and result.is_cpu
        and x1.layout == x2.layout == result.layout == torch.strided
        and x1.shape == x2.shape
        and x1.dtype == x2.dtype
        and 0 < x1.numel() <= HOST_COPY_LIMIT
        and x1.is_floating_point()
        and not x1.is_complex()
        and (result.is_floating_point() and not result.is_complex())
        and result.numel() <= HOST_COPY_LIMIT
    )


class HostCopy:
    """A parked pair's values and its result, copied at the call into one flat tensor (in the
    dtype ``cat`` promotes them to, which holds each exactly): called, it gives them in their own
    shapes, as ``capture.copy_small_pair``'s host copies do."""

    __slots__ = ("flat", "n", "shapes")

    def __init__(self, x1: torch.Tensor, x2: torch.Tensor, result: torch.Tensor) -> None:
        # One op: the three flattened and joined in C++ (``cat`` of three ``reshape``s is four).
        self.flat = _flatten((x1, x2, result))
        self.n = x1.numel()
        # As they are now; plain tuples of ints, which the garbage collector stops tracking.
        self.shapes = (tuple(x1.shape), tuple(x2.shape), tuple(result.shape))

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # One op a view (a slice and a view are two, and cost twice as much).
        flat, n, (first, second, result) = self.flat, self.n, self.shapes
        return (
            flat.as_strided(first, _contiguous(first), 0),
            flat.as_strided(second, _contiguous(second), n),
            flat.as_strided(result, _contiguous(result), 2 * n),
        )


_flatten = torch._C._nn.flatten_dense_tensors
"""Tensors flattened and joined into one (``torch._utils._flatten_dense_tensors``, without its
Python loop), in the dtype ``cat`` promotes them to."""

_STRIDES: dict[tuple[int, ...], tuple[int, ...]] = {}


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The strides of a contiguous tensor of ``shape`` (remembered: a loop's calls have few)."""
    strides = _STRIDES.get(shape)
    if strides is None:
        made, step = [], 1
        for extent in reversed(shape):
            made.append(step)
            step *= max(extent, 1)
        if len(_STRIDES) >= 256:
            _STRIDES.clear()
        strides = _STRIDES[shape] = tuple(reversed(made))
    return strides


@dataclass(slots=True)
class Share:
    """One call's figures, made with a batch of calls': what ``PendingPair`` and the evidence
    read in place of the ops that would make them for this call alone."""

    values: torch.Tensor
    """Both arguments as (2, rows, d), float64 (a view of the batch's stack)."""
    norms: torch.Tensor
    stats: list[float]
    """``stats_of`` of both arguments, as one call's transfer would have fetched them, but for
    each one's sampled values (``samples``)."""
    samples: tuple[bytes, bytes]
    """Each argument's sampled values, as a fingerprint holds them (``summaries.sample_key``)."""
    compare: list[float]
    """Min and max of the second argument minus the first."""
    cos: list[float]
    """The result's values."""
    figures: list[float]
    """``batch_statistics`` of both arguments: per argument, its two figures."""
    unit: torch.Tensor
    """Both arguments' unit rows, (2, rows, d)."""
    deviation: float
    """How far the result is from the float64 recomputation of every row's similarity
    (``precision.deviation``, made for the whole batch at once)."""
    centred: tuple[list[float] | None, list[float] | None]
    """``centred_statistics`` of each argument, where its common-mode drop could reach the
    judge's threshold (``spread.may_drop``): made for all such arguments of the batch at once."""


def _key(call: Any) -> tuple[Any, ...] | None:
    """The calls whose figures can be made together have equal keys; ``None``: made alone
    (its rows along another dim, fewer than 4 rows, one value per row, a result that is not
    one value per row, an error)."""
    copy, x1 = call.host, call.x1
    if not isinstance(copy, HostCopy) or call.error is not None or x1.dim() == 0:
        return None
    ndim = x1.dim()
    if not -ndim <= call.dim < ndim or call.dim not in (-1, ndim - 1):
        return None
    width = x1.shape[-1]
    rows = x1.numel() // width if width else 0
    if rows < 4 or width < 2 or rows > min(COS_ON_HOST, COLLAPSE_ROWS) or call.result.numel() != rows:
        return None
    return (copy.flat.dtype, copy.n, rows, width)


def share_batch(calls: list[Any]) -> None:
    """Give every call that can share (``_key``) its ``Share``, made together with the other
    calls of its shape; the others keep ``share`` ``None`` and are summarised alone."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for call in calls:
        key = _key(call)
        if key is not None:
            groups.setdefault(key, []).append(call)
    for (_, n, rows, width), group in groups.items():
        if len(group) > 1:
            _share(group, n, rows, width)


def _share(group: list[Any], n: int, rows: int, width: int) -> None:
    k = len(group)
    flats = torch.stack([call.host.flat for call in group])
    values = flats[:, : 2 * n].reshape(2 * k, rows, width).to(torch.float64)
    norms = torch.linalg.vector_norm(values, dim=-1, keepdim=True)
    preview = min(PREVIEW, width)
    made = stats_of(values, norms, preview).view(2 * k, -1)
    # The statistics and preview as floats; the fingerprints' samples as bytes (``sample_key``),
    # which is what they are read as: making ~64 floats of each only to pack them costs more.
    head = stats_width(rows) + preview
    stats = made[:, :head].tolist()
    samples = made[:, head:].contiguous().numpy().tobytes()
    each = len(samples) // (2 * k)
    pairs = values.view(k, 2, rows, width)
    difference = pairs[:, 1] - pairs[:, 0]
    compare = torch.stack((difference.amin(dim=(1, 2)), difference.amax(dim=(1, 2))), dim=1).tolist()
    cos = flats[:, 2 * n :].tolist()
    figures, unit = batch_statistics(values, norms)
    figures_each = torch.cat(figures, dim=2).view(k, -1).tolist()
    exact = unit.view(k, 2, rows, width).prod(dim=1).sum(dim=-1)
    apart = deviations(exact, flats[:, 2 * n :]).tolist()
    # Per argument (2k of them), its two figures are figures_each[i // 2][2 * (i % 2):][:2].
    centred: list[list[float] | None] = [None] * (2 * k)
    dropping = [i for i in range(2 * k) if may_drop(figures_each[i // 2][2 * (i % 2) + 1], rows)]
    if dropping:
        made = torch.cat(centred_statistics(values[dropping]), dim=2).view(len(dropping), -1).tolist()
        for i, figures_of in zip(dropping, made):
            centred[i] = figures_of
    for j, call in enumerate(group):
        call.share = Share(
            values=values[2 * j : 2 * j + 2],
            norms=norms[2 * j : 2 * j + 2],
            stats=stats[2 * j] + stats[2 * j + 1],
            samples=(samples[2 * j * each : (2 * j + 1) * each], samples[(2 * j + 1) * each : (2 * j + 2) * each]),
            compare=compare[j],
            cos=cos[j],
            figures=figures_each[j],
            unit=unit[2 * j : 2 * j + 2],
            deviation=apart[j],
            centred=(centred[2 * j], centred[2 * j + 1]),
        )
