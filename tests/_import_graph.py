"""The import graph of Python packages, read from their source (nothing is imported), for
tests/test_layout.py: which module imports which, everywhere in a module (``ast.walk``: top
level, inside functions and methods, in try/except), with the names it takes.

Exempt: imports under ``if TYPE_CHECKING:``. They never run (only a type checker reads them),
so they cannot form an import cycle or load a layer at run time.

A module's edges go to the modules it names: ``from pkg import sub`` is an edge to ``pkg.sub``
when that is a module, else to ``pkg``; ``import a.b.c`` is an edge to ``a.b.c`` (Python also
runs the parent packages' ``__init__``, which is not counted: a package may import its own
children without that being a cycle).
"""
from __future__ import annotations

import ast
import graphlib
import pathlib
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Imp:
    """One import in ``module`` (line ``line``) of ``target``; ``name`` is the name taken from it
    (``from target import name``), None for ``import target`` or ``from pkg import target``."""

    module: str
    target: str
    name: Optional[str]
    line: int


def module_files(roots: dict[str, pathlib.Path]) -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for each package name -> its source folder."""
    out = {}
    for package, root in roots.items():
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skip.update(id(n) for n in ast.walk(child))
    return skip


def _absolute(module: str, is_package: bool, level: int, name: Optional[str]) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[:-(level - 1)]
    return ".".join(base + ([name] if name else []))


def scan(roots: dict[str, pathlib.Path]) -> tuple[dict[str, pathlib.Path], list[Imp], list[str]]:
    """(modules, imports between them, private attributes read through an imported module).

    The third list has one line per ``alias._name`` where ``alias`` is bound by an import to one
    of the modules (``from fieldcheck.claim import result as r`` ... ``r._sink``)."""
    files = module_files(roots)
    known = set(files)
    imports: list[Imp] = []
    private_reads: list[str] = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _type_checking_nodes(tree)
        is_package = path.name == "__init__.py"
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in known:
                        imports.append(Imp(module, a.name, None, node.lineno))
                        if a.asname:
                            aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                src = _absolute(module, is_package, node.level, node.module) if node.level else node.module
                for a in node.names:
                    sub = f"{src}.{a.name}"
                    if sub in known:
                        imports.append(Imp(module, sub, None, node.lineno))
                        aliases[a.asname or a.name] = sub
                    elif src in known:
                        imports.append(Imp(module, src, a.name, node.lineno))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                private_reads.append(f"{module}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    return files, imports, private_reads


def graph(imports: list[Imp]) -> dict[str, set[str]]:
    """module -> the modules it imports (self-imports left out)."""
    g: dict[str, set[str]] = {}
    for i in imports:
        if i.target != i.module:
            g.setdefault(i.module, set()).add(i.target)
    return g


def find_cycle(g: dict[str, set[str]]) -> Optional[list[str]]:
    """One import cycle as a path ``[a, b, ..., a]``, or None (graphlib's topological sort)."""
    try:
        graphlib.TopologicalSorter(g).prepare()
    except graphlib.CycleError as e:
        cycle = list(e.args[1])  # graphlib lists each node after the one that depends on it
        return cycle[::-1]
    return None


def private_imports(imports: list[Imp]) -> list[str]:
    """``from other import _name`` (another module's private name; dunders are fine)."""
    return [f"{i.module}:{i.line} imports {i.target}.{i.name}" for i in imports
            if i.name and i.name.startswith("_") and not i.name.startswith("__") and i.target != i.module]


def upward_imports(imports: list[Imp], package: str, order: list[str], allowed_root: tuple[str, ...] = ()) -> list[str]:
    """Imports inside ``package`` from a later layer of ``order`` (layer: the first name under the
    package, ``fieldcheck.claim.x`` -> ``claim``); the package's own ``__init__`` is exempt.
    ``allowed_root``: names a module may take from the package root itself (``__version__``)."""
    bad = []
    for i in imports:
        if not i.module.startswith(package + "."):
            continue
        own = i.module.split(".")[1]
        if i.target == package:
            if i.name not in allowed_root:
                bad.append(f"{i.module}:{i.line} imports the package root {package}"
                           + (f" ({i.name})" if i.name else ""))
            continue
        if not i.target.startswith(package + "."):
            if i.target.split(".")[0] != package:
                bad.append(f"{i.module}:{i.line} imports {i.target} (outside {package})")
            continue
        dep = i.target.split(".")[1]
        for layer in (own, dep):
            if layer not in order:
                bad.append(f"{i.module}:{i.line}: layer {layer!r} is not in ORDER")
        if own in order and dep in order and order.index(dep) > order.index(own):
            bad.append(f"{i.module}:{i.line} imports {i.target} ({dep} comes after {own})")
    return bad
