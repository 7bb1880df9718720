"""What every assertion shares, below the three assertion modules (:mod:`.assertions`,
:mod:`.attention_assertions`, :mod:`.circuit_assertions`): reading and checking the inputs
(:func:`need_attr`, :func:`as_table` ``[n_sites, batch]``, :func:`as_vector` ``[batch]``,
:func:`check_finite`), the session settings, the sample-size checks, and the loop that decides
each criterion, records its :class:`~fieldcheck.claim.result.ClaimResult` and raises
:class:`~fieldcheck.claim.result.ClaimFailed` (:func:`run_criteria`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import numpy as np

from fieldcheck import config
from fieldcheck.claim.criteria import Criterion, as_criteria
from fieldcheck.claim.result import ClaimFailed, ClaimResult, record
from fieldcheck.claim.statistics import (MIN_BOOTSTRAP_N, Estimate, clears, make_rng, min_n_rate, min_n_signflip,
                                         nonfinite, require_n, resample_weights, to_numpy)
from fieldcheck.errors import CriterionError, FieldcheckError, InsufficientData


MAX_PLOT = 512     # most points a plot carries
MAX_SITES = 50     # most per-site rows in details


class AssertionInputError(FieldcheckError, ValueError):
    """An assertion got an input of the wrong kind or shape."""


# --- inputs --------------------------------------------------------------------------------
class NonFiniteInput(Exception):
    def __init__(self, where: str):
        self.where = where


def need_attr(obj: Any, name: str, assertion: str, what: str) -> Any:
    if not hasattr(obj, name):
        raise AssertionInputError(f"{assertion} expects {what} (with .{name}); got "
                                  f"{type(obj).__name__}")
    return getattr(obj, name)


def check_finite(arr: np.ndarray, name: str, labels: Optional[Sequence[str]] = None) -> np.ndarray:
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
        raise NonFiniteInput(f"{name} has {count} NaN/inf value{'s' if count > 1 else ''} "
                         f"(first at {at})")
    return arr


def site_labels(obj: Any, n: int) -> list[str]:
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


def _numbers(x: Any, name: str, assertion: str) -> np.ndarray:
    """A float array from ``x``, or AssertionInputError naming the input when it holds no numbers."""
    try:
        return to_numpy(x)
    except (TypeError, ValueError):
        raise AssertionInputError(f"{assertion}: {name} must be numbers (an array or tensor), got "
                                  f"{type(x).__name__}") from None


def as_table(x: Any, name: str, assertion: str, rows: str = "row") -> np.ndarray:
    """[n_sites, batch] from an array [n_sites, batch] or [batch]; AssertionInputError for another shape
    or an empty one (no ``rows``: a selection that kept nothing reaches an assertion as this)."""
    arr = _numbers(x, name, assertion)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise AssertionInputError(f"{assertion}: {name} must be [n_sites, batch] or [batch], "
                                  f"got shape {tuple(arr.shape)}")
    if 0 in arr.shape:
        raise AssertionInputError(f"{assertion}: {name} is empty (shape {tuple(arr.shape)}): "
                                  f"{f'no {rows}' if arr.shape[0] == 0 else 'no example'}; a selection that kept "
                                  "nothing, or layers this model does not have?")
    return arr


def as_vector(x: Any, name: str, assertion: str, n: Optional[int] = None) -> np.ndarray:
    arr = _numbers(x, name, assertion)
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


def resolve_settings(alpha, level, decide, n_boot, method) -> config.Settings:
    if alpha is not None and level is not None:
        raise CriterionError("give alpha or level (= 1 - alpha), not both")
    return config.resolve(alpha=alpha, level=level, decide=decide, n_boot=n_boot, method=method)


def check_n(kind: str, n: int, crit: Criterion, s: config.Settings) -> None:
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


def make_result(assertion: str, crit: Criterion, est: Estimate, s: config.Settings,
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


def nonfinite_results(assertion: str, crits: list[Criterion], s: config.Settings, where: str,
                       n: int) -> list[ClaimResult]:
    msg = f"cannot be computed: {where}; a claim on non-finite values fails"
    return [ClaimResult(statistic=str(c.statistic), estimate=math.nan, interval=None, op=c.op,
                        bar=c.bar, passed=False, n=n, level=1 - 2 * s.alpha, decide=s.decide,
                        method="not computed (non-finite input)", assertion=assertion,
                        claim_id=s.claim_id, criterion=str(c), alpha=s.alpha,
                        message=f"{c.statistic} {msg}", details={"non_finite": where})
            for c in crits]


def finish(assertion: str, results: list[ClaimResult]) -> list[ClaimResult]:
    for r in results:
        if not r.message:
            r.message = r.summary()
        record(r)
    failed = [r for r in results if not r.passed]
    if failed:
        lines = [r.message for r in results]
        raise ClaimFailed(f"{assertion}: " + "\n  ".join(lines), results)
    return results


def run_criteria(assertion: str, criteria: tuple, valid: tuple[str, ...], s: config.Settings,
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
    except NonFiniteInput as e:
        return finish(assertion, nonfinite_results(assertion, crits, s, e.where, 0))
    results = []
    for c in crits:
        rng = make_rng(s.seed, s.claim_id or "", assertion, str(c))
        results.append(decide_one(c, data, rng))
    return finish(assertion, results)


def sites_text(rows: list[tuple[str, float, float]], first: str = "pred",
                second: str = "real") -> str:
    return ", ".join(f"{lab} ({first} {fmt_num(a)}, {second} {fmt_num(b)})" for lab, a, b in rows)


def fmt_num(x: float) -> str:
    return f"{x:.3g}"


#: a ratio's denominator (the clean-corrupt gap) must be at least this many standard deviations
#: of its per-example values away from 0 on average (besides its interval excluding 0)
GAP_MIN_SPREAD = 0.25


def check_gap(assertion: str, crit: Criterion, den: np.ndarray, s: config.Settings,
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
            f"{assertion}: `{crit}` is not defined here: {what} is {fmt_num(mean)} "
            f"[{fmt_num(lo)}, {fmt_num(hi)}] ({round((1 - 2 * s.alpha) * 100)}% CI, n={n}, sd "
            f"{fmt_num(sd)}), not clearly away from 0, and {crit.statistic} divides by it; {fix}")


def ratio_stat(num: np.ndarray, den: np.ndarray, n: int) -> Callable:
    def stat(idx):
        W = resample_weights(idx, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (W @ num) / (W @ den)
    return stat
