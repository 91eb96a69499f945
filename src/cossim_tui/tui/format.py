"""How numbers, shapes and addresses read on screen, in one place.

Every panel formats through these helpers so the same quantity looks the same everywhere
(a norm in the left panel and in the right one, a similarity in the panel and in the history).
They only format: no statistic is computed here, the agent measured everything already.
``pack`` lays a line's fields out in the width a panel has, so that a narrow terminal moves
a field to the next line rather than cutting a number off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual.content import Content


def fmt_float(x: float | None, digits: int = 4) -> str:
    """``x`` with ``digits`` significant digits; NaN and infinities spelled as torch prints them."""
    if x is None:
        return "n/a"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = f"{x:.{digits}g}"
    # "-0" says nothing a reader can use and looks like a bug.
    return "0" if text == "-0" else text


def fmt_percent(fraction: float) -> str:
    """A share as a percentage: whole from 10 % up (``100%``, where two significant digits
    read ``1e+02%``), two digits below, and ``0%`` under a hundredth of a percent."""
    percent = 100 * fraction
    if not math.isfinite(percent):
        return f"{fmt_float(percent)}%"
    if abs(percent) < 0.01:
        return "0%"
    if abs(percent) >= 10:
        return f"{percent:.0f}%"
    return f"{fmt_float(percent, 2)}%"


def fmt_cos(x: float | None) -> str:
    """A cosine similarity: four decimals, but never rounded to a misleading ±1.

    0.99996 must not read as 1.0000: the difference between "exactly the same direction" and
    "almost" is what the user is hunting, so more decimals are shown until the value no
    longer rounds to ±1 (up to the precision float32 can carry).
    """
    if x is None or not math.isfinite(x):
        return fmt_float(x)
    text = f"{x:.4f}"
    if abs(x) != 1.0 and text.lstrip("-") == "1.0000":
        for decimals in (5, 6, 7):
            longer = f"{x:.{decimals}f}"
            if longer.lstrip("-").rstrip("0") != "1.":
                return longer
    return "0.0000" if text == "-0.0000" else text


def fmt_angle(degrees: float | None) -> str:
    return "n/a" if degrees is None else f"{fmt_float(degrees)}°"


def fmt_shape(shape: Sequence[int]) -> str:
    """A shape as a Python tuple: ``(1, 32)``, ``(5,)``, ``()``."""
    return repr(tuple(shape))


def fmt_int(n: int) -> str:
    """A count with thousands separators, so 1000000 and 100000 are told apart at a glance."""
    return f"{n:,}"


def fmt_plural(n: int, noun: str) -> str:
    return f"{fmt_int(n)} {noun}" if n == 1 else f"{fmt_int(n)} {noun}s"


def fmt_address(ptr: int) -> str:
    return f"0x{ptr:x}"


def fmt_values(values: Sequence[float], limit: int = 4, more: bool = False) -> str:
    """The first ``limit`` values as a list; ``…`` when there are more than are shown."""
    shown = ", ".join(fmt_float(v) for v in values[:limit])
    ellipsis = ", …" if (more or len(values) > limit) else ""
    return f"[{shown}{ellipsis}]"


def fmt_cos_values(values: Sequence[float], limit: int = 4, more: bool = False) -> str:
    """Like :func:`fmt_values`, for similarities (see :func:`fmt_cos`)."""
    shown = ", ".join(fmt_cos(v) for v in values[:limit])
    ellipsis = ", …" if (more or len(values) > limit) else ""
    return f"[{shown}{ellipsis}]"


def fmt_yes_no(answer: bool | None) -> str:
    if answer is None:
        return "n/a"
    return "YES" if answer else "NO"


def pack(fields: Sequence[Content | str], width: int, *, gap: str = "  ", indent: int = 0) -> list[Content]:
    """``fields`` on as few lines of ``width`` cells as they fit, never splitting a field.

    A field that does not fit after the others starts a new line, indented by ``indent``
    cells (under the first field's value, past its label). A field wider than the whole width
    gets a line of its own; the widget's own wrapping then folds it rather than cutting it.
    ``width`` 0 (not laid out yet) puts every field on one line.
    """
    parts = [Content(field) if isinstance(field, str) else field for field in fields if field]
    if not parts:
        return [Content("")]
    lines: list[Content] = []
    line = parts[0]
    for part in parts[1:]:
        if width <= 0 or line.cell_length + len(gap) + part.cell_length <= width:
            line = Content.assemble(line, gap, part)
        else:
            lines.append(line)
            line = Content.assemble(" " * indent, part)
    lines.append(line)
    return lines
