"""Dictionary features in the field: patches against TransformerLens's own hooks, attribution
against patches and finite differences, feature circuits against brute-force ablation, and the
feature assertions against scipy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fieldcheck as fc
from fieldcheck.sae.training import train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import os
    home = tmp_path_factory.mktemp("fchome")
    old = os.environ.get("FIELDCHECK_HOME")
    os.environ["FIELDCHECK_HOME"] = str(home)
    m = fc.testing.tiny_model("llama", n_layers=3, d_model=64, seed=1)
    kw = dict(d_sae=96, k=8, n_tokens=4000, context=32, corpus="pydoc", epochs=3, batch_size=256, progress=False)
    d1 = train(m, "blocks.1.hook_resid_pre", **kw)
    d2 = train(m, "blocks.2.hook_resid_pre", **kw)
    if old is None:
        os.environ.pop("FIELDCHECK_HOME")
    else:
        os.environ["FIELDCHECK_HOME"] = old
    field = fc.Field(m)
    ds = fc.datasets.ioi(m, n=12, seed=0)
    return m, field, ds, d1, d2


def _tl_patch(model, ds, d, latent, direction="denoise"):
    """The same feature patch through TransformerLens hooks on the bridge (independent of the engine)."""
    clean, corrupt = ds.clean_tokens, ds.corrupt_tokens
    tgt, src = (corrupt, clean) if direction == "denoise" else (clean, corrupt)
    _, cs = model.run_with_cache(src, names_filter=lambda n: n == d.hook_name)
    _, ct = model.run_with_cache(tgt, names_filter=lambda n: n == d.hook_name)
    end = ds.positions["END"]
    b = torch.arange(ds.n)
    df = d.encode(cs[d.hook_name][b, end])[:, latent] - d.encode(ct[d.hook_name][b, end])[:, latent]
    delta = df[:, None] * d.W_dec[latent]

    def hook(act, hook=None):
        act = act.clone()
        act[b, end] += delta
        return act
    logits = model.run_with_hooks(tgt, fwd_hooks=[(d.hook_name, hook)])[b, end]
    return (logits[b, ds.answers] - logits[b, ds.wrong]).detach().numpy()


def test_feature_patch_matches_transformer_lens_hooks(setup):
    m, field, ds, d1, _ = setup
    run = field.feature_activations(ds, d1)
    end = run.at("END")
    latents = [int(i) for i in np.argsort(-np.abs(end).sum(0))[:4]]
    res = field.patch(ds, fc.sites.features(d1, latents, "END"))
    for row, lat in enumerate(latents):
        np.testing.assert_allclose(res.values[row], _tl_patch(m, ds, d1, lat), rtol=1e-4, atol=1e-4)


def test_all_features_and_error_everywhere_restore_the_other_run(setup):
    _, field, ds, d1, _ = setup
    for direction, base in (("denoise", "baseline_clean"), ("noise", "baseline_corrupt")):
        res = field.patch(ds, fc.sites.features(d1, "all", "all", error=True), direction=direction, jointly=True)
        np.testing.assert_allclose(res.values[0], getattr(res, base), rtol=1e-4, atol=1e-4)
    nothing = field.patch(ds, fc.sites.features(d1, [0, 1], "END"), alpha=0.0)
    np.testing.assert_array_equal(nothing.effect, 0.0)
    assert nothing.cost["sae"][0]["trained_on"] == "tiny-llama" and not nothing.cost["sae"][0]["other_model"]


def test_attribution_matches_patches_within_first_order(setup):
    _, field, ds, d1, _ = setup
    sites = fc.sites.features(d1, "all", "END", error=True)
    pred = field.predict(ds, sites)
    real = field.patch(ds, sites)
    active = np.abs(real.effect).max(1) > 0
    P, A = pred.effect[active], real.effect[active]
    assert active.sum() > 5
    assert np.corrcoef(P.ravel(), A.ravel())[0, 1] > 0.9
    # at a small scale the first-order prediction is the derivative: central finite differences
    eps = 1e-2
    rows = fc.sites.features(d1, list(range(0, 96, 8)), "END")
    up = field.patch(ds, rows, source="steer", alpha=eps).effect
    down = field.patch(ds, rows, source="steer", alpha=-eps).effect
    slope = field.predict(ds, rows, source="steer", alpha=1.0).effect
    fd = (up - down) / (2 * eps)
    np.testing.assert_allclose(slope, fd, rtol=2e-2, atol=2e-3 * np.abs(fd).max())


def _end_change(field, ds, d, what="f"):
    """Per example, clean minus corrupt at END of the feature activations (``[batch, d_sae]``) or
    of the error term (``[batch, d_model]``)."""
    from fieldcheck.experiments.features import feature_run

    vals = getattr(feature_run(field, ds, d), what)
    b, end = torch.arange(ds.n), ds.positions["END"]
    return (vals["clean"][b, end] - vals["corrupt"][b, end]).detach()


def test_feature_transfer_is_the_equivalent_steering_source(setup):
    """A feature's displacement moved into targets equals steering their residual at the SAE's
    hook by the activation change times the decoder row (the mean, or each example's own); the
    error node's equals steering by the change of the error term."""
    m, field, ds, d1, _ = setup
    a = _end_change(field, ds, d1)
    lat = int(a.abs().mean(0).argmax())
    site = fc.sites.feature(d1, lat, "END")
    at = fc.sites.resid_pre(1, "END")
    for pair, vec in (("mean", a[:, lat].mean() * d1.W_dec[lat]), ("matched", a[:, lat, None] * d1.W_dec[lat])):
        t = field.transfer(ds, site, pair=pair, alpha=0.7)
        ref = field.patch(ds, at, source=vec.detach(), alpha=0.7)
        np.testing.assert_allclose(t.after, ref.values[0], rtol=1e-5, atol=1e-5)
        assert t.site.label.endswith(f"F{lat}@END") and t.cost["sae"][0]["sae"] == d1.name
    targets = fc.datasets.ioi(m, n=6, seed=5)
    t = field.transfer(ds, site, targets=targets)
    ref = field.patch(targets, at, source=(a[:, lat].mean() * d1.W_dec[lat]).detach())
    np.testing.assert_allclose(t.after, ref.values[0], rtol=1e-5, atol=1e-5)
    e = _end_change(field, ds, d1, "err")
    t = field.transfer(ds, fc.sites.sae_error(d1, "END"))
    np.testing.assert_allclose(t.after, field.patch(ds, at, source=e.mean(0)).values[0], rtol=1e-5, atol=1e-5)
    assert np.all(field.transfer(ds, site, alpha=0.0).shift == 0.0)
    with pytest.raises(fc.errors.SiteError, match="one feature site"):
        field.transfer(ds, fc.sites.features(d1, [0, 1], "END"))


def test_feature_path_patching_against_joint_patches_and_hooks(setup):
    """Feature senders of two SAEs sent into every downstream receiver equal their joint feature
    patch; sent into the final residual only, the direct effect through TransformerLens's hooks."""
    m, field, ds, d1, d2 = setup
    a1, a2 = _end_change(field, ds, d1), _end_change(field, ds, d2)
    l1 = [int(i) for i in a1.abs().mean(0).argsort(descending=True)[:3]]
    l2 = [int(i) for i in a2.abs().mean(0).argsort(descending=True)[:2]]
    senders = fc.sites.features(d1, l1, "END") + fc.sites.features(d2, l2, "all", error=True)
    for direction in ("denoise", "noise"):
        joint = field.patch(ds, senders, direction=direction, jointly=True)
        path = field.path_patch(ds, senders, fc.downstream(senders, field.n_layers), direction=direction)
        np.testing.assert_allclose(path.values[0], joint.values[0], rtol=1e-4, atol=1e-4)
    one = fc.sites.features(d1, l1, "END")
    per = field.path_patch(ds, one, fc.downstream(one, field.n_layers), jointly=False)
    np.testing.assert_allclose(per.values, field.patch(ds, one).values, rtol=1e-4, atol=1e-4)
    # the direct path of a layer-1 feature: the change added to the final residual only
    direct = field.path_patch(ds, one, "final").values[0]
    b, end = torch.arange(ds.n), ds.positions["END"]
    delta = a1[:, l1] @ d1.W_dec[l1]
    last = f"blocks.{field.n_layers - 1}.hook_resid_post"

    def hook(act, hook=None):
        act = act.clone()
        act[b, end] += delta
        return act
    logits = m.run_with_hooks(ds.corrupt_tokens, fwd_hooks=[(last, hook)])[b, end]
    np.testing.assert_allclose(direct, (logits[b, ds.answers] - logits[b, ds.wrong]).detach().numpy(),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(fc.errors.UsageError, match="order=1"):
        field.predict(ds, one, order=2)


def test_integrated_attribution_adds_up_to_the_gap(setup):
    _, field, ds, d1, _ = setup
    pred = field.predict(ds, fc.sites.features(d1, "all", "all", error=True), method="integrated", steps=24)
    total = pred.effect.sum(0)  # every node at the site: integrated gradients are complete
    gap = pred.baseline_clean - pred.baseline_corrupt
    np.testing.assert_allclose(total, gap, rtol=2e-2, atol=2e-2 * np.abs(gap).max())


def test_feature_circuit_against_brute_force_ablation(setup):
    _, field, ds, d1, d2 = setup
    res = field.feature_circuit(ds, [d1, d2], k=12, ablation="mean")
    sc = res.scores
    nodes = res.nodes
    real = field.patch(ds, nodes, direction="noise", source="mean")
    pred = np.array([sc.scores[sc.nodes.index(n)] for n in nodes])
    assert np.corrcoef(real.effect.mean(1), pred.mean(1))[0, 1] > 0.8
    everything = field.evaluate_feature_circuit(ds, sc.nodes, [d1, d2])
    np.testing.assert_allclose(everything.circuit, everything.full, rtol=1e-4, atol=1e-4)
    assert abs(everything.faithfulness - 1) < 1e-4 and abs(everything.completeness - 1) < 1e-4
    empty = field.evaluate_feature_circuit(ds, [sc.nodes[0]], [d1, d2])
    assert res.edges and all(len(e) == 3 for e in res.edges)
    assert 0 <= len(empty.nodes) == 1 and np.isfinite(empty.faithfulness)
    gap = everything.full - everything.empty
    if abs(gap.mean()) < 0.25 * gap.std(ddof=1):  # the random model barely prefers anything: refused, not decided
        with pytest.raises(fc.errors.InsufficientData, match="full - empty gap"):
            fc.assert_feature_circuit(everything, fc.faithfulness > 0.9)


def test_assert_feature_circuit_ratios():
    from fieldcheck.experiments.feature_circuits import FeatureCircuitResult

    rng = np.random.default_rng(1)
    empty = rng.normal(0, 0.3, 24)
    full = empty + 2 + rng.normal(0, 0.3, 24)
    circuit = empty + 0.9 * (full - empty) + rng.normal(0, 0.05, 24)
    complement = empty + 0.05 * (full - empty)
    r = FeatureCircuitResult([], circuit, complement, full, empty)
    assert r.faithfulness == pytest.approx((circuit - empty).sum() / (full - empty).sum())
    assert r.completeness == pytest.approx(1 - (complement - empty).sum() / (full - empty).sum())
    out = fc.assert_feature_circuit(r, fc.faithfulness > 0.8, fc.completeness > 0.9)
    assert out[0].interval[0] < r.faithfulness < out[0].interval[1] and out[0].examples["kind"] == "ratio"
    with pytest.raises(fc.ClaimFailed, match="faithfulness"):
        fc.assert_feature_circuit(r, fc.faithfulness > 0.95)


def test_selectivity_statistics_against_scipy():
    from scipy import stats

    from fieldcheck.claim.feature_assertions import delong
    from fieldcheck.experiments.feature_views import Selectivity

    rng = np.random.default_rng(0)
    on, off = rng.gamma(3, 1, 40), np.where(rng.random(50) < 0.7, 0.0, rng.gamma(1, 1, 50))
    sel = Selectivity("sae", 3, on, off)
    auc, se = delong(on, off)
    u = stats.mannwhitneyu(on, off).statistic / (on.size * off.size)
    assert abs(auc - u) < 1e-12 and 0 < se < 0.1
    res = fc.assert_selective(sel, fc.rate_on > 0.8, fc.rate_off < 0.6, fc.mean_diff > 1.0, fc.auroc > 0.8)
    welch = stats.ttest_ind(on, off + 1.0, equal_var=False, alternative="greater").pvalue
    assert abs(res[2].p_value - welch) < 1e-12
    assert res[0].estimate == pytest.approx((on > 0).mean()) and res[3].estimate == pytest.approx(auc)
    with pytest.raises(fc.ClaimFailed, match="auroc"):
        fc.assert_selective(sel, fc.auroc > 0.99)


def test_feature_views_on_a_tiny_model(setup):
    _, field, ds, d1, _ = setup
    acts = field.feature_activations(ds, d1, latents=[0, 1, 2])
    assert acts.values.shape == (ds.n, ds.seq_len, 3) and "FeatureActivations" in acts.summary()
    sel = field.selectivity(d1, int(np.argmax(acts.values.max((0, 1)))), ds, ["the the the", "a b c"])
    assert sel.on.shape == (ds.n,) and sel.off.shape == (2,)
    top = field.top_examples(d1, [0, 1], ["Mary and John went to the store", "the cat sat on the mat"], k=3)
    assert set(top.examples) == {0, 1} and "TopExamples" in top.summary()
    dla = field.feature_dla(ds, d1, latents=list(range(10)))
    assert dla.values.shape == (10, ds.n) and len(dla.promoted[0]) == 5
    for obj in (acts, sel, top, dla):
        assert isinstance(obj.to_dict(), dict)
    res = field.patch(ds, fc.sites.features(d1, [0, 1], "END"))
    out = fc.assert_feature_effect(res, fc.effect > -100.0)
    assert out[0].details["sae"][0]["sae"] == d1.name


def test_feature_sites_errors(setup):
    _, field, ds, d1, _ = setup
    with pytest.raises(fc.errors.SiteError, match="latent 500"):
        field.patch(ds, fc.sites.features(d1, [500], "END"))
    with pytest.raises(fc.errors.SiteError, match="position name"):
        field.patch(ds, fc.sites.features(d1, [0], "NOPE"))
    with pytest.raises(fc.errors.SourceError, match="feature sources"):
        field.patch(ds, fc.sites.features(d1, [0], "END"), source="gaussian")
    with pytest.raises(fc.errors.SiteError, match="not a dictionary"):
        fc.sites.features(object(), [0])
