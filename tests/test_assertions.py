"""The assertions on synthetic result objects (duck-typed like the field's results)."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

import fieldcheck as fc
from fieldcheck.claim import criteria, result as claim_result
from fieldcheck.claim.assertions import AssertionInputError
from fieldcheck import (alpha_star, cpr, depth_share, effect, gap_closed, mean,
                        pearson, rate, recovered, r2, shift, spearman, top_k_overlap)
from fieldcheck.errors import CriterionError, FieldcheckError, InsufficientData

N = 32


class _Recording:
    """Collect recorded results inside a test body (the pytest plugin installs its own sink
    around each test call, so a fixture's sink would be replaced)."""

    def __enter__(self):
        self.got, self.prev = [], claim_result._sink
        claim_result.set_sink(self.got.append)
        return self.got

    def __exit__(self, *exc):
        claim_result.set_sink(self.prev)
        return False


def _sites(k):
    return [NS(label=f"resid_pre L{i} @S2") for i in range(k)]


def _pred_actual(noise=0.2, S=20, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    A = rng.normal(0, 3, S)[:, None] + rng.normal(0, 0.3, (S, N))
    P = scale * A + rng.normal(0, noise, (S, N))
    return NS(effect=P, sites=_sites(S)), NS(effect=A, sites=_sites(S))


def _patch(frac=0.9, n=N, seed=0, S=1, direction="denoise"):
    rng = np.random.default_rng(seed)
    clean, corrupt = rng.normal(3, 1, n), rng.normal(0, 1, n)
    frac = np.atleast_1d(frac)
    vals = np.stack([corrupt + f * (clean - corrupt) + rng.normal(0, 0.2, n)
                     for f in np.resize(frac, S)])
    base = corrupt if direction == "denoise" else clean
    return NS(values=vals, effect=vals - base, baseline_clean=clean, baseline_corrupt=corrupt,
              sites=_sites(S), direction=direction, jointly=S == 1, metric="logit_diff")


# --- predicted vs actual ----------------------------------------------------------------------
def test_predicted_effect_passes_with_a_good_prediction():
    pred, act = _pred_actual()
    with _Recording() as sink:
        out = fc.assert_predicted_effect(pred, act, r2 > 0.9, spearman >= 0.8,
                                         top_k_overlap(5) >= 0.6, pearson > 0.9)
    assert isinstance(out, list) and len(out) == 4 and all(r.passed for r in out)
    assert sink == out
    r = out[0]
    assert r.assertion == "assert_predicted_effect" and r.criterion == "r2 > 0.9"
    assert r.n == N and r.interval[0] <= r.estimate <= r.interval[1]
    assert r.bound == r.interval[0] and r.bound > 0.9 and r.p_value < 0.05
    assert 0 <= r.details["pearson_r2"] <= 1
    assert r.plot["kind"] == "scatter" and len(r.plot["x"]) == 20
    json.dumps(r.to_dict())


def test_r2_is_of_the_prediction_as_is_not_refitted():
    pred, act = _pred_actual(scale=0.3)  # perfectly correlated but wrong scale
    with pytest.raises(fc.ClaimFailed) as e:
        fc.assert_predicted_effect(pred, act, r2 > 0.9)
    r = e.value.results[0]
    assert r.estimate < 0.6 and r.details["pearson_r2"] > 0.9
    msg = str(e.value)
    assert msg.startswith("assert_predicted_effect: r2 = ")
    assert "(90% CI, n=32), needs > 0.9: FAILED; worst sites: resid_pre L" in msg
    assert "(pred " in msg and ", real " in msg
    # r2 agrees with the textbook formula
    P, A = pred.effect, act.effect
    assert r.estimate == pytest.approx(1 - ((A - P) ** 2).sum() / ((A - A.mean()) ** 2).sum())


def test_predicted_effect_accepts_plain_and_torch_arrays():
    pred, act = _pred_actual()
    fc.assert_predicted_effect(pred.effect, act.effect, r2 > 0.9)
    torch = pytest.importorskip("torch")
    fc.assert_predicted_effect(torch.tensor(pred.effect), torch.tensor(act.effect), r2 > 0.9)
    # 1-D: one site, spearman over examples
    x = np.random.default_rng(0).normal(size=40)
    fc.assert_predicted_effect(x + 0.01, x, r2 > 0.9, spearman > 0.9)


def test_predicted_effect_shape_mismatch():
    with pytest.raises(AssertionInputError, match=r"\(3, 32\).*\(4, 32\)"):
        fc.assert_predicted_effect(np.zeros((3, N)), np.zeros((4, N)), r2 > 0.9)


def test_top_k_overlap_needs_more_sites_than_k():
    pred, act = _pred_actual(S=5)
    with pytest.raises(InsufficientData, match="more than k=5"):
        fc.assert_predicted_effect(pred, act, top_k_overlap(5) >= 0.5)


# --- NaN/inf never pass --------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_fails_the_claim_and_says_where(bad):
    pred, act = _pred_actual()
    act.effect[3, 4] = bad
    with _Recording() as sink, pytest.raises(fc.ClaimFailed, match=r"actual effect has 1 NaN/inf value \(first at "
                                             r"site resid_pre L3 @S2, example 4\)"):
        fc.assert_predicted_effect(pred, act, r2 > 0.9, spearman > 0.5)
    assert len(sink) == 2 and not any(r.passed for r in sink)
    assert all(math.isnan(r.estimate) for r in sink)


@pytest.mark.parametrize("call", [
    lambda: fc.assert_effect(NS(**{**vars(_patch()), "baseline_clean": np.full(N, np.nan)}),
                             recovered > 0.5),
    lambda: fc.assert_prefers(np.r_[np.ones(40), np.nan], rate > 0.5),
    lambda: fc.assert_transfers(NS(flipped=np.ones(40, bool), shift=np.r_[np.ones(39), np.inf],
                                   gap_closed=np.ones(40)), shift > 0.5),
    lambda: fc.assert_faithful(NS(circuit=np.r_[np.ones(39), np.nan], full=np.ones(40) * 2,
                                  empty=np.zeros(40)), cpr > 0.5),
    lambda: fc.assert_anisotropic(NS(depth_share=np.r_[np.ones(39), np.nan]), depth_share > 0.5),
    lambda: fc.assert_light_cone(NS(outside_cone_max=float("nan"), response_norm=None)),
    lambda: fc.assert_linear_regime(NS(alphas=np.linspace(0, 1, 5), linear=np.ones((5, N)),
                                       effect=np.full((5, N), np.nan)), alpha_star >= 0.1),
])
def test_non_finite_fails_in_every_assertion(call):
    with pytest.raises(fc.ClaimFailed):
        call()


# --- patch effects ---------------------------------------------------------------------------
def test_effect_recovered_ratio_of_means():
    res = _patch(0.9)
    out = fc.assert_effect(res, recovered > 0.8, effect > 1.0)
    r = out[0]
    num = (res.values[0] - res.baseline_corrupt).sum()
    den = (res.baseline_clean - res.baseline_corrupt).sum()
    assert r.estimate == pytest.approx(num / den)
    assert "bootstrap BCa" in r.method
    assert "sign-flip" in out[1].method and "both must clear" in out[1].method


def test_effect_fails_below_the_bar_with_numbers():
    with pytest.raises(fc.ClaimFailed, match=r"recovered = 0\.[45]\d* \[.*needs > 0\.8: FAILED"):
        fc.assert_effect(_patch(0.5), recovered > 0.8)


def test_effect_direction_must_match():
    noisy = _patch(0.1, direction="noise")
    with pytest.raises(CriterionError, match="direction='noise'.*direction='denoise'"):
        fc.assert_effect(_patch(0.9), effect < -1.0, direction="noise")
    fc.assert_effect(noisy, effect < -1.0, direction="noise")


def test_effect_per_site_all_and_any():
    res = _patch([0.95, 0.5, 0.95], S=3)
    res.jointly = False
    with pytest.raises(fc.ClaimFailed, match=r"\(site resid_pre L1 @S2\); worst sites: "
                                             r"resid_pre L1 @S2") as e:
        fc.assert_effect(res, recovered > 0.8)
    r = e.value.results[0]
    assert r.details["n_sites"] == 3 and len(r.details["sites"]) == 3
    assert r.details["site"] == "resid_pre L1 @S2"
    assert "intersection-union" in r.method
    any_ = fc.assert_effect(res, recovered > 0.8, require="any")[0]
    assert any_.passed and "Bonferroni: each at alpha / 3" in any_.method
    holm = [row["p_holm"] for row in any_.details["sites"]]
    assert all(h >= row["p_value"] for h, row in zip(holm, any_.details["sites"]))
    # the deciding bound is at level 1 - alpha/3 and agrees with p = 3 * min p
    assert any_.level == pytest.approx(1 - 2 * 0.05 / 3)
    assert any_.p_value == pytest.approx(3 * min(r["p_value"] for r in any_.details["sites"]))
    assert any_.p_value <= 0.05
    with pytest.raises(CriterionError, match="require"):
        fc.assert_effect(res, recovered > 0.8, require="most")


def test_recovered_undefined_without_a_gap():
    res = _patch(0.9)
    res.baseline_clean = res.baseline_corrupt.copy()
    with pytest.raises(InsufficientData, match=r"clean-corrupt gap .* is 0 \[0, 0\].*`effect`"):
        fc.assert_effect(res, recovered > 0.5)


@pytest.mark.parametrize("gaps", [[0.14, -0.25] * 8, [1.0, -0.8] * 16, [0.3] * 7 + [-0.3] * 9])
def test_recovered_refused_when_the_gap_is_not_clearly_away_from_zero(gaps):
    """The issue's case: a corruption that barely moves the metric (gaps 0.14 and -0.25) gave
    recovered = -1.56; now a clear error names the gap with its interval."""
    gaps = np.array(gaps, dtype=float)
    n = gaps.size
    corrupt = np.random.default_rng(0).normal(0, 1, n)
    clean = corrupt + gaps
    vals = corrupt + 0.5 * gaps + np.random.default_rng(1).normal(0, 0.1, n)
    res = NS(values=vals[None], effect=(vals - corrupt)[None], baseline_clean=clean,
             baseline_corrupt=corrupt, sites=_sites(1), direction="denoise", jointly=True,
             metric="logit_diff")
    with pytest.raises(InsufficientData, match=r"the clean-corrupt gap .* is -?[0-9.e-]+ "
                                               r"\[.*, .*\] \(90% CI, n=\d+, sd .*recovered"):
        fc.assert_effect(res, recovered > 0.5)
    fc.assert_effect(res, effect > -10.0)   # the effect itself is still a claim one can make
    # a clear gap (mean 0.3 sd 0.1 at n=16) is accepted
    ok = NS(**{**vars(res), "baseline_clean": corrupt + 0.3 + 0.1 * np.sin(np.arange(n))})
    fc.assert_effect(ok, recovered > -5.0)


def test_path_effect_is_an_effect_claim():
    r = fc.assert_path_effect(_patch(0.9), recovered > 0.5)[0]
    assert r.assertion == "assert_path_effect" and r.passed


def test_localized_uses_the_joint_patch():
    sel = NS(sites=_sites(3), predicted=np.ones(N), real=_patch(0.9), recall=0.75)
    r = fc.assert_localized(sel, recovered >= 0.8, top_k=5)[0]
    assert r.passed and r.details["k"] == 3 and r.details["recall"] == 0.75
    with pytest.raises(AssertionInputError, match="more than top_k=2"):
        fc.assert_localized(sel, recovered >= 0.8, top_k=2)
    multi = _patch([0.9, 0.9, 0.9], S=3)
    multi.jointly = False
    with pytest.raises(FieldcheckError, match="field.select_sites"):
        fc.assert_localized(multi, recovered >= 0.8)


# --- linear regime ---------------------------------------------------------------------------
def _sweep(k=0.3, seed=0):
    rng = np.random.default_rng(seed)
    alphas = np.linspace(0, 1, 11)
    lin = alphas[:, None] * rng.normal(2, 0.3, N)[None]
    eff = lin * (1 + k * alphas[:, None] ** 2) + alphas[:, None] * rng.normal(0, 0.02, (11, N))
    return NS(alphas=alphas, effect=eff, linear=lin)


def test_alpha_star_definition():
    sw = _sweep(k=0.3)  # deviation 0.3 alpha^2 <= 0.1  <=>  alpha <= 0.577
    r = fc.assert_linear_regime(sw, alpha_star >= 0.3)[0]
    assert r.estimate == pytest.approx(0.5)
    assert r.plot["kind"] == "alpha_curve" and r.details["tol"] == 0.1
    assert r.interval[0] in np.round(sw.alphas, 10) or r.interval[0] == 0
    # tol from the keyword, overridden by the statistic's own tol
    assert fc.assert_linear_regime(sw, alpha_star >= 0.1, tol=0.2)[0].estimate == pytest.approx(0.8)
    r3 = fc.assert_linear_regime(sw, alpha_star(tol=0.05) >= 0.1, tol=0.2)[0]
    assert r3.estimate == pytest.approx(0.4)
    with pytest.raises(fc.ClaimFailed, match=r"alpha_star\(tol=0.01\) = .*first deviations"):
        fc.assert_linear_regime(sw, alpha_star(tol=0.01) >= 0.5)


def test_alpha_star_unsorted_grid():
    sw = _sweep(k=0.3)
    order = np.random.default_rng(0).permutation(11)
    shuffled = NS(alphas=sw.alphas[order], effect=sw.effect[order], linear=sw.linear[order])
    assert fc.assert_linear_regime(shuffled, alpha_star >= 0.3)[0].estimate == pytest.approx(0.5)


# --- green, transfer, circuit, behaviour -----------------------------------------------------
def test_light_cone_is_exact():
    g = NS(outside_cone_max=0.0, response_norm=np.ones((N, 4, 6)), depth_share=np.ones(N))
    r = fc.assert_light_cone(g)[0]
    assert r.passed and r.decide == "exact" and r.plot["kind"] == "heatmap"
    g.outside_cone_max = 1e-7
    with pytest.raises(fc.ClaimFailed, match="outside the forward light cone"):
        fc.assert_light_cone(g)
    assert fc.assert_light_cone(g, tol=1e-6)[0].passed
    with pytest.raises(CriterionError):
        fc.assert_light_cone(g, tol=float("nan"))


def test_anisotropic():
    rng = np.random.default_rng(0)
    g = NS(outside_cone_max=0.0, response_norm=None, depth_share=rng.uniform(0.75, 0.95, N))
    assert fc.assert_anisotropic(g, depth_share > 0.7)[0].passed
    with pytest.raises(fc.ClaimFailed):
        fc.assert_anisotropic(g, depth_share > 0.84)


def test_transfers_rate_is_clopper_pearson():
    from statsmodels.stats.proportion import proportion_confint

    flipped = np.array([True] * 24 + [False] * 8)
    t = NS(flipped=flipped, shift=np.linspace(0.5, 1.5, N), gap_closed=np.full(N, 0.6))
    out = fc.assert_transfers(t, rate > 0.5, shift > 0.5, gap_closed > 0.5)
    lo, hi = proportion_confint(24, 32, alpha=0.10, method="beta")
    assert out[0].interval == pytest.approx((lo, hi))
    assert out[0].method == "Clopper-Pearson exact binomial"
    with pytest.raises(fc.ClaimFailed, match="rate = 0.75"):
        fc.assert_transfers(t, rate > 0.7)


def test_faithful_cpr():
    rng = np.random.default_rng(0)
    empty, full = rng.normal(0, 0.3, N), rng.normal(3, 0.3, N)
    c = NS(empty=empty, full=full, circuit=empty + 0.95 * (full - empty))
    r = fc.assert_faithful(c, cpr >= 0.9)[0]
    assert r.estimate == pytest.approx(0.95) and r.passed
    with pytest.raises(InsufficientData, match=r"the full - empty gap is 0 \[0, 0\]"):
        fc.assert_faithful(NS(empty=full, full=full, circuit=full), cpr >= 0.9)


def test_prefers_rate_and_mean():
    ld = np.random.default_rng(0).normal(3, 1, 40)
    out = fc.assert_prefers(ld, rate > 0.9, mean > 2.0)
    assert [r.statistic for r in out] == ["rate", "mean"] and all(r.passed for r in out)
    assert fc.assert_prefers(NS(logit_diff=ld), rate > 0.9)[0].passed


# --- decisions, settings, errors --------------------------------------------------------------
def test_bound_versus_point_decision():
    res = _patch(0.83, seed=3)  # estimate just above the bar, bound below it
    with pytest.raises(fc.ClaimFailed):
        fc.assert_effect(res, recovered > 0.8)
    r = fc.assert_effect(res, recovered > 0.8, decide="point")[0]
    assert r.passed and r.decide == "point"
    with fc.config.override(decide="point"):
        assert fc.assert_effect(res, recovered > 0.8)[0].passed


def test_alpha_and_level_per_call():
    r = fc.assert_effect(_patch(0.9), recovered > 0.5, level=0.99)[0]
    assert r.alpha == pytest.approx(0.01) and r.level == pytest.approx(0.98)
    with pytest.raises(CriterionError, match="not both"):
        fc.assert_effect(_patch(0.9), recovered > 0.5, alpha=0.05, level=0.95)
    with pytest.raises(CriterionError, match="alpha"):
        fc.assert_effect(_patch(0.9), recovered > 0.5, alpha=float("nan"))


def test_too_few_examples_is_an_error_never_a_pass():
    with pytest.raises(InsufficientData, match="at least 29 examples, got 20"):
        fc.assert_prefers(np.ones(20), rate > 0.9)
    with pytest.raises(InsufficientData, match="never"):
        fc.assert_prefers(np.ones(100), rate >= 1.0)
    with pytest.raises(InsufficientData, match="at least 5 examples, got 4"):
        fc.assert_prefers(np.ones(4) * 5, mean > 1.0)
    with pytest.raises(InsufficientData, match="at least 8 examples, got 6"):
        fc.assert_effect(_patch(0.9, n=6), recovered > 0.5)
    # a point decision needs only enough to compute the statistic
    assert fc.assert_effect(_patch(0.9, n=6), recovered > 0.5, decide="point")[0].passed


def test_criterion_on_an_unknown_or_inapplicable_statistic():
    with pytest.raises(CriterionError, match="valid statistics"):
        fc.assert_effect(_patch(), criteria.stat("foo") > 1)
    with pytest.raises(CriterionError, match="valid: recovered, effect"):
        fc.assert_effect(_patch(), r2 > 0.9)
    with pytest.raises(CriterionError, match="at least one criterion"):
        fc.assert_effect(_patch())


def test_wrong_input_object():
    with pytest.raises(AssertionInputError, match="expects a Sweep"):
        fc.assert_linear_regime(_patch(), alpha_star >= 0.3)


def test_draws_are_seeded_by_claim_and_criterion_not_by_order():
    pred, act = _pred_actual(noise=1.0)

    def run():
        return fc.assert_predicted_effect(pred, act, r2 > 0.1, spearman > 0.1)

    with fc.config.claim_context("tests/t.py::a"):
        first = [r.interval for r in run()]
        fc.assert_effect(_patch(), recovered > 0.5)  # other draws in between
        again = [r.interval for r in run()]
    with fc.config.claim_context("tests/t.py::b"):
        other = [r.interval for r in run()]
    with fc.config.claim_context("tests/t.py::a"):
        alone = fc.assert_predicted_effect(pred, act, spearman > 0.1)[0].interval
    assert first == again and first != other
    assert alone == first[1]  # a criterion's draws do not depend on its neighbours


def test_failure_message_lists_every_criterion():
    pred, act = _pred_actual(scale=0.5)
    with pytest.raises(fc.ClaimFailed) as e:
        fc.assert_predicted_effect(pred, act, spearman >= 0.8, r2 > 0.9)
    text = str(e.value)
    assert "spearman = " in text and ": passed" in text and "r2 = " in text and "FAILED" in text
    assert isinstance(e.value, AssertionError)


def test_assert_explained_on_a_real_green_slice():
    """assert_explained reads a GreenSlice: estimate, Hutchinson SE, a normal interval; passes and
    fails with the numbers."""
    import fieldcheck as fc
    from fieldcheck.sites import resid_pre
    from fieldcheck.testing import tiny_model

    m = tiny_model("llama", n_layers=3)
    ds = fc.datasets.ioi(m, n=4, seed=0)
    sl = fc.Field(m).green_slice(ds, resid_pre(1, "S2"), resid_pre(3, "END"), rank=8)
    res = fc.assert_explained(sl, fc.explained > 0.1)[0]
    assert res.n == 16 and res.interval[0] < sl.explained < res.interval[1]
    with pytest.raises(fc.ClaimFailed, match=r"explained = .* needs > 0.999: FAILED"):
        fc.assert_explained(sl, fc.explained > 0.999)
    with pytest.raises(fc.errors.CriterionError):
        fc.assert_explained(sl, fc.r2 > 0.5)


# --- every statistic: the bound at 1 - a clears the bar exactly when p <= a ----------------------
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


def _claims_for(stat_name, seed):
    """(callable(criterion, alpha) -> ClaimResult, point estimate) for one statistic."""
    rng = np.random.default_rng(seed)
    kw = dict(n_boot=300)
    if stat_name in ("r2", "pearson", "spearman", "top_k_overlap"):
        pred, act = _pred_actual(noise=rng.uniform(0.1, 3), S=8, seed=seed)
        return lambda c, a: fc.assert_predicted_effect(pred, act, c, alpha=a, **kw)[0]
    if stat_name in ("recovered", "effect", "recovered_any", "effect_all"):
        res = _patch(list(rng.uniform(0.2, 1.0, 3)), seed=seed, S=1 if "_" not in stat_name else 3)
        res.jointly = "_" not in stat_name
        req = "any" if stat_name.endswith("any") else "all"
        return lambda c, a: fc.assert_effect(res, c, alpha=a, require=req, **kw)[0]
    if stat_name == "cpr":
        empty, full = rng.normal(0, 0.3, N), rng.normal(3, 0.3, N)
        c_ = NS(empty=empty, full=full, circuit=empty + 0.9 * (full - empty) + rng.normal(0, .3, N))
        return lambda c, a: fc.assert_faithful(c_, c, alpha=a, **kw)[0]
    if stat_name == "alpha_star":
        alphas = np.round(np.linspace(0, 1, 11), 10)
        lin = alphas[:, None] * rng.normal(1, 0.3, N)[None]
        eff = lin * (1 + 0.5 * alphas[:, None] ** 2) + alphas[:, None] * rng.normal(0, .1, (11, N))
        sw = NS(alphas=alphas, effect=eff, linear=lin)
        return lambda c, a: fc.assert_linear_regime(sw, c, alpha=a, **kw)[0]
    if stat_name in ("rate", "mean"):
        ld = rng.normal(rng.uniform(0, 2), 1, 60)
        return lambda c, a: fc.assert_prefers(ld, c, alpha=a, **kw)[0]
    raise AssertionError(stat_name)


_STATS = {"r2": r2, "pearson": criteria.pearson, "spearman": criteria.spearman,
          "top_k_overlap": criteria.top_k_overlap(3), "recovered": recovered, "effect": effect,
          "recovered_any": recovered, "effect_all": effect, "cpr": cpr,
          "alpha_star": alpha_star(tol=0.1), "rate": rate, "mean": mean}


@pytest.mark.parametrize("stat_name", list(_STATS))
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10 ** 6), a=st.floats(1e-6, 0.4), q=st.floats(-0.5, 1.5),
       up=st.booleans())
def test_every_statistic_bound_clears_exactly_when_p_le_a(stat_name, seed, a, q, up):
    run = _claims_for(stat_name, seed)
    s = _STATS[stat_name]
    probe = _quiet(run, s > -1e9, 0.05)
    lo, hi = probe.interval
    span = (hi - lo) or 0.1
    bar = float(probe.estimate + (q - 0.5) * 6 * span)
    if stat_name == "rate":
        bar = min(max(bar, 0.0), 1.0)
    r = _quiet(run, (s > bar) if up else (s < bar), a)
    if r.p_value is None or abs(r.p_value - a) <= 1e-9 * a:
        return
    assert r.passed == (r.p_value <= a), (stat_name, r.bound, r.op, bar, r.p_value, a)


def _quiet(run, c, a):
    try:
        return run(c, a)
    except fc.ClaimFailed as e:
        return e.results[0]
