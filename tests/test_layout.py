"""The package layout: public short module names, moved 0.1 paths (with a warning), no cycles."""
from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys
import warnings

import pytest

import fieldcheck

PKG = pathlib.Path(fieldcheck.__file__).parent


@pytest.mark.parametrize("short", sorted(fieldcheck._PUBLIC))
def test_public_short_names_import_without_warning(short):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mod = importlib.import_module(f"fieldcheck.{short}")
    assert mod is importlib.import_module(fieldcheck._PUBLIC[short])
    assert getattr(fieldcheck, short) is mod


@pytest.mark.parametrize("old", sorted(fieldcheck._MOVED))
def test_moved_paths_still_import_with_a_deprecation_warning(old):
    code = (f"import warnings; warnings.simplefilter('always')\n"
            f"with warnings.catch_warnings(record=True) as w:\n"
            f"    import fieldcheck.{old} as m\n"
            f"import {fieldcheck._MOVED[old]} as real\n"
            f"assert m is real, (m, real)\n"
            f"assert any(issubclass(x.category, DeprecationWarning) and "
            f"'{fieldcheck._MOVED[old]}' in str(x.message) for x in w), [str(x.message) for x in w]\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_moved_names_keep_their_objects():
    with pytest.warns(DeprecationWarning, match="fieldcheck.claim.statistics"):
        from fieldcheck.stats import adjust_pvalues
    from fieldcheck.claim.statistics import adjust_pvalues as real
    assert adjust_pvalues is real


def _imports(path: pathlib.Path) -> set[str]:
    """Subpackages of fieldcheck that a module imports at its top level (not inside functions)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[0] == "fieldcheck" and len(parts) > 1:
                out.add(parts[1])
    return out


# each subpackage may import only from the ones listed before it
ORDER = ["errors", "jsonable", "display", "config", "data", "models", "field", "sae", "experiments", "claim", "reports", "cli"]


def test_subpackages_import_only_downward():
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        own = rel.parts[0].removesuffix(".py")
        if own == "__init__" or own not in ORDER:
            continue
        for dep in _imports(path):
            if dep in ORDER and dep != own and ORDER.index(dep) > ORDER.index(own):
                bad.append(f"{rel} imports fieldcheck.{dep}")
    assert not bad, bad


def test_no_module_is_too_long_to_read_at_once():
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 900}
    assert not long, long
