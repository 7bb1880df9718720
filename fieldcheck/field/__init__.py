"""The field core and its engine.

``core.FieldCore`` runs and caches a data set's clean and corrupted runs and patches them; every
experiment takes one (the public ``fieldcheck.Field`` in :mod:`fieldcheck.lab`, a layer above the
experiments, is a FieldCore with the experiments as methods). Sites (``sites``), sources
(``sources``) and metrics (``metrics``) name what is patched and what is measured; ``results``
holds ``PatchResult``. The light-cone engine (``engine``) runs patches from cached key/value
prefixes over a functional forward of each supported family (``arch``); ``hooked`` is the slower
reference path through TransformerLens hooks.
"""
from __future__ import annotations

import importlib

_LAZY = {"FieldCore": "fieldcheck.field.core", "PatchResult": "fieldcheck.field.results"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fieldcheck.field' has no attribute {name!r}")
