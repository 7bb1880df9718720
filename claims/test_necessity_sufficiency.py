"""Necessity vs sufficiency: noising and denoising the same sites can disagree.

Denoising (clean activations patched into the corrupted run) asks whether sites are
*sufficient* to restore the answer; noising (corrupted activations patched into the clean run)
asks whether they are *necessary* for it. The two coincide only when the mechanism is
additive; with redundancy (an OR: several components that can each do the job) a component
set can be sufficient for part of the answer yet barely necessary, because the others make up
for it when it is removed (seed 003, "AND vs OR circuits"). Measured on SmolLM2-135M-Instruct:
three heads of layer 23 at the final position of the induction prompts (L23.H1, L23.H2,
L23.H7; each among the top 5 of the single-head denoising sweep in test_induction.py) recover
0.29 of the clean logit difference when denoised together, but noising them together costs
only 0.16 (the clean run keeps 0.84 of its logit difference). For contrast, the IOI final
position at layer 26 is both: denoising recovers 0.90 and noising leaves 0.11, so there the
two directions agree. A report that gave only one direction would describe these heads wrongly.
"""
import fieldcheck as fc
from fieldcheck import recovered
from fieldcheck.sites import Site, resid_pre

L23_HEADS = [Site("attn_head", 23, "END", h) for h in (1, 2, 7)]


def test_layer23_heads_sufficient_not_necessary(field, fc_session_seed):
    """Heads L23.H1, L23.H2, L23.H7 at END are partly sufficient (denoising them together
    recovers more than 15% of the induction logit difference) but not necessary (noising them
    together leaves the clean run more than 70% of its logit difference). 48 induction prompts:
    at 16 both criteria sit about 3 standard errors from their bars."""
    induction = fc.datasets.induction(field.model, n=48, seed=fc_session_seed, length=6)
    den = field.patch(induction, L23_HEADS, direction="denoise", jointly=True)
    noi = field.patch(induction, L23_HEADS, direction="noise", jointly=True)
    fc.assert_effect(den, recovered > 0.15, direction="denoise")
    fc.assert_effect(noi, recovered > 0.7, direction="noise")


def test_ioi_end_late_necessary_and_sufficient(field, ioi):
    """Control: the IOI final position's residual at layer 26 is both sufficient (denoising
    recovers more than 75%) and necessary (noising leaves less than 30%)."""
    site = resid_pre(26, "END")
    fc.assert_effect(field.patch(ioi, site, direction="denoise"), recovered > 0.75, direction="denoise")
    fc.assert_effect(field.patch(ioi, site, direction="noise"), recovered < 0.3, direction="noise")
