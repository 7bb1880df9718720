"""Sources: what an intervention inserts into the field at a site.

Every source is applied as ``phi <- phi + alpha * delta``:

- ``other()`` (the default): activation patching. ``delta = phi_other_run - phi``: with
  ``alpha = 1`` the value is *replaced* by the other run's value. In a joint patch, ``phi`` is the
  value in the patched run itself, so replacement semantics hold along a light cone as in
  TransformerLens.
- ``zero()``: zero ablation, ``delta = -phi``.
- ``mean()``: mean ablation, ``delta = mean_over_examples(phi_target_run) - phi``.
- ``gaussian(scale, seed)``: additive noise ``delta ~ N(0, scale^2 I)``, seeded per site.
- ``steer(vector)``: an additive direction (``[d]`` or ``[batch, d]``) -- a steering vector or a
  displacement between prompts.

``as_source`` accepts these objects, the strings ``"other"``, ``"zero"``, ``"mean"``, or a tensor
(taken as ``steer(tensor)``).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Optional

import torch

from fieldcheck.errors import SourceError


@dataclass(frozen=True)
class Source:
    kind: str
    scale: float = 0.0
    seed: int = 0
    vector: Optional[torch.Tensor] = None

    @property
    def replaces(self) -> bool:
        """True when the source sets a value (delta relative to the current phi), False when it adds."""
        return self.kind in ("other", "zero", "mean")

    def describe(self) -> str:
        """A short text for reports: the kind, with scale and seed for gaussian and the norm for steer."""
        if self.kind == "gaussian":
            return f"gaussian(scale={self.scale}, seed={self.seed})"
        if self.kind == "steer":
            return f"steer(|v|={float(self.vector.norm()):.3g})"
        return self.kind


def other() -> Source:
    """The default source, activation patching: delta = the other run's value - phi, so alpha = 1 replaces the
    value (the clean value into the corrupted run when denoising)."""
    return Source("other")


def zero() -> Source:
    """Zero ablation: delta = -phi (alpha = 1 sets the activation to 0)."""
    return Source("zero")


def mean() -> Source:
    """Mean ablation: delta = the mean of phi over the target run's examples - phi."""
    return Source("mean")


def gaussian(scale: float, seed: int = 0) -> Source:
    """Additive Gaussian noise delta ~ N(0, scale^2 I), seeded per site by ``seed`` (the same site and seed give
    the same draw); SourceError for a negative or non-finite ``scale``."""
    if not math.isfinite(scale) or scale < 0:
        raise SourceError(f"gaussian scale must be a finite number >= 0, got {scale!r}")
    return Source("gaussian", scale=float(scale), seed=int(seed))


def steer(vector) -> Source:
    """An additive direction: ``vector`` ``[d_model]`` (the same for every example) or ``[batch, d_model]`` (per
    example), e.g. a steering vector or a displacement between prompts; SourceError for another shape or
    NaN/inf."""
    v = torch.as_tensor(vector)
    if not torch.is_floating_point(v):
        v = v.float()
    if v.ndim not in (1, 2):
        raise SourceError(f"a steering vector must be [d_model] or [batch, d_model], got shape {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise SourceError("the steering vector contains NaN or inf")
    return Source("steer", vector=v)


def as_source(x) -> Source:
    """A Source from ``x``: None (the default, ``other()``), a Source, "other"/"clean"/"corrupt" (``other()``),
    "zero", "mean", or a tensor/array (``steer(x)``); SourceError otherwise."""
    if x is None:
        return other()
    if isinstance(x, Source):
        return x
    if isinstance(x, str):
        table = {"other": other, "clean": other, "corrupt": other, "zero": zero, "mean": mean}
        if x not in table:
            raise SourceError(f"unknown source {x!r}; use 'other' (default), 'zero', 'mean', "
                              "fieldcheck.sources.gaussian(scale), or a tensor to add")
        return table[x]()
    if isinstance(x, torch.Tensor) or hasattr(x, "__array__"):
        return steer(x)
    raise SourceError(f"unknown source {x!r}; use 'other', 'zero', 'mean', gaussian(scale) or a tensor")


def check_alpha(alpha) -> float:
    """``alpha`` as a finite float (the scale in phi + alpha * delta); SourceError naming the value otherwise."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise SourceError(f"alpha must be a number, got {alpha!r}") from None
    if not math.isfinite(a):
        raise SourceError(f"alpha must be finite, got {alpha!r}; use a value such as 1.0 (full patch) or 0.1")
    return a


def noise_for(source: Source, site_label: str, shape, dtype, device) -> torch.Tensor:
    """Seeded Gaussian noise for one site: the same site and seed give the same draw in any order."""
    h = int.from_bytes(hashlib.sha256(f"{source.seed}:{site_label}".encode()).digest()[:8], "little")
    g = torch.Generator(device="cpu").manual_seed(h)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * source.scale).to(dtype=dtype, device=device)
