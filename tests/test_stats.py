"""fieldcheck.claim.statistics against scipy and statsmodels."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sst

from fieldcheck import config
from fieldcheck.claim import statistics as stats
from fieldcheck.errors import CriterionError, InsufficientData


def _mean_stat(x):
    return lambda idx: x[idx].mean(-1)


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_bootstrap_matches_scipy_exactly_without_expansion(method):
    x = np.random.default_rng(1).gamma(2.0, 1.0, 40)
    ours = stats.bootstrap(_mean_stat(x), x.size, alpha=0.05, n_boot=2000, method=method,
                           rng=np.random.default_rng(7), expand=False)
    ref = sst.bootstrap((x,), np.mean, n_resamples=2000, confidence_level=0.90,
                        method="BCa" if method == "bca" else "percentile",
                        rng=np.random.default_rng(7))
    assert ours.low == pytest.approx(ref.confidence_interval.low, rel=1e-12)
    assert ours.high == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert ours.estimate == pytest.approx(x.mean())
    assert ours.level == pytest.approx(0.90)


def test_expanded_interval_is_wider_and_contains_scipys():
    x = np.random.default_rng(2).normal(size=20)
    plain = stats.bootstrap(_mean_stat(x), 20, alpha=0.05, n_boot=2000, method="bca",
                            rng=np.random.default_rng(3), expand=False)
    wide = stats.bootstrap(_mean_stat(x), 20, alpha=0.05, n_boot=2000, method="bca",
                           rng=np.random.default_rng(3))
    assert wide.low < plain.low and wide.high > plain.high
    assert "expanded" in wide.method


@pytest.mark.parametrize("method", ["bca", "percentile"])
@pytest.mark.parametrize("op", [">", "<"])
def test_bootstrap_p_value_inverts_the_bound(method, op):
    """At the bar equal to the one-sided bound, the p-value is alpha."""
    x = np.random.default_rng(4).normal(0.5, 1.0, 50)
    kw = dict(alpha=0.05, n_boot=4000, method=method)
    est = stats.bootstrap(_mean_stat(x), 50, rng=np.random.default_rng(5), **kw)
    at = stats.bootstrap(_mean_stat(x), 50, rng=np.random.default_rng(5), op=op,
                         bar=est.bound(op), **kw)
    assert at.p_value == pytest.approx(0.05, abs=0.004)
    inside = stats.bootstrap(_mean_stat(x), 50, rng=np.random.default_rng(5), op=op,
                             bar=est.estimate, **kw)
    assert inside.p_value == pytest.approx(0.5, abs=0.06)


def test_bca_degenerate_falls_back_to_percentile_and_says_so():
    x = np.full(12, 3.0)
    est = stats.bootstrap(_mean_stat(x), 12, alpha=0.05, n_boot=500, method="bca",
                          rng=np.random.default_rng(0), op=">", bar=2.0)
    assert (est.low, est.high) == (3.0, 3.0)
    assert "percentile" in est.method and "BCa undefined" in est.method
    assert est.p_value <= 1 / 501 + 1e-12 or est.p_value < 0.01


def test_bootstrap_needs_two_examples():
    with pytest.raises(InsufficientData):
        stats.bootstrap(_mean_stat(np.ones(1)), 1, alpha=0.05, n_boot=100, method="bca",
                        rng=np.random.default_rng(0))


def test_discrete_bootstrap_bounds_stay_on_the_grid():
    x = np.random.default_rng(0).integers(0, 3, 30) / 10.0
    est = stats.bootstrap(lambda idx: np.round(x[idx].mean(-1), 1), 30, alpha=0.05,
                          n_boot=1000, method="bca", rng=np.random.default_rng(0),
                          discrete=True)
    for v in (est.low, est.high):
        assert v == pytest.approx(round(v, 1))


def test_resample_weights_count_examples():
    idx = np.array([[[0, 0, 1, 3], [2, 2, 2, 2]]])
    w = stats.resample_weights(idx, 5)
    assert w.shape == (1, 2, 5)
    assert w[0].tolist() == [[2, 1, 0, 1, 0], [0, 0, 4, 0, 0]]
    a = np.arange(15.0).reshape(3, 5)  # a cluster resample of columns as a weighted sum
    assert np.allclose(w[0] @ a.T, a[:, idx[0]].sum(-1).T)


# --- sign-flip ------------------------------------------------------------------------------
@pytest.mark.parametrize("alternative,op", [("greater", ">"), ("less", "<")])
def test_signflip_exact_p_matches_scipy_permutation_test(alternative, op):
    x = np.random.default_rng(3).normal(0.4, 1.0, 9)
    bar = 0.1
    ours = stats.signflip_mean(x, alpha=0.05, n_boot=2000, rng=np.random.default_rng(0),
                               op=op, bar=bar)
    ref = sst.permutation_test((x - bar,), np.mean, permutation_type="samples",
                               alternative=alternative, vectorized=True, n_resamples=np.inf)
    assert "exact" in ours.method
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-12)


def test_signflip_random_p_close_to_scipy():
    x = np.random.default_rng(5).normal(0.3, 1.0, 40)
    ours = stats.signflip_mean(x, alpha=0.05, n_boot=20000, rng=np.random.default_rng(0),
                               op=">", bar=0.0)
    ref = sst.permutation_test((x,), np.mean, permutation_type="samples",
                               alternative="greater", vectorized=True, n_resamples=20000,
                               rng=np.random.default_rng(1))
    assert ours.p_value == pytest.approx(ref.pvalue, abs=0.006)


def test_signflip_bound_is_the_test_inversion():
    x = np.random.default_rng(6).normal(0.3, 1.0, 40)
    kw = dict(alpha=0.05, n_boot=3000)
    est = stats.signflip_mean(x, rng=np.random.default_rng(2), **kw)
    just_below = stats.signflip_mean(x, rng=np.random.default_rng(2), op=">",
                                     bar=est.low - 1e-9, **kw)
    at = stats.signflip_mean(x, rng=np.random.default_rng(2), op=">", bar=est.low + 1e-9,
                             **kw)
    assert just_below.p_value < 0.05 <= at.p_value
    # and close to the t interval for normal data
    t_lo, t_hi = sst.t.interval(0.90, x.size - 1, x.mean(), sst.sem(x))
    assert est.low == pytest.approx(t_lo, abs=0.03)
    assert est.high == pytest.approx(t_hi, abs=0.03)


def test_signflip_with_too_few_examples_never_clears():
    est = stats.signflip_mean(np.array([5.0, 6.0, 7.0, 8.0]), alpha=0.05, n_boot=2000,
                              rng=np.random.default_rng(0), op=">", bar=0.0)
    assert est.low == -math.inf and est.p_value == pytest.approx(1 / 16)
    assert stats.min_n_signflip(0.05) == 5
    assert stats.min_n_signflip(0.01) == 7


def test_mean_test_needs_both_tests():
    x = np.random.default_rng(0).exponential(1.0, 30)
    est = stats.mean_test(x, alpha=0.05, n_boot=1000, method="bca",
                          rng=np.random.default_rng(0), op=">", bar=0.8)
    sf, bs = est.details["signflip"], est.details["bootstrap"]
    assert est.low == min(sf[0], bs[0]) and est.high == max(sf[1], bs[1])
    assert est.p_value == max(sf[2], bs[2])


# --- rates ----------------------------------------------------------------------------------
@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (17, 40), (40, 41)])
def test_clopper_pearson_matches_statsmodels(k, n):
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = stats.clopper_pearson(k, n, 0.90)
    ref_lo, ref_hi = proportion_confint(k, n, alpha=0.10, method="beta")
    assert lo == pytest.approx(ref_lo, abs=1e-10)
    assert hi == pytest.approx(ref_hi, abs=1e-10)


def test_binomial_rate_p_value_matches_binomtest():
    s = np.array([1] * 24 + [0] * 8, bool)
    est = stats.binomial_rate(s, alpha=0.05, op=">", bar=0.5)
    assert est.estimate == 0.75
    assert est.p_value == pytest.approx(sst.binomtest(24, 32, 0.5, "greater").pvalue)
    # exact test inversion: the bound clears the bar iff p < alpha
    assert (est.low > 0.5) == (est.p_value < 0.05)


@pytest.mark.parametrize("bar,op,alpha", [(0.9, ">", 0.05), (0.5, ">", 0.05), (0.95, ">=", 0.01),
                                          (0.1, "<", 0.05)])
def test_min_n_rate_is_tight(bar, op, alpha):
    n = stats.min_n_rate(bar, op, alpha)
    good = np.ones(n, bool) if op in (">", ">=") else np.zeros(n, bool)
    assert stats.binomial_rate(good, alpha=alpha).low > bar or op in ("<", "<=")
    lo, hi = stats.clopper_pearson(int(good.sum()), n, 1 - 2 * alpha)
    lo1, hi1 = stats.clopper_pearson(int(good[:-1].sum()), n - 1, 1 - 2 * alpha)
    if op in (">", ">="):
        assert lo > bar >= lo1
    else:
        assert hi < bar <= hi1


def test_min_n_rate_impossible_bars():
    assert stats.min_n_rate(1.0, ">=", 0.05) is None
    assert stats.min_n_rate(0.0, "<", 0.05) is None
    with pytest.raises(InsufficientData, match="never"):
        stats.require_n(100, None, "`rate >= 1.0`")
    with pytest.raises(InsufficientData, match="at least 29 examples, got 20"):
        stats.require_n(20, 29, "`rate > 0.9`")


# --- multiple comparisons -------------------------------------------------------------------
@pytest.mark.parametrize("method,sm", [("holm", "holm"), ("bh", "fdr_bh"),
                                       ("bonferroni", "bonferroni")])
def test_adjust_pvalues_matches_multipletests(method, sm):
    from statsmodels.stats.multitest import multipletests

    p = [0.001, 0.04, 0.03, 0.2, 0.01, 0.049]
    assert stats.adjust_pvalues(p, method) == pytest.approx(list(multipletests(p, method=sm)[1]))


def test_adjust_pvalues_keeps_missing_entries_out_of_the_family():
    from statsmodels.stats.multitest import multipletests

    out = stats.adjust_pvalues([0.01, None, 0.04, float("nan"), 0.03], "holm")
    ref = multipletests([0.01, 0.04, 0.03], method="holm")[1]
    assert out[1] is None and math.isnan(out[3])
    assert [out[0], out[2], out[4]] == pytest.approx(list(ref))
    assert stats.adjust_pvalues([0.2, 0.01], "none") == [0.2, 0.01]
    with pytest.raises(CriterionError, match="holm"):
        stats.adjust_pvalues([0.1], "sidak-ish")


# --- seeds and conversions ------------------------------------------------------------------
def test_derive_seed_is_stable_and_distinct():
    a = stats.derive_seed(0, "tests/test_x.py::test_claim", "r2 > 0.9")
    assert a == stats.derive_seed(0, "tests/test_x.py::test_claim", "r2 > 0.9")
    assert a != stats.derive_seed(1, "tests/test_x.py::test_claim", "r2 > 0.9")
    assert a != stats.derive_seed(0, "tests/test_x.py::test_claim", "r2 > 0.8")
    # pinned: must not change across Python processes (PYTHONHASHSEED) or versions
    assert a == 6475293455558964611
    assert 0 <= a < 2 ** 63


def test_derive_seed_does_not_depend_on_the_hash_seed():
    import subprocess
    import sys

    code = "from fieldcheck.claim.statistics import derive_seed; print(derive_seed(0, 'c', 'r2 > 0.9'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": h, "PATH": ""}).stdout for h in ("1", "2")}
    assert len(outs) == 1 and outs.pop().strip() == str(stats.derive_seed(0, "c", "r2 > 0.9"))


def test_to_numpy_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    t = torch.tensor([[1.0, 2.0], [3.0, float("nan")]], dtype=torch.float16)
    arr = stats.to_numpy(t)
    assert arr.dtype == np.float64 and arr.shape == (2, 2)
    assert stats.nonfinite(arr) == (1, (1, 1))
    assert stats.nonfinite(np.ones(3)) is None


# --- config ---------------------------------------------------------------------------------
def test_config_override_and_claim_context_nest_and_restore():
    base = config.get()
    with config.override(alpha=0.01, method="percentile") as s:
        assert s.alpha == 0.01 and config.get().method == "percentile"
        with config.claim_context("tests/a.py::t") as c:
            assert c.claim_id == "tests/a.py::t" and c.alpha == 0.01
        assert config.get().claim_id == base.claim_id
    assert config.get() == base
    assert config.resolve(level=0.99).alpha == pytest.approx(0.01)


@pytest.mark.parametrize("kw", [dict(alpha=float("nan")), dict(alpha=float("inf")),
                                dict(alpha=0.7), dict(alpha=0), dict(level=1.0),
                                dict(decide="maybe"), dict(method="bc"), dict(n_boot=10),
                                dict(seed="x"), dict(colour="red")])
def test_config_rejects_bad_settings(kw):
    with pytest.raises(CriterionError):
        config.resolve(**kw)


def test_config_set_and_reset():
    try:
        config.set(seed=5, n_boot=500)
        assert config.get().seed == 5 and config.get().n_boot == 500
    finally:
        config.reset()
    assert config.get() == config.Settings()
