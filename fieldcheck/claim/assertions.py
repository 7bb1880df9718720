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
from typing import Any, Callable, Optional

import numpy as np

from fieldcheck import config
from fieldcheck.claim.comparison import examples_of as _examples
from fieldcheck.claim.criteria import Criterion
from fieldcheck.claim.deciding import (MAX_PLOT, MAX_SITES, AssertionInputError, NonFiniteInput, as_table, check_gap,
                                       as_vector, check_finite, check_n, finish, fmt_num, make_result, need_attr,
                                       ratio_stat, resolve_settings, run_criteria, site_labels, sites_text)
from fieldcheck.claim.result import ClaimResult
from fieldcheck.claim.statistics import (Estimate, adjust_pvalues, binomial_rate, bootstrap, clears, mean_test,
                                         resample_weights, to_numpy)
from fieldcheck.errors import CriterionError, InsufficientData
from fieldcheck.measures import alpha_star_of

# re-exported so that `from fieldcheck import r2, ...` and `fc.r2` work
from fieldcheck.claim.criteria import (alpha_star, cpr, depth_share, effect, explained, gap_closed, mean,  # noqa: F401
                       pearson, rate, recovered, r2, shift, spearman, top_k_overlap)

__all__ = ["assert_predicted_effect", "assert_effect", "assert_path_effect", "assert_localized",
           "assert_linear_regime", "assert_light_cone", "assert_anisotropic",
           "assert_transfers", "assert_faithful", "assert_prefers", "assert_explained", "AssertionInputError"]


# --- predicted vs actual effects ----------------------------------------------------------------
def _effects(x: Any, name: str, assertion: str) -> tuple[np.ndarray, Any]:
    if hasattr(x, "effect") and not isinstance(x, np.ndarray):
        return as_table(x.effect, name, assertion), x
    return as_table(x, name, assertion), None


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

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    name = "assert_predicted_effect"
    s = resolve_settings(alpha, level, decide, n_boot, method)
    valid = ("r2", "pearson", "spearman", "top_k_overlap")

    def prepare():
        P, pobj = _effects(predicted, "predicted effect", name)
        A, aobj = _effects(actual, "actual effect", name)
        if P.shape != A.shape:
            raise AssertionInputError(f"{name}: predicted effects have shape {P.shape} and "
                                      f"actual effects {A.shape}; they must match "
                                      "[n_sites, batch]")
        labels = site_labels(aobj if aobj is not None else pobj, A.shape[0])
        if labels[0] == "site 0" and pobj is not None:
            labels = site_labels(pobj, A.shape[0])
        check_finite(P, "the predicted effect", labels)
        check_finite(A, "the actual effect", labels)
        return P, A, labels

    def one(c: Criterion, data, rng) -> ClaimResult:
        P, A, labels = data
        S, n = A.shape
        kind = "discrete" if c.name == "top_k_overlap" else "bootstrap"
        check_n(kind, n, c, s)
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
        keep = np.argsort(-np.abs(am), kind="stable")[:MAX_PLOT] if S > 1 else None
        if S > 1:
            plot = {"kind": "scatter", "x": pm[keep].tolist(), "y": am[keep].tolist(),
                    "labels": [labels[i] for i in keep], "xlabel": "predicted mean effect",
                    "ylabel": "real mean effect", "what": "site means"}
        else:
            plot = {"kind": "scatter", "x": P[0][:MAX_PLOT].tolist(),
                    "y": A[0][:MAX_PLOT].tolist(), "xlabel": "predicted effect",
                    "ylabel": "real effect", "what": "examples"}
        res = make_result(name, c, est, s, plot=plot)
        if c.name in ("r2", "pearson"):
            res.examples = _examples(c.name, cols, actual, predicted, constants={"S": S})
        if not res.passed:
            res.message = res.summary() + "; worst sites: " + sites_text(worst)
        return res

    return run_criteria(name, criteria, valid, s, prepare, one)


# --- patch effects ---------------------------------------------------------------------------
def _patch_arrays(result: Any, assertion: str):
    what = "a PatchResult"
    values = as_table(need_attr(result, "values", assertion, what), "values", assertion, "site")
    S, n = values.shape
    if S == 0 or n == 0:
        raise AssertionInputError(f"{assertion}: the result has {'no site' if S == 0 else 'no example'} (values of "
                                  f"shape {values.shape}); a select(...) that kept nothing, or sites for layers this "
                                  "model does not have?")
    labels = site_labels(result, S)
    if getattr(result, "jointly", False) and S == 1 and labels == ["site 0"]:
        labels = [f"joint patch of {len(getattr(result, 'sites', None) or [])} sites"]
    eff_raw = getattr(result, "effect", None)
    clean = as_vector(need_attr(result, "baseline_clean", assertion, what), "baseline_clean",
                    assertion, n)
    corrupt = as_vector(need_attr(result, "baseline_corrupt", assertion, what), "baseline_corrupt",
                      assertion, n)
    return values, eff_raw, clean, corrupt, labels


def _per_site_effect(assertion: str, result: Any, criteria: tuple, direction: Optional[str],
                     require: str, s: config.Settings,
                     extra_details: Optional[dict] = None) -> list[ClaimResult]:
    valid = ("recovered", "effect")
    if require not in ("all", "any"):
        raise CriterionError(f"{assertion}: require={require!r}; use 'all' (every site must "
                             "meet the criterion) or 'any' (at least one site, each at "
                             "alpha / n_sites)")
    if direction is not None and direction not in ("denoise", "noise"):
        raise CriterionError(f"{assertion}: direction={direction!r}; use 'denoise' or 'noise'")

    def prepare():
        values, eff_raw, clean, corrupt, labels = _patch_arrays(result, assertion)  # a result at all, first
        got = getattr(result, "direction", None)
        if direction is not None and got != direction:
            raise CriterionError(f"{assertion}(direction={direction!r}) but the result was "
                                 f"measured with direction={got!r}; patch with "
                                 f"direction={direction!r} or drop the direction= keyword")
        check_finite(values, "the patched metric (values)", labels)
        check_finite(clean, "the clean baseline")
        check_finite(corrupt, "the corrupted baseline")
        if eff_raw is not None:
            eff = as_table(eff_raw, "effect", assertion)
            if eff.shape != values.shape:
                raise AssertionInputError(f"{assertion}: effect has shape {eff.shape}, values "
                                          f"{values.shape}")
            check_finite(eff, "the patch effect", labels)
        else:
            base = corrupt if getattr(result, "direction", "denoise") == "denoise" else clean
            eff = values - base[None, :]
        return values, eff, clean, corrupt, labels

    def one(c: Criterion, data, rng) -> ClaimResult:
        values, eff, clean, corrupt, labels = data
        S, n = values.shape
        kind = "signflip" if c.name == "effect" else "bootstrap"
        check_n(kind, n, c, s)
        if c.name == "recovered":
            check_gap(assertion, c, clean - corrupt, s, "the clean-corrupt gap (clean - "
                       "corrupted metric)", "use `effect` (the patch effect in metric units) "
                       "or a corruption that moves the metric more")
        ests = []
        for i in range(S):
            if c.name == "recovered":
                e = bootstrap(ratio_stat(values[i] - corrupt, clean - corrupt, n), n,
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
        res = make_result(assertion, c, agg, s)
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
                 "passed": site_pass[i]} for i in order[:MAX_SITES]]
        res.details.update({"n_sites": S, "require": require, "site": labels[pick],
                            "sites": rows, "direction": getattr(result, "direction", None),
                            "metric": getattr(result, "metric", None)})
        if extra_details:
            res.details.update(extra_details)
        if S > 1:
            res.method += (f"; per site, {'every' if require == 'all' else 'any'} of {S} sites "
                           + ("(intersection-union: each at alpha)" if require == "all"
                              else "(Bonferroni: each at alpha / " + str(S) + ")"))
            res.plot = {"kind": "bar", "labels": [labels[i] for i in range(min(S, MAX_PLOT))],
                        "y": [e.estimate for e in ests[:MAX_PLOT]],
                        "low": [e.low for e in ests[:MAX_PLOT]],
                        "high": [e.high for e in ests[:MAX_PLOT]], "bar": c.bar}
        else:
            col = (values[0] - corrupt) / np.where(clean - corrupt == 0, np.nan, clean - corrupt) \
                if c.name == "recovered" else eff[0]
            res.plot = {"kind": "hist", "values": col[:MAX_PLOT].tolist(), "bar": c.bar,
                        "estimate": chosen.estimate}
        if not res.passed:
            bad = [i for i in order if not site_pass[i]][:3]
            where = "" if S == 1 else "; worst sites: " + ", ".join(
                f"{labels[i]} ({fmt_num(ests[i].estimate)} [{fmt_num(ests[i].low)}, "
                f"{fmt_num(ests[i].high)}])" for i in bad)
            res.message = res.summary() + (f" (site {labels[pick]})" if S > 1 else "") + where
        return res

    return run_criteria(assertion, criteria, valid, s, prepare, one)


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

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    s = resolve_settings(alpha, level, decide, n_boot, method)
    return _per_site_effect("assert_effect", result, criteria, direction, require, s)


def assert_path_effect(path_result: Any, *criteria: Criterion, require: str = "all",
                       alpha: Optional[float] = None, level: Optional[float] = None,
                       decide: Optional[str] = None, n_boot: Optional[int] = None,
                       method: Optional[str] = None) -> list[ClaimResult]:
    """A path patch (sender -> receiver) has the effect claimed; as :func:`assert_effect`.

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    s = resolve_settings(alpha, level, decide, n_boot, method)
    return _per_site_effect("assert_path_effect", path_result, criteria, None, require, s)


def assert_localized(selection: Any, *criteria: Criterion, top_k: Optional[int] = None,
                     alpha: Optional[float] = None, level: Optional[float] = None,
                     decide: Optional[str] = None, n_boot: Optional[int] = None,
                     method: Optional[str] = None) -> list[ClaimResult]:
    """A few sites, patched together, carry the effect: ``recovered >= 0.8`` of the joint
    patch of the sites chosen by ``field.select_sites`` (its ``.real``), with at most
    ``top_k`` sites. A joint PatchResult (``jointly=True``) is accepted too.

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    name = "assert_localized"
    s = resolve_settings(alpha, level, decide, n_boot, method)
    if hasattr(selection, "real"):
        joint, sites = selection.real, list(getattr(selection, "sites", []) or [])
    elif hasattr(selection, "values"):
        rows = as_table(selection.values, "values", name).shape[0]
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

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    name = "assert_linear_regime"
    s = resolve_settings(alpha, level, decide, n_boot, method)
    if tol is not None:
        try:
            ok = not isinstance(tol, bool) and math.isfinite(float(tol)) and float(tol) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise CriterionError(f"{name}: tol must be a positive number, got {tol!r}")

    def prepare():
        alphas = as_vector(need_attr(sweep, "alphas", name, "a Sweep"), "alphas", name)
        E = as_table(need_attr(sweep, "effect", name, "a Sweep"), "effect", name)
        L = as_table(need_attr(sweep, "linear", name, "a Sweep"), "linear", name)
        if E.shape != L.shape or E.shape[0] != alphas.size:
            raise AssertionInputError(f"{name}: alphas {alphas.shape}, effect {E.shape} and "
                                      f"linear {L.shape} must be [n_alpha] and [n_alpha, batch]")
        labels = [f"alpha={a:g}" for a in alphas]
        check_finite(alphas, "the sweep's alphas")
        check_finite(E, "the real effect", labels)
        check_finite(L, "the linear prediction", labels)
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
        check_n("discrete", n, c, s)
        me, ml = E.mean(1), L.mean(1)
        tiny = max(1e-12 * float(np.abs(ml).max()), 1e-300)

        def stat(idx):
            W = resample_weights(idx, n)
            m = W.sum(-1, keepdims=True)
            return alpha_star_of(alphas, W @ E.T / m, W @ L.T / m, t, tiny)

        est = bootstrap(stat, n, alpha=s.alpha, n_boot=s.n_boot, method=s.method, rng=rng,
                        op=c.op, bar=c.bar, discrete=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            dev = np.abs(me - ml) / np.maximum(np.abs(ml), tiny)
        est.details.update({"tol": t, "deviation": dev.tolist(), "alphas": alphas.tolist()})
        plot = {"kind": "alpha_curve", "alphas": alphas.tolist(), "effect": me.tolist(),
                "linear": ml.tolist(), "tol": t, "alpha_star": est.estimate}
        res = make_result(name, c, est, s, plot=plot)
        if not res.passed:
            bad = [f"alpha={a:g} (real {fmt_num(x)}, linear {fmt_num(y)}, deviation {fmt_num(d)})"
                   for a, x, y, d in zip(alphas, me, ml, dev) if a != 0 and d > t][:2]
            res.message = res.summary() + f" (tol={t:g})" + (
                "; first deviations: " + ", ".join(bad) if bad else "")
        return res

    return run_criteria(name, criteria, ("alpha_star",), s, prepare, one)


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
    value = float(to_numpy(need_attr(green, "outside_cone_max", name, "a Green response")))
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
    return finish(name, [res])


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
            check_n("rate", x.size, c, s)
            est = binomial_rate(x, alpha=s.alpha, op=c.op, bar=c.bar)
        else:
            check_n("signflip", x.size, c, s)
            est = mean_test(x, alpha=s.alpha, n_boot=s.n_boot, method=s.method, rng=rng,
                            op=c.op, bar=c.bar)
        res = make_result(assertion, c, est, s, plot=plot)
        res.examples = _examples("mean", {"x": to_numpy(x)}, source)
        if plot is None:
            res.plot = {"kind": "hist", "values": to_numpy(x)[:MAX_PLOT].tolist(), "bar": c.bar,
                        "estimate": est.estimate}
        return res

    return run_criteria(assertion, criteria, valid, s, prepare, one)


def assert_anisotropic(green: Any, *criteria: Criterion, alpha: Optional[float] = None,
                       level: Optional[float] = None, decide: Optional[str] = None,
                       n_boot: Optional[int] = None,
                       method: Optional[str] = None) -> list[ClaimResult]:
    """The response spreads along depth more than across tokens: ``depth_share > 0.7``
    (mean over examples of ``green.depth_share``; sign-flip test).

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    name = "assert_anisotropic"
    s = resolve_settings(alpha, level, decide, n_boot, method)

    def get():
        return check_finite(as_vector(need_attr(green, "depth_share", name, "a Green response"),
                               "depth_share", name), "depth_share")
    return _mean_criteria(name, {"depth_share": get}, criteria, s, plot=_heatmap(green),
                          source=green)


def assert_transfers(transfer: Any, *criteria: Criterion, alpha: Optional[float] = None,
                     level: Optional[float] = None, decide: Optional[str] = None,
                     n_boot: Optional[int] = None,
                     method: Optional[str] = None) -> list[ClaimResult]:
    """A displacement transfers the answer: ``rate > 0.5`` (flip rate, Clopper-Pearson
    interval, exact binomial p-value), ``shift > 1.0`` or ``gap_closed > 0.5`` (means,
    sign-flip test).

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    name = "assert_transfers"
    s = resolve_settings(alpha, level, decide, n_boot, method)

    def getter(attr):
        def get():
            x = as_vector(need_attr(transfer, attr, name, "a Transfer"), attr, name)
            if attr == "flipped":
                x = to_numpy(getattr(transfer, attr), dtype=None).ravel()
                if x.dtype != bool:
                    check_finite(x.astype(float), "flipped")
                    if not np.isin(x, (0, 1)).all():
                        raise AssertionInputError(f"{name}: flipped must be booleans")
                return x.astype(bool)
            return check_finite(x, attr)
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
    per-example ``.circuit``, ``.full``, ``.empty`` (``field.evaluate_circuit(ds, circuit)``).

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    name = "assert_faithful"
    s = resolve_settings(alpha, level, decide, n_boot, method)

    def prepare():
        sizes = getattr(circuit_result, "sizes", None)
        if sizes is not None and hasattr(circuit_result, "fractions"):
            shown = [int(k) for k in np.asarray(sizes).ravel()]
            raise AssertionInputError(
                f"{name} takes one circuit's result (field.evaluate_circuit), got a FaithfulnessCurve over "
                f"{len(shown)} sizes: decide the whole curve with fc.assert_faithfulness_curve(curve, area > 0.5), "
                f"or one size with fc.assert_faithful(curve.at({shown[-1]}), cpr > 0.8) (measured sizes: {shown})")
        if hasattr(circuit_result, "without") and hasattr(circuit_result, "cost"):
            raise AssertionInputError(f"{name} takes one circuit's result (field.evaluate_circuit), got a "
                                      "Minimality: decide it with fc.assert_minimal(m, min_cost > 0.01)")
        if hasattr(circuit_result, "parts") and hasattr(circuit_result, "mask"):
            raise AssertionInputError(f"{name} takes a circuit's result, got the Circuit itself: evaluate it "
                                      "first, fc.assert_faithful(field.evaluate_circuit(ds, circuit), cpr > 0.8)")
        got = {}
        for attr in ("circuit", "full", "empty"):
            got[attr] = check_finite(as_vector(need_attr(circuit_result, attr, name, "a circuit result"),
                                        attr, name), f"the {attr} metric")
        if not got["circuit"].size == got["full"].size == got["empty"].size:
            raise AssertionInputError(f"{name}: circuit, full and empty must have one value "
                                      "per example each")
        return got

    def one(c: Criterion, d, rng) -> ClaimResult:
        n = d["full"].size
        check_n("bootstrap", n, c, s)
        den = d["full"] - d["empty"]
        check_gap(name, c, den, s, "the full - empty gap", "compare the circuit's metric "
                   "directly (assert_prefers) or use an empty baseline that scores lower")
        stat = ratio_stat(d["circuit"] - d["empty"], den, n)
        if c.name == "cmd":
            stat = (lambda r: lambda idx: np.abs(1 - r(idx)))(stat)
        est = bootstrap(stat, n, alpha=s.alpha,
                        n_boot=s.n_boot, method=s.method, rng=rng, op=c.op, bar=c.bar)
        plot = [{"kind": "bars", "labels": ["empty", "circuit", "full"], "ylabel": "mean metric",
                 "title": "mean metric of the empty circuit, the circuit and the full model",
                 "y": [float(d["empty"].mean()), float(d["circuit"].mean()), float(d["full"].mean())]}]
        spec = getattr(circuit_result, "spec", None)
        if spec is not None and hasattr(spec, "plot_data") and len(spec):
            plot.append(spec.plot_data())
            est.details["circuit"] = (f"{len(spec)} {spec.level}s" + (f" ({spec.name})" if spec.name else "")
                                      + f", {getattr(circuit_result, 'ablation', '')} ablation")
        res = make_result(name, c, est, s, plot=plot)
        res.examples = _examples("ratio", {"num": d["circuit"] - d["empty"], "den": den},
                                 circuit_result)
        return res

    return run_criteria(name, criteria, ("cpr", "cmd"), s, prepare, one)


def assert_prefers(values: Any, *criteria: Criterion, alpha: Optional[float] = None,
                   level: Optional[float] = None, decide: Optional[str] = None,
                   n_boot: Optional[int] = None,
                   method: Optional[str] = None) -> list[ClaimResult]:
    """The model prefers the answer: ``rate > 0.9`` (share of examples with logit diff > 0,
    Clopper-Pearson) or ``mean > 2.0`` (mean logit diff, sign-flip test).

    ``values``: per-example logit differences [batch] (array or tensor), or an object with
    ``.logit_diff`` or ``.baseline_clean`` (a PatchResult's clean run).

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``,
    ``n_boot``, ``method``: decision options (module doc). Returns one ClaimResult per criterion;
    ClaimFailed if one fails.
    """
    name = "assert_prefers"
    s = resolve_settings(alpha, level, decide, n_boot, method)

    def raw():
        x = values
        for attr in ("logit_diff", "baseline_clean"):
            if hasattr(x, attr) and not isinstance(x, np.ndarray):
                x = getattr(x, attr)
                break
        return check_finite(as_vector(x, "the logit differences", name), "the logit differences")
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

    ``*criteria``: comparisons of the statistics above with a number. ``alpha``, ``level``, ``decide``:
    decision options (module doc). Returns one ClaimResult per criterion; ClaimFailed if one fails.
    """
    from scipy.stats import norm

    name = "assert_explained"
    s = resolve_settings(alpha, level, decide, None, None)

    def prepare():
        est = float(need_attr(green_slice, "explained", name, "a GreenSlice (field.green_slice)"))
        se = float(getattr(green_slice, "explained_se", 0.0) or 0.0)
        if not (math.isfinite(est) and math.isfinite(se)):
            raise NonFiniteInput("the slice's explained fraction is NaN or inf")
        n = int(getattr(green_slice, "n_probe", 0) or (getattr(green_slice, "cost", {}) or {}).get("n_probe", 0))
        return est, se, n

    def one(c: Criterion, data, rng) -> ClaimResult:
        est, se, n = data
        z = norm.ppf(1 - s.alpha)
        low, high = est - z * se, est + z * se
        if se > 0:
            p = float(norm.sf((est - c.bar) / se)) if c.op in (">", ">=") else float(norm.cdf((est - c.bar) / se))
        else:  # no spread at all: the estimate is the answer (p as small as a float gets, never 0)
            p = 1.0 if not clears(est, c.op, c.bar) else 0.0
        p = min(1.0, max(p, np.finfo(float).tiny))
        e = Estimate(est, low, high, n, "normal (Hutchinson probes)", p, 1 - 2 * s.alpha,
                     {"explained_se": se, "rank": getattr(green_slice, "rank", None)})
        return make_result(name, c, e, s, plot=None)

    return run_criteria(name, criteria, ("explained",), s, prepare, one)
