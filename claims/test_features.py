"""Claims about dictionary features: each model's example TopK SAE on the residual stream at a
middle layer (``fc.sae.example(<alias>)``: SmolLM2-135M at layer 15 with 2304 latents, Gemma-3-270m
at layer 9 with 2560, Qwen2.5-Coder-0.5B at layer 12 with 3584; k=32, trained by fieldcheck on
Python's help topics -- the ``pydoc`` corpus, always installed -- the first time it is needed,
a few CPU-minutes, then cached in ``$FIELDCHECK_HOME/sae``). A model that is not a built-in alias
(e.g. the candidate of a gating run, ``--fc-baseline-model``) gets the SmolLM2 SAE, so a gate
applies one SAE to both models and the report says how well it reconstructs the candidate. Bars
were set on ``--fc-seed 0``. On SmolLM2, ``--fc-seed 1`` (other IOI draws, 2304-latent SAE)
confirms the attribution (R^2 0.955) and faithfulness (0.654 [0.444, 0.836]) claims and both xfails
(recovered 0.23, completeness 0.56), but not the comma latent: rate_on 0.875 [0.736, 0.956] and AUROC
0.938 [0.889, 0.986], below their bars (0.8, 0.9) at the interval's bound (claims/README.md). Where a finding is false on one model it is a strict xfail
there only, with the measured value."""
import numpy as np
import pytest

import fieldcheck as fc
from fieldcheck import auroc, completeness, faithfulness, r2, rate_off, rate_on, recovered


@pytest.fixture(scope="module")
def sae(fc_model, field):
    """The example SAE of the model the claims run on (the SmolLM2 one for a model without one)."""
    spec = str((getattr(fc_model, "fieldcheck_info", None) or {}).get("spec", ""))
    if spec in fc.sae.EXAMPLES:
        return fc.sae.example(fc_model, field=field)
    return fc.sae.example("smollm2-135m")


@pytest.mark.fc_xfail_on("gemma3-270m", reason="measured (grid, seed 0): r2 0.713 [0.616, 0.792] with Gemma 3's example SAE (16% dead latents)", strict=True)
def test_attribution_predicts_feature_patches(field, ioi, sae):
    """One backward pass predicts denoising each of the 40 most attributed latents (all positions)."""
    pred_all = field.predict(ioi, fc.sites.features(sae, "all", "all"))
    top = [pred_all.sites[i] for i in np.argsort(-np.abs(pred_all.mean_effect))[:40]]
    fc.assert_predicted_effect(field.predict(ioi, top), field.patch(ioi, top), r2 > 0.9)


@pytest.mark.fc_xfail_on("gemma3-270m", reason="measured (grid, seed 0): faithfulness 0.505 [0.152, 0.707]", strict=True)
def test_top_features_form_a_faithful_circuit(field, ioi, sae):
    """The 30 nodes (latents and the error term) with the largest attribution keep over 40% of the
    logit difference when every other node is mean-ablated (Marks et al.'s faithfulness)."""
    circuit = field.feature_circuit(ioi, [sae], k=30, ablation="mean")
    fc.assert_feature_circuit(circuit, faithfulness > 0.4)


@pytest.mark.fc_xfail_on("smollm2-135m", reason="measured: completeness 0.62 [0.45, 0.86] (seed 0)", strict=True)
@pytest.mark.fc_xfail_on("qwen2.5-coder-0.5b", reason="measured (grid, seed 0): completeness 0.27", strict=True)
def test_top_feature_circuit_is_complete(field, ioi, sae):
    circuit = field.feature_circuit(ioi, [sae], k=30, ablation="mean")
    fc.assert_feature_circuit(circuit, completeness > 0.8)


@pytest.mark.xfail(strict=True, reason="measured: recovered 0.27; the SAE's error term and the "
                                       "interaction with it carry the rest of the IOI signal at layer 15")
def test_sae_latents_carry_the_ioi_signal_at_layer_15(field, ioi, sae):
    result = field.patch(ioi, fc.sites.features(sae, "all", "all"), jointly=True)
    fc.assert_feature_effect(result, recovered > 0.5)


def test_a_clause_comma_latent_fires_on_ioi_prompts_only(field, fc_model, sae, fc_session_seed):
    """The latent that best separates IOI prompts (a comma after "When A and B went to the store")
    from factual-recall prompts on one draw of each (seed s) separates a fresh draw (seed s + 1)."""
    from fieldcheck.experiments.features import feature_run

    pick_on = fc.datasets.ioi(fc_model, n=32, seed=fc_session_seed + 10)
    pick_off = fc.datasets.factual_recall(fc_model, n=32, seed=fc_session_seed + 10)
    on_max = feature_run(field, pick_on, sae).f["clean"][:, 1:].max(1).values.numpy()
    off_max = feature_run(field, pick_off, sae).f["clean"][:, 1:].max(1).values.numpy()
    latent = int(np.argmax((on_max > 0).mean(0) - (off_max > 0).mean(0)))
    sel = field.selectivity(sae, latent, fc.datasets.ioi(fc_model, n=32, seed=fc_session_seed + 11),
                            fc.datasets.factual_recall(fc_model, n=32, seed=fc_session_seed + 11))
    fc.assert_selective(sel, rate_on > 0.8, rate_off < 0.2, auroc > 0.9)
