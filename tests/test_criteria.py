"""Criteria: statistics compared with bars."""
from __future__ import annotations

import pytest

import fieldcheck as fc
from fieldcheck.claim import criteria
from fieldcheck import alpha_star, effect, r2, recovered, spearman, top_k_overlap
from fieldcheck.errors import CriterionError


def test_criteria_print_as_written():
    assert str(r2 > 0.9) == "r2 > 0.9"
    assert str(spearman >= 0.8) == "spearman >= 0.8"
    assert str(top_k_overlap(10) >= 0.7) == "top_k_overlap(10) >= 0.7"
    assert str(effect < -1.0) == "effect < -1.0"
    assert str(alpha_star >= 0.3) == "alpha_star >= 0.3"
    assert str(alpha_star(tol=0.05) >= 0.3) == "alpha_star(tol=0.05) >= 0.3"
    assert str(0.9 < r2) == "r2 > 0.9"  # reflected comparison


def test_parameters_and_defaults():
    assert alpha_star.param("tol") == 0.1
    assert alpha_star(tol=0.05).param("tol") == 0.05
    assert alpha_star(0.2).param("tol") == 0.2
    assert top_k_overlap(5).param("k") == 5
    assert (r2 > 0.9) == (r2 > 0.9) and (r2 > 0.9) != (r2 >= 0.9)


def test_top_level_names():
    for name in ("r2", "spearman", "pearson", "top_k_overlap", "recovered", "effect", "rate",
                 "alpha_star", "depth_share", "cpr", "mean"):
        assert isinstance(getattr(fc, name), criteria.Statistic)
    assert criteria.stat("r2") == r2


def test_unknown_statistic_names_the_valid_ones():
    with pytest.raises(CriterionError, match="unknown statistic 'foo'.*r2.*recovered"):
        criteria.stat("foo") > 1


@pytest.mark.parametrize("make,match", [
    (lambda: r2(3), "takes no arguments"),
    (lambda: top_k_overlap(0), "positive integer"),
    (lambda: top_k_overlap(2.5), "positive integer"),
    (lambda: top_k_overlap(True), "positive integer"),
    (lambda: alpha_star(tol=-1), "positive number"),
    (lambda: alpha_star(tol=float("nan")), "positive number"),
    (lambda: alpha_star(width=2), "no parameter 'width'"),
    (lambda: r2 > float("nan"), "finite"),
    (lambda: r2 > float("inf"), "finite"),
    (lambda: r2 > "high", "must be a number"),
    (lambda: r2 > True, "must be a number"),
    (lambda: r2 > spearman, "with a number"),
    (lambda: r2 == 0.9, "never equals"),
    (lambda: r2 != 0.9, "not a criterion"),
])
def test_malformed_criteria(make, match):
    with pytest.raises(CriterionError, match=match):
        make()


def test_a_criterion_is_not_a_boolean():
    with pytest.raises(CriterionError, match="pass it to an assertion"):
        assert r2 > 0.9
    with pytest.raises(CriterionError, match="chained"):
        0.5 < r2 < 0.9  # noqa: B015
    with pytest.raises(CriterionError, match="not a truth value"):
        bool(recovered)


def test_as_criteria_checks_applicability():
    ok = criteria.as_criteria((r2 > 0.9,), "assert_x", ("r2", "spearman"))
    assert ok == [r2 > 0.9]
    with pytest.raises(CriterionError, match="recovered is not a statistic of this assertion; "
                                             "valid: r2, spearman"):
        criteria.as_criteria((recovered > 0.8,), "assert_x", ("r2", "spearman"))
    with pytest.raises(CriterionError, match="without a bar"):
        criteria.as_criteria((r2,), "assert_x", ("r2",))
    with pytest.raises(CriterionError, match="got a bool"):
        criteria.as_criteria((True,), "assert_x", ("r2",))
    with pytest.raises(CriterionError, match="needs k"):
        criteria.as_criteria((top_k_overlap >= 0.5,), "assert_x", ("top_k_overlap",))
    with pytest.raises(CriterionError, match="expects criteria"):
        criteria.as_criteria(("r2 > 0.9",), "assert_x", ("r2",))
