"""Quantities that both an experiment and the claim language compute, defined once below both
(numpy only, no torch): the experiments report them, the assertions decide criteria on them.
"""
from __future__ import annotations

import numpy as np


def alpha_star_of(alphas: np.ndarray, me: np.ndarray, ml: np.ndarray, tol: float, tiny: float) -> np.ndarray:
    """The largest scale alpha* up to which the response stays linear.

    alphas: the scales ``[n_alpha]``, ascending. me, ml: mean effects and mean linear (tangent)
    predictions ``[..., n_alpha]`` (leading axes: e.g. bootstrap resamples). tol: the largest
    relative deviation ``|me - ml| / max(|ml|, tiny)`` that counts as linear (alpha = 0 always
    counts). tiny: the floor of the denominator. Returns alpha* ``[...]``: the largest alpha such
    that every alpha' <= alpha is linear, 0.0 when the smallest non-zero alpha already deviates.
    Used by ``Sweep.linear_regime`` and ``fc.assert_linear_regime``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        dev = np.abs(me - ml) / np.maximum(np.abs(ml), tiny)
    ok = (dev <= tol) | (alphas == 0)
    run = np.logical_and.accumulate(ok, axis=-1).sum(-1)
    return np.where(run > 0, alphas[np.maximum(run - 1, 0)], 0.0)
