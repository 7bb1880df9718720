"""Baselines that gate releases: ``--fc-save``, ``--fc-compare`` and ``--fc-compare-fail``.

A baseline is a JSON report (see ``docs/report-schema.md``) stored as
``<rootdir>/.fieldcheck/baselines/NAME.json``; ``LATEST`` beside it names the newest one.
Both are written atomically. Claims are matched by id; inside a claim, results are matched by
assertion, statistic and criterion (and their order among equal ones).

The rules and the comparison itself are :mod:`fieldcheck.reports.compare` (re-exported here);
the same comparison serves ``--fc-baseline-model`` (two models in one run: the claims of each
model, matched by the claim id without the model's label) and ``fieldcheck report merge``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from fieldcheck.errors import BaselineError
from fieldcheck.reports.compare import (HIGHER_IS_BETTER, LOWER_IS_BETTER, FailRule, compare,  # noqa: F401
                                       parse_rule)  # (re-exported: the rules live beside the report code)
from fieldcheck.reports.schema import atomic_write_text, load_report, write_json

LATEST = "LATEST"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def baseline_dir(root: Path) -> Path:
    return Path(root) / ".fieldcheck" / "baselines"


def check_name(name: str) -> str:
    if not name or not _NAME_RE.match(name) or name.endswith(".json") or name.upper() == LATEST:
        raise BaselineError(
            f"--fc-save {name!r} is not a usable baseline name: use letters, digits, '.', '_' "
            f"or '-' (not 'latest', no '/', no '.json'), e.g. --fc-save v1.2")
    return name


def save(report: dict, name: str, root: Path) -> Path:
    """Write the report as baseline NAME and point LATEST at it (both atomically)."""
    check_name(name)
    d = baseline_dir(root)
    path = write_json(d / f"{name}.json", report)
    atomic_write_text(d / LATEST, name + "\n")
    return path


def resolve(value: Optional[str], root: Path) -> Path:
    """The file a ``--fc-compare`` value names: ``latest`` (or no value), a saved NAME, or a
    path to a JSON report."""
    d = baseline_dir(root)
    if value is None or value == "" or value.lower() == "latest":
        ptr = d / LATEST
        if not ptr.is_file():
            raise BaselineError(
                f"--fc-compare: no baseline saved yet ({ptr} is missing): run once with "
                f"--fc-save NAME first, or pass --fc-compare=PATH to a JSON report")
        name = ptr.read_text(encoding="utf-8").strip()
        if not name or not _NAME_RE.match(name):
            raise BaselineError(f"--fc-compare: {ptr} is malformed ({name!r}): save a baseline "
                                f"again with --fc-save NAME")
        return d / f"{name}.json"
    p = Path(value)
    if p.suffix == ".json" or "/" in value or "\\" in value or p.is_file():
        if not p.is_absolute():
            p = (Path.cwd() / p) if (Path.cwd() / p).exists() else (Path(root) / p)
        return p
    named = d / f"{value}.json"
    if not named.is_file():
        have = sorted(x.stem for x in d.glob("*.json")) if d.is_dir() else []
        hint = f"saved baselines: {', '.join(have)}" if have else "no baseline is saved yet"
        raise BaselineError(
            f"--fc-compare {value!r}: no baseline of that name in {d} ({hint}); save one with "
            f"--fc-save {value}, or pass the path of a JSON report. (A test path right after "
            f"--fc-compare is read as its value: write --fc-compare=NAME.)")
    return named


def load(value: Optional[str], root: Path) -> tuple[Path, dict]:
    p = resolve(value, root)
    return p, load_report(p)
