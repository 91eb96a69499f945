"""Summarises the two tensors of a cosine call, where they live, into small protocol records.

Each argument is summarised by ``summaries``, its figures queued on a ``HostTransfer`` which
the caller fetches once for the whole call (evidence and context queue theirs on the same
one). Two small arguments of one shape are stacked and summarised together, in float64; large ones
in float32 (float64 stays float64). Only when the first pass shows a NaN, an infinity or an
overflow does a second pass count them and redo the statistics over the finite values.
Arguments of more than ``SAMPLE_LIMIT`` elements are summarised from evenly spaced rows so
that time and memory stay bounded (equality is still decided on every element). A similarity
of a few values is brought to the host whole and summarised there.

Nothing here keeps a reference to a tensor, and nothing here can raise into the script: an
argument that cannot be summarised (sparse, meta, not a tensor) gets a ``note`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from cossim_tui.agent.summaries import (
    COS_ON_HOST,
    FIRST_ROWS,
    PREVIEW,
    SAMPLE,
    SMALL,
    ArgValues,
    Described,
    PendingSummary,
    describe,
    described_now,
    finish_stats,
    queue_stats,
    stats_of,
    stats_width,
)
from cossim_tui.agent.tensors import as_rows, broadcast_shape, reduced_dim
from cossim_tui.agent.transfer import HostTransfer
from cossim_tui.protocol import Relation, Similarity, Spread, StorageInfo, TensorSummary


def _spans_overlap(a: StorageInfo | None, b: StorageInfo | None) -> bool:
    if a is None or b is None:
        return False
    if a.span[0] == a.span[1] or b.span[0] == b.span[1]:
        return False
    return a.span[0] < b.span[1] and b.span[0] < a.span[1]


OVERLAP_EXACT_LIMIT = 1 << 22


def _element_addresses(x: torch.Tensor) -> torch.Tensor:
    """Byte address of every element of a strided tensor, without touching its values."""
    addresses = torch.full((), x.data_ptr(), dtype=torch.int64)
    for extent, stride in zip(x.shape, x.stride()):
        addresses = addresses.unsqueeze(-1) + torch.arange(extent, dtype=torch.int64) * (stride * x.element_size())
    return addresses.reshape(-1)


def shares_memory(x1: torch.Tensor, x2: torch.Tensor, a: StorageInfo | None, b: StorageInfo | None) -> bool:
    """Whether some element of one is an element of the other (not merely an address range)."""
    if x1 is x2:
        return True
    if not _spans_overlap(a, b):
        return False
    if x1.element_size() != x2.element_size() or max(x1.numel(), x2.numel()) > OVERLAP_EXACT_LIMIT:
        # Reinterpreted dtypes or huge tensors: the address ranges overlap, which is what we know.
        return True
    # Interleaved views (the two halves of a `chunk(2, -1)`) overlap in range but share nothing.
    return bool(torch.isin(_element_addresses(x1), _element_addresses(x2)).any())


@dataclass
class PairCapture:
    args: list[TensorSummary]
    relation: Relation | None
    cos: Similarity | None


class PendingPair:
    """One call's summaries, queued on a transfer; ``finish()`` once it has been fetched."""

    def __init__(
        self, x1: Any, x2: Any, dim: int, result: Any, exprs: tuple[str, str], transfer: HostTransfer,
        values: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        described: tuple[Described, Described] | None = None, share: Any = None,
    ) -> None:
        self.x1, self.x2, self.dim, self.result, self.transfer = x1, x2, dim, result, transfer
        self.share = share
        """This call's ``batch.Share``: its figures, made with other calls' and fetched once; used
        where the branches below are the batch's (the same values make the same figures)."""
        self.values = values
        """Host copies of a small pair's values and of the result, where the agent made them (see
        ``small_pair_on_device``): they are read instead of the tensors' own; everything else
        (shape, storage, autograd, identity) is still read from the script's tensors."""
        self.described = described
        """``describe_pair`` of the tensors, where it was read at the call and the values are
        summarised later (``values``); else it is read now."""
        both_tensors = isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)
        self.both_tensors = both_tensors
        self.shape = broadcast_shape(x1.shape, x2.shape) if both_tensors else None
        # torch reads dim against the broadcast shape; so do we, once, as a negative index.
        ndim = len(self.shape) if self.shape is not None else max((x.dim() for x in (x1, x2) if isinstance(x, torch.Tensor)), default=0)
        self.ndim = ndim
        self.in_range = -max(ndim, 1) <= dim < max(ndim, 1)
        self.d = reduced_dim(dim, ndim) if self.in_range else -1
        self.stacked: tuple[torch.Tensor, torch.Tensor] | None = None
        """Both arguments' values and norms as one (2, rows, d) and (2, rows, 1), when small and alike."""
        self.compare_slot: int | None = None
        self.exact_only = False
        if torch.is_grad_enabled():
            with torch.no_grad():
                self._queue(exprs)
        else:  # the agent's capture is under no_grad already
            self._queue(exprs)

    def _queue(self, exprs: tuple[str, str]) -> None:
        x1, x2 = self.x1, self.x2
        if self.both_tensors and self._stackable():
            self.pending = self._queue_stacked(exprs)
        else:
            described = self.described or (None, None)
            self.pending = [queue_stats(x, self.d, self.transfer, expr, seen) for x, expr, seen in zip((x1, x2), exprs, described)]
            if self.both_tensors:
                self.compare_slot = self._queue_comparison()
        if not self.in_range:
            for p in self.pending:
                if not p.summary.note:
                    p.summary.note = f"dim {self.dim} is out of range for {self.ndim} dims; summarised over the last dim"
        self.cos_slots = self._queue_similarity()

    def _stackable(self) -> bool:
        x1, x2 = self.x1, self.x2
        return (
            x1.shape == x2.shape
            and x1.dtype == x2.dtype
            and x1.device == x2.device
            and x1.layout == torch.strided
            and x2.layout == torch.strided
            and not x1.is_meta
            and 0 < x1.numel() <= SMALL
            and x1.is_floating_point()
        )

    def _queue_stacked(self, exprs: tuple[str, str]) -> list[PendingSummary]:
        """Both arguments at once: one stack, one set of reductions, one queued vector."""
        x1, x2 = self.x1, self.x2
        described = self.described or (None, None)
        pending = [PendingSummary(describe(x, expr, seen)) for x, expr, seen in zip((x1, x2), exprs, described)]
        d = self.d
        share = self.share if self.share is not None and d == -1 else None
        if share is not None:
            values, norms = share.values, share.norms
        else:
            # (Under no_grad: the stack records no autograd history, so no detach is needed.)
            v1, v2 = (x1, x2) if self.values is None else self.values[:2]
            values = torch.stack((as_rows(v1, d), as_rows(v2, d))).to(torch.float64)
            norms = torch.linalg.vector_norm(values, dim=-1, keepdim=True)
        self.stacked = (values, norms)
        rows, width = values.shape[1], values.shape[2]
        preview = min(PREVIEW, width)
        stride = stats_width(rows) + preview
        if share is not None:
            slot = self.transfer.given(share.stats)  # (without the samples: ``Share.samples``)
        else:
            slot = self.transfer.vector(stats_of(values, norms, preview))
            stride += min(rows * width, SAMPLE)
        if x1 is not x2 and share is not None:
            self.compare_slot = self.transfer.given(share.compare)
        elif x1 is not x2:
            # Equal values ⇔ the largest difference is 0, unless it is NaN (checked in finish).
            # min and max of the difference: one pass (the largest |difference| is one of them).
            self.compare_slot = self.transfer.vector(torch.stack(torch.aminmax(values.diff(dim=0))))
        for index, p in enumerate(pending):
            p.summary.rows = rows
            p.arg = ArgValues(values, norms, False, (slot, index * stride), index)
            if share is not None:
                p.arg.sample_at, p.arg.sample_key = None, share.samples[index]
        return pending

    @property
    def args(self) -> list[ArgValues | None]:
        """Each argument's values, where they were summarised (for ``evidence``)."""
        return [p.arg for p in self.pending]

    def _queue_comparison(self) -> int | None:
        x1, x2 = self.x1, self.x2
        comparable = (
            x1 is not x2
            and x1.shape == x2.shape
            and x1.device == x2.device
            and x1.layout == torch.strided
            and x2.layout == torch.strided
            and not x1.is_meta
            and x1.numel() > 0
        )
        if not comparable:
            return None
        first, second = self.args
        try:
            if x1.is_floating_point() and x2.is_floating_point():
                # Equal values ⇔ the largest difference is 0, unless it is NaN (checked in finish).
                # Sampled summaries do not say: then on the tensors themselves.
                if first is not None and second is not None and not (first.sampled or second.sampled):
                    difference = first.values - second.values
                else:
                    difference = x1.detach() - x2.detach()
                return self.transfer.vector(torch.stack(torch.aminmax(difference)))
            a, b = x1.detach(), x2.detach()
            self.exact_only = True
            common = torch.promote_types(a.dtype, b.dtype)
            # Complex pairs are compared as complex numbers (a cast to a real dtype would drop the
            # imaginary part, and torch would warn about it in the script's output).
            dtype = common if common.is_complex else torch.float64 if a.dtype == torch.float64 else torch.float32
            diff = (a.to(dtype) - b.to(dtype)).abs().max()
            return self.transfer.scalars(torch.ne(a, b).any().to(diff.dtype), diff)
        except (RuntimeError, TypeError):
            return None

    def _queue_similarity(self) -> dict[str, int]:
        result = self.result
        if not (isinstance(result, torch.Tensor) and result.numel() > 0 and result.layout == torch.strided and not result.is_meta):
            return {}
        if self.values is not None:
            result = self.values[2]
        # (Read under no_grad: no detach needed, and the values are the result's own.)
        similarity = result
        if similarity.is_complex():
            similarity = similarity.real
        if similarity.numel() <= COS_ON_HOST:
            share = self.share
            return {"all": self.transfer.given(share.cos) if share is not None else self.transfer.vector(similarity)}
        similarity = similarity.reshape(-1).to(torch.float64 if result.dtype == torch.float64 else torch.float32)
        angles = torch.rad2deg(torch.acos(similarity.clamp(-1.0, 1.0)))
        low, high = torch.aminmax(similarity)
        return {
            "stats": self.transfer.scalars(
                low, similarity.mean(), high, angles.min(), angles.mean(), angles.max(),
                torch.isnan(similarity).sum().to(similarity.dtype),
            ),
            "first": self.transfer.vector(similarity[:FIRST_ROWS]),
        }

    def similarity_values(self) -> list[float] | None:
        """Every value of the similarity, when it was small enough to be fetched whole."""
        slot = self.cos_slots.get("all")
        return self.transfer[slot] if slot is not None else None

    def first_pass(self, index: int) -> list[float] | None:
        """mean, std, min, max, min/mean/max norm of one argument, as fetched."""
        arg = self.pending[index].arg
        return arg.first_pass(self.transfer) if arg is not None else None

    def finish(self) -> PairCapture:
        x1, x2, transfer = self.x1, self.x2, self.transfer
        args = [finish_stats(p, transfer) for p in self.pending]

        relation = None
        if self.both_tensors:
            shape, d = self.shape, self.d
            dim_size = shape[d] if shape and self.in_range and -d <= len(shape) else 0
            equal = diff_value = None
            if x1 is x2:
                equal, diff_value = True, 0.0
            elif self.compare_slot is not None:
                if self.exact_only:
                    unequal_v, diff_value = transfer[self.compare_slot]
                    equal = unequal_v == 0.0
                else:
                    low, high = transfer[self.compare_slot]
                    diff_value = max(-low, high) if low == low and high == high else math.nan
                    if math.isnan(diff_value):  # NaN or ±inf somewhere: only an exact comparison says
                        with torch.no_grad():
                            v1, v2 = (x1, x2) if self.values is None else self.values[:2]
                            equal = not bool(torch.ne(v1.detach(), v2.detach()).any())
                    else:
                        equal = diff_value == 0.0
            relation = Relation(
                same_object=x1 is x2,
                shares_storage=shares_memory(x1, x2, args[0].storage, args[1].storage),
                equal_values=equal,
                max_abs_diff=diff_value,
                dim=self.dim,
                dim_size=dim_size,
                broadcast_shape=shape if shape is not None and list(x1.shape) != list(x2.shape) else None,
            )

        return PairCapture(args, relation, self._finish_similarity())

    def _finish_similarity(self) -> Similarity | None:
        if not self.cos_slots:
            return None
        values = self.similarity_values()
        if values is not None:
            nan = sum(1 for v in values if v != v)
            if nan:
                low = mean = high = amin = amean = amax = math.nan
            else:
                low, high, mean = min(values), max(values), math.fsum(values) / len(values)
                degrees, acos = math.degrees, math.acos
                angles = [degrees(acos(1.0 if v > 1.0 else -1.0 if v < -1.0 else v)) for v in values]
                amin, amean, amax = min(angles), math.fsum(angles) / len(angles), max(angles)
            return Similarity(
                count=len(values), min=low, mean=mean, max=high, first=values[:FIRST_ROWS],
                angle_deg=Spread(min=amin, mean=amean, max=amax), nan=nan,
            )
        low, mean, high, amin, amean, amax, nan_v = self.transfer[self.cos_slots["stats"]]
        return Similarity(
            count=self.result.numel(),
            min=low,
            mean=mean,
            max=high,
            first=self.transfer[self.cos_slots["first"]],
            angle_deg=Spread(min=amin, mean=amean, max=amax),
            nan=int(nan_v),
        )


def queue_pair(
    x1: Any, x2: Any, dim: int, result: Any, exprs: tuple[str, str], transfer: HostTransfer,
    values: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    described: tuple[Described, Described] | None = None, share: Any = None,
) -> PendingPair:
    """Queue everything ``capture_pair`` reports on ``transfer``; ``finish()`` after its fetch.
    ``values``: host copies of the pair's values and of the result (``copy_small_pair``);
    ``described``: ``describe_pair`` read when they were made; ``share``: the call's figures made
    in a batch of calls (``batch``)."""
    return PendingPair(x1, x2, dim, result, exprs, transfer, values, described, share)


def describe_pair(x1: torch.Tensor, x2: torch.Tensor) -> tuple[Described, Described]:
    """What a summary reads from the tensors themselves rather than from their values (shape,
    dtype, autograd, storage), as they are now: for a pair summarised later from host copies
    (``queue_pair``'s ``described``), by which time the script may have changed them."""
    return described_now(x1), described_now(x2)


HOST_COPY_LIMIT = 2048
"""Values per argument up to which a pair on a device is summarised from host copies. On an
H200 (torch 2.11), a call of two (8, 64) float32 arguments cost 607 µs summarised from host
copies and 760 µs with its few dozen small reductions launched as kernels on the device; at
(64, 256) the device was ahead, 857 µs against 1,090."""


def small_pair_on_device(x1: Any, x2: Any, result: Any) -> bool:
    """Whether a call's pair is summarised from host copies of its values: two small real
    floating tensors of one shape, dtype and device, off the CPU, with a result there too. Their
    values and the result travel in the call's one transfer and are summarised on the host,
    rather than by a few dozen tiny kernels, each launched from Python (``HOST_COPY_LIMIT``).
    Larger arguments stay on their device, where the reductions pay."""
    return (
        isinstance(x1, torch.Tensor)
        and isinstance(x2, torch.Tensor)
        and isinstance(result, torch.Tensor)
        and not x1.is_cpu
        and not x1.is_meta
        and x1.shape == x2.shape
        and x1.dtype == x2.dtype
        and x1.device == x2.device == result.device
        and x1.layout == x2.layout == result.layout == torch.strided
        and 0 < x1.numel() <= HOST_COPY_LIMIT
        and x1.is_floating_point()
        and not x1.is_complex()
        and result.numel() <= HOST_COPY_LIMIT
    )


def copy_small_pair(
    x1: torch.Tensor, x2: torch.Tensor, result: torch.Tensor, transfer: HostTransfer
) -> Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Queue the values of a ``small_pair_on_device`` pair and of its result on ``transfer``; what
    it returns gives them, after the fetch, as host tensors of their own shapes (in a floating
    dtype that holds them exactly)."""
    with torch.no_grad():
        slot = transfer.copy(torch.cat((x1.detach().reshape(-1), x2.detach().reshape(-1), result.detach().reshape(-1))))
    n, shapes = x1.numel(), (x1.shape, x2.shape, result.shape)  # as they are now

    def host() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = transfer.host(slot)
        return flat[:n].view(shapes[0]), flat[n : 2 * n].view(shapes[1]), flat[2 * n :].view(shapes[2])

    return host


def capture_pair(
    x1: Any,
    x2: Any,
    dim: int,
    result: Any,
    exprs: tuple[str, str],
) -> PairCapture:
    """Summaries of both arguments, how they relate, and the similarity ``result`` holds."""
    transfer = HostTransfer()
    pending = queue_pair(x1, x2, dim, result, exprs, transfer)
    transfer.fetch()
    return pending.finish()
