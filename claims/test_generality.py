"""Generality: do the IOI findings hold for every prompt, not just on average?

The other IOI claims are statements about means over a fixed data set. Here hypothesis draws
single IOI examples (template, names, place, object; ``fieldcheck.strategies.ioi_examples``,
filtered for the tokenizer so every draw is valid) and checks a property on each; a
counterexample of the true claim would be shrunk toward the first template and the first names
of the word lists and printed with its prompt. Draws are derandomized (the same 25 examples on every run, no example
database) so the claims are reproducible. Measured on SmolLM2's 64 built-in prompts: the corruption
lowers the logit difference on every prompt (smallest drop 0.50), denoising END at layer 26 (87%)
recovers at least 0.66 of each prompt's drop, but the clean logit difference itself is often
small (below 2 logits on 16% of the 64 prompts, below 1 on 11%, negative on one), although its
mean is 3.9: "the model prefers the IO by more than two logits on every prompt" is false and
kept as a strict xfail, where hypothesis stops at the first counterexample (not shrunk: that
would cost hundreds of forward passes). The model is
taken from ``field.model`` inside the test (not the ``fc_model`` fixture as a test argument:
hypothesis prints the arguments of a falsifying call, and the model's repr is 200 kB).
"""
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from fieldcheck.sites import depth, resid_pre
from fieldcheck.strategies import ioi_examples

DRAWS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# a claim that is false by design stops at its first counterexample: shrinking it would re-run the
# model on hundreds of smaller prompts to simplify what is already a counterexample (54 s of the
# suite on SmolLM2); the counterexample is printed with its prompt all the same
FIRST_COUNTEREXAMPLE = settings(DRAWS, phases=[Phase.explicit, Phase.generate])


@DRAWS
@given(data=st.data())
def test_end_late_recovers_each_prompt(data, field):
    """On every drawn IOI prompt the S2 corruption lowers the logit difference, and denoising
    the final position's residual at 87% of the depth recovers more than half of that prompt's drop."""
    ex = data.draw(ioi_examples(field.model), label="example")
    r = field.patch(ex, resid_pre(depth(0.87), "END"))
    clean, corrupt, patched = float(r.baseline_clean[0]), float(r.baseline_corrupt[0]), float(r.values[0, 0])
    assert clean - corrupt > 0, f"the corruption does not lower the logit difference: {clean:.3f} -> {corrupt:.3f}"
    frac = (patched - corrupt) / (clean - corrupt)
    assert frac > 0.5, f"END at 87% of the depth recovers only {frac:.3f} (clean {clean:.3f}, corrupt {corrupt:.3f}, patched {patched:.3f})"


@pytest.mark.fc_xfail_on("smollm2-135m", reason="measured: the clean logit difference is below 2 on 10 of "
                         "64 built-in prompts (16%; mean 3.9); hypothesis finds such a prompt", strict=True)
@pytest.mark.fc_xfail_on("qwen2.5-coder-0.5b", reason="measured (grid, seed 0): hypothesis finds a prompt with a "
                         "clean logit difference below 2", strict=True)
@FIRST_COUNTEREXAMPLE
@given(data=st.data())
def test_prefers_io_by_two_logits_on_every_prompt(data, field):
    """(A false claim, kept to show that it fails.) On every drawn IOI prompt the model ranks the
    indirect object above the subject by more than two logits."""
    ex = data.draw(ioi_examples(field.model), label="example")
    ld = float(field.metric_values(ex)[0])
    assert ld > 2.0, f"logit difference {ld:.3f} on {ex!r}"
