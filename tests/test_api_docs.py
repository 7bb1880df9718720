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
from _api_walk import API, _own_members

ROOT = pathlib.Path(__file__).resolve().parents[1]
MIN_WORDS = 4          # a docstring of fewer words says nothing ("Summary.")
PASS_THROUGH = ("pass-through", "passed to", "passed on to", "forwarded to")


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
