"""Assertions on circuits beyond one circuit's faithfulness (``assert_faithful`` lives in
:mod:`fieldcheck.claim.assertions` and takes ``field.evaluate_circuit``'s result).

- :func:`assert_faithfulness_curve`: the faithfulness curve of a ranking over circuit sizes
  (``field.faithfulness_curve``): ``area > 0.5`` (MIB's CPR score) or ``cmd < 0.3`` (the area
  under |1 - faithfulness|, MIB's CMD score);
- :func:`assert_minimal`: removing any one part of a circuit costs at least a share of the full
  model's effect (``field.minimality``): ``min_cost > 0.01``.

Every statistic is a function of the per-example metrics (ratio of means over the examples), and
is decided with a bootstrap over the examples (the whole curve or every part resampled together).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from fieldcheck.claim.deciding import (AssertionInputError, as_table, as_vector, check_finite, check_gap, check_n,
                                       make_result, need_attr, resolve_settings, run_criteria)
from fieldcheck.claim.criteria import Criterion
from fieldcheck.claim.result import ClaimResult
from fieldcheck.claim.statistics import bootstrap, resample_weights

__all__ = ["assert_faithfulness_curve", "assert_minimal"]


def _trapezoid(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Area under y [..., k] over x [k] (trapezoids), along the last axis."""
    return ((x[1:] - x[:-1]) * (y[..., 1:] + y[..., :-1]) / 2).sum(-1)


def assert_faithfulness_curve(curve: Any, *criteria: Criterion, alpha: Optional[float] = None,
                              level: Optional[float] = None, decide: Optional[str] = None,
                              n_boot: Optional[int] = None, method: Optional[str] = None) -> list[ClaimResult]:
    """The top-k circuits of a ranking are faithful over sizes: ``area > 0.5`` (area under
    faithfulness over the share of edges, from 0 to the largest size measured) or ``cmd < 0.3``
    (area under |1 - faithfulness|). ``curve``: a FaithfulnessCurve (``.fractions [k]``,
    ``.circuit [k, batch]``, ``.full``, ``.empty [batch]``); bootstrap over the examples.

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    name = "assert_faithfulness_curve"
    s = resolve_settings(alpha, level, decide, n_boot, method)

    def prepare():
        fr = check_finite(np.asarray(need_attr(curve, "fractions", name, "a FaithfulnessCurve"), dtype=float).ravel(),
                     "the fractions")
        what = "a FaithfulnessCurve"
        circ = check_finite(as_table(need_attr(curve, "circuit", name, what), "circuit", name), "the circuit metrics")
        n = circ.shape[1]
        full = check_finite(as_vector(need_attr(curve, "full", name, what), "full", name, n), "the full metric")
        empty = check_finite(as_vector(need_attr(curve, "empty", name, what), "empty", name, n), "the empty metric")
        if circ.shape[0] != fr.size or (fr.size > 1 and np.any(np.diff(fr) <= 0)) or fr.min() <= 0:
            raise AssertionInputError(f"{name}: fractions must be increasing, > 0, one per row of circuit "
                                      f"(got {fr.size} fractions, {circ.shape[0]} rows)")
        return fr, circ, full, empty

    def one(c: Criterion, d, rng) -> ClaimResult:
        fr, circ, full, empty = d
        n = full.size
        check_n("bootstrap", n, c, s)
        den = full - empty
        check_gap(name, c, den, s, "the full - empty gap", "a curve's faithfulness divides by it: use data on which "
                  "the full model and the empty circuit differ")
        num = (circ - empty[None]).T            # [batch, k]
        x = np.concatenate([[0.0], fr])

        def stat(idx):
            W = resample_weights(idx, n)
            with np.errstate(invalid="ignore", divide="ignore"):
                f = (W @ num) / (W @ den)[..., None]
            f = np.concatenate([np.zeros(f.shape[:-1] + (1,)), f], -1)
            return _trapezoid(x, f if c.name == "area" else np.abs(1 - f))

        est = bootstrap(stat, n, alpha=s.alpha, n_boot=s.n_boot, method=s.method, rng=rng, op=c.op, bar=c.bar)
        with np.errstate(invalid="ignore", divide="ignore"):
            f_hat = num.sum(0) / den.sum()
        est.details.update({"fractions": fr.tolist(), "faithfulness": f_hat.tolist()})
        level = getattr(curve, "level", "edge")
        est.details["circuit"] = f"top {level}s by {getattr(curve, 'method', '') or 'score'}, {fr.size} sizes"
        plot = {"kind": "line", "x": fr.tolist(), "y": f_hat.tolist(), "xlabel": f"share of {level}s kept",
                "ylabel": "faithfulness", "xscale": "log", "hline": 1.0,
                "title": f"faithfulness over circuit sizes: {c.statistic} = {est.estimate:.3f}"}
        return make_result(name, c, est, s, plot=plot)

    return run_criteria(name, criteria, ("area", "cmd"), s, prepare, one)


def assert_minimal(minimality: Any, *criteria: Criterion, alpha: Optional[float] = None,
                   level: Optional[float] = None, decide: Optional[str] = None,
                   n_boot: Optional[int] = None, method: Optional[str] = None) -> list[ClaimResult]:
    """Every part of a circuit matters: ``min_cost > 0.01``, the smallest over parts of
    sum(circuit - circuit without the part) / sum(full - empty). ``minimality``: a Minimality
    (``.without [parts, batch]``, ``.circuit``, ``.full``, ``.empty [batch]``,
    ``.parts``); bootstrap over the examples (every part resampled together, the minimum taken
    in each resample).

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    name = "assert_minimal"
    s = resolve_settings(alpha, level, decide, n_boot, method)

    def prepare():
        wo = check_finite(as_table(need_attr(minimality, "without", name, "a Minimality (field.minimality)"),
                                   "without", name, "part"), "the metric without a part")
        n = wo.shape[1]
        got = {"without": wo}
        for attr in ("circuit", "full", "empty"):
            got[attr] = check_finite(as_vector(need_attr(minimality, attr, name, "a Minimality"), attr, name, n),
                                f"the {attr} metric")
        got["parts"] = [str(p) for p in getattr(minimality, "parts", range(wo.shape[0]))]
        return got

    def one(c: Criterion, d, rng) -> ClaimResult:
        n = d["full"].size
        check_n("bootstrap", n, c, s)
        den = d["full"] - d["empty"]
        check_gap(name, c, den, s, "the full - empty gap", "minimality divides each part's cost by it: use data on "
                  "which the full model and the empty circuit differ")
        num = (d["circuit"][None] - d["without"]).T      # [batch, parts]

        def stat(idx):
            W = resample_weights(idx, n)
            with np.errstate(invalid="ignore", divide="ignore"):
                return ((W @ num) / (W @ den)[..., None]).min(-1)

        est = bootstrap(stat, n, alpha=s.alpha, n_boot=s.n_boot, method=s.method, rng=rng, op=c.op, bar=c.bar)
        cost = num.sum(0) / den.sum()
        order = np.argsort(cost)
        est.details.update({"cheapest_parts": [(d["parts"][i], float(cost[i])) for i in order[:10]],
                            "n_parts": int(len(cost)),
                            "decided_by": f"without {d['parts'][order[0]]} (cheapest of {len(cost)} parts)"})
        return make_result(name, c, est, s)

    return run_criteria(name, criteria, ("min_cost",), s, prepare, one)
