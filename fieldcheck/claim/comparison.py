"""Paired comparison of one claim's statistic on two models over the same examples.

A :class:`~fieldcheck.claim.result.ClaimResult` keeps, in ``examples``, the per-example values
its statistic is computed from (see :func:`example_values`) and the identity of the examples
(the content hash of the data set: tokens, answers, positions). Two results of the same
criterion on two models, over the same examples, are then compared *paired*: every bootstrap
resample draws the same example indices for both models, so the difference of the statistic is
resampled with the between-example variation cancelled, and a mean over examples is tested on
the per-example differences (sign-flip permutation test and bootstrap, both must agree: the
machinery of :mod:`fieldcheck.claim.statistics`).

Kinds of per-example values (``columns`` are arrays ``[batch]``, or ``[n_sites, batch]`` when a
result aggregates several sites with ``agg`` = ``"min"`` or ``"max"`` over the sites):

* ``"mean"``: the statistic is the mean of ``x`` (rates: ``x`` in {0, 1}).
* ``"ratio"``: ``sum(num) / sum(den)`` (``recovered``, ``cpr``).
* ``"r2"`` / ``"pearson"``: from the column sums ``r, t, q, u, v, c`` over ``S`` sites per
  example (as computed by ``assert_predicted_effect``; exact under resampling).
* ``"mean_diff"`` / ``"auroc"``: two groups of examples (prompts on which a feature should fire,
  ``g = 1``, and prompts on which it should not, ``g = 0``) with one value ``x`` each: the
  difference of the groups' means, or the AUROC of ``x`` between them (ties count 1/2). A
  resample draws from both groups together, so its group sizes vary, as in an unstratified
  bootstrap; comparing two models' AUROCs on the same prompts this way is the paired setting of
  DeLong et al. (1988).

The change is ``candidate - baseline``. Its interval is two-sided at ``1 - 2 alpha``; its
``p_value`` is one-sided for "the change goes against the claim's direction" (down for a
``>`` criterion, up for ``<``), which is what a regression rule needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from fieldcheck.claim.statistics import MIN_BOOTSTRAP_N, bootstrap, mean_test, resample_weights

KINDS = ("mean", "ratio", "r2", "pearson", "mean_diff", "auroc")
#: most numbers one result stores as per-example values (columns x sites x examples)
MAX_VALUES = 20000


def example_values(kind: str, columns: dict[str, Any], *, dataset: Optional[str] = None,
                   agg: Optional[str] = None, constants: Optional[dict[str, float]] = None,
                   labels: Optional[list[str]] = None) -> Optional[dict]:
    """The JSON-able ``examples`` member of a ClaimResult, or None when too large.

    ``dataset``: content hash of the data set the examples come from (None: unknown, and
    then the result cannot be paired). ``labels``: site labels when columns are
    ``[n_sites, batch]``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of per-example values {kind!r}: use one of {KINDS}")
    cols = {k: np.asarray(v, dtype=float) for k, v in columns.items()}
    shapes = {v.shape for v in cols.values()}
    if len(shapes) != 1:
        raise ValueError(f"per-example columns have different shapes: {shapes}")
    shape = shapes.pop()
    if sum(v.size for v in cols.values()) > MAX_VALUES:
        return None
    out = {"kind": kind, "n": int(shape[-1]), "dataset": dataset,
           "columns": {k: v.tolist() for k, v in cols.items()}}
    if len(shape) == 2:
        out["agg"] = agg or "min"
        if labels is not None:
            out["labels"] = [str(x) for x in labels]
    if constants:
        out["constants"] = {k: float(v) for k, v in constants.items()}
    return out


def dataset_hash(*objs: Any) -> Optional[str]:
    """The content hash of the data set the inputs were measured on (their ``.dataset_hash``:
    PatchResult, TransferResult, ``Field.metric_values``), or None."""
    for o in objs:
        h = getattr(o, "dataset_hash", None)
        if isinstance(h, str) and h:
            return h
    return None


def examples_of(kind: str, columns: dict[str, Any], *objs: Any, **kw: Any) -> Optional[dict]:
    """:func:`example_values` with the data set named by ``objs``; None (never an error) when
    the values cannot be stored: an assertion's verdict must not depend on it."""
    try:
        return example_values(kind, columns, dataset=dataset_hash(*objs), **kw)
    except (ValueError, TypeError):
        return None


def _stat(ex: dict, idx: np.ndarray) -> np.ndarray:
    """The statistic of ``ex`` on resampled example indices ``idx [..., m]`` -> ``[...]``."""
    kind, n = ex["kind"], int(ex["n"])
    cols = {k: np.asarray(v, dtype=float) for k, v in ex["columns"].items()}
    W = resample_weights(np.asarray(idx), n)           # [..., n]
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "mean":
            x = cols["x"]
            val = (W @ x.T) / W.sum(-1, keepdims=True) if x.ndim == 2 else (W @ x) / W.sum(-1)
        elif kind == "ratio":
            num, den = cols["num"], cols["den"]
            val = (W @ num.T) / (W @ den.T) if num.ndim == 2 else (W @ num) / (W @ den)
        elif kind in ("mean_diff", "auroc"):
            val = _two_groups(kind, cols["x"], cols["g"] > 0.5, W)
        else:
            S = float((ex.get("constants") or {}).get("S", 1.0))
            g = {k: W @ v for k, v in cols.items()}
            N = S * W.sum(-1)
            ss_tot = g["q"] - g["t"] ** 2 / N
            if kind == "r2":
                val = 1.0 - g["r"] / ss_tot
            else:
                cov = g["c"] - g["u"] * g["t"] / N
                val = cov / np.sqrt((g["v"] - g["u"] ** 2 / N) * ss_tot)
    if val.ndim == np.asarray(idx).ndim and "agg" in ex:  # [..., n_sites]: aggregate the sites
        val = np.min(val, axis=-1) if ex["agg"] == "min" else np.max(val, axis=-1)
    return val


def _two_groups(kind: str, x: np.ndarray, on: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``mean_diff`` or ``auroc`` of ``x [n]`` between the ``on`` and the other examples, under
    resampling weights ``W [..., n]``."""
    w_on, w_off = W[..., on], W[..., ~on]
    if kind == "mean_diff":
        return (w_on @ x[on]) / w_on.sum(-1) - (w_off @ x[~on]) / w_off.sum(-1)
    a, b = x[on][:, None], x[~on][None]
    C = (a > b).astype(float) + 0.5 * (a == b)                       # [n_on, n_off]
    return np.einsum("...i,ij,...j->...", w_on, C, w_off) / (w_on.sum(-1) * w_off.sum(-1))


def value_of(ex: dict) -> float:
    """The statistic on all examples."""
    return float(_stat(ex, np.arange(int(ex["n"]))))


def _labels(values: dict) -> Optional[list]:
    """The site labels of stored values, in the label grammar also when a 0.1 report printed them."""
    from fieldcheck.field.labels import from_0_1

    labels = values.get("labels")
    return None if labels is None else [from_0_1(x) for x in labels]


def pairing_problem(candidate: Optional[dict], baseline: Optional[dict]) -> Optional[str]:
    """None when the two results can be paired, else why not (in words)."""
    if not candidate or not baseline:
        side = "either" if not candidate and not baseline else (
            "the candidate" if not candidate else "the baseline")
        return f"no per-example values stored for {side} result"
    if candidate.get("kind") != baseline.get("kind"):
        return f"different statistics ({candidate.get('kind')} vs {baseline.get('kind')})"
    if not candidate.get("dataset") or not baseline.get("dataset"):
        return "the data set's identity is unknown (the values came without a data set)"
    if candidate["dataset"] != baseline["dataset"]:
        return (f"different data sets (content hash {str(candidate['dataset'])[:12]} vs "
                f"{str(baseline['dataset'])[:12]}): the examples are not the same")
    if int(candidate["n"]) != int(baseline["n"]):
        return f"different numbers of examples ({candidate['n']} vs {baseline['n']})"
    if _labels(candidate) != _labels(baseline):
        return "different sites"
    return None


@dataclass
class PairedChange:
    """A statistic's change from the baseline to the candidate over the same examples.

    estimate: candidate - baseline; (low, high): two-sided interval at ``level``; p_value:
    one-sided p of "no change against the claim's direction" (small: it got worse).
    ``worse``/``better``: the interval lies wholly on that side of 0 (not corrected)."""

    statistic: str
    kind: str
    candidate: float
    baseline: float
    estimate: float
    low: float
    high: float
    level: float
    n: int
    method: str
    against: str                      # the sign of a change against the direction: "-" or "+"
    p_value: Optional[float] = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def interval(self) -> tuple[float, float]:
        return (self.low, self.high)

    @property
    def worse(self) -> bool:
        return self.high < 0 if self.against == "-" else self.low > 0

    @property
    def better(self) -> bool:
        return self.low > 0 if self.against == "-" else self.high < 0

    def summary(self) -> str:
        sgn = "+" if self.estimate > 0 else ""
        p = "-" if self.p_value is None else f"{self.p_value:.3g}"
        return (f"{self.statistic} {self.baseline:.4g} -> {self.candidate:.4g} "
                f"(change {sgn}{self.estimate:.3g} [{self.low:.3g}, {self.high:.3g}], "
                f"{round(self.level * 100)}% paired CI, n={self.n}; p(worse)={p})")

    __str__ = summary

    def to_dict(self) -> dict[str, Any]:
        from fieldcheck.jsonable import jsonable

        d = {k: getattr(self, k) for k in ("statistic", "kind", "candidate", "baseline",
                                           "estimate", "low", "high", "level", "n", "method",
                                           "against", "p_value", "details")}
        d["worse"], d["better"] = self.worse, self.better
        d["interval"] = [self.low, self.high]
        return jsonable(d)


def paired_change(candidate: dict, baseline: dict, *, op: str, alpha: float = 0.05,
                  n_boot: int = 2000, method: str = "bca", rng: Optional[np.random.Generator] = None,
                  statistic: str = "") -> PairedChange:
    """The paired change of one statistic (``examples`` members of two results).

    ``op``: the claim's comparison (``>``/``>=``: higher is better; ``<``/``<=``: lower is
    better). Means of per-example values on a single site are tested on the per-example
    differences with :func:`~fieldcheck.claim.statistics.mean_test` (sign-flip and bootstrap);
    every other statistic with a paired bootstrap of the difference
    (:func:`~fieldcheck.claim.statistics.bootstrap`, the same indices for both models)."""
    why = pairing_problem(candidate, baseline)
    if why is not None:
        raise ValueError(f"cannot pair these results: {why}")
    rng = rng if rng is not None else np.random.default_rng(0)
    n = int(candidate["n"])
    worse_op = "<" if op in (">", ">=") else ">"   # the change against the direction
    c_val, b_val = value_of(candidate), value_of(baseline)
    simple_mean = candidate["kind"] == "mean" and "agg" not in candidate
    seed = int(rng.integers(2 ** 62))
    if simple_mean:
        d = np.asarray(candidate["columns"]["x"], float) - np.asarray(baseline["columns"]["x"], float)
        if n < 2:
            raise ValueError("a paired test needs at least 2 examples")
        est = mean_test(d, alpha=alpha, n_boot=n_boot, method=method,
                        rng=np.random.default_rng(seed), op=worse_op, bar=0.0)
        how = "paired: " + est.method + " on per-example differences"
    else:
        if n < MIN_BOOTSTRAP_N:
            raise ValueError(f"a paired bootstrap needs at least {MIN_BOOTSTRAP_N} examples, got {n}")

        def diff(idx):
            return _stat(candidate, idx) - _stat(baseline, idx)
        est = bootstrap(diff, n, alpha=alpha, n_boot=n_boot, method=method,
                        rng=np.random.default_rng(seed), op=worse_op, bar=0.0)
        how = "paired " + est.method + " of the difference (same resampled examples)"
    return PairedChange(statistic=statistic or candidate["kind"], kind=candidate["kind"],
                        candidate=c_val, baseline=b_val, estimate=float(est.estimate),
                        low=float(est.low), high=float(est.high), level=float(est.level), n=n,
                        method=how, against="-" if worse_op == "<" else "+",
                        p_value=est.p_value,
                        details={"dataset": candidate.get("dataset")})

