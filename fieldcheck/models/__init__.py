"""Models: ``loading`` turns a spec (alias, hub name, folder, .gguf file) into a
TransformerBridge with a verified cache; ``tiny`` builds small random models for tests.

``fieldcheck.models.load_model`` and the other public names of ``loading`` are re-exported."""
from __future__ import annotations

import importlib


def __getattr__(name: str):
    m = importlib.import_module("fieldcheck.models.loading")
    if hasattr(m, name):
        return getattr(m, name)
    raise AttributeError(f"module 'fieldcheck.models' has no attribute {name!r}")
