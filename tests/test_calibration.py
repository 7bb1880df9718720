"""Calibration: the error rates of the assertions, measured on simulated data with known truth.

Under a null where the true statistic sits exactly on the bar, a claim must pass at most
alpha of the time (plus Monte-Carlo error: 2 standard errors of a rate alpha over REPS
repetitions). At a stated effect size the pass rate (power) is reported. Every repetition
calls the real assertion with the default settings (alpha 0.05, decide="bound", BCa with the
small-sample expansion, n_boot 2000), except that the bootstraps (and the random sign flips of
require='any') use n_boot=1000 to keep the suite fast. N = 32 examples per claim. Two cases
test the tails at alpha = 0.005 (the level of a Bonferroni family of 10), where the p-values no
longer come from the bulk of the resamples.

Run ``python tests/test_calibration.py`` to print the table that docs/statistics.md carries.
"""
from __future__ import annotations

import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

import fieldcheck as fc
from fieldcheck.claim import result as claim_result
from fieldcheck import (alpha_star, cpr, depth_share, effect, r2, rate,
                        recovered, spearman, top_k_overlap)

REPS = 1000
N = 32          # examples per simulated claim
ALPHA = 0.05
N_BOOT = 1000


def _passes(fn) -> bool:
    try:
        fn()
        return True
    except fc.ClaimFailed:
        return False


# --- simulations: each returns one pass/fail for a true value `truth` --------------------------
def sim_r2(rng, truth, bar=0.9):
    """Predicted vs real effects of S=12 fixed sites; population R^2 of the prediction as is
    equals `truth`: real = pred + e, Var(e) = (1 - truth)/truth * Var(pred)."""
    S = 12
    mu = np.linspace(-2, 2, S)[:, None]
    pred = mu + rng.normal(0, 0.5, (S, N))
    var_pred = float(mu.var() + 0.25)
    real = pred + rng.normal(0, math.sqrt((1 - truth) / truth * var_pred), (S, N))
    return _passes(lambda: fc.assert_predicted_effect(pred, real, r2 > bar, n_boot=N_BOOT))


def _patch(values, clean, corrupt):
    return NS(values=values[None], baseline_clean=clean, baseline_corrupt=corrupt,
              sites=[], direction="denoise", jointly=True, metric="logit_diff",
              effect=(values - corrupt)[None])


def sim_recovered(rng, truth, bar=0.8):
    """Joint patch; clean - corrupt gaps ~ Gamma(4, 0.5) (skewed, mean 2); patched recovers
    `truth` of each gap plus noise, so the ratio of means is `truth`."""
    corrupt = rng.normal(0, 1, N)
    gap = rng.gamma(4.0, 0.5, N)
    patched = corrupt + truth * gap + rng.normal(0, 0.5, N)
    return _passes(lambda: fc.assert_effect(_patch(patched, corrupt + gap, corrupt),
                                            recovered > bar, n_boot=N_BOOT))


def sim_effect(rng, truth, bar=-1.0, skew=-1.0):
    """Noising effects with mean `truth`, skewed (centred exponential, sd 1.5; skew -1: a long
    tail of large negative effects, +1: of large positive ones)."""
    clean = rng.normal(3, 1, N)
    e = truth + 1.5 * (rng.exponential(1.0, N) - 1.0) * skew
    res = NS(values=(clean + e)[None], baseline_clean=clean, baseline_corrupt=clean - 3,
             sites=[], direction="noise", jointly=True, metric="logit_diff",
             effect=e[None])
    return _passes(lambda: fc.assert_effect(res, effect < bar, direction="noise"))


def sim_effect_right_skew(rng, truth, bar=-1.0):
    return sim_effect(rng, truth, bar, skew=1.0)


def sim_rate(rng, truth, bar=0.5):
    t = NS(flipped=rng.random(N) < truth, shift=np.zeros(N), gap_closed=np.zeros(N))
    return _passes(lambda: fc.assert_transfers(t, rate > bar))


def sim_alpha_star(rng, truth_dev, bar=0.3, tol=0.1):
    """Sweep alpha = 0, 0.1, ..., 1; the mean effect bends away from the linear prediction as
    (1 + k alpha^2), k set so the relative deviation at alpha = 0.3 is `truth_dev` (tol sits
    exactly on the bar's grid point when truth_dev == tol)."""
    alphas = np.round(np.linspace(0, 1, 11), 10)
    k = truth_dev / bar ** 2
    g = rng.normal(1.0, 0.3, N)
    lin = alphas[:, None] * g[None]
    eff = lin * (1 + k * alphas[:, None] ** 2) + alphas[:, None] * rng.normal(0, 0.1, (11, N))
    sw = NS(alphas=alphas, effect=eff, linear=lin)
    return _passes(lambda: fc.assert_linear_regime(sw, alpha_star(tol=tol) >= bar,
                                                   n_boot=N_BOOT))


def sim_cpr(rng, truth, bar=0.9):
    empty = rng.normal(0, 0.5, N)
    gap = rng.normal(3, 1, N)
    c = NS(full=empty + gap, empty=empty, circuit=empty + truth * gap + rng.normal(0, 0.4, N))
    return _passes(lambda: fc.assert_faithful(c, cpr >= bar, n_boot=N_BOOT))


def sim_depth_share(rng, truth, bar=0.7):
    """Shares in [0, 1] from a Beta with mean `truth` (skewed near the top)."""
    a = 6.0
    b = a * (1 - truth) / truth
    g = NS(depth_share=rng.beta(a, b, N), response_norm=None, outside_cone_max=0.0)
    return _passes(lambda: fc.assert_anisotropic(g, depth_share > bar))


SPEARMAN_BAR = 1 - 6 * 32 / 990


def sim_spearman(rng, truth, bar=SPEARMAN_BAR):
    """S = 10 sites; the sites' true mean predicted effects are 1..10 and their true mean real
    effects a permutation of them whose rank correlation is `truth` (1 - 6 * 32 / 990 = 0.806:
    sum d^2 = 32; 1.0: the identity); per-example noise N(0, 1.5^2) on both."""
    S = 10
    order = np.arange(S) if truth >= 1.0 else np.array(_PERM_08)
    pred = np.arange(1.0, S + 1)[:, None] + rng.normal(0, 1.5, (S, N))
    real = (order + 1.0)[:, None] + rng.normal(0, 1.5, (S, N))
    return _passes(lambda: fc.assert_predicted_effect(pred, real, spearman > bar,
                                                      n_boot=N_BOOT))


# a permutation of 0..9 whose Spearman correlation with 0..9 is 1 - 6 * 32 / 990 (sum d^2 = 32)
_PERM_08 = [0, 2, 1, 3, 7, 5, 6, 9, 4, 8]


def sim_top_k(rng, truth, bar=2 / 3):
    """S = 10 sites, k = 3; the true top-3 sites by |mean real effect| share `truth` * 3 sites
    with the true top-3 by |mean predicted| (2/3: two of three); noise N(0, 1) per example."""
    S = 10
    pred_mu = np.array([6.0, 5.5, 5.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.2])
    real_mu = pred_mu.copy()
    if truth < 1.0:   # swap the third and fourth sites of the real ranking
        real_mu[2], real_mu[3] = 3.0, 5.0
    pred = pred_mu[:, None] + rng.normal(0, 1.0, (S, N))
    real = real_mu[:, None] + rng.normal(0, 1.0, (S, N))
    return _passes(lambda: fc.assert_predicted_effect(pred, real, top_k_overlap(3) > bar,
                                                      n_boot=N_BOOT))


def sim_any(rng, truth, bar=-1.0, S=5):
    """S = 5 separately patched sites, each with mean noising effect `truth` (normal, sd 1.5):
    `effect < bar` with require='any' (each site at alpha / 5)."""
    clean = rng.normal(3, 1, N)
    e = truth + rng.normal(0, 1.5, (S, N))
    res = NS(values=clean[None] + e, baseline_clean=clean, baseline_corrupt=clean - 3,
             sites=[f"s{i}" for i in range(S)], direction="noise", jointly=False,
             metric="logit_diff", effect=e)
    return _passes(lambda: fc.assert_effect(res, effect < bar, require="any", n_boot=N_BOOT))


def sim_recovered_tail(rng, truth, bar=0.8):
    """recovered at alpha = 0.005 (a Bonferroni family of 10): the bound sits near the last
    resamples, where the tail beyond them takes over."""
    corrupt = rng.normal(0, 1, N)
    gap = rng.gamma(4.0, 0.5, N)
    patched = corrupt + truth * gap + rng.normal(0, 0.5, N)
    return _passes(lambda: fc.assert_effect(_patch(patched, corrupt + gap, corrupt),
                                            recovered > bar, n_boot=N_BOOT, alpha=TAIL_ALPHA))


def sim_effect_tail(rng, truth, bar=-1.0):
    """A skewed mean effect at alpha = 0.005 (sign flips beyond the random ones)."""
    clean = rng.normal(3, 1, N)
    e = truth + 1.5 * (rng.exponential(1.0, N) - 1.0) * -1.0
    res = NS(values=(clean + e)[None], baseline_clean=clean, baseline_corrupt=clean - 3,
             sites=[], direction="noise", jointly=True, metric="logit_diff", effect=e[None])
    return _passes(lambda: fc.assert_effect(res, effect < bar, alpha=TAIL_ALPHA))


TAIL_ALPHA = 0.005

# name, simulation, null truth (on the bar), alternative truth (for power), text
CASES = [
    ("r2 > 0.9 (assert_predicted_effect, BCa cluster bootstrap)", sim_r2, 0.9, 0.95,
     "true R^2 0.95"),
    ("recovered > 0.8 (assert_effect, BCa bootstrap of a ratio)", sim_recovered, 0.8, 0.95,
     "true recovered 0.95"),
    ("effect < -1 (assert_effect, sign-flip + bootstrap-t; skewed, long tail away from the bar)", sim_effect,
     -1.0, -1.75, "true mean effect -1.75 (sd 1.5)"),
    ("effect < -1 (assert_effect, sign-flip + bootstrap-t; skewed, long tail toward the bar)",
     sim_effect_right_skew, -1.0, -1.75, "true mean effect -1.75 (sd 1.5)"),
    ("rate > 0.5 (assert_transfers, Clopper-Pearson)", sim_rate, 0.5, 0.8, "true rate 0.8"),
    ("alpha_star >= 0.3 (assert_linear_regime, percentile on the grid)", sim_alpha_star, 0.1, 0.02,
     "deviation at 0.3 of 0.02 (tol 0.1)"),
    ("cpr >= 0.9 (assert_faithful, BCa bootstrap of a ratio)", sim_cpr, 0.9, 1.0,
     "true cpr 1.0"),
    ("depth_share > 0.7 (assert_anisotropic, sign-flip + bootstrap-t; Beta shares)", sim_depth_share, 0.7, 0.8,
     "true mean share 0.8"),
    ("spearman > 0.806 (assert_predicted_effect, BCa cluster bootstrap; 10 sites)", sim_spearman,
     SPEARMAN_BAR, 1.0, "true rank correlation 1.0"),
    ("top_k_overlap(3) > 2/3 (assert_predicted_effect, percentile on the grid; 10 sites)",
     sim_top_k, 0.5, 1.0, "true overlap 1.0"),
    ("effect < -1, require='any' of 5 sites (assert_effect, sign-flip + bootstrap-t, each at alpha/5)",
     sim_any, -1.0, -2.0, "every site's mean effect -2 (sd 1.5)"),
    ("recovered > 0.8 at alpha = 0.005 (tail beyond the resamples)", sim_recovered_tail, 0.8,
     1.0, "true recovered 1.0"),
    ("effect < -1 at alpha = 0.005 (skewed; random flips + Hoeffding tail)", sim_effect_tail,
     -1.0, -2.5, "true mean effect -2.5 (sd 1.5)"),
]
NULL_ALPHA = {sim_recovered_tail: TAIL_ALPHA, sim_effect_tail: TAIL_ALPHA}


def pass_rate(sim, truth, reps=REPS, seed=0, decide="bound") -> float:
    rng = np.random.default_rng(seed)
    prev = claim_result._sink
    claim_result.set_sink(None)  # simulated claims are not claims of the session
    try:
        return _pass_rate(sim, truth, reps, rng, decide)
    finally:
        claim_result.set_sink(prev)


def _pass_rate(sim, truth, reps, rng, decide) -> float:
    with fc.config.override(alpha=ALPHA, decide=decide, method="bca", seed=0):
        hits = 0
        for i in range(reps):
            # a distinct claim id per repetition: the bootstrap draws differ as in real runs
            with fc.config.claim_context(f"calibration::{sim.__name__}::{i}"):
                hits += sim(rng, truth)
    return hits / reps


def mc_limit(a: float, reps: int = REPS) -> float:
    """alpha + 2 Monte-Carlo standard errors of a rate alpha over reps repetitions."""
    return a + 2 * math.sqrt(a * (1 - a) / reps)


@pytest.mark.slow
@pytest.mark.parametrize("name,sim,null,alt,alt_text", CASES, ids=[c[1].__name__ for c in CASES])
def test_false_pass_rate_at_the_bar(name, sim, null, alt, alt_text):
    rate_null = pass_rate(sim, null)
    limit = mc_limit(NULL_ALPHA.get(sim, ALPHA))
    assert rate_null <= limit, f"{name}: false-pass rate {rate_null:.3f} > {limit:.3f}"


@pytest.mark.slow
@pytest.mark.parametrize("name,sim,null,alt,alt_text", CASES, ids=[c[1].__name__ for c in CASES])
def test_power_at_the_stated_effect(name, sim, null, alt, alt_text):
    power = pass_rate(sim, alt, reps=200, seed=1)
    assert power >= 0.5, f"{name}: power {power:.2f} at {alt_text}"


def test_point_decision_is_not_calibrated():
    """decide='point' passes about half the time on the bar: it is an estimate, not a test."""
    r = pass_rate(sim_rate, 0.5, reps=300, seed=2, decide="point")
    assert 0.3 < r < 0.6


if __name__ == "__main__":  # pragma: no cover - prints the table for docs/statistics.md
    import time

    print(f"| criterion (assertion, method) | false-pass rate at the bar ({REPS} runs, "
          f"alpha = {ALPHA}) | power | at |")
    print("|---|---|---|---|")
    for name, sim, null, alt, alt_text in CASES:
        t0 = time.time()
        r0 = pass_rate(sim, null)
        r1 = pass_rate(sim, alt, reps=200, seed=1)
        se = math.sqrt(max(r0 * (1 - r0), 1e-9) / REPS)
        print(f"| {name} | {r0:.3f} (± {se:.3f}) | {r1:.2f} | {alt_text} |"
              f"  <!-- {time.time() - t0:.1f}s -->")
