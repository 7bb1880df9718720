"""Per-model expectations: ``@pytest.mark.fc_xfail_on(model, ..., reason=..., strict=True)``.

One claim file runs on several models (``--fc-models``); a finding that holds on one model and
not on another stays in the suite as a strict xfail on the models where it is false, and as an
ordinary claim everywhere else. The marker names the models (aliases, specs or the run's labels,
a list or several arguments); on a matching model the item gets
``pytest.mark.xfail(reason="on <model>: <reason>", strict=strict, raises=raises)``, on any other
model nothing. The model of an item is its ``--fc-models`` parameter, else the model it is pinned
to (``@pytest.mark.fieldcheck(model=...)``), else the session's ``--fc-model``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from .common import get_state, marker_kwargs, model_param

MARKER = "fc_xfail_on"
_KWARGS = {"reason", "strict", "raises"}


def register(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(*models, reason='', strict=True, raises=None): the claim is expected to "
        "fail on these models only (a strict xfail there, an ordinary claim on the others); models are "
        "aliases, specs or --fc-models labels")


def marker_models(mark) -> list[str]:
    """The model names of one ``fc_xfail_on`` marker (positional strings or lists of them)."""
    unknown = set(mark.kwargs) - _KWARGS
    if unknown:
        raise pytest.UsageError(f"@pytest.mark.{MARKER}: unknown argument(s) {sorted(unknown)}; it takes "
                                f"model names and {sorted(_KWARGS)}")
    names: list[str] = []
    for a in mark.args:
        items = a if isinstance(a, (list, tuple, set, frozenset)) else [a]
        for x in items:
            if not isinstance(x, (str, Path)) or not str(x):
                raise pytest.UsageError(f"@pytest.mark.{MARKER}: a model is a non-empty string (an alias, "
                                        f"a spec or a --fc-models label), got {x!r}")
            names.append(str(x))
    if not names:
        raise pytest.UsageError(f"@pytest.mark.{MARKER} needs at least one model, e.g. "
                                f"@pytest.mark.{MARKER}('gemma3-270m', reason='measured: ...')")
    return names


def item_model(item, state) -> Optional[str]:
    """The spec of the model an item runs on (see the module doc)."""
    spec, _ = model_param(item)
    if spec is not None:
        return spec
    pinned = marker_kwargs(item).get("model")
    if pinned is not None:
        return str(pinned)
    return state.opts.model if state is not None else None


def _names_of(spec: str, state) -> set[str]:
    out = {spec, Path(spec.rstrip("/\\")).name}
    label = state.labels.get(spec) if state is not None else None
    if label:
        out.add(label)
    return out


def apply(items, config: pytest.Config) -> None:
    """Turn every matching ``fc_xfail_on`` marker into an xfail marker on its item."""
    state = get_state(config)
    for item in items:
        marks = list(item.iter_markers(MARKER))
        if not marks:
            continue
        spec = item_model(item, state)
        names = _names_of(spec, state) if spec is not None else set()
        for mark in marks:
            models = marker_models(mark)
            hit = next((m for m in models if m in names), None)
            if hit is None:
                continue
            reason = str(mark.kwargs.get("reason", "") or "")
            item.add_marker(pytest.mark.xfail(reason=f"on {hit}: {reason}" if reason else f"on {hit}",
                                              strict=bool(mark.kwargs.get("strict", True)),
                                              raises=mark.kwargs.get("raises")))
            break
