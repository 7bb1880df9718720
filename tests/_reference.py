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


def central_difference(f, ds, l: int, t: int, d, eps: float = 1e-5):
    """``[batch]`` central difference of the logit difference at END when ``phi(l, t)`` of the
    corrupted run moves by ``+-eps * d`` (``d``: ``[batch, d_model]``), run through the engine's
    functional blocks l..L-1: the reference for sensitivities."""
    from fieldcheck.experiments.response import _metric_at_end
    from fieldcheck.field.metrics import as_metric

    r, fm, met = f.run(ds), f.fm, as_metric("logit_diff")

    def val(e):
        x = r.corrupt.resid[l].clone()
        x[:, t] += e * d
        for j in range(l, fm.n_layers):
            x, *_ = fm.block(j, x)
        return _metric_at_end(f, met, r, x)

    return (val(eps) - val(-eps)) / (2 * eps)
