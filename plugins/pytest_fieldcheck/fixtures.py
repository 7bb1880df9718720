"""The fixtures a claim uses: ``fc_model``, ``field``, ``fc_seed``, ``fc_config``, and the
``fieldcheck`` marker that pins a claim to a model, a seed or a data size."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest

from .common import get_state, marker_kwargs

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


@pytest.fixture(scope="session")
def fc_model(request: pytest.FixtureRequest):
    """The session's model (``--fc-model``), loaded once per session (once per xdist worker).

    With ``--fc-baseline-model`` or ``--fc-models`` the fixture is parametrized over the models
    (session scope): pytest runs every claim on one model, tears the fixture down (the model
    and its Field are freed, and session fixtures built from the model are rebuilt), then
    loads the next."""
    state = get_state(request.config)
    spec = getattr(request, "param", None) or state.opts.model
    try:
        model = state.load(spec)
    except Exception as e:
        flag = "--fc-model" if spec == state.opts.model else (
            "--fc-baseline-model" if spec == state.opts.baseline_model else "--fc-models")
        pytest.fail(f"fieldcheck could not load the model {spec!r} "
                    f"({flag}): {type(e).__name__}: {e}", pytrace=False)
    yield model
    if state.specs:
        del model
        state.release(spec)


@pytest.fixture(scope="session")
def field(request: pytest.FixtureRequest, fc_model):
    """``fieldcheck.Field(fc_model)``, built once per session (per model in a multi-model run)."""
    state = get_state(request.config)
    return state.field_for(state.spec_of(fc_model))


def parametrize_models(metafunc) -> None:
    """Run a claim that uses our ``fc_model`` (directly or through fixtures) once per model of
    a multi-model run. Claims pinned to a model by their marker are left alone."""
    state = get_state(metafunc.config)
    if state is None or not state.specs or "fc_model" not in metafunc.fixturenames:
        return
    defs = metafunc.definition._fixtureinfo.name2fixturedefs.get("fc_model") or ()
    if not defs or getattr(defs[-1].func, "__module__", None) != __name__:
        return  # the user's own fc_model fixture
    if marker_kwargs(metafunc.definition).get("model") is not None:
        return
    metafunc.parametrize("fc_model", state.specs, indirect=True, scope="session",
                         ids=[state.labels[s] for s in state.specs])


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
    cs = getattr(request.node, "callspec", None)
    running = (getattr(cs, "params", None) or {}).get("fc_model")  # a multi-model run's model
    return FcConfig(model=mk.get("model") or running or o.model, device=state.device, dtype=o.dtype,
                    seed=int(mk["seed"]) if mk.get("seed") is not None else o.seed,
                    alpha=o.alpha, correction=o.correction, decide=o.decide,
                    n=int(mk["n"]) if mk.get("n") is not None else None,
                    claim_id=request.node.nodeid)


