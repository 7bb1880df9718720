"""IOI localization: where, along depth, does the answer sit in the residual stream?

The IOI data set (``ioi``: 16 pairs, 15 tokens) corrupts only the second mention of the
subject (S2 -> a third name), so before any attention moves it the whole clean-corrupt
difference sits at the S2 token. Denoising (the clean residual patched into the corrupted
run: a test of *sufficiency*) the residual ``resid_pre(l, t)`` at S2 and at the final position
(END) for every layer l traces where the information is: measured on SmolLM2-135M-Instruct,
S2 carries all of it up to layer 19, it moves from S2 to END across layers 20-24 (layers 21-23
split it about evenly between the two positions), and from layer 25 on END alone carries ~0.9
of it. The claims below state that picture with margins; one sweep (60 sites) is computed
once per module and each claim asserts on a slice of it.
"""

import pytest

import fieldcheck as fc
from fieldcheck import recovered
from fieldcheck.sites import resid_pre

LATE = range(25, 30)      # END alone is sufficient
EARLY = range(0, 19)      # END carries nothing yet
BAND = (21, 22, 23)       # the crossover: split between S2 and END


@pytest.fixture(scope="module")
def sweep(field, ioi):
    """Denoising resid_pre at S2 and at END, every layer, each site separately."""
    return field.patch(ioi, resid_pre("all", ["S2", "END"]), direction="denoise")


def rows(result, pos, layers):
    """The slice of a per-site PatchResult at position name ``pos`` and ``layers``."""
    return result.select(lambda s: s.pos == pos and s.layer in layers)


def test_end_sufficient_late(sweep):
    """From layer 25 on, the final position's residual alone is sufficient: denoising it at any
    one of layers 25-29 recovers more than 75% of the clean logit difference."""
    fc.assert_effect(rows(sweep, "END", LATE), recovered > 0.75, direction="denoise")


def test_end_insufficient_early(sweep):
    """Before layer 19 the final position carries none of the answer: denoising END at any one
    of layers 0-18 recovers less than 10%."""
    fc.assert_effect(rows(sweep, "END", EARLY), recovered < 0.1, direction="denoise")


@pytest.mark.xfail(strict=True, reason="measured: END at layer 15 recovers -0.01 [90% CI about "
                   "-0.02, 0.00] of the logit difference; the answer is still at S2 there")
def test_end_sufficient_at_layer_15(sweep):
    """(A false claim, kept to show that it fails.) Denoising END at layer 15 recovers more than
    half of the clean logit difference."""
    fc.assert_effect(rows(sweep, "END", [15]), recovered > 0.5)


def test_s2_carries_answer_until_band(sweep):
    """Up to layer 19 the S2 token carries the whole answer (denoising it at any one of layers
    0-19 recovers more than 90%), and from layer 25 on it carries almost none (less than 15%)."""
    fc.assert_effect(rows(sweep, "S2", range(0, 20)), recovered > 0.9)
    fc.assert_effect(rows(sweep, "S2", LATE), recovered < 0.15)


def test_band_splits_answer_between_s2_and_end(field, ioi, sweep):
    """In the band of layers 21-23 the answer is in transit: S2 or END alone recovers less than
    70% at each of these layers, but both patched together at one layer recover more than 85%."""
    fc.assert_effect(rows(sweep, "S2", BAND), recovered < 0.7)
    fc.assert_effect(rows(sweep, "END", BAND), recovered < 0.7)
    for layer in BAND:
        joint = field.patch(ioi, resid_pre(layer, ["S2", "END"]), jointly=True)
        fc.assert_effect(joint, recovered > 0.85)
