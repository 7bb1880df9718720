"""Helpers for the data-set tests: a model-like object for fast tests (SmolLM2 tests use the
conftest `smollm2` fixture).

``small_model()`` is ``fieldcheck.testing.tiny_model("gpt2")`` when that exists; otherwise a stub
with just what data sets use (``.tokenizer``, ``.cfg.default_prepend_bos``, ``.cfg.n_ctx``,
``.cfg.d_vocab``): a word-level tokenizer over every word in ``words.json`` with ``<bos>``.
"""
from __future__ import annotations

import json
import re
import types
from importlib import resources


def word_level_tokenizer(bos: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    text = resources.files("fieldcheck.data").joinpath("words.json").read_text(encoding="utf-8")
    data = json.loads(text)
    words: list[str] = []

    def walk(x):
        if isinstance(x, str):
            for w in re.findall(r"\w+|[^\w\s]+", x):
                if w not in words:
                    words.append(w)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(data)
    specials = ["<unk>", "<eos>"] + (["<bos>"] if bos else [])
    vocab = {w: i for i, w in enumerate(specials + words)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece()
    kw = dict(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>")
    if bos:
        kw["bos_token"] = "<bos>"
    return PreTrainedTokenizerFast(**kw)


def stub_model(bos: bool = True, prepend_bos: bool = True, n_ctx: int = 64):
    tok = word_level_tokenizer(bos=bos)
    cfg = types.SimpleNamespace(default_prepend_bos=prepend_bos, n_ctx=n_ctx, d_vocab=len(tok))
    return types.SimpleNamespace(tokenizer=tok, cfg=cfg)


_SMALL: dict = {}


def small_model():
    """A tiny TransformerBridge (fieldcheck.testing), or the stub until that exists; cached."""
    if "m" not in _SMALL:
        try:
            from fieldcheck.testing import tiny_model
        except ImportError:
            _SMALL["m"] = stub_model()
        else:
            _SMALL["m"] = tiny_model("gpt2")
    return _SMALL["m"]

