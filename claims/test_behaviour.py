"""Behaviour: does the model actually do the tasks the other claims dissect?

Every mechanistic claim in this suite patches activations to explain *why* the model prefers
the indirect object in IOI prompts, the right attribute in factual recall and the repeated
token in induction sequences. Those explanations are empty unless the behaviour is there, so
these claims come first: on the built-in data sets the clean prompts' logit difference
(answer minus wrong answer at the final position) is positive on nearly every example and
large on average. Only forward passes; the runs are cached by the session's field and reused
by every later claim on the same data sets. Rates use the Clopper-Pearson bound, so a bar of
0.85 needs at least 19 examples even if all agree, and a p-value small enough to survive the
session's Holm correction needs more: the rate claims use the 64-prompt IOI and 48-prompt
factual sets (measured on SmolLM2: rates 0.984 and 1.0; with a bar of 0.9 the IOI rate's exact
p-value, 0.0096, does not survive Holm over the ~40 p-values of the suite). Gemma 3 and Qwen2.5
prefer the answer on every prompt of all three sets.
"""
import fieldcheck as fc
from fieldcheck import mean, rate


def test_ioi_prefers_indirect_object(field, ioi_large):
    """On IOI prompts the model ranks the indirect object above the subject on more than 85%
    of prompts, by more than 2 logits on average."""
    ld = field.metric_values(ioi_large, "logit_diff", "clean")
    fc.assert_prefers(ld, rate > 0.85, mean > 2.0)


def test_factual_recall_prefers_attribute(field, facts_large):
    """On factual-recall prompts the model ranks the subject's attribute above another
    subject's attribute on more than 85% of prompts, by more than 5 logits on average."""
    ld = field.metric_values(facts_large, "logit_diff", "clean")
    fc.assert_prefers(ld, rate > 0.85, mean > 5.0)


def test_induction_prefers_repeated_token(field, induction):
    """On repeated random word sequences the model predicts the next word of the repetition
    over an unseen word by more than 2 logits on average."""
    ld = field.metric_values(induction, "logit_diff", "clean")
    fc.assert_prefers(ld, mean > 2.0)
