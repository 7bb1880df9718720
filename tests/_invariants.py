"""Invariants of every public result type, written once (issue 23): ``check_invariants(result, ex)``.

Each checker asserts what the result's docstring promises (shapes named there, finite values where
promised, intervals that contain their estimate, p in (0, 1], labels that match rows, a
``to_dict`` that strict JSON accepts, a non-empty summary) and, given an
:class:`~_fuzz.Exerciser` with hypothesis data, fuzzes the result's own methods through
:func:`_fuzz.call` (``top(k)`` with odd k, ``select`` that keeps nothing, lookups by layer that
does not exist, ...). A result type without a checker fails: a new result class needs one here.
"""
from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Callable

import numpy as np
import torch
from hypothesis import strategies as st

import fieldcheck as fc
import fieldcheck.data.builtin
import fieldcheck.experiments.lens
import fieldcheck.experiments.paths
import fieldcheck.field.core
from _fuzz import Arg, Escaped, Exerciser, bad, ok, value
from fieldcheck.experiments.attention import AttentionResult, HeadScores
from fieldcheck.experiments.circuits import CircuitResult, FaithfulnessCurve, Minimality
from fieldcheck.experiments.discovery import EdgeScores
from fieldcheck.experiments.feature_circuits import FeatureCircuitResult, NodeScores
from fieldcheck.experiments.feature_views import FeatureDLA, Selectivity, TopExamples
from fieldcheck.experiments.features import FeatureActivations
from fieldcheck.experiments.green import GreenResult, GreenSlice, LinearVsReal, Propagation
from fieldcheck.experiments.lens import DirectAttribution, LogitLens
from fieldcheck.experiments.response import LinearRegime, Selection, Sensitivity, Sweep
from fieldcheck.experiments.transfer import TransferResult

INVARIANTS: dict[type, Callable[[Any, Exerciser], None]] = {}


def invariant(*types: type):
    def deco(fn):
        for t in types:
            INVARIANTS[t] = fn
        return fn
    return deco


def check_invariants(obj: Any, ex: Exerciser | None = None) -> None:
    """Assert the invariants of ``obj`` (a result, a list or dict of them, a plain value)."""
    ex = ex or Exerciser()
    if obj is None or isinstance(obj, (str, int, float, bool, np.ndarray, torch.Tensor, pathlib.PurePath)):
        return
    if type(obj).__module__.startswith("matplotlib"):  # a picture (Figure, Axes): drawn without error
        return
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj) and all(type(v) in INVARIANTS for v in obj.values()):
        for v in obj.values():
            check_invariants(v, ex)
        return
    if isinstance(obj, (list, tuple)) and all(type(v) in INVARIANTS for v in obj):
        for v in obj:
            check_invariants(v, ex)
        return
    for klass in type(obj).__mro__:
        if klass in INVARIANTS:
            try:
                INVARIANTS[klass](obj, ex)
            except Escaped:
                raise
            except AssertionError as e:
                raise Escaped(f"{type(obj).__name__} breaks its invariants: {e}") from e
            except Exception as e:  # noqa: BLE001
                raise Escaped(f"{type(obj).__name__}: reading the result raised {type(e).__name__}: {e}") from e
            return
    if isinstance(obj, (list, tuple, dict)):
        return
    raise Escaped(f"no invariants registered for {type(obj).__name__}: add a checker to tests/_invariants.py")


# --- shared checks --------------------------------------------------------------------------


def arr(x: Any) -> np.ndarray:
    return fc.jsonable.to_numpy(x)


def shape(x: Any, want: tuple, what: str) -> np.ndarray:
    a = arr(x)
    assert a.shape == tuple(want), f"{what} has shape {a.shape}, promised {tuple(want)}"
    return a


def finite(x: Any, what: str) -> np.ndarray:
    a = arr(x)
    assert np.isfinite(a).all(), f"{what} has {int((~np.isfinite(a)).sum())} NaN/inf values (promised finite)"
    return a


def strict_json(d: Any, what: str) -> None:
    try:
        json.dumps(d, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise AssertionError(f"{what}.to_dict() is not strict JSON: {e}") from None


def text(obj: Any, *methods: str) -> None:
    for m in methods:
        s = getattr(obj, m)() if m != "repr" else repr(obj)
        assert isinstance(s, str) and s.strip(), f"{type(obj).__name__}.{m}() is empty"


def plots(obj: Any, ex: Exerciser, *calls: Callable[[], Any]) -> None:
    """Draw the pictures (only for the examples that drew ``plots``) and close them."""
    if not ex.plots:
        return
    from fieldcheck.display import pyplot

    plt = pyplot()
    try:
        for c in calls:
            ex.call(c)
        html = getattr(obj, "_repr_html_", None)
        if html is not None:
            assert isinstance(html(), str)
    finally:
        plt.close("all")


def ks() -> st.SearchStrategy[Arg]:
    """k of a ``top(k)``: 0..large are fine (at most k rows); negative and non-integers are refused."""
    return st.one_of(ok(st.integers(0, 40)), bad(st.sampled_from([-1, -5, 1.5, "3", None]), "k"))


def layer_lookup(n_rows: int) -> st.SearchStrategy[Arg]:
    """A layer for a lookup by layer of a result with ``n_rows`` layers 0..n_rows-1 (-1 the last)."""
    return st.one_of(ok(st.integers(-n_rows, n_rows - 1)),
                     st.integers(n_rows, n_rows + 40).map(lambda l: Arg(l, ("layer", str(l)))),
                     st.integers(-n_rows - 10, -n_rows - 1).map(lambda l: Arg(l, ("layer", str(l)))),
                     bad(st.sampled_from([1.5, "3", None, True]), "layer"))


def check_metric_range(values: np.ndarray, metric: str, what: str) -> None:
    if metric == "prob":
        assert ((values >= -1e-6) & (values <= 1 + 1e-6)).all(), f"{what}: prob outside [0, 1]"
    elif metric == "logprob":
        assert (values <= 1e-5).all(), f"{what}: logprob > 0"
    elif metric == "kl":
        assert (values >= -1e-4).all(), f"{what}: KL < 0"


# --- patch results ----------------------------------------------------------------------------


@invariant(fc.PatchResult)
def _patch(r: fc.PatchResult, ex: Exerciser) -> None:
    S, B = r.values.shape
    assert B >= 1, "no examples"
    assert (S == 1) if r.jointly else (S == len(r.sites)), f"{S} rows for {len(r.sites)} sites (jointly={r.jointly})"
    assert len(r.labels) == S and r.n == B
    finite(r.values, "values")
    shape(r.baseline_clean, (B,), "baseline_clean")
    finite(r.baseline_clean, "baseline_clean")
    finite(r.baseline_corrupt, "baseline_corrupt")
    target = r.baseline_clean if r.direction == "noise" else r.baseline_corrupt
    np.testing.assert_array_equal(arr(r.baseline_target), arr(target))
    finite(r.effect, "effect")
    shape(r.mean_effect, (S,), "mean_effect")
    gap = r.baseline_clean - r.baseline_corrupt
    norm = r.normalized
    assert np.isfinite(norm[:, gap != 0]).all(), "normalized is not finite where the clean-corrupt gap is not 0"
    if r.skipped is not None:
        assert r.skipped.shape == (S, B) and r.skipped.dtype == bool
    if r.method == "patch":
        check_metric_range(r.values, r.metric, "values")
    assert r.direction in ("denoise", "noise")
    d = r.to_dict()
    strict_json(d, "PatchResult")
    assert np.asarray(d["values"]).shape == (S, B)
    text(r, "summary", "repr")
    if ex.deep:
        k = ex.draw(ks(), Arg(3))
        top = ex.call(r.top, k)
        if isinstance(top, list):
            assert len(top) == min(k.value, S) and all(lab in r.labels for lab, _ in top)
        ex.call(r.grid, ex.draw(st.one_of(ok(st.sampled_from(["effect", "normalized", "values"])),
                                          bad(st.sampled_from(["recovered", "", None]), "stat")), Arg("effect")))
        if not r.jointly:
            keep = ex.draw(_keeps(r), None)
            if keep is not None:
                ex.call(r.select, keep)
        else:
            ex.call(r.select, Arg(lambda s: True, ("joint",)))
        if ex.plots:
            frame = r.to_dataframe()
            assert len(frame) == S * B
        plots(r, ex, lambda: r.heatmap(ex.draw(st.sampled_from(["normalized", "effect", "values"]), "normalized")))


def _keeps(r: fc.PatchResult) -> st.SearchStrategy[Arg]:
    layers = sorted({s.layer for s in r.sites})
    return st.one_of(
        ok(st.sampled_from(layers).map(lambda l: (lambda s: s.layer == l))),
        ok(st.just(lambda s: True)),
        # keeps no site: the call must say so (and name the layers the result has)
        st.just(Arg(lambda s: s.layer > 90, ("select", "no site"))),
        bad(st.sampled_from([None, 3, "L0"]), "keep"),
    )


@invariant(fc.ContrastiveSet)
def _contrastive(ds: fc.ContrastiveSet, ex: Exerciser) -> None:
    n, T = ds.n, ds.seq_len
    assert n >= 1 and T >= 1
    shape(ds.clean_tokens, (n, T), "clean_tokens")
    shape(ds.corrupt_tokens, (n, T), "corrupt_tokens")
    assert len(ds) == n and len(ds.clean_prompts) == n and len(ds.answer_strs) == n
    assert "END" in ds.position_names
    for name in ds.position_names:
        p = ds.position(name)
        assert p.shape == (n,) and bool(((p >= 0) & (p < T)).all()), f"position {name} out of 0..{T - 1}"
    strict_json(ds.to_dict(), "ContrastiveSet")
    assert len(ds.to_records()) == n
    assert isinstance(ds.content_hash(), str) and ds == ds
    text(ds, "summary", "repr")
    if ex.deep:
        ex.call(ds.take, ex.draw(st.one_of(ok(st.integers(1, n)),
                                           st.integers(n + 1, n + 5).map(lambda k: Arg(k, ("only", str(n)))),
                                           bad(st.sampled_from([0, -1, 1.5, None]), "take")), Arg(1)))
        ex.call(ds.sample, ex.draw(st.one_of(ok(st.integers(1, n)),
                                             st.integers(n + 1, n + 5).map(lambda k: Arg(k, ("only", str(n)))),
                                             bad(st.sampled_from([0, -3, "2"]), "sample")), Arg(1)),
                seed=ex.draw(st.one_of(ok(st.integers(0, 99)), bad(st.sampled_from([-1, "x", 1.5]), "seed")), Arg(0)))
        ex.call(ds.subset, ex.draw(st.one_of(ok(st.lists(st.integers(-n, n - 1), min_size=1, max_size=4)),
                                             st.lists(st.integers(n, n + 9), min_size=1, max_size=2).map(
                                                 lambda i: Arg(i, ("index", "out of range", str(i[0])))),
                                             bad(st.sampled_from([[], "a", None, [1.5]]), "index")), Arg([0])))
        ex.call(ds.position, ex.draw(st.one_of(ok(st.sampled_from(ds.position_names)), ok(st.integers(-T, T - 1)),
                                               st.integers(T, T + 9).map(lambda p: Arg(p, ("position", str(p)))),
                                               bad(st.sampled_from(["X9", None, 1.5]), "position")), Arg("END")))
        ex.call(ds.swapped)
        moved = ex.call(ds.to, ex.draw(st.one_of(ok(st.sampled_from(["cpu", torch.device("cpu")])),
                                                 bad(st.sampled_from(["gpu9", "nowhere"]), "device")), Arg("cpu")))
        if isinstance(moved, fc.ContrastiveSet):
            assert moved == ds
        if ex.plots:  # a file round trip (to_jsonl then from_jsonl) for some examples
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                path = f"{tmp}/set.jsonl"
                ex.call(ds.to_jsonl, path)
                ex.call(ds.to_jsonl, Arg(f"{tmp}/no/such/folder/x.jsonl", ("folder", "directory", "path", "write")))


# --- response, Green functions, transfer ----------------------------------------------------------


@invariant(Sensitivity)
def _sensitivity(r, ex: Exerciser) -> None:
    L1, B, T, D = r.resid.shape
    shape(r.resid_mid, (L1 - 1, B, T, D), "resid_mid")
    shape(r.attn_out, (L1 - 1, B, T, D), "attn_out")
    shape(r.mlp_out, (L1 - 1, B, T, D), "mlp_out")
    assert r.z.shape[:3] == (L1 - 1, B, T)
    for name in ("resid", "resid_mid", "attn_out", "mlp_out", "z", "metric_value"):
        finite(getattr(r, name), name)
    shape(r.metric_value, (B,), "metric_value")
    shape(r.norm(), (L1, T), "norm()")
    strict_json(r.to_dict(), "Sensitivity")
    text(r, "repr")
    if ex.deep:
        from fieldcheck.sites import Site

        kind = ex.draw(st.sampled_from(["resid_pre", "resid_post", "resid_mid", "attn_out", "mlp_out", "attn_head"]),
                       "resid_pre")
        top = L1 if kind == "resid_pre" else L1 - 1
        layer = ex.draw(st.one_of(ok(st.integers(0, top - 1)), st.integers(top, top + 30).map(
            lambda l: Arg(l, ("layer", str(l))))), Arg(0))
        head = 0 if kind == "attn_head" else None
        out = ex.call(r.at, Arg(Site(kind, layer.value, 0, head), layer.bad), torch.zeros(B, dtype=torch.long))
        if isinstance(out, torch.Tensor):
            assert out.shape[0] == B
        plots(r, ex, r.heatmap)


@invariant(Sweep)
def _sweep(r, ex: Exerciser) -> None:
    A = len(r.alphas)
    B = r.n
    for name in ("values", "effect", "linear"):
        shape(getattr(r, name), (A, B), name)
        finite(getattr(r, name), name)
    shape(r.baseline, (B,), "baseline")
    shape(r.deviation(), (A,), "deviation()")
    strict_json(r.to_dict(), "Sweep")
    text(r, "repr")
    if ex.deep:
        tol = ex.draw(st.one_of(ok(st.floats(1e-3, 10)), bad(st.sampled_from([0.0, -1.0, float("nan"), "x"]), "tol")),
                      Arg(0.1))
        n_boot = ex.draw(st.one_of(ok(st.integers(1, 50)), bad(st.sampled_from([0, -5, 2.5]), "n_boot")), Arg(20))
        level = ex.draw(st.one_of(ok(st.floats(0.5, 0.99)), bad(st.sampled_from([0.0, 1.0, 1.5, float("nan")]),
                                                                "level")), Arg(0.9))
        ex.call(r.linear_regime, tol, n_boot=n_boot, seed=Arg(0), level=level)
        plots(r, ex, r.plot)


@invariant(LinearRegime)
def _linear_regime(r, ex: Exerciser) -> None:
    lo, hi = r.interval
    assert lo <= hi, f"interval {r.interval} is reversed"
    assert math.isfinite(r.alpha_star)
    assert 0 < r.level < 1 and r.n >= 1
    strict_json(r.to_dict(), "LinearRegime")
    text(r, "repr")


@invariant(Selection)
def _selection(r, ex: Exerciser) -> None:
    k = len(r.sites)
    assert k >= 1
    B = r.real.n
    shape(r.predicted, (B,), "predicted")
    finite(r.predicted, "predicted")
    assert r.real.jointly and r.real.values.shape == (1, B)
    assert r.recall is None or 0 <= r.recall <= 1
    if float(np.sum(arr(r.gap))) != 0:
        assert math.isfinite(r.predicted_recovered) and math.isfinite(r.real_recovered)
    assert [lab for lab, _ in r.ranking[:k]] == [s.label for s in r.sites] or len(r.ranking) >= k
    strict_json(r.to_dict(), "Selection")
    text(r, "repr")
    check_invariants(r.real, Exerciser(None))
    plots(r, ex, r.plot)


@invariant(GreenResult)
def _green(r, ex: Exerciser) -> None:
    B, L1, T, D = r.response.shape
    shape(r.response_norm, (B, L1, T), "response_norm")
    finite(r.response, "response")
    shape(r.depth_share, (B,), "depth_share")
    assert math.isfinite(r.outside_cone_max) and r.outside_cone_max >= 0
    shape(r.spread, (B, L1), "spread")
    shape(r.mean_norm, (L1, T), "mean_norm")
    assert r.n == B
    shape(r.spread_mean, (L1,), "spread_mean")
    if r.metric_response is not None:
        shape(r.metric_response, (B,), "metric_response")
        finite(r.metric_response, "metric_response")
    strict_json(r.to_dict(), "GreenResult")
    text(r, "summary", "repr")
    if ex.deep:
        out = ex.call(r.at, ex.draw(layer_lookup(L1), Arg(-1)),
                      ex.draw(st.one_of(ok(st.sampled_from([None, "END", 0])),
                                        st.integers(T, T + 9).map(lambda p: Arg(p, ("position", str(p))))), Arg(None)))
        if isinstance(out, torch.Tensor):
            assert out.shape == (B, D)
        if ex.plots:  # linear_vs_real runs one propagation per alpha
            ex.call(r.linear_vs_real, ex.draw(st.one_of(
                ok(st.lists(st.floats(-2, 2), min_size=1, max_size=3)),
                bad(st.sampled_from([[float("nan")], [], "x"]), "alpha")), Arg([0.1])))
        plots(r, ex, r.plot)


@invariant(Propagation)
def _propagation(r, ex: Exerciser) -> None:
    B, L1, T, D = r.response.shape
    shape(r.response_norm, (B, L1, T), "response_norm")
    finite(r.response, "response")
    assert math.isfinite(r.outside_cone_max) and r.outside_cone_max >= 0
    assert r.n == B
    shape(r.mean_norm, (L1, T), "mean_norm")
    strict_json(r.to_dict(), "Propagation")
    text(r, "summary", "repr")
    plots(r, ex, r.plot)


@invariant(LinearVsReal)
def _linear_vs_real(r, ex: Exerciser) -> None:
    A = len(r.alphas)
    assert r.rel_error.shape[0] == A and np.isfinite(r.rel_error).all() and (r.rel_error >= 0).all()
    shape(r.mean_rel_error, (A,), "mean_rel_error")
    strict_json(r.to_dict(), "LinearVsReal")
    text(r, "summary")
    plots(r, ex, r.plot)


@invariant(GreenSlice)
def _green_slice(r, ex: Exerciser) -> None:
    D, k = r.U.shape
    shape(r.S, (k,), "S")
    shape(r.V, (D, k), "V")
    finite(r.S, "S")
    assert (arr(r.S) >= -1e-6).all(), "singular values < 0"
    assert (np.diff(arr(r.S)) <= 1e-5 * max(1.0, float(arr(r.S).max(initial=0)))).all(), "S not descending"
    assert math.isfinite(r.explained) and -1e-6 <= r.explained <= 1 + 1e-6, f"explained {r.explained}"
    assert math.isfinite(r.explained_se) and r.explained_se >= 0
    shape(r.matrix(), (D, D), "matrix()")
    strict_json(r.to_dict(), "GreenSlice")
    text(r, "summary", "repr")
    if ex.deep:
        out = ex.call(r.predict, ex.draw(st.one_of(ok(st.sampled_from([torch.ones(D), torch.ones(3, D)])),
                                                   bad(st.sampled_from([torch.ones(D + 1), torch.ones(2, 2, D + 2)]),
                                                       "delta")), Arg(torch.ones(D))))
        if isinstance(out, torch.Tensor):
            assert out.shape[-1] == D
        if ex.plots:
            ex.call(r.check)
        plots(r, ex, r.plot)


@invariant(TransferResult)
def _transfer(r, ex: Exerciser) -> None:
    B = r.n
    assert B >= 1
    for name in ("before", "after", "clean", "ld_before", "ld_after", "shift", "gap"):
        shape(getattr(r, name), (B,), name)
        finite(getattr(r, name), name)
    assert r.displacement_norm.ndim == 1 and (finite(r.displacement_norm, "displacement_norm") >= 0).all()
    gc = r.gap_closed
    assert np.isfinite(gc[r.gap != 0]).all(), "gap_closed not finite where the gap is not 0"
    assert r.flipped.dtype == bool and r.eligible.dtype == bool
    assert 0 <= r.rate <= 1
    lo, hi = r.rate_ci
    assert 0 <= lo <= r.rate <= hi <= 1, f"rate {r.rate} outside its interval {r.rate_ci}"
    if r.eligible.any():
        lo, hi = r.rate_eligible_ci
        assert 0 <= lo <= r.rate_eligible <= hi <= 1
    strict_json(r.to_dict(), "TransferResult")
    text(r, "summary", "repr")
    plots(r, ex, r.plot)


# --- attention, DLA, lens ----------------------------------------------------------------------


@invariant(AttentionResult)
def _attention(r, ex: Exerciser) -> None:
    H, B = r.weights.shape
    assert len(r.heads) == H == len(r.labels) and B == r.n >= 1
    w = finite(r.weights, "weights")
    assert ((w >= -1e-6) & (w <= 1 + 1e-6)).all(), "attention weights outside [0, 1]"
    shape(r.mean, (H,), "mean")
    if r.n_layers and r.n_heads:
        shape(r.grid(), (r.n_layers, r.n_heads), "grid()")
    strict_json(r.to_dict(), "AttentionResult")
    strict_json(fc.jsonable.jsonable(r.plot_data()), "AttentionResult.plot_data")
    text(r, "repr")
    if ex.deep:
        k = ex.draw(ks(), Arg(2))
        top = ex.call(r.top, k)
        if isinstance(top, list):
            assert len(top) == min(k.value, H)
        L, Hn = (r.n_layers or 1), (r.n_heads or 1)
        ex.call(r.select, ex.draw(st.one_of(
            ok(st.sampled_from(r.heads).map(lambda h: [h])),
            st.integers(L, L + 20).map(lambda l: Arg([(l, 0)], ("L" + str(l), "layer"))),
            st.integers(Hn, Hn + 9).map(lambda h: Arg([(0, h)], ("H" + str(h), "head"))),
            bad(st.sampled_from([[], None, "L0.H0x", 3.5]), "head")), Arg([r.heads[0]])))
        plots(r, ex, r.heatmap, lambda: r.plot() if r.patterns is not None else None)


@invariant(HeadScores)
def _head_scores(r, ex: Exerciser) -> None:
    L, H = r.n_layers, r.n_heads
    for kind, s in r.scores.items():
        assert s.shape[:2] == (L, H), f"scores[{kind}] shape {s.shape}"
        finite(s, f"scores[{kind}]")
        assert ((s >= -1e-6) & (s <= 1 + 1e-6)).all(), f"scores[{kind}] outside [0, 1]"
    strict_json(r.to_dict(), "HeadScores")
    text(r, "repr")
    if ex.deep:
        kinds = list(r.scores)
        kind = ex.draw(st.one_of(ok(st.sampled_from(kinds)), bad(st.sampled_from(["copying", "", None]), "kind")),
                       Arg(kinds[0]))
        m = ex.call(r.mean, kind)
        if isinstance(m, np.ndarray):
            assert m.shape == (L, H)
        ex.call(r.top, kind, ex.draw(ks(), Arg(2)))
        ex.call(r.of, kind, ex.draw(st.one_of(ok(st.just("all")), ok(st.just([(0, 0)])),
                                              st.integers(L, L + 9).map(lambda l: Arg([(l, 0)], ("layer", str(l))))),
                                    Arg("all")))
        ex.call(r.plot_data, kind)
        plots(r, ex, lambda: r.heatmap(kind.value if not kind.bad else kinds[0]),
              lambda: r.plot(kind.value if not kind.bad else kinds[0]))


@invariant(DirectAttribution)
def _dla(r, ex: Exerciser) -> None:
    C, B = r.values.shape
    assert len(r.labels) == C and r.n == B >= 1
    finite(r.values, "values")
    shape(r.total, (B,), "total")
    finite(r.total, "total")
    shape(r.mean, (C,), "mean")
    if r.total.sum() != 0:
        assert math.isfinite(r.share)
    shape(r.head_grid(), (r.n_layers, r.n_heads), "head_grid()")
    strict_json(r.to_dict(), "DirectAttribution")
    strict_json(fc.jsonable.jsonable(r.plot_data()), "DirectAttribution.plot_data")
    text(r, "repr")
    if ex.deep:
        k = ex.draw(ks(), Arg(3))
        top = ex.call(r.top, k, by=ex.draw(st.one_of(ok(st.sampled_from(["abs", "value"])),
                                                       bad(st.sampled_from(["signed", None]), "by")), Arg("abs")))
        if isinstance(top, list):
            assert len(top) == min(k.value, C)
        ex.call(r.select, ex.draw(st.one_of(
            ok(st.sampled_from(r.labels).map(lambda x: [x])),
            st.integers(r.n_layers, r.n_layers + 30).map(lambda l: Arg([f"L{l}.H0"], (f"L{l}.H0",))),
            bad(st.sampled_from([[], ["mlp"], None]), "component")), Arg([r.labels[0]])))
        plots(r, ex, r.heatmap, r.plot)


@invariant(LogitLens)
def _lens(r, ex: Exerciser) -> None:
    L1, B = r.logit_diff.shape
    assert r.n_layers == L1 - 1 and r.n == B >= 1
    for name in ("logit_diff", "rank", "wrong_rank", "prob"):
        shape(getattr(r, name), (L1, B), name)
        finite(getattr(r, name), name)
    assert (r.rank >= 0).all() and ((r.prob >= 0) & (r.prob <= 1 + 1e-6)).all()
    fl = r.first_layer()
    assert fl.shape == (B,) and ((fl >= 0) & (fl <= L1)).all()
    strict_json(r.to_dict(), "LogitLens")
    strict_json(fc.jsonable.jsonable(r.plot_data()), "LogitLens.plot_data")
    text(r, "repr")
    if ex.deep:
        ex.call(r.leads, ex.draw(st.one_of(ok(st.sampled_from(["wrong", "top1"])),
                                           bad(st.sampled_from(["top2", None]), "leads")), Arg("wrong")))
        lookup = getattr(r, "at", None)
        if lookup is not None:
            out = ex.call(lookup, ex.draw(layer_lookup(L1), Arg(0)))
            if out is not None and not isinstance(out, Exception):
                assert arr(out.logit_diff).shape == (B,)
        plots(r, ex, r.heatmap, r.plot)


# --- circuits ---------------------------------------------------------------------------------


def _metrics_1d(r, names=("circuit", "full", "empty")) -> int:
    B = r.full.size
    for name in names:
        shape(getattr(r, name), (B,), name)
        finite(getattr(r, name), name)
    return B


@invariant(CircuitResult)
def _circuit_result(r, ex: Exerciser) -> None:
    _metrics_1d(r)
    if np.sum(r.full - r.empty) != 0:
        assert math.isfinite(r.cpr) and math.isclose(r.cmd, abs(1 - r.cpr))
    assert 0 <= r.n_edges <= max(r.n_edges_total, r.n_edges) and r.n == r.full.size
    pd = r.plot_data()
    assert pd is None or isinstance(pd, dict)
    strict_json(fc.jsonable.jsonable(pd), "CircuitResult.plot_data")
    strict_json(r.to_dict(), "CircuitResult")
    text(r, "summary", "repr")
    check_invariants(r.spec, Exerciser())
    plots(r, ex, r.plot)


@invariant(FaithfulnessCurve)
def _curve(r, ex: Exerciser) -> None:
    K = len(r.sizes)
    B = r.full.size
    shape(r.fractions, (K,), "fractions")
    shape(r.circuit, (K, B), "circuit")
    finite(r.circuit, "circuit")
    shape(r.faithfulness, (K,), "faithfulness")
    assert ((r.fractions > 0) & (r.fractions <= 1 + 1e-9)).all() and r.n == B
    strict_json(fc.jsonable.jsonable(r.plot_data()), "FaithfulnessCurve.plot_data")
    if np.sum(r.full - r.empty) != 0:
        assert math.isfinite(r.area) and math.isfinite(r.cmd_area)
    strict_json(r.to_dict(), "FaithfulnessCurve")
    text(r, "summary", "repr")
    if ex.deep:
        sizes = [int(s) for s in r.sizes]
        ex.call(r.at, ex.draw(st.one_of(ok(st.sampled_from(sizes)),
                                        st.integers(max(sizes) + 1, max(sizes) + 50).map(
                                            lambda s: Arg(s, ("size", str(s)))),
                                        bad(st.sampled_from([None, "1", -1]), "size")), Arg(sizes[0])))
        ex.call(r.smallest, ex.draw(st.one_of(ok(st.floats(-1, 2)), bad(st.sampled_from([float("nan"), "x"]), "bar")),
                                    Arg(0.8)))
        plots(r, ex, r.plot)


@invariant(Minimality)
def _minimality(r, ex: Exerciser) -> None:
    B = _metrics_1d(r)
    P = len(r.parts)
    shape(r.without, (P, B), "without")
    finite(r.without, "without")
    shape(r.cost, (P,), "cost")
    assert r.n == B
    strict_json(r.to_dict(), "Minimality")
    text(r, "summary", "repr")


@invariant(EdgeScores)
def _edge_scores(r, ex: Exerciser) -> None:
    finite(r.scores, "scores")
    assert r.scores.shape == r.graph.adjacency.shape
    assert (r.scores[~r.graph.adjacency] == 0).all(), "a score where there is no edge"
    shape(r.node_scores, (r.scores.shape[0],), "node_scores")
    strict_json(r.to_dict(), "EdgeScores")
    text(r, "summary", "repr")
    if ex.deep:
        level = ex.draw(st.one_of(ok(st.sampled_from(["edge", "node"])), bad(st.sampled_from(["head", None]), "level")),
                        Arg("edge"))
        ranked = ex.call(r.ranking, level)
        n = len(ranked) if isinstance(ranked, list) else 1
        ex.call(r.top, ex.draw(st.one_of(ok(st.integers(1, n)), st.integers(n + 1, n + 30).map(lambda k: Arg(k, ("k",))),
                                         bad(st.sampled_from([0, -2, 1.5, None]), "k")), Arg(1)), level)
        k = ex.draw(st.one_of(ok(st.integers(1, n)), bad(st.sampled_from([0, -2, n + 1, 1.5, None, True]), "k")), Arg(1))
        by = ex.draw(st.sampled_from(["abs", "signed"]), "abs")
        mask = ex.call(r.top_mask, k, level, by)
        if isinstance(mask, np.ndarray):  # the mask of top(k): from indices, the same edges as from labels
            assert mask.dtype == bool and mask.shape == r.graph.adjacency.shape
            assert not (mask & ~r.graph.adjacency).any(), "top_mask keeps a pair that is not an edge"
            assert (mask == r.top(value(k), value(level), by).mask(r.graph)).all(), "top_mask is not top(k).mask"
        everything = fc.Circuit.all_edges(r.graph)
        assert everything.mask(r.graph).sum() == r.graph.adjacency.sum()
        labels = [lab for lab, _ in r.ranking("edge")[:5]]
        ex.call(r.edge, ex.draw(st.one_of(ok(st.sampled_from(labels)),
                                          bad(st.sampled_from(["L99.H0->logits", "input->input", "nonsense", 3]),
                                              "edge", "sender", "receiver")), Arg(labels[0])))


@invariant(fc.Circuit)
def _circuit(c: fc.Circuit, ex: Exerciser) -> None:
    assert c.level in ("edge", "node")
    assert len(c) == len(c.parts) and len(set(c.parts)) == len(c.parts)
    assert c.scores is None or len(c.scores) == len(c.parts)
    assert all(p in c for p in c.parts)
    assert isinstance(c.nodes, tuple) and isinstance(c.edges, tuple)
    strict_json(c.to_dict(), "Circuit")
    strict_json(fc.jsonable.jsonable(c.plot_data()), "Circuit.plot_data")
    assert c.positional == (c.level == "node" and any("@" in p for p in c.parts))
    blank = fc.Circuit.placeholder(c.level, c.name)
    assert len(blank) == 0 and blank.level == c.level
    if c.parts:  # the unparsed constructor keeps the parts, scores and name it is given
        same = fc.Circuit.from_graph_labels(c.level, c.parts, c.scores, name=c.name)
        assert (same.level, same.parts, same.scores, same.name) == (c.level, c.parts, c.scores, c.name)
    if ex.deep:
        ex.call(fc.Circuit.from_graph_labels, ex.draw(st.one_of(ok(st.just(c.level)), bad(st.sampled_from(["head", None, ""]), "level")),
                                                      Arg(c.level)),
                ex.draw(st.one_of(ok(st.just(list(c.parts))), bad(st.just([]), "part")) if c.parts else bad(st.just([]), "part"),
                        Arg(list(c.parts), () if c.parts else ("part",))))
    text(c, "repr")
    if ex.deep and c.parts:
        only = ("no part",) if len(c.parts) == 1 else ()   # a circuit is never empty
        ex.call(c.without, ex.draw(st.one_of(st.sampled_from(list(c.parts)).map(lambda p: Arg(p, only)),
                                             bad(st.sampled_from(["L99.H9", ""]), "part", "unknown", "edge", "node")), Arg(c.parts[0], only)))


# --- dictionary features -------------------------------------------------------------------------


@invariant(FeatureActivations)
def _feature_activations(r, ex: Exerciser) -> None:
    B, T, K = r.values.shape
    assert B >= 1 and K == len(r.latents) >= 1 and len(r.tokens) == B and all(len(t) == T for t in r.tokens)
    finite(r.values, "values")
    shape(r.max(), (B, K), "max()")
    strict_json(r.to_dict(), "FeatureActivations")
    text(r, "summary", "repr")
    if ex.deep:
        names = sorted(r.positions)
        out = ex.call(r.at, ex.draw(st.one_of(ok(st.sampled_from(names)), ok(st.integers(-T, T - 1)),
                                              st.integers(T, T + 20).map(lambda p: Arg(p, ("position", str(p)))),
                                              bad(st.sampled_from(["NOPE", None, 1.5]), "position")), Arg("END")))
        if isinstance(out, np.ndarray):
            assert out.shape == (B, K)
        plots(r, ex, lambda: r.heatmap(ex.draw(st.integers(0, B - 1), 0)))


@invariant(NodeScores)
def _node_scores(r, ex: Exerciser) -> None:
    N, B = r.scores.shape
    assert len(r.nodes) == N >= 1 and B >= 1
    finite(r.scores, "scores")
    shape(r.mean, (N,), "mean")
    strict_json(r.to_dict(), "NodeScores")
    text(r, "summary", "repr")
    if ex.deep:
        k = ex.draw(ks(), Arg(3))
        top = ex.call(r.top, k)
        if isinstance(top, list):
            assert len(top) == min(k.value, N)


@invariant(FeatureCircuitResult)
def _feature_circuit(r, ex: Exerciser) -> None:
    B = _metrics_1d(r, ("circuit", "complement", "full", "empty"))
    assert r.n == B >= 1 and len(r.nodes) <= max(r.n_nodes_total, len(r.nodes))
    if float(np.sum(r.full - r.empty)) != 0:
        assert math.isfinite(r.faithfulness) and math.isfinite(r.completeness) and r.cpr == r.faithfulness
    strict_json(r.to_dict(), "FeatureCircuitResult")
    text(r, "summary", "repr")
    if r.scores is not None:
        check_invariants(r.scores, Exerciser())
    plots(r, ex, r.plot)


@invariant(Selectivity)
def _selectivity(r, ex: Exerciser) -> None:
    assert r.on.ndim == 1 and r.off.ndim == 1 and r.on.size >= 1 and r.off.size >= 1
    finite(r.on, "on")
    finite(r.off, "off")
    for name in ("rate_on", "rate_off", "auroc"):
        v = getattr(r, name)
        assert 0 <= v <= 1, f"{name} = {v} outside [0, 1]"
    assert isinstance(r.dataset_hash, str)
    strict_json(r.to_dict(), "Selectivity")
    text(r, "summary", "repr")
    plots(r, ex, r.plot)


@invariant(TopExamples)
def _top_examples(r, ex: Exerciser) -> None:
    assert r.n_texts >= 1 and r.examples
    for lat, rows in r.examples.items():
        acts = [a for a, *_ in rows]
        assert acts == sorted(acts, reverse=True), f"F{lat}: rows not strongest first"
        assert all(0 <= i < r.n_texts and "[[" in ctx for _, i, _, ctx in rows), f"F{lat}: {rows[:2]}"
    strict_json(r.to_dict(), "TopExamples")
    text(r, "summary", "repr")
    plots(r, ex, r.plot)


@invariant(FeatureDLA)
def _feature_dla(r, ex: Exerciser) -> None:
    K, B = r.values.shape
    assert K == len(r.latents) >= 1 and B >= 1
    finite(r.values, "values")
    shape(r.mean, (K,), "mean")
    assert set(r.promoted) <= set(r.latents) and set(r.suppressed) <= set(r.latents)
    strict_json(r.to_dict(), "FeatureDLA")
    text(r, "summary", "repr")
    if ex.deep:
        k = ex.draw(ks(), Arg(3))
        top = ex.call(r.top, k)
        if isinstance(top, list):
            assert len(top) == min(k.value, K)
    plots(r, ex, r.plot)


@invariant(fc.sites.FeatureSiteSet)
def _feature_site_set(s, ex: Exerciser) -> None:
    assert s.dictionaries and isinstance(repr(s), str)


def _dictionary(d, ex: Exerciser) -> None:
    assert d.W_enc.shape == (d.d_in, d.d_sae) and d.d_sae >= 1
    assert torch.isfinite(d.W_enc).all() and torch.isfinite(d.W_dec).all()
    assert isinstance(d.name, str) and d.name


def _quality(q, ex: Exerciser) -> None:
    assert math.isfinite(q.explained_variance) and q.explained_variance <= 1 + 1e-9
    assert 0 <= q.dead_fraction <= 1 and q.l0 >= 0 and q.n_tokens >= 1
    assert q.loss_recovered is None or math.isfinite(q.loss_recovered)
    strict_json(q.to_dict(), "Quality")


def _register_sae() -> None:
    from fieldcheck.sae.dictionary import Dictionary
    from fieldcheck.sae.quality import Quality

    INVARIANTS[Dictionary] = _dictionary
    INVARIANTS[Quality] = _quality


_register_sae()


# --- claims ------------------------------------------------------------------------------------


@invariant(fc.ClaimResult)
def _claim_result(r: fc.ClaimResult, ex: Exerciser) -> None:
    assert isinstance(r.passed, bool)
    assert r.op in (">", ">=", "<", "<=") and math.isfinite(r.bar)
    assert isinstance(r.n, int) and r.n >= 0
    if not math.isfinite(r.estimate):
        assert not r.passed, "a non-finite estimate passed"
    if r.interval is not None:
        lo, hi = r.interval
        if math.isfinite(lo) and math.isfinite(hi):
            assert lo <= hi, f"interval {r.interval} is reversed"
        if math.isfinite(r.estimate) and math.isfinite(lo) and math.isfinite(hi):
            tol = 1e-9 * max(1.0, abs(r.estimate))
            assert lo - tol <= r.estimate <= hi + tol, f"interval {r.interval} does not contain estimate {r.estimate}"
        assert 0 < r.level < 1, f"level {r.level}"
    if r.p_value is not None:  # p = 0 only where the data are impossible under the null (an exact test)
        assert 0 < r.p_value <= 1 or (r.p_value == 0 and r.passed and "binomial" in r.method), \
            f"p-value {r.p_value} is not in (0, 1] ({r.method})"
    if r.decide == "bound" and r.bound is not None and math.isfinite(r.estimate) and r.interval is not None:
        side = r.interval[0] if r.op in (">", ">=") else r.interval[1]
        assert r.bound == side or (math.isnan(r.bound) and math.isnan(side)), (r.bound, r.interval)
    strict_json(r.to_dict(), "ClaimResult")
    assert r.statistic.split("(")[0] in r.summary()
    assert ("passed" if r.passed else "FAILED") in r.summary()
    if ex.plots:
        assert isinstance(r._repr_html_(), str)



@invariant(fc.field.core.FieldRun)
def _field_run(r, ex: Exerciser) -> None:
    n, T = r.ds.n, r.ds.seq_len
    for c in (r.clean, r.corrupt):
        L1 = c.resid.shape[0]
        assert c.resid.shape[1:3] == (n, T), c.resid.shape
        assert c.mid.shape[:3] == (L1 - 1, n, T)
        finite(c.resid, "resid")
    shape(r.metric_pos, (n,), "metric_pos")
    assert bool(((r.metric_pos >= 0) & (r.metric_pos < T)).all())


@invariant(fc.lab.Field)
def _field(f, ex: Exerciser) -> None:
    assert f.n_layers >= 1 and f.n_heads >= 1 and f.d_model >= 1
    assert f.engine_name in ("lightcone", "hooks") and f.memory_budget >= 1
    text(f, "repr")


@invariant(fc.Criterion)
def _criterion(c, ex: Exerciser) -> None:
    assert c.op in (">", ">=", "<", "<=") and math.isfinite(c.bar)
    assert str(c).startswith(str(c.statistic))


@invariant(fc.Statistic)
def _statistic(s, ex: Exerciser) -> None:
    assert s.name in fc.claim.criteria.STATISTICS and isinstance(repr(s), str)


@invariant(fieldcheck.experiments.lens.LensLayer)
def _lens_layer(r, ex: Exerciser) -> None:
    B = r.n
    assert B >= 1 and r.layer >= 0
    for name in ("logit_diff", "rank", "wrong_rank", "prob"):
        shape(getattr(r, name), (B,), name)
        finite(getattr(r, name), name)
    strict_json(r.to_dict(), "LensLayer")
    text(r, "summary", "repr")


# --- inputs: site sets, sources, metrics, receivers, vocabularies, models -----------------------------


@invariant(fc.sites.SiteSet)
def _site_set(s, ex: Exerciser) -> None:
    assert isinstance(repr(s), str) and repr(s)
    names, max_pos = s.position_hints()
    assert "END" in names and max_pos >= 0


@invariant(fc.sites.Depth)
def _depth(d, ex: Exerciser) -> None:
    assert isinstance(repr(d), str) and repr(d).startswith(("depth(", "last(", "first("))
    for n in (1, 2, 7, 30):
        got = d.of(n)
        assert all(0 <= l < n for l in got), (d, n, got)


@invariant(fc.sources.Source)
def _source(s, ex: Exerciser) -> None:
    assert s.kind in ("other", "zero", "mean", "gaussian", "steer")
    assert isinstance(s.describe(), str) and s.describe()
    if s.kind == "gaussian":
        assert math.isfinite(s.scale) and s.scale >= 0
    if s.kind == "steer":
        assert s.vector.ndim in (1, 2) and s.vector.shape[-1] >= 1 and torch.isfinite(s.vector).all()


@invariant(fc.metrics.Metric)
def _metric(m, ex: Exerciser) -> None:
    assert isinstance(m.name, str) and m.name
    assert m.fn is None or callable(m.fn)


@invariant(fc.experiments.paths.Receivers)
def _receivers(r, ex: Exerciser) -> None:
    if ex.deep:
        out = ex.call(r.resolve, ex.draw(st.integers(1, 4), 2), ex.draw(st.integers(1, 4), 2), allow=(fc.SiteError,))
        if isinstance(out, tuple):
            heads, mlps, final = out
            assert isinstance(final, bool) and all(isinstance(h, tuple) for h in heads)


@invariant(fc.data.builtin.Vocab)
def _vocab(v, ex: Exerciser) -> None:
    for key in ("names", "places", "objects", "induction_words"):
        words = getattr(v, key)
        assert len(set(words)) == len(words) and all(w in v.ids for w in words), key


def _bridge(m, ex: Exerciser) -> None:
    cfg = m.cfg
    assert cfg.n_layers >= 1 and cfg.n_heads >= 1 and cfg.d_model >= 1 and cfg.d_vocab >= 1
    assert m.tokenizer is not None
    assert isinstance(m.fieldcheck_info, dict) and m.fieldcheck_info.get("spec")


def _register_bridge() -> None:
    from transformer_lens.model_bridge import TransformerBridge

    INVARIANTS[TransformerBridge] = _bridge


_register_bridge()
