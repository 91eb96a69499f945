"""What crosses the channel between the training script and the user's screen, as types.

The agent (inside the script) and the launcher/TUI (outside it) share nothing but these
messages and the records they carry (``records``). Each is a ``msgspec.Struct``: its
annotations are the schema that ``codec`` encodes and strictly validates, so a field added here
is carried, recorded and replayed without a line anywhere else. Messages are a tagged union on
``kind``. Standard library and msgspec only: the TUI side must be importable without torch, and
the agent side without textual.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from msgspec import Struct, field

from cossim_tui.protocol.records import (
    CallSite,
    Finding,
    MatrixFigures,
    Projection,
    Relation,
    Similarity,
    TensorSummary,
)

# --------------------------------------------------------------------------------------
# Messages: a union tagged by ``kind``
# --------------------------------------------------------------------------------------


class _Tag:
    """``Message.kind``: the class's tag, read from msgspec's own configuration of it."""

    def __get__(self, instance: object, owner: type[Struct]) -> str:
        tag = owner.__struct_config__.tag
        return tag if isinstance(tag, str) else ""


class Message(Struct, tag_field="kind"):
    """A message of the channel; ``kind`` (its tag) names it on the wire and in a trace."""

    kind: ClassVar[str] = _Tag()  # type: ignore[assignment]


class Hello(Message, tag="hello"):
    """The agent is connected; the script is about to run."""

    pid: int
    python: str
    target: str
    argv: list[str]
    rank: int | None = None
    """This process's rank in a distributed job (``RANK``); ``None`` for a single process."""
    world_size: int | None = None
    local_rank: int | None = None
    host: str | None = None
    """The node's host name, in a job: ranks on several nodes are told apart by it."""


class TorchHooked(Message, tag="torch-hooked"):
    """torch has been imported by the script and its cosine entry points are wrapped."""

    version: str
    intercepted: list[str]
    rank: int | None = None


class StepCaptured(Message, tag="step"):
    """One intercepted call, with everything the screen shows for it."""

    step: int
    function: str
    site: CallSite
    args: list[TensorSummary]
    relation: Relation | None
    cos: Similarity | None
    error: str | None
    """The exception torch raised for this call, as ``Type: message``; it reached the script."""
    findings: list[Finding]
    context: dict[str, float]
    paused: bool
    """The script is waiting for a command before it goes on."""
    label: str | None = None
    wall_time: float = 0.0
    break_condition: str | None = None
    """The user's break condition, when it held at this step (why ``continue`` stopped here)."""
    projection: Projection | None = None
    """The embedding map of this call site, on the steps it was computed at (every few, and every pause)."""
    rank: int | None = None
    """The rank whose call this is, in a distributed job (its steps are numbered per rank)."""
    matrix: MatrixFigures | None = None
    """A similarity matrix step's own figures; ``None`` for a pairwise call (the report's
    ``kind: "pair"``)."""


class ScriptEnded(Message, tag="script-ended"):
    """The script's own code has finished, as the agent saw it."""

    status: Literal["finished", "error", "stopped", "not-found"]
    exit_code: int
    exception: str | None
    """``Type: message`` when the script raised."""
    maps: list[Projection] = field(default_factory=list)
    """The embedding map of each call site whose latest rows no step's map shows yet, as of the
    run's end; each map's ``step`` is a step of its site (the last whose rows are in it)."""
    rank: int | None = None


class BreakChanged(Message, tag="break-changed"):
    """The break condition now in force, after a ``SetBreak`` or an error in evaluating it."""

    condition: str
    """The condition in force; ``""`` when there is none."""
    error: str | None = None
    """Why the condition asked for was refused, or why the one in force was turned off."""
    step: int | None = None
    """The step whose evaluation failed, for an error at run time."""
    rank: int | None = None


# Commands: from the app (or the launcher) to the script.


class Resume(Message, tag="resume"):
    """Go on from a pause: stop at the next call, at the next finding, or never."""

    mode: Literal["step", "continue", "run"]


class Pause(Message, tag="pause"):
    """Stop at the next intercepted call."""


class Mute(Message, tag="mute"):
    """Stop breaking on ``code`` at ``site`` (``*`` for every site)."""

    code: str
    site: str


class SetBreak(Message, tag="set-break"):
    """Make ``continue`` also stop where this Python expression holds; ``""`` clears it."""

    condition: str


# --------------------------------------------------------------------------------------
# How the launcher configures the agent: JSON in an environment variable, removed at start;
# or, for a child started before the settings were known, a ``Start`` message
# --------------------------------------------------------------------------------------

FD_ENV = "COSSIM_TUI_FD"
CONFIG_ENV = "COSSIM_TUI_CONFIG"
CONNECT_ENV = "COSSIM_TUI_CONNECT"
"""``HOST:PORT`` of the screen's listener, for the ranks of a job (they are not its children)."""
TOKEN_ENV = "COSSIM_TUI_TOKEN"
"""The job's shared secret: a rank proves it first, before anything it sends is decoded."""

PICTURE_INTERVAL = 0.08
"""Seconds between two pictured steps while the script runs freely with ``pictures="paced"``."""


class AgentConfig(Struct):
    """Settings the agent needs inside the child; travels as JSON in an environment variable,
    or in a ``Start`` message."""

    mode: Literal["step", "continue", "run"] = "step"
    """How the script starts: paused at the first call, or running."""
    break_on: list[str] = field(default_factory=lambda: ["error"])
    """Severities or codes that make ``continue`` stop."""
    ignore: list[str] = field(default_factory=list)
    max_steps: int | None = None
    watch: list[str] = field(default_factory=list)
    pictures: Literal["every-step", "paced", "none"] = "every-step"
    """Which steps carry the pictures (value strips, input images, embedding maps), which cost
    more than the rest of a step: ``every-step``; ``paced``, every step the script stops at
    and, while it runs freely, at most one step every ``PICTURE_INTERVAL`` seconds (what a
    screen can show); ``none`` (nobody will see them: ``check`` without ``--record``)."""


class Start(Message, tag="start"):
    """The agent's settings, and the go to run the script: sent to a child started early
    (``launcher.Run.early``), which waits for it before the script's first line."""

    config: AgentConfig


AgentMessage = Hello | TorchHooked | StepCaptured | ScriptEnded | BreakChanged
"""What the agent sends."""
RANKED = (Hello, TorchHooked, StepCaptured, ScriptEnded, BreakChanged)
"""The agent's messages that carry the rank they came from, in a job (stamped by whoever
relays them from the rank's channel)."""
Command = Resume | Pause | Mute | SetBreak | Start
"""What goes to the agent."""
COMMAND_KINDS = frozenset(cls.kind for cls in Command.__args__)
MESSAGE_TYPES: dict[str, type[Message]] = {cls.kind: cls for cls in (*AgentMessage.__args__, *Command.__args__)}
