"""Necessity vs sufficiency: noising and denoising the same sites can disagree.

Denoising (clean activations patched into the corrupted run) asks whether sites are
*sufficient* to restore the answer; noising (corrupted activations patched into the clean run)
asks whether they are *necessary* for it. The two coincide only when the mechanism is
additive; with redundancy (an OR: several components that can each do the job) a component
set can be sufficient for part of the answer yet barely necessary, because the others make up
for it when it is removed (seed 003, "AND vs OR circuits"). The three heads that recover most of
the induction answer alone (chosen on ``induction``, tested on 48 other sequences): on SmolLM2
and Qwen2.5 they are partly sufficient but not necessary (the clean run keeps most of its answer
when they are noised), on Gemma 3 they are both (noising them removes nearly all of it): there
the induction circuit has no redundancy. For contrast, the IOI final position late in the model
is both sufficient and necessary on every model.
"""
import pytest

import fieldcheck as fc
from fieldcheck import recovered
from fieldcheck.sites import depth, resid_pre


@pytest.fixture(scope="module")
def induction_48(field, fc_session_seed):
    return fc.datasets.induction(field.model, n=48, seed=fc_session_seed + 1, length=6)


@pytest.mark.fc_xfail_on("smollm2-135m", reason="measured (seed 0, 48 sequences): noising L18.H6, L23.H7 and "
                         "L29.H1 leaves the clean run 0.587 [0.487, 0.655]: more than half on average, not shown")
@pytest.mark.fc_xfail_on("gemma3-270m", reason="measured: noising Gemma 3's top 3 induction heads leaves "
                         "the clean run 0.03 of its logit difference: they are necessary, not redundant")
def test_top_induction_heads_sufficient_not_necessary(field, induction_heads, induction_48):
    """The top 3 induction heads at END are partly sufficient (denoising them together recovers more
    than 15% of the logit difference) but not necessary (noising them together leaves the clean run
    more than half of it)."""
    heads = [s for s, _ in induction_heads[:3]]
    den = field.patch(induction_48, heads, direction="denoise", jointly=True)
    noi = field.patch(induction_48, heads, direction="noise", jointly=True)
    fc.assert_effect(den, recovered > 0.15, direction="denoise")
    fc.assert_effect(noi, recovered > 0.5, direction="noise")


def test_ioi_end_late_necessary_and_sufficient(field, ioi):
    """Control: the IOI final position's residual at 87% of the depth is both sufficient (denoising
    recovers more than 75%) and necessary (noising leaves less than 30%)."""
    site = resid_pre(depth(0.87), "END")
    fc.assert_effect(field.patch(ioi, site, direction="denoise"), recovered > 0.75, direction="denoise")
    fc.assert_effect(field.patch(ioi, site, direction="noise"), recovered < 0.3, direction="noise")
