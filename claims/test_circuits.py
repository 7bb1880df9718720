"""Circuits: the IOI circuit found by edge attribution, and how faithful it is at each size.

EAP-IG (Hanna et al. 2024; 5 steps on the line between the corrupted and the clean embeddings)
scores every edge of the model's edge graph (input, every head and MLP as senders; every head's
q/k/v input, every MLP input and the logits as receivers: 123,211 edges on SmolLM2, 10,342 on
Gemma 3, 179,749 on Qwen2.5) on the session's 16 IOI pairs. The top-k edges form circuits of
0.1% to 100% of the edges (MIB's grid, Mueller et al. 2025), evaluated on 16 *other* IOI prompts
(a held-out set, so the ranking is not tested on the data it was fitted to) with every edge
outside the circuit patched from the corrupted run. The faithfulness of a circuit is
(m(C) - m(empty)) / (m(full) - m(empty)) for the logit difference (ratio of means over the
examples). MIB's two scores (``fieldcheck.experiments.mib``): CPR, the area under faithfulness
with the edges ranked by signed score (most helpful first), and CMD, the area under
|1 - faithfulness| with the edges ranked by |score|. On Gemma 3 (post-norms) a receiver that drops
some heads of a block reads that block renormalized, as MIB's evaluation of Gemma 2 does.
"""
import pytest

import fieldcheck as fc
from fieldcheck import area, cmd, cpr
from fieldcheck.experiments.mib import mib_scores


@pytest.fixture(scope="module")
def ioi_scores(field, ioi):
    return field.edge_scores(ioi, method="eap-ig", steps=5)


@pytest.fixture(scope="module")
def ioi_heldout(fc_model, fc_session_seed):
    return fc.datasets.ioi(fc_model, n=16, seed=fc_session_seed + 2)


@pytest.fixture(scope="module")
def mib(field, ioi_scores, ioi_heldout):
    """Faithfulness over MIB's sizes (0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%, 50%, 100% of the
    edges) for both of MIB's rankings, on the held-out prompts."""
    return mib_scores(field, ioi_heldout, ioi_scores)


@pytest.mark.fc_xfail_on("gemma3-270m", reason="measured (seed 0): the top 2% of Gemma 3's 10,342 edges (206) "
                         "keep 0.309 [0.241, 0.390] of the logit difference on held-out prompts")
@pytest.mark.fc_xfail_on("qwen2.5-coder-0.5b", reason="measured (seed 0): the top 2% of Qwen2.5's 179,749 edges "
                         "(3,594) keep 0.426 [0.353, 0.503] of the logit difference on held-out prompts")
def test_two_percent_of_the_edges_carry_the_ioi_answer(mib):
    """The top 2% of edges by |EAP-IG score| keep more than 70% of the model's logit difference on
    held-out prompts."""
    curve = mib.absolute
    fc.assert_faithful(curve.at(curve.sizes[4]), cpr > 0.7)


def test_faithfulness_curve_is_close_to_the_model(mib):
    """Over the whole size grid the EAP-IG circuits stay close to the full model: the area under
    faithfulness with the edges ranked by signed score (MIB's CPR) is above 0.7, and the area under
    |1 - faithfulness| with the edges ranked by |score| (MIB's CMD) below 0.3."""
    fc.assert_faithfulness_curve(mib.signed, area > 0.7)
    fc.assert_faithfulness_curve(mib.absolute, cmd < 0.3)


@pytest.mark.xfail(strict=True, reason="measured on SmolLM2: the top 0.2% of edges (246) keep 0.33 of the "
                   "logit difference")
def test_a_few_hundred_edges_suffice(mib):
    """(False.) The top 0.2% of edges by |score| keep more than 80% of the logit difference."""
    curve = mib.absolute
    fc.assert_faithful(curve.at(curve.sizes[1]), cpr > 0.8)
