"""fieldcheck: mechanistic-interpretability claims about language models as pytest tests.

Layout (one subpackage or module per concept; each imports only from the ones above it, also
inside functions: tests/test_layout.py checks it and that no import cycle exists):

    errors, jsonable,       exceptions, plain-data helpers (JSON, numpy), notebook display,
    display, config         session settings
    measures                quantities both the experiments and the claim language compute (alpha*)
    data/                   contrastive data sets, the built-in generators, hypothesis strategies
    models/                 loading models (aliases, hub names, folders, GGUF) and tiny test models
    field/                  the field core (FieldCore: cached runs, patching), sites, sources,
                            metrics, the light-cone engine and its per-family functional forwards
    sae/                    SAEs and transcoders: SAELens's format, offline training, splicing
    experiments/            experiments on the field core: predictions, Green functions, transfer,
                            path patching, attention, DLA and the logit lens, circuits
    lab                     fieldcheck.Field: the field core with every experiment as a method
    claim/                  the claim language: criteria, statistics, assertions, ClaimResult
    reports/                the JSON report schema, the terminal table, the HTML report
    cli                     the ``fieldcheck`` command

The public API is imported lazily so that ``import fieldcheck`` (and pytest start-up through
the plugin) stays fast: torch and transformer_lens load on first use. Public modules keep
short names (``fieldcheck.sites``, ``fieldcheck.datasets``, ...) through ``_PUBLIC``; the flat
module paths of 0.1 (``fieldcheck.stats``, ...) still import, with a DeprecationWarning.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

# name -> module that defines it
_LAZY = {
    # errors
    "FieldcheckError": "fieldcheck.errors",
    "ModelNotAvailable": "fieldcheck.errors",
    "DatasetError": "fieldcheck.errors",
    "SiteError": "fieldcheck.errors",
    # models
    "load_model": "fieldcheck.models.loading",
    # data
    "ContrastiveSet": "fieldcheck.data.contrastive",
    # field
    "Field": "fieldcheck.lab",
    "PatchResult": "fieldcheck.field.results",
    # receivers for path patching
    "receiver_heads": "fieldcheck.experiments.paths",
    "receiver_mlps": "fieldcheck.experiments.paths",
    "downstream": "fieldcheck.experiments.paths",
    # circuits
    "Circuit": "fieldcheck.experiments.circuit_spec",
    # claims
    "ClaimResult": "fieldcheck.claim.result",
    "ClaimFailed": "fieldcheck.claim.result",
}

# Public short module names (stable API, no warning): fieldcheck.<name> is this module.
_PUBLIC = {
    "sites": "fieldcheck.field.sites",
    "sources": "fieldcheck.field.sources",
    "metrics": "fieldcheck.field.metrics",
    "datasets": "fieldcheck.data.builtin",
    "strategies": "fieldcheck.data.strategies",
    "testing": "fieldcheck.models.tiny",
}
# Flat module paths of fieldcheck 0.1 that moved into subpackages: they import with a warning.
_MOVED = {
    "data_sets": "fieldcheck.data.contrastive",
    "arch": "fieldcheck.field.arch",
    "engine": "fieldcheck.field.engine",
    "hooked": "fieldcheck.field.hooked",
    "results": "fieldcheck.field.results",
    "response": "fieldcheck.experiments.response",
    "green": "fieldcheck.experiments.green",
    "transfer": "fieldcheck.experiments.transfer",
    "paths": "fieldcheck.experiments.paths",
    "criteria": "fieldcheck.claim.criteria",
    "stats": "fieldcheck.claim.statistics",
    "assertions": "fieldcheck.claim.assertions",
    "claim_result": "fieldcheck.claim.result",
}
# Subpackages and top-level modules reachable as attributes (fc.config, fc.field, ...).
_SUBPACKAGES = {"errors", "jsonable", "display", "config", "measures", "cli", "data", "models", "field", "sae", "experiments",
                "lab", "claim", "reports"}
# Modules whose ``__all__`` is re-exported at top level (assertions, criteria statistics, errors).
_FLAT = ("fieldcheck.claim.assertions", "fieldcheck.claim.attention_assertions", "fieldcheck.claim.criteria",
         "fieldcheck.claim.circuit_assertions", "fieldcheck.claim.feature_assertions", "fieldcheck.errors")


def _target(short: str) -> str:
    if short in _MOVED:
        warnings.warn(f"fieldcheck.{short} moved to {_MOVED[short]}; the old path will be removed "
                      f"in fieldcheck 0.3", DeprecationWarning, stacklevel=3)
        return _MOVED[short]
    return _PUBLIC[short]


class _AliasImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes ``import fieldcheck.sites`` (and the moved 0.1 paths) return the real module.

    The loader replaces its placeholder in sys.modules with the target module, which the import
    system then returns as is; the target's own ``__name__`` and ``__spec__`` are untouched."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, short = fullname.partition(".")
        if prefix == "fieldcheck" and (short in _PUBLIC or short in _MOVED):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        name = module.__spec__.name
        sys.modules[name] = importlib.import_module(_target(name.partition(".")[2]))


if not any(isinstance(f, _AliasImporter) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasImporter())


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _PUBLIC or name in _MOVED:
        return importlib.import_module(_target(name))
    if name in _SUBPACKAGES:
        return importlib.import_module(f"fieldcheck.{name}")
    # assertions, criteria statistics and errors are re-exported at top level (their __all__)
    for mod in _FLAT:
        m = importlib.import_module(mod)
        if name in getattr(m, "__all__", ()):
            return getattr(m, name)
    raise AttributeError(f"module 'fieldcheck' has no attribute {name!r}")
