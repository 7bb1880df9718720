"""Factual recall: causal tracing of where the model keeps a fact.

Meng et al. (ROME) found, with causal tracing, that GPT models recall "The capital of France
is -> Paris" from the subject's last token at early-to-middle layers, and that the attribute
reaches the final position only late. The factual-recall data set (``facts``: 16 pairs of 6
tokens) swaps the subject for another subject of the same relation; for this tokenizer every
subject is one token, so SUBJ_FIRST and SUBJ_LAST coincide. Denoising ``resid_pre`` at the
subject's last token (SUBJ_LAST) and at END for every layer (one module-scoped sweep of 60
sites) measured on SmolLM2-135M-Instruct: SUBJ_LAST recovers 0.96-1.00 of the clean logit
difference at layers 0-23, 0.02-0.03 from layer 24 on, and END the reverse (0.97-0.99 from
layer 24 on): the fact is moved from the subject to the final position in one step, by the
attention of layer 23.
"""

import pytest

import fieldcheck as fc
from fieldcheck import recovered
from fieldcheck.sites import resid_pre


@pytest.fixture(scope="module")
def sweep(field, facts):
    """Denoising resid_pre at SUBJ_LAST and END, every layer, each site separately."""
    return field.patch(facts, resid_pre("all", ["SUBJ_LAST", "END"]), direction="denoise")


def rows(result, pos, layers):
    """The slice of a per-site PatchResult at position name ``pos`` and ``layers``."""
    return result.select(lambda s: s.pos == pos and s.layer in layers)


def test_subject_last_token_carries_fact_early_to_middle(sweep):
    """The subject's last token carries the fact at early-to-middle layers: denoising its
    residual at any one of layers 2-20 recovers more than 85% of the clean logit difference."""
    fc.assert_effect(rows(sweep, "SUBJ_LAST", range(2, 21)), recovered > 0.85, direction="denoise")


def test_subject_last_token_empty_late(sweep):
    """From layer 24 on the subject token no longer matters: denoising it at any one of layers
    24-29 recovers less than 10%."""
    fc.assert_effect(rows(sweep, "SUBJ_LAST", range(24, 30)), recovered < 0.1)


def test_fact_at_final_position_late(sweep):
    """The fact reaches the final position at layer 24: denoising END at any one of layers 24-29
    recovers more than 85%, while at layers 0-20 it recovers less than 10%."""
    fc.assert_effect(rows(sweep, "END", range(24, 30)), recovered > 0.85)
    fc.assert_effect(rows(sweep, "END", range(0, 21)), recovered < 0.1)
