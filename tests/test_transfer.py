"""Displacement transfer (fieldcheck.experiments.transfer)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fieldcheck import datasets
from fieldcheck.lab import Field
from fieldcheck.sites import attn_head, resid_pre
from fieldcheck.testing import tiny_model


@pytest.fixture(scope="module")
def setup():
    m = tiny_model("gpt2", n_layers=3)
    f = Field(m)
    return f, datasets.ioi(m, n=8)


def test_alpha_zero_is_exactly_no_shift(setup):
    f, ds = setup
    for pair in ("mean", "matched"):
        t = f.transfer(ds, resid_pre(1, "S2"), alpha=0.0, pair=pair)
        assert np.all(t.shift == 0.0)
        assert not t.flipped.any()
        assert np.all(t.after == t.before)


def test_matched_transfer_equals_denoising_patch(setup):
    f, ds = setup
    fd = ds.first_diff
    assert bool((fd == fd[0]).all())
    site = resid_pre(0, int(fd[0]))
    t = f.transfer(ds, site, pair="matched", alpha=1.0)
    p = f.patch(ds, site, direction="denoise")
    np.testing.assert_allclose(t.after, p.values[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t.shift, p.effect[0], rtol=1e-5, atol=1e-5)
    # the same at a named position deeper in the model
    t2 = f.transfer(ds, resid_pre(2, "S2"), pair="matched")
    p2 = f.patch(ds, resid_pre(2, "S2"))
    np.testing.assert_allclose(t2.after, p2.values[0], rtol=1e-5, atol=1e-5)
    # gap closed by a full matched transfer at a site that carries the whole difference
    full = f.transfer(ds, resid_pre(3, "END"), pair="matched")
    np.testing.assert_allclose(full.gap_closed, 1.0, rtol=1e-4)


def test_mean_transfer_into_other_targets(setup):
    f, ds = setup
    other = datasets.ioi(f.model, n=6, seed=1)
    t = f.transfer(ds, resid_pre(2, "S2"), targets=other, alpha=2.0)
    assert t.n == 6 and t.shift.shape == (6,) and t.flipped.dtype == bool
    assert np.array_equal(t.flipped, (t.ld_before <= 0) & (t.ld_after > 0))
    lo, hi = t.rate_ci
    assert 0.0 <= lo <= t.rate <= hi <= 1.0
    # the mean displacement: same as steering with it by hand
    r = f.run(ds)
    pos = ds.position("S2")
    b = torch.arange(ds.n)
    vec = (r.clean.resid[2][b, pos] - r.corrupt.resid[2][b, pos]).mean(0)
    from fieldcheck.sources import steer
    p = f.patch(other, resid_pre(2, "S2"), source=steer(vec), alpha=2.0)
    np.testing.assert_allclose(t.after, p.values[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(t.gap_closed, t.shift / (p.baseline_clean - p.baseline_corrupt), rtol=1e-9)
    with pytest.raises(ValueError):
        f.transfer(ds, resid_pre(2, "S2"), targets=other, pair="matched")


def test_other_metric_and_head_site(setup):
    f, ds = setup
    t = f.transfer(ds, attn_head(1, 2, "END"), metric="logprob")
    assert t.metric == "logprob" and np.isfinite(t.shift).all()
    assert t.ld_after.shape == (8,)


def test_report_and_assertion(setup):
    import matplotlib.figure

    from fieldcheck.claim.assertions import assert_transfers
    from fieldcheck.claim.criteria import rate, shift

    f, ds = setup
    t = f.transfer(ds, resid_pre(2, "S2"), pair="matched")
    assert "flipped to the answer" in t.summary()
    d = t.to_dict()
    json.dumps(d)
    assert len(d["flipped"]) == 8 and d["pair"] == "matched"
    assert isinstance(t.plot(), matplotlib.figure.Figure)
    res = assert_transfers(t, shift > -1e9, rate >= 0.0, decide="point")
    assert all(r.passed for r in res)


@pytest.mark.pretrained
def test_smollm2_transfer(smollm2):
    f = Field(smollm2)
    ds = datasets.ioi(smollm2, n=8)
    t = f.transfer(ds, resid_pre(16, "END"), targets=datasets.ioi(smollm2, n=8, seed=1))
    assert np.isfinite(t.shift).all() and 0 <= t.rate <= 1
