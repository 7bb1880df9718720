"""Every model family on the light-cone engine, exactly, as a new user loads it.

For each family a random tiny model (3 blocks, d_model 64, grouped-query attention where the family
has it, every family feature switched on: q/k/v biases, q/k norms, post-norms, soft-capping,
sliding windows shorter than the prompts, partial rotary, parallel residual, fused projections,
Llama-3 rope scaling) is written with ``save_pretrained`` and loaded with ``fc.load_model(folder)``.
Against independent references:

- the engine's forward equals the HF forward and the TransformerBridge forward (<= 1e-5 on logits);
- patch effects equal TransformerLens's own patching helpers (``get_act_patch_resid_pre`` over every
  layer at five positions, ``get_act_patch_attn_head_out_by_pos``) and the hooked path for the other
  site kinds and sources (<= 1e-5, float32);
- float64: sensitivities and Green-function JVPs equal central finite differences; the order-2
  prediction (forward-over-forward JVP) is much closer than order 1 for small sources;
- identities: a whole-layer patch reproduces the other run, a zero source is skipped and exact, path
  patching into every downstream receiver equals joint patching, a matched transfer equals a patch,
  the Green function vanishes outside the light cone with G(l, t; l, t) = I.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import fieldcheck as fc
from fieldcheck.models.info import model_info
from fieldcheck.experiments.green import _forward_from
from fieldcheck.experiments.paths import downstream
from fieldcheck.field.arch import UnsupportedArchitecture
from fieldcheck.lab import Field
from fieldcheck.field.engine import run_cache
from fieldcheck.models.tiny import FAMILIES, tiny_hf_model
from fieldcheck.sites import attn_head, attn_out, mlp_out, resid_mid, resid_post, resid_pre
from _reference import central_difference, tl_logit_diff, vals

TOL = 1e-5
# gpt2 and llama are covered in depth by test_engine_equivalence / test_response / test_green
ARCHS = [a for a in FAMILIES if a not in ("gpt2", "llama")]
# make test-quick runs two families with the most features between them (GQA, q/k/v biases, tied
# embeddings, sliding windows; post-norms, soft-capping); make test and CI run every family
QUICK = ("qwen2", "gemma2")


@pytest.fixture(scope="module", params=[a if a in QUICK else pytest.param(a, marks=pytest.mark.slow) for a in ARCHS])
def fam(request, tmp_path_factory):
    arch = request.param
    folder = tmp_path_factory.mktemp(f"family-{arch}")
    hf, tok = tiny_hf_model(arch, n_layers=3)
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    m = fc.load_model(folder)
    ds = fc.datasets.ioi(m, n=4, seed=1)
    return arch, folder, m, ds, Field(m)


@pytest.fixture(scope="module")
def fam64(fam):
    arch, folder, *_ = fam
    m = fc.load_model(folder)
    m.original_model.double()
    ds = fc.datasets.ioi(m, n=3, seed=2)
    return m, ds, Field(m)


def test_loads_and_runs_on_the_engine(fam):
    arch, folder, m, ds, f = fam
    info = model_info(m)
    assert f.engine_name == "lightcone" and info["engine"] == "lightcone"
    assert info["family"] == f.fm.family
    toks = torch.cat([ds.clean_tokens, ds.corrupt_tokens])
    with torch.no_grad():
        hf_logits = m.original_model(toks).logits
        bridge_logits = m(toks)
        c = run_cache(f.fm, toks)
        ours = f.fm.unembed(f.fm.final_norm(c.resid[-1]))
    assert (ours - hf_logits).abs().max().item() <= TOL
    assert (ours - bridge_logits).abs().max().item() <= TOL
    # the family's features are exercised: windows shorter than the prompts, GQA, soft-capping
    windows = [f.fm.window(l) for l in range(f.n_layers)]
    if arch in ("mistral", "gemma2", "gemma3"):
        assert any(w is not None and w < ds.seq_len for w in windows), windows
    if arch not in ("neox",):
        assert f.fm.n_kv_heads < f.fm.n_heads
    if arch in ("gemma2", "gemma3"):
        assert f.fm.logit_softcap is not None
    if arch == "qwen2":  # transformers maps a Qwen2 config to its own tokenizer class; the folder's is kept
        from transformers import AutoTokenizer

        from fieldcheck.models.tiny import tiny_tokenizer

        assert type(AutoTokenizer.from_pretrained(folder)).__name__ == "Qwen2Tokenizer"
        want = tiny_tokenizer()("Mary gave John", add_special_tokens=False)["input_ids"]
        assert m.to_tokens("Mary gave John", prepend_bos=False)[0].tolist() == want


def test_patching_matches_transformer_lens(fam):
    import transformer_lens.patching as tp

    arch, folder, m, ds, f = fam
    _, cache = m.run_with_cache(ds.clean_tokens)
    L, T, B, H = m.cfg.n_layers, ds.seq_len, ds.n, m.cfg.n_heads
    fd = int(ds.first_diff.min())
    # every layer at the positions where patches act: before the change (exactly no effect), the
    # changed token, the next one and the last two (one TransformerLens forward per cell)
    positions = sorted({0, fd, fd + 1, T - 2, T - 1})
    grid = pd.DataFrame([(l, p) for l in range(L) for p in positions], columns=["layer", "pos"])
    tl = tp.get_act_patch_resid_pre(m, ds.corrupt_tokens, cache, tl_logit_diff(ds), index_axis_names=None,
                                    index_df=grid, reduce="none").values
    ours = f.patch(ds, resid_pre("all", positions), progress=False)
    assert ours.values.shape == (len(grid), B)
    diff = np.abs(vals(ours) - tl.double().numpy()).max()
    assert diff <= TOL
    assert np.abs(vals(ours) - vals(ours)[:1]).max() > 1e-3  # not vacuous
    df = pd.DataFrame([(l, p, h) for l in (0, 2) for p in (fd, T - 1) for h in (0, H - 1)],
                      columns=["layer", "pos", "head"])
    tl = tp.get_act_patch_attn_head_out_by_pos(m, ds.corrupt_tokens, cache, tl_logit_diff(ds), index_axis_names=None,
                                               index_df=df, reduce="none").values
    ours = f.patch(ds, attn_head([0, 2], [0, H - 1], [fd, T - 1]), progress=False)
    assert np.abs(vals(ours) - tl.double().numpy()).max() <= TOL


@pytest.mark.parametrize("source", ["other", "mean", "steer"])
def test_other_sites_match_the_hooked_path(fam, source):
    arch, folder, m, ds, f = fam
    fd, T = int(ds.first_diff.min()), ds.seq_len
    src = torch.randn(m.cfg.d_model, generator=torch.Generator().manual_seed(3)) if source == "steer" else source
    sites = mlp_out([0, 2], [fd, T - 1]) + resid_post(1, [fd, T - 1])
    # attn_out sources are residual deltas: exact alone, or jointly over the positions of one block
    for direction, jointly, alpha, s in (("denoise", False, 1.0, sites + attn_out(1, [fd, T - 1])),
                                         ("noise", True, 0.7, sites), ("denoise", True, 0.7, attn_out(1, "all"))):
        kw = dict(direction=direction, source=src, alpha=alpha, jointly=jointly, progress=False)
        a, b = f.patch(ds, s, **kw), f.patch(ds, s, engine="hooks", **kw)
        assert a.cost["engine"] == "lightcone" and b.cost["engine"] == "hooks"
        assert np.abs(vals(a) - vals(b)).max() <= TOL


def test_light_cone_identities(fam):
    arch, folder, m, ds, f = fam
    clean, corrupt = (np.asarray(x, dtype=np.float64) for x in f.baselines(ds))
    assert np.abs(clean - corrupt).max() > 1e-3
    kinds = [resid_pre] if f.fm.parallel else [resid_pre, resid_mid]  # parallel: the MLP skips resid_mid
    for kind in kinds:
        den = f.patch(ds, kind(1, "all"), jointly=True, progress=False)
        noi = f.patch(ds, kind(1, "all"), jointly=True, direction="noise", progress=False)
        assert np.abs(vals(den)[0] - clean).max() <= TOL
        assert np.abs(vals(noi)[0] - corrupt).max() <= TOL
    fd = int(ds.first_diff.min())
    res = f.patch(ds, resid_pre("all", list(range(fd))) + attn_head("all", "all", 0), progress=False)
    assert (vals(res) == corrupt[None]).all() and res.skipped.all()
    g = f.green(ds, resid_pre(1, "S2"))
    assert g.outside_cone_max == 0.0
    r, b, pos = f.run(ds), torch.arange(ds.n), ds.position("S2")
    delta = (r.clean.resid[1] - r.corrupt.resid[1])[b, pos]
    assert torch.equal(g.response[b, 1, pos], delta)  # G(l, t; l, t) = I


def test_sensitivity_and_jvp_equal_finite_differences(fam64):
    m, ds, f = fam64
    assert f.fm.W_U.dtype == torch.float64
    r, fm = f.run(ds), f.fm
    s = f.sensitivity(ds)
    eps = 1e-5
    g = torch.Generator().manual_seed(0)
    for l, t in ((0, int(ds.first_diff.min())), (2, ds.seq_len - 1)):
        d = torch.randn(ds.n, m.cfg.d_model, dtype=torch.float64, generator=g)
        fd = central_difference(f, ds, l, t, d, eps)
        an = (s.resid[l][:, t] * d).sum(-1)
        assert ((fd - an).abs().max() / an.abs().max()).item() < 1e-6
    # the Green function's JVP against central differences of the forward from phi(1)
    gr = f.green(ds, resid_pre(1, "S2"))
    x, b, pos = r.corrupt.resid[1], torch.arange(ds.n), ds.position("S2")
    tan = torch.zeros_like(x)
    tan[b, pos] = (r.clean.resid[1] - x)[b, pos]
    with torch.no_grad():
        fdj = (_forward_from(fm, x + eps * tan, 1) - _forward_from(fm, x - eps * tan, 1)) / (2 * eps)
    rel = float((gr.response[:, 1:].transpose(0, 1) - fdj).norm() / fdj.norm())
    assert rel < 1e-6, rel
    # order 2 (forward-over-forward JVP through the light cone) is far closer than order 1
    site = resid_pre(1, "S2")
    real = f.patch(ds, site, alpha=0.01).effect
    e1 = np.abs(f.predict(ds, site, alpha=0.01).effect - real).max()
    e2 = np.abs(f.predict(ds, site, alpha=0.01, order=2).effect - real).max()
    assert e2 < e1 / 5, (e1, e2)


def test_every_experiment_runs_and_agrees(fam64):
    m, ds, f = fam64
    fd = int(ds.first_diff.min())
    # path patching into every downstream receiver is ordinary joint patching
    # with a post-norm (Gemma 2/3, OLMo-2) the layer-1 head sender's block also holds receiver heads
    senders = attn_head(0, [0, 1], "S2") + mlp_out(1, "END") + attn_head(1, 3, "S2")
    sites = senders.resolve(f.n_layers, f.n_heads, ds.seq_len, ds.position_names)
    pr = f.path_patch(ds, senders, downstream(sites, f.n_layers))
    pa = f.patch(ds, senders, jointly=True, progress=False)
    np.testing.assert_allclose(pr.values, pa.values, rtol=1e-9, atol=1e-9)
    assert np.abs(pa.effect).max() > 1e-3
    # a matched transfer at the first differing token is the denoising patch
    t = f.transfer(ds, resid_pre(0, fd), pair="matched")
    np.testing.assert_allclose(t.after, f.patch(ds, resid_pre(0, fd), progress=False).values[0], rtol=1e-9)
    # integrated gradients at layer 0 of the only changed token converge to the real effect
    real = f.patch(ds, resid_pre(0, "S2"), progress=False).effect
    ig = f.predict(ds, resid_pre(0, "S2"), method="integrated", steps=64).effect
    assert np.abs(ig - real).max() < 1e-2 * np.abs(real).max()
    sw = f.scale_sweep(ds, resid_pre(2, "END"), alphas=[0, 0.001, 0.5, 1.0])
    assert np.all(sw.effect[0] == 0) and sw.deviation()[1] < 0.05
    sel = f.select_sites(ds, 2, method="gradient")
    np.testing.assert_allclose(sel.real.values, f.patch(ds, sel.sites, jointly=True, progress=False).values)
    p = f.propagate(ds, resid_pre(1, "S2"), alpha=0.0)
    assert float(p.response.abs().max()) == 0.0 and p.outside_cone_max == 0.0
    gs = f.green_slice(ds, resid_pre(0, "S2"), resid_pre(2, "END"), rank=4)
    assert torch.isfinite(gs.S).all() and float(gs.S[0]) > 0 and 0 < gs.explained <= 1 + 1e-9


# --- the generic hooked path (families without a row in fieldcheck.field.arch) -------------------------
@pytest.fixture(scope="module")
def llama_both():
    from fieldcheck.testing import tiny_model

    m = tiny_model("llama", n_layers=3)
    ds = fc.datasets.ioi(m, n=4, seed=1)
    return m, ds, Field(m), Field(m, engine="hooks")


def test_generic_path_equals_the_light_cone(llama_both):
    """Field(model, engine="hooks") runs every experiment through the bridge's own forward (its
    hooks): on a family the engine knows, the two agree to float32 rounding."""
    m, ds, f, g = llama_both
    assert g.engine_name == "hooks" and g.fm.generic and not f.fm.generic
    s1, s2 = f.sensitivity(ds), g.sensitivity(ds)
    for k in ("resid", "z", "attn_out", "mlp_out"):
        assert (getattr(s1, k) - getattr(s2, k)).abs().max().item() <= TOL
    sites = resid_pre("all", "all") + attn_head(1, "all", "all") + mlp_out(1, "all") + attn_out(2, "all")
    assert np.abs(vals(f.predict(ds, sites)) - vals(g.predict(ds, sites))).max() <= TOL
    assert np.abs(f.predict(ds, resid_pre(1, "S2"), order=2, alpha=0.1).effect
                  - g.predict(ds, resid_pre(1, "S2"), order=2, alpha=0.1).effect).max() <= TOL
    assert (f.green(ds, resid_pre(1, "S2")).response - g.green(ds, resid_pre(1, "S2")).response).abs().max() <= TOL
    assert (f.green_slice(ds, resid_pre(0, "S2"), resid_pre(2, "END"), rank=4).S
            - g.green_slice(ds, resid_pre(0, "S2"), resid_pre(2, "END"), rank=4).S).abs().max() <= 1e-4
    assert np.abs(f.transfer(ds, resid_pre(1, "S2")).shift - g.transfer(ds, resid_pre(1, "S2")).shift).max() <= TOL
    snd = mlp_out(1, "END") + attn_out(2, "END")
    assert np.abs(vals(f.path_patch(ds, snd, "final")) - vals(g.path_patch(ds, snd, "final"))).max() <= TOL
    p = g.patch(ds, resid_pre(1, "S2"), progress=False)
    assert p.cost["engine"] == "hooks"
    with pytest.raises(UnsupportedArchitecture, match="light-cone"):
        g.patch(ds, resid_pre(1, "S2"), engine="lightcone")


@pytest.fixture(scope="module")
def unknown(tmp_path_factory):
    """OPT: a family the light-cone engine has no row for."""
    import transformers as tr

    from fieldcheck.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    cfg = tr.OPTConfig(vocab_size=len(tok), hidden_size=64, ffn_dim=128, num_hidden_layers=3, num_attention_heads=4,
                       word_embed_proj_dim=64, max_position_embeddings=256, init_std=0.15, dropout=0.0,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hf = tr.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    folder = tmp_path_factory.mktemp("family-opt")
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    m = fc.load_model(folder)
    return m, fc.datasets.ioi(m, n=4, seed=1), Field(m)


@pytest.mark.slow   # 5-18 s: make test and CI, not make test-quick
def test_unknown_family_runs_every_experiment(unknown):
    m, ds, f = unknown
    info = model_info(m)
    assert (info["family"], info["engine"]) == ("opt", "hooks") and f.engine_name == "hooks" and f.fm.generic
    # the metric read from the residual stream is the model's own
    with torch.no_grad():
        lg = m(ds.corrupt_tokens)
    b = torch.arange(ds.n)
    ld = lg[b, ds.positions["END"], ds.answers] - lg[b, ds.positions["END"], ds.wrong]
    assert (f.metric_values(ds, which="corrupt") - ld).abs().max() <= TOL
    real = f.patch(ds, resid_pre("all", "all"), progress=False)
    assert real.cost["engine"] == "hooks" and np.abs(real.effect).max() > 1e-3
    # first-order predictions converge to real patches as alpha -> 0
    small = f.patch(ds, resid_pre(1, "S2"), alpha=1e-3, progress=False).effect
    pred = f.predict(ds, resid_pre(1, "S2"), alpha=1e-3).effect
    assert np.abs(pred - small).max() < 2e-2 * np.abs(small).max()
    assert f.predict(ds, resid_pre(1, "S2"), order=2, alpha=0.1).effect.shape == (1, ds.n)
    assert np.isfinite(f.predict(ds, resid_pre("all", "all"), method="integrated", steps=4).effect).all()
    sw = f.scale_sweep(ds, resid_pre(2, "END"), alphas=[0, 0.5, 1.0])
    assert np.all(sw.effect[0] == 0)
    np.testing.assert_allclose(sw.effect[-1], f.patch(ds, resid_pre(2, "END"), progress=False).effect[0], atol=TOL)
    g = f.green(ds, resid_pre(1, "S2"))
    assert g.outside_cone_max == 0.0
    assert float(f.propagate(ds, resid_pre(1, "S2"), alpha=0.0).response.abs().max()) == 0.0
    assert float(f.green_slice(ds, resid_pre(0, "S2"), resid_pre(2, "END"), rank=2).S[0]) > 0
    sel = f.select_sites(ds, 2, method="gradient")
    np.testing.assert_allclose(sel.real.values, f.patch(ds, sel.sites, jointly=True, progress=False).values)
    fd = int(ds.first_diff.min())
    t = f.transfer(ds, resid_pre(0, fd), pair="matched")
    np.testing.assert_allclose(t.after, f.patch(ds, resid_pre(0, fd), progress=False).values[0], atol=TOL)
    # the last block's MLP at the metric position reaches the logits only directly
    L = f.n_layers
    pp = f.path_patch(ds, mlp_out(L - 1, "END"), "final")
    np.testing.assert_allclose(pp.values, f.patch(ds, mlp_out(L - 1, "END"), progress=False).values, atol=TOL)
    with pytest.raises(UnsupportedArchitecture, match="per-block"):
        f.path_patch(ds, attn_head(0, 0, "S2"), "final")


# --- loading --------------------------------------------------------------------------------------------
def test_smoke_test_names_the_real_failure():
    from fieldcheck.models.loading import _smoke_test
    from fieldcheck.testing import tiny_model

    m = tiny_model("llama", n_layers=1)
    attn = m.original_model.model.layers[0].self_attn
    while getattr(attn, "original_component", None) is not None:
        attn = attn.original_component
    q = attn.q_proj
    while getattr(q, "original_component", None) is not None:
        q = q.original_component
    q.weight = torch.nn.Parameter(q.weight[:, :-1].clone(), requires_grad=False)  # a broken checkpoint
    with pytest.raises(fc.errors.ModelNotAvailable, match="not a dtype problem") as e:
        _smoke_test(m, "broken", "cpu", torch.float32)
    assert "RuntimeError" in str(e.value) and "float32" in str(e.value)
    with pytest.raises(fc.errors.DeviceError, match="bfloat16"):  # a reduced precision is a candidate cause
        _smoke_test(m, "broken", "cpu", torch.bfloat16)


def test_attention_patterns_match_the_bridge(fam):
    """The engine's attention patterns (sliding windows and soft-capping included) equal the bridge's
    hook_pattern (fieldcheck.experiments.attention)."""
    from fieldcheck.experiments.attention import patterns_from_cache, patterns_hooked

    arch, folder, m, ds, f = fam
    r = f.run(ds)
    ref = patterns_hooked(m, ds.clean_tokens, range(f.n_layers))
    for l in range(f.n_layers):
        ours = patterns_from_cache(f.fm, r.clean.resid[l], r.clean.k[l], l)
        assert (ours - ref[l]).abs().max().item() <= TOL


def test_edge_circuits_run_or_refuse_by_name(fam):
    """Edge-level circuits split blocks into per-head q/k/v and sender outputs: available on every
    family but the parallel residual (GPT-NeoX), refused there with UnsupportedArchitecture naming
    the reason (never a wrong number). Post-norm families, sliding windows and soft-capping run:
    keeping every edge is the model, keeping none the corrupted run, and ablating every edge out
    of one head is exactly patching that head (the post-norm renormalized per receiver)."""
    from fieldcheck.experiments.circuits import _masks_metric
    from fieldcheck.experiments.edges import edge_graph

    arch, folder, m, ds, f = fam
    fm = f.fm
    if fm.parallel:
        with pytest.raises(UnsupportedArchitecture, match="edge-level circuits"):
            edge_graph(f)
        return
    g = edge_graph(f)
    assert g.n_layers == f.n_layers
    keep = g.adjacency.copy()
    no_head = keep.copy()
    no_head[g.sender_index("L1.H2")] = False
    full, empty, node = _masks_metric(f, ds, [keep, np.zeros_like(keep), no_head], "corrupt", "logit_diff")
    clean, corrupt = (np.asarray(x, dtype=np.float64) for x in f.baselines(ds))
    patched = vals(f.patch(ds, attn_head(1, 2, "all"), direction="noise", jointly=True, progress=False))[0]
    assert np.abs(full - clean).max() <= TOL and np.abs(empty - corrupt).max() <= TOL
    assert np.abs(node - patched).max() <= TOL and np.abs(node - clean).max() > 1e-4
    # layer 0 sends nothing (the edge forward then skips computing it): joint patching of its nodes
    silent = keep.copy()
    silent[[g.sender_index(f"L0.H{h}") for h in range(f.n_heads)] + [g.sender_index("L0.mlp")]] = False
    (first,) = _masks_metric(f, ds, [silent], "corrupt", "logit_diff")
    sites = mlp_out(0, "all")
    for h in range(f.n_heads):
        sites = sites + attn_head(0, h, "all")
    joint = vals(f.patch(ds, sites, direction="noise", jointly=True, progress=False))[0]
    assert np.abs(first - joint).max() <= TOL and np.abs(first - clean).max() > 1e-4


def test_models_list_shows_family_and_engine(fam, capsys, tmp_path):
    import json

    from fieldcheck.cli import main

    arch, folder, m, ds, f = fam
    assert main(["models", "list", "--json", str(folder)]) == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["folders"]
    assert (row["family"], row["engine"]) == (f.fm.family, "lightcone")
    assert row["architecture"] == type(m.original_model).__name__
    (smol,) = [s for s in out["models"] if s["name"] == "smollm2-135m"]  # the other aliases have their own families
    assert (smol["family"], smol["engine"]) == ("llama", "lightcone")
    assert main(["models", "list", str(folder)]) == 0
    assert f"family {f.fm.family} ({row['architecture']}), engine light cone" in capsys.readouterr().out
    assert main(["models", "list", str(tmp_path)]) == 1  # not a model folder: a clear error, exit 1
