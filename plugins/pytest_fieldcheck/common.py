"""What the parts of the plugin share, below all of them: the session state registered on the
config (:func:`get_state`), whether this process is the xdist controller, fieldcheck.config, and
what an item says about itself (its ``fieldcheck`` marker, its model parameter in a multi-model
run, whether it uses our fixtures). It imports no other module of the plugin."""
from __future__ import annotations

from typing import Optional

import pytest

STATE_NAME = "fieldcheck-state"              # the name FieldcheckPlugin is registered under
FIXTURES_MODULE = __name__.rpartition(".")[0] + ".fixtures"   # where our fixtures are defined


def is_controller(config: pytest.Config) -> bool:
    """True outside xdist workers (the process that collects results and writes reports)."""
    return not hasattr(config, "workerinput")


def get_state(config: pytest.Config):
    """The session's :class:`~pytest_fieldcheck.session.FieldcheckPlugin` (None before configure)."""
    return config.pluginmanager.get_plugin(STATE_NAME)


def settings_module():
    """fieldcheck.config (None when fieldcheck cannot be imported)."""
    try:
        from fieldcheck import config as fc_config
    except ImportError:
        return None
    return fc_config


def marker_kwargs(item) -> dict:
    """The keywords of the item's ``fieldcheck`` marker (a first positional argument is ``model``)."""
    m = item.get_closest_marker("fieldcheck") if hasattr(item, "get_closest_marker") else None
    if m is None:
        return {}
    kw = dict(m.kwargs)
    if m.args and "model" not in kw:
        kw["model"] = m.args[0]
    return kw


def model_param(item) -> tuple[Optional[str], Optional[str]]:
    """(model spec, claim id without the model's label) of an item of a multi-model run, or
    (None, None). The id is rebuilt from the parameter ids, not cut from the text."""
    cs = getattr(item, "callspec", None)
    if cs is None or "fc_model" not in getattr(cs, "params", {}):
        return None, None
    spec = cs.params["fc_model"]
    state = get_state(item.config)
    label = state.labels.get(spec) if state is not None else None
    nid = item.nodeid
    ids = list(getattr(cs, "_idlist", None) or [])
    head = nid[:nid.rfind("[")] if nid.endswith("]") and "[" in nid else nid
    if label is not None and ids and label in ids and nid.endswith("[" + "-".join(ids) + "]"):
        rest = list(ids)
        del rest[len(rest) - 1 - rest[::-1].index(label)]
        return spec, head + (f"[{'-'.join(rest)}]" if rest else "")
    if label is not None and nid.endswith(f"[{label}]"):
        return spec, head
    return spec, nid


def pinned_model(item, state) -> Optional[str]:
    """The model spec a claim's ``fieldcheck(model=...)`` marker pins it to, or None when it is the
    session's model or not pinned."""
    spec = marker_kwargs(item).get("model")
    return str(spec) if spec is not None and str(spec) != state.opts.model else None


def uses_our_fixture(item, names) -> bool:
    """Whether the item requests one of our fixtures by these names (not a parameter or a
    fixture of its own that happens to be called ``field``)."""
    info = getattr(item, "_fixtureinfo", None)
    for n in names:
        if n not in getattr(item, "fixturenames", ()):
            continue
        defs = (getattr(info, "name2fixturedefs", {}) or {}).get(n) if info is not None else None
        if not defs:
            continue
        func = getattr(defs[-1], "func", None)
        if getattr(func, "__module__", None) == FIXTURES_MODULE:
            return True
    return False
