"""Which tensors came from ``torch.distributed.all_gather``: the ``gathered-without-grad`` evidence.

``all_gather`` fills plain tensors: the other ranks' rows arrive without autograd history, so
a contrastive loss over them trains only the local rows. ``torch.distributed.all_gather`` and
``all_gather_into_tensor`` are wrapped (the script's result is untouched) to remember, weakly,
the tensors they filled. At a cosine call, a side without autograd history while the other
has it, is *gathered* when it is one of them, a view of one, or holds one's
rows (``torch.cat(gathered)`` is a copy: its first row is compared with each remembered
tensor's). ``torch.distributed.nn.functional.all_gather`` calls the same function, but its
outputs carry history, so they are never flagged. Until a script gathers, this costs nothing.
"""

from __future__ import annotations

import functools
import weakref
from collections import deque
from typing import Any

import torch

KEPT = 64
"""Gathered tensors remembered (the most recent)."""


class Gathers:
    def __init__(self) -> None:
        self._recent: deque[weakref.ref[torch.Tensor]] = deque(maxlen=KEPT)

    def install(self) -> None:
        import torch.distributed as dist

        if not dist.is_available():
            return
        for name in ("all_gather", "all_gather_into_tensor"):
            original = getattr(dist, name, None)
            if original is None or getattr(original, "__cossim_tui_original__", None) is not None:
                continue
            setattr(dist, name, self._wrap(original, name))

    def _wrap(self, original: Any, name: str) -> Any:
        remember = self._remember

        @functools.wraps(original)
        def gathered(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            try:
                outputs = args[0] if args else kwargs.get("tensor_list", kwargs.get("output_tensor"))
                remember(outputs)
            except Exception:  # noqa: BLE001 - never worth breaking the script's collective
                pass
            return result

        gathered.__cossim_tui_original__ = original  # type: ignore[attr-defined]
        return gathered

    def _remember(self, outputs: Any) -> None:
        for tensor in outputs if isinstance(outputs, (list, tuple)) else (outputs,):
            if isinstance(tensor, torch.Tensor):
                self._recent.append(weakref.ref(tensor))

    def of(self, x1: Any, x2: Any) -> tuple[int, ...]:
        """The sides of a call that hold gathered rows without history while the other has it."""
        if not self._recent:
            return ()
        if not (isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)) or x1.requires_grad == x2.requires_grad:
            return ()
        index, x = (1, x2) if x1.requires_grad else (0, x1)
        return (index,) if self._holds_gathered(x) else ()

    def _holds_gathered(self, x: torch.Tensor) -> bool:
        if x.numel() == 0 or x.dim() == 0:
            return False
        with torch.no_grad():
            first = x.detach().reshape(-1, x.shape[-1])[0]
            pointer = x.untyped_storage().data_ptr()
            for ref in reversed(self._recent):
                tensor = ref()
                if tensor is None or tensor.requires_grad:
                    continue
                if tensor is x or tensor.untyped_storage().data_ptr() == pointer:
                    return True
                if tensor.numel() and tensor.dim() and tensor.shape[-1] == first.shape[0]:
                    if tensor.device == first.device and tensor.dtype == first.dtype and torch.equal(tensor.reshape(-1, first.shape[0])[0], first):
                        return True
        return False
