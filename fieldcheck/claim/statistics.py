"""Statistics behind the claims: bootstrap intervals, exact binomial intervals, sign-flip
permutation tests, seeds and multiple-comparison corrections.

Conventions (see ``docs/statistics.md``):

* Every decision is one-sided. A criterion ``stat > bar`` is tested against the null "the
  criterion does not hold" (``stat <= bar``). Its confidence bound at level ``1 - alpha`` is
  the lower end of the two-sided, equal-tailed ``1 - 2 alpha`` interval, so every function
  here returns that two-sided interval; its ends are the one-sided bounds.
* ``p_value`` is the one-sided p-value of that null, obtained by inverting the same interval
  construction (so ``bound clears bar`` and ``p < alpha`` agree up to resampling ties).
* Bootstrap draws resample *examples*. A statistic is given as a function of example
  indices (``stat(idx)`` with ``idx`` an int array ``[..., m]``, returning ``[...]``), which
  makes cluster bootstraps (a site x example table resampled by columns, see
  :func:`resample_weights`) and ratios of sums natural, and lets ``scipy.stats.bootstrap``
  do the resampling and the intervals.
* Seeds come from :func:`derive_seed` (SHA-256 of the session seed, the claim id and the
  criterion text), never from Python's ``hash()`` or from execution order.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from fieldcheck.errors import CriterionError, InsufficientData

#: fewest examples for a bootstrap confidence bound (below it the resampling distribution
#: has too few distinct values for a 5% tail); a point decision needs 2.
MIN_BOOTSTRAP_N = 8

OPS = (">", ">=", "<", "<=")


# --- inputs --------------------------------------------------------------------------------
def to_numpy(x: Any, dtype=np.float64) -> np.ndarray:
    """A numpy array from a numpy array, torch tensor, list or scalar (copied to the CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor
        x = x.detach().cpu()
        if dtype is not None and hasattr(x, "double") and not str(x.dtype).endswith("bool"):
            x = x.double()
        x = x.numpy()
    arr = np.asarray(x)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return arr


def nonfinite(arr: np.ndarray) -> Optional[tuple[int, tuple[int, ...]]]:
    """None if every value is finite, else (how many are not, index of the first)."""
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    return int(bad.sum()), first


# --- seeds ---------------------------------------------------------------------------------
def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from the parts' text (stable across processes, platforms and runs)."""
    h = hashlib.sha256("\x1f".join(repr(p) if not isinstance(p, str) else p
                                   for p in parts).encode("utf-8"))
    return int.from_bytes(h.digest()[:8], "big") >> 1


def make_rng(*parts: Any) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*parts))


# --- results -------------------------------------------------------------------------------
@dataclass
class Estimate:
    """A statistic with its two-sided ``1 - 2 alpha`` interval and one-sided p-value."""

    estimate: float
    low: float
    high: float
    n: int
    method: str
    p_value: Optional[float] = None
    level: float = 0.90  # coverage of (low, high); each end is a (1 + level)/2 one-sided bound
    details: dict[str, Any] = field(default_factory=dict)

    def bound(self, op: str) -> float:
        """The one-sided bound that decides ``stat op bar``."""
        return self.low if op in (">", ">=") else self.high


def clears(value: float, op: str, bar: float) -> bool:
    """``value op bar`` (False when value is NaN)."""
    if value is None or math.isnan(value):
        return False
    return {">": value > bar, ">=": value >= bar, "<": value < bar, "<=": value <= bar}[op]


# --- minimum sample sizes -------------------------------------------------------------------
def min_n_rate(bar: float, op: str, alpha: float) -> Optional[int]:
    """Fewest examples for which a Clopper-Pearson bound *can* clear ``rate op bar`` (when
    every example agrees); None when no n can (bar 1 with ``>=``/``>``, bar 0 with ``<``)."""
    p0 = bar if op in (">", ">=") else 1.0 - bar
    # one-sided bound with all n successes: alpha ** (1/n); it must clear p0
    if p0 >= 1.0:
        return None
    if p0 <= 0.0:
        return 1
    n = math.floor(math.log(alpha) / math.log(p0)) + 1
    # strict ">" at exact equality needs one more
    while alpha ** (1.0 / n) <= p0:
        n += 1
    return max(n, 1)


def min_n_signflip(alpha: float) -> int:
    """Fewest examples for which an exact sign-flip test can reach p < alpha: 2**-n < alpha."""
    return math.floor(math.log2(1.0 / alpha)) + 1


def require_n(n: int, needed: Optional[int], what: str, fix: str = "") -> None:
    """Raise InsufficientData when n examples are too few for ``what``."""
    if needed is None:
        fix = fix or "use a bar that can be cleared, or decide='point'"
        raise InsufficientData(f"{what} can never be shown with a one-sided confidence "
                               f"bound, whatever the number of examples; {fix}")
    if n < needed:
        fix = fix or "use a larger data set, a larger alpha, or decide='point'"
        raise InsufficientData(f"{what} needs at least {needed} examples, got {n}; {fix}")


# --- bootstrap ------------------------------------------------------------------------------
def _jackknife_indices(n: int) -> np.ndarray:
    idx = np.arange(n)
    return np.stack([np.delete(idx, i) for i in range(n)])


def resample_weights(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` examples occurs in each resample: int ``idx`` [..., m] ->
    float counts [..., n]. A statistic of a resample is then a weighted sum over examples
    (``W @ x``), so a [n_sites, batch] table is resampled by columns without copying it."""
    lead, m = idx.shape[:-1], idx.shape[-1]
    flat = idx.reshape(-1, m)
    rows = flat.shape[0]
    w = np.bincount((np.arange(rows)[:, None] * n + flat).ravel(), minlength=rows * n)
    return w.reshape(lead + (n,)).astype(float)


def bootstrap(stat: Callable[[np.ndarray], np.ndarray], n: int, *, alpha: float, n_boot: int,
              method: str, rng: np.random.Generator, op: Optional[str] = None,
              bar: Optional[float] = None, discrete: bool = False,
              batch: Optional[int] = None, expand: bool = True) -> Estimate:
    """Bootstrap over ``n`` examples of ``stat(idx)``; two-sided ``1 - 2 alpha`` interval.

    ``method``: ``"bca"`` or ``"percentile"`` (scipy.stats.bootstrap). BCa falls back to the
    percentile interval when it is undefined (degenerate bootstrap distribution), and says so
    in ``method``. ``discrete=True`` (statistics on a grid: alpha*, top-k overlap) uses the
    percentile interval with ``inverted_cdf`` quantiles so the bounds stay on the grid.
    The p-value for ``stat op bar`` inverts the same interval (see module doc).
    ``expand=False`` gives scipy's interval unchanged (no small-sample expansion)."""
    from scipy import stats as sst
    from scipy.special import ndtr, ndtri

    if n < 2:
        raise InsufficientData(f"a bootstrap needs at least 2 examples, got {n}")

    def vstat(idx, axis=-1):
        idx = np.asarray(idx).astype(np.intp, copy=False)
        if axis != -1 and axis != idx.ndim - 1:
            idx = np.moveaxis(idx, axis, -1)
        return stat(idx)

    est = float(np.asarray(stat(np.arange(n))))
    method = method.lower()
    # Small-sample expansion (Hesterberg 2015, "expanded percentile"): the bootstrap spreads
    # like a variance with divisor n, and uses normal rather than t tails; both make its
    # intervals too narrow for small n. Each tail is taken at alpha_e such that
    # z(alpha_e) = sqrt(n / (n - 1)) * t_{n-1}(alpha); p-values map back the same way.
    nominal = alpha
    c_exp = math.sqrt(n / (n - 1))
    if expand:
        alpha = float(ndtr(c_exp * sst.t.ppf(nominal, n - 1)))
    scipy_method = "percentile" if (discrete or method == "percentile") else "BCa"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sst.bootstrap((np.arange(n),), vstat, n_resamples=n_boot, vectorized=True,
                            confidence_level=1.0 - 2.0 * alpha, method=scipy_method,
                            rng=rng, batch=batch)
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    finite = dist[np.isfinite(dist)]
    used = "bootstrap BCa" if scipy_method == "BCa" else "bootstrap percentile"
    used += ", expanded" if expand else ""
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    n_bad = dist.size - finite.size
    if n_bad:
        used += f" ({n_bad} of {dist.size} resamples undefined, dropped)"
    if finite.size == 0:
        return Estimate(est, math.nan, math.nan, n, used + ": no resample defined", None,
                        1.0 - 2.0 * nominal)
    if discrete:
        lo = float(np.quantile(finite, alpha, method="inverted_cdf"))
        hi = float(-np.quantile(-finite, alpha, method="inverted_cdf"))
    elif n_bad or not (math.isfinite(lo) and math.isfinite(hi)):
        if scipy_method == "BCa":
            used = "bootstrap percentile (BCa undefined here)" + used[len("bootstrap BCa"):]
            scipy_method = "percentile"
        lo = float(np.quantile(finite, alpha))
        hi = float(np.quantile(finite, 1.0 - alpha))

    p = None
    if op is not None and bar is not None and math.isfinite(est):
        B = finite.size
        # q: bootstrap probability of the null side of the bar
        if op == ">":
            q = np.count_nonzero(finite <= bar) / B
        elif op == ">=":
            q = np.count_nonzero(finite < bar) / B
        elif op == "<":
            q = np.count_nonzero(finite >= bar) / B
        else:
            q = np.count_nonzero(finite > bar) / B
        if scipy_method == "BCa":
            pct = (np.count_nonzero(finite < est) + np.count_nonzero(finite <= est)) / (2 * B)
            z0 = float(ndtri(pct))
            theta_i = np.asarray(stat(_jackknife_indices(n)), dtype=float)
            U = (n - 1) * (theta_i.mean() - theta_i)
            den = (np.sum(U ** 2) / n ** 2) ** 1.5
            a = float(np.sum(U ** 3) / n ** 3 / den / 6.0) if den > 0 else 0.0
            qc = min(max(q, 0.5 / B), 1.0 - 0.5 / B)
            if op in (">", ">="):
                w = float(ndtri(qc)) - z0
                p = float(ndtr(w / (1.0 + a * w) - z0))
            else:
                w = float(ndtri(1.0 - qc)) - z0
                p = float(ndtr(z0 - w / (1.0 + a * w)))
            if not math.isfinite(p):
                p = float(q)
        else:
            p = float(q)
        p = min(1.0, max(p, 1.0 / (B + 1)))
        if expand:
            p = float(sst.t.cdf(float(ndtri(p)) / c_exp, n - 1))
    return Estimate(est, lo, hi, n, used, p, 1.0 - 2.0 * nominal,
                    details={"tail": alpha, "expanded": expand})


# --- sign-flip permutation test for a mean ----------------------------------------------------
def _sign_matrix(n: int, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    if n <= 20 and 2 ** n <= n_boot:
        codes = np.arange(2 ** n)[:, None] >> np.arange(n)[None, :] & 1
        return 1.0 - 2.0 * codes, True
    return rng.choice(np.array([-1.0, 1.0]), size=(n_boot, n)), False


def _signflip_lower(x: np.ndarray, S: np.ndarray, exact: bool, alpha: float) -> float:
    """Lower confidence bound for the mean by inverting the one-sided sign-flip test.

    For a shift c the test statistic is mean(x - c); a flip s counts against the null when
    mean(s (x - c)) >= mean(x - c), i.e. when c >= c_s = (mean(s x) - mean(x)) / (mean(s) - 1)
    (always, when s is all +1). p(c) rises with c in steps at the c_s; the bound is the
    K-th smallest c_s, the first shift at which p(c) >= alpha."""
    n = x.size
    xbar = x.mean()
    m = S.mean(axis=1)
    A = S @ x / n - xbar
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(m < 1.0, A / (m - 1.0), -np.inf)
    add = 0 if exact else 1
    t = alpha * (S.shape[0] + add) - add
    K = math.ceil(t - 1e-12)
    if K < 1:
        return -math.inf
    c.sort()
    return float(c[K - 1])


def signflip_pvalue(x: np.ndarray, c: float, S: np.ndarray, exact: bool,
                    alternative: str) -> float:
    """One-sided sign-flip p-value for the mean of x against c ("greater": H1 mean > c)."""
    d = x - c
    if alternative == "less":
        d = -d
    T = d.mean()
    Tb = S @ d / d.size
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    count = int(np.count_nonzero(Tb >= T - tol))
    add = 0 if exact else 1
    return (count + add) / (S.shape[0] + add)


def signflip_mean(x: np.ndarray, *, alpha: float, n_boot: int, rng: np.random.Generator,
                  op: Optional[str] = None, bar: Optional[float] = None) -> Estimate:
    """Mean of per-example values with the interval from inverting a paired sign-flip
    permutation test (exact enumeration when 2**n <= n_boot, else n_boot random flips).
    The p-value tests the mean against ``bar`` in the direction of ``op``; it agrees with
    ``scipy.stats.permutation_test(..., permutation_type="samples")``."""
    x = np.asarray(x, dtype=float).ravel()
    n = x.size
    if n < 2:
        raise InsufficientData(f"a permutation test needs at least 2 examples, got {n}")
    S, exact = _sign_matrix(n, n_boot, rng)
    lo = _signflip_lower(x, S, exact, alpha)
    hi = -_signflip_lower(-x, S, exact, alpha)
    p = None
    if op is not None and bar is not None:
        p = signflip_pvalue(x, bar, S, exact, "greater" if op in (">", ">=") else "less")
    how = f"sign-flip permutation test ({'exact, ' + str(S.shape[0]) if exact else str(S.shape[0]) + ' random'} flips)"
    return Estimate(float(x.mean()), lo, hi, n, how, p, 1.0 - 2.0 * alpha)


def mean_test(x: np.ndarray, *, alpha: float, n_boot: int, method: str,
              rng: np.random.Generator, op: Optional[str] = None,
              bar: Optional[float] = None) -> Estimate:
    """Mean of per-example values, decided by two tests that must both agree.

    The sign-flip permutation test (:func:`signflip_mean`) is exact when the values are
    symmetric about the bar but lets skewed data through too often (about 10% instead of 5%
    at n=32 with exponential-like tails toward the bar); the BCa bootstrap corrects for skew
    but is only approximate. The interval is the hull of both intervals and the p-value the
    larger of the two, so a claim passes only when both tests reject. Below
    ``MIN_BOOTSTRAP_N`` examples only the sign-flip test is used."""
    x = np.asarray(x, dtype=float).ravel()
    f = signflip_mean(x, alpha=alpha, n_boot=n_boot, rng=rng, op=op, bar=bar)
    if x.size < MIN_BOOTSTRAP_N:
        return f
    b = bootstrap(lambda idx: x[idx].mean(-1), x.size, alpha=alpha, n_boot=n_boot,
                  method=method, rng=rng, op=op, bar=bar)
    lows = [v for v in (f.low, b.low) if not math.isnan(v)]
    highs = [v for v in (f.high, b.high) if not math.isnan(v)]
    p = None if f.p_value is None or b.p_value is None else max(f.p_value, b.p_value)
    return Estimate(f.estimate, min(lows) if lows else math.nan,
                    max(highs) if highs else math.nan, f.n,
                    f"{f.method} and {b.method} (both must clear)", p, f.level,
                    details={"signflip": [f.low, f.high, f.p_value],
                             "bootstrap": [b.low, b.high, b.p_value]})


# --- rates ----------------------------------------------------------------------------------
def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact two-sided (Clopper-Pearson) interval for k successes in n trials."""
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def binomial_rate(successes: np.ndarray, *, alpha: float, op: Optional[str] = None,
                  bar: Optional[float] = None) -> Estimate:
    """Rate of successes with the Clopper-Pearson ``1 - 2 alpha`` interval and the exact
    one-sided binomial p-value (scipy.stats.binomtest) of the null on the other side of bar."""
    from scipy.stats import binomtest

    s = np.asarray(successes).astype(bool).ravel()
    n, k = s.size, int(s.sum())
    if n < 1:
        raise InsufficientData("a rate needs at least 1 example, got 0")
    lo, hi = clopper_pearson(k, n, 1.0 - 2.0 * alpha)
    p = None
    if op is not None and bar is not None:
        b = min(max(float(bar), 0.0), 1.0)
        alt = "greater" if op in (">", ">=") else "less"
        p = float(binomtest(k, n, b, alternative=alt).pvalue)
    return Estimate(k / n, lo, hi, n, "Clopper-Pearson exact binomial", p, 1.0 - 2.0 * alpha,
                    details={"successes": k})


# --- multiple comparisons -------------------------------------------------------------------
_ADJUST = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh", "bonferroni": "bonferroni"}


def adjust_pvalues(pvals: Sequence[Optional[float]], method: str = "holm") -> list[Optional[float]]:
    """Adjusted p-values (statsmodels ``multipletests``): ``"holm"`` (family-wise error),
    ``"bh"`` (Benjamini-Hochberg false discovery rate), ``"bonferroni"`` or ``"none"``.
    None and NaN entries are left out of the family and come back unchanged."""
    method = (method or "none").lower()
    if method not in _ADJUST and method != "none":
        raise CriterionError(f"unknown p-value correction {method!r}; use one of "
                             "'holm', 'bh', 'bonferroni', 'none'")
    out: list[Optional[float]] = [None if p is None else float(p) for p in pvals]
    keep = [i for i, p in enumerate(out) if p is not None and math.isfinite(p)]
    if method == "none" or len(keep) < 2:  # a family of one needs no correction
        return out
    from statsmodels.stats.multitest import multipletests

    adj = multipletests([out[i] for i in keep], method=_ADJUST[method])[1]
    for i, a in zip(keep, adj):
        out[i] = float(a)
    return out
