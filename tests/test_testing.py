"""fieldcheck.testing: tiny models for both architectures and their offline tokenizer."""
from __future__ import annotations

import json
import re
import time
from importlib import resources

import pytest
import torch

from fieldcheck.errors import ModelNotAvailable
from fieldcheck.testing import SPECIAL_TOKENS, tiny_model, tiny_tokenizer, tiny_vocab

ARCHS = ["gpt2", "llama"]
WORDS = json.loads(resources.files("fieldcheck.data").joinpath("words.json").read_text())


@pytest.fixture(params=ARCHS)
def tiny(request, tiny_gpt2, tiny_llama):
    return {"gpt2": tiny_gpt2, "llama": tiny_llama}[request.param]


def _ioi_prompts():
    names, places, objects = WORDS["names"], WORDS["places"], WORDS["objects"]
    for i, t in enumerate(WORDS["ioi_templates"]):
        yield (t.replace("[IO]", names[i]).replace("[S]", names[i + 1])
               .replace("[PLACE]", places[i % len(places)]).replace("[OBJECT]", objects[i % len(objects)]))


def _all_prompts():
    yield from _ioi_prompts()
    for fact in WORDS["facts"]:
        yield WORDS["relations"][fact["relation"]].replace("[SUBJECT]", fact["subject"]) + " " + fact["attribute"]
    yield " ".join(WORDS["induction_words"])
    yield " ".join(WORDS["names"] + WORDS["places"] + WORDS["objects"])


# ---------------------------------------------------------------------------------- build


@pytest.mark.parametrize("arch", ARCHS)
def test_build_is_fast(arch, tiny_gpt2):  # tiny_gpt2: imports already paid
    t0 = time.perf_counter()
    m = tiny_model(arch)
    dt = time.perf_counter() - t0
    assert dt < 1.0, f"building tiny-{arch} took {dt:.2f} s"
    assert m.fieldcheck_info["load_seconds"] < 1.0


@pytest.mark.parametrize("arch", ARCHS)
def test_deterministic_given_seed(arch):
    toks = tiny_model(arch).to_tokens(next(_ioi_prompts()))
    rng_before = torch.random.get_rng_state()
    a, b, c = tiny_model(arch, seed=0), tiny_model(arch, seed=0), tiny_model(arch, seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "global RNG was disturbed"
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), na
    with torch.no_grad():
        la, lb, lc = a(toks), b(toks), c(toks)
    assert torch.equal(la, lb)
    assert not torch.allclose(la, lc)


@pytest.mark.parametrize("arch", ARCHS)
def test_sizes(arch):
    m = tiny_model(arch, n_layers=3, d_model=48, n_heads=6, d_mlp=100)
    assert (m.cfg.n_layers, m.cfg.d_model, m.cfg.n_heads) == (3, 48, 6)
    assert m.cfg.d_mlp == 100
    assert m.fieldcheck_info["tiny"] == {"arch": arch, "n_layers": 3, "d_model": 48, "n_heads": 6,
                                         "d_mlp": 100, "seed": 0, "init_std": 0.15}


def test_bad_arguments():
    with pytest.raises(ModelNotAvailable, match="unknown tiny architecture"):
        tiny_model("bert")
    with pytest.raises(ModelNotAvailable, match="not divisible"):
        tiny_model("gpt2", d_model=30, n_heads=4)
    with pytest.raises(ModelNotAvailable, match="n_layers"):
        tiny_model("llama", n_layers=0)


# ---------------------------------------------------------------------------------- model


def test_eval_frozen_and_forward(tiny):
    assert not tiny.training
    assert not any(p.requires_grad for p in tiny.parameters())
    toks = tiny.to_tokens(next(_ioi_prompts()))
    with torch.no_grad():
        logits = tiny(toks)
    assert logits.shape == (1, toks.shape[1], tiny.cfg.d_vocab)
    assert torch.isfinite(logits).all()
    # the final residual moves the logits visibly
    assert logits[0, -1].std() > 0.5


def test_hook_names(tiny):
    names = set(tiny.hook_dict)
    for layer in range(tiny.cfg.n_layers):
        for hook in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
                     "hook_mlp_out", "attn.hook_z", "attn.hook_pattern"):
            assert f"blocks.{layer}.{hook}" in names, f"blocks.{layer}.{hook}"


def test_run_with_cache_and_hooks(tiny):
    toks = tiny.to_tokens(next(_ioi_prompts()))
    _, cache = tiny.run_with_cache(toks, names_filter=lambda n: n.endswith("hook_resid_pre"))
    assert cache["blocks.1.hook_resid_pre"].shape == (1, toks.shape[1], tiny.cfg.d_model)

    def zero(act, hook):
        return torch.zeros_like(act)

    with torch.no_grad():
        clean = tiny(toks)
        patched = tiny.run_with_hooks(toks, fwd_hooks=[("blocks.1.hook_resid_pre", zero)])
    assert not torch.allclose(clean, patched)


def test_visibly_nonlinear(tiny):
    """A source added to the residual has a response that bends with its size (the linear
    regime is bounded): useful for tests of alpha* and first-order predictions."""
    toks = tiny.to_tokens(next(_ioi_prompts()))
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(tiny.cfg.d_model, generator=g) * 3.0

    def run(alpha):
        def add(act, hook):
            act = act.clone()
            act[:, -1] += alpha * delta
            return act

        with torch.no_grad():
            return tiny.run_with_hooks(toks, fwd_hooks=[("blocks.0.hook_resid_pre", add)])[0, -1]

    base = run(0.0)
    small, big = run(0.1) - base, run(1.0) - base
    # linear would give big == 10 * small
    rel = (big - 10 * small).norm() / big.norm()
    assert rel > 0.05, rel


# ---------------------------------------------------------------------------------- tokenizer


def test_vocabulary_covers_the_word_lists():
    vocab = set(tiny_vocab())
    assert set(SPECIAL_TOKENS) <= vocab
    needed = set(WORDS["names"]) | set(WORDS["places"]) | set(WORDS["objects"]) | set(WORDS["induction_words"])
    for fact in WORDS["facts"]:
        needed |= set(fact["subject"].split()) | set(fact["attribute"].split())
    for t in WORDS["ioi_templates"] + list(WORDS["relations"].values()):
        needed |= set(re.findall(r"\w+|[^\w\s]", re.sub(r"\[[A-Z_]+\]", " ", t)))
    assert not needed - vocab, sorted(needed - vocab)
    assert len(vocab) < 5000


def test_no_unknown_tokens_in_builtin_prompts(tiny):
    unk = tiny.tokenizer.unk_token_id
    for prompt in _all_prompts():
        toks = tiny.to_tokens(prompt)[0].tolist()
        assert unk not in toks, prompt


def test_leading_space_and_single_tokens(tiny):
    for name in WORDS["names"] + WORDS["places"] + WORDS["objects"]:
        a = tiny.to_tokens(" " + name, prepend_bos=False)[0].tolist()
        b = tiny.to_tokens(name, prepend_bos=False)[0].tolist()
        assert a == b and len(a) == 1, name
        assert tiny.to_single_token(" " + name) == a[0]


def test_bos_prepended_once(tiny):
    tok = tiny.tokenizer
    toks = tiny.to_tokens("Then, Mary and John went to the park.")[0].tolist()
    assert toks[0] == tok.bos_token_id and toks.count(tok.bos_token_id) == 1
    assert tiny.to_tokens("Mary", prepend_bos=False)[0].tolist() == [tok.convert_tokens_to_ids("Mary")]
    assert tiny.to_str_tokens("Mary went")[:2] == ["<bos>", "Mary"]


def test_round_trip(tiny):
    tok = tiny.tokenizer
    for prompt in _all_prompts():
        ids = tok(prompt)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == prompt
        assert tok(tok.decode(ids, skip_special_tokens=True))["input_ids"] == ids


def test_batch_padding(tiny):
    toks = tiny.to_tokens(["Mary went to the store", "John went"])
    assert toks.shape == (2, 6)
    assert toks[1, -1].item() == tiny.tokenizer.pad_token_id


def test_unknown_words_map_to_unk():
    tok = tiny_tokenizer()
    ids = tok("Mary zyzzyva")["input_ids"]
    assert ids[-1] == tok.unk_token_id
