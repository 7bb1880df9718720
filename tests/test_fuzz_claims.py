"""Fuzz of every assertion (issue 23): real results of a tiny model, as they are and degenerate
(NaN or inf inside, every example equal, one or two examples, no site, a clean-corrupt gap of
zero, the wrong kind of object), with drawn criteria (valid statistics with odd bars, statistics
another assertion decides, things that are not criteria) and drawn decision options.

The property (tests/_fuzz.py): the assertion returns ClaimResults that pass their invariants
(interval contains the estimate, p in (0, 1], bound on the tested side), raises ClaimFailed whose
results pass them, or raises a FieldcheckError that names the bad argument (InsufficientData is
allowed for degenerate inputs: too few examples, an undefined ratio).
"""
from __future__ import annotations

import dataclasses
import operator

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import fieldcheck as fc
from _fuzz import Arg, Exerciser, bad, call, fuzz, ok, random_sae
from fieldcheck.claim import criteria as C
from fieldcheck.errors import CriterionError, FieldcheckError, InsufficientData

# the hypothesis suites are CI's (make test), not the edit-test loop's (make test-quick)
pytestmark = pytest.mark.slow

N = 8  # examples: the smallest set a bootstrap bound accepts


@pytest.fixture(scope="module")
def results(fuzz_pool):
    """One real result of each kind, from GPT-2 (2 layers) on IOI with 8 examples."""
    from fieldcheck import sites as S

    ctx = fuzz_pool.get("gpt2-2L")
    m, f = ctx.model, ctx.field
    ds = fc.datasets.ioi(m, n=N, seed=3)
    sites = S.resid_pre("all", "END") + S.resid_pre(0, "S2")
    out = {"patch": f.patch(ds, sites), "joint": f.patch(ds, S.resid_pre(1, ["END", "S2"]), jointly=True),
           "predict": f.predict(ds, sites), "values": f.metric_values(ds),
           "select": f.select_sites(ds, 2, candidates=S.resid_pre("all", "all"), method="gradient",
                                    verify_recall=False),
           "sweep": f.scale_sweep(ds, S.resid_pre(1, "END"), alphas=[0, 0.1, 0.5, 1.0]),
           "green": f.green(ds, S.resid_pre(0, "S2")), "transfer": f.transfer(ds, S.resid_pre(1, "END")),
           "path": f.path_patch(ds, S.attn_head(0, "all", "all"), "final", jointly=False),
           "slice": f.green_slice(ds, S.resid_pre(0, "S2"), S.resid_pre(2, "END"), rank=2, n_probe=4),
           "attention": f.attention(ds), "dla": f.dla(ds), "lens": f.logit_lens(ds),
           "scores": f.head_scores(n=N, length=4).of("previous_token")}
    circuit = f.discover_circuit(ds, 4, method="eap")
    out["circuit"] = f.evaluate_circuit(ds, circuit)
    out["curve"] = f.faithfulness_curve(ds, scores=circuit.edge_scores, sizes=[2, 8, 30])
    out["minimality"] = f.minimality(ds, circuit)
    # dictionary features: a random SAE on the tiny Llama (3 layers)
    lctx = fuzz_pool.get("llama-3L")
    lds = fc.datasets.ioi(lctx.model, n=N, seed=3)
    sae = random_sae("blocks.1.hook_resid_pre", seed=1)
    out["feature_patch"] = lctx.field.patch(lds, S.features(sae, [0, 1, 2], "END"))
    nodes = S.features(sae, [0, 1, 2, 3], "all", error=True).resolve(3, 4, lds.seq_len, lds.position_names)
    out["feature_circuit"] = lctx.field.evaluate_feature_circuit(lds, nodes, [sae])
    out["selectivity"] = lctx.field.selectivity(sae, 0, lds, ["the cat sat on the mat", "a b c", "x y z w"] * 3)
    return out


# --- degenerate versions of a result -------------------------------------------------------------------

#: per result kind: (field, axis of the examples) of the arrays an assertion reads
ARRAYS = {
    "patch": [("values", 1), ("baseline_clean", 0), ("baseline_corrupt", 0)],
    "joint": [("values", 1), ("baseline_clean", 0), ("baseline_corrupt", 0)],
    "predict": [("values", 1), ("baseline_clean", 0), ("baseline_corrupt", 0)],
    "path": [("values", 1), ("baseline_clean", 0), ("baseline_corrupt", 0)],
    "sweep": [("values", 1), ("baseline", 0), ("slope", 0)],
    "green": [("depth_share", 0)],
    "transfer": [("before", 0), ("after", 0), ("clean", 0), ("ld_before", 0), ("ld_after", 0)],
    "circuit": [("circuit", 0), ("full", 0), ("empty", 0)],
    "curve": [("circuit", 1), ("full", 0), ("empty", 0)],
    "minimality": [("without", 1), ("circuit", 0), ("full", 0), ("empty", 0)],
    "attention": [("weights", 1)],
    "scores": [("weights", 1)],
    "dla": [("values", 1), ("total", 0)],
    "lens": [("logit_diff", 1), ("rank", 1), ("wrong_rank", 1), ("prob", 1)],
    "feature_patch": [("values", 1), ("baseline_clean", 0), ("baseline_corrupt", 0)],
    "feature_circuit": [("circuit", 0), ("complement", 0), ("full", 0), ("empty", 0)],
    "selectivity": [("on", 0), ("off", 0)],
}
MUTATIONS = ("as is", "nan", "inf", "constant", "one example", "two examples", "zero gap", "no site", "wrong object")


def _np(x):
    return x.detach().cpu().numpy().astype(float) if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def mutate(kind: str, r, how: str) -> Arg:
    """``r`` (the result of ``kind``) changed by ``how``, as an Arg: valid, degenerate (may raise
    InsufficientData) or bad (must be refused by name)."""
    if how == "as is":
        return Arg(r, allow=(InsufficientData,))
    if how == "wrong object":  # per-example values may be a plain list of numbers: a text is not one
        return Arg("not a result", ("expects", "must be", "shape", "got str", "number"))
    if kind == "values":  # a tensor of per-example logit differences
        v = _np(r)
        got = {"nan": np.where(np.arange(N) == 2, np.nan, v), "inf": np.where(np.arange(N) == 0, np.inf, v),
               "constant": np.full(N, v.mean()), "one example": v[:1], "two examples": v[:2],
               "zero gap": np.zeros(N), "no site": np.zeros((0,))}[how]
        return Arg(got, ("examples", "shape") if how == "no site" else (), allow=(InsufficientData,))
    if kind == "slice":
        if how == "nan":
            return Arg(dataclasses.replace(r, explained=float("nan")))
        if how == "constant":
            return Arg(dataclasses.replace(r, explained_se=0.0), allow=(InsufficientData,))
        return Arg(r, allow=(InsufficientData,))
    if kind == "select":
        inner = mutate("joint", r.real, how)
        return Arg(dataclasses.replace(r, real=inner.value), inner.bad, inner.allow)
    arrays = ARRAYS[kind]
    kw = {}
    for name, axis in arrays:
        a = _np(getattr(r, name))
        if how in ("nan", "inf") and name == arrays[0][0]:
            a = a.copy()
            a.reshape(-1)[min(3, a.size - 1)] = np.nan if how == "nan" else -np.inf
        elif how == "constant":
            a = np.broadcast_to(a.mean(axis=axis, keepdims=True), a.shape).copy()
        elif how in ("one example", "two examples"):
            a = np.take(a, range(1 if how == "one example" else 2), axis=axis)
        elif how == "zero gap" and name in ("baseline_clean", "full"):
            other = "baseline_corrupt" if name == "baseline_clean" else "empty"
            a = _np(getattr(r, other)).copy()
        elif how == "no site" and axis == 1 and name == arrays[0][0]:
            a = a[:0]
        kw[name] = a
    if kind in ("patch", "predict", "path", "joint", "feature_patch"):
        kw["skipped"] = None
        if how == "no site":
            kw["sites"] = []
    try:
        out = dataclasses.replace(r, **kw)
    except FieldcheckError as e:  # the result's constructor refuses it already: what reaches an assertion is junk
        assert how == "no site" and "rows" in str(e), f"the {how!r} version of {kind} was refused: {e}"
        return Arg(None, ("expects", "got NoneType", "must be"))
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"cannot build the {how!r} version of {kind}: {e}") from e
    if how == "no site" and kind in ("patch", "predict", "path", "joint", "feature_patch", "attention", "scores",
                                     "dla", "curve", "minimality", "lens", "sweep"):
        return Arg(out, ("no site", "no row", "empty", "no head", "no component", "no part", "no size", "no layer",
                         "shape", "0 heads", "0 rows"))
    return Arg(out, allow=(InsufficientData,))


# --- criteria and options ------------------------------------------------------------------------------

#: statistic -> (the statistic, a bar range where it means something)
STATS = {
    "r2": (C.r2, (-1, 1)), "pearson": (C.pearson, (-1, 1)), "spearman": (C.spearman, (-1, 1)),
    "top_k_overlap": (C.top_k_overlap(2), (0, 1)), "recovered": (C.recovered, (-1, 2)), "effect": (C.effect, (-5, 5)),
    "mean": (C.mean, (-5, 5)), "alpha_star": (C.alpha_star(tol=0.2), (0, 1)), "depth_share": (C.depth_share, (0, 1)),
    "rate": (C.rate, (0, 1)), "shift": (C.shift, (-5, 5)), "gap_closed": (C.gap_closed, (-1, 2)),
    "cpr": (C.cpr, (-1, 2)), "cmd": (C.cmd, (0, 2)), "explained": (C.explained, (0, 1)), "share": (C.share, (-2, 2)),
    "rank": (C.rank(layer=-1), (0, 50)), "first_layer": (C.first_layer, (0, 3)), "area": (C.area, (-1, 2)),
    "min_cost": (C.min_cost, (-1, 1)),
    "faithfulness": (C.faithfulness, (-1, 2)), "completeness": (C.completeness, (-1, 2)),
    "rate_on": (C.rate_on, (0, 1)), "rate_off": (C.rate_off, (0, 1)), "mean_diff": (C.mean_diff, (-2, 2)),
    "auroc": (C.auroc, (0, 1)),
}


def criteria(valid: tuple) -> st.SearchStrategy[Arg]:
    """A tuple of criteria: on the assertion's statistics (valid), on other statistics, or not criteria."""
    others = [k for k in STATS if k not in valid]

    @st.composite
    def one_valid(draw):
        name = draw(st.sampled_from(valid))
        stat, (lo, hi) = STATS[name]
        op = draw(st.sampled_from([operator.gt, operator.ge, operator.lt, operator.le]))
        bar = draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))
        return op(stat, bar)

    return st.one_of(
        st.lists(one_valid(), min_size=1, max_size=2).map(lambda cs: Arg(tuple(cs), allow=(InsufficientData,))),
        st.sampled_from(others).map(lambda k: Arg((STATS[k][0] > 0.5,), (k, "not a statistic"))),
        bad(st.sampled_from([(), (True,), (0.5,), ("r2 > 0.9",), (C.mean,)]), "criteri", "statistic", "bool"),
    )


def options() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({
        "alpha": st.one_of(ok(st.sampled_from([None, 0.05, 0.2, 0.01])),
                           bad(st.sampled_from([0.0, 0.5, 1.5, -0.1, float("nan"), "5%"]), "alpha")),
        "decide": st.one_of(ok(st.sampled_from([None, "bound", "point"])), bad(st.sampled_from(["mean", ""]), "decide")),
        "n_boot": st.one_of(ok(st.sampled_from([None, 100, 300])), bad(st.sampled_from([0, 5, -1, 1.5, "many"]),
                                                                       "n_boot")),
        "method": st.one_of(ok(st.sampled_from([None, "bca", "percentile"])), bad(st.just("bootstrap"), "method")),
    })


def _call(data, results, kind, assertion, valid, extra=None, allow=(), reads_sites=True):
    """Draw a mutation of ``results[kind]``, criteria and options, and call ``assertion``
    (``reads_sites=False``: the assertion reads no per-site array, so a result without sites is valid)."""
    how = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    target = mutate(kind, results[kind], how)
    if how == "no site" and not reads_sites:
        target = Arg(target.value, allow=(InsufficientData,))
    crit = data.draw(criteria(valid), label="criteria")
    opts = data.draw(options(), label="options")
    if opts["alpha"].value is not None and data.draw(st.booleans(), label="level instead of alpha"):
        a = opts.pop("alpha")
        opts["level"] = Arg(1 - a.value, ()) if not a.bad else Arg(a.value, ("level",))
    # the criteria travel as one drawn argument: a bad one (or none) must be named in the error
    crits = [Arg(c, crit.bad, crit.allow) for c in crit.value]
    marker = {} if crit.value else {"_no_criteria": crit}
    ex = Exerciser(data, plots=data.draw(st.integers(0, 7), label="plots") == 7)
    return call(_without_marker(assertion), target, *crits, ex=ex, claims=True, allow=(InsufficientData,) + allow,
                **marker, **(extra or {}), **opts)


def _without_marker(assertion):
    """The assertion, taking (and dropping) the ``_no_criteria`` marker that carries the
    "no criteria" case's expected words into :func:`_fuzz.call`."""
    def run(*args, _no_criteria=None, **kw):
        return assertion(*args, **kw)
    run.__qualname__ = assertion.__name__
    run.__wrapped__ = assertion  # counted as the assertion's calls (tests/_fuzz.py)
    return run


# --- one test per assertion -------------------------------------------------------------------------------


@fuzz(60, "fc.assert_effect")
@given(data=st.data())
def test_assert_effect(results, data):
    direction = data.draw(st.one_of(ok(st.sampled_from([None, "denoise"])), bad(st.sampled_from(["noise", "up", 1]),
                                                                                  "direction")))
    require = data.draw(st.one_of(ok(st.sampled_from(["all", "any"])), bad(st.sampled_from(["most", None]), "require")))
    _call(data, results, data.draw(st.sampled_from(["patch", "joint"])), fc.assert_effect, ("recovered", "effect"),
          {"direction": direction, "require": require})


@fuzz(30, "fc.assert_path_effect")
@given(data=st.data())
def test_assert_path_effect(results, data):
    require = data.draw(st.one_of(ok(st.sampled_from(["all", "any"])), bad(st.sampled_from(["most", None]), "require")))
    _call(data, results, "path", fc.assert_path_effect, ("recovered", "effect"), {"require": require})


@fuzz(40, "fc.assert_predicted_effect")
@given(data=st.data())
def test_assert_predicted_effect(results, data):
    how = data.draw(st.sampled_from(["as is", "fewer sites", "other object"]), label="actual")
    actual = {"as is": Arg(results["patch"]),
              "fewer sites": Arg(results["patch"].select(lambda s: s.layer == 0), ("shape",)),
              "other object": Arg({"effect": 1}, ("expects", "shape", "must be"))}[how]
    valid = ("r2", "pearson", "spearman", "top_k_overlap")
    mut = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    pred = mutate("predict", results["predict"], mut)
    if how == "as is" and mut in ("one example", "two examples"):  # fewer examples than the patch: refused
        pred = Arg(pred.value, pred.bad + ("shape", "match"))
    crit = data.draw(criteria(valid), label="criteria")
    opts = data.draw(options(), label="options")
    crits = [Arg(c, crit.bad, crit.allow) for c in crit.value]
    marker = {} if crit.value else {"_no_criteria": crit}
    call(_without_marker(fc.assert_predicted_effect), pred, actual, *crits, ex=Exerciser(data), claims=True,
         allow=(InsufficientData,), **marker, **opts)


@fuzz(24, "fc.assert_localized")
@given(data=st.data())
def test_assert_localized(results, data):
    top_k = data.draw(st.one_of(ok(st.sampled_from([None, 2, 5])), bad(st.sampled_from([0, -1, 1.5, "2"]), "top_k"),
                                st.just(Arg(1, ("top_k",)))))
    _call(data, results, data.draw(st.sampled_from(["select", "joint"])), fc.assert_localized,
          ("recovered", "effect"), {"top_k": top_k})


@fuzz(24, "fc.assert_linear_regime")
@given(data=st.data())
def test_assert_linear_regime(results, data):
    tol = data.draw(st.one_of(ok(st.sampled_from([None, 0.05, 0.5])), bad(st.sampled_from([0.0, -1.0, "x"]), "tol")))
    _call(data, results, "sweep", fc.assert_linear_regime, ("alpha_star",), {"tol": tol})


@fuzz(30, "fc.assert_light_cone", "fc.assert_anisotropic")
@given(data=st.data())
def test_assert_light_cone_and_anisotropic(results, data):
    g = mutate("green", results["green"], data.draw(st.sampled_from(MUTATIONS)))
    tol = data.draw(st.one_of(ok(st.sampled_from([0.0, 1e-6, 3])), bad(st.sampled_from([-1.0, float("nan"), "x"]),
                                                                        "tol")))
    call(fc.assert_light_cone, g, tol=tol, claims=True, ex=Exerciser(data))
    _call(data, results, "green", fc.assert_anisotropic, ("depth_share",))


@fuzz(30, "fc.assert_transfers")
@given(data=st.data())
def test_assert_transfers(results, data):
    _call(data, results, "transfer", fc.assert_transfers, ("rate", "shift", "gap_closed"))


@fuzz(30, "fc.assert_faithful")
@given(data=st.data())
def test_assert_faithful(results, data):
    _call(data, results, "circuit", fc.assert_faithful, ("cpr", "cmd"))


@fuzz(40, "fc.assert_prefers")
@given(data=st.data())
def test_assert_prefers(results, data):
    _call(data, results, data.draw(st.sampled_from(["values", "patch"])), fc.assert_prefers, ("mean", "rate"),
          reads_sites=False)  # a PatchResult's clean baseline


@fuzz(20, "fc.assert_explained")
@given(data=st.data())
def test_assert_explained(results, data):
    how = data.draw(st.sampled_from(["as is", "nan", "constant", "wrong object"]))
    sl = mutate("slice", results["slice"], how)
    crit = data.draw(criteria(("explained",)))
    crits = [Arg(c, crit.bad, crit.allow) for c in crit.value]
    marker = {} if crit.value else {"_no_criteria": crit}
    opts = data.draw(options())
    opts.pop("n_boot")
    opts.pop("method")
    call(_without_marker(fc.assert_explained), sl, *crits, ex=Exerciser(data), claims=True,
         allow=(InsufficientData,), **marker, **opts)


@fuzz(30, "fc.assert_attends")
@given(data=st.data())
def test_assert_attends(results, data):
    require = data.draw(st.one_of(ok(st.sampled_from(["all", "any"])), bad(st.just("most"), "require")))
    _call(data, results, data.draw(st.sampled_from(["attention", "scores"])), fc.assert_attends, ("mean",),
          {"require": require})


@fuzz(30, "fc.assert_direct_effect")
@given(data=st.data())
def test_assert_direct_effect(results, data):
    require = data.draw(st.one_of(ok(st.sampled_from(["all", "any"])), bad(st.just("most"), "require")))
    _call(data, results, "dla", fc.assert_direct_effect, ("mean", "share"), {"require": require})


@fuzz(40, "fc.assert_readable")
@given(data=st.data())
def test_assert_readable(results, data):
    leads = data.draw(st.one_of(ok(st.sampled_from(["wrong", "top1"])), bad(st.sampled_from(["top2", None]), "leads")))
    L1 = results["lens"].logit_diff.shape[0]
    layer = data.draw(st.one_of(ok(st.integers(-L1, L1 - 1)), st.integers(L1, L1 + 30).map(
        lambda l: Arg(l, ("layer", str(l))))))
    if data.draw(st.booleans(), label="rank at a drawn layer"):
        crit = Arg(C.rank(layer=layer.value) <= 5, layer.bad)
        call(fc.assert_readable, mutate("lens", results["lens"], data.draw(st.sampled_from(MUTATIONS[:5]))),
             crit, leads=leads, claims=True, allow=(InsufficientData,), ex=Exerciser(data))
    else:
        _call(data, results, "lens", fc.assert_readable, ("first_layer", "rank"), {"leads": leads})


@fuzz(24, "fc.assert_faithfulness_curve", "fc.assert_minimal")
@given(data=st.data())
def test_assert_curve_and_minimal(results, data):
    _call(data, results, "curve", fc.assert_faithfulness_curve, ("area", "cmd"))
    _call(data, results, "minimality", fc.assert_minimal, ("min_cost",))


# --- the criteria language -------------------------------------------------------------------------------


@fuzz(40, "fc.assert_feature_effect", "fc.assert_feature_circuit", "fc.assert_selective")
@given(data=st.data())
def test_feature_assertions(results, data):
    kind = data.draw(st.sampled_from(["feature_patch", "feature_circuit", "selectivity"]))
    assertion, valid = {"feature_patch": (fc.assert_feature_effect, ("recovered", "effect")),
                        "feature_circuit": (fc.assert_feature_circuit, ("faithfulness", "completeness")),
                        "selectivity": (fc.assert_selective, ("rate_on", "rate_off", "mean_diff", "auroc"))}[kind]
    _call(data, results, kind, assertion, valid)


@fuzz(60, "fc.Statistic", "fc.stat", "fc.Criterion")
@given(data=st.data())
def test_statistics_and_criteria(data):
    """Building statistics and criteria: unknown names and parameters, bad bars, truth values."""
    name = data.draw(st.one_of(ok(st.sampled_from(list(C.STATISTICS))),
                               bad(st.sampled_from(["r3", "", "Recovered", None]), "statistic")))
    params = data.draw(st.sampled_from([{}, {"k": 3}, {"k": 0}, {"tol": 0.1}, {"tol": -1}, {"layer": 2}, {"x": 1}]))
    expected = C.STATISTICS.get(name.value, (None, (), {}))[1] if not name.bad else ()
    words: tuple = name.bad
    if not words:
        unknown = set(params) - set(expected)
        if unknown:
            words = (sorted(unknown)[0], "parameter")
        elif params.get("k") == 0 or params.get("tol") == -1:
            words = ("k" if "k" in params else "tol",)
    stat = call(fc.stat, name.value if not words else Arg(name.value, words), **params)
    if isinstance(stat, C.Statistic):
        assert stat.name == name.value and isinstance(repr(stat), str)
        bar = data.draw(st.one_of(ok(st.floats(-10, 10)), bad(st.sampled_from([float("nan"), float("inf"), "x", None,
                                                                                 True]), "bar", "number")))
        op = data.draw(st.sampled_from([operator.gt, operator.ge, operator.lt, operator.le]))
        crit = call(op, stat, bar)
        if isinstance(crit, C.Criterion):
            assert str(crit).startswith(str(stat)) and crit.bar == float(bar.value)
            call(bool, Arg(crit, ("not a truth value", "criterion")))
            assert crit.holds(crit.bar + (1 if crit.op in (">", ">=") else -1)) in (True, False)
        call(operator.eq, Arg(stat, ("not a criterion",)), 0.5)
        call(fc.Criterion, stat, data.draw(st.sampled_from([">", ">="])), 0.3)
