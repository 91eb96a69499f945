"""Named text styles for the words inside panels, resolved against the current theme.

Borders, backgrounds and layout live in ``app.tcss``. Styles for single words inside a
panel's text (a YES that means trouble, a dim label) are spans of ``Content``; they refer to
theme variables, never to fixed colours, so switching themes recolours them too. Keeping the
names here means every panel says "alarm" the same way.
"""

from __future__ import annotations

LABEL = "$text-muted"
"""A field's name, quieter than its value."""
VALUE = "$text"
ALARM = "bold $text-error"
"""Something that by itself explains a similarity stuck at 1 (same object, NaN...)."""
CAUTION = "$text-warning"
"""Worth a look, not wrong by itself (a detached partner)."""
CALM = "$text-success"
"""The reassuring answer (not the same object, no shared storage)."""
EMPHASIS = "bold"
CALL_LINE = "bold on $primary-muted"
"""Background of the source lines the intercepted call spans."""

BADGE: dict[str, str] = {
    "error": "bold $text-error on $error-muted",
    "warning": "bold $text-warning on $warning-muted",
    "info": "bold $text-primary on $primary-muted",
}
"""Severity badges in the findings list."""

EVIDENCE: dict[str, str] = {
    "error": "on $error-muted",
    "warning": "on $warning-muted",
    "info": "on $primary-muted",
}
"""Background of a line that proves the selected finding, in the colour of its severity."""
