"""The outcome of one assertion in a claim: ``ClaimResult``, the ``ClaimFailed`` error, and
the recorder that attaches results to the running pytest item.

Every assertion in :mod:`fieldcheck.claim.assertions` builds one ``ClaimResult`` per criterion,
hands it to :func:`record`, and raises :class:`ClaimFailed` when any criterion fails. The
pytest plugin installs a sink (:func:`set_sink`) that collects the recorded results per test,
whether the test passes or fails, for the terminal summary and the JSON/HTML reports.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from fieldcheck.errors import UsageError
from fieldcheck.jsonable import jsonable as _jsonable


@dataclass
class ClaimResult:
    """One criterion decided over a sample of examples.

    statistic: the statistic's name as written (``"r2"``, ``"recovered"``, ``"rate"``).
    estimate: point estimate over the ``n`` examples.
    interval: (low, high) confidence interval at ``level`` (None where not defined).
    op, bar: the comparison as written: ``r2 > 0.9`` is op ``">"``, bar ``0.9``.
    p_value: one-sided p-value of the null "the criterion does not hold" (None if not computed);
    p_adjusted: after the session-level multiple-comparison correction (filled by the plugin).
    decide: ``"bound"`` (the one-sided confidence bound must clear the bar) or ``"point"``.
    passed: the decision.  claim_id: the pytest node id (filled by the plugin).
    assertion: which assertion made it (``"assert_predicted_effect"``).
    details: extra numbers for the report (worst sites, per-example values, ...), JSON-able.
    plot: data the HTML report can draw (kind + arrays), JSON-able, or None.
    examples: the per-example values the statistic is computed from and the data set's content
    hash (:func:`fieldcheck.claim.comparison.example_values`), for paired comparisons across
    models and runs; None when the assertion cannot give them.
    bound: the one-sided confidence bound (level 1 - alpha) on the side the criterion tests;
    ``interval`` is the two-sided interval at ``level`` = 1 - 2 alpha, whose ends are those
    bounds. alpha: the error rate the decision was made at.
    """

    statistic: str
    estimate: float
    interval: Optional[tuple[float, float]]
    op: str
    bar: float
    passed: bool
    n: int
    level: float = 0.95
    p_value: Optional[float] = None
    p_adjusted: Optional[float] = None
    decide: str = "bound"
    method: str = ""
    assertion: str = ""
    claim_id: Optional[str] = None
    criterion: str = ""
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    plot: Optional[dict[str, Any]] = None
    bound: Optional[float] = None
    alpha: Optional[float] = None
    examples: Optional[dict[str, Any]] = None

    def __post_init__(self):
        """Refuse a ClaimResult whose fields contradict each other (one built by hand, or read back from a
        damaged report): UsageError naming the field."""
        import numbers

        def real(name, v, none_ok=False):
            if v is None and none_ok:
                return
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise UsageError(f"ClaimResult: {name} must be a number, got {v!r}")

        if not isinstance(self.statistic, str) or not self.statistic:
            raise UsageError(f"ClaimResult: statistic must be the statistic's name, got {self.statistic!r}")
        if self.op not in (">", ">=", "<", "<="):
            raise UsageError(f"ClaimResult: op must be '>', '>=', '<' or '<=', got {self.op!r}")
        real("estimate", self.estimate)
        real("bar", self.bar)
        if not math.isfinite(self.bar):
            raise UsageError(f"ClaimResult: bar must be a finite number, got {self.bar!r}")
        if isinstance(self.n, bool) or not isinstance(self.n, numbers.Integral) or self.n < 0:
            raise UsageError(f"ClaimResult: n must be a count of examples (an int >= 0), got {self.n!r}")
        if self.interval is not None:
            if len(self.interval) != 2:
                raise UsageError(f"ClaimResult: interval must be (low, high) or None, got {self.interval!r}")
            lo, hi = self.interval
            real("interval", lo)
            real("interval", hi)
            if lo > hi:
                raise UsageError(f"ClaimResult: interval {self.interval!r} has low > high")
        for name in ("p_value", "p_adjusted"):
            v = getattr(self, name)
            real(name, v, none_ok=True)
            # 0: the data are impossible under the null (a rate > 0 with a success); NaN: not computable
            # (a NaN estimate), which the reports print as "nan" and the correction leaves out
            if v is not None and not math.isnan(v) and not 0.0 <= v <= 1.0:
                raise UsageError(f"ClaimResult: {name} must be in [0, 1], NaN or None, got {v!r}")
        real("level", self.level)
        if not 0.0 < self.level < 1.0:
            raise UsageError(f"ClaimResult: level must be in (0, 1), got {self.level!r}")

    def summary(self) -> str:
        """One line as the failure message prints it: ``recovered = 0.62 [0.55, 0.68] (90% CI, n=16), needs >
        0.8: FAILED``."""
        lo_hi = ""
        if self.interval is not None:
            lo_hi = f" [{_fmt(self.interval[0])}, {_fmt(self.interval[1])}] ({round(self.level * 100)}% CI, n={self.n})"
        else:
            lo_hi = f" (n={self.n})"
        verdict = "passed" if self.passed else "FAILED"
        return f"{self.statistic} = {_fmt(self.estimate)}{lo_hi}, needs {self.op} {_fmt(self.bar)}: {verdict}"

    __str__ = summary

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (the report schema's result entry: statistic, estimate, interval, op,
        bar, passed, n, p-value, ...)."""
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval is not None else None
        return _jsonable(d)

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html

        return rich_html(self, plot=self.plot)


class ClaimFailed(AssertionError):
    """A claim's criterion did not hold. ``results`` holds every ClaimResult of the assertion."""

    def __init__(self, message: str, results: list[ClaimResult] | None = None):
        super().__init__(message)
        self.results = list(results or [])


def _fmt(x: float) -> str:
    if x is None:
        return "None"
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    ax = abs(x)
    if ax != 0 and (ax < 1e-3 or ax >= 1e5):
        return f"{x:.3g}"
    return f"{x:.3g}" if ax < 1 else f"{x:.4g}"


# --- the recorder ---------------------------------------------------------------------------
_sink: Optional[Callable[[ClaimResult], None]] = None


def set_sink(sink: Optional[Callable[[ClaimResult], None]]) -> None:
    """Install (or remove, with None) the function that receives every recorded result."""
    global _sink
    _sink = sink


def current_sink() -> Optional[Callable[[ClaimResult], None]]:
    """The function that receives every recorded result now (None outside the plugin)."""
    return _sink


def record(result: ClaimResult) -> ClaimResult:
    """Hand a result to the active sink (the pytest plugin), if any, and return it."""
    if _sink is not None:
        _sink(result)
    return result
