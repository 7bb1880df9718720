"""Attention, direct logit attribution and the logit lens: which heads read and write the answer.

Three views that need no patching, read from the cached runs of the 64-prompt IOI set
(``ioi_large``, whose clean and corrupted runs the behaviour claims already compute):

* **Attention** (``field.attention``): the weight each head puts from the final position (END)
  on the indirect object (IO). The four heads that attend END -> IO most on the 16-prompt set
  (``ioi``) are the name-mover candidates; the claim checks them on the other 64 prompts.
* **Direct logit attribution** (``field.dla``, clean minus corrupted run, each with its own frozen
  final-norm scale; on Gemma 3 each head's term is its share of the post-normed attention output):
  how much of the logit difference each component writes straight into the logits. It is the
  linear counterpart of the direct-path claim of ``test_paths.py``.
* **Logit lens** (``field.logit_lens``): the residual at END of every layer decoded through the
  final norm and the unembedding.

Head scores (``field.head_scores``) on repeated random tokens test whether the heads that
patching ranks highest for induction (``induction_heads`` in conftest.py) are induction heads by
their attention. Layers are fractions of the model's depth; heads are chosen on one data set and
tested on another.
"""
import pytest

import fieldcheck as fc
from fieldcheck import first_layer, mean, rank, share
from fieldcheck.sites import depth


@pytest.fixture(scope="module")
def end_to_io(field, ioi_large):
    return field.attention(ioi_large, "all", query="END", key="IO")


@pytest.fixture(scope="module")
def name_movers(field, ioi):
    """The four heads with the most attention END -> IO on ``ioi`` (16 prompts)."""
    return field.attention(ioi, "all", query="END", key="IO").top(4)


@pytest.fixture(scope="module")
def direct(field, ioi_large):
    return field.dla(ioi_large, "heads", which="diff")


@pytest.fixture(scope="module")
def lens(field, ioi_large):
    return field.logit_lens(ioi_large, "END")


@pytest.fixture(scope="module")
def head_scores(field, fc_session_seed):
    return field.head_scores(n=48, length=20, seed=fc_session_seed, kinds=["induction"])


def _heads(field, layers):
    return [f"L{l}.H{h}" for l in layers.of(field) for h in range(field.n_heads)]


@pytest.mark.fc_xfail_on("gemma3-270m", reason="measured (seed 0): L12.H3, one of the four heads that attend "
                         "most END -> IO on ioi, puts 0.195 [0.187, 0.204] of its END attention on IO over 64 "
                         "other prompts")
def test_name_movers_attend_from_end_to_the_indirect_object(end_to_io, name_movers):
    """Each of the four heads that attend END -> IO most on the 16-prompt set puts more than a
    quarter of its attention from END on IO, on average over 64 other prompts."""
    fc.assert_attends(end_to_io.select(name_movers), mean > 0.25)


@pytest.mark.xfail(strict=True, reason="measured on SmolLM2: L23.H3 puts 0.054 of its END attention on IO "
                   "(0.62 on S2) although it writes the most of the answer directly (DLA +2.2 of 3.7)")
def test_the_strongest_direct_writer_attends_to_the_indirect_object(end_to_io, direct):
    """(A false claim, kept to show that it fails.) The head with the largest direct effect on
    the logit difference is a name mover: it attends from END to IO."""
    (label,) = direct.top(1, by="value")
    l, h = (int(x) for x in label[1:].split(".H"))
    fc.assert_attends(end_to_io.select([(l, h)]), mean > 0.25)


def test_late_heads_write_the_answer_directly_early_heads_do_not(field, direct):
    """The heads of the second half of the layers write more than half of the clean-corrupt logit
    difference straight into the logits; the heads of the first third write less than a tenth."""
    fc.assert_direct_effect(direct.select(_heads(field, depth(0.5, 1.0))), share > 0.5)
    fc.assert_direct_effect(direct.select(_heads(field, depth(0.0, 0.33))), share < 0.1)


@pytest.mark.fc_xfail_on("gemma3-270m", reason="measured (seed 0): L9.H3, second by patching, has induction "
                         "score 0.073 [0.067, 0.079] on repeated random tokens")
def test_heads_found_by_patching_are_induction_heads(head_scores, induction_heads):
    """The two heads whose outputs at END recover most of the induction answer (patching, on the
    induction prompts) attend from each token of a repeated random sequence to the token after its
    earlier copy: induction score > 0.25."""
    top = [(s.layer, s.head) for s, _ in induction_heads[:2]]
    fc.assert_attends(head_scores.of("induction", top), mean > 0.25)


@pytest.mark.xfail(strict=True, reason="measured on SmolLM2: L29.H1 (4th by patching) has induction score "
                   "0.002; it carries the induction answer at END without an induction attention pattern")
def test_every_head_found_by_patching_is_an_induction_head(head_scores, induction_heads):
    """(A false claim, kept to show that it fails.) All five heads that patching ranks highest
    for the induction answer are induction heads by their attention."""
    top = [(s.layer, s.head) for s, _ in induction_heads[:5]]
    fc.assert_attends(head_scores.of("induction", top), mean > 0.25)


@pytest.mark.fc_xfail_on("qwen2.5-coder-0.5b", reason="measured (seed 0): lens logit diff at END, layer 19 of "
                         "24, 1.20 [0.57, 1.84]: above 1 on average but not shown")
def test_answer_readable_at_end_after_the_crossover(field, lens):
    """Decoded with the logit lens, END's residual prefers IO to S by more than one logit at 80% of
    the depth (after the S2 -> END crossover band of test_ioi_localization)."""
    fc.assert_prefers(lens.logit_diff[depth(0.8).of(field)[0]], mean > 1.0)


@pytest.mark.fc_xfail_on("gemma3-270m", reason="measured (seed 0): the answer leads from layer 14.2 [13.8, 14.7] "
                         "on average (median 13) of 18: Gemma 3's lens reads it four blocks before the output")
@pytest.mark.fc_xfail_on("qwen2.5-coder-0.5b", reason="measured (seed 0): first layer 22.95 [22.79, 23.12] against "
                         "a bar of 23 (median 23 of 24): on a few prompts the answer leads from layer 22")
def test_answer_becomes_the_top_token_only_at_the_output(field, lens):
    """The answer is the top token of the final residual (median rank 0), but the first layer from
    which it stays the top token is the output itself or the last block: the last block lifts it
    above the rest of the vocabulary (first_layer with leads='top1' >= n_layers - 1)."""
    fc.assert_readable(lens, rank(layer=-1) < 1, first_layer >= field.n_layers - 1, leads="top1")
