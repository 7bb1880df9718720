"""Statistics behind the claims: bootstrap intervals, exact binomial intervals, sign-flip
permutation tests, seeds and multiple-comparison corrections.

Conventions (see ``docs/statistics.md``):

* Every decision is one-sided. A criterion ``stat > bar`` is tested against the null "the
  criterion does not hold" (``stat <= bar``). Its confidence bound at level ``1 - alpha`` is
  the lower end of the two-sided, equal-tailed ``1 - 2 alpha`` interval, so every function
  here returns that two-sided interval; its ends are the one-sided bounds.
* ``p_value`` is the one-sided p-value of that null, read off the same confidence
  distribution as the bound, so the bound at level ``1 - a`` clears the bar exactly when
  ``p <= a`` (for every ``a``; ``Estimate.at(a)`` gives the bounds at another level), and
  with no floor at ``1 / n_boot``: beyond the last resample a normal tail takes over.
* Bootstrap draws resample *examples*. A statistic is given as a function of example
  indices (``stat(idx)`` with ``idx`` an int array ``[..., m]``, returning ``[...]``), which
  makes cluster bootstraps (a site x example table resampled by columns, see
  :func:`resample_weights`) and ratios of sums natural, and lets ``scipy.stats.bootstrap``
  do the resampling.
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
from fieldcheck.jsonable import to_numpy  # noqa: F401 (re-exported: fieldcheck.claim.statistics.to_numpy)

#: fewest examples for a bootstrap confidence bound (below it the resampling distribution
#: has too few distinct values for a 5% tail); a point decision needs 2.
MIN_BOOTSTRAP_N = 8

OPS = (">", ">=", "<", "<=")


# --- inputs --------------------------------------------------------------------------------
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
    #: ``at(a)`` -> (lower, upper) one-sided bounds at level ``1 - a`` from the same evidence
    #: (the same resamples), so a bound at another level agrees with ``p_value``.
    at: Optional[Callable[[float], tuple[float, float]]] = field(default=None, repr=False,
                                                                  compare=False)

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


class _Scale:
    """The map between a one-sided tail probability and the z scale the bootstrap works in.

    Expanded (Hesterberg): a nominal tail ``a`` is taken at the bootstrap quantile level
    ``Phi(c * t_{n-1}^{-1}(a))``, ``c = sqrt(n / (n - 1))``; so a z value ``g`` of the
    confidence distribution corresponds to ``p = t_{n-1}(g / c)``. Plain: ``p = Phi(g)``."""

    def __init__(self, n: int, expand: bool):
        self.expand = expand
        self.n = n
        self.c = math.sqrt(n / (n - 1)) if expand else 1.0
        self.df = n - 1

    def p(self, g):
        from scipy.special import ndtr, stdtr
        g = np.asarray(g, dtype=float)
        return stdtr(self.df, g / self.c) if self.expand else ndtr(g)

    def z(self, p):
        from scipy.special import ndtri, stdtrit
        p = np.asarray(p, dtype=float)
        return self.c * stdtrit(self.df, p) if self.expand else ndtri(p)


class _LowerSide:
    """Lower confidence bounds and p-values of ``stat > bar`` (``stat >= bar``) from one
    bootstrap distribution, built from a single monotone function so that they agree exactly.

    ``G(c)`` is the z value of the confidence distribution at ``c``: the bar ``c`` is the lower
    bound at level ``1 - p`` with ``p = scale.p(G(c))``. Inside the resamples, ``G`` comes from
    the empirical distribution (Hazen plotting positions ``(k + 1/2) / B``, linear in z between
    distinct values, or a right-continuous step for a discrete statistic) mapped through the BCa
    correction (``z0``, acceleration ``acc``; both 0 for the percentile method). Beyond the
    extreme resample ``G`` continues as a straight line in z with slope ``1 / se`` (a normal
    tail with the bootstrap standard error), so p-values have no floor at ``1 / B``.
    A degenerate distribution (every resample equal, se = 0: all n examples agree) has no tail to
    continue: its p-value is the sign test's for n examples all on one side, ``2 ** -n``, never 0,
    and a bound at a level beyond ``1 - 2 ** -n`` is infinite.
    Then ``lower(a) > bar`` exactly when ``p(bar) < a`` (``<= a`` for a step function), up to
    float rounding at equality."""

    def __init__(self, xs: np.ndarray, z0: float, acc: float, se: float, discrete: bool,
                 scale: _Scale, trim: float = 0.0):
        from scipy.special import ndtri
        B = xs.size
        self.scale, self.discrete, self.se = scale, discrete, se
        self.zfloor = float(scale.z(0.5 ** scale.n)) if se <= 0 else -math.inf
        xs = np.sort(xs)
        self.xs = xs
        if discrete:
            self.B = B
            self.gsteps = ndtri(np.arange(1, B + 1) / B)   # G on [xs[k-1], xs[k]), k = 1..B
            self.g0 = float(ndtri(0.5 / B))                # G just below the first resample
            return
        xu, first, counts = np.unique(xs, return_index=True, return_counts=True)
        pos = (first + (counts - 1) / 2.0 + 0.5) / B
        if trim > 0:   # knots only inside [trim, 1 - trim]; the normal tails continue from there
            keep = (pos >= trim) & (pos <= 1.0 - trim)
            if keep.sum() >= 2:
                xu, pos = xu[keep], pos[keep]
        v = ndtri(pos) - z0
        den = 1.0 + acc * v
        if np.any(den <= 0):
            raise _BcaUndefined()
        self.xk = xu
        self.gk = v / den - z0            # BCa: quantile level z0 + u/(1 - a u), inverted

    # --- z value of the confidence distribution --------------------------------------------
    def G(self, c: float, strict: bool = True) -> float:
        """z at ``c``; ``strict``: the null is ``stat <= c`` (for ``>``), else ``stat < c``."""
        if self.discrete:
            k = int(np.searchsorted(self.xs, c, side="right" if strict else "left"))
            if k >= 1:
                return float(self.gsteps[k - 1])
            return self._tail(self.g0, self.xs[0] - c)
        xk, gk = self.xk, self.gk
        if c < xk[0]:
            return self._tail(gk[0], xk[0] - c)
        if c > xk[-1]:
            return -self._tail(-gk[-1], c - xk[-1])
        return float(np.interp(c, xk, gk))

    def _tail(self, g0: float, dist: float) -> float:
        if dist <= 0:
            return g0
        return g0 - dist / self.se if self.se > 0 else self.zfloor

    def lower(self, z: float) -> float:
        """The lower bound whose confidence-distribution z value is ``z``."""
        if math.isnan(z):
            return math.nan
        if z == -math.inf or z < self.zfloor:
            return -math.inf
        if self.discrete:
            # inf{c : G(c) > z}: the first resample whose step value ndtri(k / B) exceeds z,
            # or a point on the tail below the first resample
            if z < self.g0:
                return float(self.xs[0] - (self.g0 - z) * self.se)
            k = int(np.searchsorted(self.gsteps, z, side="right")) + 1
            return float(self.xs[min(k, self.B) - 1]) if z < math.inf else math.inf
        xk, gk = self.xk, self.gk
        if z < gk[0]:
            return float(xk[0] - (gk[0] - z) * self.se)
        if z > gk[-1]:
            return float(xk[-1] + (z - gk[-1]) * self.se)
        return float(np.interp(z, gk, xk))


class _BcaUndefined(Exception):
    pass



def _bounds_and_p(lo_side: "_LowerSide", hi_side: "_LowerSide", scale: "_Scale", alpha: float,
                  op: Optional[str], bar: Optional[float]):
    """From the lower side and the (negated) upper side of a resampling distribution: ``at(a)``
    giving the one-sided bounds at level 1 - a, the bounds at ``alpha``, and the p-value of the
    criterion ``op bar`` on the side it tests (None without a criterion). Bounds and p come from
    the same sides, so the bound clears the bar exactly when p <= alpha."""

    def at(a: float) -> tuple[float, float]:
        z = float(scale.z(a))
        return lo_side.lower(z), -hi_side.lower(z)

    lo, hi = at(alpha)
    p = None
    if op is not None and bar is not None:
        g = (lo_side.G(float(bar), strict=(op == ">")) if op in (">", ">=")
             else hi_side.G(-float(bar), strict=(op == "<")))
        p = float(scale.p(g))
    return at, lo, hi, p

def bootstrap(stat: Callable[[np.ndarray], np.ndarray], n: int, *, alpha: float, n_boot: int,
              method: str, rng: np.random.Generator, op: Optional[str] = None,
              bar: Optional[float] = None, discrete: bool = False,
              batch: Optional[int] = None, expand: bool = True) -> Estimate:
    """Bootstrap over ``n`` examples of ``stat(idx)``; two-sided ``1 - 2 alpha`` interval and
    the one-sided p-value of ``stat op bar``, both read off one confidence distribution.

    The resamples come from ``scipy.stats.bootstrap`` (seeded by ``rng``). ``method``:
    ``"bca"`` (bias-corrected and accelerated, jackknife acceleration) or ``"percentile"``;
    BCa falls back to the percentile method when it is undefined (degenerate distribution,
    acceleration too large) and says so in ``method``. ``discrete=True`` (statistics on a
    grid: alpha*, top-k overlap) uses the percentile method with a step distribution, so
    bounds inside the resamples stay on the grid. See :class:`_LowerSide`: the bound at level
    ``1 - a`` clears the bar exactly when ``p <= a``, and beyond the last resample both
    continue along a normal tail with the bootstrap standard error (no ``1/n_boot`` floor).
    ``expand=False``: no small-sample expansion."""
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
    scale = _Scale(n, expand)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sst.bootstrap((np.arange(n),), vstat, n_resamples=n_boot, vectorized=True,
                            confidence_level=0.9, method="percentile", rng=rng, batch=batch)
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    finite = dist[np.isfinite(dist)]
    n_bad = dist.size - finite.size
    bca = not discrete and method != "percentile"
    suffix = (", expanded" if expand else "") + (
        f" ({n_bad} of {dist.size} resamples undefined, dropped)" if n_bad else "")
    level = 1.0 - 2.0 * alpha
    if finite.size == 0 or not math.isfinite(est):
        what = "no resample defined" if finite.size == 0 else "estimate undefined"
        return Estimate(est, math.nan, math.nan, n, f"bootstrap{suffix}: {what}", None, level)
    se = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    if se <= 1e-12 * float(np.abs(finite).max()):
        se = 0.0   # rounding noise (resamples of equal values summed in another order) is no spread
    used = "bootstrap percentile" if discrete or method == "percentile" else "bootstrap BCa"
    z0 = acc = 0.0
    if bca:
        pct = (np.count_nonzero(finite < est) + np.count_nonzero(finite <= est)) / (2 * finite.size)
        z0 = float(ndtri(pct))
        theta_i = np.asarray(stat(_jackknife_indices(n)), dtype=float)
        U = (n - 1) * (theta_i.mean() - theta_i)
        den = (np.sum(U ** 2) / n ** 2) ** 1.5
        acc = float(np.sum(U ** 3) / n ** 3 / den / 6.0) if den > 0 else 0.0
        if not (math.isfinite(z0) and math.isfinite(acc)) or se == 0:
            bca, used, z0, acc = False, "bootstrap percentile (BCa undefined here)", 0.0, 0.0
    sides = []
    for sign in (1.0, -1.0):
        try:
            sides.append(_LowerSide(sign * finite, sign * z0, sign * acc, se, discrete, scale))
        except _BcaUndefined:
            used, z0, acc = "bootstrap percentile (BCa undefined here)", 0.0, 0.0
            sides = [_LowerSide(s * finite, 0.0, 0.0, se, discrete, scale) for s in (1.0, -1.0)]
            break
    lo_side, hi_side = sides

    at, lo, hi, p = _bounds_and_p(lo_side, hi_side, scale, alpha, op, bar)
    return Estimate(est, lo, hi, n, used + suffix, p, level,
                    details={"tail": float(ndtr(scale.z(alpha))),
                             "expanded": expand, "z0": z0, "acceleration": acc,
                             "bootstrap_se": se}, at=at)


# --- sign-flip permutation test for a mean ----------------------------------------------------
#: up to this many examples the sign-flip test enumerates all 2**n flips (exact, 2**18 = 262144)
EXACT_SIGNFLIP_N = 18


def _flip_sums(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum of s*x, sum of s) over all 2**n sign vectors s, by doubling (no [2**n, n] matrix);
    the first entry is the identity (all +1)."""
    sx = np.zeros(1)
    ss = np.zeros(1)
    for v in x:
        sx = np.concatenate([sx + v, sx - v])
        ss = np.concatenate([ss + 1.0, ss - 1.0])
    return sx, ss


def _flips(x: np.ndarray, n_boot: int, rng: np.random.Generator):
    """(sum s*x, sum s, exact) over all flips (n <= EXACT_SIGNFLIP_N or 2**n <= n_boot) or
    over n_boot random ones."""
    n = x.size
    if n <= EXACT_SIGNFLIP_N or 2 ** n <= n_boot:
        return (*_flip_sums(x), True)
    S = rng.choice(np.array([-1.0, 1.0]), size=(n_boot, n))
    return S @ x, S.sum(1), False


class _SignFlip:
    """One-sided sign-flip test of ``mean(x) > c`` as a function of the shift ``c``, and its
    inversion. A flip ``s`` counts against the null at shift ``c`` when ``mean(s (x - c)) >=
    mean(x - c)``, i.e. when ``c >= c_s = (mean(s x) - mean(x)) / (mean(s) - 1)`` (always, for
    the identity). With all 2**n flips (exact): ``p(c) = #{c_s <= c} / 2**n`` (never below
    ``2**-n``: a distribution-free test cannot say more with n examples). With B random flips:
    ``p(c) = (#{c_s <= c} + 1) / (B + 1)``, and where no flip counts (the shift lies beyond
    every random flip), ``min(1 / (B + 1), Hoeffding)``: ``exp(-(sum d)^2 / (2 sum d^2))``,
    ``d = x - c``, an upper bound on the exact p-value (so no ``1/B`` floor).
    The lower bound at level ``1 - a`` is ``inf{c : p(c) > a}``, so it clears ``bar`` exactly
    when ``p(bar) <= a``."""

    def __init__(self, x: np.ndarray, sx: np.ndarray, ss: np.ndarray, exact: bool):
        n = x.size
        self.x, self.n, self.exact = x, n, exact
        xbar = float(x.mean())
        m = ss / n
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(m < 1.0, (sx / n - xbar) / (m - 1.0), -np.inf)
        self.c = np.sort(c)
        self.B = c.size
        self.xbar = xbar
        self.ss = float(((x - xbar) ** 2).sum())

    def _hoeffding(self, c: float) -> float:
        D = self.xbar - c
        if D <= 0:
            return 1.0
        w = self.n ** 2 * D ** 2 / (self.ss + self.n * D ** 2)
        return math.exp(-w / 2.0)

    def p(self, c: float) -> float:
        count = int(np.searchsorted(self.c, c, side="right"))
        if self.exact:
            return count / self.B
        if count == 0:
            return min(1.0 / (self.B + 1), self._hoeffding(c))
        return (count + 1) / (self.B + 1)

    def lower(self, a: float) -> float:
        if self.exact:
            k = math.floor(a * self.B) + 1       # fewest counting flips with p > a
            return float(self.c[k - 1]) if k <= self.B else math.inf
        k = math.floor(a * (self.B + 1))         # (count + 1) / (B + 1) > a
        if k >= 1:
            return float(self.c[k - 1]) if k <= self.B else math.inf
        # a < 1 / (B + 1): below the first random flip, the Hoeffding tail decides
        W = -2.0 * math.log(a) if a > 0 else math.inf
        if W >= self.n:
            cH = -math.inf
        else:
            cH = self.xbar - math.sqrt(W * self.ss / (self.n * (self.n - W)))
        return float(min(self.c[0], cH))


def signflip_pvalue(x: np.ndarray, c: float, S: Optional[np.ndarray] = None,
                    exact: Optional[bool] = None, alternative: str = "greater", *,
                    n_boot: int = 2000, rng: Optional[np.random.Generator] = None) -> float:
    """One-sided sign-flip p-value for the mean of x against c ("greater": H1 mean > c).
    ``S`` [B, n] (rows of +-1) and ``exact`` give the flips explicitly (then p = (count + 1) /
    (B + 1), or count / B when exact); otherwise as :class:`_SignFlip`."""
    x = np.asarray(x, dtype=float).ravel()
    if alternative == "less":
        x, c = -x, -c
    if S is None:
        return _SignFlip(x, *_flips(x, n_boot, rng or np.random.default_rng(0))).p(c)
    d = x - c
    T = d.mean()
    Tb = S @ d / d.size
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    count = int(np.count_nonzero(Tb >= T - tol))
    add = 0 if exact else 1
    return (count + add) / (S.shape[0] + add)


def signflip_mean(x: np.ndarray, *, alpha: float, n_boot: int, rng: np.random.Generator,
                  op: Optional[str] = None, bar: Optional[float] = None) -> Estimate:
    """Mean of per-example values with the interval from inverting a paired sign-flip
    permutation test (all 2**n flips when n <= EXACT_SIGNFLIP_N or 2**n <= n_boot, else
    n_boot random flips with a Hoeffding tail beyond them; see :class:`_SignFlip`).
    The p-value tests the mean against ``bar`` in the direction of ``op``; with all flips it
    equals ``scipy.stats.permutation_test(..., permutation_type="samples")``."""
    x = np.asarray(x, dtype=float).ravel()
    n = x.size
    if n < 2:
        raise InsufficientData(f"a permutation test needs at least 2 examples, got {n}")
    sx, ss, exact = _flips(x, n_boot, rng)
    up = _SignFlip(x, sx, ss, exact)
    down = _SignFlip(-x, -sx, ss, exact)

    def at(a: float) -> tuple[float, float]:
        return up.lower(a), -down.lower(a)

    lo, hi = at(alpha)
    p = None
    if op is not None and bar is not None:
        b = float(bar)
        p = up.p(b) if op in (">", ">=") else down.p(-b)
    how = (f"sign-flip permutation test (exact, {up.B} flips)" if up.exact else
           f"sign-flip permutation test ({up.B} random flips, Hoeffding tail)")
    return Estimate(float(x.mean()), lo, hi, n, how, p, 1.0 - 2.0 * alpha, at=at)


#: the bootstrap-t's resamples set its confidence distribution between these tail levels; beyond
#: them a normal tail with the pivots' interquartile scale takes over (at n = 16 a few resamples
#: with a tiny standard error give pivots of 10 or more, which would hold p near 1e-4 for a mean
#: 7 standard errors from its bar)
BOOT_T_TRIM = 0.005


def bootstrap_t_mean(x: np.ndarray, *, alpha: float, n_boot: int, rng: np.random.Generator,
                     op: Optional[str] = None, bar: Optional[float] = None) -> Estimate:
    """Mean with the studentized (bootstrap-t) interval: each resample gives the pivot
    ``t* = (mean* - mean) / se*``; the bound at level ``1 - a`` is ``mean - t*_(1-a) se`` and the
    p-value of ``mean > c`` is the share of pivots ``t* >= (mean - c) / se``. Both are read off
    one distribution, ``v = mean - t* se`` (see :class:`_LowerSide`, percentile method), with a
    normal tail beyond the last resample, and the small-sample expansion of every bootstrap
    here (it brings the false-pass rate with an exponential tail toward the bar at n = 32 from
    0.061 to about 0.05). Second-order accurate for skewed values, where the sign-flip test alone
    is not. Resamples whose standard error is 0 are dropped and counted."""
    x = np.asarray(x, dtype=float).ravel()
    n = x.size
    if n < 2:
        raise InsufficientData(f"a bootstrap needs at least 2 examples, got {n}")
    xbar = float(x.mean())
    se = float(x.std(ddof=1)) / math.sqrt(n)
    level = 1.0 - 2.0 * alpha
    if not se > 0:
        return Estimate(xbar, xbar, xbar, n, "bootstrap-t (all values equal)",
                        None if op is None or bar is None else
                        (0.0 if clears(xbar, op, float(bar)) else 1.0), level,
                        at=lambda a: (xbar, xbar))
    idx = rng.integers(0, n, size=(n_boot, n))
    W = resample_weights(idx, n)
    m1 = W @ x / n
    m2 = W @ (x - xbar) ** 2 / n - (m1 - xbar) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        tstar = (m1 - xbar) / np.sqrt(np.maximum(m2, 0.0) * n / (n - 1) / n)
    v = xbar - tstar * se
    finite = v[np.isfinite(v)]
    n_bad = v.size - finite.size
    used = "bootstrap-t, expanded" + (f" ({n_bad} of {v.size} resamples with se 0, dropped)"
                                      if n_bad else "")
    if finite.size < 2:
        return Estimate(xbar, math.nan, math.nan, n, used + ": no resample defined", None, level)
    scale = _Scale(n, expand=True)
    q1, q3 = np.quantile(finite, [0.25, 0.75])
    sd = float(q3 - q1) / 1.349 or float(finite.std(ddof=1))
    lo_side = _LowerSide(finite, 0.0, 0.0, sd, False, scale, trim=BOOT_T_TRIM)
    hi_side = _LowerSide(-finite, 0.0, 0.0, sd, False, scale, trim=BOOT_T_TRIM)

    at, lo, hi, p = _bounds_and_p(lo_side, hi_side, scale, alpha, op, bar)
    return Estimate(xbar, lo, hi, n, used, p, level, details={"se": se}, at=at)


def mean_test(x: np.ndarray, *, alpha: float, n_boot: int, method: str,
              rng: np.random.Generator, op: Optional[str] = None,
              bar: Optional[float] = None) -> Estimate:
    """Mean of per-example values, decided by two tests that must both agree.

    The sign-flip permutation test (:func:`signflip_mean`) is exact when the values are
    symmetric about the bar but lets skewed data through too often (about 10% instead of 5%
    at n=32 with exponential-like tails toward the bar); the studentized bootstrap
    (:func:`bootstrap_t_mean`) corrects for skew (0.053 there) but is only approximate. The
    interval is the hull of both intervals and the p-value the larger of the two, so a claim
    passes only when both tests reject (``method`` is kept for the signature; the means use
    the bootstrap-t whatever it says). Below ``MIN_BOOTSTRAP_N`` examples only the sign-flip
    test is used."""
    x = np.asarray(x, dtype=float).ravel()
    f = signflip_mean(x, alpha=alpha, n_boot=n_boot, rng=rng, op=op, bar=bar)
    if x.size < MIN_BOOTSTRAP_N:
        return f
    b = bootstrap_t_mean(x, alpha=alpha, n_boot=n_boot, rng=rng, op=op, bar=bar)
    lows = [v for v in (f.low, b.low) if not math.isnan(v)]
    highs = [v for v in (f.high, b.high) if not math.isnan(v)]
    p = None if f.p_value is None or b.p_value is None else max(f.p_value, b.p_value)

    def at(a: float) -> tuple[float, float]:
        (fl, fh), (bl, bh) = f.at(a), b.at(a)
        return _nanmin(fl, bl), _nanmax(fh, bh)

    return Estimate(f.estimate, min(lows) if lows else math.nan,
                    max(highs) if highs else math.nan, f.n,
                    f"{f.method} and {b.method} (both must clear)", p, f.level,
                    details={"signflip": [f.low, f.high, f.p_value],
                             "bootstrap": [b.low, b.high, b.p_value]}, at=at)


def _nanmin(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


def _nanmax(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else max(a, b)


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
        b = float(bar)
        if op in ("<", "<="):   # mirror: failures against 1 - bar
            k_, b_, op_ = n - k, 1.0 - b, {"<": ">", "<=": ">="}[op]
        else:
            k_, b_, op_ = k, b, op
        if b_ < 0 or (b_ == 0 and op_ == ">="):
            p = 0.0               # the null "rate below the bar" is impossible
        elif b_ > 1 or (b_ == 1 and op_ == ">"):
            p = 1.0
        else:
            p = float(binomtest(k_, n, b_, alternative="greater").pvalue)
    return Estimate(k / n, lo, hi, n, "Clopper-Pearson exact binomial", p, 1.0 - 2.0 * alpha,
                    details={"successes": k},
                    at=lambda a: clopper_pearson(k, n, 1.0 - 2.0 * a))


# --- multiple comparisons -------------------------------------------------------------------
_ADJUST = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh", "bonferroni": "bonferroni"}


def adjust_pvalues(pvals: Sequence[Optional[float]], method: str = "bonferroni") -> list[Optional[float]]:
    """Adjusted p-values: ``"holm"`` (family-wise error), ``"bh"`` (Benjamini-Hochberg false
    discovery rate), ``"bonferroni"`` or ``"none"``; equal to statsmodels ``multipletests``
    (tested), computed here with numpy because ``multipletests`` runs ``gc.collect()`` on every
    call (30-40 ms: it dominated assertions over several sites and the correction of large
    suites). None and NaN entries are left out of the family and come back unchanged."""
    method = (method or "none").lower()
    if method not in _ADJUST and method != "none":
        raise CriterionError(f"unknown p-value correction {method!r}; use one of "
                             "'holm', 'bh', 'bonferroni', 'none'")
    out: list[Optional[float]] = [None if p is None else float(p) for p in pvals]
    keep = [i for i, p in enumerate(out) if p is not None and math.isfinite(p)]
    if method == "none" or len(keep) < 2:  # a family of one needs no correction
        return out
    p = np.array([out[i] for i in keep], dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    ps = p[order]
    if _ADJUST[method] == "bonferroni":
        adj_sorted = np.minimum(1.0, m * ps)
    elif _ADJUST[method] == "holm":
        adj_sorted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * ps))
    else:  # fdr_bh
        adj_sorted = np.minimum(1.0, np.minimum.accumulate((m / np.arange(m, 0, -1))
                                                           * ps[::-1])[::-1])
    adj = np.empty(m)
    adj[order] = adj_sorted
    for i, a in zip(keep, adj):
        out[i] = float(a)
    return out
