"""Assertions on attention, direct logit attribution and the logit lens.

- ``assert_attends(att, mean > 0.5)``: heads attend from the query to the key (a
  ``field.attention`` result, or ``field.head_scores(...).of(kind, heads)``);
- ``assert_direct_effect(dla, mean > 0.5)`` / ``share > 0.5``: components write the answer
  into the logits directly (a ``field.dla`` result);
- ``assert_readable(lens, first_layer <= 24)`` / ``rank(layer=26) <= 1``: the answer can be
  read from the residual from some layer on (a ``field.logit_lens`` result).

They use the machinery of :mod:`fieldcheck.claim.assertions` (settings, seeding, per-criterion
results, non-finite inputs fail the claim) and take its common keywords.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from fieldcheck import config
from fieldcheck.claim.deciding import (MAX_PLOT, MAX_SITES, AssertionInputError, as_table, check_finite, check_n,
                                       fmt_num, make_result, need_attr, ratio_stat, resolve_settings, run_criteria)
from fieldcheck.claim.criteria import Criterion, first_layer, rank, share  # noqa: F401 (re-exported)
from fieldcheck.claim.result import ClaimResult
from fieldcheck.claim.statistics import Estimate, adjust_pvalues, bootstrap, clears, mean_test
from fieldcheck.errors import CriterionError

__all__ = ["assert_attends", "assert_direct_effect", "assert_readable"]


def _per_row_means(assertion: str, table: np.ndarray, labels: list[str], c: Criterion, s: config.Settings,
                   rng: np.random.Generator, require: str, plot: Optional[dict]) -> ClaimResult:
    """``mean`` criterion decided for every row of ``table [row, batch]``: all rows (each at
    alpha, intersection-union) or any of S rows (each at alpha / S, bounds at 1 - alpha / S),
    as ``assert_effect`` does for sites."""
    S, n = table.shape
    check_n("signflip", n, c, s)
    ests = [mean_test(table[i], alpha=s.alpha, n_boot=s.n_boot, method=s.method, rng=rng, op=c.op, bar=c.bar)
            for i in range(S)]
    p = [e.p_value for e in ests]
    p_holm = adjust_pvalues(p, "holm")
    bound = s.decide == "bound"
    if require == "any" and S > 1:   # Bonferroni over the rows: the bounds at 1 - alpha / S
        for e in ests:
            if e.at is not None:
                e.low, e.high = e.at(s.alpha / S)
                e.level = 1.0 - 2.0 * s.alpha / S
    row_pass = [clears(e.bound(c.op) if bound else e.estimate, c.op, c.bar) for e in ests]
    sign = 1.0 if c.op in (">", ">=") else -1.0
    key = [sign * (e.bound(c.op) if bound else e.estimate) for e in ests]
    key = [k if math.isfinite(k) else -math.inf for k in key]
    pick = int(np.argmin(key)) if require == "all" else int(np.argmax(key))
    chosen = ests[pick]
    agg = Estimate(chosen.estimate, chosen.low, chosen.high, n, chosen.method, level=chosen.level)
    finite_p = [x for x in p if x is not None]
    agg.p_value = ((max(finite_p) if require == "all" else min(1.0, S * min(finite_p)))
                   if (S > 1 and finite_p) else chosen.p_value)
    res = make_result(assertion, c, agg, s)
    res.passed = bool(all(row_pass) if require == "all" else any(row_pass))
    order = np.argsort(key, kind="stable")
    res.details.update({"n_rows": S, "require": require, "row": labels[pick],
                        "rows": [{"row": labels[i], "estimate": ests[i].estimate, "low": ests[i].low,
                                  "high": ests[i].high, "p_value": p[i], "p_holm": p_holm[i],
                                  "passed": row_pass[i]} for i in order[:MAX_SITES]]})
    if S > 1:
        res.method += (f"; per row, {'every' if require == 'all' else 'any'} of {S} "
                       + ("(intersection-union: each at alpha)" if require == "all"
                          else f"(Bonferroni: each at alpha / {S})"))
    res.plot = plot if (plot is not None and S > 1) else {
        "kind": "hist", "values": table[pick][:MAX_PLOT].tolist(), "bar": c.bar, "estimate": chosen.estimate,
        "title": f"{labels[pick]}: per-example values"}
    if not res.passed:
        bad = [i for i in order if not row_pass[i]][:3]
        where = "" if S == 1 else "; worst: " + ", ".join(
            f"{labels[i]} ({fmt_num(ests[i].estimate)} [{fmt_num(ests[i].low)}, {fmt_num(ests[i].high)}])" for i in bad)
        res.message = res.summary() + (f" ({labels[pick]})" if S > 1 else "") + where
    return res


def _check_require(assertion: str, require: str) -> None:
    if require not in ("all", "any"):
        raise CriterionError(f"{assertion}: require={require!r}; use 'all' (every row must meet the "
                             "criterion) or 'any' (at least one, each at alpha / n_rows)")


def _plot_of(obj: Any) -> Optional[dict]:
    fn = getattr(obj, "plot_data", None)
    if fn is None:
        return None
    try:
        return fn()
    except Exception:  # a picture never decides a claim
        return None


def assert_attends(att: Any, *criteria: Criterion, require: str = "all", alpha: Optional[float] = None,
                   level: Optional[float] = None, decide: Optional[str] = None, n_boot: Optional[int] = None,
                   method: Optional[str] = None) -> list[ClaimResult]:
    """Heads attend from the query to the key: ``mean > 0.5``, the mean weight over examples of
    each head (``att.weights [head, batch]`` from ``field.attention``, or head scores from
    ``field.head_scores(...).of(kind, heads)``), decided per head like ``assert_effect``:
    ``require="all"`` (each head at alpha) or ``"any"`` (each at alpha / n_heads). The report draws the
    layer x head heatmap of mean weights and the deciding head's per-example weights.

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    name = "assert_attends"
    s = resolve_settings(alpha, level, decide, n_boot, method)
    _check_require(name, require)

    def prepare():
        W = as_table(need_attr(att, "weights", name, "an AttentionResult (field.attention)"), "weights", name)
        labels = list(getattr(att, "labels", None) or [f"head {i}" for i in range(W.shape[0])])
        if len(labels) != W.shape[0]:
            raise AssertionInputError(f"{name}: {len(labels)} labels for {W.shape[0]} heads")
        check_finite(W, "the attention weights", labels)
        return W, labels

    def one(c, data, rng):
        W, labels = data
        res = _per_row_means(name, W, labels, c, s, rng, require, _plot_of(att))
        res.details.update({"query": getattr(att, "query", None), "key": getattr(att, "key", None),
                            "which": getattr(att, "which", None)})
        return res

    return run_criteria(name, criteria, ("mean",), s, prepare, one)


def assert_direct_effect(dla: Any, *criteria: Criterion, require: str = "all", alpha: Optional[float] = None,
                         level: Optional[float] = None, decide: Optional[str] = None,
                         n_boot: Optional[int] = None, method: Optional[str] = None) -> list[ClaimResult]:
    """Components write the answer into the logits directly (``field.dla``).

    ``mean > 0.5``: each component's mean direct term (per component, as ``assert_effect``);
    ``share > 0.5``: the components' terms together over the total logit difference, a ratio
    of means over examples with a bootstrap interval (the terms use the final-norm scale of the
    run itself; see ``fieldcheck.experiments.lens``).

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    name = "assert_direct_effect"
    s = resolve_settings(alpha, level, decide, n_boot, method)
    _check_require(name, require)

    def prepare():
        V = as_table(need_attr(dla, "values", name, "a DirectAttribution (field.dla)"), "values", name, "component")
        tot = as_table(need_attr(dla, "total", name, "a DirectAttribution (field.dla)"), "total", name)[0]
        labels = list(getattr(dla, "labels", None) or [f"component {i}" for i in range(V.shape[0])])
        if tot.size != V.shape[1]:
            raise AssertionInputError(f"{name}: total has {tot.size} examples, values {V.shape[1]}")
        check_finite(V, "the direct terms", labels)
        check_finite(tot, "the total logit difference")
        return V, tot, labels

    def one(c, data, rng):
        V, tot, labels = data
        n = V.shape[1]
        if c.name == "mean":
            return _per_row_means(name, V, labels, c, s, rng, require, _plot_of(dla))
        check_n("bootstrap", n, c, s)
        if not abs(tot.mean()) > 1e-9 * (np.abs(tot).mean() or 1.0):
            res = make_result(name, c, Estimate(math.nan, math.nan, math.nan, n, "not computed", None,
                                            1 - 2 * s.alpha), s)
            res.passed = False
            res.message = f"share is undefined: the total logit difference is 0 on average ({tot.mean():.3g})"
            return res
        est = bootstrap(ratio_stat(V.sum(0), tot, n), n, alpha=s.alpha, n_boot=s.n_boot, method=s.method,
                        rng=rng, op=c.op, bar=c.bar)
        est.details.update({"components": labels[:MAX_SITES], "n_components": len(labels),
                            "mean_total": float(tot.mean()), "mean_terms": float(V.sum(0).mean()),
                            "which": getattr(dla, "which", None)})
        res = make_result(name, c, est, s)
        res.plot = _plot_of(dla) or {
            "kind": "hist", "values": (V.sum(0) / np.where(tot == 0, np.nan, tot))[:MAX_PLOT].tolist(),
            "bar": c.bar, "estimate": est.estimate, "title": "per-example share"}
        return res

    return run_criteria(name, criteria, ("mean", "share"), s, prepare, one)


def assert_readable(lens: Any, *criteria: Criterion, leads: str = "wrong", alpha: Optional[float] = None,
                    level: Optional[float] = None, decide: Optional[str] = None, n_boot: Optional[int] = None,
                    method: Optional[str] = None) -> list[ClaimResult]:
    """The answer can be read from the residual (``field.logit_lens``).

    ``first_layer <= 24``: the mean over examples of the first layer from which the answer
    leads at every later layer (``leads="wrong"``: beats the wrong answer; ``"top1"``: is the top
    token; an example where it never leads counts as n_layers + 1); sign-flip test.
    ``rank(layer=26) <= 2``: the median rank of the answer (0 = top) at a layer (default -1, the
    final residual); bootstrap percentile interval on the integer grid.

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    name = "assert_readable"
    s = resolve_settings(alpha, level, decide, n_boot, method)
    if leads not in ("wrong", "top1"):
        raise CriterionError(f"{name}: leads={leads!r}; use 'wrong' or 'top1'")

    def prepare():
        R = as_table(need_attr(lens, "rank", name, "a LogitLens (field.logit_lens)"), "rank", name)
        first = getattr(lens, "first_layer", None)
        F = np.asarray(first(leads), dtype=float) if callable(first) else None
        labels = [f"layer {i}" for i in range(R.shape[0])]
        check_finite(R, "the answer ranks", labels)
        return R, F

    def one(c, data, rng):
        R, F = data
        L1, n = R.shape
        plot = _plot_of(lens)
        if c.name == "first_layer":
            if F is None:
                raise AssertionInputError(f"{name}: first_layer needs a LogitLens (with .first_layer)")
            check_n("signflip", n, c, s)
            est = mean_test(F, alpha=s.alpha, n_boot=s.n_boot, method=s.method, rng=rng, op=c.op, bar=c.bar)
            est.details.update({"leads": leads, "never": int((F > L1 - 1).sum()), "median": float(np.median(F))})
            res = make_result(name, c, est, s)
            res.plot = plot or {"kind": "hist", "values": F[:MAX_PLOT].tolist(), "bar": c.bar,
                                "estimate": est.estimate, "xlabel": "first layer"}
            return res
        layer = c.statistic.param("layer")
        if isinstance(layer, bool) or not isinstance(layer, int) or not -L1 <= layer < L1:
            raise CriterionError(f"{name}: rank(layer={layer!r}): the lens has layers 0..{L1 - 1} (or -1 for the "
                                 "final residual)")
        r = R[layer]
        check_n("discrete", n, c, s)
        est = bootstrap(lambda idx: np.median(r[idx], axis=-1), n, alpha=s.alpha, n_boot=s.n_boot,
                        method=s.method, rng=rng, op=c.op, bar=c.bar, discrete=True)
        est.details.update({"layer": layer % L1, "mean_rank": float(r.mean()), "top1_share": float((r == 0).mean())})
        res = make_result(name, c, est, s)
        res.plot = plot or {"kind": "hist", "values": r[:MAX_PLOT].tolist(), "bar": c.bar,
                            "estimate": est.estimate, "xlabel": f"answer rank at layer {layer % L1}"}
        return res

    return run_criteria(name, criteria, ("first_layer", "rank"), s, prepare, one)
