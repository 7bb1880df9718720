"""Shared data sets and sweeps for the example claims.

The model comes from the fieldcheck plugin (``fc_model``; ``--fc-model``, default the embedded
SmolLM2-135M-Instruct; ``--fc-models`` runs every claim on several models, one after another) and
``field`` is the session's :class:`fieldcheck.Field`, whose run cache is shared by every claim:
each data set's clean and corrupted prompts run once per session and model. Data sets are
session-scoped and seeded by ``--fc-seed`` (default 0), read through the plugin's public
``fc_session_seed`` fixture. Layers are given as fractions of the model's depth
(``fieldcheck.sites.depth``) and heads are chosen by a measurement on one data set and tested on
another, so that every file runs on every model; where a finding does not hold on a model, its
claim is a strict xfail on that model only (``@pytest.mark.fc_xfail_on``).
"""
import numpy as np
import pytest

import fieldcheck as fc
from fieldcheck.sites import attn_head


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


@pytest.fixture(scope="session")
def induction_heads(field, induction):
    """Every attention head at END ranked by the fraction of the induction answer that denoising
    its output alone recovers (ratio of mean effects over ``induction``): [(Site, recovered)]."""
    sweep = field.patch(induction, attn_head("all", "all", "END"), direction="denoise")
    gap = (sweep.baseline_clean - sweep.baseline_corrupt).sum()
    rec = (sweep.values - sweep.baseline_corrupt[None]).sum(1) / gap
    return [(sweep.sites[i], float(rec[i])) for i in np.argsort(-rec, kind="stable")]
