"""One intercepted call on its way through the agent: the record every stage reads and fills.

The interceptor's arguments, the call site, what was read from the script's tensors at the
call, and what each stage queued on the call's one transfer (summaries, evidence, pictures),
until its step is made. One record, passed whole, where the stages once passed a dozen
positional values each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cossim_tui.protocol import CallSite


class Call:
    """One intercepted call from its capture queued to its summaries made: what was read from
    the script's tensors at the call, and what was queued on its transfer."""

    __slots__ = (
        "step", "function", "site", "exprs", "label", "x1", "x2", "result", "error", "dim", "eps", "pictures", "wall_time",
        "transfer", "made", "fresh", "from_loader", "inputs", "context", "images", "host", "described", "graph_live",
        "pair", "evidence", "strips", "values",
    )

    def __init__(
        self, step: int, function: str, site: CallSite, exprs: tuple[str, str], x1: Any, x2: Any, result: Any,
        error: BaseException | None, dim: int, eps: float, pictures: bool, transfer: Any,
    ) -> None:
        self.step, self.function, self.site, self.exprs = step, function, site, exprs
        self.x1, self.x2, self.result, self.error, self.dim, self.eps = x1, x2, result, error, dim, eps
        self.pictures, self.transfer = pictures, transfer
        self.label: str | None = None
        self.wall_time = time.time()
        self.host: Callable[[], Any] | None = None
        """After the fetch, host copies of a small pair on a device (``copy_small_pair``): its
        summaries are queued on them then, not on the tensors now."""
        self.described: Any = None
        self.graph_live: tuple[bool, bool] | None = None
        """Read at the call for a call summarised later (``capture.describe_pair``,
        ``evidence.graph_live_now``), whose ``x1`` and ``x2`` are then views without autograd;
        otherwise read when summarised, which is then."""
