"""The fixtures a claim uses: ``fc_model``, ``field``, ``fc_seed``, ``fc_config``, and the
``fieldcheck`` marker that pins a claim to a model, a seed or a data size."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest

from .session import get_state

@dataclass(frozen=True)
class FcConfig:
    """What a claim can read about the session: ``fc_config.model``, ``.seed``, ``.n``..."""

    model: str
    device: str
    dtype: Optional[str]
    seed: int
    alpha: float
    correction: str
    decide: str
    n: Optional[int] = None
    claim_id: Optional[str] = None


def marker_kwargs(item) -> dict:
    m = item.get_closest_marker("fieldcheck") if hasattr(item, "get_closest_marker") else None
    if m is None:
        return {}
    kw = dict(m.kwargs)
    if m.args and "model" not in kw:
        kw["model"] = m.args[0]
    return kw


@pytest.fixture(scope="session")
def fc_model(request: pytest.FixtureRequest):
    """The session's model (``--fc-model``), loaded once per session (once per xdist worker)."""
    state = get_state(request.config)
    try:
        return state.load(state.opts.model)
    except Exception as e:
        pytest.fail(f"fieldcheck could not load the model {state.opts.model!r} "
                    f"(--fc-model): {type(e).__name__}: {e}", pytrace=False)


@pytest.fixture(scope="session")
def field(request: pytest.FixtureRequest, fc_model):
    """``fieldcheck.Field(fc_model)``, built once per session."""
    state = get_state(request.config)
    return state.field_for(state.opts.model)


@pytest.fixture(scope="session")
def fc_session_seed(request: pytest.FixtureRequest) -> int:
    """The session seed (``--fc-seed``, default 0), for session- or module-scoped data sets
    (``fc_seed`` is per claim and may be overridden by a claim's marker)."""
    return get_state(request.config).opts.seed


@pytest.fixture
def fc_seed(request: pytest.FixtureRequest) -> int:
    """The claim's seed: the marker's ``seed=`` or ``--fc-seed``."""
    seed = marker_kwargs(request.node).get("seed")
    return int(seed) if seed is not None else get_state(request.config).opts.seed


@pytest.fixture
def fc_config(request: pytest.FixtureRequest) -> FcConfig:
    state = get_state(request.config)
    mk = marker_kwargs(request.node)
    o = state.opts
    return FcConfig(model=mk.get("model") or o.model, device=state.device, dtype=o.dtype,
                    seed=int(mk["seed"]) if mk.get("seed") is not None else o.seed,
                    alpha=o.alpha, correction=o.correction, decide=o.decide,
                    n=int(mk["n"]) if mk.get("n") is not None else None,
                    claim_id=request.node.nodeid)


def pinned_model(item, state) -> Optional[str]:
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
        if getattr(func, "__module__", None) == __name__:
            return True
    return False
