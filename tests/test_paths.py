"""Path patching (fieldcheck.experiments.paths)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fieldcheck import datasets
from fieldcheck.errors import SiteError
from fieldcheck.lab import Field
from fieldcheck.metrics import as_metric
from fieldcheck.experiments.paths import FINAL, PathResult, downstream, receiver_heads, receiver_mlps
from fieldcheck.sites import attn_head, attn_out, mlp_out, resid_pre
from fieldcheck.testing import tiny_model


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def setup(request):
    m = tiny_model(request.param, n_layers=3, dtype=torch.float64)
    f = Field(m)
    return f, datasets.ioi(m, n=4)


SENDERS = [
    attn_head(0, [1, 2], "S2"),
    attn_head(1, 0, "all"),
    mlp_out(0, "S2"),
    attn_out(1, "S2"),
    attn_head(0, 1, "S2") + mlp_out(1, "END") + attn_head(1, 3, "S2"),
]


@pytest.mark.parametrize("i", range(len(SENDERS)))
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_all_downstream_receivers_equal_ordinary_patching(setup, i, direction):
    f, ds = setup
    senders = SENDERS[i]
    sites = senders.resolve(f.n_layers, f.n_heads, ds.seq_len, ds.position_names)
    pr = f.path_patch(ds, senders, downstream(sites, f.n_layers), direction=direction)
    pa = f.patch(ds, senders, jointly=True, direction=direction)
    assert isinstance(pr, PathResult) and pr.method == "path" and pr.values.shape == (1, 4)
    np.testing.assert_allclose(pr.values, pa.values, rtol=1e-5, atol=1e-5)
    assert np.abs(pa.effect).max() > 1e-3  # the check is not vacuous


def test_final_receiver_is_the_analytic_direct_effect(setup):
    f, ds = setup
    fm = f.fm
    r = f.run(ds)
    b = torch.arange(ds.n)
    end = r.metric_pos
    heads = [(1, 0), (2, 3), (0, 2)]
    senders = sum((attn_head(l, h, "END") for l, h in heads[1:]), attn_head(*heads[0], "END"))
    pr = f.path_patch(ds, senders, FINAL)
    x = r.corrupt.resid[-1][b, end].clone()
    for l, h in heads:
        dz = r.clean.z[l][b, end, h] - r.corrupt.z[l][b, end, h]
        x += dz @ fm.W_O_head(l, h)
    m = as_metric("logit_diff")
    np.testing.assert_allclose(pr.values[0], m(fm, x, b, ds).numpy(), rtol=1e-10, atol=1e-10)
    # senders at other positions have no direct effect on the metric position: exactly the target
    pr2 = f.path_patch(ds, attn_head(2, "all", "S2") + mlp_out(2, "S2"), "final")
    assert np.array_equal(pr2.values[0], pr2.baseline_corrupt)
    # per sender rows
    pr3 = f.path_patch(ds, senders, FINAL, jointly=False)
    assert pr3.values.shape == (3, 4) and not pr3.jointly


def test_receiver_heads_by_input(setup):
    f, ds = setup
    snd = attn_head(0, [0, 1, 2, 3], "S2")
    vals = {}
    for ins in ("q", "k", "v", "qkv", "kv"):
        vals[ins] = f.path_patch(ds, snd, receiver_heads(2, "all", ins)).values[0]
    # a sender at S2 reaches END through the last layer's heads only via keys/values read at S2: their
    # queries at S2 only change their outputs at S2, which the metric at END does not read
    base = f.baselines(ds)[1].numpy()
    np.testing.assert_allclose(vals["q"], base, rtol=0, atol=1e-12)
    np.testing.assert_allclose(vals["qkv"], vals["kv"], rtol=1e-12, atol=1e-12)
    assert np.abs(vals["kv"] - base).max() > 1e-6
    # list and + combine receivers the same way
    a = f.path_patch(ds, snd, [receiver_heads(1, 0, "k"), receiver_mlps(1), "final"]).values
    b_ = f.path_patch(ds, snd, receiver_heads(1, 0, "k") + receiver_mlps(1) + FINAL).values
    assert np.array_equal(a, b_)


def test_zero_sender_deltas_leave_the_target(setup):
    f, ds = setup
    # positions before the first differing token: clean and corrupt activations are identical
    pr = f.path_patch(ds, attn_head(0, "all", 1) + mlp_out(1, 2), downstream(
        attn_head(0, 0, 1).resolve(3, 4, ds.seq_len, ds.position_names), 3))
    np.testing.assert_allclose(pr.values[0], pr.baseline_corrupt, rtol=0, atol=1e-12)


def test_report_assertion_and_errors(setup):
    from fieldcheck.claim.assertions import assert_path_effect
    from fieldcheck.claim.criteria import effect

    f, ds = setup
    pr = f.path_patch(ds, attn_head(1, [0, 1], "S2"), receiver_heads(2, "all", "kv") + FINAL)
    assert "receivers: kv of 4 heads" in pr.summary()
    d = pr.to_dict()
    json.dumps(d)
    assert d["method"] == "path" and "receivers" in d
    res = assert_path_effect(pr, effect > -1e9, decide="point")
    assert res[0].passed
    with pytest.raises(SiteError):
        f.path_patch(ds, resid_pre(1, "S2"), FINAL)
    with pytest.raises(SiteError, match="unknown receiver"):
        f.path_patch(ds, attn_head(1, 0, "S2"), "L1.attn")
    by_label = f.path_patch(ds, attn_head(1, 0, "S2"), "logits")     # the label of the final residual
    np.testing.assert_array_equal(by_label.values, f.path_patch(ds, attn_head(1, 0, "S2"), FINAL).values)
    with pytest.raises(SiteError):
        f.path_patch(ds, attn_head(1, 0, "S2"), receiver_heads(1, 0, "x"))


@pytest.mark.pretrained
def test_smollm2_path_patching(smollm2):
    f = Field(smollm2)
    ds = datasets.ioi(smollm2, n=4)
    senders = attn_head(26, "all", "END")
    sites = senders.resolve(f.n_layers, f.n_heads, ds.seq_len, ds.position_names)
    pr = f.path_patch(ds, senders, downstream(sites, f.n_layers))
    pa = f.patch(ds, senders, jointly=True)
    np.testing.assert_allclose(pr.values, pa.values, rtol=1e-3, atol=1e-3)
