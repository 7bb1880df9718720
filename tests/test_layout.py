"""The package layout: public short module names, moved 0.1 paths (with a warning), imports only
downward, no import cycle (imports inside functions count), no private name taken across modules."""
from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys
import textwrap
import warnings

import pytest

import fieldcheck
import pytest_fieldcheck
from _import_graph import find_cycle, graph, private_imports, scan, upward_imports

PKG = pathlib.Path(fieldcheck.__file__).parent
PLUGIN = pathlib.Path(pytest_fieldcheck.__file__).parent


@pytest.mark.parametrize("short", sorted(fieldcheck._PUBLIC))
def test_public_short_names_import_without_warning(short):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mod = importlib.import_module(f"fieldcheck.{short}")
    assert mod is importlib.import_module(fieldcheck._PUBLIC[short])
    assert getattr(fieldcheck, short) is mod


@pytest.mark.slow   # subprocesses or plugin runs: make test and CI, not make test-quick
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


# each subpackage (or top-level module) of fieldcheck may import only from itself and the ones
# listed before it; the experiments take the field core, and ``lab`` (fieldcheck.Field) offers
# them as methods from above
ORDER = ["errors", "jsonable", "display", "config", "measures", "data", "models", "field", "sae", "experiments", "lab",
         "claim", "reports", "cli"]
# the pytest plugin's modules, bottom to top (pytest_fieldcheck/plugin.py's docstring says what each holds)
PLUGIN_ORDER = ["options", "baselines", "common", "timing", "fixtures", "expectations", "collection", "session", "shards", "worker",
                "distributed", "outputs", "terminal", "plugin"]
ROOTS = {"fieldcheck": PKG, "pytest_fieldcheck": PLUGIN}


@pytest.fixture(scope="module")
def scanned():
    return scan(ROOTS)


def test_subpackages_import_only_downward(scanned):
    """Everywhere in a module (inside functions too): fieldcheck's layers import downward only,
    take nothing from the package root but ``__version__``, and never import the plugin."""
    files, imports, _ = scanned
    bad = upward_imports(imports, "fieldcheck", ORDER, allowed_root=("__version__",))
    layers = {m.split(".")[1] for m in files if m.startswith("fieldcheck.")}
    assert layers <= set(ORDER), f"layers missing from ORDER: {sorted(layers - set(ORDER))}"
    assert not bad, "\n".join(bad)


def test_plugin_modules_import_only_downward(scanned):
    files, imports, _ = scanned
    mods = {m.split(".")[1] for m in files if m.startswith("pytest_fieldcheck.")}
    assert mods == set(PLUGIN_ORDER), f"PLUGIN_ORDER and the plugin's modules differ: {sorted(mods ^ set(PLUGIN_ORDER))}"
    bad = [b for b in upward_imports(imports, "pytest_fieldcheck", PLUGIN_ORDER) if "(outside" not in b]
    assert not bad, "\n".join(bad)


def test_no_import_cycle(scanned):
    """No cycle among all modules of fieldcheck and the plugin, counting imports inside functions."""
    _, imports, _ = scanned
    cycle = find_cycle(graph(imports))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_another_modules_private_names(scanned):
    """Helpers shared across modules have public names in the module below their users."""
    _, imports, private_reads = scanned
    bad = private_imports(imports) + private_reads
    assert not bad, "\n".join(bad)


def _plant(tmp_path, files: dict[str, str]) -> dict[str, pathlib.Path]:
    root = tmp_path / "planted"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    return {"planted": root}


def test_the_checker_finds_a_cycle_through_a_function_level_import(tmp_path):
    roots = _plant(tmp_path, {
        "low.py": "def f():\n    from planted.high import g\n    return g\n",
        "high.py": "from planted import low\n",
        "fine.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from planted.top import T\n",
        "top.py": "import planted.fine\n",
    })
    _, imports, _ = scan(roots)
    assert find_cycle(graph(imports)) == ["planted.high", "planted.low", "planted.high"] or \
        find_cycle(graph(imports)) == ["planted.low", "planted.high", "planted.low"]
    # the TYPE_CHECKING import alone makes no cycle
    roots = _plant(tmp_path, {"low.py": "", "high.py": "from planted import low\n"})
    _, imports, _ = scan(roots)
    assert find_cycle(graph(imports)) is None


def test_the_checker_finds_private_and_upward_imports(tmp_path):
    roots = _plant(tmp_path, {
        "a/__init__.py": "", "a/x.py": "def _helper():\n    pass\n",
        "b/__init__.py": "", "b/y.py": "def f():\n    from planted.a.x import _helper\n",
        "b/z.py": "from planted.a import x as xx\nv = xx._helper\n",
    })
    _, imports, reads = scan(roots)
    assert private_imports(imports) == ["planted.b.y:2 imports planted.a.x._helper"]
    assert reads == ["planted.b.z:2 reads planted.a.x._helper"]
    assert upward_imports(imports, "planted", ["a", "b"]) == []
    bad = upward_imports(imports, "planted", ["b", "a"])
    assert bad and all("(a comes after b)" in b for b in bad), bad


def test_no_module_is_too_long_to_read_at_once():
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 900}
    assert not long, long
