"""Assertions for claims about dictionary features.

- ``assert_feature_effect(result, recovered > 0.5)``: a feature patch or ablation
  (``field.patch`` on feature sites) has an effect; the statistics of ``assert_effect``, and each
  ClaimResult carries ``details["sae"]``: where every dictionary was trained, the model it is
  applied to, and its explained variance on the data set there.
- ``assert_feature_circuit(result, faithfulness > 0.7, completeness > 0.8)``: a feature circuit
  (``field.feature_circuit`` / ``evaluate_feature_circuit``) keeps the behaviour and leaves little
  outside; ratios of sums over examples, bootstrap intervals.
- ``assert_selective(sel, rate_on > 0.8, rate_off < 0.2, mean_diff > 1, auroc > 0.9)``: a feature
  fires on one set of prompts and not on another (``field.selectivity``): rates with
  Clopper-Pearson intervals and exact binomial p-values, the difference of means with Welch's t
  interval and test, the AUROC with DeLong's normal interval and test (under perfect separation,
  where DeLong's variance is 0, Hanley and McNeil's variance half a discordant pair away).

Per-example values are stored for a gating run's paired tests (``--fc-baseline-model``): effects
and recovery as in ``assert_effect``, faithfulness and completeness as ratios of per-example sums,
rates as per-prompt 0/1 values, ``mean_diff`` and ``auroc`` as per-prompt activations of both
prompt sets (``fieldcheck.claim.comparison``: two groups, resampled together).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Optional

import numpy as np

from fieldcheck.claim.assertions import assert_effect
from fieldcheck.claim.comparison import examples_of
from fieldcheck.claim.criteria import Criterion
from fieldcheck.claim.deciding import (AssertionInputError, as_vector, check_finite, make_result, need_attr,
                                       ratio_stat, resolve_settings, run_criteria)
from fieldcheck.claim.result import ClaimFailed, ClaimResult
from fieldcheck.claim.statistics import MIN_BOOTSTRAP_N, Estimate, binomial_rate, bootstrap, clears, require_n
from fieldcheck.errors import InsufficientData

__all__ = ["assert_feature_effect", "assert_feature_circuit", "assert_selective"]


def _sae_details(obj: Any) -> list:
    cost = getattr(obj, "cost", None) or {}
    return list(cost.get("sae") or [])


def assert_feature_effect(result: Any, *criteria: Criterion, **kw: Any) -> list[ClaimResult]:
    """``assert_effect`` on a feature patch (``field.patch`` on ``fieldcheck.sites.features``):
    ``recovered > 0.5``, ``effect < -1``, with the dictionaries' provenance in each result's
    ``details["sae"]`` (trained on, applied to, explained variance on the data set there).

    ``*criteria``: comparisons of ``recovered``/``effect`` with a number. ``**kw``: passed to
    :func:`~fieldcheck.claim.assertions.assert_effect` (``direction``, ``require``, ``alpha``,
    ``level``, ``decide``, ``n_boot``, ``method``). Returns one ClaimResult per criterion;
    ClaimFailed if one fails."""
    sae = _sae_details(result)
    try:
        out = assert_effect(result, *criteria, **kw)
    except ClaimFailed as e:
        for r in e.results:
            r.details["sae"] = sae
        raise
    for r in out:
        r.details["sae"] = sae
    return out


def _vec(obj: Any, attr: str, name: str) -> np.ndarray:
    return check_finite(as_vector(need_attr(obj, attr, name, f"a result with per-example .{attr}"), attr, name),
                        attr)


def assert_feature_circuit(result: Any, *criteria: Criterion, alpha: Optional[float] = None,
                           level: Optional[float] = None, decide: Optional[str] = None,
                           n_boot: Optional[int] = None, method: Optional[str] = None) -> list[ClaimResult]:
    """A feature circuit is faithful and complete: ``faithfulness > 0.7``, ``completeness > 0.8``.

    Ratios of sums over examples with bootstrap intervals: faithfulness = sum(circuit - empty) /
    sum(full - empty), completeness = 1 - sum(complement - empty) / sum(full - empty). ``result``:
    anything with per-example ``circuit``, ``complement``, ``full`` and ``empty`` metrics (a
    FeatureCircuitResult from ``field.feature_circuit``). ``*criteria``: comparisons of
    ``faithfulness``/``completeness`` with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (as every assertion). Returns one ClaimResult per
    criterion; ClaimFailed if one fails; InsufficientData when full - empty is not clearly away
    from 0."""
    name = "assert_feature_circuit"
    s = resolve_settings(alpha, level, decide, n_boot, method)

    def prepare():
        d = {k: _vec(result, k, name) for k in ("circuit", "complement", "full", "empty")}
        if len({v.size for v in d.values()}) != 1:
            raise AssertionInputError(f"{name}: circuit, complement, full and empty must have one value per example")
        return d

    def decide_one(c, d, rng):
        n = d["full"].size
        den = d["full"] - d["empty"]
        require_n(n, MIN_BOOTSTRAP_N if s.decide == "bound" else 2, f"`{c}` (bootstrap)")
        if abs(den.mean()) < 1e-12 or (n > 1 and abs(den.mean()) < 0.25 * den.std(ddof=1)):
            raise InsufficientData(f"{name}: `{c}` divides by the full - empty gap, {den.mean():.3g} (sd "
                                   f"{den.std(ddof=1):.3g}), which is not clearly away from 0; use another ablation "
                                   "or a behaviour the model shows more strongly")
        num = d["circuit"] - d["empty"] if c.name == "faithfulness" else d["full"] - d["complement"]
        est = bootstrap(ratio_stat(num, den, n), n, alpha=s.alpha, n_boot=s.n_boot, method=s.method, rng=rng,
                        op=c.op, bar=c.bar)
        est.details.update({"n_nodes": len(getattr(result, "nodes", []) or []),
                            "ablation": getattr(result, "ablation", None), "sae": _sae_details(result)})
        return make_result(name, c, est, s, examples=examples_of("ratio", {"num": num, "den": den}, result),
                           plot={"kind": "bars", "labels": ["empty", "complement", "circuit", "full"],
                                 "y": [float(d[k].mean()) for k in ("empty", "complement", "circuit", "full")]})

    return run_criteria(name, criteria, ("faithfulness", "completeness"), s, prepare, decide_one)


def delong(on: np.ndarray, off: np.ndarray) -> tuple[float, float]:
    """AUROC of ``on`` against ``off`` (ties count 1/2) and its DeLong standard error."""
    on, off = np.asarray(on, float), np.asarray(off, float)
    cmp = (on[:, None] > off[None]).astype(float) + 0.5 * (on[:, None] == off[None])
    auc = float(cmp.mean())
    v10, v01 = cmp.mean(1), cmp.mean(0)
    var = (v10.var(ddof=1) / on.size if on.size > 1 else 0.0) + (v01.var(ddof=1) / off.size if off.size > 1 else 0.0)
    if var <= 0:  # perfect (or no) separation: DeLong's variance is 0; take Hanley and McNeil's at half a pair away
        n1, n0 = on.size, off.size
        a = min(max(auc, 0.5 / (n1 * n0)), 1 - 0.5 / (n1 * n0))
        q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
        var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    return auc, math.sqrt(max(var, 0.0))


def assert_selective(sel: Any, *criteria: Criterion, alpha: Optional[float] = None, level: Optional[float] = None,
                     decide: Optional[str] = None, n_boot: Optional[int] = None,
                     method: Optional[str] = None) -> list[ClaimResult]:
    """A feature fires on the "on" prompts and not on the "off" prompts (``field.selectivity``).

    ``rate_on``, ``rate_off``: the share of prompts with an activation above the threshold
    (Clopper-Pearson interval, exact binomial p-value); ``mean_diff``: mean(on) - mean(off)
    (Welch's t interval and test); ``auroc``: P(on > off) (DeLong's normal interval and test).
    ``sel``: anything with per-prompt ``on`` and ``off`` activations and a ``threshold`` (a
    Selectivity). ``*criteria``: comparisons of these statistics with a number. ``alpha``,
    ``level``, ``decide``, ``n_boot``, ``method``: decision options (as
    every assertion). Returns one ClaimResult per criterion; ClaimFailed if one fails."""
    from scipy import stats as sst

    name = "assert_selective"
    s = resolve_settings(alpha, level, decide, n_boot, method)
    thr = float(getattr(sel, "threshold", 0.0))
    label = [f"{getattr(sel, 'dictionary', '')}:F{getattr(sel, 'latent', '')}"]

    def prepare():
        return _vec(sel, "on", name), _vec(sel, "off", name)

    def stored(kind: str, columns: dict, identity: str) -> Optional[dict]:
        ex = examples_of(kind, columns, _Identity(identity))
        if ex is not None:
            ex["labels"] = label  # another latent is another statistic: not paired
        return ex

    def decide_one(c, data, rng):
        on, off = data
        z = sst.norm.ppf(1 - s.alpha)
        if c.name in ("rate_on", "rate_off"):
            x = (on if c.name == "rate_on" else off) > thr
            est = binomial_rate(x, alpha=s.alpha, op=c.op, bar=c.bar)
            ex = stored("mean", {"x": x.astype(float)}, getattr(sel, "on_hash" if c.name == "rate_on" else "off_hash", ""))
        else:
            require_n(min(on.size, off.size), 2, f"`{c}` ({'Welch t' if c.name == 'mean_diff' else 'DeLong'})")
            if c.name == "mean_diff":
                est = _welch(on, off, c, s.alpha, sst)
            else:
                est = _delong_estimate(on, off, c, s.alpha, z, sst)
            ex = stored(c.name, {"x": np.concatenate([on, off]), "g": np.r_[np.ones(on.size), np.zeros(off.size)]},
                        getattr(sel, "dataset_hash", ""))
        est.details.update({"latent": getattr(sel, "latent", None), "dictionary": getattr(sel, "dictionary", None),
                            "threshold": thr, "sae": _sae_details(sel)})
        return make_result(name, c, est, s, examples=ex,
                           plot={"kind": "hist", "values": on[:512].tolist(), "bar": c.bar, "estimate": est.estimate})

    return run_criteria(name, criteria, ("rate_on", "rate_off", "mean_diff", "auroc"), s, prepare, decide_one)


class _Identity:
    """Names the examples of stored values for :func:`~fieldcheck.claim.comparison.examples_of`."""

    def __init__(self, dataset_hash: str):
        self.dataset_hash = dataset_hash


def _without_spread(x: float, c: Criterion, alpha: float, n_on: int, n_off: int, lo: float, hi: float,
                    floor: float, ceil: float) -> tuple[float, float, float]:
    """p, lo, hi of a two-group statistic ``x`` that has no spread (no t, no DeLong variance): on the
    criterion's side, the exact rank test's p for every 'on' value beyond every 'off' value,
    1 / C(n_on + n_off, n_on), never 0 (as a degenerate bootstrap gets 2^-n: docs/statistics.md),
    and where that p exceeds ``alpha`` no bound either (``floor`` or ``ceil`` on the criterion's
    side); p = 1 on the other side."""
    if not clears(x, c.op, c.bar):
        return 1.0, lo, hi
    from scipy.special import comb
    p = max(1.0 / float(comb(n_on + n_off, n_on)), np.finfo(float).tiny)
    if p > alpha:
        lo, hi = (floor, hi) if c.op in (">", ">=") else (lo, ceil)
    return p, lo, hi


def _welch(on, off, c, alpha, sst) -> Estimate:
    diff = float(on.mean() - off.mean())
    with warnings.catch_warnings():  # groups without spread: scipy warns, the case is handled below
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        t = sst.ttest_ind(on, off + c.bar, equal_var=False, alternative="greater" if c.op in (">", ">=") else "less")
        ci = sst.ttest_ind(on, off, equal_var=False).confidence_interval(1 - 2 * alpha)
    if np.isfinite(t.statistic) and np.isfinite(t.pvalue):
        p = float(t.pvalue)
        lo, hi = (float(ci.low), float(ci.high)) if np.isfinite(ci.low) else (diff, diff)
    else:  # no spread in either group: no t
        p, lo, hi = _without_spread(diff, c, alpha, on.size, off.size, diff, diff, -math.inf, math.inf)
    return Estimate(diff, lo, hi, on.size + off.size, "Welch t", p, 1 - 2 * alpha,
                    {"mean_on": float(on.mean()), "mean_off": float(off.mean())})


def _delong_estimate(on, off, c, alpha, z, sst) -> Estimate:
    auc, se = delong(on, off)
    lo, hi = max(0.0, auc - z * se), min(1.0, auc + z * se)
    if se > 0:
        zc = (auc - c.bar) / se
        # a normal tail far out underflows to 0.0: the smallest positive float instead
        p = max(float(sst.norm.sf(zc) if c.op in (">", ">=") else sst.norm.cdf(zc)), np.finfo(float).tiny)
    else:  # no variance (every pair ordered alike)
        p, lo, hi = _without_spread(auc, c, alpha, on.size, off.size, lo, hi, 0.0, 1.0)
    return Estimate(auc, lo, hi, on.size + off.size, "DeLong normal", p,
                    1 - 2 * alpha, {"se": se, "n_on": on.size, "n_off": off.size})
