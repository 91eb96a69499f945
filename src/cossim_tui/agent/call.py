"""One intercepted call on its way through the agent: the record every stage reads and fills.

The interceptor's arguments, the call site, what was read from the script's tensors at the
call, and what each stage queued on the call's one transfer (summaries, evidence, pictures),
until its step is made. One record, passed whole, where the stages once passed a dozen
positional values each.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import Any

from cossim_tui.protocol import CallSite


class Intercepted:
    """What the interceptor saw at one call, as it hands it to the agent: the function, the
    source names of its two tensor parameters, the arguments, ``dim`` and ``eps`` as given, what
    the call returned or raised, the frame that made the call, and a probe's label."""

    __slots__ = ("dim", "eps", "error", "frame", "function", "label", "made_from", "matrix", "names", "passage", "result", "x1", "x2")

    def __init__(
        self, function: str, names: tuple[str, str], x1: Any, x2: Any, dim: Any, eps: Any, result: Any,
        error: BaseException | None, frame: types.FrameType | None, label: str | None = None, passage: Any = None,
    ) -> None:
        self.function, self.names, self.x1, self.x2, self.dim, self.eps = function, names, x1, x2, dim, eps
        self.result, self.error, self.frame, self.label = result, error, frame, label
        self.passage = passage
        """How a call made inside an installed library came from ``frame``, the user's
        (``library.Passage``); ``None`` for a call in the user's own code."""
        self.matrix = False
        """A similarity matrix of normalised rows (``intercept_matrix``): ``x1`` and ``x2`` are its
        two sides' rows and ``result`` the matrix."""
        self.made_from: tuple[Any, Any] | None = None
        """For a matrix, the tensors each side's rows were normalised from: who made them is
        asked of these (the normalised rows are new memory no module returned)."""


class Call:
    """One intercepted call from its capture queued to its summaries made: what was read from
    the script's tensors at the call, and what was queued on its transfer."""

    __slots__ = (
        "step", "function", "site", "where", "exprs", "label", "x1", "x2", "result", "error", "dim", "eps", "pictures", "wall_time",
        "transfer", "made", "fresh", "from_loader", "inputs", "context", "images", "host", "described", "graph_live",
        "pair", "evidence", "strips", "values", "gathered", "matrix", "made_from", "figures", "share",
    )

    def __init__(
        self, seen: Intercepted, step: int, site: CallSite, exprs: tuple[str, str], pictures: bool, where: str
    ) -> None:
        self.step, self.function, self.site, self.exprs, self.label = step, seen.function, site, exprs, seen.label
        self.where = where
        """``site.label``, made once by the caller (a property that formats it at each read)."""
        self.x1, self.x2, self.result, self.error = seen.x1, seen.x2, seen.result, seen.error
        self.dim = seen.dim if isinstance(seen.dim, int) else -1
        self.eps = float(seen.eps) if isinstance(seen.eps, (int, float)) else 1e-8
        self.pictures = pictures
        self.gathered: tuple[int, ...] = ()
        """The sides holding rows of ``all_gather`` without history (``agent.gathers``)."""
        self.matrix, self.made_from = seen.matrix, seen.made_from
        self.figures: Any = None
        """A matrix's figures queued on the transfer (``matrix.PendingMatrix``)."""
        self.transfer: Any = None
        """The one ``HostTransfer`` every stage queues its figures on (``Pipeline.begin``)."""
        self.wall_time = time.time()
        self.host: Callable[[], Any] | None = None
        """After the fetch, host copies of a small pair on a device (``copy_small_pair``): its
        summaries are queued on them then, not on the tensors now."""
        self.share: Any = None
        """A parked call's figures, made with other calls' (``batch.Share``), once they are."""
        self.described: Any = None
        self.graph_live: tuple[bool | None, bool | None] | None = None
        """Read at the call for a call summarised later (``capture.describe_pair``,
        ``evidence.graph_live_now``), whose ``x1`` and ``x2`` are then views without autograd;
        otherwise read when summarised, which is then. ``None`` for a ``fresh`` argument, which
        is never matched against earlier arguments."""
