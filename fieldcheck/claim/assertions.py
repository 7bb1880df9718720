"""The assertions a claim makes: each computes its statistics over the examples, with an
interval, decides every criterion, records a :class:`~fieldcheck.claim.result.ClaimResult` per
criterion and raises :class:`~fieldcheck.claim.result.ClaimFailed` when any fails.

Common keywords of every assertion (None: the session setting from :mod:`fieldcheck.config`):
``alpha`` (or ``level`` = 1 - alpha), ``decide`` (``"bound"`` or ``"point"``), ``n_boot``,
``method`` (``"bca"`` or ``"percentile"``).

Each assertion returns the list of its ClaimResults (one per criterion, in order).

Errors that are not failures of the claim: a criterion the assertion cannot decide
(:class:`~fieldcheck.errors.CriterionError`), too few examples for the requested confidence
(:class:`~fieldcheck.errors.InsufficientData`), inputs of the wrong kind or shape
(:class:`AssertionInputError`). NaN or inf in any input is a *failure* of the claim, never a
pass.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import numpy as np

from fieldcheck import config
from fieldcheck.claim.result import ClaimFailed, ClaimResult, record
from fieldcheck.claim.comparison import examples_of as _examples
from fieldcheck.claim.criteria import Criterion, as_criteria
from fieldcheck.errors import CriterionError, FieldcheckError, InsufficientData
from fieldcheck.claim.statistics import (MIN_BOOTSTRAP_N, Estimate, adjust_pvalues, binomial_rate, bootstrap, clears,
                    make_rng, mean_test, min_n_rate, min_n_signflip, nonfinite, require_n,
                    resample_weights, to_numpy)

# re-exported so that `from fieldcheck import r2, ...` and `fc.r2` work
from fieldcheck.claim.criteria import (alpha_star, cpr, depth_share, effect, explained, gap_closed, mean,  # noqa: F401
                       pearson, rate, recovered, r2, shift, spearman, top_k_overlap)

__all__ = ["assert_predicted_effect", "assert_effect", "assert_path_effect", "assert_localized",
           "assert_linear_regime", "assert_light_cone", "assert_anisotropic",
           "assert_transfers", "assert_faithful", "assert_prefers", "AssertionInputError"]

_MAX_PLOT = 512     # most points a plot carries
_MAX_SITES = 50     # most per-site rows in details


class AssertionInputError(FieldcheckError, ValueError):
    """An assertion got an input of the wrong kind or shape."""


# --- inputs --------------------------------------------------------------------------------
class _NonFinite(Exception):
    def __init__(self, where: str):
        self.where = where


def _attr(obj: Any, name: str, assertion: str, what: str) -> Any:
    if not hasattr(obj, name):
        raise AssertionInputError(f"{assertion} expects {what} (with .{name}); got "
                                  f"{type(obj).__name__}")
    return getattr(obj, name)


def _finite(arr: np.ndarray, name: str, labels: Optional[Sequence[str]] = None) -> np.ndarray:
    bad = nonfinite(arr)
    if bad is not None:
        count, first = bad
        if arr.ndim == 2 and labels is not None and first[0] < len(labels):
            at = f"site {labels[first[0]]}, example {first[1]}"
        elif arr.ndim == 2:
            at = f"row {first[0]}, example {first[1]}"
        elif arr.ndim == 1:
            at = f"example {first[0]}"
        else:
            at = f"index {first}"
        raise _NonFinite(f"{name} has {count} NaN/inf value{'s' if count > 1 else ''} "
                         f"(first at {at})")
    return arr


def _labels(obj: Any, n: int) -> list[str]:
    try:
        labels = getattr(obj, "labels", None)  # PatchResult.labels (a joint patch has one)
        if labels is not None and not callable(labels) and len(labels) == n:
            return [str(x) for x in labels]
    except (TypeError, AttributeError):
        pass
    sites = getattr(obj, "sites", None)
    if sites is not None:
        try:
            labels = [str(getattr(s, "label", s)) for s in sites]
        except TypeError:
            labels = []
        if len(labels) == n:
            return labels
    return [f"site {i}" for i in range(n)]


def _table(x: Any, name: str, assertion: str) -> np.ndarray:
    """[n_sites, batch] from an array [n_sites, batch] or [batch]."""
    arr = to_numpy(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise AssertionInputError(f"{assertion}: {name} must be [n_sites, batch] or [batch], "
                                  f"got shape {tuple(arr.shape)}")
    return arr


def _vector(x: Any, name: str, assertion: str, n: Optional[int] = None) -> np.ndarray:
    arr = to_numpy(x)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise AssertionInputError(f"{assertion}: {name} must be one value per example [batch], "
                                  f"got shape {tuple(arr.shape)}")
    if n is not None and arr.size != n:
        raise AssertionInputError(f"{assertion}: {name} has {arr.size} examples, expected {n}")
    return arr


# --- deciding -------------------------------------------------------------------------------
Compute = Callable[[Criterion, config.Settings, np.random.Generator], Estimate]


def _settings(alpha, level, decide, n_boot, method) -> config.Settings:
    if alpha is not None and level is not None:
        raise CriterionError("give alpha or level (= 1 - alpha), not both")
    return config.resolve(alpha=alpha, level=level, decide=decide, n_boot=n_boot, method=method)


def _check_n(kind: str, n: int, crit: Criterion, s: config.Settings) -> None:
    """Refuse sample sizes for which the decision cannot mean what it says."""
    what = f"`{crit}` at {round((1 - s.alpha) * 100, 2):g}% confidence"
    if s.decide == "point":
        require_n(n, 1 if kind == "rate" else 2, f"`{crit}`")
    elif kind == "rate":
        require_n(n, min_n_rate(crit.bar, crit.op, s.alpha), what + " (Clopper-Pearson, even "
                  "if every example agrees)")
    elif kind == "signflip":
        require_n(n, max(2, min_n_signflip(s.alpha)), what + " (sign-flip test: 2**-n < alpha)")
    else:
        require_n(n, MIN_BOOTSTRAP_N, what + " (bootstrap)")


def _result(assertion: str, crit: Criterion, est: Estimate, s: config.Settings,
            **extra: Any) -> ClaimResult:
    bound = est.bound(crit.op)
    value = bound if s.decide == "bound" else est.estimate
    passed = clears(value, crit.op, crit.bar) and math.isfinite(est.estimate)
    interval = (est.low, est.high)
    return ClaimResult(statistic=str(crit.statistic), estimate=est.estimate, interval=interval,
                       op=crit.op, bar=crit.bar, passed=bool(passed), n=est.n, level=est.level,
                       p_value=est.p_value, decide=s.decide, method=est.method,
                       assertion=assertion, claim_id=s.claim_id, criterion=str(crit),
                       bound=bound, alpha=s.alpha, details=dict(est.details), **extra)


def _nonfinite_results(assertion: str, crits: list[Criterion], s: config.Settings, where: str,
                       n: int) -> list[ClaimResult]:
    msg = f"cannot be computed: {where}; a claim on non-finite values fails"
    return [ClaimResult(statistic=str(c.statistic), estimate=math.nan, interval=None, op=c.op,
                        bar=c.bar, passed=False, n=n, level=1 - 2 * s.alpha, decide=s.decide,
                        method="not computed (non-finite input)", assertion=assertion,
                        claim_id=s.claim_id, criterion=str(c), alpha=s.alpha,
                        message=f"{c.statistic} {msg}", details={"non_finite": where})
            for c in crits]


def _finish(assertion: str, results: list[ClaimResult]) -> list[ClaimResult]:
    for r in results:
        if not r.message:
            r.message = r.summary()
        record(r)
    failed = [r for r in results if not r.passed]
    if failed:
        lines = [r.message for r in results]
        raise ClaimFailed(f"{assertion}: " + "\n  ".join(lines), results)
    return results


def _run(assertion: str, criteria: tuple, valid: tuple[str, ...], s: config.Settings,
         prepare: Callable[[], Any], decide_one: Callable[[Criterion, Any, np.random.Generator],
                                                         ClaimResult]) -> list[ClaimResult]:
    """Validate criteria, read the inputs (``prepare``; NaN/inf -> failed claim), then decide
    each criterion with its own seeded generator."""
    crits = as_criteria(criteria, assertion, valid)
    if not crits:
        raise CriterionError(f"{assertion} needs at least one criterion, e.g. "
                             f"`{valid[0]} > 0.5`; valid statistics: {', '.join(valid)}")
    try:
        data = prepare()
    except _NonFinite as e:
        return _finish(assertion, _nonfinite_results(assertion, crits, s, e.where, 0))
    results = []
    for c in crits:
        rng = make_rng(s.seed, s.claim_id or "", assertion, str(c))
        results.append(decide_one(c, data, rng))
    return _finish(assertion, results)


def _sites_text(rows: list[tuple[str, float, float]], first: str = "pred",
                second: str = "real") -> str:
    return ", ".join(f"{lab} ({first} {_num(a)}, {second} {_num(b)})" for lab, a, b in rows)


def _num(x: float) -> str:
    return f"{x:.3g}"


# --- predicted vs actual effects ----------------------------------------------------------------
def _effects(x: Any, name: str, assertion: str) -> tuple[np.ndarray, Any]:
    if hasattr(x, "effect") and not isinstance(x, np.ndarray):
        return _table(x.effect, name, assertion), x
    return _table(x, name, assertion), None


def _topk_mask(v: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-np.abs(v), k - 1, axis=-1)[..., :k]
    mask = np.zeros(v.shape, dtype=bool)
    np.put_along_axis(mask, part, True, axis=-1)
    return mask


def _corr_lastaxis(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(-1) / np.sqrt((xc ** 2).sum(-1) * (yc ** 2).sum(-1))


def assert_predicted_effect(predicted: Any, actual: Any, *criteria: Criterion,
                            alpha: Optional[float] = None, level: Optional[float] = None,
                            decide: Optional[str] = None, n_boot: Optional[int] = None,
                            method: Optional[str] = None) -> list[ClaimResult]:
    """Predicted patch effects (e.g. ``field.predict``) match real ones (``field.patch``).

    ``predicted``, ``actual``: PatchResult-like objects (``.effect`` [n_sites, batch]) or
    arrays [n_sites, batch] / [batch], same shape. Statistics:

    - ``r2``: 1 - SS_res/SS_tot of the actual effects against the prediction *as is* (no
      refitted slope or intercept) over all (site, example) pairs; ``details`` also carry the
      squared Pearson correlation (the R^2 a refitted line would get).
    - ``pearson``: correlation over all (site, example) pairs.
    - ``spearman``: rank correlation of the sites' mean predicted and mean real effects
      (over examples when there is a single site).
    - ``top_k_overlap(k)``: share of the top-k sites by |mean real effect| that are also in
      the top-k by |mean predicted effect|.

    Intervals: cluster bootstrap over *examples* (all sites of an example move together).
    """
    name = "assert_predicted_effect"
    s = _settings(alpha, level, decide, n_boot, method)
    valid = ("r2", "pearson", "spearman", "top_k_overlap")

    def prepare():
        P, pobj = _effects(predicted, "predicted effect", name)
        A, aobj = _effects(actual, "actual effect", name)
        if P.shape != A.shape:
            raise AssertionInputError(f"{name}: predicted effects have shape {P.shape} and "
                                      f"actual effects {A.shape}; they must match "
                                      "[n_sites, batch]")
        labels = _labels(aobj if aobj is not None else pobj, A.shape[0])
        if labels[0] == "site 0" and pobj is not None:
            labels = _labels(pobj, A.shape[0])
        _finite(P, "the predicted effect", labels)
        _finite(A, "the actual effect", labels)
        return P, A, labels

    def one(c: Criterion, data, rng) -> ClaimResult:
        P, A, labels = data
        S, n = A.shape
        kind = "discrete" if c.name == "top_k_overlap" else "bootstrap"
        _check_n(kind, n, c, s)
        if c.name in ("r2", "pearson"):
            # column (example) aggregates, so a resample is a weighted sum over examples
            a = A - A.mean()
            p = P - A.mean()
            cols = {"r": ((a - p) ** 2).sum(0), "t": a.sum(0), "q": (a ** 2).sum(0),
                    "u": p.sum(0), "v": (p ** 2).sum(0), "c": (a * p).sum(0)}

            def agg(idx):
                W = resample_weights(idx, n)
                N = S * W.sum(-1)
                g = {k: W @ v for k, v in cols.items()}
                ss_tot = g["q"] - g["t"] ** 2 / N
                with np.errstate(invalid="ignore", divide="ignore"):
                    if c.name == "r2":
                        return 1.0 - g["r"] / ss_tot
                    cov = g["c"] - g["u"] * g["t"] / N
                    return cov / np.sqrt((g["v"] - g["u"] ** 2 / N) * ss_tot)
            stat = agg
        elif c.name == "spearman":
            from scipy.stats import rankdata
            if S == 1:
                def stat(idx):
                    return _corr_lastaxis(rankdata(P[0][idx], axis=-1),
                                          rankdata(A[0][idx], axis=-1))
            else:
                if S < 3:
                    raise InsufficientData(f"{name}: spearman over sites needs at least 3 "
                                           f"sites, got {S}")

                def stat(idx):
                    W = resample_weights(idx, n)
                    m = W.sum(-1, keepdims=True)
                    return _corr_lastaxis(rankdata(W @ P.T / m, axis=-1),
                                          rankdata(W @ A.T / m, axis=-1))
        else:
            k = c.statistic.param("k")
            if S <= k:
                raise InsufficientData(f"{name}: `{c}` needs more than k={k} sites (any {S} "
                                       f"sites overlap fully); got {S}")

            def stat(idx):
                W = resample_weights(idx, n)
                m = W.sum(-1, keepdims=True)
                return (_topk_mask(W @ P.T / m, k) & _topk_mask(W @ A.T / m, k)).sum(-1) / k
        est = bootstrap(stat, n, alpha=s.alpha, n_boot=s.n_boot, method=s.method, rng=rng,
                        op=c.op, bar=c.bar, discrete=(kind == "discrete"))
        pm, am = P.mean(1), A.mean(1)
        order = np.argsort(-np.abs(am - pm), kind="stable")
        worst = [(labels[i], float(pm[i]), float(am[i])) for i in order[:3]]
        details = {"n_sites": S, "n_examples": n,
                   "worst_sites": [{"site": l, "predicted": a, "real": b} for l, a, b in worst]}
        if c.name == "r2":
            r = np.corrcoef(P.ravel(), A.ravel())[0, 1] if P.std() > 0 and A.std() > 0 else math.nan
            details["pearson_r2"] = float(r ** 2)
        est.details.update(details)
        keep = np.argsort(-np.abs(am), kind="stable")[:_MAX_PLOT] if S > 1 else None
        if S > 1:
            plot = {"kind": "scatter", "x": pm[keep].tolist(), "y": am[keep].tolist(),
                    "labels": [labels[i] for i in keep], "xlabel": "predicted mean effect",
                    "ylabel": "real mean effect", "what": "site means"}
        else:
            plot = {"kind": "scatter", "x": P[0][:_MAX_PLOT].tolist(),
                    "y": A[0][:_MAX_PLOT].tolist(), "xlabel": "predicted effect",
                    "ylabel": "real effect", "what": "examples"}
        res = _result(name, c, est, s, plot=plot)
        if c.name in ("r2", "pearson"):
            res.examples = _examples(c.name, cols, actual, predicted, constants={"S": S})
        if not res.passed:
            res.message = res.summary() + "; worst sites: " + _sites_text(worst)
        return res

    return _run(name, criteria, valid, s, prepare, one)


# --- patch effects ---------------------------------------------------------------------------
def _patch_arrays(result: Any, assertion: str):
    what = "a PatchResult"
    values = _table(_attr(result, "values", assertion, what), "values", assertion)
    S, n = values.shape
    labels = _labels(result, S)
    if getattr(result, "jointly", False) and S == 1 and labels == ["site 0"]:
        labels = [f"joint patch of {len(getattr(result, 'sites', None) or [])} sites"]
    eff_raw = getattr(result, "effect", None)
    clean = _vector(_attr(result, "baseline_clean", assertion, what), "baseline_clean",
                    assertion, n)
    corrupt = _vector(_attr(result, "baseline_corrupt", assertion, what), "baseline_corrupt",
                      assertion, n)
    return values, eff_raw, clean, corrupt, labels


#: a ratio's denominator (the clean-corrupt gap) must be at least this many standard deviations
#: of its per-example values away from 0 on average (besides its interval excluding 0)
GAP_MIN_SPREAD = 0.25


def _check_gap(assertion: str, crit: Criterion, den: np.ndarray, s: config.Settings,
               what: str, fix: str) -> None:
    """Refuse a ratio statistic whose denominator is not clearly away from zero: the mean
    per-example gap's t interval at ``1 - 2 alpha`` includes 0, or the mean is smaller than
    GAP_MIN_SPREAD of the gaps' standard deviation. A ratio of sums over such a gap is
    undefined or swings between large positive and negative values (Fieller)."""
    from scipy.stats import t as tdist

    n = den.size
    mean = float(den.mean())
    sd = float(den.std(ddof=1)) if n > 1 else 0.0
    half = float(tdist.ppf(1 - s.alpha, n - 1)) * sd / math.sqrt(n) if n > 1 else math.inf
    lo, hi = mean - half, mean + half
    if (lo <= 0.0 <= hi) or abs(mean) < GAP_MIN_SPREAD * sd or mean == 0.0:
        raise InsufficientData(
            f"{assertion}: `{crit}` is not defined here: {what} is {_num(mean)} "
            f"[{_num(lo)}, {_num(hi)}] ({round((1 - 2 * s.alpha) * 100)}% CI, n={n}, sd "
            f"{_num(sd)}), not clearly away from 0, and {crit.statistic} divides by it; {fix}")


def _ratio_stat(num: np.ndarray, den: np.ndarray, n: int) -> Callable:
    def stat(idx):
        W = resample_weights(idx, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (W @ num) / (W @ den)
    return stat


def _per_site_effect(assertion: str, result: Any, criteria: tuple, direction: Optional[str],
                     require: str, s: config.Settings,
                     extra_details: Optional[dict] = None) -> list[ClaimResult]:
    valid = ("recovered", "effect")
    if require not in ("all", "any"):
        raise CriterionError(f"{assertion}: require={require!r}; use 'all' (every site must "
                             "meet the criterion) or 'any' (at least one site, each at "
                             "alpha / n_sites)")
    if direction is not None:
        if direction not in ("denoise", "noise"):
            raise CriterionError(f"{assertion}: direction={direction!r}; use 'denoise' or 'noise'")
        got = getattr(result, "direction", None)
        if got != direction:
            raise CriterionError(f"{assertion}(direction={direction!r}) but the result was "
                                 f"measured with direction={got!r}; patch with "
                                 f"direction={direction!r} or drop the direction= keyword")

    def prepare():
        values, eff_raw, clean, corrupt, labels = _patch_arrays(result, assertion)
        _finite(values, "the patched metric (values)", labels)
        _finite(clean, "the clean baseline")
        _finite(corrupt, "the corrupted baseline")
        if eff_raw is not None:
            eff = _table(eff_raw, "effect", assertion)
            if eff.shape != values.shape:
                raise AssertionInputError(f"{assertion}: effect has shape {eff.shape}, values "
                                          f"{values.shape}")
            _finite(eff, "the patch effect", labels)
        else:
            base = corrupt if getattr(result, "direction", "denoise") == "denoise" else clean
            eff = values - base[None, :]
        return values, eff, clean, corrupt, labels

    def one(c: Criterion, data, rng) -> ClaimResult:
        values, eff, clean, corrupt, labels = data
        S, n = values.shape
        kind = "signflip" if c.name == "effect" else "bootstrap"
        _check_n(kind, n, c, s)
        if c.name == "recovered":
            _check_gap(assertion, c, clean - corrupt, s, "the clean-corrupt gap (clean - "
                       "corrupted metric)", "use `effect` (the patch effect in metric units) "
                       "or a corruption that moves the metric more")
        ests = []
        for i in range(S):
            if c.name == "recovered":
                e = bootstrap(_ratio_stat(values[i] - corrupt, clean - corrupt, n), n,
                              alpha=s.alpha, n_boot=s.n_boot, method=s.method, rng=rng,
                              op=c.op, bar=c.bar)
            else:
                e = mean_test(eff[i], alpha=s.alpha, n_boot=s.n_boot, method=s.method,
                              rng=rng, op=c.op, bar=c.bar)
            ests.append(e)
        p = [e.p_value for e in ests]
        p_holm = adjust_pvalues(p, "holm")
        decide_bound = s.decide == "bound"
        any_many = require == "any" and S > 1
        if any_many:
            # at least one of S sites: each site at alpha / S (Bonferroni; for "any" the same
            # decision as Holm), so each site's bound is taken at level 1 - alpha / S
            for e in ests:
                if e.at is not None:
                    e.low, e.high = e.at(s.alpha / S)
                    e.level = 1.0 - 2.0 * s.alpha / S
        site_pass = []
        for e in ests:
            v = e.bound(c.op) if decide_bound else e.estimate
            site_pass.append(clears(v, c.op, c.bar))
        # the site that decides: the worst (all) or the best (any) by its deciding value
        sign = 1.0 if c.op in (">", ">=") else -1.0
        key = [sign * (e.bound(c.op) if decide_bound else e.estimate) for e in ests]
        key = [k if math.isfinite(k) else -math.inf for k in key]
        pick = int(np.argmin(key)) if require == "all" else int(np.argmax(key))
        chosen = ests[pick]
        agg = Estimate(chosen.estimate, chosen.low, chosen.high, n, chosen.method,
                       level=chosen.level, details=dict(chosen.details))
        if S > 1:
            finite_p = [x for x in p if x is not None]
            agg.p_value = (max(finite_p) if require == "all" else min(1.0, S * min(finite_p))) \
                if finite_p else None
        else:
            agg.p_value = chosen.p_value
        res = _result(assertion, c, agg, s)
        res.passed = bool(all(site_pass) if require == "all" else any(site_pass))
        cols = ({"num": values - corrupt, "den": np.broadcast_to(clean - corrupt, values.shape)}
                if c.name == "recovered" else {"x": eff})
        res.examples = _examples("ratio" if c.name == "recovered" else "mean",
                                 {k: v[0] if S == 1 else v for k, v in cols.items()}, result,
                                 agg="min" if (c.op in (">", ">=")) == (require == "all") else "max",
                                 labels=labels if S > 1 else None)
        order = np.argsort(key, kind="stable")
        rows = [{"site": labels[i], "estimate": ests[i].estimate, "low": ests[i].low,
                 "high": ests[i].high, "p_value": p[i], "p_holm": p_holm[i],
                 "passed": site_pass[i]} for i in order[:_MAX_SITES]]
        res.details.update({"n_sites": S, "require": require, "site": labels[pick],
                            "sites": rows, "direction": getattr(result, "direction", None),
                            "metric": getattr(result, "metric", None)})
        if extra_details:
            res.details.update(extra_details)
        if S > 1:
            res.method += (f"; per site, {'every' if require == 'all' else 'any'} of {S} sites "
                           + ("(intersection-union: each at alpha)" if require == "all"
                              else "(Bonferroni: each at alpha / " + str(S) + ")"))
            res.plot = {"kind": "bar", "labels": [labels[i] for i in range(min(S, _MAX_PLOT))],
                        "y": [e.estimate for e in ests[:_MAX_PLOT]],
                        "low": [e.low for e in ests[:_MAX_PLOT]],
                        "high": [e.high for e in ests[:_MAX_PLOT]], "bar": c.bar}
        else:
            col = (values[0] - corrupt) / np.where(clean - corrupt == 0, np.nan, clean - corrupt) \
                if c.name == "recovered" else eff[0]
            res.plot = {"kind": "hist", "values": col[:_MAX_PLOT].tolist(), "bar": c.bar,
                        "estimate": chosen.estimate}
        if not res.passed:
            bad = [i for i in order if not site_pass[i]][:3]
            where = "" if S == 1 else "; worst sites: " + ", ".join(
                f"{labels[i]} ({_num(ests[i].estimate)} [{_num(ests[i].low)}, "
                f"{_num(ests[i].high)}])" for i in bad)
            res.message = res.summary() + (f" (site {labels[pick]})" if S > 1 else "") + where
        return res

    return _run(assertion, criteria, valid, s, prepare, one)


def assert_effect(result: Any, *criteria: Criterion, direction: Optional[str] = None,
                  require: str = "all", alpha: Optional[float] = None,
                  level: Optional[float] = None, decide: Optional[str] = None,
                  n_boot: Optional[int] = None, method: Optional[str] = None) -> list[ClaimResult]:
    """A patch has the effect claimed: ``recovered > 0.8`` or ``effect < -1.0``.

    ``recovered``: sum(patched - corrupt) / sum(clean - corrupt) over examples (a ratio of
    means, steadier than the mean of per-example ratios); bootstrap interval.
    ``effect``: mean patch effect; interval and p-value from a sign-flip permutation test.

    A result with several sites (not patched jointly) is decided per site. ``require="all"``
    (default): every site must meet the criterion; each is tested at ``alpha`` (an
    intersection-union test needs no correction: the claim can only pass if every site's
    test passes) and the result shows the worst site, with its p-value the largest. With
    ``require="any"``: at least one site, each site tested at ``alpha / n_sites`` (Bonferroni,
    the same decision as Holm for "any"; bounds at level ``1 - alpha / n_sites``). Per-site rows
    (estimate, interval, raw and Holm-adjusted p) are in ``details["sites"]``.
    ``direction``: the result must have been measured this way ('denoise' or 'noise').
    """
    s = _settings(alpha, level, decide, n_boot, method)
    return _per_site_effect("assert_effect", result, criteria, direction, require, s)


def assert_path_effect(path_result: Any, *criteria: Criterion, require: str = "all",
                       alpha: Optional[float] = None, level: Optional[float] = None,
                       decide: Optional[str] = None, n_boot: Optional[int] = None,
                       method: Optional[str] = None) -> list[ClaimResult]:
    """A path patch (sender -> receiver) has the effect claimed; as :func:`assert_effect`."""
    s = _settings(alpha, level, decide, n_boot, method)
    return _per_site_effect("assert_path_effect", path_result, criteria, None, require, s)


def assert_localized(selection: Any, *criteria: Criterion, top_k: Optional[int] = None,
                     alpha: Optional[float] = None, level: Optional[float] = None,
                     decide: Optional[str] = None, n_boot: Optional[int] = None,
                     method: Optional[str] = None) -> list[ClaimResult]:
    """A few sites, patched together, carry the effect: ``recovered >= 0.8`` of the joint
    patch of the sites chosen by ``field.select_sites`` (its ``.real``), with at most
    ``top_k`` sites. A joint PatchResult (``jointly=True``) is accepted too."""
    name = "assert_localized"
    s = _settings(alpha, level, decide, n_boot, method)
    if hasattr(selection, "real"):
        joint, sites = selection.real, list(getattr(selection, "sites", []) or [])
    elif hasattr(selection, "values"):
        rows = _table(selection.values, "values", name).shape[0]
        if not (getattr(selection, "jointly", False) or rows == 1):
            raise AssertionInputError(
                f"{name} needs the sites patched together, but got a PatchResult with {rows} "
                f"separately patched sites; use field.select_sites(..., k=...) (or "
                f"field.patch(sites, jointly=True)) and pass its result")
        joint, sites = selection, list(getattr(selection, "sites", []) or [])
    else:
        raise AssertionInputError(f"{name} expects the Selection from field.select_sites; got "
                                  f"{type(selection).__name__}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise CriterionError(f"{name}: top_k must be a positive integer, got {top_k!r}")
        if len(sites) > top_k:
            raise AssertionInputError(f"{name}: the selection has {len(sites)} sites, more than "
                                      f"top_k={top_k}; select at most {top_k} sites")
    extra: dict[str, Any] = {"k": len(sites), "selected": [str(getattr(x, "label", x))
                                                          for x in sites]}
    recall = getattr(selection, "recall", None)
    if recall is not None:
        extra["recall"] = float(recall)
    pred = getattr(selection, "predicted", None)
    if pred is not None and hasattr(selection, "real"):
        try:
            extra["predicted_mean"] = float(np.mean(to_numpy(pred)))
        except (TypeError, ValueError):
            pass
    return _per_site_effect(name, joint, criteria, None, "all", s, extra)


# --- linear regime ------------------------------------------------------------------------------
def _alpha_star(alphas: np.ndarray, me: np.ndarray, ml: np.ndarray, tol: float,
                tiny: float) -> np.ndarray:
    """alpha* from mean effects/linear predictions [..., n_alpha] (alphas ascending)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        dev = np.abs(me - ml) / np.maximum(np.abs(ml), tiny)
    ok = (dev <= tol) | (alphas == 0)
    run = np.logical_and.accumulate(ok, axis=-1).sum(-1)
    return np.where(run > 0, alphas[np.maximum(run - 1, 0)], 0.0)


def assert_linear_regime(sweep: Any, *criteria: Criterion, tol: Optional[float] = None,
                         alpha: Optional[float] = None, level: Optional[float] = None,
                         decide: Optional[str] = None, n_boot: Optional[int] = None,
                         method: Optional[str] = None) -> list[ClaimResult]:
    """The response stays linear up to a scale: ``alpha_star >= 0.3``.

    For each scale alpha of the sweep, the relative deviation is
    ``|mean effect - mean linear| / max(|mean linear|, 1e-12 * max_alpha |mean linear|)``
    (means over examples). ``alpha_star(tol)`` is the largest alpha such that every alpha' <=
    alpha has deviation <= tol (alpha = 0 always counts as linear); 0 if the smallest
    non-zero alpha already deviates. ``tol`` comes from ``alpha_star(tol=...)``, else the
    ``tol=`` keyword, else 0.1. Interval: bootstrap over examples, percentile with
    ``inverted_cdf`` quantiles (alpha* lives on the grid).
    """
    name = "assert_linear_regime"
    s = _settings(alpha, level, decide, n_boot, method)

    def prepare():
        alphas = _vector(_attr(sweep, "alphas", name, "a Sweep"), "alphas", name)
        E = _table(_attr(sweep, "effect", name, "a Sweep"), "effect", name)
        L = _table(_attr(sweep, "linear", name, "a Sweep"), "linear", name)
        if E.shape != L.shape or E.shape[0] != alphas.size:
            raise AssertionInputError(f"{name}: alphas {alphas.shape}, effect {E.shape} and "
                                      f"linear {L.shape} must be [n_alpha] and [n_alpha, batch]")
        labels = [f"alpha={a:g}" for a in alphas]
        _finite(alphas, "the sweep's alphas")
        _finite(E, "the real effect", labels)
        _finite(L, "the linear prediction", labels)
        order = np.argsort(alphas, kind="stable")
        return alphas[order], E[order], L[order]

    def one(c: Criterion, data, rng) -> ClaimResult:
        alphas, E, L = data
        n = E.shape[1]
        written = dict(c.statistic.params).get("tol")
        t = float(written if written is not None else
                  (tol if tol is not None else c.statistic.param("tol")))
        if not (math.isfinite(t) and t > 0):
            raise CriterionError(f"{name}: tol must be a positive number, got {t!r}")
        _check_n("discrete", n, c, s)
        me, ml = E.mean(1), L.mean(1)
        tiny = max(1e-12 * float(np.abs(ml).max()), 1e-300)

        def stat(idx):
            W = resample_weights(idx, n)
            m = W.sum(-1, keepdims=True)
            return _alpha_star(alphas, W @ E.T / m, W @ L.T / m, t, tiny)

        est = bootstrap(stat, n, alpha=s.alpha, n_boot=s.n_boot, method=s.method, rng=rng,
                        op=c.op, bar=c.bar, discrete=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            dev = np.abs(me - ml) / np.maximum(np.abs(ml), tiny)
        est.details.update({"tol": t, "deviation": dev.tolist(), "alphas": alphas.tolist()})
        plot = {"kind": "alpha_curve", "alphas": alphas.tolist(), "effect": me.tolist(),
                "linear": ml.tolist(), "tol": t, "alpha_star": est.estimate}
        res = _result(name, c, est, s, plot=plot)
        if not res.passed:
            bad = [f"alpha={a:g} (real {_num(x)}, linear {_num(y)}, deviation {_num(d)})"
                   for a, x, y, d in zip(alphas, me, ml, dev) if a != 0 and d > t][:2]
            res.message = res.summary() + f" (tol={t:g})" + (
                "; first deviations: " + ", ".join(bad) if bad else "")
        return res

    return _run(name, criteria, ("alpha_star",), s, prepare, one)


# --- Green function -------------------------------------------------------------------------------
def _heatmap(green: Any) -> Optional[dict]:
    rn = getattr(green, "response_norm", None)
    if rn is None:
        return None
    try:
        arr = to_numpy(rn)
    except (TypeError, ValueError):
        return None
    if arr.ndim == 3:
        arr = arr.mean(0)
    if arr.ndim != 2 or arr.size > 64 * 1024:
        return None
    return {"kind": "heatmap", "z": np.where(np.isfinite(arr), arr, np.nan).tolist(),
            "xlabel": "position", "ylabel": "layer", "what": "mean response norm"}


def assert_light_cone(green: Any, tol: float = 0.0) -> list[ClaimResult]:
    """The linear response vanishes outside the forward light cone (l' >= l, t' >= t):
    passes only if ``green.outside_cone_max <= tol`` (default exactly 0). A deterministic
    check, no statistics; NaN fails."""
    name = "assert_light_cone"
    s = config.get()
    try:
        tol = float(tol)
    except (TypeError, ValueError):
        raise CriterionError(f"{name}: tol must be a number, got {tol!r}") from None
    if not (math.isfinite(tol) and tol >= 0):
        raise CriterionError(f"{name}: tol must be a finite number >= 0, got {tol!r}")
    value = float(to_numpy(_attr(green, "outside_cone_max", name, "a Green response")))
    rn = getattr(green, "response_norm", None)
    n = int(to_numpy(rn).shape[0]) if rn is not None else 0
    passed = math.isfinite(value) and value <= tol
    res = ClaimResult(statistic="outside_cone_max", estimate=value, interval=None, op="<=",
                      bar=tol, passed=passed, n=n, decide="exact",
                      method="max |response| outside the forward light cone", assertion=name,
                      claim_id=s.claim_id, criterion=f"outside_cone_max <= {tol!r}",
                      plot=_heatmap(green), alpha=s.alpha, level=1 - 2 * s.alpha)
    if not passed:
        res.message = (f"outside_cone_max = {value:.3g} (n={n}), needs <= {tol:g}: FAILED; the "
                       "response leaks outside the forward light cone (a hook at the wrong "
                       "site, or non-causal attention)" if math.isfinite(value) else
                       f"outside_cone_max is {value}: the response is not finite; FAILED")
    return _finish(name, [res])


def _mean_criteria(assertion: str, arrays: dict[str, Callable[[], np.ndarray]], criteria: tuple,
                   s: config.Settings, plot: Optional[dict] = None,
                   rates: Optional[dict[str, Callable[[], np.ndarray]]] = None,
                   source: Any = None) -> list[ClaimResult]:
    """Criteria on means of per-example values (sign-flip) and rates (Clopper-Pearson).
    ``source``: the object the values come from (its ``dataset_hash`` names the examples)."""
    rates = rates or {}
    valid = tuple(arrays) + tuple(rates)

    def prepare():
        out = {}
        for k, get in {**arrays, **rates}.items():
            out[k] = get()
        return out

    def one(c: Criterion, data, rng) -> ClaimResult:
        x = data[c.name]
        if c.name in rates:
            _check_n("rate", x.size, c, s)
            est = binomial_rate(x, alpha=s.alpha, op=c.op, bar=c.bar)
        else:
            _check_n("signflip", x.size, c, s)
            est = mean_test(x, alpha=s.alpha, n_boot=s.n_boot, method=s.method, rng=rng,
                            op=c.op, bar=c.bar)
        res = _result(assertion, c, est, s, plot=plot)
        res.examples = _examples("mean", {"x": to_numpy(x)}, source)
        if plot is None:
            res.plot = {"kind": "hist", "values": to_numpy(x)[:_MAX_PLOT].tolist(), "bar": c.bar,
                        "estimate": est.estimate}
        return res

    return _run(assertion, criteria, valid, s, prepare, one)


def assert_anisotropic(green: Any, *criteria: Criterion, alpha: Optional[float] = None,
                       level: Optional[float] = None, decide: Optional[str] = None,
                       n_boot: Optional[int] = None,
                       method: Optional[str] = None) -> list[ClaimResult]:
    """The response spreads along depth more than across tokens: ``depth_share > 0.7``
    (mean over examples of ``green.depth_share``; sign-flip test)."""
    name = "assert_anisotropic"
    s = _settings(alpha, level, decide, n_boot, method)

    def get():
        return _finite(_vector(_attr(green, "depth_share", name, "a Green response"),
                               "depth_share", name), "depth_share")
    return _mean_criteria(name, {"depth_share": get}, criteria, s, plot=_heatmap(green),
                          source=green)


def assert_transfers(transfer: Any, *criteria: Criterion, alpha: Optional[float] = None,
                     level: Optional[float] = None, decide: Optional[str] = None,
                     n_boot: Optional[int] = None,
                     method: Optional[str] = None) -> list[ClaimResult]:
    """A displacement transfers the answer: ``rate > 0.5`` (flip rate, Clopper-Pearson
    interval, exact binomial p-value), ``shift > 1.0`` or ``gap_closed > 0.5`` (means,
    sign-flip test)."""
    name = "assert_transfers"
    s = _settings(alpha, level, decide, n_boot, method)

    def getter(attr):
        def get():
            x = _vector(_attr(transfer, attr, name, "a Transfer"), attr, name)
            if attr == "flipped":
                x = to_numpy(getattr(transfer, attr), dtype=None).ravel()
                if x.dtype != bool:
                    _finite(x.astype(float), "flipped")
                    if not np.isin(x, (0, 1)).all():
                        raise AssertionInputError(f"{name}: flipped must be booleans")
                return x.astype(bool)
            return _finite(x, attr)
        return get
    return _mean_criteria(name, {"shift": getter("shift"), "gap_closed": getter("gap_closed")},
                          criteria, s, rates={"rate": getter("flipped")}, source=transfer)


def assert_faithful(circuit_result: Any, *criteria: Criterion, alpha: Optional[float] = None,
                    level: Optional[float] = None, decide: Optional[str] = None,
                    n_boot: Optional[int] = None,
                    method: Optional[str] = None) -> list[ClaimResult]:
    """A circuit is faithful: ``cpr >= 0.9``, the MIB-style circuit performance ratio
    sum(circuit - empty) / sum(full - empty) over examples (ratio of means), or ``cmd < 0.1``,
    the circuit-model difference |1 - cpr|; bootstrap. ``circuit_result``: anything with
    per-example ``.circuit``, ``.full``, ``.empty`` (``field.evaluate_circuit(ds, circuit)``)."""
    name = "assert_faithful"
    s = _settings(alpha, level, decide, n_boot, method)

    def prepare():
        got = {}
        for attr in ("circuit", "full", "empty"):
            got[attr] = _finite(_vector(_attr(circuit_result, attr, name, "a circuit result"),
                                        attr, name), f"the {attr} metric")
        if not got["circuit"].size == got["full"].size == got["empty"].size:
            raise AssertionInputError(f"{name}: circuit, full and empty must have one value "
                                      "per example each")
        return got

    def one(c: Criterion, d, rng) -> ClaimResult:
        n = d["full"].size
        _check_n("bootstrap", n, c, s)
        den = d["full"] - d["empty"]
        _check_gap(name, c, den, s, "the full - empty gap", "compare the circuit's metric "
                   "directly (assert_prefers) or use an empty baseline that scores lower")
        stat = _ratio_stat(d["circuit"] - d["empty"], den, n)
        if c.name == "cmd":
            stat = (lambda r: lambda idx: np.abs(1 - r(idx)))(stat)
        est = bootstrap(stat, n, alpha=s.alpha,
                        n_boot=s.n_boot, method=s.method, rng=rng, op=c.op, bar=c.bar)
        plot = {"kind": "bars", "labels": ["empty", "circuit", "full"],
                "y": [float(d["empty"].mean()), float(d["circuit"].mean()),
                      float(d["full"].mean())]}
        res = _result(name, c, est, s, plot=plot)
        res.examples = _examples("ratio", {"num": d["circuit"] - d["empty"], "den": den},
                                 circuit_result)
        return res

    return _run(name, criteria, ("cpr", "cmd"), s, prepare, one)


def assert_prefers(values: Any, *criteria: Criterion, alpha: Optional[float] = None,
                   level: Optional[float] = None, decide: Optional[str] = None,
                   n_boot: Optional[int] = None,
                   method: Optional[str] = None) -> list[ClaimResult]:
    """The model prefers the answer: ``rate > 0.9`` (share of examples with logit diff > 0,
    Clopper-Pearson) or ``mean > 2.0`` (mean logit diff, sign-flip test).

    ``values``: per-example logit differences [batch] (array or tensor), or an object with
    ``.logit_diff`` or ``.baseline_clean`` (a PatchResult's clean run)."""
    name = "assert_prefers"
    s = _settings(alpha, level, decide, n_boot, method)

    def raw():
        x = values
        for attr in ("logit_diff", "baseline_clean"):
            if hasattr(x, attr) and not isinstance(x, np.ndarray):
                x = getattr(x, attr)
                break
        return _finite(_vector(x, "the logit differences", name), "the logit differences")
    return _mean_criteria(name, {"mean": raw}, criteria, s, rates={"rate": lambda: raw() > 0},
                          source=values)


# --- sliced Green operators ---------------------------------------------------------------------
def assert_explained(green_slice: Any, *criteria: Criterion, alpha: Optional[float] = None,
                     level: Optional[float] = None, decide: Optional[str] = None) -> list[ClaimResult]:
    """A rank-k slice describes its Green block: ``explained > 0.5``.

    The estimate is ``green_slice.explained`` (captured squared norm over the total, whose
    remainder is a Hutchinson estimate from ``n_probe`` random probes); its uncertainty is the
    probes' standard error ``explained_se``, so the interval is a normal interval at
    ``1 - 2 alpha`` and the p-value one-sided normal. ``n`` is the number of probes.
    """
    from scipy.stats import norm

    name = "assert_explained"
    s = _settings(alpha, level, decide, None, None)

    def prepare():
        est = float(_attr(green_slice, "explained", name, "a GreenSlice (field.green_slice)"))
        se = float(getattr(green_slice, "explained_se", 0.0) or 0.0)
        if not (math.isfinite(est) and math.isfinite(se)):
            raise _NonFinite("the slice's explained fraction is NaN or inf")
        n = int(getattr(green_slice, "n_probe", 0) or (getattr(green_slice, "cost", {}) or {}).get("n_probe", 0))
        return est, se, n

    def one(c: Criterion, data, rng) -> ClaimResult:
        est, se, n = data
        z = norm.ppf(1 - s.alpha)
        low, high = est - z * se, est + z * se
        if se > 0:
            p = float(norm.sf((est - c.bar) / se)) if c.op in (">", ">=") else float(norm.cdf((est - c.bar) / se))
        else:
            p = 0.0 if clears(est, c.op, c.bar) else 1.0
        e = Estimate(est, low, high, n, "normal (Hutchinson probes)", p, 1 - 2 * s.alpha,
                     {"explained_se": se, "rank": getattr(green_slice, "rank", None)})
        return _result(name, c, e, s, plot=None)

    return _run(name, criteria, ("explained",), s, prepare, one)
