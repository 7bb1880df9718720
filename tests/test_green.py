"""Green functions, real propagation and sliced Green operators (fieldcheck.experiments.green)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fieldcheck import datasets
from fieldcheck.errors import SiteError
from fieldcheck.lab import Field
from fieldcheck.experiments.green import _forward_from
from fieldcheck.sites import attn_head, resid_post, resid_pre
from fieldcheck.testing import tiny_model


@pytest.fixture(scope="module")
def models64():
    return {a: tiny_model(a, n_layers=3, dtype=torch.float64) for a in ("gpt2", "llama")}


@pytest.fixture(scope="module")
def gpt2_32():
    return tiny_model("gpt2", n_layers=3)


def _field64(models64, arch, monkeypatch):
    # float64 throughout (the functional model keeps softmax and norms in float64 for float64 models)
    return Field(models64[arch])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_jvp_equals_central_differences(models64, arch, monkeypatch):
    f = _field64(models64, arch, monkeypatch)
    ds = datasets.ioi(f.model, n=3)
    site = resid_pre(1, "S2")
    g = f.green(ds, site, metric="logit_diff")
    r = f.run(ds)
    x = r.corrupt.resid[1]
    pos = ds.position("S2")
    delta = r.clean.resid[1][torch.arange(3), pos] - x[torch.arange(3), pos]
    tan = torch.zeros_like(x)
    tan[torch.arange(3), pos] = delta
    eps = 1e-5
    with torch.no_grad():
        fd = (_forward_from(f.fm, x + eps * tan, 1) - _forward_from(f.fm, x - eps * tan, 1)) / (2 * eps)
    jvp = g.response[:, 1:].transpose(0, 1)
    rel = float((jvp - fd).norm() / fd.norm())
    assert rel < 1e-6, rel
    # the metric's first-order change, against finite differences of the metric itself
    b = torch.arange(3)
    mpos = r.metric_pos
    from fieldcheck.metrics import as_metric
    m = as_metric("logit_diff")
    mp = m(f.fm, (_forward_from(f.fm, x + eps * tan, 1)[-1])[b, mpos], b, ds)
    mm = m(f.fm, (_forward_from(f.fm, x - eps * tan, 1)[-1])[b, mpos], b, ds)
    fd_m = ((mp - mm) / (2 * eps)).numpy()
    np.testing.assert_allclose(g.metric_response, fd_m, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_light_cone_is_exact(arch, gpt2_32):
    m = gpt2_32 if arch == "gpt2" else tiny_model("llama", n_layers=3)
    f = Field(m)
    ds = datasets.ioi(m, n=4)
    v = torch.randn(64, generator=torch.Generator().manual_seed(0))
    for site, direction in ((resid_pre(1, "S2"), None), (resid_pre(0, 5), v), (resid_post(1, "S2"), None)):
        g = f.green(ds, site, direction)
        s = g.source_site
        l = g.layer
        pos = g.positions
        assert g.outside_cone_max == 0.0
        B, L1, T, d = g.response.shape
        assert (B, L1, T, d) == (4, 4, ds.seq_len, 64)
        assert g.response_norm.shape == (4, 4, ds.seq_len)
        for b in range(B):
            t = int(pos[b])
            # the computed response at positions before the source, at every layer >= l, is exactly zero
            assert torch.count_nonzero(g.response[b, l:, :t]) == 0
            assert torch.count_nonzero(g.response[b, :l]) == 0
            # G(l, t; l, t) = I (checked below) and nothing else at layer l
            assert torch.count_nonzero(g.response[b, l, t + 1:]) == 0
            assert float(g.response_norm[b, l:, t:].sum()) > 0
        r = f.run(ds)
        dl = (r.clean.resid[l] - r.corrupt.resid[l])[torch.arange(B), pos] if direction is None else v.expand(B, -1)
        assert torch.equal(g.response[torch.arange(B), l, pos], dl)
        assert s.kind in ("resid_pre", "resid_post")
        assert g.depth_share.shape == (4,) and np.all((g.depth_share > 0) & (g.depth_share <= 1))
        assert g.spread.shape == (4, 4)


def test_linear_and_real_agree_as_alpha_shrinks(models64, monkeypatch):
    f = _field64(models64, "gpt2", monkeypatch)
    ds = datasets.ioi(f.model, n=3)
    g = f.green(ds, resid_pre(0, "S2"))
    lv = g.linear_vs_real([1e-1, 1e-2, 1e-3, 1e-4])
    e = lv.mean_rel_error
    assert np.all(np.diff(e) < 0), e
    assert e[-1] < 1e-3
    assert lv.rel_error.shape == (4, 3) and lv.rel_error_end.shape == (4, 3)
    json.dumps(lv.to_dict())
    assert "alpha=0.0001" in lv.summary()


def test_propagate_matches_patching(gpt2_32):
    f = Field(gpt2_32)
    ds = datasets.ioi(gpt2_32, n=4)
    site = resid_pre(1, "S2")
    p0 = f.propagate(ds, site, alpha=0.0)
    assert torch.count_nonzero(p0.response) == 0
    p1 = f.propagate(ds, site, alpha=1.0)
    assert p1.outside_cone_max == 0.0
    r = f.run(ds)
    b = torch.arange(ds.n)
    x = r.corrupt.resid[-1][b, r.metric_pos] + p1.response[b, -1, r.metric_pos]
    got = f.metric_on(__import__("fieldcheck.metrics", fromlist=["as_metric"]).as_metric("logit_diff"), r, x, b)
    want = f.patch(ds, site).values[0]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
    # and the patched value itself: phi(l, t) becomes the clean run's
    assert torch.allclose(p1.response[b, 1, ds.position("S2")] + r.corrupt.resid[1][b, ds.position("S2")],
                          r.clean.resid[1][b, ds.position("S2")])
    assert "Propagation" in p1.summary()


def test_slice_converges_to_dense_svd(models64, monkeypatch):
    f = _field64(models64, "gpt2", monkeypatch)
    ds = datasets.ioi(f.model, n=3)
    src, tgt = resid_pre(0, "S2"), resid_pre(2, "END")
    r = f.run(ds)
    x = r.corrupt.resid[0][:1]
    t1, t2 = int(ds.position("S2")[0]), ds.seq_len - 1

    def F(v):
        e = torch.zeros_like(x)
        e[0, t1] = v
        return _forward_from(f.fm, x + e, 0)[2][0, t2]

    J = torch.func.jacfwd(F)(torch.zeros(64, dtype=torch.float64))
    S = torch.linalg.svdvals(J)
    errs = []
    for n_iter in (0, 2, 6):
        sl = f.green_slice(ds, src, tgt, rank=8, n_iter=n_iter, oversample=8, n_probe=64 if n_iter == 6 else 2)
        errs.append(float(((sl.S - S[:8]).abs() / S[:8]).max()))
    assert errs[-1] < 1e-5, errs
    assert errs[0] > errs[1] > errs[-1]
    # the top-k subspaces and the truncation: ||J - G_k||_F equals the tail of the spectrum
    tail = float(torch.sqrt((S[8:] ** 2).sum()))
    assert abs(float((J - sl.matrix()).norm()) - tail) < 1e-5 * tail
    true_expl = float((S[:8] ** 2).sum() / (S ** 2).sum())
    assert abs(sl.explained - true_expl) < 5 * sl.explained_se + 1e-3
    # full rank: everything explained
    full = f.green_slice(ds, src, tgt, rank=64, n_iter=0, oversample=0, n_probe=4)
    assert abs(full.explained - 1.0) < 1e-8
    torch.testing.assert_close(full.matrix(), J, rtol=1e-8, atol=1e-8)
    d = torch.randn(5, 64, dtype=torch.float64)
    torch.testing.assert_close(full.predict(d), d @ J.T, rtol=1e-8, atol=1e-8)


def test_slice_mean_check_and_report(gpt2_32):
    f = Field(gpt2_32)
    ds = datasets.ioi(gpt2_32, n=4)
    sl = f.green_slice(ds, resid_pre(0, "S2"), resid_pre(3, "END"), rank=4, example="mean")
    assert sl.U.shape == (64, 4) and sl.V.shape == (64, 4) and sl.S.shape == (4,)
    assert 0 < sl.explained <= 1
    c = sl.check()
    assert c["rel_error_slice"].shape == (4,) and np.isfinite(c["rel_error_full"]).all()
    assert np.all(c["captured"] <= 1 + 1e-5)
    json.dumps(sl.to_dict())
    assert "GreenSlice" in sl.summary()
    import matplotlib.figure
    assert isinstance(sl.plot(), matplotlib.figure.Figure)
    with pytest.raises(SiteError):
        f.green_slice(ds, resid_pre(2, "END"), resid_pre(3, "S2"))


def test_green_report_and_assertions(gpt2_32):
    import matplotlib.figure

    from fieldcheck.claim.assertions import assert_anisotropic, assert_light_cone
    from fieldcheck.claim.criteria import depth_share

    f = Field(gpt2_32)
    ds = datasets.ioi(gpt2_32, n=4)
    g = f.green(ds, resid_pre(1, "S2"), which="clean")
    assert "light cone" in g.summary()
    d = g.to_dict()
    json.dumps(d)
    assert d["outside_cone_max"] == 0.0 and len(d["depth_share"]) == 4
    assert isinstance(g.plot(), matplotlib.figure.Figure)
    assert assert_light_cone(g)[0].passed
    res = assert_anisotropic(g, depth_share > 0.0, decide="point")
    assert res[0].passed
    # an explicit direction, [d] or [batch, d]
    v = torch.randn(64)
    g1 = f.green(ds, resid_pre(1, 2), direction=v)
    g2 = f.green(ds, resid_pre(1, 2), direction=v[None].repeat(4, 1))
    assert torch.equal(g1.response, g2.response)
    # chunked over examples: the same response
    g3 = f.green(ds, resid_pre(1, 2), direction=v, batch_size=3)
    torch.testing.assert_close(g3.response, g1.response, rtol=1e-5, atol=1e-6)
    assert g3.outside_cone_max == 0.0
    p1, p3 = f.propagate(ds, resid_pre(1, 2), 0.5, direction=v), f.propagate(ds, resid_pre(1, 2), 0.5, direction=v,
                                                                              batch_size=3)
    torch.testing.assert_close(p3.response, p1.response, rtol=1e-5, atol=1e-6)
    with pytest.raises(SiteError):
        f.green(ds, attn_head(1, 0, 2))
    with pytest.raises(SiteError):
        f.green(ds, resid_pre([0, 1], 2))


@pytest.mark.pretrained
def test_smollm2_green(smollm2):
    f = Field(smollm2)
    ds = datasets.ioi(smollm2, n=2)
    g = f.green(ds, resid_pre(20, "S2"), metric="logit_diff")
    assert g.outside_cone_max == 0.0
    assert np.isfinite(g.depth_share).all()
    lv = g.linear_vs_real([0.01, 0.3])
    assert lv.mean_rel_error[0] < lv.mean_rel_error[1]
    sl = f.green_slice(ds, resid_pre(20, "S2"), resid_pre(24, "END"), rank=4, n_iter=1, oversample=4, n_probe=8)
    assert 0 < sl.explained <= 1
