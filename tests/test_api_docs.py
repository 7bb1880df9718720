"""The public API documents itself: every public function, method and property a researcher
reaches (``fc.Field``'s methods, ``fc.*``, ``fieldcheck.sites``, ``fieldcheck.datasets``, the
result classes) has a docstring that says something, no ``*args``/``**kwargs`` hides options
unless the docstring names it (and says where ``**kwargs`` go), every ``Field`` method's
docstring names each of its parameters, and docs/api.md lists every Field method with its real
signature (tools/api_docs.py writes it)."""
from __future__ import annotations

import inspect
import pathlib
import re
import subprocess
import sys

import pytest

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

ROOT = pathlib.Path(__file__).resolve().parents[1]
MIN_WORDS = 4          # a docstring of fewer words says nothing ("Summary.")
PASS_THROUGH = ("pass-through", "passed to", "passed on to", "forwarded to")

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


def _doc(obj) -> str:
    return inspect.getdoc(obj.fget if isinstance(obj, property) else obj) or ""


def _words(text: str) -> int:
    return len(re.findall(r"\w+", text))


def test_the_walk_covers_the_api():
    for name in ("Field.attention", "Field.patch", "Field.evaluate_circuit", "fc.assert_effect", "fc.load_model",
                 "fc.Circuit", "fc.sites.resid_pre", "fc.datasets.ioi", "PatchResult.summary", "DirectAttribution.top",
                 "FaithfulnessCurve.at", "ContrastiveSet.from_pairs"):
        assert name in API, name
    assert len(API) > 250


@pytest.mark.parametrize("name", sorted(API))
def test_public_api_has_a_docstring(name):
    doc = _doc(API[name])
    assert _words(doc) >= MIN_WORDS, f"{name}: docstring missing or trivially short: {doc!r}"


def _own_signature(obj) -> bool:
    """Functions, and classes whose __init__ fieldcheck defines (an exception's ``*args`` is Python's)."""
    if inspect.isclass(obj):
        return any("__init__" in vars(k) for k in obj.__mro__ if k.__module__.startswith("fieldcheck"))
    return callable(obj) and not isinstance(obj, property)


@pytest.mark.parametrize("name", sorted(n for n, o in API.items() if _own_signature(o)))
def test_no_hidden_options(name):
    obj = API[name]
    doc = " ".join(_doc(obj).split())
    for p in inspect.signature(obj).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            assert f"*{p.name}" in doc, f"{name}: *{p.name} is not described in the docstring"
        if p.kind is p.VAR_KEYWORD:
            assert f"**{p.name}" in doc and any(w in doc for w in PASS_THROUGH), \
                f"{name}: **{p.name} hides options; list them, or say where they are passed to"


@pytest.mark.parametrize("name", sorted(n for n, o in API.items() if n.startswith("Field.") and inspect.isfunction(o)))
def test_field_methods_document_every_parameter(name):
    obj = API[name]
    doc = _doc(obj)
    missing = [p for p in inspect.signature(obj).parameters if p != "self" and not re.search(rf"\b{p}\b", doc)]
    assert not missing, f"{name}: the docstring does not mention {missing}"


def test_help_on_a_field_method_shows_the_experiment():
    text = inspect.getdoc(fc.Field.attention)
    assert text.startswith("Attention weight") and "which" in text and "engine" in text
    for meth in ("evaluate_circuit", "sensitivity", "attention"):
        assert not inspect.getdoc(getattr(fc.Field, meth)).startswith("#")
        assert "**" not in str(inspect.signature(getattr(fc.Field, meth)))


def test_api_md_lists_every_field_method_with_its_signature():
    """docs/api.md is what tools/api_docs.py writes from the docstrings (rerun it after a change),
    and its heading of each Field method names the real parameters, in order, with their defaults."""
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "api_docs.py"), "--check"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    headings = {m.group(1): m.group(2) for m in re.finditer(r"^### `field\.(\w+)\((.*)\)", (ROOT / "docs" / "api.md")
                                                             .read_text(), re.M)}
    for name, obj in _own_members(fc.Field).items():
        if not inspect.isfunction(obj):
            continue
        assert name in headings, f"docs/api.md has no heading for field.{name}"
        params = list(inspect.signature(obj).parameters.values())[1:]
        want = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params)
        assert headings[name].startswith(want), (name, headings[name], want)
