"""Direct logit attribution and the logit lens (fieldcheck.experiments.lens), with their assertions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fieldcheck as fc
from fieldcheck import datasets, first_layer, mean, rank, share
from fieldcheck.claim.result import ClaimFailed
from fieldcheck.errors import CriterionError, NumericalError, SiteError, UsageError
from fieldcheck.experiments.lens import DirectAttribution, LogitLens, final_norm_affine
from fieldcheck.field.arch import UnsupportedArchitecture, _raw
from fieldcheck.lab import Field
from fieldcheck.sites import attn_head, attn_out, mlp_out, resid_pre
from fieldcheck.testing import tiny_model


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def setup(request):
    m = tiny_model(request.param, n_layers=2)
    f = Field(m)
    return f, datasets.ioi(m, n=6, seed=2)


def _bridge_logit_diff(model, ds, tokens, fwd_hooks=()):
    logits = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks))
    b = torch.arange(ds.n)
    end = logits[b, ds.positions["END"]]
    return (end[b, ds.answers] - end[b, ds.wrong]).double()


@pytest.mark.parametrize("which", ["clean", "corrupt", "diff"])
def test_dla_terms_add_up_to_the_models_logit_difference(setup, which):
    """Every component's term together equals the logit difference of the bridge's own forward
    (an independent run), per example: the split is exact with the run's frozen final-norm scale."""
    f, ds = setup
    d = f.dla(ds, which=which)
    clean = _bridge_logit_diff(f.model, ds, ds.clean_tokens).numpy()
    corrupt = _bridge_logit_diff(f.model, ds, ds.corrupt_tokens).numpy()
    expect = {"clean": clean, "corrupt": corrupt, "diff": clean - corrupt}[which]
    assert d.labels[0] == "embed" and d.labels[-1] == "bias"
    assert len(d.labels) == 2 + f.n_layers * (f.n_heads + 2)
    np.testing.assert_allclose(d.values.sum(0), expect, atol=1e-4)
    np.testing.assert_allclose(d.total, expect, atol=1e-4)
    assert d.share == pytest.approx(1.0, abs=1e-5) and d.sum_error < 1e-4


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dla_equals_brute_force_removal_with_the_frozen_scale(setup):
    """Brute force through the bridge's own final norm and unembedding: remove one component's
    output from the final residual at END (hook on ln_final.hook_in) with the final-norm scale
    frozen at the clean run's (hook on ln_final.hook_scale); the drop of the logit difference
    is that component's term. Heads from TransformerLens's stack_head_results, MLPs from
    hook_mlp_out."""
    f, ds = setup
    m = f.model
    d = f.dla(ds)
    _, cache = m.run_with_cache(ds.clean_tokens)
    base = _bridge_logit_diff(m, ds, ds.clean_tokens)
    scale = cache["ln_final.hook_scale"]
    b, end = torch.arange(ds.n), ds.positions["END"]
    heads = cache.stack_head_results(layer=-1, pos_slice=None)  # [layer*head, batch, pos, d_model]
    comps = {f"L{l}.H{h}": heads[l * f.n_heads + h] for l in range(f.n_layers) for h in (0, f.n_heads - 1)}
    comps.update({f"L{l}.mlp": cache[f"blocks.{l}.hook_mlp_out"] for l in range(f.n_layers)})
    for label, out in comps.items():
        def remove(x, hook, out=out):
            x = x.clone()
            x[b, end] = x[b, end] - out[b, end]
            return x
        hooked = _bridge_logit_diff(m, ds, ds.clean_tokens, [("ln_final.hook_in", remove),
                                                             ("ln_final.hook_scale", lambda s, hook: scale)])
        np.testing.assert_allclose(d.select(label).values[0], (base - hooked).numpy(), atol=1e-4,
                                   err_msg=label)


def test_dla_heads_match_transformer_lens_apply_ln_to_stack(setup):
    """TransformerLens's own DLA recipe: stack_head_results, apply_ln_to_stack (which divides
    by the cached final-norm scale and centres for LayerNorm), times the final norm's weight,
    dotted with W_U[answer] - W_U[wrong]."""
    f, ds = setup
    m = f.model
    d = f.dla(ds, "heads")
    _, cache = m.run_with_cache(ds.clean_tokens)
    b, end = torch.arange(ds.n), ds.positions["END"]
    stack = cache.stack_head_results(layer=-1, pos_slice=None)
    normed = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=None)[:, b, end]  # [comp, batch, d]
    fm = f.fm
    w = fm.lnf[0] if hasattr(fm, "lnf") else fm.w_norm
    direction = (fm.W_U[ds.answers] - fm.W_U[ds.wrong]) * w  # [batch, d]
    ref = (normed * direction[None]).sum(-1).numpy()
    np.testing.assert_allclose(d.values, ref, atol=1e-4)


def test_dla_component_selection(setup):
    f, ds = setup
    full = f.dla(ds)
    sel = f.dla(ds, attn_head(1, "all", "END") + mlp_out(0, "END") + attn_out(1, "S2"))
    assert sel.labels == [f"L1.H{h}" for h in range(f.n_heads)] + ["L0.mlp", "L1.attn"]
    attn1 = sum(full.select(f"L1.H{h}").values[0] for h in range(f.n_heads)) + full.select("L1.attn_bias").values[0]
    np.testing.assert_allclose(sel.values[-1], attn1, atol=1e-6)
    layers = f.dla(ds, "layers")
    np.testing.assert_allclose(layers.values.sum(0) + full.select(["embed", "bias"]).values.sum(0),
                               full.total, atol=1e-4)
    np.testing.assert_allclose(f.dla(ds, ["L0.mlp", "embed"]).values, full.select(["L0.mlp", "embed"]).values)
    assert sel.share == pytest.approx(sel.values.sum(0).sum() / full.total.sum())
    with pytest.raises(SiteError, match="not one"):
        f.dla(ds, resid_pre(1, "END"))
    with pytest.raises(SiteError, match="unknown component"):
        f.dla(ds, ["L9.mlp"])
    with pytest.raises(UsageError, match="which"):
        f.dla(ds, which="both")


def test_dla_result_summary_dict_and_plots(setup):
    f, ds = setup
    d = f.dla(ds)
    assert "DirectAttribution(clean" in str(d) and "share 1.000" in str(d)
    assert d.to_dict()["convention"].startswith("final-norm scale frozen")
    g = d.head_grid()
    assert g.shape == (f.n_layers, f.n_heads) and np.isfinite(g).all()
    assert d.plot_data()["kind"] == "heatmap" and len(d.top(3)) == 3
    assert "<img" in d._repr_html_() and "<img" in f.logit_lens(ds)._repr_html_()
    import matplotlib.pyplot as plt
    for fig in (d.heatmap(), d.plot(k=5)):
        assert fig.axes
        plt.close(fig)


def test_final_norm_form_is_checked():
    class Fake:
        def final_norm(self, x):
            return x

    with pytest.raises(UnsupportedArchitecture, match="final norm"):
        final_norm_affine(Fake(), torch.ones(2, 4))

    class WrongRMS(Fake):  # claims to be RMSNorm, computes something else
        w_norm, eps = torch.ones(4), 1e-6

        def final_norm(self, x):
            return 2 * x

    with pytest.raises(NumericalError, match="not the LayerNorm/RMSNorm form"):
        final_norm_affine(WrongRMS(), torch.randn(2, 4))


# --- logit lens ----------------------------------------------------------------------------------
@pytest.mark.parametrize("position", ["END", "S2"])
def test_logit_lens_decodes_the_cached_residual(setup, position):
    """Each layer's lens equals decoding TransformerLens's cached hook_resid_pre (and the final
    norm's input for the last layer) through the HF model's own final norm and lm_head."""
    f, ds = setup
    m = f.model
    lens = f.logit_lens(ds, position)
    hf = _raw(m.original_model)
    core = _raw(hf.transformer if hasattr(hf, "transformer") else hf.model)
    norm = _raw(core.ln_f if hasattr(core, "ln_f") else core.norm)
    head = _raw(hf.lm_head)
    _, cache = m.run_with_cache(ds.clean_tokens)
    b, pos = torch.arange(ds.n), ds.position(position)
    resids = [cache[f"blocks.{l}.hook_resid_pre"] for l in range(f.n_layers)] + [cache["ln_final.hook_in"]]
    assert lens.logit_diff.shape == lens.rank.shape == (f.n_layers + 1, ds.n)
    for l, r in enumerate(resids):
        with torch.no_grad():
            logits = head(norm(r[b, pos]))
        la, lw = logits[b, ds.answers], logits[b, ds.wrong]
        np.testing.assert_allclose(lens.logit_diff[l], (la - lw).numpy(), atol=1e-4)
        np.testing.assert_array_equal(lens.rank[l], (logits > la[:, None]).sum(-1).numpy())
        np.testing.assert_allclose(lens.prob[l], torch.softmax(logits, -1)[b, ds.answers].numpy(), atol=1e-6)
    if position == "END":  # the last layer is the model's output
        np.testing.assert_allclose(lens.logit_diff[-1], f.metric_values(ds).numpy(), atol=1e-4)


def _lens(ld, rk):
    ld, rk = np.asarray(ld, float), np.asarray(rk, float)
    return LogitLens(ld, rk, rk, np.zeros_like(ld), position="END")


def test_first_layer_is_where_the_answer_leads_from_then_on():
    # layers 0..3 x 4 examples
    ld = [[-1, 1, -1, 1], [1, -1, 1, 1], [1, 1, -1, 1], [1, 1, -1, -1]]
    rk = [[9, 0, 5, 0], [0, 3, 0, 0], [0, 0, 4, 0], [0, 0, 2, 1]]
    lens = _lens(ld, rk)
    np.testing.assert_array_equal(lens.first_layer(), [1, 2, 4, 4])       # 4 = never (n_layers + 1)
    np.testing.assert_array_equal(lens.first_layer("top1"), [1, 2, 4, 4])
    np.testing.assert_array_equal(_lens(np.ones((3, 2)), np.zeros((3, 2))).first_layer(), [0, 0])
    with pytest.raises(UsageError, match="leads"):
        lens.first_layer("best")


def test_logit_lens_result_summary_dict_and_plots(setup):
    f, ds = setup
    lens = f.logit_lens(ds, which="corrupt")
    assert "LogitLens(at END, corrupt run" in str(lens)
    d = lens.to_dict()
    assert len(d["mean_logit_diff"]) == f.n_layers + 1 and len(d["first_layer"]) == ds.n
    assert lens.plot_data()["kind"] == "heatmap"
    import matplotlib.pyplot as plt
    for fig in (lens.heatmap(), lens.heatmap(stat="rank"), lens.plot()):
        assert fig.axes
        plt.close(fig)
    with pytest.raises(UsageError, match="which"):
        f.logit_lens(ds, which="diff")


# --- assertions ----------------------------------------------------------------------------------
def _dla(values, total):
    values = np.atleast_2d(np.asarray(values, float))
    return DirectAttribution([f"L1.H{i}" for i in range(values.shape[0])], values, np.asarray(total, float),
                             np.ones(values.shape[1]), n_layers=2, n_heads=values.shape[0])


def test_assert_direct_effect_mean_and_share():
    rng = np.random.default_rng(1)
    total = 4 + rng.standard_normal(20) * 0.3
    heads = np.stack([2 + rng.standard_normal(20) * 0.2, 1 + rng.standard_normal(20) * 0.2])
    d = _dla(heads, total)
    res = fc.assert_direct_effect(d, mean > 0.5, share > 0.6)
    assert [r.statistic for r in res] == ["mean", "share"] and all(r.passed for r in res)
    assert res[1].estimate == pytest.approx(heads.sum() / total.sum())
    assert res[0].details["row"] == "L1.H1" and res[0].plot["kind"] == "heatmap"
    with pytest.raises(ClaimFailed, match="share"):
        fc.assert_direct_effect(d, share > 0.9)
    with pytest.raises(ClaimFailed, match="L1.H1"):
        fc.assert_direct_effect(d, mean > 1.5)
    assert fc.assert_direct_effect(d, mean > 1.5, require="any")[0].passed
    zero = _dla(heads, np.zeros(20))
    with pytest.raises(ClaimFailed, match="undefined"):
        fc.assert_direct_effect(zero, share > 0.5)
    with pytest.raises(CriterionError, match="not a statistic"):
        fc.assert_direct_effect(d, rank < 3)


def test_assert_readable_first_layer_and_rank():
    rng = np.random.default_rng(2)
    L1, n = 8, 20
    first = rng.integers(3, 5, n)  # the answer leads from layer 3 or 4 on
    ld = np.where(np.arange(L1)[:, None] >= first[None], 1.0, -1.0)
    rk = np.where(np.arange(L1)[:, None] >= first[None] + 1, 0, 50 + rng.integers(0, 9, (L1, n)))
    lens = _lens(ld, rk)
    res = fc.assert_readable(lens, first_layer <= 5, rank(layer=6) < 1, rank < 1)
    assert all(r.passed for r in res)
    assert res[0].estimate == pytest.approx(first.mean()) and res[1].estimate == 0
    assert res[1].criterion == "rank(layer=6) < 1.0"
    with pytest.raises(ClaimFailed, match="first_layer"):
        fc.assert_readable(lens, first_layer <= 2)
    with pytest.raises(ClaimFailed, match="rank"):
        fc.assert_readable(lens, rank(layer=1) < 10)
    with pytest.raises(CriterionError, match="layers 0..7"):
        fc.assert_readable(lens, rank(layer=12) < 1)
    with pytest.raises(CriterionError, match="leads"):
        fc.assert_readable(lens, first_layer <= 5, leads="somewhere")


def test_assertions_on_real_results(setup):
    f, ds = setup
    d = f.dla(ds)
    assert fc.assert_direct_effect(d, share > 0.99, share < 1.01, decide="point")[0].passed
    lens = f.logit_lens(ds)
    # a random tiny model never puts the answer on top of 100s of tokens at every example
    with pytest.raises(ClaimFailed):
        fc.assert_readable(lens, rank < 1, decide="point")
    from fieldcheck.display import draw_plot
    res = fc.assert_readable(lens, first_layer <= 10, decide="point")[0]
    assert res.plot["kind"] == "heatmap" and draw_plot(res.to_dict()["plot"]) is not None


def test_dla_and_lens_on_a_bfloat16_model():
    """16-bit models: the terms still add up to the run's own logit difference (within the
    bfloat16 rounding of its logits), and the lens decodes the final layer to the output."""
    m = tiny_model("llama", n_layers=2, dtype=torch.bfloat16)
    f = Field(m)
    ds = datasets.ioi(m, n=4, seed=0)
    d = f.dla(ds)
    assert d.sum_error < 5e-2 * max(1.0, np.abs(d.total).max())
    np.testing.assert_allclose(d.values.sum(0), f.metric_values(ds).float().numpy(), atol=5e-2)
    np.testing.assert_allclose(f.logit_lens(ds).logit_diff[-1], f.metric_values(ds).float().numpy(), atol=2e-2)
