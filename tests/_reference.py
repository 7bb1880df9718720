"""Shared pieces of the tests that compare fieldcheck with TransformerLens's own patching."""
from __future__ import annotations

import numpy as np
import torch


def vals(res) -> np.ndarray:
    """A result's ``values`` as float64 numpy, ``[site, example]``."""
    return np.asarray(torch.as_tensor(res.values).detach().cpu(), dtype=np.float64)


def tl_logit_diff(ds):
    """The logit difference at END as a TransformerLens patching metric on full logits
    ``[batch, pos, d_vocab]`` -> ``[batch]``."""
    end, ans, wrong = ds.positions["END"], ds.answers, ds.wrong

    def logit_diff(logits):
        b = torch.arange(logits.shape[0])
        return logits[b, end, ans] - logits[b, end, wrong]

    return logit_diff
