"""Dictionaries: the SAELens forward against a reference written from the format's documentation,
folder round trips, clear errors, training on a resumable cache, and the quality numbers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import fieldcheck as fc
from fieldcheck.sae.dictionary import Dictionary, DictionaryError
from fieldcheck.sae.saelens import load, save


def _rand(d_in=16, d_sae=40, d_out=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    d_out = d_out or d_in
    return dict(W_enc=torch.randn(d_in, d_sae, generator=g) * 0.3, b_enc=torch.randn(d_sae, generator=g) * 0.1,
                W_dec=torch.randn(d_sae, d_out, generator=g) * 0.3, b_dec=torch.randn(d_out, generator=g) * 0.1)


def _reference(w, arch, x, k=None, threshold=None, apply_b_dec=True, norm="none", rescale=False):
    """SAELens's forward as its documentation states it, written independently (float64)."""
    x = x.double()
    W_enc, b_enc, W_dec, b_dec = (w[n].double() for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
    if norm == "constant_norm_rescale":
        c = math.sqrt(x.shape[-1]) / x.norm(dim=-1, keepdim=True)
        xn = x * c
    elif norm == "layer_norm":
        mu, sd = x.mean(-1, keepdim=True), x.std(-1, keepdim=True)
        xn = (x - mu) / (sd + 1e-5)
    else:
        xn = x
    h = (xn - (b_dec if apply_b_dec else 0)) @ W_enc + b_enc
    if rescale:
        h = h * W_dec.norm(dim=-1)
    if arch == "topk":
        f = torch.zeros_like(h)
        for row in range(h.shape[0]):
            top = np.argsort(-h[row].numpy(), kind="stable")[:k]
            f[row, top] = h[row, top].clamp(min=0)
    elif arch == "jumprelu":
        f = torch.where(h > threshold.double().clamp(min=0), h.clamp(min=0), torch.zeros_like(h))
    else:
        f = h.clamp(min=0)
    Wd = W_dec / W_dec.norm(dim=-1, keepdim=True) if rescale else W_dec
    out = f @ Wd + b_dec
    if norm == "constant_norm_rescale":
        out = out / c
    elif norm == "layer_norm":
        out = out * sd + mu
    return f, out


@pytest.mark.parametrize("arch,norm,rescale", [("standard", "none", False), ("jumprelu", "none", False),
                                               ("topk", "none", False), ("topk", "constant_norm_rescale", True),
                                               ("standard", "layer_norm", False)])
def test_forward_matches_the_reference(arch, norm, rescale):
    w = _rand()
    thr = torch.rand(40, generator=torch.Generator().manual_seed(3)) * 0.3
    d = Dictionary(**w, architecture=arch, hook_name="blocks.1.hook_resid_pre", k=5 if arch == "topk" else None,
                   threshold=thr if arch == "jumprelu" else None, normalize_activations=norm,
                   rescale_acts_by_decoder_norm=rescale).to(dtype=torch.float64)
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    f_ref, out_ref = _reference(w, arch, x, k=5, threshold=thr, norm=norm, rescale=rescale)
    torch.testing.assert_close(d.encode(x), f_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(d.reconstruct(x), out_ref, rtol=1e-10, atol=1e-10)
    assert (d.encode(x) > 0).sum(-1).max() <= (5 if arch == "topk" else 40)
    # the error term restores x exactly
    torch.testing.assert_close(d.reconstruct(x) + d.error(x), x)


def test_transcoder_forward_and_skip():
    w = _rand(d_in=16, d_sae=30, d_out=16)
    g = torch.Generator().manual_seed(5)
    skip = torch.randn(16, 16, generator=g) * 0.1
    d = Dictionary(**w, architecture="skip_transcoder", hook_name="blocks.0.hook_resid_mid",
                   hook_name_out="blocks.0.hook_mlp_out", W_skip=skip, apply_b_dec_to_input=False)
    x = torch.randn(8, 16, generator=g)
    f_ref, out_ref = _reference(w, "standard", x, apply_b_dec=False)
    torch.testing.assert_close(d.reconstruct(x).double(), out_ref + x.double() @ skip.double().T, rtol=1e-5, atol=1e-5)
    y = torch.randn(8, 16, generator=g)
    torch.testing.assert_close(d.reconstruct(x) + d.error(x, y), y)
    with pytest.raises(DictionaryError, match="transcoder"):
        d.error(x)


@pytest.mark.parametrize("arch", ["topk", "jumprelu", "standard", "jumprelu_transcoder"])
def test_saelens_folder_round_trip(tmp_path, arch):
    tc = arch.endswith("transcoder")
    w = _rand()
    d = Dictionary(**w, architecture=arch, hook_name="blocks.2.hook_resid_mid" if tc else "blocks.2.hook_resid_post",
                   hook_name_out="blocks.2.hook_mlp_out" if tc else None, k=7 if arch == "topk" else None,
                   threshold=torch.rand(40) if "jumprelu" in arch else None, apply_b_dec_to_input=not tc,
                   model_name="tiny-llama", quality={"explained_variance": 0.5})
    save(d, tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == arch and cfg["d_in"] == 16 and cfg["d_sae"] == 40
    assert cfg["metadata"]["hook_name"] == d.hook_name and cfg["metadata"]["model_name"] == "tiny-llama"
    assert cfg["metadata"]["fieldcheck"]["quality"]["explained_variance"] == 0.5
    if tc:
        assert cfg["d_out"] == 16 and cfg["metadata"]["hook_name_out"] == "blocks.2.hook_mlp_out"
    back = load(tmp_path / "sae")
    x = torch.randn(5, 16)
    torch.testing.assert_close(back.encode(x), d.encode(x))
    assert back.name == d.name and back.model_name == "tiny-llama" and back.k == d.k


def test_reads_the_older_flat_config(tmp_path):
    from safetensors.torch import save_file

    w = _rand()
    (tmp_path / "cfg.json").write_text(json.dumps({"d_in": 16, "d_sae": 40, "hook_name": "blocks.0.hook_resid_pre",
                                                    "hook_layer": 0, "model_name": "gpt2", "activation_fn_str": "topk",
                                                    "activation_fn_kwargs": {"k": 4}, "apply_b_dec_to_input": True}))
    save_file({k: v.contiguous() for k, v in w.items()}, str(tmp_path / "sae_weights.safetensors"))
    d = load(tmp_path)
    assert d.architecture == "topk" and d.k == 4 and d.hook_name == "blocks.0.hook_resid_pre" and d.model_name == "gpt2"


def test_bad_dictionaries_are_clear_errors(tmp_path):
    w = _rand()
    with pytest.raises(DictionaryError, match="b_enc has shape"):
        Dictionary(**{**w, "b_enc": torch.zeros(3)}, architecture="standard", hook_name="blocks.0.hook_resid_pre")
    with pytest.raises(fc.errors.SiteError, match="hook"):
        Dictionary(**w, architecture="standard", hook_name="blocks.0.mlp.hook_post")
    with pytest.raises(DictionaryError, match="not supported"):
        Dictionary(**w, architecture="gated", hook_name="blocks.0.hook_resid_pre")
    with pytest.raises(DictionaryError, match="k in 1..40"):
        Dictionary(**w, architecture="topk", hook_name="blocks.0.hook_resid_pre")
    with pytest.raises(DictionaryError, match="not a SAELens SAE folder"):
        load(tmp_path / "nothing")
    d = Dictionary(**w, architecture="standard", hook_name="blocks.0.hook_resid_pre")
    with pytest.raises(DictionaryError, match="does not belong"):
        d.encode(torch.randn(3, 17))


def test_dictionary_of_another_model_is_refused(tiny_llama):
    d = Dictionary(**_rand(d_in=16), architecture="standard", hook_name="blocks.0.hook_resid_pre", model_name="other")
    field = fc.Field(tiny_llama)
    ds = fc.datasets.ioi(tiny_llama, n=4, seed=0)
    with pytest.raises(DictionaryError, match="belongs to another model"):
        field.patch(ds, fc.sites.features(d, [0], "END"))
    deep = Dictionary(**_rand(d_in=64), architecture="standard", hook_name="blocks.9.hook_resid_pre")
    with pytest.raises(fc.errors.FieldcheckError, match="layers 0..1"):
        field.patch(ds, fc.sites.features(deep, [0], "END"))


def test_training_caches_activations_and_resumes(tiny_llama, tmp_path, monkeypatch):
    from fieldcheck.sae import training as tr

    monkeypatch.setenv("FIELDCHECK_HOME", str(tmp_path))
    kw = dict(d_sae=96, k=6, n_tokens=3000, context=24, corpus="pydoc", epochs=2, batch_size=256, progress=False)
    d = tr.train(tiny_llama, "blocks.1.hook_resid_pre", out=tmp_path / "a", **kw)
    q = d.quality
    assert 0.2 < q["explained_variance"] <= 1 and q["l0"] <= 6 and 0 <= q["dead_fraction"] < 0.5
    assert q["ce_clean"] <= q["ce_spliced"] + 1e-6 and q["ce_spliced"] < q["ce_zero"]
    shards = sorted((tmp_path / "sae" / "activations").rglob("shard_*.npy"))
    assert len(shards) >= 2
    shards[-1].unlink()  # an interrupted run: the next one recomputes only the missing shard
    cache = tr.ActivationCache(shards[0].parent)
    cfg = tr.TrainConfig(hook="blocks.1.hook_resid_pre", d_sae=96, k=6, n_tokens=3000, context=24, corpus="pydoc",
                         epochs=2, batch_size=256)
    toks = tr.token_sequences(tiny_llama, cfg)[cfg.eval_seqs:]
    from fieldcheck.sae.training import _functional
    assert cache.fill(_functional(tiny_llama, None), toks, [cfg.hook], progress=False) == 1
    again = tr.train(tiny_llama, "blocks.1.hook_resid_pre", out=tmp_path / "a", **kw)  # loaded, not retrained
    torch.testing.assert_close(again.W_enc, d.W_enc)
    # more tokens on the same model, hook and corpus: the full shards are reused (the sequences are
    # a prefix-stable stream), the short last shard and the new ones are computed
    first = np.load(shards[0])
    longer = tr.token_sequences(tiny_llama, tr.TrainConfig(**{**cfg.__dict__, "n_tokens": 4500}))[cfg.eval_seqs:]
    torch.testing.assert_close(longer[:len(toks)], toks)
    n_full = len(toks) // tr.SHARD_SEQS
    assert cache.fill(_functional(tiny_llama, None), longer, [cfg.hook], progress=False) == \
        -(-len(longer) // tr.SHARD_SEQS) - n_full
    np.testing.assert_array_equal(np.load(shards[0]), first)
    bigger = tr.train(tiny_llama, "blocks.1.hook_resid_pre", out=tmp_path / "b", **{**kw, "n_tokens": 4500})
    assert len(sorted((tmp_path / "sae" / "activations").rglob("shard_*.npy"))) == -(-len(longer) // tr.SHARD_SEQS)
    assert bigger.d_sae == 96


def test_sae_cli_train_and_info(tmp_path, monkeypatch, capsys):
    from fieldcheck.cli import main

    monkeypatch.setenv("FIELDCHECK_HOME", str(tmp_path))
    rc = main(["sae", "train", "tiny-llama", "--hook", "blocks.0.hook_resid_post", "--d-sae", "64", "--k", "4",
               "--tokens", "2000", "--context", "24", "--epochs", "1", "--corpus", "pydoc", "--out",
               str(tmp_path / "cli"), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["d_sae"] == 64 and out["hook_name"] == "blocks.0.hook_resid_post"
    assert main(["sae", "info", str(tmp_path / "cli")]) == 0
    assert "explained_variance" in capsys.readouterr().out
    assert main(["sae", "train", "tiny-llama"]) == 1  # neither --hook nor --example
