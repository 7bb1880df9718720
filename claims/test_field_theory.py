"""The five forward findings of Transformer Field Theory, on the IOI task of each model.

The residual stream is a field phi(l, t) over depth and position; a patch inserts a source into
it. These claims test, on this model and the built-in IOI pairs (third-name corruption at S2),
that (1) the response to a source is linear only in a bounded regime, and much more tightly
bounded at the changed token than downstream of it; (2) first-order sensitivities predict real
patch effects after the changed token but not at it, while the integrated (path-averaged)
prediction does everywhere; (3) a source propagates inside its forward light cone, mostly along
depth at its own token; (4) a few adjoint-selected sites recover most of the effect, and a
low-rank slice of the Green operator explains much of a block; (5) displacements between
prompts transfer the answer to other sentences with the same names. Sites are at fractions of
the model's depth (``fieldcheck.sites.depth``), so the file runs on every model. Thresholds are
the values measured with margin (see claims/README.md, one table per model), not tuned to pass by
a hair.
"""
import numpy as np
import pytest

import fieldcheck as fc
from fieldcheck import alpha_star, depth_share, explained, r2, rate, recovered
from fieldcheck.sites import depth, resid_pre

DOWNSTREAM = depth(0.87)      # END here recovers most of the answer (SmolLM2 L26, Gemma 3 L16, Qwen2.5 L21)
CHANGED = depth(0.5)          # S2 still holds the whole answer here (L15, L9, L12)
SOURCE = depth(0.27)          # a source at S2 for the Green function (L8, L5, L6)
SLICE_FROM, SLICE_TO = depth(0.4), depth(0.67)   # G(END at L20; S2 at L12) on SmolLM2

ALPHAS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]


@pytest.fixture(scope="module")
def ioi_48(field, fc_session_seed):
    """48 IOI pairs for the cheap experiments (sweeps at one site, Green functions, transfer)."""
    return fc.datasets.ioi(field.model, n=48, seed=fc_session_seed + 2)


@pytest.fixture(scope="module")
def sweep_real(field, ioi):
    """Every resid_pre site, patched for real (denoising; the light-cone engine)."""
    return field.patch(ioi, resid_pre("all", "all"))


@pytest.fixture(scope="module")
def sweep_first_order(field, ioi):
    return field.predict(ioi, resid_pre("all", "all"))


@pytest.fixture(scope="module")
def sweep_integrated(field, ioi):
    """The integrated (EAP-IG, 8 steps) prediction of every resid_pre site: 8 forward+backward passes."""
    return field.predict(ioi, resid_pre("all", "all"), method="integrated", steps=8)


def _after_s2(ioi):
    s2 = int(ioi.positions["S2"][0])
    assert bool((ioi.positions["S2"] == s2).all()), "one template family: S2 at one position"
    return s2


# --- (1) a bounded local linear regime ----------------------------------------------------------
def test_linear_regime_downstream_of_the_changed_token(field, ioi_48):
    """Scaling the patch at the final position (at 87% of the depth, where it recovers most of the
    answer) keeps the response on its tangent line well into large sources: alpha* (10% tolerance)
    is at least 0.3."""
    sweep = field.scale_sweep(ioi_48, resid_pre(DOWNSTREAM, "END"), alphas=ALPHAS)
    fc.assert_linear_regime(sweep, alpha_star(tol=0.1) >= 0.3)


def test_linear_regime_is_much_smaller_at_the_changed_token(field, ioi_48):
    """At the changed token itself (S2, at mid-depth) the response is a switch, flat and then steep:
    it leaves its tangent line at once, alpha* (10% tolerance) below 0.2, where downstream it
    stays linear much longer."""
    sweep = field.scale_sweep(ioi_48, resid_pre(CHANGED, "S2"), alphas=ALPHAS)
    fc.assert_linear_regime(sweep, alpha_star(tol=0.1) < 0.2)


# --- (2) first-order and integrated predictions ---------------------------------------------------
def test_first_order_predicts_patches_after_the_changed_token(ioi, sweep_real, sweep_first_order):
    """At positions after S2, attribution patching (S . delta) predicts real patch effects."""
    s2 = _after_s2(ioi)
    after = lambda s: isinstance(s.pos, int) and s.pos > s2
    fc.assert_predicted_effect(sweep_first_order.select(after), sweep_real.select(after), r2 > 0.7)


def test_first_order_fails_at_the_changed_token(field, ioi_48):
    """A true negative: at the changed token itself (S2, every layer) the sources are large and
    the first-order prediction explains little of the real effects (R^2 well below 0.5)."""
    sites = resid_pre("all", "S2")
    fc.assert_predicted_effect(field.predict(ioi_48, sites), field.patch(ioi_48, sites), r2 < 0.5)


@pytest.mark.xfail(strict=True, reason="measured: first-order R^2 over all resid_pre sites is far below 0.9 "
                                       "(the changed-token column dominates); see claims/README.md")
def test_first_order_predicts_every_site(sweep_real, sweep_first_order):
    """False by design, kept to show the claim language catches it: first-order predictions do
    not explain the whole sweep."""
    fc.assert_predicted_effect(sweep_first_order, sweep_real, r2 > 0.9)


@pytest.mark.fc_xfail_on("qwen2.5-coder-0.5b", reason="measured (grid, seed 0): r2 0.825 [0.763, 0.869]", strict=True)
def test_integrated_prediction_predicts_every_site(sweep_integrated, sweep_real):
    """Averaging the gradient along the path between the runs (8 steps, EAP-IG) predicts the real
    effects of every resid_pre site."""
    fc.assert_predicted_effect(sweep_integrated, sweep_real, r2 > 0.85)


# --- (3) structured anisotropic propagation -------------------------------------------------------
@pytest.fixture(scope="module")
def green_s2(field, fc_session_seed):
    """96 IOI pairs: the depth share is about 3 standard errors above one half at n = 48, too
    close to be shown under a run-wide correction (``--fc-correction-family session``)."""
    return field.green(fc.datasets.ioi(field.model, n=96, seed=fc_session_seed + 2), resid_pre(SOURCE, "S2"))


def test_sources_stay_inside_their_light_cone(green_s2):
    """The linear response to a source at S2 (at 27% of the depth) is exactly zero at earlier
    layers and tokens."""
    fc.assert_light_cone(green_s2)


@pytest.mark.fc_xfail_on("gemma3-270m", reason="measured (grid, seed 0): depth_share 0.423 [0.413, 0.434]", strict=True)
@pytest.mark.fc_xfail_on("qwen2.5-coder-0.5b", reason="measured (grid, seed 0): depth_share 0.481 [0.468, 0.492]", strict=True)
def test_response_is_concentrated_along_depth(green_s2):
    """More of the response norm stays at the source's own token (across later layers) than
    spreads to later tokens."""
    fc.assert_anisotropic(green_s2, depth_share > 0.5)


# --- (4) reduced descriptions ------------------------------------------------------------------------
def test_few_adjoint_selected_sites_recover_the_effect(field, ioi, sweep_integrated):
    """The 3 sites with the largest integrated predicted effect, patched jointly, recover most of
    the clean logit difference."""
    sel = field.select_sites(ioi, 3, prediction=sweep_integrated, verify_recall=False)
    fc.assert_localized(sel, recovered > 0.8)


def test_a_low_rank_green_slice_explains_much_of_a_block(field, ioi):
    """The block G(END at 67% of the depth; S2 at 40%) of the Green operator (d_model x d_model) is
    far from rank one: a rank-32 randomized slice explains more than half of its squared norm."""
    sl = field.green_slice(ioi, resid_pre(SLICE_FROM, "S2"), resid_pre(SLICE_TO, "END"), rank=32)
    fc.assert_explained(sl, explained > 0.5)


# --- (5) displacement transfer ---------------------------------------------------------------------
def _same_names_other_sentence(model, ds, template):
    """The corrupted prompts of ``ds`` re-said in another template (same IO/S/C names)."""
    v = fc.datasets.vocab(model)
    places, objects = v.places, v.objects
    recs = []
    for i, meta in enumerate(ds.example_meta):
        recs.append(fc.datasets.ioi_record(v, template, meta["IO"], meta["S"], meta["C"],
                                           places[(i + 3) % len(places)], objects[(i + 5) % len(objects)]))
    return fc.ContrastiveSet.from_records(model, recs, name="ioi-transfer-targets")


@pytest.mark.fc_xfail_on("gemma3-270m", reason="measured (grid, seed 0): rate 0.208 [0.118, 0.328]", strict=True)
@pytest.mark.fc_xfail_on("qwen2.5-coder-0.5b", reason="measured (grid, seed 0): rate 0.0625 [0.017, 0.154]", strict=True)
def test_displacements_transfer_the_answer_to_other_sentences(field, ioi_48):
    """The displacement phi_clean - phi_corrupt at (40% of the depth, S2) of one sentence, added to
    another sentence with the same names (another template, place and object), flips that
    sentence's answer toward the indirect object in more than half of the cases."""
    targets = _same_names_other_sentence(field.model, ioi_48, template=4)
    tr = field.transfer(ioi_48, resid_pre(SLICE_FROM, "S2"), targets=targets, pair="matched")
    fc.assert_transfers(tr, rate > 0.5)
