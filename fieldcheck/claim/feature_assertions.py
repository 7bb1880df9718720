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
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from fieldcheck import config
from fieldcheck.claim.assertions import AssertionInputError, assert_effect
from fieldcheck.claim.comparison import examples_of
from fieldcheck.claim.criteria import Criterion, as_criteria
from fieldcheck.claim.result import ClaimFailed, ClaimResult, record
from fieldcheck.claim.statistics import (MIN_BOOTSTRAP_N, Estimate, binomial_rate, bootstrap, clears, make_rng,
                                         nonfinite, require_n, resample_weights, to_numpy)
from fieldcheck.errors import CriterionError, InsufficientData

__all__ = ["assert_feature_effect", "assert_feature_circuit", "assert_selective", "delong"]


def _sae_details(obj: Any) -> list:
    cost = getattr(obj, "cost", None) or {}
    return list(cost.get("sae") or [])


def assert_feature_effect(result: Any, *criteria: Criterion, **kw: Any) -> list[ClaimResult]:
    """``assert_effect`` on a feature patch, with the dictionaries' provenance in each result's
    ``details["sae"]`` (and a note in the message when a dictionary was trained on another model)."""
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


def _settings(alpha, level, decide, n_boot, method) -> config.Settings:
    if alpha is not None and level is not None:
        raise CriterionError("give alpha or level (= 1 - alpha), not both")
    return config.resolve(alpha=alpha, level=level, decide=decide, n_boot=n_boot, method=method)


def _decide(name: str, c: Criterion, est: Estimate, s: config.Settings, **extra) -> ClaimResult:
    bound = est.bound(c.op)
    value = bound if s.decide == "bound" else est.estimate
    passed = clears(value, c.op, c.bar) and math.isfinite(est.estimate)
    res = ClaimResult(statistic=str(c.statistic), estimate=est.estimate, interval=(est.low, est.high), op=c.op,
                      bar=c.bar, passed=bool(passed), n=est.n, level=est.level, p_value=est.p_value,
                      decide=s.decide, method=est.method, assertion=name, claim_id=s.claim_id, criterion=str(c),
                      bound=bound, alpha=s.alpha, details=dict(est.details), **extra)
    res.message = res.summary()
    return res


def _finish(name: str, results: list[ClaimResult]) -> list[ClaimResult]:
    for r in results:
        record(r)
    if any(not r.passed for r in results):
        raise ClaimFailed(f"{name}: " + "\n  ".join(r.message for r in results), results)
    return results


def _vec(obj: Any, attr: str, name: str) -> np.ndarray:
    if not hasattr(obj, attr):
        raise AssertionInputError(f"{name} expects a result with .{attr}; got {type(obj).__name__}")
    x = to_numpy(getattr(obj, attr)).ravel()
    bad = nonfinite(x)
    if bad is not None:
        raise AssertionInputError(f"{name}: {attr} has {bad[0]} NaN/inf values; a feature claim on them cannot be decided")
    return x


def assert_feature_circuit(result: Any, *criteria: Criterion, alpha: Optional[float] = None,
                           level: Optional[float] = None, decide: Optional[str] = None,
                           n_boot: Optional[int] = None, method: Optional[str] = None) -> list[ClaimResult]:
    """A feature circuit is faithful and complete: ``faithfulness > 0.7``, ``completeness > 0.8``
    (ratios of sums over examples; bootstrap over examples). ``result``: anything with per-example
    ``circuit``, ``complement``, ``full`` and ``empty`` metrics (a FeatureCircuitResult)."""
    name = "assert_feature_circuit"
    s = _settings(alpha, level, decide, n_boot, method)
    crits = as_criteria(criteria, name, ("faithfulness", "completeness"))
    if not crits:
        raise CriterionError(f"{name} needs a criterion, e.g. `faithfulness > 0.7`")
    d = {k: _vec(result, k, name) for k in ("circuit", "complement", "full", "empty")}
    n = d["full"].size
    if len({v.size for v in d.values()}) != 1:
        raise AssertionInputError(f"{name}: circuit, complement, full and empty must have one value per example")
    den = d["full"] - d["empty"]
    out = []
    for c in crits:
        require_n(n, MIN_BOOTSTRAP_N if s.decide == "bound" else 2, f"`{c}` (bootstrap)")
        if abs(den.mean()) < 1e-12 or (n > 1 and abs(den.mean()) < 0.25 * den.std(ddof=1)):
            raise InsufficientData(f"{name}: `{c}` divides by the full - empty gap, {den.mean():.3g} (sd "
                                   f"{den.std(ddof=1):.3g}), which is not clearly away from 0; use another ablation "
                                   "or a behaviour the model shows more strongly")
        num = d["circuit"] - d["empty"] if c.name == "faithfulness" else d["full"] - d["complement"]

        def stat(idx, num=num):
            W = resample_weights(idx, n)
            with np.errstate(invalid="ignore", divide="ignore"):
                return (W @ num) / (W @ den)
        rng = make_rng(s.seed, s.claim_id or "", name, str(c))
        est = bootstrap(stat, n, alpha=s.alpha, n_boot=s.n_boot, method=s.method, rng=rng, op=c.op, bar=c.bar)
        est.details.update({"n_nodes": len(getattr(result, "nodes", []) or []),
                            "ablation": getattr(result, "ablation", None)})
        res = _decide(name, c, est, s, plot={"kind": "bars", "labels": ["empty", "complement", "circuit", "full"],
                                             "y": [float(d[k].mean()) for k in ("empty", "complement", "circuit", "full")]})
        res.details["sae"] = _sae_details(result)
        res.examples = examples_of("ratio", {"num": num, "den": den}, result)
        out.append(res)
    return _finish(name, out)


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
    """A feature fires on the 'on' prompts and not on the 'off' prompts (``field.selectivity``):
    ``rate_on``, ``rate_off`` (share of prompts with activation above the threshold), ``mean_diff``,
    ``auroc``. ``sel``: anything with per-prompt ``on`` and ``off`` activations and a ``threshold``."""
    from scipy import stats as sst

    name = "assert_selective"
    s = _settings(alpha, level, decide, n_boot, method)
    crits = as_criteria(criteria, name, ("rate_on", "rate_off", "mean_diff", "auroc"))
    if not crits:
        raise CriterionError(f"{name} needs a criterion, e.g. `auroc > 0.9`")
    on, off = _vec(sel, "on", name), _vec(sel, "off", name)
    thr = float(getattr(sel, "threshold", 0.0))
    out = []
    z = sst.norm.ppf(1 - s.alpha)
    for c in crits:
        if c.name in ("rate_on", "rate_off"):
            x = (on if c.name == "rate_on" else off) > thr
            est = binomial_rate(x, alpha=s.alpha, op=c.op, bar=c.bar)
            ex = examples_of("mean", {"x": x.astype(float)}, getattr(sel, "on_set" if c.name == "rate_on" else "off_set", None))
        elif c.name == "mean_diff":
            require_n(min(on.size, off.size), 2, f"`{c}` (Welch t)")
            diff = float(on.mean() - off.mean())
            t = sst.ttest_ind(on, off + c.bar, equal_var=False,
                              alternative="greater" if c.op in (">", ">=") else "less")
            ci = sst.ttest_ind(on, off, equal_var=False).confidence_interval(1 - 2 * s.alpha)
            p = float(t.pvalue) if np.isfinite(t.pvalue) else (0.0 if clears(diff, c.op, c.bar) else 1.0)
            lo, hi = (float(ci.low), float(ci.high)) if np.isfinite(ci.low) else (diff, diff)
            est = Estimate(diff, lo, hi, on.size + off.size, "Welch t", p, 1 - 2 * s.alpha,
                           {"mean_on": float(on.mean()), "mean_off": float(off.mean())})
            ex = None
        else:
            require_n(min(on.size, off.size), 2, f"`{c}` (DeLong)")
            auc, se = delong(on, off)
            if se > 0:
                zc = (auc - c.bar) / se
                p = float(sst.norm.sf(zc) if c.op in (">", ">=") else sst.norm.cdf(zc))
            else:
                p = 0.0 if clears(auc, c.op, c.bar) else 1.0
            est = Estimate(auc, max(0.0, auc - z * se), min(1.0, auc + z * se), on.size + off.size,
                           "DeLong normal", p, 1 - 2 * s.alpha, {"se": se, "n_on": on.size, "n_off": off.size})
            ex = None
        est.details.update({"latent": getattr(sel, "latent", None), "dictionary": getattr(sel, "dictionary", None),
                            "threshold": thr})
        res = _decide(name, c, est, s, plot={"kind": "hist", "values": on[:512].tolist(), "bar": c.bar,
                                             "estimate": est.estimate})
        res.examples = ex
        res.details["sae"] = _sae_details(sel)
        out.append(res)
    return _finish(name, out)
