"""Circuits: the IOI circuit found by edge attribution, and how faithful it is at each size.

EAP-IG (Hanna et al. 2024; 5 steps on the line between the corrupted and the clean embeddings)
scores all 123,211 edges of SmolLM2-135M's edge graph (embed, 270 heads and 30 MLPs as senders;
every head's q/k/v input, every MLP input and the logits as receivers) on the session's 16 IOI
pairs. The top-k edges form circuits of 0.1% to 100% of the edges (MIB's grid, Mueller et al.
2025), evaluated on 16 *other* IOI prompts (a held-out set, so the ranking is not tested on the
data it was fitted to) with every edge outside the circuit patched from the corrupted run. The
faithfulness of a circuit is (m(C) - m(empty)) / (m(full) - m(empty)) for the logit difference
(ratio of means over the examples; MIB's circuit performance ratio).
"""
import pytest

import fieldcheck as fc
from fieldcheck import area, cmd, cpr


@pytest.fixture(scope="module")
def ioi_scores(field, ioi):
    return field.edge_scores(ioi, method="eap-ig", steps=5)


@pytest.fixture(scope="module")
def ioi_heldout(fc_model, fc_session_seed):
    return fc.datasets.ioi(fc_model, n=16, seed=fc_session_seed + 2)


@pytest.fixture(scope="module")
def curve(field, ioi_scores, ioi_heldout):
    """Faithfulness over sizes 0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%, 50%, 100% of the edges."""
    return field.faithfulness_curve(ioi_heldout, ioi_scores)


def test_two_percent_of_the_edges_carry_the_ioi_answer(curve):
    """The top 2% of edges by EAP-IG (2,465 of 123,211) keep more than 70% of the model's logit
    difference on held-out prompts."""
    fc.assert_faithful(curve.at(curve.sizes[4]), cpr > 0.7)


def test_faithfulness_curve_is_close_to_the_model(curve):
    """Over the whole size grid the EAP-IG circuits stay close to the full model: the area under
    faithfulness (MIB's CPR score) is above 0.7 and the area under |1 - faithfulness| (MIB's
    CMD score) below 0.3."""
    fc.assert_faithfulness_curve(curve, area > 0.7, cmd < 0.3)


@pytest.mark.xfail(strict=True, reason="measured: the top 0.2% of edges (247) keep 0.26 of the logit difference")
def test_a_few_hundred_edges_suffice(curve):
    """(False.) The top 0.2% of edges (247) keep more than 80% of the logit difference."""
    fc.assert_faithful(curve.at(curve.sizes[1]), cpr > 0.8)
