"""Numbers read the same everywhere, and a similarity of 0.99996 never reads as 1."""

from __future__ import annotations

import math

from cossim_tui.tui.format import fmt_cos, fmt_float, fmt_plural, fmt_shape, fmt_values, fmt_yes_no


def test_fmt_float_keeps_four_significant_digits_and_spells_non_finite():
    assert fmt_float(5.65685) == "5.657"
    assert fmt_float(0.000123456) == "0.0001235"
    assert fmt_float(123456.0) == "1.235e+05"
    assert fmt_float(-0.0) == "0"
    assert fmt_float(math.nan) == "nan"
    assert fmt_float(math.inf) == "inf"
    assert fmt_float(-math.inf) == "-inf"
    assert fmt_float(None) == "n/a"


def test_fmt_cos_never_rounds_a_near_one_to_one():
    assert fmt_cos(1.0) == "1.0000"
    assert fmt_cos(0.9993) == "0.9993"
    assert fmt_cos(0.99996) == "0.99996"
    assert fmt_cos(0.99999994) == "0.9999999"
    assert fmt_cos(-0.99996) == "-0.99996"
    assert fmt_cos(-0.00001) == "0.0000"
    assert fmt_cos(math.nan) == "nan"


def test_shapes_lists_and_words():
    assert fmt_shape([1, 32]) == "(1, 32)"
    assert fmt_shape([5]) == "(5,)"
    assert fmt_shape([]) == "()"
    assert fmt_values([0.5, 1.0, 2.0], limit=2) == "[0.5, 1, …]"
    assert fmt_values([0.5], more=True) == "[0.5, …]"
    assert fmt_plural(1, "step") == "1 step"
    assert fmt_plural(3000, "step") == "3,000 steps"
    assert (fmt_yes_no(True), fmt_yes_no(False), fmt_yes_no(None)) == ("YES", "NO", "n/a")
