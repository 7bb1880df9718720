"""Half precision: where a forward or backward pass stops being finite, named by its TransformerLens
hook, and the error that says so (never a NaN that turns into a wrong number downstream).

Checks cost one reduction at the end of a pass (``torch.isfinite(...).all()``); only when it fails
are the stages walked in order to find the first one that is not finite.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional

import torch

from fieldcheck.errors import NumericalError

HALF = (torch.float16, torch.bfloat16)

#: stage kind -> TransformerLens hook name of layer ``l``
_HOOKS = {"resid_pre": "blocks.{l}.hook_resid_pre", "z": "blocks.{l}.attn.hook_z",
          "attn_out": "blocks.{l}.hook_attn_out", "resid_mid": "blocks.{l}.hook_resid_mid",
          "mlp_out": "blocks.{l}.hook_mlp_out", "resid_post": "blocks.{l}.hook_resid_post"}


def hook_name(kind: str, layer: int) -> str:
    """The TransformerLens hook of a stage: ``hook_name("resid_mid", 3)`` -> ``blocks.3.hook_resid_mid``."""
    return _HOOKS[kind].format(l=layer)


def cache_stages(cache) -> Iterator[tuple[str, torch.Tensor]]:
    """(hook name, activation ``[batch, ...]``) of a cached run (``RunCache``), in forward order."""
    L = cache.mid.shape[0]
    for l in range(L):
        yield hook_name("resid_pre", l), cache.resid[l]
        yield hook_name("z", l), cache.z[l]
        yield hook_name("resid_mid", l), cache.mid[l]
    yield hook_name("resid_post", L - 1), cache.resid[L]


def first_nonfinite(stages: Iterable[tuple[str, torch.Tensor]]) -> Optional[tuple[str, list[int], float]]:
    """The first stage with a NaN or inf: (its name, the examples (first axis) affected, the
    largest finite |value| of the stage before it), or None when every stage is finite."""
    before = 0.0
    for name, t in stages:
        bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(-1)
        if bool(bad.any()):
            return name, bad.nonzero().flatten().tolist(), before
        before = float(t.abs().amax()) if t.numel() else 0.0
    return None


def nonfinite_error(context: str, where: str, examples: list[int], dtype: torch.dtype,
                    before: Optional[float] = None) -> NumericalError:
    """A :class:`NumericalError` naming what stopped being finite, where, and what to do."""
    dt = str(dtype).removeprefix("torch.")
    ex = ", ".join(str(e) for e in examples[:8]) + (", ..." if len(examples) > 8 else "")
    if dtype in HALF:
        limit = torch.finfo(dtype).max
        seen = "" if before is None else f"; the largest |value| just before it was {before:.4g}"
        fix = ("run the model in bfloat16 (the range of float32) or float32" if dtype == torch.float16
               else "run the model in float32")
        hint = (f"{dt} overflowed (it holds at most {limit:.4g}{seen}): {fix} "
                f"(--fc-dtype, or fieldcheck.load_model(spec, dtype=...))")
    else:
        hint = "the model's weights or this input produce it (not a precision problem of float32)"
    return NumericalError(f"{context} is NaN or inf from {where} on (example(s) {ex}, {dt}): {hint}")


def check_cache(cache, context: str) -> None:
    """Raise :func:`nonfinite_error` when the cached run's final residual is not finite."""
    if bool(torch.isfinite(cache.resid[-1]).all()):
        return
    found = first_nonfinite(cache_stages(cache))
    where, ex, before = found if found is not None else ("the final residual", [], None)
    raise nonfinite_error(context, where, ex, cache.resid.dtype, before)


def check_grads(grads: dict, context: str, dtype: torch.dtype) -> None:
    """``grads``: ``{"resid": [L+1, batch, ...], ...}`` of a backward pass. The backward pass runs
    from the last layer down, so the first non-finite gradient is the highest layer's."""
    res = grads["resid"]
    if bool(torch.isfinite(res).all()):
        return
    L = res.shape[0] - 1
    stages = [(f"the gradient at {hook_name('resid_pre', l) if l < L else hook_name('resid_post', L - 1)}",
               res[l]) for l in range(L, -1, -1)]
    found = first_nonfinite(stages)
    where, ex, before = found if found is not None else ("the gradients", [], None)
    raise nonfinite_error(context, where, ex, dtype, before)
