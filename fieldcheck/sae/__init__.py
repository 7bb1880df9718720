"""Dictionary features: sparse autoencoders and transcoders in SAELens's format, spliced into a
model, trained offline, and measured.

    fieldcheck.sae.load(path)            a SAELens folder (cfg.json + sae_weights.safetensors)
    fieldcheck.sae.save(sae, path)       write one
    fieldcheck.sae.train(model, hook)    train a TopK SAE on an offline corpus (cached)
    fieldcheck.sae.example(model)        the example SAE of a built-in model (trained once, cached)
    fieldcheck.sae.measure(sae, fm, tokens)   explained variance, L0, dead latents, spliced loss

Feature sites are named with ``fieldcheck.sites.features(sae, latents, positions)``; the
experiments on them are methods of ``fieldcheck.Field``.
"""
from __future__ import annotations

import importlib

_LAZY = {"Dictionary": "fieldcheck.sae.dictionary", "DictionaryError": "fieldcheck.sae.dictionary",
         "load": "fieldcheck.sae.saelens", "save": "fieldcheck.sae.saelens",
         "train": "fieldcheck.sae.training", "TrainConfig": "fieldcheck.sae.training",
         "measure": "fieldcheck.sae.quality", "Quality": "fieldcheck.sae.quality",
         "example": "fieldcheck.sae.examples", "EXAMPLES": "fieldcheck.sae.examples",
         "texts": "fieldcheck.sae.corpus"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fieldcheck.sae' has no attribute {name!r}")
