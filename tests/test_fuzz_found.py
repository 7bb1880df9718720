"""What the fuzz suite found (issue 23), each shrunk counterexample kept as a regular test.

``CASES`` are bad inputs, each a line of code run on a tiny Llama (3 layers, d_model 32), its IOI set
and a random SAE: the call must raise the FieldcheckError subclass named, with a message containing
the words given. tools/troubleshooting.py runs the same CASES and writes the catalogue of
docs/troubleshooting.md with the message each really prints (``test_troubleshooting_is_up_to_date``).
The other tests are inputs that used to give a wrong answer or a refusal where an answer exists.
"""
from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys
from typing import Optional

import numpy as np
import pytest
import torch

import fieldcheck as fc

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Case:
    """A bad input: ``code`` (evaluated with :func:`namespace`) must raise ``error`` (a class name of
    fieldcheck.errors or fieldcheck.sae) whose message contains every word of ``words``.
    ``found``: how the case was met ("issue": the two cases of issue 23, "fuzz": the fuzz suite)."""

    area: str
    what: str
    code: str
    error: str
    words: tuple
    found: str = "fuzz"


CASES = [
    # --- the two cases of the issue: a claim written for a deeper model -----------------------------------
    Case("results", "a selection that keeps no site (a claim written for a deeper model)",
         'field.patch(ds, S.resid_pre([0, 1], "END")).select(lambda s: s.layer > 90)', "SiteError",
         ("kept no site", "layers"), "issue"),
    Case("results", "a claim about something that is not a result, with direction= (the direction used to be "
         "blamed)", 'fc.assert_effect("not a result", fc.recovered > 0.5, direction="denoise")',
         "AssertionInputError", ("expects a PatchResult", "got str")),
    Case("results", "a logit-lens result indexed by a layer the model does not have",
         "field.logit_lens(ds).at(24)", "SiteError", ("layer 24", "0..3"), "issue"),
    Case("results", "a Green function looked up at a layer that does not exist",
         'field.green(ds, S.resid_pre(0, "S2")).at(9)', "SiteError", ("layer 9",), "issue"),
    Case("results", "direct logit attribution with no component reaching an assertion (argmin of an empty "
         "sequence before, as in the issue)",
         "fc.assert_direct_effect(dataclasses.replace(field.dla(ds), values=np.zeros((0, 4)), labels=[]), "
         "fc.mean > 0.5)", "AssertionInputError", ("no component",)),
    Case("results", "a minimality without parts reaching an assertion (a reduction of an empty array before)",
         'fc.assert_minimal(dataclasses.replace(field.minimality(ds, ["L0.H1", "L1.mlp"]), without=np.zeros((0, 4)), '
         "parts=[]), fc.min_cost > 0.01)", "AssertionInputError", ("no part",)),
    # --- data sets ------------------------------------------------------------------------------------------
    Case("data sets", "a built-in data set with a seed that is not an int",
         "fc.datasets.ioi(model, n=4, seed=None)", "DatasetError", ("seed",)),
    Case("data sets", "sampling with a negative seed", "ds.sample(2, seed=-1)", "DatasetError", ("seed",)),
    Case("data sets", "positions given as a list instead of a dict",
         'fc.ContrastiveSet.from_pairs(model, ["When Mary and John went"], ["When Mary and Anna went"], '
         '[" Mary"], [" John"], positions=[3])', "DatasetError", ("positions", "dict")),
    Case("data sets", "a data set moved to a device that does not exist", 'ds.to("gpu9")', "DeviceError",
         ("gpu9",)),
    Case("data sets", "a grouped mean whose groups do not match the examples",
         "fc.sources.group_mean(torch.zeros(4, 3), torch.tensor([0, 1]))", "SourceError", ("groups",)),
    # --- sites, layers, sources ---------------------------------------------------------------------------
    Case("sites", "an injection scaled by NaN (it used to return no injection at all)",
         'field.injections(field.run(ds), S.Site("resid_pre", 0, "END"), "denoise", fc.sources.other(), '
         'float("nan"))', "SourceError", ("alpha",)),
    Case("sites", "relative layers without a fraction", "S.depth(None)", "SiteError", ("lo", "[0, 1]")),
    Case("sites", "a scale given as text", 'fc.sources.check_alpha("1")', "SourceError", ("alpha",)),
    Case("sites", "a direction that is not one, reaching the runs", 'field.run(ds).target("")', "UsageError",
         ("direction",)),
    Case("circuits", "a circuit evaluated on something that is not a data set",
         'field.evaluate_circuit(None, ["L0.H1"])', "DatasetError", ("ContrastiveSet",)),
    Case("circuits", "an empty circuit", "fc.Circuit(nodes=[])", "UsageError", ("at least one part",)),
    Case("circuits", "a resample ablation of one example (there is no other example to take values from)",
         'field.evaluate_circuit(ds.sample(1, seed=0), ["L0.H1"], ablation="resample")', "InsufficientData",
         ("resample", "at least 2 examples")),
    Case("circuits", "the only part of a circuit removed",
         'fc.Circuit(nodes=["L0.H1"]).without("L0.H1")', "UsageError", ("no part",)),
    # --- dictionary features ----------------------------------------------------------------------------------
    Case("features", "a feature experiment on something that is not a data set",
         "field.feature_activations(None, sae)", "DatasetError", ("ContrastiveSet",)),
    Case("features", "a feature experiment on something that is not a dictionary",
         "field.feature_activations(ds, 'sae')", "DictionaryError", ("not a dictionary",)),
    Case("features", "a latent that is not an int (1.5 used to read as latent 1)",
         "field.feature_activations(ds, sae, latents=[1.5])", "SiteError", ("latent 1.5",)),
    Case("features", "a latent beyond the dictionary", "field.feature_activations(ds, sae, latents=[40])",
         "SiteError", ("latent 40", "0..15")),
    Case("features", "feature activations read at a position past the prompt",
         "field.feature_activations(ds, sae).at(40)", "SiteError", ("position=40", "tokens")),
    Case("features", "feature activations read at a position that is not an int (1.5 used to read as 1)",
         "field.feature_activations(ds, sae).at(1.5)", "SiteError", ("position",)),
    Case("features", "the top latents of a feature DLA with k given as text",
         'field.feature_dla(ds, sae).top("3")', "UsageError", ("k",)),
    Case("features", "a feature circuit without dictionaries", "field.node_attribution(ds, None)", "UsageError",
         ("saes",)),
    Case("features", "gradient node attribution with steps=0 (accepted because the gradient method ignores steps)",
         "field.node_attribution(ds, sae, steps=0)", "UsageError", ("steps", "positive int")),
    Case("features", "selectivity with a threshold that is not a number",
         'field.selectivity(sae, 0, ["the cat sat"], ["a b c"], threshold=float("nan"))', "UsageError",
         ("threshold",)),
    Case("features", "selectivity with an empty text", 'field.selectivity(sae, 0, ["the cat sat"], [""])',
         "DatasetError", ("off", "non-empty")),
    Case("features", "selectivity with one string instead of a list of texts",
         'field.selectivity(sae, 0, "the cat sat", ["a b c"])', "DatasetError", ("on", "list of texts")),
    Case("features", "feature DLA listing no tokens", "field.feature_dla(ds, sae, latents=[0], n_tokens=0)",
         "UsageError", ("n_tokens",)),
    # --- fieldcheck.sae ---------------------------------------------------------------------------------------
    Case("sae", "training on a hook past the model's last layer",
         'fc.sae.train(model, "blocks.9.hook_resid_pre", d_sae=16, k=4, n_tokens=64, progress=False)',
         "SiteError", ("blocks.9", "0..2")),
    Case("sae", "training with d_sae=0 (used to mean the default)",
         'fc.sae.train(model, "blocks.1.hook_resid_pre", d_sae=0, progress=False)', "UsageError", ("d_sae",)),
    Case("sae", "measuring a dictionary of a layer the model does not have",
         "fc.sae.measure(deep_sae, field.fm, ds.clean_tokens)", "DictionaryError", ("blocks.7", "0..2")),
    Case("sae", "measuring on tokens that are not token ids",
         "fc.sae.measure(sae, field.fm, torch.ones(2, 5) * 0.5)", "DatasetError", ("tokens",)),
    Case("sae", "saving something that is not a dictionary", 'fc.sae.save(None, "/tmp/unused")', "DictionaryError",
         ("not a dictionary",)),
    Case("sae", "a corpus that is not a name or a path", "fc.sae.texts(3)", "DictionaryError", ("corpus",)),
]


_NS: Optional[dict] = None


def namespace() -> dict:
    """What the CASES' code sees: fc, S (fieldcheck.sites), torch, np, dataclasses, a tiny Llama ``model`` (3 layers,
    d_model 32, 4 heads), its ``field``, ``ds`` = fc.datasets.ioi(model, n=4), a random SAE ``sae`` on
    blocks.1.hook_resid_pre (16 latents) and ``deep_sae`` on blocks.7 (a layer the model lacks)."""
    global _NS
    if _NS is None:
        from _fuzz import random_sae
        from fieldcheck.testing import tiny_model

        model = tiny_model("llama", n_layers=3, d_model=32, n_heads=4)
        _NS = {"fc": fc, "S": fc.sites, "torch": torch, "np": np, "dataclasses": dataclasses, "model": model, "field": fc.Field(model),
               "ds": fc.datasets.ioi(model, n=4, seed=0), "sae": random_sae("blocks.1.hook_resid_pre", seed=1),
               "deep_sae": random_sae("blocks.7.hook_resid_pre", seed=5, name="deep")}
    return _NS


def run_case(case: Case) -> BaseException:
    """The exception ``case.code`` raises (AssertionError when it raises none)."""
    try:
        eval(case.code, dict(namespace()))  # noqa: S307 - the code is this file's own CASES
    except BaseException as e:  # noqa: BLE001
        return e
    return AssertionError(f"{case.code} raised nothing")


def _error_class(name: str) -> type:
    import fieldcheck.claim.deciding as D
    import fieldcheck.errors as E
    from fieldcheck.sae import dictionary

    return getattr(E, name, None) or getattr(dictionary, name, None) or getattr(D, name)


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input_gives_a_clear_error(case):
    e = run_case(case)
    assert isinstance(e, _error_class(case.error)), f"{case.code}: {type(e).__name__}: {e}"
    for w in case.words:
        assert w in str(e), f"{case.code}: the message does not say {w!r}: {e}"


@pytest.mark.slow   # 5-18 s: make test and CI, not make test-quick
def test_troubleshooting_is_up_to_date():
    """docs/troubleshooting.md's catalogue is what tools/troubleshooting.py writes from CASES."""
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "troubleshooting.py"), "--check"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


# --- inputs that used to give a wrong answer or an error where an answer exists ------------------------------


def test_sae_train_is_the_function_after_its_module_is_imported():
    """``fieldcheck.sae.train`` was the submodule (TypeError: 'module' object is not callable) once
    ``fieldcheck.sae.train`` had been imported, as ``fc.sae.example`` does."""
    import fieldcheck.sae.examples  # noqa: F401 - imports the training module
    import fieldcheck.sae.training  # noqa: F401

    assert callable(fc.sae.train) and fc.sae.train.__name__ == "train"


def test_minimality_of_a_one_part_circuit_compares_with_the_empty_circuit():
    """A one-part circuit without its part is the empty circuit: minimality used to refuse it (a Circuit
    is never empty)."""
    ns = namespace()
    m = ns["field"].minimality(ns["ds"], fc.Circuit(nodes=["L0.H1"]))
    np.testing.assert_allclose(m.without[0], m.empty, rtol=1e-6, atol=1e-6)


def test_a_bootstrap_of_rounding_noise_has_a_positive_p_value():
    """Faithfulness exactly 0.78 on every example: the resamples differ only by rounding (sd ~ 1e-16),
    which the normal tail read as ~1e14 standard errors (p = 0.0). Rounding noise is no spread now: the
    degenerate rule gives p = 2^-n."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    n = 16
    empty = rng.normal(0, 1, n)
    full = empty + rng.uniform(1, 2, n)
    fr = np.array([0.1, 0.5, 1.0])
    circuit = empty[None] + np.array([0.6, 0.78, 0.96])[:, None] * (full - empty)[None]
    curve = SimpleNamespace(fractions=fr, circuit=circuit, full=full, empty=empty, level="edge", method="eap")
    res = fc.assert_faithfulness_curve(curve, fc.area > 0.7, n_boot=500)
    assert 0 < res[0].p_value <= 2.0 ** -n * 1.01


def test_a_rate_with_an_impossible_null_reports_p_zero():
    """``rate > 0`` with successes: the null (rate <= 0) cannot give a success, p = 0 exactly; the
    ClaimResult used to refuse its own p-value."""
    res = fc.assert_prefers(torch.tensor([1.0, 2.0, 0.5]), fc.rate > 0.0)
    assert res[0].p_value == 0.0 and res[0].passed


def test_bool_heads_are_not_head_1():
    """``(True, 0)`` is not the head (1, 0)."""
    ns = namespace()
    with pytest.raises(fc.SiteError, match="names no head"):
        ns["field"].attention(ns["ds"], [(True, 0)])


def test_predict_at_the_final_residual():
    """A prediction at ``resid_post`` of the last block starts the sensitivity at the final residual:
    no block runs after it (IndexError before; found by the long fuzz run)."""
    ns = namespace()
    field, ds = ns["field"], ns["ds"]
    pred = field.predict(ds, fc.sites.resid_post(2, "END"))
    eps = 1e-3  # the first-order prediction against a finite difference of the real patch
    real = field.patch(ds, fc.sites.resid_post(2, "END"), alpha=eps)
    np.testing.assert_allclose(pred.effect, real.effect / eps, rtol=2e-2, atol=2e-2)


def test_second_order_prediction_with_a_metric_callable():
    """``order=2`` differentiates through the metric with torch.func; a metric callable reads a subset of
    the data set there, whose hash could not be computed inside the transform (RuntimeError before)."""
    ns = namespace()
    own = lambda logits, d: logits[:, 0] - logits[:, 1]  # noqa: E731
    r = ns["field"].predict(ns["ds"], fc.sites.resid_pre(0, "END"), order=2, metric=own)
    assert r.values.shape == (1, ns["ds"].n) and np.isfinite(r.values).all()


def test_sites_built_directly_count_negative_layers_and_positions_from_the_end():
    """``Site("resid_pre", -1, -1)`` is ``resid_pre(-1, -1)``: the constructors count negative layers,
    positions and heads from the end, Sites built directly were refused (found by the long fuzz run)."""
    ns = namespace()
    field, ds = ns["field"], ns["ds"]
    direct = field.patch(ds, [fc.sites.Site("resid_pre", -1, -1), fc.sites.Site("attn_head", -3, -2, -3)])
    built = field.patch(ds, fc.sites.resid_pre(-1, -1) + fc.sites.attn_head(-3, 1, -2))
    assert [s.label for s in direct.sites] == [s.label for s in built.sites] == [
        f"L2.resid_pre@{ds.seq_len - 1}", f"L0.H1@{ds.seq_len - 2}"]
    np.testing.assert_array_equal(direct.values, built.values)
    with pytest.raises(fc.SiteError, match=r"layer -4 out of range .*\(or -3\.\.-1\)"):
        field.patch(ds, [fc.sites.Site("resid_pre", -4, 0)])
    with pytest.raises(fc.SiteError, match=r"position -99 out of range"):
        field.patch(ds, [fc.sites.Site("resid_pre", 0, -99)])


def test_a_selectivity_without_spread_has_the_exact_rank_tests_p_value():
    """Activations equal within each group: Welch's t is infinite and scipy's p-value 0.0, which the
    ClaimResult reported (found by the long fuzz run). Now the exact rank test's p for complete
    separation, 1 / C(n_on + n_off, n_on), and with too few examples for it no bound either."""
    from types import SimpleNamespace

    from scipy.special import comb

    def sel(n):
        return SimpleNamespace(on=np.ones(n), off=np.zeros(n), threshold=0.5, latent=0, dictionary="d")

    big = fc.assert_selective(sel(8), fc.mean_diff > 0.5)[0]
    assert big.passed and big.p_value == pytest.approx(1 / comb(16, 8)) and big.interval == (1.0, 1.0)
    with pytest.raises(fc.ClaimFailed) as small:
        fc.assert_selective(sel(2), fc.mean_diff > 0.5)
    small = small.value.results[0]
    assert not small.passed and small.p_value == pytest.approx(1 / 6) and small.interval[0] == -np.inf
    with pytest.raises(fc.ClaimFailed) as wrong:
        fc.assert_selective(sel(8), fc.mean_diff > 2.0)
    wrong = wrong.value.results[0]
    assert not wrong.passed and wrong.p_value == 1.0 and wrong.interval == (1.0, 1.0)


@pytest.mark.parametrize("statistic", ["area", "cmd", "min_cost"])
def test_curve_and_minimality_refuse_a_gap_that_is_not_clearly_away_from_zero(statistic):
    """A full - empty gap whose mean is small against its spread (a random model's IOI set): the
    bootstrap of the ratio swung so far that the interval [5.3, 766] did not contain the estimate
    1.77 (found by the long fuzz run). The curve and minimality now refuse it as the per-site
    assertions do (InsufficientData naming the gap)."""
    from types import SimpleNamespace

    rng = np.random.default_rng(1)
    empty = rng.normal(0, 1, 8)
    full = empty + rng.normal(0.05, 1, 8)
    with pytest.raises(fc.InsufficientData, match="full - empty gap .* not clearly away from 0"):
        if statistic == "min_cost":
            m = SimpleNamespace(without=np.stack([full, empty]), circuit=full, full=full, empty=empty, parts=["a", "b"])
            fc.assert_minimal(m, fc.min_cost > 0.01)
        else:
            curve = SimpleNamespace(fractions=np.array([0.1, 1.0]), circuit=np.stack([empty, full]), full=full,
                                    empty=empty, level="edge", method="eap")
            fc.assert_faithfulness_curve(curve, getattr(fc, statistic) > 0.5)


@pytest.mark.parametrize("engine", ["lightcone", "hooks"])
def test_a_metric_of_the_wrong_shape_is_named_on_both_engines(engine):
    """A metric function returning one number too many: the light-cone engine named it, the hooked
    path raised torch's "expanded size of the tensor (4) must match the existing size (5)" (found by
    the long fuzz run)."""
    ns = namespace()
    field = fc.Field(ns["model"], engine=engine)

    def too_long(logits, ds):
        return torch.zeros(logits.shape[0] + 1)

    with pytest.raises(fc.MetricError, match=r"returned shape \(5,\).*one number per example, shape \(4,\)"):
        field.patch(ns["ds"], fc.sites.resid_pre(1, "END"), metric=too_long)


def test_an_auroc_far_beyond_its_bar_has_a_positive_p_value():
    """Two separated groups of 100: DeLong's z is so large that the normal tail underflowed to p =
    0.0 (found by the long fuzz run); the smallest positive float now, and the claim passes."""
    from types import SimpleNamespace

    sel = SimpleNamespace(on=np.arange(100.0) + 1000, off=np.arange(100.0), threshold=500.0, latent=0,
                          dictionary="d")
    res = fc.assert_selective(sel, fc.auroc > 0.5)[0]
    assert res.passed and 0 < res.p_value <= np.finfo(float).tiny * 1.01
