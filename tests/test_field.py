"""Field, sites, sources and PatchResult: behaviour, identities and errors (tiny models).

The light-cone engine is checked against TransformerLens's own patching and the hooked path in
tests/test_engine_equivalence.py; here: the objects users touch and the errors they get.
"""
import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

import fieldcheck as fc
from fieldcheck import sites as S
from fieldcheck.errors import DatasetError, NumericalError, SiteError, SourceError, MetricError
from fieldcheck.field.arch import _raw
from fieldcheck.testing import tiny_model


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def setup(request):
    m = tiny_model(request.param, n_layers=3)
    ds = fc.datasets.ioi(m, n=6, seed=2)
    return m, ds, fc.Field(m)


def test_phi_shape_and_final_layer(setup):
    m, ds, f = setup
    phi = f.phi(ds, "clean")
    assert phi.shape == (m.cfg.n_layers + 1, ds.n, ds.seq_len, m.cfg.d_model)
    _, cache = m.run_with_cache(ds.clean_tokens)
    assert torch.allclose(phi[1], cache["blocks.0.hook_resid_post"], atol=1e-5)
    assert torch.allclose(phi[-1], cache[f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"], atol=1e-5)


def test_run_is_cached_by_content(setup):
    m, ds, f = setup
    a = f.run(ds)
    assert f.run(ds.subset(list(range(ds.n)))) is a
    assert f.run(ds.subset([0, 1])) is not a


def test_repr_carries_no_volatile_state(setup):
    """The repr shows up in hypothesis's falsifying examples and so in reports: it must not
    change with the run cache (serial and xdist runs give identical reports)."""
    m, ds, f = setup
    before = repr(fc.Field(m))
    f.run(ds)
    f.patch(ds, S.resid_pre(0, "END"))
    assert repr(f) == before and "cached" not in before


def test_baselines_match_the_models_logits(setup):
    m, ds, f = setup
    clean, corrupt = f.baselines(ds)
    logits = m(ds.clean_tokens)[:, -1]
    ref = logits[torch.arange(ds.n), ds.answers] - logits[torch.arange(ds.n), ds.wrong]
    assert torch.allclose(clean.float(), ref, atol=1e-4)
    r = f.patch(ds, S.resid_pre(0, "all"), jointly=True)
    np.testing.assert_allclose(r.baseline_clean, clean.numpy(), atol=1e-6)


def test_joint_denoise_all_positions_layer0_reproduces_clean(setup):
    m, ds, f = setup
    r = f.patch(ds, S.resid_pre(0, "all"), jointly=True)
    np.testing.assert_allclose(r.values[0], r.baseline_clean, atol=1e-5)
    np.testing.assert_allclose(r.normalized[0], 1.0, atol=1e-4)
    r = f.patch(ds, S.resid_pre(0, "all"), jointly=True, direction="noise")
    np.testing.assert_allclose(r.values[0], r.baseline_corrupt, atol=1e-5)


def test_zero_delta_sites_and_alpha_zero_are_exact_noops(setup):
    m, ds, f = setup
    before = S.resid_pre("all", list(range(int(ds.first_diff.min()))))
    r = f.patch(ds, before)
    assert np.all(r.effect == 0.0) and r.skipped.all()
    r = f.patch(ds, S.resid_pre("all", "all"), alpha=0.0)
    assert np.all(r.effect == 0.0)


def test_effect_normalized_and_direction_recorded(setup):
    m, ds, f = setup
    r = f.patch(ds, S.resid_pre([0, 1], ["S2", "END"]), direction="noise")
    assert r.direction == "noise"
    np.testing.assert_allclose(r.effect, r.values - r.baseline_clean[None])
    gap = r.baseline_clean - r.baseline_corrupt
    np.testing.assert_allclose(r.normalized, (r.values - r.baseline_corrupt[None]) / gap[None])
    assert [s.label for s in r.sites] == ["L0.resid_pre@S2", "L0.resid_pre@END", "L1.resid_pre@S2",
                                          "L1.resid_pre@END"]


def test_several_metrics_in_one_call(setup):
    m, ds, f = setup
    out = f.patch(ds, S.resid_pre(1, "S2"), metric=["logit_diff", "logprob", "prob", "kl"])
    assert set(out) == {"logit_diff", "logprob", "prob", "kl"}
    np.testing.assert_allclose(out["prob"].values, np.exp(out["logprob"].values), rtol=1e-5)
    assert (out["kl"].baseline_clean == pytest.approx(0.0, abs=1e-6))
    single = f.patch(ds, S.resid_pre(1, "S2"), metric="logprob")
    np.testing.assert_allclose(single.values, out["logprob"].values)


def test_callable_metric_and_its_errors(setup):
    m, ds, f = setup

    def answer_logit(logits, sub):
        return logits[torch.arange(len(sub)), sub.answers]

    r = f.patch(ds, S.resid_pre(1, "END"), metric=answer_logit)
    assert r.values.shape == (1, ds.n)
    with pytest.raises(MetricError, match="shape"):
        f.patch(ds, S.resid_pre(1, "END"), metric=lambda logits, sub: logits[:, :2])
    with pytest.raises(MetricError, match="NaN"):
        f.patch(ds, S.resid_pre(1, "END"), metric=lambda logits, sub: logits[:, 0] * float("nan"))
    with pytest.raises(MetricError, match="unknown metric"):
        f.patch(ds, S.resid_pre(1, "END"), metric="accuracy")


def test_patch_result_exports(setup):
    m, ds, f = setup
    r = f.patch(ds, S.resid_pre("all", "all"))
    df = r.to_dataframe()
    assert len(df) == len(r.sites) * ds.n and {"site", "layer", "pos", "effect"} <= set(df.columns)
    d = r.to_dict()
    assert d["direction"] == "denoise" and len(d["labels"]) == len(r.sites)
    grid, rows, cols, rn, cn = r.grid("effect")
    assert grid.shape == (m.cfg.n_layers, ds.seq_len) and (rn, cn) == ("layer", "position")
    fig = r.heatmap()
    assert fig.axes
    assert "PatchResult" in repr(r) and "largest mean effects" in repr(r)
    h = f.patch(ds, S.attn_head("all", "all", "END"))
    g, rows, cols, _, cn = h.grid()
    assert cn == "head" and g.shape == (m.cfg.n_layers, m.cfg.n_heads)


def test_site_labels_hooks_and_builtin_all():
    ss = S.resid_pre(all, all).resolve(n_layers=2, n_heads=4, seq_len=3)
    assert len(ss) == 6 and ss[0].hook_name == "blocks.0.hook_resid_pre"
    h = S.attn_head(1, 2, "END").resolve(2, 4, 5, ["END"])[0]
    assert h.label == "L1.H2@END" and h.hook_name == "blocks.1.attn.hook_z"
    assert S.mlp_out(0, -1).resolve(2, 4, 5)[0].pos == 4
    both = S.resid_pre(0, 0) + S.mlp_out(1, 1)
    assert [s.label for s in both.resolve(2, 4, 5)] == ["L0.resid_pre@0", "L1.mlp@1"]


def test_layers_relative_to_the_depth_resolve_per_model():
    """depth/last/first name layers by the model's depth: the same claim resolves on 30, 18 and 24
    layers (SmolLM2, Gemma 3, Qwen2.5) and can never be out of range."""
    late, band = S.depth(0.85, 1.0), S.depth(0.69, 0.77)
    assert late.of(30) == [26, 27, 28, 29] and late.of(18) == [16, 17] and late.of(24) == [21, 22, 23]
    assert band.of(30) == [21, 22, 23] and band.of(18) == [13] and band.of(24) == [17, 18]
    assert S.depth(0.87).of(30) == [26] and S.depth(0.87).of(18) == [16] and S.depth(0.87).of(24) == [21]
    assert S.depth(0.0).of(7) == [0] and S.depth(1.0).of(7) == [6] and S.depth(0, 1).of(3) == [0, 1, 2]
    assert S.last(3).of(30) == [27, 28, 29] and S.last(40).of(2) == [0, 1] and S.first(2).of(5) == [0, 1]
    sites = S.resid_pre(late, "END").resolve(18, 4, 5, ["END"])
    assert [s.label for s in sites] == ["L16.resid_pre@END", "L17.resid_pre@END"]
    assert [s.label for s in S.attn_head(S.last(1), 0, 0).resolve(2, 4, 5)] == ["L1.H0@P0"]
    assert "depth(0.85, 1)" in repr(S.resid_pre(late, "END"))
    cfg = type("Cfg", (), {"n_layers": 10})()
    assert S.depth(0.5).of(type("M", (), {"cfg": cfg})()) == [5]
    for bad, match in ((lambda: S.depth(1.5), "fraction"), (lambda: S.depth(0.5, 0.2), "above lo"),
                       (lambda: S.last(0), "positive"), (lambda: S.resid_pre(0, S.depth(0.5)), "not positions"),
                       (lambda: list(S.depth(0.2, 0.4)), "resolve it"), (lambda: S.depth(0.5).of("x"), "number of layers")):
        with pytest.raises(SiteError, match=match):
            bad()


@pytest.mark.parametrize("make, match", [
    (lambda: S.resid_pre(7, 0), "layer 7 out of range"),
    (lambda: S.resid_pre(0, 40), "position 40 out of range"),
    (lambda: S.attn_head(0, 9, 0), "head 9 out of range"),
    (lambda: S.resid_pre(0, "S9"), "position name 'S9'"),
    (lambda: S.site("resid_middle", 0, 0), "unknown site kind"),
    (lambda: S.resid_pre(0, 2.5), "not an int"),
])
def test_site_errors_name_the_valid_range(setup, make, match):
    m, ds, f = setup
    with pytest.raises(SiteError, match=match):
        f.patch(ds, make())


def test_source_errors(setup):
    m, ds, f = setup
    for bad in (float("nan"), float("inf")):
        with pytest.raises(SourceError, match="alpha must be finite"):
            f.patch(ds, S.resid_pre(0, "END"), alpha=bad)
    with pytest.raises(SourceError, match="unknown source"):
        f.patch(ds, S.resid_pre(0, "END"), source="clean-ish")
    with pytest.raises(SourceError, match="does not fit"):
        f.patch(ds, S.resid_pre(0, "END"), source=torch.ones(m.cfg.d_model + 1))
    with pytest.raises(SourceError):
        fc.sources.gaussian(float("nan"))


def test_not_a_dataset_and_bad_direction(setup):
    m, ds, f = setup
    with pytest.raises(DatasetError, match="not a ContrastiveSet"):
        f.patch(["When Mary and John"], S.resid_pre(0, 0))
    with pytest.raises(ValueError, match="direction"):
        f.patch(ds, S.resid_pre(0, 0), direction="sideways")


def test_nan_model_outputs_fail_loudly():
    m = tiny_model("gpt2", n_layers=2, seed=5)
    ds = fc.datasets.ioi(m, n=4, seed=0)
    with torch.no_grad():
        _raw(m.original_model.transformer).ln_f.weight.fill_(float("nan"))
    with pytest.raises(NumericalError, match="NaN"):
        fc.Field(m).patch(ds, S.resid_pre(0, "END"))


def test_memory_budget_chunks_give_equal_numbers(setup):
    m, ds, f = setup
    big = f.patch(ds, S.resid_pre("all", "all"))
    small = fc.Field(m, memory_budget=600_000).patch(ds, S.resid_pre("all", "all"))
    assert small.cost["chunks"] > big.cost["chunks"]
    np.testing.assert_allclose(small.values, big.values, atol=1e-5)
    with pytest.raises(fc.errors.MemoryBudgetError, match="memory budget"):
        fc.Field(m, memory_budget=1000).patch(ds, S.resid_pre(0, "S2"))


def test_select_keeps_the_run_and_slices_the_sites(setup):
    m, ds, f = setup
    r = f.patch(ds, S.resid_pre("all", ["S2", "END"]))
    sub = r.select(lambda s: s.pos == "END" and s.layer >= 1)
    assert [s.label for s in sub.sites] == [f"L{l}.resid_pre@END" for l in range(1, m.cfg.n_layers)]
    idx = [i for i, s in enumerate(r.sites) if s.pos == "END" and s.layer >= 1]
    np.testing.assert_array_equal(sub.values, r.values[idx])
    np.testing.assert_array_equal(sub.skipped, r.skipped[idx])
    assert (sub.direction, sub.metric, sub.cost) == (r.direction, r.metric, r.cost)
    with pytest.raises(ValueError, match="joint patch"):
        f.patch(ds, S.resid_pre(0, "all"), jointly=True).select(lambda s: True)
