"""Stale partners: is this argument the memory, or the values, of one seen a few steps ago?

The last ``keep_steps`` steps' arguments are remembered by a weak reference to their storage
(so nothing is kept alive) and a value ``Fingerprint`` (their statistics and a strided
sample); a fingerprint match is confirmed exactly whenever the earlier storage, or a host copy
of its values, still exists. ``PartnerHistory`` owns that memory.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from typing import Any

import msgspec
import torch

from cossim_tui.diagnostics.judge import StaleMatch

NAN_SENTINEL = -1.2345678901234567e300
"""What a NaN in a fingerprint's key is written as, so that two keys with NaN compare equal."""
MOMENTS_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}
"""How far apart, relative to the values' magnitude, the mean and std of equal values may come
out, by the dtype they were reduced in: a reduction's order, and so its last bits, can differ
between a tensor summarised alone and in a stack (on a GPU, even between the two places of
one stack)."""


class Fingerprint(msgspec.Struct, frozen=True, gc=False):
    """An argument's value fingerprint: ``key``, figures that are exact copies of values (its min
    and max, NaN as a sentinel so that it compares equal; and the float64 bytes of
    ``FINGERPRINT_SAMPLE`` evenly spaced values, ``summaries.sample_key``), looked up as is; and
    its mean and std, compared within ``MOMENTS_TOLERANCE``, since how they were reduced shows in
    their last bits."""

    key: tuple[float, float, bytes]
    mean: float
    std: float
    tolerance: float
    digest: int = 0
    """``hash(key)``, made once (``of``): a tuple hashes all its items each time."""

    @classmethod
    def of(cls, key: tuple[float, float, bytes], mean: float, std: float, tolerance: float) -> Fingerprint:
        return cls(key, mean, std, tolerance, hash(key))

    @property
    def constant(self) -> bool:
        """Min equal to max: every value the same (NaN is never equal, as in x == x[0])."""
        return self.key[0] == self.key[1] != NAN_SENTINEL

    def moments_agree(self, other: Fingerprint) -> bool:
        low, high = self.key[0], self.key[1]
        scale = max(abs(low), abs(high)) if math.isfinite(low) and math.isfinite(high) else 0.0
        return all(
            a == b or (a != a and b != b) or abs(a - b) <= max(self.tolerance, other.tolerance) * scale
            for a, b in ((self.mean, other.mean), (self.std, other.std))
        )


class SeenArgument(msgspec.Struct):
    """One argument of an earlier step, remembered without keeping it alive."""

    step: int
    arg: int
    expr: str
    storage: weakref.ref | None
    shape: tuple[int, ...]
    dtype: torch.dtype
    fingerprint: Fingerprint
    had_grad: bool
    storage_offset: int
    strides: tuple[int, ...]
    values: torch.Tensor | None = None
    """Its values as they were at its call, where they were copied to the host (a small pair on a
    device): a later match is confirmed against them."""



GRAPH_PROBE_NODES = 16
_SAVED_NAMES: dict[type, tuple[str, ...]] = {}


def _saved_names(node: Any) -> tuple[str, ...]:
    kind = type(node)
    names = _SAVED_NAMES.get(kind)
    if names is None:
        names = _SAVED_NAMES[kind] = tuple(
            name for name in dir(node) if name.startswith("_saved_") and not name.endswith(("_sym_sizes", "_sym_strides"))
        )
    return names


def _graph_freed(node: Any) -> bool:
    """Whether ``backward()`` has already run through this autograd graph (its saved tensors
    are freed). Looks at a few nodes only; a graph without saved tensors counts as live."""
    stack, looked = [node], 0
    while stack and looked < GRAPH_PROBE_NODES:
        current = stack.pop()
        if current is None:
            continue
        looked += 1
        for name in _saved_names(current):
            try:
                getattr(current, name)
            except RuntimeError:  # "Trying to backward through the graph a second time..."
                return True
            except Exception:  # noqa: BLE001 - an attribute we cannot read says nothing
                continue
        stack.extend(following for following, _ in getattr(current, "next_functions", ()))
    return False


def graph_live_now(x: torch.Tensor) -> bool:
    """Whether ``x`` carries autograd history whose graph ``backward()`` has not run through yet."""
    return x.grad_fn is not None and not _graph_freed(x.grad_fn)



def fingerprintable(x: Any) -> bool:
    return (
        isinstance(x, torch.Tensor)
        and x.layout == torch.strided
        and not x.is_meta
        and x.numel() > 1
        and not x.dtype.is_complex  # rare; not worth a second fingerprint path
    )


def storage_ref(x: torch.Tensor) -> weakref.ref | None:
    try:
        return weakref.ref(x.untyped_storage())
    except (RuntimeError, TypeError, NotImplementedError):
        return None



class PartnerHistory:
    """The arguments of the last ``keep_steps`` steps, and the question whether a new one is one of them."""

    def __init__(self, keep_steps: int = 8) -> None:
        self.keep_steps = keep_steps
        self._seen: deque[tuple[str, list[SeenArgument]]] = deque(maxlen=keep_steps)
        """Per recent step: its call site and its arguments."""
        self._prints: dict[int, int] = {}
        """How many arguments in ``_seen`` have each fingerprint key's ``digest``: most arguments
        were never seen before, and one look-up says so (an equal digest of another key only
        leads to the comparison of keys that finds no match)."""

    def remember(self, site: str, step_seen: list[SeenArgument]) -> None:
        if self.keep_steps <= 0:
            return
        prints = self._prints
        if len(self._seen) == self.keep_steps:
            for seen in self._seen[0][1]:
                key = seen.fingerprint.digest
                left = prints[key] - 1
                if left:
                    prints[key] = left
                else:
                    del prints[key]
        self._seen.append((site, step_seen))
        for seen in step_seen:
            key = seen.fingerprint.digest
            prints[key] = prints.get(key, 0) + 1

    def match(
        self, index: int, x: torch.Tensor, print_: Fingerprint, site: str, live: bool | None = None, copy: torch.Tensor | None = None,
        requires_grad: bool | None = None,
    ) -> StaleMatch | None:
        """Whether ``x`` is an argument of a previous batch, seen at an earlier step.

        Reuse within the current batch is not staleness: an anchor compared with a positive and
        then with a negative is the same tensor at two consecutive steps. Two signs tell that
        apart without knowing where batches begin:

        - ``x`` carries autograd history whose graph is still whole: it belongs to the graph
          being built now. (A tensor kept across ``backward()`` has its graph's saved tensors
          freed, and is reported: the next backward through it will fail.)
        - the earlier step is in the current pass of the loop: this call site has not been
          reached since that step (a loop comes back to the same call on its next batch).

        A match in other memory is confirmed element by element: against the earlier argument's
        values as they were at its call where both were copied to the host (``copy``: ``x``'s),
        else against the earlier memory where it is still alive, on the script's thread (a step
        summarised from a copy may be summarised later, on the agent's own thread, which never
        touches the device): else the fingerprint decides.

        ``live``, ``requires_grad``: ``graph_live(x)`` and ``x.requires_grad`` as they were at the
        call, where they were read then.
        """
        if print_.digest not in self._prints:
            return None
        shape = tuple(x.shape)
        storage: Any = None
        graph_live: bool | None = None
        site_reached = False
        for seen_site, seen_step in reversed(self._seen):
            site_reached = site_reached or seen_site == site
            if not site_reached:
                continue
            for seen in seen_step:
                if seen.shape != shape or seen.dtype != x.dtype or seen.fingerprint.key != print_.key:
                    continue
                if not seen.fingerprint.moments_agree(print_):
                    continue
                if graph_live is None:  # looked at only once a fingerprint matches
                    graph_live = live if live is not None else graph_live_now(x)
                    try:
                        storage = x.untyped_storage()
                    except (RuntimeError, NotImplementedError):
                        storage = None
                if graph_live:
                    return None
                earlier = seen.storage() if seen.storage is not None else None
                same_memory = (
                    earlier is not None
                    and storage is not None
                    and earlier is storage
                    and seen.storage_offset == x.storage_offset()
                    and seen.strides == tuple(x.stride())
                )
                if not same_memory and copy is not None and seen.values is not None:
                    then, now = seen.values, copy
                    if then.dtype != now.dtype:  # each promoted with what travelled beside it: compared exactly
                        then, now = then.double(), now.double()
                    if not torch.equal(then, now):
                        continue
                elif not same_memory and copy is None and earlier is not None and earlier.device == x.device:
                    # The earlier tensor's memory still exists: confirm the values exactly.
                    try:
                        view = torch.empty(0, dtype=seen.dtype, device=x.device).set_(
                            earlier, seen.storage_offset, seen.shape, seen.strides
                        )
                        equal = torch.equal(view, x.detach())
                    except RuntimeError:  # the storage was resized since: trust the fingerprint
                        equal = True
                    if not equal:
                        continue
                return StaleMatch(
                    arg=index,
                    earlier_step=seen.step,
                    earlier_arg=seen.arg,
                    earlier_expr=seen.expr,
                    same_memory=same_memory,
                    detached=seen.had_grad and not (x.requires_grad if requires_grad is None else requires_grad),
                )
        return None
