"""The user's break condition: a Python expression that makes ``continue`` stop where it holds.

It is evaluated the way a debugger evaluates a watch: in the paused call's own frame, over a
copy of its globals and locals (so an assignment in the expression cannot reach the script), with three
extra names for the step's summary — ``cos`` (``cos.min``, ``cos.mean``, ``cos.max``…),
``step`` (its number) and ``args`` (``args[0].norm.mean``…) — as plain attribute objects, and
``result``, the similarity the call returned (the frame's ``similarity = F.cosine_similarity(…)``
is not assigned yet while the call is being made).
It is compiled once, when set. Nothing it raises reaches the script: a condition that fails
is turned off and the failure is reported, so a typo cannot stop the script at every call. A
name the frame does not have is the exception: ``similarity.min() > 0.999`` at the first call
of ``similarity = F.cosine_similarity(…)`` names a variable not assigned yet, so it counts as
false (and is reported once) rather than turning the condition off.
"""

from __future__ import annotations

import copy
import threading
import types
from typing import Any

from cossim_tui import protocol


class ConditionError(Exception):
    """Evaluating the condition raised; the message is ``Type: message``."""

    def __init__(self, message: str, *, missing_name: bool = False) -> None:
        super().__init__(message)
        self.missing_name = missing_name
        """A ``NameError``: a name the frame does not have (yet), such as the variable the call's
        result is about to be assigned to at the first step."""


def summary_names(step: protocol.StepCaptured, result: Any = None) -> dict[str, Any]:
    """The names a condition can use besides the frame's own: ``cos``, ``step``, ``args``, ``result``.

    The step's own records (``cos.mean``, ``args[0].norm.mean``), copied, so that a condition
    cannot change what the screen is sent."""
    return {"cos": copy.deepcopy(step.cos), "step": step.step, "args": copy.deepcopy(step.args), "result": result}


class BreakCondition:
    """Holds the compiled condition; set from the command thread, read at every call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: tuple[str, types.CodeType] | None = None

    @property
    def text(self) -> str:
        current = self._current
        return current[0] if current is not None else ""

    def set(self, condition: str) -> str | None:
        """Compile and install ``condition`` (``""`` clears it); the syntax error in words, if any.

        A condition that does not compile replaces the old one all the same: the user meant to
        change it, and continuing on a stale condition would surprise them.
        """
        text = condition.strip()
        if not text:
            with self._lock:
                self._current = None
            return None
        try:
            code = compile(text, "<break condition>", "eval")
        except (SyntaxError, ValueError) as exc:
            with self._lock:
                self._current = None
            return f"{type(exc).__name__}: {exc.msg if isinstance(exc, SyntaxError) else exc}"
        with self._lock:
            self._current = (text, code)
        return None

    def clear_if(self, text: str) -> None:
        """Turn off ``text``, unless the user has set another condition meanwhile."""
        with self._lock:
            if self._current is not None and self._current[0] == text:
                self._current = None

    def holds(self, frame: types.FrameType | None, step: protocol.StepCaptured, result: Any = None) -> str | None:
        """The condition's text when it holds at ``step``; ``None`` when it does not or none is set.

        Raises ``ConditionError`` when evaluating it raised anything.
        """
        current = self._current
        if current is None:
            return None
        text, code = current
        # One merged copy, not (globals, locals): a generator expression in the condition
        # (``any(v > limit for v in values)``) must see the frame's locals too, and an
        # assignment (``:=``) lands in the copy, never in the script.
        names: dict[str, Any] = {}
        if frame is not None:
            names.update(frame.f_globals)
            names.update(frame.f_locals)
        names.update(summary_names(step, result))
        try:
            import torch

            # No autograd graph is recorded for what the expression computes: the script's
            # tensors keep exactly the history they had.
            with torch.no_grad():
                value = eval(code, names)  # the user's own debugger expression, as pdb evaluates it
            return text if bool(value) else None
        except Exception as exc:  # noqa: BLE001 - reported to the user, never raised into the script
            raise ConditionError(f"{type(exc).__name__}: {exc}", missing_name=isinstance(exc, NameError)) from None
