"""The public API as one walk, shared by tests/test_api_docs.py (every entry point documented) and
tests/test_fuzz_coverage.py (every entry point fuzzed): ``API`` maps a qualified name
(``Field.patch``, ``fc.assert_effect``, ``fc.sites.resid_pre``, ``PatchResult.select``, ...) to the
function, method, property or class. A new public method, function or result class appears here
by itself (result classes: add them to ``RESULTS``)."""
from __future__ import annotations

import inspect

import fieldcheck as fc
from fieldcheck.claim.result import ClaimResult
from fieldcheck.experiments.attention import AttentionResult, HeadScores
from fieldcheck.experiments.circuits import CircuitResult, FaithfulnessCurve, Minimality
from fieldcheck.experiments.discovery import EdgeScores
from fieldcheck.experiments.feature_circuits import FeatureCircuitResult, NodeScores
from fieldcheck.experiments.feature_views import FeatureDLA, Selectivity, TopExamples
from fieldcheck.experiments.features import FeatureActivations
from fieldcheck.experiments.green import GreenResult, GreenSlice, LinearVsReal, Propagation
from fieldcheck.experiments.lens import DirectAttribution, LogitLens
from fieldcheck.experiments.paths import PathResult
from fieldcheck.experiments.response import LinearRegime, Selection, Sensitivity, Sweep
from fieldcheck.experiments.transfer import TransferResult

RESULTS = [fc.PatchResult, Sensitivity, Sweep, LinearRegime, Selection, GreenResult, Propagation, LinearVsReal,
           GreenSlice, TransferResult, PathResult, AttentionResult, HeadScores, DirectAttribution, LogitLens,
           CircuitResult, FaithfulnessCurve, Minimality, EdgeScores, fc.Circuit, ClaimResult, fc.ContrastiveSet,
           FeatureActivations, NodeScores, FeatureCircuitResult, Selectivity, TopExamples, FeatureDLA]


def _own_members(cls):
    """Public methods and properties of ``cls`` and its fieldcheck bases (not object's, not dataclass machinery)."""
    out = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("fieldcheck"):
            continue
        for name, obj in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(obj, (staticmethod, classmethod)):
                obj = obj.__func__
            if inspect.isfunction(obj) or isinstance(obj, property):
                out[name] = obj
    return out


def _module_functions(mod):
    names = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
    return {n: getattr(mod, n) for n in names
            if inspect.isfunction(getattr(mod, n)) and getattr(mod, n).__module__ == mod.__name__}


def _api() -> dict[str, object]:
    """Qualified name -> function, method, property or class of the public API."""
    api: dict[str, object] = {}
    for name, obj in _own_members(fc.Field).items():
        api[f"Field.{name}"] = obj
    api["Field"] = fc.Field
    flat = set(fc._LAZY)
    for mod in fc._FLAT:
        flat |= set(__import__(mod, fromlist=["x"]).__all__)
    for name in sorted(flat):
        obj = getattr(fc, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            api[f"fc.{name}"] = obj
    for short in ("sites", "datasets", "sources", "metrics"):
        for name, fn in _module_functions(getattr(fc, short)).items():
            api[f"fc.{short}.{name}"] = fn
    for name in ("load", "save", "train", "example", "measure", "texts"):
        api[f"fc.sae.{name}"] = getattr(fc.sae, name)
    for cls in RESULTS:
        for name, obj in _own_members(cls).items():
            api[f"{cls.__name__}.{name}"] = obj
    return api


API = _api()
