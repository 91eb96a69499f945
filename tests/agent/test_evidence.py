"""``EvidenceCollector`` on real tensors: stale partners, collapse, common mode, precision, memory."""

from __future__ import annotations

import gc
import math
import weakref

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from cossim_tui.agent.evidence import (  # noqa: E402
    EvidenceCollector,
    collapse_score,
    common_mode,
    common_mode_drop,
    sample_vectors,
)
from cossim_tui.agent import evidence_queue  # noqa: E402
from cossim_tui.agent import spread as spread_module  # noqa: E402
from cossim_tui.diagnostics.judge import Evidence  # noqa: E402

SITE = "train.py:20"


def observe(
    collector: EvidenceCollector,
    step: int,
    x1: torch.Tensor,
    x2: torch.Tensor,
    *,
    site: str = SITE,
    exprs: tuple[str, str] = ("vector1", "vector2"),
    dim: int = -1,
    eps: float = 1e-8,
) -> Evidence:
    result = F.cosine_similarity(x1, x2, dim=dim, eps=eps)
    equal_pair = x1 is x2 or (x1.shape == x2.shape and bool(torch.equal(x1.detach(), x2.detach())))
    return collector.observe(step, site, exprs, x1, x2, dim, eps, equal_pair, result)


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


# -- stale partners ---------------------------------------------------------------------------


def test_stale_partner_through_the_same_memory() -> None:
    """The article's loop: the partner is the previous batch's anchor, `.detach()`ed."""
    collector = EvidenceCollector()
    model = torch.nn.Linear(16, 8)
    vector1 = model(torch.randn(1, 16))
    assert observe(collector, 0, vector1, model(torch.randn(1, 16)).detach()).stale == []
    vector2 = vector1.detach()
    vector1 = model(torch.randn(1, 16))
    (match,) = observe(collector, 1, vector1, vector2).stale
    assert (match.arg, match.earlier_step, match.earlier_arg, match.earlier_expr) == (1, 0, 0, "vector1")
    assert match.same_memory and match.detached


def test_stale_partner_through_equal_values() -> None:
    """The partner is a `.clone()` of the previous batch's anchor: new memory, same values."""
    collector = EvidenceCollector()
    anchor = torch.randn(4, 8)
    observe(collector, 0, anchor, torch.randn(4, 8), exprs=("anchor", "partner"))
    partner = anchor.clone()
    (match,) = observe(collector, 1, torch.randn(4, 8), partner, exprs=("anchor", "partner")).stale
    assert (match.arg, match.earlier_step, match.earlier_expr) == (1, 0, "anchor")
    assert not match.same_memory and not match.detached


def stale_once_the_anchor_is_gone(values: torch.Tensor) -> list:
    """Step 0 compares an anchor holding ``values``; step 1 a copy of it, after the anchor was
    freed: only its fingerprint can tell. The stale matches of step 1."""
    collector = EvidenceCollector()
    anchor, partner = values.clone(), values.clone()
    observe(collector, 0, anchor, torch.randn(values.shape))
    gone = weakref.ref(anchor.untyped_storage())
    del anchor
    gc.collect()
    assert gone() is None
    return observe(collector, 1, torch.randn(values.shape), partner).stale


def test_stale_partner_by_fingerprint_when_the_earlier_tensor_is_gone() -> None:
    (match,) = stale_once_the_anchor_is_gone(torch.randn(4, 8))
    assert not match.same_memory and match.earlier_step == 0


def test_a_stale_partner_is_found_whatever_the_last_bits_of_its_mean_and_std(monkeypatch) -> None:
    """Summarised alone or in a stack, the same values can reduce to means and stds a few ulps
    apart (on a GPU the order of a reduction depends on the layout): the match must not."""
    from cossim_tui.agent import summaries

    first_pass = summaries.ArgValues.first_pass
    calls = iter(range(1_000_000))

    def nudged(self, transfer):  # every other summary's mean and std one ulp up
        figures = list(first_pass(self, transfer))
        if next(calls) % 2:
            figures[0], figures[1] = math.nextafter(figures[0], math.inf), math.nextafter(figures[1], math.inf)
        return figures

    monkeypatch.setattr(summaries.ArgValues, "first_pass", nudged)
    (match,) = stale_once_the_anchor_is_gone(torch.randn(8, 32))
    assert match.earlier_step == 0 and not match.same_memory


@pytest.mark.parametrize("where", [0, 77, 127])
def test_a_stale_partner_with_an_infinity_is_found_wherever_the_infinity_is(where) -> None:
    anchor = torch.randn(8, 16)
    anchor.view(-1)[where] = math.inf
    (match,) = stale_once_the_anchor_is_gone(anchor)
    assert match.earlier_step == 0


def test_a_value_seen_before_that_differs_in_one_element_is_not_stale() -> None:
    collector = EvidenceCollector()
    anchor = torch.randn(4, 8)
    observe(collector, 0, anchor, torch.randn(4, 8))
    nearly = anchor.clone()
    nearly[3, 7] += 1e-3
    assert observe(collector, 1, torch.randn(4, 8), nearly).stale == []


def test_fresh_tensors_are_not_stale() -> None:
    collector = EvidenceCollector()
    for step in range(12):
        evidence = observe(collector, step, torch.randn(4, 8), torch.randn(4, 8))
        assert evidence.stale == []


def test_constant_tensors_are_not_fingerprinted() -> None:
    # All-zero (or all-equal) tensors recur legitimately; zero-norm speaks for the zeros.
    collector = EvidenceCollector()
    for step in range(3):
        assert observe(collector, step, torch.zeros(4, 8), torch.randn(4, 8)).stale == []


def test_reuse_within_one_pass_of_the_loop_is_not_stale() -> None:
    """An anchor compared with a positive, then with a negative, at two call sites."""
    collector = EvidenceCollector()
    step = 0
    for _ in range(3):
        with torch.no_grad():
            anchor, positive, negative = torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16)
        assert observe(collector, step, anchor, positive, site="t.py:10", exprs=("anchor", "positive")).stale == []
        assert observe(collector, step + 1, anchor, negative, site="t.py:11", exprs=("anchor", "negative")).stale == []
        step += 2


def test_a_tensor_with_autograd_history_is_of_this_batch() -> None:
    """A helper called twice per batch: one site, but the anchor belongs to the live graph."""
    collector = EvidenceCollector()
    model = torch.nn.Linear(16, 8)
    anchor = model(torch.randn(4, 16))
    observe(collector, 0, anchor, model(torch.randn(4, 16)), site="helper.py:3", exprs=("a", "b"))
    assert observe(collector, 1, anchor, model(torch.randn(4, 16)), site="helper.py:3", exprs=("a", "b")).stale == []


def test_a_partner_kept_with_its_graph_across_backward_is_stale() -> None:
    """`vector2 = vector1` without `.detach()`: the graph was freed by the previous backward()."""
    collector = EvidenceCollector()
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Tanh())
    vector1 = model(torch.randn(1, 16))
    observe(collector, 0, vector1, model(torch.randn(1, 16)))
    vector1.sum().backward()
    vector2, vector1 = vector1, model(torch.randn(1, 16))
    (match,) = observe(collector, 1, vector1, vector2).stale
    assert (match.arg, match.earlier_step, match.earlier_arg, match.same_memory, match.detached) == (1, 0, 0, True, False)


def test_a_partner_that_is_never_updated_is_stale_at_the_next_pass() -> None:
    collector = EvidenceCollector()
    target = torch.randn(4, 8)  # computed once, before the loop
    assert observe(collector, 0, torch.randn(4, 8), target, exprs=("emb", "target")).stale == []
    (match,) = observe(collector, 1, torch.randn(4, 8), target, exprs=("emb", "target")).stale
    assert (match.arg, match.earlier_arg, match.earlier_expr, match.same_memory) == (1, 1, "target", True)


def test_the_window_is_keep_steps_long() -> None:
    for others, seen in ((1, True), (2, True), (3, False)):
        collector = EvidenceCollector(keep_steps=3)
        anchor = torch.randn(4, 8)
        observe(collector, 0, anchor, torch.randn(4, 8))
        for step in range(1, others + 1):
            observe(collector, step, torch.randn(4, 8), torch.randn(4, 8))
        stale = observe(collector, others + 1, torch.randn(4, 8), anchor.detach()).stale
        assert bool(stale) is seen, (others, stale)
        if seen:
            assert stale[0].earlier_step == 0


def test_fingerprints_leave_with_their_steps() -> None:
    """The look-up of fingerprints seen in the window holds exactly the window's arguments."""
    collector = EvidenceCollector(keep_steps=3)
    repeated = torch.randn(4, 8)
    for step in range(20):
        observe(collector, step, torch.randn(4, 8), repeated if step % 2 else torch.randn(4, 8))
        window = [seen.fingerprint for _, step_seen in collector.partners._seen for seen in step_seen]
        assert all(print_.digest == hash(print_.key) for print_ in window)
        digests = [print_.digest for print_ in window]
        assert collector.partners._prints == {digest: digests.count(digest) for digest in digests}
    nothing_kept = EvidenceCollector(keep_steps=0)
    anchor = torch.randn(4, 8)
    for step in range(3):
        assert observe(nothing_kept, step, anchor, torch.randn(4, 8)).stale == []
    assert nothing_kept.partners._prints == {}


def test_nothing_is_kept_alive() -> None:
    collector = EvidenceCollector()
    model = torch.nn.Linear(16, 8)
    x1 = model(torch.randn(4, 16))
    x2 = torch.randn(4, 8)
    refs = [weakref.ref(x1), weakref.ref(x2), weakref.ref(x1.untyped_storage()), weakref.ref(x2.untyped_storage())]
    for step in range(3):
        observe(collector, step, x1, x2)
    del x1, x2
    gc.collect()
    assert [r() for r in refs] == [None, None, None, None]
    # ... and the collector still works once they are gone.
    assert observe(collector, 3, torch.randn(4, 8), torch.randn(4, 8)).stale == []


# -- collapse -----------------------------------------------------------------------------------


def test_collapse_score_of_random_rows_is_about_1() -> None:
    score = collapse_score(torch.randn(256, 32))
    assert score is not None and 0.9 < score < 1.1


def test_collapse_score_of_identical_rows_is_0() -> None:
    assert collapse_score(torch.randn(1, 32).repeat(16, 1)) == pytest.approx(0.0, abs=1e-9)
    nearly = torch.randn(1, 32) + 1e-4 * torch.randn(16, 32)
    assert collapse_score(nearly) < 1e-3  # type: ignore[operator]


def test_collapse_score_needs_4_rows_of_2_dims() -> None:
    assert collapse_score(torch.randn(3, 32)) is None
    assert collapse_score(torch.randn(8, 1)) is None
    assert collapse_score(torch.randn(4, 2)) is not None


def test_batch_collapse_per_argument() -> None:
    direction = torch.randn(1, 32)
    collapsed = direction + 1e-3 * torch.randn(8, 32)
    evidence = observe(EvidenceCollector(), 0, collapsed, torch.randn(8, 32))
    low, high = evidence.batch_collapse
    assert low is not None and low < 0.01
    assert high is not None and high > 0.7
    assert observe(EvidenceCollector(), 0, torch.randn(3, 32), torch.randn(3, 32)).batch_collapse == [None, None]


def test_one_vector_repeated_is_one_sample_not_a_collapsed_batch() -> None:
    """A query compared with every key: `expand` or `repeat` make n rows of one vector."""
    query, keys = torch.randn(1, 32), torch.randn(8, 32)
    for repeated in (query.expand_as(keys), query.repeat(8, 1)):
        evidence = observe(EvidenceCollector(), 0, repeated, keys)
        assert evidence.batch_collapse[0] is None
        assert evidence.batch_collapse[1] is not None and evidence.batch_collapse[1] > 0.7
        # The keys' own mean cosine is about 0, so their drop cannot reach 0.3: not measured.
        assert evidence.common_mode_drop is None


def test_zero_rows_have_no_direction() -> None:
    rows = torch.randn(8, 32)
    rows[:6] = 0
    assert sample_vectors(rows).shape == (2, 32)
    evidence = observe(EvidenceCollector(), 0, torch.zeros(8, 32), torch.zeros(8, 32))
    assert evidence.batch_collapse == [None, None] and evidence.common_mode_drop is None
    nan_rows = torch.randn(8, 32)
    nan_rows[0, 0] = math.nan
    assert sample_vectors(nan_rows).shape == (7, 32)


def test_collapse_across_steps_with_batch_size_1() -> None:
    direction = torch.randn(1, 32)
    collector = EvidenceCollector()
    scores = [observe(collector, step, direction + 1e-3 * torch.randn(1, 32), direction + 1e-3 * torch.randn(1, 32)).ring_collapse
              for step in range(4)]
    assert scores[0] is None  # two rows so far
    assert all(s is not None and s < 0.01 for s in scores[1:])
    collector = EvidenceCollector()
    healthy = [observe(collector, step, torch.randn(1, 32), torch.randn(1, 32)).ring_collapse for step in range(40)]
    assert healthy[-1] is not None and healthy[-1] > 0.8


def test_the_ring_skips_stale_partners_and_copies() -> None:
    direction = torch.randn(1, 32)
    collector = EvidenceCollector()
    fresh = [torch.randn(1, 32) for _ in range(4)]
    # The partner is the same vector every time: only the fresh side counts across steps.
    for step, x in enumerate(fresh):
        evidence = observe(collector, step, x, direction)
    assert evidence.ring_collapse is not None and evidence.ring_collapse > 0.5
    ring = collector.rings.at(SITE).rows
    assert len(ring) == 4 + 1  # four fresh rows and the partner once (at step 0, before it was stale)


@pytest.mark.parametrize("on_device", [False, True])
def test_few_rows_feed_the_ring_alike_on_the_cpu_and_from_a_device(on_device, monkeypatch) -> None:
    """On the CPU the unit rows are made with the capture; from a device, on the host, so that
    scoring the ring never waits for the device."""
    monkeypatch.setattr(evidence_queue, "on_device", lambda values: on_device)
    torch.manual_seed(0)
    rows = [torch.randn(2, 16) for _ in range(6)]
    collector = EvidenceCollector()
    for step, x in enumerate(rows):
        partner = torch.zeros(2, 16) if step == 5 else x.flip(0) * 2  # zero rows: no direction
        evidence = observe(collector, step, x, partner)
    ring = collector.rings.at(SITE).rows
    assert ring.device.type == "cpu" and ring.shape == (2 * 6 + 2 * 5, 16)
    expected = torch.cat([F.normalize(torch.cat([x, x.flip(0)]), dim=-1) for x in rows[:5]] + [F.normalize(rows[5], dim=-1)])
    assert torch.allclose(ring.double(), expected.double(), atol=1e-6)
    assert evidence.ring_collapse == pytest.approx(collapse_score(expected), abs=1e-6)


@pytest.mark.parametrize("every", [1, 3, 50], ids=["scored every push", "every third", "every fiftieth"])
@pytest.mark.parametrize("sizes", [[1], [3, 1, 5, 2], [7]], ids=["one row a call", "mixed", "seven rows a call"])
def test_the_ring_s_running_totals_give_the_score_of_its_rows(sizes, every) -> None:
    """Scored every few pushes, over many times its capacity (pieces leaving whole and in part,
    counted or not yet), the ring's score is ``collapse_score`` of exactly its last ``capacity``
    rows, as if made from them anew: collapsed and healthy stretches alike, and vectors of
    another width half way through."""
    torch.manual_seed(1)
    ring = spread_module.SiteRing(32)
    pushed: list[torch.Tensor] = []
    for call in range(300):
        width = 16 if call < 150 else 24
        if call in (0, 150):
            direction, pushed = torch.randn(width, dtype=torch.float64), []
        count = sizes[call % len(sizes)]
        spread = 1e-3 if (call // 60) % 2 else 1.0  # collapsed, then healthy, then collapsed again
        rows = F.normalize(direction + spread * torch.randn(count, width, dtype=torch.float64), dim=-1)
        if call % 4 == 1:
            rows = rows.float()  # unit rows arrive in float32 from a device
        ring.push(rows)
        pushed.append(rows.double())
        if call % every:
            continue
        last = torch.cat(pushed)[-32:]
        got = ring.score()
        assert torch.equal(ring.rows, last)
        if last.shape[0] < 4:
            assert got is None
            continue
        # The same figure made from the rows themselves (they are unit already)...
        n, total = last.shape[0], last.sum(dim=0)
        variance = ((last * last).sum(dim=0) - total * total / n).clamp_min(0) / (n - 1)
        assert got == pytest.approx(math.sqrt(width) * float(variance.sqrt().mean()), rel=1e-9, abs=1e-9), call
        # ...and the reference, which normalises them again (float32 rows are unit to ~1e-7).
        assert got == pytest.approx(collapse_score(last), abs=1e-6), call


def test_the_ring_is_bounded() -> None:
    collector = EvidenceCollector(ring_rows=16)
    for step in range(10):
        observe(collector, step, torch.randn(8, 32), torch.randn(8, 32))
    assert len(collector.rings.at(SITE).rows) == 16


# -- common mode ----------------------------------------------------------------------------------


def test_common_mode_of_independent_rows_is_about_0() -> None:
    for n in (4, 8, 64):
        drop, noise = common_mode(torch.randn(n, 32))  # type: ignore[misc]
        assert abs(drop) < 4 * noise
        assert noise == pytest.approx(math.sqrt(2 / (n * (n - 1) * 32)), rel=0.5)


def test_common_mode_of_an_offset_dominated_batch() -> None:
    rows = 3.0 * torch.randn(1, 32) + torch.randn(16, 32)
    drop, noise = common_mode(rows)  # type: ignore[misc]
    assert drop > 0.7 and noise < 0.05
    assert collapse_score(rows) > 0.1  # type: ignore[operator]
    assert common_mode_drop(rows) == pytest.approx(drop)
    evidence = observe(EvidenceCollector(), 0, rows, torch.randn(16, 32))
    assert evidence.common_mode_drop == pytest.approx(drop)
    assert evidence.common_mode_noise == pytest.approx(noise)


def test_the_drop_is_measured_only_where_it_could_reach_the_threshold() -> None:
    """The drop is at most the rows' own mean cosine (n unit vectors have one of at least
    -1/(n-1)): rows that point every which way are not centred at all."""
    for n in (4, 8, 64):
        rows = torch.randn(n, 32)
        assert observe(EvidenceCollector(), 0, rows, torch.randn(n, 32)).common_mode_drop is None
        drop = common_mode_drop(rows)
        assert drop is not None and drop <= float(F.normalize(rows.double(), dim=-1).sum(dim=0).square().sum() - n) / (n * (n - 1)) + 1e-12


@pytest.mark.parametrize("upfront", [False, True])
def test_the_centred_figures_agree_whether_fetched_with_the_rest_or_where_they_matter(upfront, monkeypatch) -> None:
    """On a GPU they come with the one transfer; on the CPU they are made only where they matter."""
    monkeypatch.setattr(evidence_queue, "on_device", lambda values: upfront)
    rows = 3.0 * torch.randn(1, 32) + torch.randn(16, 32)
    drop, noise = common_mode(rows)  # type: ignore[misc]
    for partner in (torch.randn(16, 32), torch.randn(16, 32, dtype=torch.float64)):  # stacked, and each alone
        evidence = observe(EvidenceCollector(), 0, rows, partner)
        assert evidence.common_mode_drop == pytest.approx(drop)
        assert evidence.common_mode_noise == pytest.approx(noise)
    independent = observe(EvidenceCollector(), 0, torch.randn(16, 32), torch.randn(16, 32))
    assert independent.common_mode_drop is None


def test_common_mode_needs_4_rows() -> None:
    assert common_mode(torch.randn(3, 32)) is None
    assert observe(EvidenceCollector(), 0, torch.randn(3, 32), torch.randn(3, 32)).common_mode_drop is None


# -- precision ------------------------------------------------------------------------------------


def test_precision_deviation_of_float32_random_data_is_about_0() -> None:
    evidence = observe(EvidenceCollector(), 0, torch.randn(64, 128), torch.randn(64, 128))
    assert evidence.precision_deviation is not None and evidence.precision_deviation < 1e-6


def test_precision_deviation_of_float16_is_within_tolerance() -> None:
    a, b = torch.randn(32, 64).half(), torch.randn(32, 64).half()
    evidence = observe(EvidenceCollector(), 0, a, b)
    assert evidence.precision_deviation is not None and evidence.precision_deviation < 1e-3


def test_precision_deviation_when_squares_overflow_float32() -> None:
    a = torch.randn(8, 32) * 1e20
    b = a + torch.randn(8, 32) * 1e20
    evidence = observe(EvidenceCollector(), 0, a, b)
    assert evidence.precision_deviation is not None and evidence.precision_deviation > 0.1


def test_precision_of_a_broadcast_pair_and_of_1d_vectors() -> None:
    evidence = observe(EvidenceCollector(), 0, torch.randn(1, 32), torch.randn(8, 32))
    assert evidence.precision_deviation is not None and evidence.precision_deviation < 1e-6
    evidence = observe(EvidenceCollector(), 0, torch.randn(32), torch.randn(32), dim=0)
    assert evidence.precision_deviation is not None and evidence.precision_deviation < 1e-6


def test_non_tensor_arguments_give_empty_evidence() -> None:
    collector = EvidenceCollector()
    evidence = collector.observe(0, SITE, ("a", "b"), [1.0, 2.0], torch.randn(2), -1, 1e-8, False, None)
    assert evidence == Evidence(eps=1e-8)


def test_a_batch_of_deviations_is_each_rows_deviation_bit_for_bit() -> None:
    """``precision.deviations`` (a batch of parked calls at once) gives what ``deviation`` gives
    each call on the host: the largest |exact − got|, a NaN on one side infinitely far, NaN on
    both sides left out."""
    from cossim_tui.agent.precision import deviation, deviations

    torch.manual_seed(3)
    exact = torch.rand(6, 8, dtype=torch.float64) * 2 - 1
    got = (exact + torch.randn(6, 8, dtype=torch.float64) * 1e-7).to(torch.float32)
    exact[1, 3] = math.nan  # one side
    got[2, 5] = math.nan  # the other side
    exact[3, 0], got[3, 0] = math.nan, math.nan  # both: left out
    exact[4], got[4] = math.nan, math.nan  # every row both: nothing apart
    got[5, 2] = math.inf
    batch = deviations(exact, got).tolist()
    each = [deviation(e, g) for e, g in zip(exact.tolist(), got.tolist())]
    assert batch == each
    assert batch[1] == batch[2] == math.inf and batch[4] == 0.0 and batch[5] == math.inf
