"""Pure judges: one step's summaries, the agent's evidence and a little per-site history in,
findings out.

No torch here: everything a judge looks at is plain data (``protocol`` records and the
``Evidence`` the agent gathered next to the tensors), so each rule is a small function that
is tested with hand-made inputs. Rules that need persistence (collapse, saturated,
constant-similarity) keep a few counters per call site; nothing else is remembered.
Thresholds are CONTRACT.md's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cossim_tui.diagnostics.codes import CATALOG
from cossim_tui.protocol import Finding, MatrixFigures, Relation, Similarity, TensorSummary

COLLAPSE_SCORE = 0.1
PERSIST_STEPS = 3
SATURATED_COS = 0.9999
CONSTANT_TOLERANCE = 1e-7
CONSTANT_STEPS = 5
PRECISION_TOLERANCE = 1e-3
PRECISION_WRONG = 0.1
"""From this difference on, ``precision-loss`` is an error: the answer is wrong, not just imprecise."""
COMMON_MODE_DROP = 0.3
COMMON_MODE_CONFIDENCE = 2.0
"""How many standard errors the measured common-mode drop must clear the threshold by."""


@dataclass
class StaleMatch:
    """Argument ``arg`` is (the memory or the values of) an argument of an earlier step."""

    arg: int
    earlier_step: int
    earlier_arg: int
    earlier_expr: str
    same_memory: bool
    detached: bool


@dataclass
class Evidence:
    """Facts only the agent can establish, next to the tensors."""

    eps: float = 1e-8
    stale: list[StaleMatch] = field(default_factory=list)
    batch_collapse: list[float | None] = field(default_factory=list)
    """Collapse score of each argument's rows, when it has ≥ 4 of them."""
    ring_collapse: float | None = None
    """Collapse score over the recent new vectors at this site, across steps."""
    common_mode_drop: float | None = None
    common_mode_noise: float | None = None
    """Standard error of ``common_mode_drop`` for rows without a shared offset (small batches are noisy)."""
    precision_deviation: float | None = None
    """Largest |result − float64 recomputation| over the sampled rows."""
    identical_inputs: str | None = None
    """How both vectors came from one module and equal inputs (``VGG from the same input tensor``)."""
    gathered: tuple[int, ...] = ()
    """The arguments whose values came from ``torch.distributed.all_gather`` without autograd
    history, while the other side has it (``agent.gathers``)."""


@dataclass
class _SiteState:
    collapsed_steps: int = 0
    saturated_steps: int = 0
    last_cos: tuple[float, float, float] | None = None
    """min, mean and max of the similarity at the previous step."""
    constant_steps: int = 0


def is_self_similarity_matrix(a: TensorSummary, b: TensorSummary, relation: Relation) -> bool:
    """``cos(z[:, None], z[None, :])``: one memory, a singleton dim inserted at different places."""
    if relation.broadcast_shape is None or a.storage is None or b.storage is None:
        return False
    if a.storage.ptr != b.storage.ptr or len(a.shape) != len(b.shape):
        return False

    def squeezed(t: TensorSummary) -> tuple[list[int], list[int]]:
        keep = [i for i, n in enumerate(t.shape) if n != 1]
        return [t.shape[i] for i in keep], [t.storage.strides[i] for i in keep]  # type: ignore[union-attr]

    positions_a = [i for i, n in enumerate(a.shape) if n == 1]
    positions_b = [i for i, n in enumerate(b.shape) if n == 1]
    return (
        squeezed(a) == squeezed(b)
        and positions_a != positions_b
        and a.storage.offset == b.storage.offset
    )


ALIAS_SEARCH_LIMIT = 1 << 16


def compares_memory_with_itself(a: TensorSummary, b: TensorSummary, relation: Relation) -> bool | None:
    """Whether some position of the (broadcast) pair reads the same memory in both arguments.

    That is what makes a shared storage a bug: a vector compared, at least in part, with itself
    (``.detach()``, ``.view()``, ``.data``, the same slice twice). Different parts of one buffer
    are not: interleaved pairs ``z[0::2]`` against ``z[1::2]``, or consecutive rows ``z[:-1]``
    against ``z[1:]``, never put one element at the same position on both sides. ``None`` when
    it cannot be decided (different element sizes, different storages, a search too large).
    """
    sa, sb = a.storage, b.storage
    if sa is None or sb is None or sa.ptr != sb.ptr or sa.element_size != sb.element_size:
        return None
    shape = list(relation.broadcast_shape) if relation.broadcast_shape is not None else list(a.shape)
    if len(a.shape) != len(sa.strides) or len(b.shape) != len(sb.strides):
        return None

    def strides(t: TensorSummary, own: list[int]) -> list[int] | None:
        lead = len(shape) - len(t.shape)
        if lead < 0:
            return None
        out = [0] * lead
        for size, stride, target in zip(t.shape, own, shape[lead:]):
            out.append(stride if size == target else 0)
        return out

    strides_a, strides_b = strides(a, sa.strides), strides(b, sb.strides)
    if strides_a is None or strides_b is None:
        return None
    if any(n == 0 for n in shape):
        return False
    # Same element at index I: offset_a + Σ I_k·stride_a_k == offset_b + Σ I_k·stride_b_k.
    target = sb.offset - sa.offset
    terms = [(sa_k - sb_k, n) for sa_k, sb_k, n in zip(strides_a, strides_b, shape) if sa_k != sb_k and n > 1]
    reachable = {0}
    for coefficient, n in terms:
        if len(reachable) * n > ALIAS_SEARCH_LIMIT:
            return None
        reachable = {r + i * coefficient for r in reachable for i in range(n)}
    return target in reachable


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _all_zero(t: TensorSummary) -> bool:
    return t.stats is not None and t.stats.min == 0 and t.stats.max == 0


class Judge:
    """Turns one captured step into findings; remembers only per-site persistence counters."""

    def __init__(self, ignore: set[str] | None = None) -> None:
        self.ignore = set(ignore or ())
        self._sites: dict[str, _SiteState] = {}
        self._alike_steps: dict[str, int] = {}
        """Consecutive matrix steps at a site whose negatives were as similar as its positives."""

    def judge(
        self,
        step: int,
        site: str,
        args: list[TensorSummary],
        relation: Relation | None,
        cos: Similarity | None,
        evidence: Evidence,
        error: str | None = None,
    ) -> list[Finding]:
        found: list[tuple[str, str, list[str]]] = []
        precision_wrong = False

        def add(code: str, message: str, *proof: str) -> None:
            # One finding per code and step (the report counts steps): say both arguments in one.
            for position, (known_code, known_message, known_proof) in enumerate(found):
                if known_code == code:
                    more = [p for p in proof if p not in known_proof]
                    found[position] = (code, f"{known_message}; {message}", known_proof + more)
                    return
            found.append((code, message, list(proof)))

        if error is not None:
            # torch refused the call: there is no similarity to explain, and the script got the error.
            return []
        a, b = args[0], args[1]
        state = self._sites.setdefault(site, _SiteState())

        if relation is not None:
            self_matrix = is_self_similarity_matrix(a, b, relation)
            if relation.same_object:
                add("same-object", f"{a.expr} and {b.expr} are the same tensor object", "relation.same_object")
            elif relation.shares_storage and not self_matrix and compares_memory_with_itself(a, b, relation) is not False:
                add(
                    "shared-storage",
                    f"{a.expr} and {b.expr} are views of the same memory"
                    + (" (one is a detached view of the other)" if a.requires_grad != b.requires_grad else ""),
                    "relation.shares_storage",
                )
            elif relation.equal_values and not _all_zero(a):
                # (Two all-zero tensors are equal too, but zero-norm is what explains them.)
                add("identical-values", f"{a.expr} and {b.expr} hold identical values in different memory", "relation.equal_values")
            if relation.dim_size == 1:
                add(
                    "degenerate-dim",
                    f"the similarity is taken over dim {relation.dim}, which has size 1: every value is ±1 or 0",
                    "relation.dim",
                )
            if relation.broadcast_shape is not None:
                add(
                    "broadcast",
                    f"{a.expr} {tuple(a.shape)} and {b.expr} {tuple(b.shape)} were broadcast to {tuple(relation.broadcast_shape)}",
                    "relation.broadcast_shape",
                )

        if evidence.identical_inputs is not None:
            add(
                "identical-inputs",
                f"{a.expr} and {b.expr} were both made by {evidence.identical_inputs}",
                "args.0.made_by",
                "args.1.made_by",
            )

        # Both arguments written the same way and matching the same earlier tensor are one
        # tensor in two places: said once, not as two clauses that read alike.
        stale: dict[tuple[str, int, str, str], list[tuple[int, bool]]] = {}
        for match in evidence.stale:
            current = args[match.arg]
            how = "same memory" + (", detached" if match.detached else "") if match.same_memory else "equal values, a copy"
            never_updated = match.earlier_arg == match.arg and match.earlier_expr == current.expr
            stale.setdefault((current.expr, match.earlier_step, match.earlier_expr, how), []).append((match.arg, never_updated))
        for (expr, earlier_step, earlier_expr, how), places in stale.items():
            role = " (never updated since)" if any(never_updated for _, never_updated in places) else ""
            which = " (both arguments)" if len(places) > 1 else ""
            add(
                "stale-partner",
                f"{expr}{which} is step {earlier_step}'s {earlier_expr} ({how}){role}",
                *(f"args.{arg}" for arg, _ in places),
            )

        for index, t in enumerate(args):
            if t.norm is not None and t.rows > 0 and t.norm.min <= evidence.eps:
                add("zero-norm", f"{t.expr} has vectors with norm ≤ eps ({_fmt(evidence.eps)}): min norm {_fmt(t.norm.min)}", f"args.{index}.norm")
        bad = [f"{t.expr} has {t.nan} NaN and {t.inf} Inf" for t in args if t.nan or t.inf]
        if cos is not None and cos.nan:
            bad.append(f"the similarity has {cos.nan} NaN")
        if bad:
            add("non-finite", "; ".join(bad), "args.nan", "cos.nan")

        collapse_scores = [s for s in evidence.batch_collapse if s is not None]
        score = min(collapse_scores) if collapse_scores else evidence.ring_collapse
        if score is not None and score < COLLAPSE_SCORE:
            state.collapsed_steps += 1
        else:
            state.collapsed_steps = 0
        if score is not None and state.collapsed_steps >= PERSIST_STEPS:
            where = "within the batch" if collapse_scores else "across recent steps"
            add(
                "collapse",
                f"the vectors of different samples point the same way {where}: collapse score {score:.3f} "
                f"(≈ 1 healthy) for {state.collapsed_steps} steps",
                "evidence.collapse",
            )

        if evidence.precision_deviation is not None and evidence.precision_deviation > PRECISION_TOLERANCE:
            precision_wrong = evidence.precision_deviation >= PRECISION_WRONG
            add(
                "precision-loss",
                f"the result differs from float64 by up to {_fmt(evidence.precision_deviation)} ({a.dtype}, {b.dtype})",
                "cos",
            )

        if (
            a.stats is not None and b.stats is not None and a.stats.min >= 0 and b.stats.min >= 0
            and a.stats.max > 0 and b.stats.max > 0
        ):
            add("nonnegative-features", f"{a.expr} and {b.expr} are entirely ≥ 0: the similarity can only be in [0, 1]", "args.stats")

        collapsed_now = bool(collapse_scores) and min(collapse_scores) < COLLAPSE_SCORE
        if (
            evidence.common_mode_drop is not None
            and evidence.common_mode_drop > COMMON_MODE_DROP
            # Small batches measure the drop roughly: it must clear the threshold by more than its
            # noise, or a batch with a minor offset (or none) is reported by chance.
            and evidence.common_mode_drop - COMMON_MODE_CONFIDENCE * (evidence.common_mode_noise or 0.0) > COMMON_MODE_DROP
            and not collapsed_now
        ):
            add(
                "common-mode",
                f"a shared offset dominates: the mean cosine between rows drops by {evidence.common_mode_drop:.2f} after centring",
                "evidence.common_mode",
            )

        if (
            a.requires_grad != b.requires_grad
            and relation is not None
        ):
            live, dead = (a, b) if a.requires_grad else (b, a)
            add("detached-partner", f"{live.expr} carries autograd history, {dead.expr} does not: gradients flow through one side only", "args.grad_fn")
        for index in evidence.gathered:
            add(
                "gathered-without-grad",
                f"{args[index].expr} comes from torch.distributed.all_gather, which carries no gradient: the other ranks' rows train nothing",
                f"args.{index}.grad_fn",
            )

        def severity(code: str) -> str:
            """The code's own severity, or worse where this step measured more (``precision-loss``)."""
            return "error" if code == "precision-loss" and precision_wrong else CATALOG[code].severity

        explained = any(severity(code) == "error" for code, _, _ in found)
        if cos is not None and math.isfinite(cos.min) and cos.min >= SATURATED_COS:
            state.saturated_steps += 1
        else:
            state.saturated_steps = 0
        if state.saturated_steps >= PERSIST_STEPS and not explained:
            add("saturated", f"every row has similarity ≥ {SATURATED_COS} for {state.saturated_steps} steps", "cos")

        if cos is not None and all(math.isfinite(v) for v in (cos.min, cos.mean, cos.max)):
            now = (cos.min, cos.mean, cos.max)
            if state.last_cos is not None and all(abs(x - y) <= CONSTANT_TOLERANCE for x, y in zip(now, state.last_cos)):
                state.constant_steps += 1
            else:
                state.constant_steps = 1
            state.last_cos = now
        else:
            state.constant_steps, state.last_cos = 0, None
        if state.constant_steps >= CONSTANT_STEPS and not explained:
            add("constant-similarity", f"the similarity has stayed at {_fmt(cos.mean)} for {state.constant_steps} steps", "cos")  # type: ignore[union-attr]

        return [
            Finding(
                code=code,
                severity=severity(code),  # type: ignore[arg-type]
                message=message,
                site=site,
                step=step,
                evidence=proof,
                muted=code in self.ignore,
            )
            for code, message, proof in found
        ]

    def judge_matrix(
        self, step: int, site: str, args: list[TensorSummary], matrix: MatrixFigures, findings: list[Finding]
    ) -> list[Finding]:
        """A similarity matrix step's findings, from the pair's (``judge``) and its figures."""
        return _judge_matrix(self, step, site, args, matrix, findings)


NEGATIVES_MARGIN = 0.05
"""``negatives-like-positives``: the negatives' mean within this of the positives'."""
_NOT_FOR_SELF_MATRIX = ("same-object", "shared-storage", "identical-values")
"""What a self-similarity matrix (``z @ z.T``) is by construction, not by mistake."""


def _judge_matrix(
    judge: Judge, step: int, site: str, args: list[TensorSummary], matrix: MatrixFigures, findings: list[Finding]
) -> list[Finding]:
    """A similarity matrix step's findings: the pair's, less what a matrix is by construction
    (its sides' shapes differ: not a ``broadcast``; ``z @ z.T`` compares z with itself), plus
    ``duplicate-rows`` and ``negatives-like-positives``."""
    dropped = ("broadcast", *(_NOT_FOR_SELF_MATRIX if matrix.self_similarity else ()))
    kept = [f for f in findings if f.code not in dropped]
    added: list[tuple[str, str, list[str]]] = []
    for side, row, other in matrix.duplicates:
        expr = args[side].expr if side < len(args) else f"arg{side}"
        added.append(("duplicate-rows", f"rows {row} and {other} of {expr} are the same vector", [f"args.{side}"]))
    if len(added) > 1:
        added = [("duplicate-rows", "; ".join(m for _, m, _ in added), [p for _, _, proof in added for p in proof])]
    positives, negatives = matrix.positives, matrix.negatives
    alike = (
        positives is not None and negatives is not None
        and math.isfinite(positives.mean) and math.isfinite(negatives.mean)
        and negatives.mean >= positives.mean - NEGATIVES_MARGIN
    )
    steps = judge._alike_steps[site] = judge._alike_steps.get(site, 0) + 1 if alike else 0
    if alike and steps >= PERSIST_STEPS:
        assert positives is not None and negatives is not None
        which = "by labels" if matrix.by_labels else "the diagonal"
        message = f"mean similarity of negatives {negatives.mean:.3f} against positives {positives.mean:.3f} ({which}) for {steps} steps"
        added.append(("negatives-like-positives", message, ["matrix.positives", "matrix.negatives"]))
    return kept + [
        Finding(code=code, severity=CATALOG[code].severity, message=message, site=site, step=step, evidence=proof, muted=code in judge.ignore)
        for code, message, proof in added
    ]

