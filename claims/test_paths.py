"""Path patching: which components carry the IOI answer straight into the logits.

Path patching (Goldowsky-Dill et al.; Wang et al.'s IOI circuit) patches only the effect that
flows from sender components into receiver inputs, with every other path frozen at the
corrupted run. Here the receiver is the final residual stream (what the unembedding reads), and
the senders are attention heads at the final position: the claim is that the heads of the second
half of the model write the indirect object's name into the final residual directly (name
movers), while the heads of its first third carry almost nothing there directly.
"""
import pytest

import fieldcheck as fc
from fieldcheck import recovered
from fieldcheck.sites import attn_head, depth


@pytest.fixture(scope="module")
def late_heads_direct(field, ioi):
    return field.path_patch(ioi, attn_head(depth(0.5, 1.0), "all", "END"), "final")


def test_late_heads_carry_the_answer_directly_into_the_logits(late_heads_direct):
    """The direct path from the END-position heads of the second half of the layers to the final
    residual recovers more than 60% of the clean logit difference."""
    fc.assert_path_effect(late_heads_direct, recovered > 0.6)


def test_early_heads_carry_almost_nothing_directly(field, ioi):
    """The direct path from the END-position heads of the first third of the layers to the final
    residual recovers less than 10% of the clean logit difference: what they do reaches the logits
    through later layers, if at all."""
    early = field.path_patch(ioi, attn_head(depth(0.0, 0.33), "all", "END"), "final")
    fc.assert_path_effect(early, recovered < 0.1)
