"""Every experiment exact on the real weights of the three built-in models (SmolLM2-135M, Llama
family; Gemma-3-270m, post-norms and sliding windows; Qwen2.5-Coder-0.5B, q/k/v biases, no BOS),
float32, against independent references:

- patch effects at every site kind equal TransformerLens's own patching helpers
  (``get_act_patch_resid_pre``, ``_resid_mid``, ``_attn_out``, ``_mlp_out``,
  ``_attn_head_out_by_pos``) on a few sites of each kind;
- attention patterns equal the bridge's ``hook_pattern``;
- direct logit attribution adds up to the logit difference, and each block's head terms add up to
  the bridge's ``hook_attn_out`` (post-norm: frozen-scale shares);
- first-order predictions equal central finite differences of the real patch (float32: a 1e-3
  relative agreement on a source of 1% of the residual);
- the light cone: the Green function is exactly zero outside it and G(l, t; l, t) = I; a whole-layer
  patch reproduces the other run;
- path patching into every downstream receiver equals joint patching (post-norm heads included);
- edge circuits: every edge kept is the clean run, none the corrupted run, and every edge out of
  one head ablated is exactly patching that head.

One model per module-scoped parameter (loaded once, freed before the next; ``--dist loadgroup``
keeps a model's tests on one xdist worker); four IOI pairs; a few sites of each kind.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import fieldcheck as fc
from fieldcheck.lab import Field
from fieldcheck.sites import attn_head, attn_out, depth, mlp_out, resid_mid, resid_pre
from _reference import tl_logit_diff, vals

REAL = ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"]
TOL = 1e-4          # float32 on real weights (largest differences measured: 1e-5 .. 2e-5)

pytestmark = [pytest.mark.pretrained, pytest.mark.slow]


@pytest.fixture(scope="module", params=[pytest.param(s, marks=pytest.mark.xdist_group(s)) for s in REAL])
def real(request):
    spec = request.param
    try:
        m = fc.load_model(spec)
    except fc.ModelNotAvailable as exc:   # make test pulls all three (`make models`)
        pytest.skip(f"{spec} cannot be had here: {exc}")
    ds = fc.datasets.ioi(m, n=4, seed=3)
    yield spec, m, ds, Field(m)
    del m


def _grid(f, ds):
    """A few layers (first, middle, last) and positions (S2, END) of the model."""
    layers = sorted(set(depth(0.0).of(f) + depth(0.5).of(f) + depth(1.0).of(f)))
    return layers, [int(ds.positions["S2"][0]), ds.seq_len - 1]


def test_patching_matches_transformer_lens_at_every_site_kind(real):
    import transformer_lens.patching as tp

    spec, m, ds, f = real
    layers, positions = _grid(f, ds)
    _, cache = m.run_with_cache(ds.clean_tokens)
    metric = tl_logit_diff(ds)
    # TransformerLens runs one hooked bridge forward per site (seconds each on these models): the
    # resid_pre grid, and for the other kinds the middle layer at S2 and the last layer at END
    pairs = {"resid_pre": [(l, p) for l in layers for p in positions],
             "other": [(layers[1], positions[0]), (layers[-1], positions[1])]}
    worst = {}
    for helper, kind in ((tp.get_act_patch_resid_pre, resid_pre), (tp.get_act_patch_resid_mid, resid_mid),
                         (tp.get_act_patch_attn_out, attn_out), (tp.get_act_patch_mlp_out, mlp_out)):
        lp = pairs["resid_pre" if kind is resid_pre else "other"]
        df = pd.DataFrame(lp, columns=["layer", "pos"])
        tl = helper(m, ds.corrupt_tokens, cache, metric, index_axis_names=None, index_df=df, reduce="none").values
        ours = f.patch(ds, sum((kind(l, p) for l, p in lp[1:]), kind(*lp[0])), progress=False)
        assert ours.values.shape == tuple(tl.shape) == (len(df), ds.n)
        worst[kind.__name__] = float(np.abs(vals(ours) - tl.double().numpy()).max())
    H = f.n_heads
    hp = [(layers[1], positions[0], 0), (layers[-1], positions[1], H - 1)]
    hdf = pd.DataFrame(hp, columns=["layer", "pos", "head"])
    tl = tp.get_act_patch_attn_head_out_by_pos(m, ds.corrupt_tokens, cache, metric, index_axis_names=None,
                                               index_df=hdf, reduce="none").values
    ours = f.patch(ds, attn_head(hp[0][0], hp[0][2], hp[0][1]) + attn_head(hp[1][0], hp[1][2], hp[1][1]),
                   progress=False)
    worst["attn_head"] = float(np.abs(vals(ours) - tl.double().numpy()).max())
    print(f"\n{spec}: largest difference against TransformerLens per site kind: {worst}")
    assert max(worst.values()) <= TOL, worst
    clean, corrupt = f.baselines(ds)
    assert float((clean - corrupt).abs().min()) > 0.5       # a real clean-corrupt gap, not noise


def test_attention_equals_hook_pattern(real):
    from fieldcheck.experiments.attention import patterns_from_cache, patterns_hooked

    spec, m, ds, f = real
    layers, _ = _grid(f, ds)
    r = f.run(ds)
    ref = patterns_hooked(m, ds.clean_tokens, layers)
    for l in layers:
        ours = patterns_from_cache(f.fm, r.clean.resid[l], r.clean.k[l], l)
        assert (ours - ref[l]).abs().max().item() <= 1e-5


def test_dla_adds_up_and_head_terms_add_up_to_hook_attn_out(real):
    spec, m, ds, f = real
    d = f.dla(ds, "all", which="clean")          # raises NumericalError when the terms do not add up
    total = f.metric_values(ds, "logit_diff", "clean").double().numpy()
    assert np.abs(d.values.sum(0) - total).max() <= 1e-3 * max(1.0, np.abs(total).max())
    _, cache = m.run_with_cache(ds.clean_tokens)
    r = f.run(ds)
    for l in _grid(f, ds)[0]:
        shares = f.fm.head_shares(l, r.clean.z[l]).sum(0)
        b = f.fm.o_bias(l)
        if b is not None and not f.fm.attn_post_norm:
            shares = shares + b
        ref = cache[f"blocks.{l}.hook_attn_out"]
        assert (shares - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


def test_first_order_equals_finite_differences(real):
    """S . d against the central difference of the real patch phi + a d (a = +-1e-2 of a source
    the size of the residual's clean-corrupt difference at S2): the same derivative."""
    spec, m, ds, f = real
    l = depth(0.5).of(f)[0]
    site = resid_pre(l, "S2")
    pred = vals(f.predict(ds, site, alpha=1.0))[0]
    base = f.metric_values(ds, "logit_diff", "corrupt").double().numpy()
    slope = pred - base
    eps = 1e-2
    up = vals(f.patch(ds, site, alpha=eps, progress=False))[0]
    down = vals(f.patch(ds, site, alpha=-eps, progress=False))[0]
    fd = (up - down) / (2 * eps)
    assert np.abs(slope).max() > 1e-2
    assert np.abs(fd - slope).max() <= 1e-3 * np.abs(slope).max() + 1e-3, (fd, slope)


def test_light_cone_is_exact(real):
    spec, m, ds, f = real
    l = depth(0.25).of(f)[0]
    g = f.green(ds, resid_pre(l, "S2"))
    assert g.outside_cone_max == 0.0
    r, b, pos = f.run(ds), torch.arange(ds.n), ds.position("S2")
    delta = (r.clean.resid[l] - r.corrupt.resid[l])[b, pos]
    assert torch.equal(g.response[b, l, pos], delta)               # G(l, t; l, t) = I
    clean, corrupt = (np.asarray(x, dtype=np.float64) for x in f.baselines(ds))
    den = f.patch(ds, resid_pre(l, "all"), jointly=True, progress=False)
    noi = f.patch(ds, resid_pre(l, "all"), jointly=True, direction="noise", progress=False)
    assert np.abs(vals(den)[0] - clean).max() <= TOL and np.abs(vals(noi)[0] - corrupt).max() <= TOL


def test_path_patching_into_everything_downstream_is_joint_patching(real):
    from fieldcheck.experiments.paths import downstream

    spec, m, ds, f = real
    l1, l2 = depth(0.3).of(f)[0], depth(0.6).of(f)[0]
    senders = attn_head(l1, [0, 1], "S2") + mlp_out(l1, "END") + attn_head(l2, 0, ["S2", "END"])
    sites = senders.resolve(f.n_layers, f.n_heads, ds.seq_len, ds.position_names)
    pr = f.path_patch(ds, senders, downstream(sites, f.n_layers))
    pa = f.patch(ds, senders, jointly=True, progress=False)
    assert np.abs(vals(pr) - vals(pa)).max() <= TOL
    assert np.abs(pa.effect).max() > 1e-3


def test_edge_circuits_are_exact_at_their_ends_and_for_a_node(real):
    from fieldcheck.experiments.circuits import _masks_metric
    from fieldcheck.experiments.edges import edge_graph

    spec, m, ds, f = real
    g = edge_graph(f)
    l = depth(0.5).of(f)[0]
    keep = g.adjacency.copy()
    no_head = keep.copy()
    no_head[g.sender_index(f"L{l}.H0")] = False
    full, empty, node = _masks_metric(f, ds, [keep, np.zeros_like(keep), no_head], "corrupt", "logit_diff")
    clean, corrupt = (np.asarray(x, dtype=np.float64) for x in f.baselines(ds))
    patched = vals(f.patch(ds, attn_head(l, 0, "all"), direction="noise", jointly=True, progress=False))[0]
    assert np.abs(full - clean).max() <= TOL and np.abs(empty - corrupt).max() <= TOL
    assert np.abs(node - patched).max() <= TOL
