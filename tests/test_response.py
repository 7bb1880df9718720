"""Response objects against brute force: sensitivities vs finite differences (float64),
first-order predictions converging to real patches as alpha -> 0, integrated predictions vs real
patches, second-order corrections, alpha sweeps and adjoint selection."""
import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

import fieldcheck as fc
from fieldcheck import sites as S
from fieldcheck.testing import tiny_model
from _reference import central_difference


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def f64(request):
    m = tiny_model(request.param, n_layers=3)
    m.original_model.double()
    ds = fc.datasets.ioi(m, n=4, seed=1)
    return m, ds, fc.Field(m)


@pytest.mark.parametrize("l, t", [(0, 3), (1, 10), (2, 12), (3, 14)])
def test_sensitivity_equals_central_finite_differences(f64, l, t):
    m, ds, f = f64
    s = f.sensitivity(ds)
    assert s.resid.shape == (m.cfg.n_layers + 1, ds.n, ds.seq_len, m.cfg.d_model)
    g = torch.Generator().manual_seed(l * 100 + t)
    d = torch.randn(ds.n, m.cfg.d_model, dtype=torch.float64, generator=g)
    fd = central_difference(f, ds, l, t, d)
    an = (s.resid[l][:, t] * d).sum(-1)
    assert ((fd - an).abs().max() / an.abs().max()).item() < 1e-6


def test_sensitivity_is_zero_outside_the_backward_light_cone(f64):
    m, ds, f = f64
    s = f.sensitivity(ds)
    # the metric reads END = T-1: every position is upstream, but the final residual only at END
    final = s.resid[-1]
    assert torch.all(final[:, :-1] == 0) and torch.all(final[:, -1] != 0)
    assert s.z.shape == (m.cfg.n_layers, ds.n, ds.seq_len, m.cfg.n_heads, m.cfg.d_model // m.cfg.n_heads)
    # head sensitivity equals the residual-mid sensitivity pulled back through W_O
    l, h, t = 1, 2, 12
    pulled = s.resid_mid[l][:, t] @ f.fm.W_O_head(l, h).T.double()
    torch.testing.assert_close(s.z[l][:, t, h], pulled, rtol=1e-9, atol=1e-12)
    assert "Sensitivity" in repr(s) and s.heatmap().axes


def test_first_order_converges_to_real_patches_as_alpha_to_zero(f64):
    m, ds, f = f64
    site = S.resid_pre(1, "S2")
    errs = []
    for a in (0.1, 0.01, 0.001):
        p, r = f.predict(ds, site, alpha=a), f.patch(ds, site, alpha=a)
        errs.append(np.abs(p.effect - r.effect).max() / np.abs(r.effect).max())
    assert errs[0] > errs[1] > errs[2] and errs[2] < 5e-3
    # the error is second order: ten times smaller alpha, ~ten times smaller relative error
    assert errs[1] / errs[2] > 5


def test_second_order_is_closer_for_small_sources(f64):
    m, ds, f = f64
    site = S.resid_pre([1, 2], "S2")
    r = f.patch(ds, site, alpha=0.05)
    e1 = np.abs(f.predict(ds, site, alpha=0.05).effect - r.effect).max()
    p2 = f.predict(ds, site, alpha=0.05, order=2)
    e2 = np.abs(p2.effect - r.effect).max()
    assert e2 < e1 / 5 and p2.cost["second_order_sites"] == 2


def test_integrated_prediction_is_exact_where_the_paths_coincide(f64):
    """At layer 0 and the only changed token the embedding path IS the site's own path, so the
    integrated gradient (midpoint rule) converges to the real patch effect."""
    m, ds, f = f64
    site = S.resid_pre(0, "S2")
    real = f.patch(ds, site).effect
    err = [np.abs(f.predict(ds, site, method="integrated", steps=k).effect - real).max() for k in (4, 64)]
    assert err[1] < err[0] and err[1] < 1e-3 * np.abs(real).max()


def test_integrated_beats_first_order_over_all_sites(f64):
    m, ds, f = f64
    real = f.patch(ds, S.resid_pre("all", "all")).effect

    def r2(p):
        return 1 - ((p - real) ** 2).sum() / ((real - real.mean()) ** 2).sum()

    p1 = f.predict(ds, S.resid_pre("all", "all"))
    pi = f.predict(ds, S.resid_pre("all", "all"), method="integrated", steps=16)
    assert r2(pi.effect) > 0.9 and r2(pi.effect) > r2(p1.effect)
    assert pi.cost == {"forward": 16, "backward": 16, "seconds": pi.cost["seconds"]}
    assert pi.method.startswith("predict:integrated")


def test_scale_sweep_and_linear_regime(f64):
    m, ds, f = f64
    sw = f.scale_sweep(ds, S.resid_pre(2, "END"), alphas=[0, 0.01, 0.05, 0.1, 0.5, 1.0])
    assert sw.effect.shape == (6, ds.n) and np.all(sw.effect[0] == 0)
    # the tangent line matches at small alpha
    assert sw.deviation()[1] < 0.05
    lr = sw.linear_regime(tol=0.1)
    assert lr.interval[0] <= lr.alpha_star <= lr.interval[1]
    assert "alpha*" in repr(lr) and sw.plot().axes
    with pytest.raises(fc.errors.SiteError, match="one site"):
        f.scale_sweep(ds, S.resid_pre([1, 2], "END"))
    # the claim language reads the sweep
    fc.assert_linear_regime(sw, fc.alpha_star(tol=0.5) >= 0.0, decide="point")


def test_select_sites_verifies_jointly(f64):
    m, ds, f = f64
    sel = f.select_sites(ds, 3, method="gradient")
    assert len(sel.sites) == 3 and 0.0 <= sel.recall <= 1.0
    assert sel.real.jointly and sel.real.values.shape == (1, ds.n)
    direct = f.patch(ds, sel.sites, jointly=True)
    np.testing.assert_allclose(sel.real.values, direct.values)
    assert "Selection" in repr(sel) and sel.to_dict()["recall"] == sel.recall


@pytest.mark.pretrained
def test_smollm2_first_order_splits_at_the_changed_token(smollm2):
    """On SmolLM2 IOI the first-order prediction is good after the changed token and poor at it."""
    ds = fc.datasets.ioi(smollm2, n=4, seed=0)
    f = fc.Field(smollm2)
    sites = S.resid_pre([0, 5, 10, 15], [10, 11, 14])
    real, p1 = f.patch(ds, sites), f.predict(ds, sites)
    at = np.array([s.pos == 10 for s in real.sites])
    r_after = np.corrcoef(p1.effect[~at].ravel(), real.effect[~at].ravel())[0, 1]
    assert r_after > 0.9
