"""fieldcheck: mechanistic-interpretability claims about language models as pytest tests.

The public API is imported lazily so that ``import fieldcheck`` (and pytest start-up through
the plugin) stays fast: torch and transformer_lens load on first use.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it
_LAZY = {
    # errors
    "FieldcheckError": "fieldcheck.errors",
    "ModelNotAvailable": "fieldcheck.errors",
    "DatasetError": "fieldcheck.errors",
    "SiteError": "fieldcheck.errors",
    # models
    "load_model": "fieldcheck.models",
    # data
    "ContrastiveSet": "fieldcheck.data_sets",
    # field
    "Field": "fieldcheck.field",
    "PatchResult": "fieldcheck.results",
    # receivers for path patching
    "receiver_heads": "fieldcheck.paths",
    "receiver_mlps": "fieldcheck.paths",
    "downstream": "fieldcheck.paths",
    # claims
    "ClaimResult": "fieldcheck.claim_result",
    "ClaimFailed": "fieldcheck.claim_result",
}

_SUBMODULES = {"sites", "sources", "datasets", "testing", "strategies", "stats", "criteria",
               "assertions", "errors", "models", "response", "reports", "green", "transfer", "paths",
               "metrics", "config", "arch", "engine", "field", "results", "data_sets"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"fieldcheck.{name}")
    # assertions and criteria statistics are re-exported at top level
    for mod in ("fieldcheck.assertions", "fieldcheck.criteria"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError:
            continue
        if hasattr(m, name) and not name.startswith("_"):
            return getattr(m, name)
    raise AttributeError(f"module 'fieldcheck' has no attribute {name!r}")
