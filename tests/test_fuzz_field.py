"""Fuzz of every ``fc.Field`` method (issue 23) on tiny models of several families and depths.

Each test draws a model (GPT-2 2 layers, Llama 3 layers, Gemma-2 1 layer, GPT-NeoX 2 layers, GPT-2
through the hooks engine), a data set (IOI of 4 or 1 examples, induction, factual recall, or
something that is not a set or does not fit the model) and every argument of the method, valid or
not, then checks the property of tests/_fuzz.py: a result that passes its invariants, or a
FieldcheckError that names the bad argument. The number of examples per test is its CI budget
(``@fuzz(n, ...)``); ``HYPOTHESIS_PROFILE=fuzz-long`` runs many more.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import fieldcheck as fc
from _fuzz import (Arg, Exerciser, alphas, bad, call, choices, contexts, datasets, fuzz, ints, metrics, ok, one_site,
                   seeds, shape_of, site_sets, sources, value)
from fieldcheck.errors import InsufficientData, SiteError
from fieldcheck.field.arch import UnsupportedArchitecture

# the hypothesis suites are CI's (make test), not the edit-test loop's (make test-quick)
pytestmark = pytest.mark.slow

DIRECTIONS = ("denoise", "noise")
WHICH = ("clean", "corrupt")
#: experiments a family may refuse by name (docs/models.md: edge-level circuits on parallel-residual,
#: post-norm, soft-capped and generic-path models; DLA on soft-capped logits and the generic path)
UNSUPPORTED = (UnsupportedArchitecture,)


def _ex(data) -> Exerciser:
    return Exerciser(data, plots=data.draw(st.integers(0, 5), label="plots") == 5)


# --- the core: construction, runs, metrics, patching ------------------------------------------------


@fuzz(24, "Field", "Field.device", "Field.require_functional", "Field.clear")
@given(data=st.data())
def test_field_constructor(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    model = data.draw(st.one_of(ok(st.just(ctx.model)),
                                bad(st.sampled_from([None, 42, object()]), "model"),
                                bad(st.sampled_from(["no-such-model-xyz", "/nonexistent/folder"]), "model",
                                    "does not exist", "not available")))
    budget = data.draw(st.one_of(ok(st.sampled_from([2 ** 20, 2 ** 31, 10 ** 12])),
                                 bad(st.sampled_from([0, -5, "lots", float("nan")]), "memory_budget", "memory budget")))
    engine = data.draw(choices(("auto", "hooks"), "engine"))
    field = call(fc.Field, model, memory_budget=budget, engine=engine, ex=_ex(data))
    if isinstance(field, fc.Field):
        assert field.n_layers == ctx.n_layers and field.engine_name in ("lightcone", "hooks")
        assert field.device.type == "cpu"
        assert field.require_functional() is field.fm
        assert isinstance(repr(field), str)
        field.clear()


@fuzz(50, "Field.run", "Field.phi", "Field.metric_values", "Field.baselines")
@given(data=st.data())
def test_runs_and_metrics(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    which = data.draw(choices(WHICH, "which"))
    metric = data.draw(metrics(ctx, ds.value))
    run = call(ctx.field.run, ds)
    if not isinstance(run, Exception):
        n, T = ds.value.n, ds.value.seq_len
        assert run.clean.resid.shape == (ctx.n_layers + 1, n, T, ctx.d_model)
        assert run.metric_pos.shape == (n,)
    phi = call(ctx.field.phi, ds, which)
    if isinstance(phi, torch.Tensor):
        assert phi.shape == (ctx.n_layers + 1, ds.value.n, ds.value.seq_len, ctx.d_model)
        assert torch.isfinite(phi).all()
    vals = call(ctx.field.metric_values, ds, metric, which)
    if isinstance(vals, torch.Tensor):
        assert vals.shape == (ds.value.n,) and torch.isfinite(vals).all()
    base = call(ctx.field.baselines, ds, metric)
    if isinstance(base, tuple):
        assert len(base) == 2 and all(b.shape == (ds.value.n,) for b in base)


def _hooked_resid_mid(ctx, sites: Arg, engine: Arg = Arg(None)) -> tuple:
    """(SiteError,) where the call runs on the hooked path and ``sites`` hold a resid_mid site: that
    path refuses them by design (a SiteError naming the light-cone engine)."""
    hooks = value(engine) == "hooks" or (value(engine) is None and ctx.field.engine_name == "hooks")
    return (SiteError,) if hooks and "resid_mid" in repr(value(sites)) else ()


@fuzz(60, "Field.patch")
@given(data=st.data())
def test_patch(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    sites = data.draw(site_sets(ctx, ds.value))
    metric = data.draw(st.one_of(metrics(ctx, ds.value), ok(st.just(["logit_diff", "prob"]))))
    direction, source = data.draw(choices(DIRECTIONS, "direction")), data.draw(sources(ctx, ds.value))
    alpha, jointly = data.draw(alphas()), data.draw(st.booleans())
    engine = data.draw(choices((None, "lightcone", "hooks"), "engine"))
    call(ctx.field.patch, ds, sites, direction=direction, source=source, alpha=alpha, jointly=jointly,
         metric=metric, engine=engine, progress=data.draw(st.sampled_from([None, False])), ex=_ex(data),
         allow=UNSUPPORTED + _hooked_resid_mid(ctx, sites, engine))


@fuzz(20, "Field.metric_on", "Field.site_values", "Field.injections")
@given(data=st.data())
def test_engine_helpers(fuzz_pool, data):
    """The helpers experiments use (metric of final residuals, activation at a site, the source a
    patch inserts), with drawn sites and scales."""
    from fieldcheck.field.metrics import as_metric
    from fieldcheck.field.sites import as_site_set
    from fieldcheck.field.sources import as_source

    ctx = data.draw(contexts(fuzz_pool, ("gpt2-2L", "llama-3L")))
    ds = ctx.sets["ioi4"]
    r = ctx.field.run(ds)
    n = ds.n
    x_final = r.clean.resid[-1][torch.arange(n), r.metric_pos]
    ex_idx = data.draw(st.one_of(ok(st.just(torch.arange(n))),
                                 bad(st.just(torch.arange(n) + n + 3), "example", "index")))
    vals = call(ctx.field.metric_on, as_metric("logit_diff"), r, x_final, ex_idx)
    if isinstance(vals, torch.Tensor):
        assert vals.shape == (n,) and torch.isfinite(vals).all()
    sites = data.draw(site_sets(ctx, ds, max_terms=1))
    if not sites.bad:
        site = as_site_set(sites.value).resolve(ctx.n_layers, ctx.n_heads, ds.seq_len, ds.position_names)[0]
        pos = torch.full((n,), int(site.pos)) if isinstance(site.pos, int) else ds.position(site.pos)
        v = call(ctx.field.site_values, r, r.clean, site, pos)
        assert isinstance(v, torch.Tensor) and v.shape[0] == n and torch.isfinite(v).all()
        out = call(ctx.field.injections, r, site, data.draw(choices(DIRECTIONS, "direction")),
                   as_source(None), data.draw(alphas()))
        if isinstance(out, tuple):
            injs, delta = out
            assert len(injs) == n and delta.shape[0] == n


# --- sensitivities, predictions, sweeps, selection -----------------------------------------------------


@fuzz(24, "Field.sensitivity")
@given(data=st.data())
def test_sensitivity(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    call(ctx.field.sensitivity, ds, metric=data.draw(metrics(ctx, ds.value)),
         run=data.draw(choices(WHICH, "run")), ex=_ex(data))


@fuzz(40, "Field.predict")
@given(data=st.data())
def test_predict(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    sites = data.draw(site_sets(ctx, ds.value))
    method = data.draw(choices(("gradient", "integrated"), "method"))
    source = data.draw(sources(ctx, ds.value))
    if method.value == "integrated" and source.value not in (None, "other") and not source.bad:
        source = Arg(source.value, ("source", "integrated"))  # it integrates between the two runs
    call(ctx.field.predict, ds, sites, order=data.draw(choices((1, 2), "order", extra_bad=(0, 3, 1.5))),
         method=method, steps=data.draw(ints(1, 4, "steps")), direction=data.draw(choices(DIRECTIONS, "direction")),
         source=source, alpha=data.draw(alphas()), metric=data.draw(metrics(ctx, ds.value)), ex=_ex(data))


@fuzz(20, "Field.scale_sweep")
@given(data=st.data())
def test_scale_sweep(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    site = data.draw(one_site(ctx, ds.value, kinds=("resid_pre", "resid_mid", "attn_out", "mlp_out")))
    grid = data.draw(st.one_of(ok(st.just(None)),
                               ok(st.lists(st.floats(-2, 2), min_size=1, max_size=4)),
                               bad(st.sampled_from([[], [float("nan")], [0.1, float("inf")], "0.5", 3]), "alpha")))
    call(ctx.field.scale_sweep, ds, site, alphas=grid, direction=data.draw(choices(DIRECTIONS, "direction")),
         source=data.draw(sources(ctx, ds.value)), metric=data.draw(metrics(ctx, ds.value)), ex=_ex(data),
         allow=_hooked_resid_mid(ctx, site))


@fuzz(16, "Field.select_sites")
@given(data=st.data())
def test_select_sites(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx, invalid=False))
    cands = data.draw(st.one_of(ok(st.just(None)), site_sets(ctx, ds.value, kinds=("resid_pre", "mlp_out"))))
    if value(cands) is None:  # candidates=None is every resid_pre site (site_sets draws None as "not a site set")
        cands = Arg(None)
    k = data.draw(st.one_of(ok(st.just(1)), bad(st.sampled_from([0, -1, 1.5, None, 10 ** 6]), "k")))
    call(ctx.field.select_sites, ds, k, candidates=cands, method=data.draw(choices(("gradient", "integrated"), "method")),
         steps=data.draw(ints(1, 3, "steps")), direction=data.draw(choices(DIRECTIONS, "direction")),
         metric=data.draw(metrics(ctx, ds.value)), verify_recall=data.draw(st.booleans()), ex=_ex(data))


# --- Green functions -----------------------------------------------------------------------------------


def _green_direction(ctx, ds):
    n = ds.n if isinstance(ds, fc.ContrastiveSet) else 2
    d = ctx.d_model
    return st.one_of(ok(st.sampled_from([None, torch.ones(d), torch.linspace(-1, 1, d).repeat(n, 1)])),
                     bad(st.sampled_from([torch.ones(d + 2), torch.ones(n + 2, d), torch.full((d,), float("nan"))]),
                         "direction"))


@fuzz(20, "Field.green")
@given(data=st.data())
def test_green(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    call(ctx.field.green, ds, data.draw(one_site(ctx, ds.value)), direction=data.draw(_green_direction(ctx, ds.value)),
         which=data.draw(choices(WHICH, "which")),
         metric=data.draw(st.one_of(ok(st.just(None)), metrics(ctx, ds.value))),
         batch_size=data.draw(ints(1, 64, "batch_size")), ex=_ex(data))


@fuzz(20, "Field.propagate")
@given(data=st.data())
def test_propagate(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    call(ctx.field.propagate, ds, data.draw(one_site(ctx, ds.value)), alpha=data.draw(alphas()),
         direction=data.draw(_green_direction(ctx, ds.value)), which=data.draw(choices(WHICH, "which")),
         batch_size=data.draw(ints(1, 64, "batch_size")), ex=_ex(data))


@fuzz(16, "Field.green_slice")
@given(data=st.data())
def test_green_slice(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx, invalid=False))
    n = ds.value.n
    example = data.draw(st.one_of(ok(st.integers(-n, n - 1)), ok(st.just("mean")),
                                  st.integers(n, n + 9).map(lambda e: Arg(e, ("example",))),
                                  bad(st.sampled_from(["first", None, 1.5]), "example")))
    call(ctx.field.green_slice, ds, data.draw(one_site(ctx, ds.value)), data.draw(one_site(ctx, ds.value)),
         rank=data.draw(ints(1, 4, "rank", above=ctx.d_model)), n_iter=data.draw(ints(0, 2, "n_iter")),
         oversample=data.draw(ints(0, 4, "oversample")), seed=data.draw(seeds()), example=example,
         which=data.draw(choices(WHICH, "which")), n_probe=data.draw(ints(2, 8, "n_probe")), ex=_ex(data),
         allow=(fc.SiteError,))


# --- transfer and path patching -----------------------------------------------------------------------


@fuzz(40, "Field.transfer")
@given(data=st.data())
def test_transfer(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    targets = data.draw(st.one_of(ok(st.just(None)), datasets(ctx)))
    if targets.value is None:  # None is the default: the targets are ds itself
        targets = Arg(None)
    pair = data.draw(choices(("mean", "matched"), "pair"))
    allow = ()
    if not targets.bad and targets.value is not None and not ds.bad:
        if targets.value.seq_len != ds.value.seq_len or pair.value == "matched" and targets.value.n != ds.value.n:
            allow = (fc.DatasetError, fc.SiteError)  # mismatched sets: refused by name, or transferred by position
    site = data.draw(one_site(ctx, ds.value, kinds=("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")))
    call(ctx.field.transfer, ds, site, targets=targets, alpha=data.draw(alphas()),
         metric=data.draw(metrics(ctx, ds.value)), pair=pair,
         confidence=data.draw(st.one_of(ok(st.floats(0.5, 0.999)),
                                        bad(st.sampled_from([0.0, 1.0, 1.5, -0.2, float("nan"), "95%"]),
                                            "confidence"))),
         ex=_ex(data), allow=allow)


def _receivers(ctx):
    L, H = ctx.n_layers, ctx.n_heads
    return st.one_of(
        ok(st.just("final")),
        ok(st.integers(0, L - 1).map(lambda l: fc.receiver_heads(l, "all", "qkv"))),
        ok(st.integers(0, L - 1).map(fc.receiver_mlps)),
        ok(st.just(["final", fc.receiver_mlps("all")])),
        st.integers(L, L + 20).map(lambda l: Arg(fc.receiver_heads(l), ("layer", str(l)))),
        st.integers(H, H + 9).map(lambda h: Arg(fc.receiver_heads(0, h), ("head", str(h)))),
        ok(st.sampled_from(["logits", "L0.H0", "L0.mlp"])),
        bad(st.sampled_from(["L0.H0.x", 3, None, []]), "receiver"),
    )


@fuzz(30, "Field.path_patch")
@given(data=st.data())
def test_path_patch(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    senders = data.draw(st.one_of(site_sets(ctx, ds.value, kinds=("attn_head", "attn_out", "mlp_out")),
                                  site_sets(ctx, ds.value, kinds=("resid_pre",)).map(
                                      lambda a: Arg(a.value, a.bad + ("sender", "resid_pre")))))
    call(ctx.field.path_patch, ds, senders, data.draw(_receivers(ctx)),
         direction=data.draw(choices(DIRECTIONS, "direction")), metric=data.draw(metrics(ctx, ds.value)),
         jointly=data.draw(st.booleans()), ex=_ex(data), allow=UNSUPPORTED)


# --- attention, DLA, logit lens -------------------------------------------------------------------------


def _heads_arg(ctx, ds):
    from fieldcheck import sites as S

    L, H = ctx.n_layers, ctx.n_heads
    return st.one_of(
        ok(st.sampled_from(["all", None])),   # None: all heads, as in attn_head
        ok(st.tuples(st.integers(0, L - 1), st.integers(0, H - 1)).map(lambda t: [t])),
        ok(st.integers(0, L - 1).map(lambda l: S.attn_head(l, "all", "END"))),
        st.integers(L, L + 20).map(lambda l: Arg([(l, 0)], ("layer", str(l)))),
        st.integers(H, H + 9).map(lambda h: Arg([(0, h)], ("head", str(h)))),
        ok(st.just("L0.H0")),
        bad(st.sampled_from([[], "L0.H0x", 3.5, [(0,)]]), "head"),
    )


def _query_key(ctx, ds):
    T, names = shape_of(ds)
    return st.one_of(ok(st.sampled_from(names)), ok(st.integers(-T, T - 1)),
                     st.integers(T, T + 9).map(lambda p: Arg(p, ("position", str(p)))),
                     st.sampled_from([n for n in ("IO", "S2", "X9") if n not in names] or ["X9"]).map(
                         lambda p: Arg(p, (p,))))


@fuzz(60, "Field.attention")
@given(data=st.data())
def test_attention(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    query = data.draw(_query_key(ctx, ds.value))
    key = data.draw(_query_key(ctx, ds.value))
    allow = ()
    if isinstance(ds.value, fc.ContrastiveSet) and not (query.bad or key.bad):
        q, k = ds.value.position(query.value), ds.value.position(key.value)
        if bool((k > q).any()):  # a key after its query: refused, naming the key
            key = Arg(key.value, ("key", "after"))
    call(ctx.field.attention, ds, data.draw(_heads_arg(ctx, ds.value)), query=query, key=key,
         which=data.draw(choices(WHICH, "which")), engine=data.draw(choices((None, "lightcone", "hooks"), "engine")),
         ex=_ex(data), allow=allow + UNSUPPORTED)


@fuzz(24, "Field.head_scores")
@given(data=st.data())
def test_head_scores(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    kinds = data.draw(st.one_of(ok(st.lists(st.sampled_from(["previous_token", "duplicate_token", "induction"]),
                                            min_size=1, max_size=3, unique=True)),
                                bad(st.sampled_from([[], ["copying"], "induction_heads", None]), "kind")))
    call(ctx.field.head_scores, n=data.draw(ints(1, 3, "n")), length=data.draw(ints(2, 6, "length", above=400)),
         seed=data.draw(seeds()), kinds=kinds, normalize=data.draw(choices(("targets", "transformer_lens"), "normalize")),
         engine=data.draw(choices((None, "lightcone", "hooks"), "engine")), ex=_ex(data), allow=UNSUPPORTED)


def _components(ctx):
    from fieldcheck import sites as S

    L, H = ctx.n_layers, ctx.n_heads
    return st.one_of(
        ok(st.sampled_from(["all", "heads", "layers"])),
        ok(st.tuples(st.integers(0, L - 1), st.integers(0, H - 1)).map(lambda t: [f"L{t[0]}.H{t[1]}", "embed"])),
        ok(st.integers(0, L - 1).map(lambda l: S.mlp_out(l, "END"))),
        st.integers(L, L + 30).map(lambda l: Arg([f"L{l}.H0"], (f"L{l}.H0", "layer"))),
        ok(st.just(None)),
        bad(st.sampled_from(["mlps", [], ["L0.X1"], 3]), "component"),
    )


@fuzz(50, "Field.dla")
@given(data=st.data())
def test_dla(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    call(ctx.field.dla, ds, data.draw(_components(ctx)), which=data.draw(choices(("clean", "corrupt", "diff"), "which")),
         tol=data.draw(st.one_of(ok(st.sampled_from([None, 1e-3, 0.5])),
                                 bad(st.sampled_from([-1.0, float("nan"), "loose"]), "tol"))),
         ex=_ex(data), allow=UNSUPPORTED)


@fuzz(60, "Field.logit_lens")
@given(data=st.data())
def test_logit_lens(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    call(ctx.field.logit_lens, ds, data.draw(_query_key(ctx, ds.value)), which=data.draw(choices(WHICH, "which")),
         ex=_ex(data))


# --- circuits --------------------------------------------------------------------------------------------


def _circuit_arg(ctx):
    L, H = ctx.n_layers, ctx.n_heads
    node = st.one_of(st.tuples(st.integers(0, L - 1), st.integers(0, H - 1)).map(lambda t: f"L{t[0]}.H{t[1]}"),
                     st.integers(0, L - 1).map(lambda l: f"L{l}.mlp"))
    edge = st.one_of(st.integers(0, L - 1).map(lambda l: f"embed->L{l}.mlp"),
                     st.tuples(st.integers(0, L - 1), st.integers(0, H - 1)).map(lambda t: f"L{t[0]}.H{t[1]}->logits"))
    return st.one_of(
        ok(st.lists(node, min_size=1, max_size=3).map(lambda ns: fc.Circuit(nodes=ns))),
        ok(st.tuples(st.integers(0, L - 1), st.integers(0, H - 1), st.just("END")).map(
            lambda t: fc.Circuit(nodes=[f"L{t[0]}.H{t[1]}@{t[2]}"]))),
        ok(st.lists(edge, min_size=1, max_size=3).map(lambda es: fc.Circuit(edges=es))),
        ok(st.lists(node, min_size=1, max_size=2)),
        bad(st.just([]), "circuit is empty", "at least one"),
        st.integers(L, L + 30).map(lambda l: Arg(fc.Circuit(nodes=[f"L{l}.H0"]), (f"L{l}.H0", "layer"))),
        st.integers(L, L + 30).map(lambda l: Arg([f"L{l}.mlp->logits"], (f"L{l}.mlp", "layer"))),
        bad(st.sampled_from([["nonsense"], ["L0.H0->nowhere"], "L0.H0", 3, None]), "circuit", "node", "edge",
            "sender", "receiver"),
    )


ABLATIONS = ("corrupt", "mean", "zero", "resample")


@fuzz(30, "Field.evaluate_circuit", "Field.minimality", "Circuit.position_mask", "Circuit.mask", "Circuit.all_edges")
@given(data=st.data())
def test_evaluate_circuit_and_minimality(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    circuit = data.draw(_circuit_arg(ctx))
    if isinstance(circuit.value, fc.Circuit) and not circuit.bad and isinstance(ds.value, fc.ContrastiveSet) \
            and not ds.bad and ctx.field.fm is not None:
        from fieldcheck.experiments.edges import edge_graph

        try:
            g = edge_graph(ctx.field)
        except UnsupportedArchitecture:
            g = None
        if g is not None:
            pm = call(circuit.value.position_mask, g, ds)
            # [n_senders, batch, pos]: ones and zeros, None exactly when no node is kept at a position only
            assert (pm is None) == (not circuit.value.positional)
            if isinstance(pm, torch.Tensor):
                assert pm.shape == (g.n_senders, ds.value.n, ds.value.seq_len)
                assert bool(((pm == 0) | (pm == 1)).all())
            mask = call(circuit.value.mask, g)
            everything = call(fc.Circuit.all_edges, g)
            if isinstance(mask, np.ndarray) and isinstance(everything, fc.Circuit):
                assert mask.shape == g.adjacency.shape and not (mask & ~everything.mask(g)).any()
    kw = dict(ablation=data.draw(choices(ABLATIONS, "ablation")), metric=data.draw(metrics(ctx, ds.value)),
              seed=data.draw(seeds()))
    allow = UNSUPPORTED + ((fc.DatasetError, InsufficientData) if kw["ablation"].value == "resample" else ())
    call(ctx.field.evaluate_circuit, ds, circuit, **kw, ex=_ex(data), allow=allow)
    call(ctx.field.minimality, ds, circuit, **kw, ex=_ex(data), allow=allow)


@fuzz(20, "Field.edge_scores", "Field.discover_circuit")
@given(data=st.data())
def test_edge_scores_and_discovery(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool))
    ds = data.draw(datasets(ctx))
    kw = dict(method=data.draw(choices(("eap", "eap-ig"), "method")), steps=data.draw(ints(1, 3, "steps")),
              ablation=data.draw(choices(ABLATIONS, "ablation")), metric=data.draw(metrics(ctx, ds.value)),
              seed=data.draw(seeds()))
    allow = UNSUPPORTED + ((fc.DatasetError, InsufficientData) if kw["ablation"].value == "resample" else ())
    call(ctx.field.edge_scores, ds, **kw, ex=_ex(data), allow=allow)
    k = data.draw(st.one_of(ok(st.integers(1, 4)), bad(st.sampled_from([0, -2, 1.5, None, 10 ** 6]), "k")))
    call(ctx.field.discover_circuit, ds, k, level=data.draw(choices(("edge", "node"), "level")), **kw, ex=_ex(data),
         allow=allow)


@fuzz(12, "Field.faithfulness_curve")
@given(data=st.data())
def test_faithfulness_curve(fuzz_pool, data):
    ctx = data.draw(contexts(fuzz_pool, ("gpt2-2L", "llama-3L", "neox-2L")))
    ds = data.draw(datasets(ctx))
    sizes = data.draw(st.one_of(ok(st.sampled_from([None, [1, 2], [0.5, 1.0], [3]])),
                                bad(st.sampled_from([[], [0], [-1], [1.5], [float("nan")], "all"]), "size")))
    eval_ds = data.draw(st.one_of(ok(st.just(None)), datasets(ctx, invalid=False)))
    call(ctx.field.faithfulness_curve, ds, scores=None, sizes=sizes, level=data.draw(choices(("edge", "node"), "level")),
         ablation=data.draw(choices(ABLATIONS, "ablation")), metric="logit_diff",
         method=data.draw(choices(("eap", "eap-ig"), "method")), steps=data.draw(ints(1, 2, "steps")), seed=0,
         eval_ds=eval_ds, ex=_ex(data), allow=UNSUPPORTED + (fc.DatasetError, InsufficientData))
