"""Shared data sets for the example claims.

The model comes from the fieldcheck plugin (``fc_model``; ``--fc-model``, default the embedded
SmolLM2-135M-Instruct) and ``field`` is the session's :class:`fieldcheck.Field`, whose run cache
is shared by every claim: each data set's clean and corrupted prompts run once per session.
Data sets are session-scoped and seeded by ``--fc-seed`` (default 0), read through the
plugin's public ``fc_session_seed`` fixture. The claims run at the default settings (2000
bootstrap resamples): p-values have no resampling floor, so the suite needs no override.
"""
import pytest

import fieldcheck as fc


@pytest.fixture(scope="session")
def ioi(fc_model, fc_session_seed):
    """16 IOI pairs, third-name corruption at S2 (one template family of equal token length)."""
    return fc.datasets.ioi(fc_model, n=16, seed=fc_session_seed)


@pytest.fixture(scope="session")
def ioi_large(fc_model, fc_session_seed):
    """64 IOI prompts for behavioural rates (forward passes only)."""
    return fc.datasets.ioi(fc_model, n=64, seed=fc_session_seed + 1)


@pytest.fixture(scope="session")
def facts(fc_model, fc_session_seed):
    """Factual recall pairs ("The capital of France is" -> " Paris"), subject swapped in the corruption."""
    return fc.datasets.factual_recall(fc_model, n=16, seed=fc_session_seed)


@pytest.fixture(scope="session")
def facts_large(fc_model, fc_session_seed):
    return fc.datasets.factual_recall(fc_model, n=48, seed=fc_session_seed + 1)


@pytest.fixture(scope="session")
def induction(fc_model, fc_session_seed):
    """Repeated random word sequences; the corruption breaks the repetition."""
    return fc.datasets.induction(fc_model, n=16, seed=fc_session_seed, length=6)
