"""Sources: what an intervention inserts into the field at a site.

Every source is applied as ``phi <- phi + alpha * delta``:

- ``other()`` (the default): activation patching. ``delta = phi_other_run - phi``: with
  ``alpha = 1`` the value is *replaced* by the other run's value. In a joint patch, ``phi`` is the
  value in the patched run itself, so replacement semantics hold along a light cone as in
  TransformerLens.
- ``zero()``: zero ablation, ``delta = -phi``.
- ``mean()``: mean ablation, ``delta = mean_over_examples(phi_target_run) - phi``;
  ``mean(by="template")``: grouped (per-template) mean ablation, the mean over the examples that
  share the example's ``example_meta["template"]``.
- ``gaussian(scale, seed)``: additive noise ``delta ~ N(0, scale^2 I)``, seeded per site.
- ``steer(vector)``: an additive direction (``[d]`` or ``[batch, d]``) -- a steering vector or a
  displacement between prompts.

``as_source`` accepts these objects, the strings ``"other"``, ``"zero"``, ``"mean"``, or a tensor
(taken as ``steer(tensor)``).
"""
from __future__ import annotations

import hashlib
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Optional

import torch

from fieldcheck.errors import DatasetError, SourceError, check_int


@dataclass(frozen=True)
class Source:
    kind: str
    scale: float = 0.0
    seed: int = 0
    vector: Optional[torch.Tensor] = None
    by: Optional[str] = None

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
        if self.kind == "mean" and self.by is not None:
            return f"mean(by={self.by})"
        return self.kind


def other() -> Source:
    """The default source, activation patching: delta = the other run's value - phi, so alpha = 1 replaces the
    value (the clean value into the corrupted run when denoising)."""
    return Source("other")


def zero() -> Source:
    """Zero ablation: delta = -phi (alpha = 1 sets the activation to 0)."""
    return Source("zero")


def mean(by: Optional[str] = None) -> Source:
    """Mean ablation: delta = the mean of phi over the target run's examples - phi. ``by``: None (the mean
    over every example) or a key of the data set's ``example_meta`` (``"template"`` for the built-in
    sets): each example then gets the mean over the examples that share its value (grouped, per-template
    mean ablation). Also an ``ablation=`` of the circuit methods."""
    if by is not None and (not isinstance(by, str) or not by):
        raise SourceError(f"mean(by=...) takes a key of the data set's example_meta such as 'template', got {by!r}")
    return Source("mean", by=by)


def example_groups(ds, by: str) -> torch.Tensor:
    """``[batch]`` group index of each example of ``ds`` by ``ds.example_meta[i][by]`` (groups numbered in
    order of first appearance). DatasetError naming the examples without the key; a UserWarning when a
    group has one example (its mean is the example itself: mean ablation changes nothing there)."""
    metas = getattr(ds, "example_meta", None) or [{} for _ in range(ds.n)]
    missing = [i for i, m in enumerate(metas) if by not in (m or {})]
    if missing:
        keys = sorted({k for m in metas for k in (m or {})})
        raise DatasetError(f"mean(by={by!r}): example(s) {missing[:5]} of {getattr(ds, 'name', 'the data set')!r} "
                           f"have no example_meta[{by!r}] (keys present: {keys or 'none'}); give every example one, "
                           "e.g. ContrastiveSet.from_pairs(..., example_meta=[{'template': 0}, ...])")
    ids: dict = {}
    groups = torch.tensor([ids.setdefault(repr(m[by]), len(ids)) for m in metas], dtype=torch.long)
    counts = torch.bincount(groups)
    if (counts == 1).any():
        lone = [k for k, i in ids.items() if counts[i] == 1]
        warnings.warn(f"mean(by={by!r}): {len(lone)} of {len(ids)} groups have one example ({', '.join(lone[:4])}): "
                      "their mean is the example itself, so mean ablation changes nothing there", UserWarning,
                      stacklevel=3)
    return groups


def group_mean(x: torch.Tensor, groups: Optional[torch.Tensor]) -> torch.Tensor:
    """``[batch, ...]``: each example replaced by the mean over its group (``groups [batch]``), or over every
    example when ``groups`` is None."""
    if groups is None:
        return x.mean(0, keepdim=True).expand_as(x)
    if not isinstance(groups, torch.Tensor) or groups.shape != x.shape[:1] or groups.is_floating_point() \
            or bool((groups < 0).any()):
        raise SourceError(f"group_mean: groups must be one group index >= 0 per example ([batch] = "
                          f"[{x.shape[0]}] ints, from example_groups(ds, by)), got "
                          f"{tuple(groups.shape) if isinstance(groups, torch.Tensor) else groups!r}")
    g = groups.to(x.device)
    G = int(g.max()) + 1
    sums = torch.zeros((G,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device).index_add_(0, g, x)
    counts = torch.bincount(g, minlength=G).to(x.dtype).reshape((G,) + (1,) * (x.ndim - 1))
    return (sums / counts)[g]


def gaussian(scale: float, seed: int = 0) -> Source:
    """Additive Gaussian noise delta ~ N(0, scale^2 I), seeded per site by ``seed`` (the same site and seed give
    the same draw); SourceError for a negative or non-finite ``scale``."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise SourceError(f"gaussian: scale must be a finite number >= 0, got {scale!r}")
    seed = check_int("seed", seed, low=0, error=SourceError)
    return Source("gaussian", scale=float(scale), seed=seed)


def steer(vector) -> Source:
    """An additive direction: ``vector`` ``[d_model]`` (the same for every example) or ``[batch, d_model]`` (per
    example), e.g. a steering vector or a displacement between prompts; SourceError for another shape or
    NaN/inf."""
    try:
        v = torch.as_tensor(vector)
    except (TypeError, ValueError, RuntimeError):
        raise SourceError(f"a steering vector must be numbers [d_model] or [batch, d_model], got "
                          f"{type(vector).__name__}") from None
    if v.dtype == torch.bool or v.numel() == 0:
        raise SourceError(f"a steering vector must be non-empty numbers [d_model] or [batch, d_model], got "
                          f"{v.dtype} of shape {tuple(v.shape)}")
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
    if isinstance(alpha, (str, bytes, bool)):  # float("1") would accept a text; True is not a scale
        raise SourceError(f"alpha must be a number, got {alpha!r}")
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise SourceError(f"alpha must be a number, got {alpha!r}") from None
    if not math.isfinite(a):
        raise SourceError(f"alpha must be finite, got {alpha!r}; use a value such as 1.0 (full patch) or 0.1")
    return a


def noise_for(source: Source, site_label: str, shape, dtype, device) -> torch.Tensor:
    """Seeded Gaussian noise for one site: the same site and seed give the same draw in any order.
    ``shape``: the tensor's shape (non-negative ints); SourceError otherwise or for a non-gaussian source."""
    if not isinstance(source, Source) or source.kind != "gaussian":
        raise SourceError(f"noise_for needs a gaussian(scale) source, got {source!r}")
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise SourceError(f"noise_for: shape must be a tuple of sizes >= 0, got {shape!r}")
    h = int.from_bytes(hashlib.sha256(f"{source.seed}:{site_label}".encode()).digest()[:8], "little")
    g = torch.Generator(device="cpu").manual_seed(h)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * source.scale).to(dtype=dtype, device=device)
