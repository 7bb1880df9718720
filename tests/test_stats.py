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
def test_bootstrap_matches_scipy_within_one_resample_without_expansion(method):
    """Same resamples as scipy.stats.bootstrap (same seed); our quantiles use Hazen plotting
    positions (k + 1/2) / B instead of numpy's linear k / (B - 1), so each bound lies within
    one order statistic of scipy's."""
    x = np.random.default_rng(1).gamma(2.0, 1.0, 40)
    ours = stats.bootstrap(_mean_stat(x), x.size, alpha=0.05, n_boot=2000, method=method,
                           rng=np.random.default_rng(7), expand=False)
    ref = sst.bootstrap((x,), np.mean, n_resamples=2000, confidence_level=0.90,
                        method="BCa" if method == "bca" else "percentile",
                        rng=np.random.default_rng(7))
    d = np.sort(ref.bootstrap_distribution)
    for mine, theirs in ((ours.low, ref.confidence_interval.low),
                         (ours.high, ref.confidence_interval.high)):
        k = np.searchsorted(d, theirs)
        assert d[max(k - 2, 0)] <= mine <= d[min(k + 1, d.size - 1)]
    assert ours.estimate == pytest.approx(x.mean())
    assert ours.level == pytest.approx(0.90)
    if method == "bca":
        assert ours.details["z0"] != 0 and ours.details["acceleration"] != 0


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


# --- p-values and bounds agree, with no resampling floor --------------------------------------
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_HYP = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _dual(est, op, bar, a):
    """The one-sided bound at level 1 - a clears the bar exactly when p <= a (ties at
    p == a up to float rounding are a convention and skipped)."""
    if abs(est.p_value - a) <= 1e-9 * a:
        return
    assert stats.clears(est.bound(op), op, bar) == (est.p_value <= a), (
        est.bound(op), op, bar, est.p_value, a, est.method)


def _data(seed, n, kind):
    rng = np.random.default_rng(seed)
    if kind == "skewed":
        return rng.exponential(1.0, n) * rng.choice([-1, 1])
    if kind == "ties":
        return rng.integers(0, 4, n).astype(float)
    return rng.normal(rng.normal(), rng.uniform(0.1, 3), n)


_OPS = st.sampled_from([">", ">=", "<", "<="])
_A = st.floats(1e-9, 0.45)


@_HYP
@given(seed=st.integers(0, 10 ** 6), n=st.integers(8, 40), op=_OPS, a=_A,
       z=st.floats(-30, 30), method=st.sampled_from(["bca", "percentile"]),
       kind=st.sampled_from(["normal", "skewed", "ties"]), expand=st.booleans(),
       what=st.sampled_from(["mean", "ratio", "corr"]))
def test_bootstrap_bound_clears_exactly_when_p_le_a(seed, n, op, a, z, method, kind, expand,
                                                     what):
    x = _data(seed, n, kind)
    y = x + np.random.default_rng(seed + 1).normal(0, 1, n) + 3
    if what == "mean":
        stat = _mean_stat(x)
    elif what == "ratio":
        stat = lambda idx: x[idx].sum(-1) / y[idx].sum(-1)  # noqa: E731
    else:
        stat = lambda idx: np.array([np.corrcoef(x[i], y[i])[0, 1] for i in  # noqa: E731
                                     np.atleast_2d(idx)]).reshape(np.shape(idx)[:-1])
    sd = float(np.std(stat(np.random.default_rng(0).integers(0, n, (200, n)))) or 1.0)
    bar = float(stat(np.arange(n))) + z * sd
    est = stats.bootstrap(stat, n, alpha=a, n_boot=300, method=method,
                          rng=np.random.default_rng(seed), op=op, bar=bar, expand=expand)
    _dual(est, op, bar, a)


@_HYP
@given(seed=st.integers(0, 10 ** 6), n=st.integers(8, 30), op=_OPS, a=_A,
       step=st.sampled_from([0.1, 0.25, 1 / 3]), off=st.integers(-6, 6),
       jitter=st.sampled_from([0.0, 0.05, -0.05]))
def test_discrete_bootstrap_bound_clears_exactly_when_p_le_a(seed, n, op, a, step, off, jitter):
    """Bars on the grid (ties with resamples) and off it."""
    x = np.random.default_rng(seed).integers(0, 4, n).astype(float)
    stat = lambda idx: np.round(x[idx].mean(-1) / 3 / step) * step  # noqa: E731
    bar = float(stat(np.arange(n))) + off * step + jitter * step
    est = stats.bootstrap(stat, n, alpha=a, n_boot=300, method="bca",
                          rng=np.random.default_rng(seed), op=op, bar=bar, discrete=True)
    _dual(est, op, bar, a)


@_HYP
@given(seed=st.integers(0, 10 ** 6), n=st.sampled_from([5, 9, 16, 18, 19, 30]), op=_OPS,
       a=_A, z=st.floats(-40, 40), kind=st.sampled_from(["normal", "skewed", "ties"]))
def test_signflip_and_mean_test_bound_clears_exactly_when_p_le_a(seed, n, op, a, z, kind):
    x = _data(seed, n, kind)
    bar = float(x.mean() + z * (x.std() + 1e-3) / math.sqrt(n))
    f = stats.signflip_mean(x, alpha=a, n_boot=500, rng=np.random.default_rng(seed), op=op,
                            bar=bar)
    _dual(f, op, bar, a)
    if n >= stats.MIN_BOOTSTRAP_N:
        m = stats.mean_test(x, alpha=a, n_boot=300, method="bca",
                            rng=np.random.default_rng(seed), op=op, bar=bar)
        _dual(m, op, bar, a)
        _dual(stats.bootstrap_t_mean(x, alpha=a, n_boot=300, rng=np.random.default_rng(seed),
                                     op=op, bar=bar), op, bar, a)


@_HYP
@given(n=st.integers(1, 200), frac=st.floats(0, 1), op=_OPS, a=_A, bar=st.floats(-0.1, 1.1))
def test_rate_bound_clears_exactly_when_p_le_a(n, frac, op, a, bar):
    k = round(frac * n)
    est = stats.binomial_rate(np.arange(n) < k, alpha=a, op=op, bar=bar)
    _dual(est, op, bar, a)


def test_bootstrap_p_value_has_no_resampling_floor():
    """A ratio far above its bar (the issue's `recovered = 0.902 [0.875, 0.928] (n=16),
    needs > 0.5`): p is far below 1/n_boot and does not depend on n_boot."""
    rng = np.random.default_rng(0)
    gap = rng.gamma(4, 0.5, 16)
    num = 0.9 * gap + rng.normal(0, 0.05, 16)
    stat = lambda idx: num[idx].sum(-1) / gap[idx].sum(-1)  # noqa: E731
    ps = [stats.bootstrap(stat, 16, alpha=0.05, n_boot=B, method="bca",
                          rng=np.random.default_rng(1), op=">", bar=0.5).p_value
          for B in (2000, 20000)]
    assert max(ps) < 1e-10
    assert ps[0] == pytest.approx(ps[1], rel=0.5, abs=0)
    # and agrees with a t tail at the bootstrap's standard error to within a few units of z
    e = stats.bootstrap(stat, 16, alpha=0.05, n_boot=2000, method="bca",
                        rng=np.random.default_rng(1), op=">", bar=0.5)
    t = (e.estimate - 0.5) / e.details["bootstrap_se"]
    ref = sst.t.sf(t / math.sqrt(16 / 15), 15)
    assert abs(math.log10(e.p_value) - math.log10(ref)) < 3


def test_exact_signflip_reaches_two_to_the_minus_n():
    x = np.random.default_rng(0).normal(5.0, 1.0, 16)
    e = stats.signflip_mean(x, alpha=0.05, n_boot=2000, rng=np.random.default_rng(0),
                            op=">", bar=0.0)
    assert "exact" in e.method and e.p_value == pytest.approx(2.0 ** -16)


def test_random_signflip_hoeffding_tail_bounds_the_exact_p():
    """Beyond every random flip the Hoeffding tail takes over: below 1/(B+1), and never below
    the exact p-value of all 2**n flips (checked at n = 20 by enumeration)."""
    x = np.random.default_rng(3).normal(1.0, 1.0, 20)
    sx, ss = stats._flip_sums(x + 1.0)
    exact = float(np.mean(sx >= sx[0] - 1e-12))
    e = stats.signflip_mean(x, alpha=0.05, n_boot=200, rng=np.random.default_rng(0),
                            op=">", bar=-1.0)
    assert "random" in e.method and "Hoeffding" in e.method
    assert exact <= e.p_value < 1 / 201


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_bound_at_other_levels_matches_p(method):
    """Estimate.at(a) gives the bounds at another level from the same resamples: the p-value
    is the level at which the bound reaches the bar."""
    x = np.random.default_rng(4).normal(0.5, 1.0, 30)
    e = stats.bootstrap(_mean_stat(x), 30, alpha=0.05, n_boot=1000, method=method,
                        rng=np.random.default_rng(5), op=">", bar=0.0)
    assert e.at(0.05) == (e.low, e.high)
    assert e.at(e.p_value * 1.01)[0] > 0.0 > e.at(e.p_value * 0.99)[0]


def test_bootstrap_t_is_close_to_the_t_interval_for_normal_data_and_wider_on_the_long_side():
    x = np.random.default_rng(8).normal(1.0, 2.0, 60)
    e = stats.bootstrap_t_mean(x, alpha=0.05, n_boot=4000, rng=np.random.default_rng(0))
    lo, hi = sst.t.interval(0.90, 59, x.mean(), sst.sem(x))
    assert e.low == pytest.approx(lo, abs=0.1) and e.high == pytest.approx(hi, abs=0.1)
    y = np.random.default_rng(9).exponential(1.0, 30)   # long right tail: the upper side longer
    e = stats.bootstrap_t_mean(y, alpha=0.05, n_boot=4000, rng=np.random.default_rng(0))
    assert e.high - y.mean() > y.mean() - e.low


@pytest.mark.parametrize("method,sm", [("holm", "holm"), ("bh", "fdr_bh"),
                                       ("bonferroni", "bonferroni")])
def test_adjust_pvalues_matches_multipletests_on_random_families(method, sm):
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for m in (2, 3, 10, 57):
        p = list(rng.uniform(0, 0.2, m) ** 2)
        p[1] = p[0]   # ties
        assert stats.adjust_pvalues(p, method) == pytest.approx(
            list(multipletests(p, method=sm)[1]), rel=1e-12)
