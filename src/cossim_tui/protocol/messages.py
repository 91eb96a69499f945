"""What crosses the channel between the training script and the user's screen, as types.

The agent (inside the script) and the launcher/TUI (outside it) share nothing but these
records. Each is a ``msgspec.Struct``: its annotations are the schema that ``codec`` encodes
and strictly validates, so a field added here is carried, recorded and replayed without a
line anywhere else. Messages are a tagged union on ``kind``. Standard library and msgspec
only: the TUI side must be importable without torch, and the agent side without textual.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from msgspec import Struct, field

Severity = Literal["error", "warning", "info"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}
"""How findings are ordered and compared with ``--fail-on`` / ``--break-on``: the one place."""


# --------------------------------------------------------------------------------------
# What the agent captures at one intercepted call
# --------------------------------------------------------------------------------------


class Spread(Struct):
    """min / mean / max of some per-row quantity (norms, similarities, angles)."""

    min: float
    mean: float
    max: float


class ValueStats(Struct):
    """lovely-tensors style summary of the finite values of one tensor."""

    min: float
    max: float
    mean: float
    std: float


class StorageInfo(Struct):
    """Where a tensor's elements live: enough to tell views of one memory apart."""

    ptr: int
    """Address of the tensor's storage (``untyped_storage().data_ptr()``)."""
    offset: int
    """Element offset of the tensor inside that storage."""
    strides: list[int]
    element_size: int
    span: list[int]
    """Byte range ``[start, end)`` the tensor can touch, as addresses."""


class ModuleCall(Struct):
    """The outermost module call that produced a tensor (CONTRACT ``made_by``)."""

    module: str
    call: int
    step: int


class Thumbnail(Struct):
    """A small picture of an image a module was fed: the first image of the batch, downsampled.

    ``rows`` top to bottom, each a list of ``[r, g, b]`` from 0 to 255 (a grey image has
    ``r == g == b``), scaled so the image's own minimum is 0 and its maximum 255: two equal
    images give equal thumbnails.
    """

    width: int
    height: int
    channels: int
    """The image's channels: 1 (grey) or 3 (colour)."""
    source_shape: list[int]
    """Shape of the batch the image came from (``[8, 3, 32, 32]``)."""
    rows: list[list[list[int]]]


class TensorSummary(Struct):
    """One argument of the call, summarised where it lives; never the tensor itself."""

    expr: str
    """Its source expression at the call site (``vector1_tensor``), ``arg0`` when unknown."""
    shape: list[int]
    dtype: str
    device: str
    layout: str
    numel: int
    requires_grad: bool
    grad_fn: str | None
    """Name of the autograd node that made it; ``None`` for a leaf or a detached tensor."""
    is_leaf: bool
    norm: Spread | None
    """L2 norms along the reduced dim, over rows. ``None`` when they cannot be computed."""
    rows: int
    """How many vectors the norms were taken over."""
    stats: ValueStats | None
    nan: int
    inf: int
    preview: list[float]
    """The first values of the first vector along the reduced dim."""
    storage: StorageInfo | None
    sampled: bool = False
    """True when the statistics come from a bounded sample of a very large tensor."""
    made_by: ModuleCall | None = None
    note: str | None = None
    """Why something could not be summarised (sparse, meta, non-numeric...)."""
    input_image: Thumbnail | None = None
    """The image batch ``made_by``'s module was fed, when it was one and is still alive."""
    from_loader: bool = False
    """Same memory as a tensor of the batch the DataLoader yielded last."""
    strip: list[float] = field(default_factory=list)
    """Values of the first vector along the reduced dim, evenly sampled down to at most 48, for a heat strip."""


class Relation(Struct):
    """How the two arguments relate to each other."""

    same_object: bool
    shares_storage: bool
    equal_values: bool | None
    """Element-wise equal. ``None`` when the shapes differ, so the question does not apply."""
    max_abs_diff: float | None
    dim: int
    dim_size: int
    """Size of the reduced dimension after broadcasting."""
    broadcast_shape: list[int] | None
    """The shape both were broadcast to, when their shapes differ."""


class Similarity(Struct):
    """The cosine similarity the call computed, per row."""

    count: int
    min: float
    mean: float
    max: float
    first: list[float]
    angle_deg: Spread
    """Angles in degrees for the max, mean and min similarity (note: min angle ↔ max cos)."""
    nan: int = 0


class CallSite(Struct, omit_defaults=True):
    """Where in the user's source the call was made. (``via`` is written only where a library
    made the call: a site of the user's own code reads as it did before ``via`` existed.)"""

    path: str
    """The file as the user would name it (relative to the working directory when inside it)."""
    line: int
    function: str
    first_line: int
    """Line number of ``lines[0]``."""
    lines: list[str]
    """The call's line with a few lines of context either side."""
    call_start: int
    call_end: int
    """The lines the call expression spans (multi-line calls)."""
    via: str | None = None
    """For a call made inside an installed library, the library function that made it
    (``MODULE:QUALNAME``); the site itself is then the user's line that called into the library."""

    @property
    def label(self) -> str:
        return f"{self.path}:{self.line}"


class Finding(Struct):
    """One diagnosis at one step."""

    code: str
    severity: Severity
    message: str
    site: str
    step: int
    evidence: list[str] = field(default_factory=list)
    """Names of the fields that prove it (``relation.same_object``, ``args.1.grad_fn``)."""
    muted: bool = False
    ranks: list[int] = field(default_factory=list)
    """The ranks of a job that the finding concerns beyond the step's own (a comparison across
    ranks names both); empty for a single process."""


class Projection(Struct):
    """The recent vectors of both sides at one call site, on their first two principal components.

    Rows are L2-normalised (cosine similarity sees only directions) and coordinates are
    multiplied by √d, so a healthy cloud spreads about 1 per axis and a collapse is a dot well
    under 0.1.
    """

    step: int
    """The step this map was computed at."""
    first_step: int
    """The oldest step whose rows are in it."""
    x: list[float]
    y: list[float]
    side: list[int]
    """Which argument each point came from: 0 (x1) or 1 (x2)."""
    explained: list[float]
    """Fraction of the rows' variance along each of the two axes."""
    spread: float
    """RMS distance of the normalised rows from their mean (= √d · RMS per-channel std): healthy ≈ 1, collapse < 0.1."""
    extent: float
    """The largest |coordinate|."""
    dim_size: int
    label: list[int] | None = None
    """The class of each point's row, as the DataLoader's batch labelled it (-1 where unknown:
    a row not made from a labelled batch); ``None`` when no point has one."""


class HardNegative(Struct):
    """One of a similarity matrix's most similar negatives: its row, its column, its similarity."""

    row: int
    column: int
    value: float


class MatrixFigures(Struct):
    """What a similarity matrix step adds to a pair's (CONTRACT "Similarity matrices"): the
    matrix of ``args[0]``'s rows against ``args[1]``'s, its positives against its negatives."""

    rows: int
    columns: int
    positives: Spread | None
    """The diagonal, or the pairs the labels mark; ``None`` when there is none (a
    self-similarity matrix without labels)."""
    negatives: Spread | None
    """Every other entry (a self-similarity matrix's diagonal is neither)."""
    by_labels: bool = False
    """The positives are the pairs whose rows' labels are equal, not the diagonal."""
    self_similarity: bool = False
    """Both sides are the same rows (``z @ z.T``, SimCLR's 2N × 2N matrix)."""
    counted: int = 0
    """Rows (and columns) the spreads were taken over: the first ones, up to a bound."""
    heat: list[list[float]] = field(default_factory=list)
    """The first rows × first columns of the matrix, as a heat map shows them."""
    heat_positive: list[list[bool]] = field(default_factory=list)
    """Which cells of ``heat`` are positives (``heat``'s shape)."""
    hardest: list[HardNegative] = field(default_factory=list)
    """The most similar negatives, most similar first."""
    duplicates: list[list[int]] = field(default_factory=list)
    """``[side, row, other row]`` for a side with two equal rows (the first pair found)."""


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
