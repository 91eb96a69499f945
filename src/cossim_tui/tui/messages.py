"""The message the reader thread posts to the app.

Events travel through ``reader.Arrivals``; the message only says that some are waiting, so a
free run of thousands of calls a second costs one message per frame the app can draw.
"""

from __future__ import annotations

from textual.message import Message


class EventsArrived(Message):
    """Events of the run are waiting in the app's ``Arrivals``."""
