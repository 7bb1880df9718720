"""Correctness (not speed) of the light-cone patching engine.

The engine (``field.patch``, engine="lightcone") is checked against

- the plain one-forward-per-site path (``engine="hooks"``: the TransformerBridge run with a hook
  at the site), for every source kind, both directions, single and joint patches, alpha 1 and 0.7,
  and the site kinds resid_pre, attn_head, mlp_out, resid_post, attn_out;
- TransformerLens's own patching functions (``get_act_patch_resid_pre``,
  ``get_act_patch_attn_head_out_by_pos``, ``reduce="none"``);
- identities: patching a whole layer with the clean run reproduces the clean metric (resid_mid
  included, which the hooked path cannot patch), noising reproduces the corrupted metric, a
  zero-delta site and alpha=0 change nothing (exactly), a too-small memory budget raises
  MemoryBudgetError naming the size needed, and chunking does not change the results.

Tiny float32 models: max abs difference <= 1e-5. One pretrained test compares a few SmolLM2 sites
with TransformerLens to <= 1e-4.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from fieldcheck.datasets import ioi
from fieldcheck.errors import MemoryBudgetError
from fieldcheck.lab import Field
from fieldcheck.sites import attn_head, attn_out, mlp_out, resid_mid, resid_post, resid_pre
from fieldcheck.sources import gaussian
from _reference import tl_logit_diff, vals

TOL = 1e-5
ARCHS = ("gpt2", "llama")
SOURCES = ("other", "zero", "mean", "gaussian", "steer")


@pytest.fixture(scope="module", params=ARCHS)
def setup(request):
    from fieldcheck.testing import tiny_model

    model = tiny_model(request.param, n_layers=3)
    ds = ioi(model, n=6, seed=1)
    return request.param, model, ds, Field(model)


def _source(kind: str, d: int):
    if kind == "gaussian":
        return gaussian(0.5)
    if kind == "steer":
        g = torch.Generator().manual_seed(7)
        return torch.randn(d, generator=g) * 0.5
    return kind


def _fd_T(ds):
    return int(ds.first_diff.min()), ds.seq_len


def _single_sites(ds, with_heads: bool):
    """One or two sites of every kind, around the first differing token and at the end."""
    fd, T = _fd_T(ds)
    s = (resid_pre(0, T - 1) + resid_pre(1, fd - 1) + resid_pre(2, fd) + mlp_out(0, fd)
         + resid_post(1, T - 1) + attn_out(2, fd + 1))
    if with_heads:
        s = s + attn_head(1, 3, fd)
    return s


def _joint_sites(ds, with_heads: bool):
    """Sites of several kinds and layers patched together (attn_out is checked jointly on its own)."""
    fd, T = _fd_T(ds)
    s = resid_pre(0, [fd, T - 2]) + mlp_out(0, T - 1) + resid_post(1, [fd + 1])
    if with_heads:
        s = s + attn_head(2, [1, 2], [fd, T - 1])
    return s


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("jointly,alpha", [(False, 1.0), (False, 0.7), (True, 1.0), (True, 0.7)])
def test_matches_hooked_path(setup, source, direction, jointly, alpha):
    arch, model, ds, field = setup
    src = _source(source, model.cfg.d_model)
    with_heads = source != "steer"  # a [d_model] steering vector does not fit a head's z (see below)
    sites = _joint_sites(ds, with_heads) if jointly else _single_sites(ds, with_heads)
    kw = dict(direction=direction, source=src, alpha=alpha, jointly=jointly, progress=False)
    ours = field.patch(ds, sites, **kw)
    ref = field.patch(ds, sites, engine="hooks", **kw)
    assert ours.values.shape == ref.values.shape
    assert np.abs(vals(ours) - vals(ref)).max() <= TOL
    assert ours.cost["engine"] == "lightcone" and ref.cost["engine"] == "hooks"
    if jointly:  # attn_out alone, every position of one layer (exact: nothing upstream of it moves)
        s = attn_out(1, "all")
        a = field.patch(ds, s, **kw)
        b = field.patch(ds, s, engine="hooks", **kw)
        assert np.abs(vals(a) - vals(b)).max() <= TOL


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_steering_a_head(setup, direction):
    arch, model, ds, field = setup
    fd, T = _fd_T(ds)
    vec = torch.linspace(-1.0, 1.0, model.cfg.d_model // model.cfg.n_heads)
    sites = attn_head([0, 2], 3, [fd, T - 1])
    for alpha in (1.0, 0.7):
        a = field.patch(ds, sites, direction=direction, source=vec, alpha=alpha, progress=False)
        b = field.patch(ds, sites, direction=direction, source=vec, alpha=alpha, engine="hooks")
        assert np.abs(vals(a) - vals(b)).max() <= TOL


# --- against TransformerLens's own patching functions -----------------------------------------------
def test_matches_transformer_lens_resid_pre(setup):
    import transformer_lens.patching as tp

    arch, model, ds, field = setup
    _, cache = model.run_with_cache(ds.clean_tokens)
    L, T, B = model.cfg.n_layers, ds.seq_len, ds.n
    fd = int(ds.first_diff.min())
    if arch == "gpt2":  # the full [layer, pos, batch] grid
        tl = tp.get_act_patch_resid_pre(model, ds.corrupt_tokens, cache, tl_logit_diff(ds), reduce="none").values
        assert tuple(tl.shape) == (L, T, B)
        ours = field.patch(ds, resid_pre("all", "all"), progress=False)
        assert ours.values.shape == (L * T, B)  # layer-major, then position
        assert np.abs(vals(ours) - tl.reshape(L * T, B).double().numpy()).max() <= TOL
    else:  # a subset through index_df
        layers, positions = [0, 1, 2], [0, fd, fd + 1, T - 1]
        df = pd.DataFrame([(l, p) for l in layers for p in positions], columns=["layer", "pos"])
        tl = tp.get_act_patch_resid_pre(model, ds.corrupt_tokens, cache, tl_logit_diff(ds), index_axis_names=None,
                                        index_df=df, reduce="none").values
        ours = field.patch(ds, resid_pre(layers, positions), progress=False)
        assert ours.values.shape == tuple(tl.shape) == (len(df), B)
        assert np.abs(vals(ours) - tl.double().numpy()).max() <= TOL


def test_matches_transformer_lens_heads(setup):
    import transformer_lens.patching as tp

    arch, model, ds, field = setup
    _, cache = model.run_with_cache(ds.clean_tokens)
    L, H, T, B = model.cfg.n_layers, model.cfg.n_heads, ds.seq_len, ds.n
    fd = int(ds.first_diff.min())
    layers, positions, heads = [0, 2], [fd - 1, fd, T - 1], [0, H - 1]
    df = pd.DataFrame([(l, p, h) for l in layers for p in positions for h in heads],
                      columns=["layer", "pos", "head"])  # rows in fieldcheck's site order
    tl = tp.get_act_patch_attn_head_out_by_pos(model, ds.corrupt_tokens, cache, tl_logit_diff(ds),
                                               index_axis_names=None, index_df=df, reduce="none").values
    ours = field.patch(ds, attn_head(layers, heads, positions), progress=False)
    assert ours.values.shape == tuple(tl.shape) == (len(df), B)  # layer-major, then position, then head
    assert np.abs(vals(ours) - tl.double().numpy()).max() <= TOL


# --- identities ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["resid_pre", "resid_mid"])
@pytest.mark.parametrize("layer", [0, 1])
def test_whole_layer_reproduces_the_other_run(setup, kind, layer):
    arch, model, ds, field = setup
    clean, corrupt = (np.asarray(x, dtype=np.float64) for x in field.baselines(ds))
    sites = (resid_pre if kind == "resid_pre" else resid_mid)(layer, "all")
    den = field.patch(ds, sites, jointly=True, progress=False)
    noi = field.patch(ds, sites, jointly=True, direction="noise", progress=False)
    assert den.values.shape == (1, ds.n)
    assert np.abs(vals(den)[0] - clean).max() <= TOL
    assert np.abs(vals(noi)[0] - corrupt).max() <= TOL
    assert np.abs(clean - corrupt).max() > 1e-3  # the runs differ, so the identity is not vacuous


def test_zero_delta_site_and_alpha_zero_are_exact_no_ops(setup):
    arch, model, ds, field = setup
    fd, T = _fd_T(ds)
    clean, corrupt = (np.asarray(x, dtype=np.float64) for x in field.baselines(ds))
    # identical token prefixes: the clean-minus-corrupt source before the first difference is exactly 0
    res = field.patch(ds, resid_pre("all", list(range(fd))) + attn_head("all", "all", 0), progress=False)
    assert (vals(res) == corrupt[None]).all()
    assert res.skipped.all()
    res = field.patch(ds, resid_pre(1, fd), source=torch.zeros(model.cfg.d_model), progress=False)
    assert (vals(res) == corrupt[None]).all()
    for direction, base in (("denoise", corrupt), ("noise", clean)):
        for src in ("other", "zero", gaussian(0.5)):
            for jointly in (False, True):
                res = field.patch(ds, resid_pre([0, 2], [fd, T - 1]) + mlp_out(1, "all"), direction=direction,
                                  source=src, alpha=0.0, jointly=jointly, progress=False)
                assert (vals(res) == base[None]).all()


def test_memory_budget_too_small(setup):
    arch, model, ds, _ = setup
    field = Field(model, memory_budget=1000)
    with pytest.raises(MemoryBudgetError) as e:
        field.patch(ds, resid_pre(0, "all"), progress=False)
    m = re.search(r"at least (\d+) bytes", str(e.value))
    assert m and int(m.group(1)) > 1000, str(e.value)
    # the size named is enough
    ok = Field(model, memory_budget=int(m.group(1)))
    ok.patch(ds, resid_pre(0, "all"), progress=False)


def test_chunked_equals_unchunked(setup):
    arch, model, ds, field = setup
    sites = resid_pre("all", "all") + attn_head([0, 2], "all", "all") + mlp_out(1, "all")
    whole = field.patch(ds, sites, progress=False)
    from fieldcheck.field.engine import LightConeEngine

    T = ds.seq_len
    per_row = LightConeEngine(field.fm).bytes_per_row(T, T)  # the largest row (all positions)
    small = Field(model, memory_budget=3 * per_row)
    chunked = small.patch(ds, sites, progress=False)
    assert chunked.cost["rows"] == whole.cost["rows"] > 30
    assert chunked.cost["chunks"] >= 4 * whole.cost["chunks"]
    assert np.abs(vals(whole) - vals(chunked)).max() <= TOL  # other batch shapes: float32 rounding only
    assert (whole.skipped == chunked.skipped).all()


# --- SmolLM2 against TransformerLens -------------------------------------------------------------------
@pytest.mark.pretrained
def test_smollm2_matches_transformer_lens(smollm2):
    import transformer_lens.patching as tp

    model = smollm2
    ds = ioi(model, n=8, seed=0)
    layers, positions = [0, 15, 29], [9, 11, 14]   # one TransformerLens forward of SmolLM2 per cell
    df = pd.DataFrame([(l, p) for l in layers for p in positions], columns=["layer", "pos"])
    _, cache = model.run_with_cache(ds.clean_tokens)
    tl = tp.get_act_patch_resid_pre(model, ds.corrupt_tokens, cache, tl_logit_diff(ds), index_axis_names=None,
                                    index_df=df, reduce="none").values
    ours = Field(model).patch(ds, resid_pre(layers, positions), progress=False)
    assert ours.values.shape == tuple(tl.shape) == (len(df), ds.n)
    assert np.abs(vals(ours) - tl.double().numpy()).max() <= 1e-4
