"""What the agent captures at one intercepted call, as the records a step carries.

The tensors' summaries, how the two relate, the similarity, the call site, the findings, the
pictures and a similarity matrix's figures: ``msgspec.Struct``s whose annotations are the schema
``codec`` encodes and strictly validates (``messages`` holds the messages that carry them).
Standard library and msgspec only.
"""

from __future__ import annotations

from typing import Literal

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
