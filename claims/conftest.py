"""Shared data sets for the example claims.

The model comes from the fieldcheck plugin (``fc_model``; ``--fc-model``, default the embedded
SmolLM2-135M-Instruct) and ``field`` is the session's :class:`fieldcheck.Field`, whose run cache
is shared by every claim: each data set's clean and corrupted prompts run once per session.
Data sets are session-scoped and seeded by ``--fc-seed`` (default 0).
"""
import pytest

import fieldcheck as fc


def pytest_configure(config):
    """20000 bootstrap resamples (and random sign flips) instead of 2000 for the claims: a
    bootstrap p-value cannot be smaller than about 1/n_boot (after the small-sample expansion,
    0.003 at n=16 with 2000 resamples, 0.0009 with 20000), and the session's Holm correction
    multiplies the smallest p by the number of p-values in the run; with 2000 resamples a
    suite of ~25 results at n=16 fails the correction even when every interval is far from
    its bar. (A session fixture cannot do this: the plugin restores the settings after each
    claim's setup.)"""
    fc.config.set(n_boot=20000)


@pytest.fixture(scope="session")
def session_seed(fc_session_seed):
    """``--fc-seed`` for the session-scoped data sets below (the plugin's ``fc_session_seed``)."""
    return fc_session_seed


@pytest.fixture(scope="session")
def ioi(fc_model, session_seed):
    """16 IOI pairs, third-name corruption at S2 (one template family of equal token length)."""
    return fc.datasets.ioi(fc_model, n=16, seed=session_seed)


@pytest.fixture(scope="session")
def ioi_large(fc_model, session_seed):
    """64 IOI prompts for behavioural rates (forward passes only)."""
    return fc.datasets.ioi(fc_model, n=64, seed=session_seed + 1)


@pytest.fixture(scope="session")
def facts(fc_model, session_seed):
    """Factual recall pairs ("The capital of France is" -> " Paris"), subject swapped in the corruption."""
    return fc.datasets.factual_recall(fc_model, n=16, seed=session_seed)


@pytest.fixture(scope="session")
def facts_large(fc_model, session_seed):
    return fc.datasets.factual_recall(fc_model, n=48, seed=session_seed + 1)


@pytest.fixture(scope="session")
def induction(fc_model, session_seed):
    """Repeated random word sequences; the corruption breaks the repetition."""
    return fc.datasets.induction(fc_model, n=16, seed=session_seed, length=6)
