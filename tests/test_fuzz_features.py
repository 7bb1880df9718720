"""Fuzz of the dictionary-feature calls (issue 23): ``fieldcheck.sites.features`` and friends, the
feature methods of ``fc.Field``, the feature assertions and ``fieldcheck.sae``.

The dictionaries are random SAEs built in-process (``Dictionary(W_enc, ...)``: no training, no
files) on the tiny models of tests/_fuzz.py: two fitting the model (layers 1 and 2), one of another
width (``d_in`` 48 on a d_model-32 model) and one on a layer the model does not have. The property
is tests/_fuzz.py's: a result that passes its invariants (tests/_invariants.py), or a
FieldcheckError naming the bad argument.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st

import fieldcheck as fc
import _fuzz
from _fuzz import Arg, Exerciser, bad, call, choices, datasets, fuzz, metrics, ok, random_sae
from fieldcheck.errors import InsufficientData

# the hypothesis suites are CI's (make test), not the edit-test loop's (make test-quick)
pytestmark = pytest.mark.slow

CTX = "llama-3L"   # the feature tests' model: 3 layers, d_model 32


@pytest.fixture(scope="module")
def feats(fuzz_pool):
    ctx = fuzz_pool.get(CTX)
    return ctx, {
        "l1": random_sae("blocks.1.hook_resid_pre", seed=1),
        "l2": random_sae("blocks.2.hook_resid_pre", seed=2, architecture="topk"),
        "mlp": random_sae("blocks.0.hook_mlp_out", seed=3),
        "wide": random_sae("blocks.1.hook_resid_pre", d_in=48, seed=4, name="wide"),
        "deep": random_sae("blocks.7.hook_resid_pre", seed=5, name="deep"),
    }


def saes(d: dict, fitting=("l1", "l2", "mlp")) -> st.SearchStrategy[Arg]:
    """One dictionary: a fitting one, one of another width or layer, or something that is not one."""
    return st.one_of(ok(st.sampled_from(list(fitting)).map(d.get)),
                     st.just(Arg(d["wide"], ("d_in", "d_model", "width", "48", "wide"))),
                     st.just(Arg(d["deep"], ("layer", "blocks.7", "deep"))),
                     bad(st.sampled_from([None, "sae", 3, object()]), "dictionary", "sae"))


def latents(d_sae: int = 16, all_ok: bool = True) -> st.SearchStrategy[Arg]:
    strats = [ok(st.integers(0, d_sae - 1)), ok(st.lists(st.integers(0, d_sae - 1), min_size=1, max_size=3)),
              st.integers(d_sae, d_sae + 50).map(lambda i: Arg([i], ("latent", str(i)))),
              bad(st.sampled_from([[1.5], ["a"], [True], None, {"x": 1}]), "latent")]
    if all_ok:
        strats.append(ok(st.just("all")))
    return st.one_of(*strats)


def _ex(data) -> Exerciser:
    return Exerciser(data, plots=data.draw(st.integers(0, 5), label="plots") == 5)


# --- feature sites --------------------------------------------------------------------------------------


@fuzz(60, "fc.sites.features", "fc.sites.feature", "fc.sites.sae_error", "fc.sites.is_feature_sites",
      "fc.sites.site_of_hook")
@given(data=st.data())
def test_feature_sites_and_patches(feats, data):
    ctx, d = feats
    ds = data.draw(datasets(ctx, ("ioi4", "ioi1", "induction3")))
    sae = data.draw(saes(d))
    positions = data.draw(st.one_of(ok(st.sampled_from(["all", "END", 0, -1, ["END", 1]])),
                                    bad(st.sampled_from(["NOPE", 99, [1.5]]), "position")))
    kind = data.draw(st.sampled_from(["features", "feature", "sae_error"]))
    # a feature site set is resolved against the data set by the call that gets it: its constructor may
    # refuse a value it can see is wrong (a non-dictionary, a latent that is not an int), or leave it to the call
    if kind == "features":
        lat = data.draw(latents())
        make = lambda: fc.sites.features(sae.value, lat.value, positions.value,  # noqa: E731
                                         error=data.draw(st.sampled_from([False, True])))
        words = sae.bad + lat.bad + positions.bad
    elif kind == "feature":
        lat = data.draw(st.one_of(ok(st.integers(0, 15)), st.integers(16, 40).map(lambda i: Arg(i, ("latent",)))))
        make = lambda: fc.sites.feature(sae.value, lat.value, positions.value)  # noqa: E731
        words = sae.bad + lat.bad + positions.bad
    else:
        make = lambda: fc.sites.sae_error(sae.value, positions.value)  # noqa: E731
        words = sae.bad + positions.bad
    fn = {"features": fc.sites.features, "feature": fc.sites.feature, "sae_error": fc.sites.sae_error}[kind]
    try:
        sites = make()
    except fc.FieldcheckError as e:
        assert words and any(w.lower() in str(e).lower() for w in words), f"{kind}: {type(e).__name__}: {e}"
        return
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"{fn.__name__} raised {type(e).__name__}: {e}") from e
    _fuzz.CALLS[f"fc.sites.{kind}"] += 1
    assert fc.sites.is_feature_sites(sites) and not fc.sites.is_feature_sites([])
    hook = data.draw(st.one_of(ok(st.sampled_from(["blocks.0.hook_resid_pre", "blocks.2.hook_mlp_out",
                                                   "blocks.1.hook_resid_mid"])),
                               bad(st.sampled_from(["blocks.x.hook_resid_pre", "hook_z", "", None]), "hook")))
    where = call(fc.sites.site_of_hook, hook)
    if isinstance(where, tuple):
        assert where[0] in fc.sites.KINDS + ("mlp_in",) and where[1] >= 0
    # the site's own bad values (a latent, a position, the dictionary) must be refused by the patch
    arg = Arg(sites, words + ds.bad)
    direction = data.draw(choices(("denoise", "noise"), "direction"))
    res = call(ctx.field.patch, ds, arg, direction=direction, metric=data.draw(metrics(ctx, ds.value)),
               jointly=data.draw(st.booleans()),
               source=data.draw(st.one_of(ok(st.sampled_from([None, "zero", "mean"])),
                                          bad(st.sampled_from(["gaussian", 3]), "source"))),
               ex=_ex(data))
    if isinstance(res, fc.PatchResult) and data.draw(st.booleans()):
        from fieldcheck.claim.criteria import effect, recovered

        crit = data.draw(st.sampled_from([recovered > 0.5, effect < 0.0]))
        call(fc.assert_feature_effect, res, crit, n_boot=100, claims=True, allow=(InsufficientData,))


# --- activations, attribution, circuits ---------------------------------------------------------------------


@fuzz(40, "Field.feature_activations", "Field.feature_dla")
@given(data=st.data())
def test_feature_activations_and_dla(feats, data):
    ctx, d = feats
    ds = data.draw(datasets(ctx, ("ioi4", "ioi1", "induction3")))
    sae = data.draw(saes(d))
    which = data.draw(choices(("clean", "corrupt"), "which"))
    call(ctx.field.feature_activations, ds, sae, data.draw(latents()), which=which, ex=_ex(data))
    n_tokens = data.draw(st.one_of(ok(st.integers(1, 8)), bad(st.sampled_from([0, -1, 2.5, None]), "n_tokens")))
    call(ctx.field.feature_dla, ds, sae, data.draw(latents()), which=which, n_tokens=n_tokens, ex=_ex(data))


def _sae_list(d: dict) -> st.SearchStrategy[Arg]:
    return st.one_of(ok(st.sampled_from([d["l1"], [d["l1"], d["l2"]], [d["l2"]]])),
                     st.just(Arg([d["l1"], d["wide"]], ("d_in", "d_model", "width", "48", "wide"))),
                     bad(st.sampled_from([[], None, "l1", [3]]), "dictionar", "sae"))


@fuzz(24, "Field.node_attribution", "Field.feature_circuit", "Field.evaluate_feature_circuit")
@given(data=st.data())
def test_feature_circuits(feats, data):
    ctx, d = feats
    ds = data.draw(datasets(ctx, ("ioi4", "induction3", "ioi1")))
    dl = data.draw(_sae_list(d))
    method = data.draw(choices(("gradient", "integrated"), "method"))
    ablation = data.draw(choices(("mean", "corrupt", "zero"), "ablation"))
    steps = data.draw(st.one_of(ok(st.integers(1, 3)), bad(st.sampled_from([0, -2, 1.5, None]), "steps")))
    integ = method.value == "integrated" and ablation.value not in ("corrupt",) and not ablation.bad
    allow = (fc.UsageError,) if integ else ()
    scores = call(ctx.field.node_attribution, ds, dl, method=method, steps=steps, ablation=ablation, ex=_ex(data),
                  allow=allow)
    k = data.draw(st.one_of(ok(st.integers(1, 6)), bad(st.sampled_from([0, -1, 2.5, None]), "k")))
    res = call(ctx.field.feature_circuit, ds, dl, k=k, method=method, steps=steps, ablation=ablation,
               edges=data.draw(st.booleans()), ex=_ex(data), allow=allow)
    if isinstance(scores, Exception) or isinstance(res, Exception):
        return
    nodes = data.draw(st.one_of(ok(st.just(res.nodes)), ok(st.just(scores.nodes[:3])),
                                bad(st.sampled_from([[], None, ["L1.H0"], "nodes"]), "node")))
    ev = call(ctx.field.evaluate_feature_circuit, ds, nodes, dl, ablation=ablation, ex=_ex(data))
    if not isinstance(ev, Exception):
        from fieldcheck.claim.criteria import completeness, faithfulness

        call(fc.assert_feature_circuit, ev, data.draw(st.sampled_from([faithfulness > 0.5, completeness > 0.5])),
             n_boot=100, claims=True, allow=(InsufficientData,))


@fuzz(30, "Field.selectivity", "Field.top_examples")
@given(data=st.data())
def test_selectivity_and_top_examples(feats, data):
    ctx, d = feats
    sae = data.draw(saes(d))
    on = data.draw(st.one_of(datasets(ctx, ("ioi4", "induction3"), invalid=False),
                             ok(st.just(["Mary and John went to the store", "the the the"])),
                             bad(st.sampled_from([[], "one text", None, [3]]), "on", "text", "prompt")))
    off = data.draw(st.one_of(ok(st.just(["a b c", "the cat sat on the mat", "x"])),
                              datasets(ctx, ("ioi1",), invalid=False),
                              bad(st.sampled_from([[], None, [""]]), "off", "text", "prompt", "empty")))
    latent = data.draw(st.one_of(ok(st.integers(0, 15)), st.integers(16, 60).map(lambda i: Arg(i, ("latent", str(i)))),
                                 bad(st.sampled_from([1.5, "3", None, True]), "latent")))
    position = data.draw(st.one_of(ok(st.just("max")),
                                   bad(st.sampled_from(["NOPE", 99, None]), "position")))
    threshold = data.draw(st.one_of(ok(st.floats(-1, 1)), bad(st.sampled_from([float("nan"), "x", None]),
                                                             "threshold")))
    sel = call(ctx.field.selectivity, sae, latent, on, off, position=position, threshold=threshold, ex=_ex(data))
    if not isinstance(sel, Exception):
        from fieldcheck.claim.criteria import auroc, mean_diff, rate_off, rate_on

        call(fc.assert_selective, sel, data.draw(st.sampled_from([rate_on > 0.5, rate_off < 0.5, auroc > 0.6,
                                                                  mean_diff > 0.0])),
             n_boot=100, claims=True, allow=(InsufficientData,))
    texts = data.draw(st.one_of(ok(st.just(["Mary and John went to the store", "the cat sat on the mat", "x y"])),
                                bad(st.sampled_from([[], "a text", None, [1, 2]]), "text")))
    call(ctx.field.top_examples, sae, data.draw(latents()), texts,
         k=data.draw(st.one_of(ok(st.integers(1, 5)), bad(st.sampled_from([0, -1, 1.5]), "k"))),
         window=data.draw(st.one_of(ok(st.integers(0, 6)), bad(st.sampled_from([-1, 2.5, None]), "window"))),
         ex=_ex(data))


# --- fieldcheck.sae ---------------------------------------------------------------------------------------


@fuzz(30, "fc.sae.save", "fc.sae.load", "fc.sae.measure", "fc.sae.texts", "fc.sae.train", "fc.sae.example")
@given(data=st.data())
def test_sae_files_and_measures(feats, data, tmp_path_factory):
    ctx, d = feats
    folder = tmp_path_factory.mktemp("sae")
    sae = data.draw(st.one_of(ok(st.sampled_from([d["l1"], d["l2"]])),
                              bad(st.sampled_from([None, "sae", 3]), "dictionary", "sae")))
    out = call(fc.sae.save, sae, folder / "one")
    if not isinstance(out, Exception):
        path = data.draw(st.one_of(ok(st.just(out)), bad(st.just(folder / "missing"), "missing", "does not exist",
                                                          "cfg.json")))
        back = call(fc.sae.load, path)
        if not isinstance(back, Exception):
            assert torch.equal(back.W_enc, sae.value.W_enc) and back.hook_name == sae.value.hook_name
    garbage = folder / "garbage"
    garbage.mkdir(exist_ok=True)
    (garbage / "cfg.json").write_text(data.draw(st.sampled_from(["{", "[]", '{"architecture": "x"}', "{}"])))
    call(fc.sae.load, Arg(garbage, ("cfg.json", "config", "architecture", "json", "sae_weights", "missing")))
    tokens = data.draw(st.one_of(ok(st.just(ctx.sets["ioi4"].clean_tokens)),
                                 bad(st.sampled_from([torch.zeros(0, 5, dtype=torch.long),
                                                      torch.ones(2, 3) * 0.5,
                                                      torch.full((2, 4), 10 ** 7, dtype=torch.long), "text"]),
                                     "tokens")))
    call(fc.sae.measure, data.draw(saes(d, ("l1", "l2"))), ctx.field.fm, tokens, ce=data.draw(st.booleans()))
    call(fc.sae.texts, data.draw(st.one_of(ok(st.just("pydoc")),
                                           bad(st.sampled_from(["nonexistent-corpus", str(folder / "none.txt"), 3]),
                                               "corpus"))), seed=data.draw(st.integers(0, 3)))
    # train and example: their bad arguments must be refused before any training starts (under a
    # temporary FIELDCHECK_HOME, so that one accepted by mistake caches nothing in the user's folder)
    import os

    old_home = os.environ.get("FIELDCHECK_HOME")
    os.environ["FIELDCHECK_HOME"] = str(folder / "home")
    try:
        _train_and_example(ctx, data)
    finally:
        if old_home is None:
            os.environ.pop("FIELDCHECK_HOME")
        else:
            os.environ["FIELDCHECK_HOME"] = old_home


def _train_and_example(ctx, data):
    call(fc.sae.train, ctx.model, data.draw(bad(st.sampled_from(["blocks.9.hook_resid_pre", "hook_nothing", 3]),
                                                "hook")), d_sae=16, k=4, n_tokens=64, progress=False)
    kw = {"d_sae": 16, "k": 4, "n_tokens": 64}
    kw.update(data.draw(st.sampled_from([{"d_sae": Arg(0, ("d_sae",))}, {"k": Arg(0, ("k",))},
                                         {"n_tokens": Arg(-5, ("n_tokens",))}, {"epochs": Arg(0, ("epochs",))},
                                         {"corpus": Arg("no-such-corpus", ("corpus",))}])))
    call(fc.sae.train, ctx.model, "blocks.1.hook_resid_pre", **kw, progress=False)
    call(fc.sae.example, data.draw(bad(st.sampled_from(["no-such-model", 3, None, ctx.model]), "model", "example",
                                       "built-in")), progress=False)
