"""Attention weights and head scores (fieldcheck.experiments.attention), assert_attends."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fieldcheck as fc
from fieldcheck import datasets, mean
from fieldcheck.claim.result import ClaimFailed
from fieldcheck.errors import DatasetError, SiteError, UsageError
from fieldcheck.experiments.attention import (AttentionResult, HeadScores, detection_patterns,
                                              patterns_from_cache, repeated_random_tokens)
from fieldcheck.lab import Field
from fieldcheck.sites import attn_head, resid_pre
from fieldcheck.testing import tiny_model


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def setup(request):
    m = tiny_model(request.param, n_layers=2)
    f = Field(m)
    return f, datasets.ioi(m, n=6, seed=1)


def _hook_patterns(model, tokens):
    _, cache = model.run_with_cache(tokens)
    return [cache[f"blocks.{l}.attn.hook_pattern"] for l in range(model.cfg.n_layers)]


@pytest.mark.parametrize("which", ["clean", "corrupt"])
def test_patterns_from_the_cache_match_transformer_lens(setup, which):
    """Queries from the cached residual against the cached keys give TransformerLens's
    hook_pattern (the bridge's own hooked forward) within 1e-5, every layer and head."""
    f, ds = setup
    r = f.run(ds)
    cache = r.clean if which == "clean" else r.corrupt
    ref = _hook_patterns(f.model, ds.clean_tokens if which == "clean" else ds.corrupt_tokens)
    for l in range(f.n_layers):
        got = patterns_from_cache(f.fm, cache.resid[l], cache.k[l], l)
        assert got.shape == ref[l].shape
        torch.testing.assert_close(got, ref[l], atol=1e-5, rtol=0)
        torch.testing.assert_close(got.sum(-1), torch.ones_like(got.sum(-1)), atol=1e-5, rtol=0)


def test_attention_weights_are_the_patterns_at_query_and_key(setup):
    f, ds = setup
    att = f.attention(ds, "all", query="END", key="IO")
    ref = _hook_patterns(f.model, ds.clean_tokens)
    b = torch.arange(ds.n)
    q, k = ds.positions["END"], ds.positions["IO"]
    expect = np.stack([ref[l][b, h, q, k].numpy() for l in range(f.n_layers) for h in range(f.n_heads)])
    assert att.weights.shape == (f.n_layers * f.n_heads, ds.n)
    np.testing.assert_allclose(att.weights, expect, atol=1e-5)
    assert att.labels[0] == "L0.H0" and att.patterns.shape == (f.n_layers * f.n_heads, ds.n, ds.seq_len, ds.seq_len)
    # the hooked path (one bridge forward) agrees, and integer positions work too
    hooked = f.attention(ds, attn_head(1, [0, 3]), query="END", key="S1", engine="hooks")
    light = f.attention(ds, [(1, 0), (1, 3)], query=-1, key="S1")
    assert hooked.heads == light.heads == [(1, 0), (1, 3)]
    np.testing.assert_allclose(hooked.weights, light.weights, atol=1e-5)


def test_attention_runs_no_forward_after_the_cached_runs(setup):
    """Attention is read from the cached runs: once field.run(ds) has run, the HF model's
    forward (and every decoder layer's) is never called again."""
    f, ds = setup
    f.run(ds)
    calls = []
    mods = [f.model.original_model] + [m for n, m in f.model.original_model.named_modules()
                                       if n.endswith(("layers.0", "h.0"))]
    handles = [m.register_forward_hook(lambda *a: calls.append(1)) for m in mods]
    try:
        att = f.attention(ds, "all", "END", "S2", which="corrupt")
    finally:
        for h in handles:
            h.remove()
    assert calls == [] and att.which == "corrupt"
    # control: the hooks do fire on a forward
    handles = [m.register_forward_hook(lambda *a: calls.append(1)) for m in mods]
    try:
        f.attention(ds, [(0, 0)], "END", "S2", engine="hooks")
    finally:
        for h in handles:
            h.remove()
    assert calls


def test_attention_result_summary_dict_and_plots(setup):
    f, ds = setup
    att = f.attention(ds, attn_head([0, 1], "all", "END"))
    assert "END -> IO" in str(att) and len(att.heads) == 2 * f.n_heads
    d = att.to_dict()
    assert d["labels"] == att.labels and len(d["mean"]) == len(att.heads)
    top = att.top(3)
    assert att.select(top).mean.tolist() == sorted(att.mean, reverse=True)[:3]
    grid = att.grid()
    assert grid.shape == (f.n_layers, f.n_heads) and np.isfinite(grid).all()
    assert "<img" in att._repr_html_()
    pd = att.plot_data()
    assert pd["kind"] == "heatmap" and np.array(pd["z"]).shape == (f.n_layers, f.n_heads)
    import matplotlib.pyplot as plt
    for fig in (att.heatmap(), att.plot(), att.plot(head=(1, 2), example=1)):
        assert fig.axes
        plt.close(fig)


def test_attention_errors(setup):
    f, ds = setup
    with pytest.raises(DatasetError, match="cannot attend forward"):
        f.attention(ds, "all", query="IO", key="END")
    with pytest.raises(SiteError, match="attention heads"):
        f.attention(ds, resid_pre(0, "END"))
    with pytest.raises(SiteError, match="unknown head 'L0.H99'.*nearest valid"):
        f.attention(ds, [(0, 99)])
    with pytest.raises(DatasetError, match="unknown position name"):
        f.attention(ds, "all", key="NOPE")
    with pytest.raises(UsageError, match="which"):
        f.attention(ds, which="both")
    att = f.attention(ds, [(0, 1)])
    with pytest.raises(SiteError, match="unknown head 'L1.H1' in this result; nearest valid: L0.H1"):
        att.select([(1, 1)])


# --- head scores -------------------------------------------------------------------------------
def test_detection_patterns_are_transformer_lens_patterns():
    from transformer_lens import head_detector as hd
    toks = torch.tensor([5, 7, 9, 7, 5, 7, 9, 3, 3])
    mine = detection_patterns(toks)
    ref = {"previous_token": hd.get_previous_token_head_detection_pattern(toks[None]),
           "duplicate_token": hd.get_duplicate_token_head_detection_pattern(toks[None]),
           "induction": hd.get_induction_head_detection_pattern(toks[None])}
    for k in ref:
        torch.testing.assert_close(mine[k], ref[k].float(), atol=0, rtol=0)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_head_scores_match_transformer_lens_detector(arch):
    """normalize="transformer_lens" is TL's "mul" score of each sequence (its detection pattern
    and compute_head_attention_similarity_score on the bridge's hook_pattern); the default
    normalize="targets" rescales it by T / (query positions that have a target)."""
    from transformer_lens import head_detector as hd
    m = tiny_model(arch, n_layers=2)
    f = Field(m)
    tl = f.head_scores(n=3, length=7, seed=2, normalize="transformer_lens")
    tg = f.head_scores(n=3, length=7, seed=2)
    hooked = f.head_scores(n=3, length=7, seed=2, engine="hooks")
    toks = torch.as_tensor(tl.tokens)
    assert toks.shape == (3, 1 + 2 * 7) and (toks[:, 1:8] == toks[:, 8:]).all()
    pats = _hook_patterns(m, toks)
    T = toks.shape[1]
    for kind in ("previous_token", "duplicate_token", "induction"):
        for b in range(3):
            D = getattr(hd, f"get_{kind}_head_detection_pattern")(toks[b:b + 1])
            rows = int((D.sum(-1) > 0).sum())
            for l in range(2):
                for h in range(f.n_heads):
                    ref = hd.compute_head_attention_similarity_score(
                        pats[l][b, h], D, exclude_bos=False, exclude_current_token=False, error_measure="mul")
                    assert tl.scores[kind][l, h, b] == pytest.approx(ref, abs=1e-5)
                    assert tg.scores[kind][l, h, b] == pytest.approx(ref * T / rows, abs=1e-5)
        np.testing.assert_allclose(hooked.scores[kind], tg.scores[kind], atol=1e-5)
        assert ((tg.scores[kind] >= -1e-7) & (tg.scores[kind] <= 1 + 1e-6)).all()


def test_head_scores_of_a_real_detect_head_call(tiny_gpt2):
    """The whole TL entry point (detect_head on a prompt) against ours on the same tokens."""
    from transformer_lens.head_detector import detect_head
    f = Field(tiny_gpt2)
    hs = f.head_scores(n=1, length=6, seed=3, normalize="transformer_lens")
    toks = torch.as_tensor(hs.tokens)
    _, cache = tiny_gpt2.run_with_cache(toks, remove_batch_dim=True)
    # given a cache and a detection pattern, detect_head reads only the prompt's token count
    prompt = " x" * (toks.shape[1] - 1)
    assert tiny_gpt2.to_tokens(prompt).shape[-1] == toks.shape[1]
    D = detection_patterns(toks[0])
    for kind in ("previous_token", "duplicate_token", "induction"):
        ref = detect_head(tiny_gpt2, prompt, D[kind], cache=cache)
        np.testing.assert_allclose(hs.mean(kind), ref.numpy(), atol=1e-5)


def test_head_scores_result_and_assertion(tiny_llama):
    f = Field(tiny_llama)
    hs = f.head_scores(n=4, length=5, seed=0, kinds=["induction", "previous_token"])
    assert isinstance(hs, HeadScores) and set(hs.scores) == {"induction", "previous_token"}
    assert hs.mean("induction").shape == (f.n_layers, f.n_heads)
    best = hs.top("induction", 1)[0]
    att = hs.of("induction", [best])
    assert isinstance(att, AttentionResult) and att.weights.shape == (1, 4)
    assert att.mean[0] == pytest.approx(hs.mean("induction").max())
    assert "induction: best" in str(hs) and hs.to_dict()["n"] == 4
    import matplotlib.pyplot as plt
    plt.close(hs.heatmap("previous_token"))
    with pytest.raises(UsageError, match="no 'duplicate_token' scores"):
        hs.mean("duplicate_token")
    with pytest.raises(UsageError, match="unknown head kind"):
        f.head_scores(kinds=["copying"])
    with pytest.raises(UsageError, match="context"):
        f.head_scores(length=10_000)


def test_repeated_random_tokens_avoid_special_ids(tiny_gpt2):
    t = repeated_random_tokens(tiny_gpt2, 4, 9, seed=1)
    special = set(tiny_gpt2.tokenizer.all_special_ids)
    body = t[:, 1:] if tiny_gpt2.tokenizer.bos_token_id is not None else t
    assert not (set(body.flatten().tolist()) & special)
    assert torch.equal(t, repeated_random_tokens(tiny_gpt2, 4, 9, seed=1))


# --- assert_attends ------------------------------------------------------------------------------
def _synthetic(weights):
    w = np.asarray(weights, dtype=float)
    return AttentionResult([(0, i) for i in range(w.shape[0])], w, "END", "IO", n_layers=1, n_heads=w.shape[0])


def test_assert_attends_decides_each_head():
    rng = np.random.default_rng(0)
    att = _synthetic(np.clip([0.8 + 0.05 * rng.standard_normal(16), 0.6 + 0.05 * rng.standard_normal(16)], 0, 1))
    res = fc.assert_attends(att, mean > 0.5)
    assert res[0].passed and res[0].details["row"] == "L0.H1" and res[0].plot["kind"] == "heatmap"
    with pytest.raises(ClaimFailed, match="L0.H1"):
        fc.assert_attends(att, mean > 0.7)
    assert fc.assert_attends(att, mean > 0.7, require="any")[0].passed
    one = fc.assert_attends(att.select([(0, 0)]), mean > 0.5)[0]
    assert one.plot["kind"] == "hist"
    bad = _synthetic([[np.nan] + [0.9] * 15])
    with pytest.raises(ClaimFailed, match="NaN"):
        fc.assert_attends(bad, mean > 0.5)
    with pytest.raises(fc.CriterionError if hasattr(fc, "CriterionError") else Exception):
        fc.assert_attends(att, fc.r2 > 0.5)
    with pytest.raises(Exception, match="require"):
        fc.assert_attends(att, mean > 0.5, require="most")


def test_assert_attends_on_a_real_result(setup):
    f, ds = setup
    att = f.attention(ds, "all", "END", "IO")
    # random tiny models spread their attention: no head puts half of it on IO
    assert fc.assert_attends(att, mean < 0.5)[0].passed
    with pytest.raises(ClaimFailed):
        fc.assert_attends(att, mean > 0.5, require="any")


def test_assert_attends_plot_renders_in_the_html_report():
    from fieldcheck.display import draw_plot
    att = _synthetic(np.full((3, 16), 0.9) + np.linspace(0, 0.05, 16))
    res = fc.assert_attends(att, mean > 0.5)[0]
    assert res.plot["kind"] == "heatmap" and draw_plot(res.to_dict()["plot"]) is not None


@pytest.mark.pretrained
def test_smollm2_grouped_query_patterns_match_transformer_lens(smollm2):
    """SmolLM2 has grouped-query attention (9 query heads over 3 key/value heads): the
    patterns read from the cache match the bridge's hook_pattern in every layer."""
    f = Field(smollm2)
    ds = datasets.ioi(smollm2, n=4, seed=0)
    assert f.fm.n_kv_heads < f.n_heads
    r = f.run(ds)
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(f.n_layers)]
    _, cache = smollm2.run_with_cache(ds.clean_tokens, names_filter=lambda n: n in names)
    for l in range(f.n_layers):
        got = patterns_from_cache(f.fm, r.clean.resid[l], r.clean.k[l], l)
        torch.testing.assert_close(got, cache[names[l]], atol=1e-5, rtol=0)
    att = f.attention(ds, [(20, 0), (29, 8)], "END", "IO")
    b = torch.arange(ds.n)
    ref = cache[names[29]][b, 8, ds.positions["END"], ds.positions["IO"]].numpy()
    np.testing.assert_allclose(att.weights[1], ref, atol=1e-5)
