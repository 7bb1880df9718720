"""Displacement transfer: move other prompts toward A's answer with the displacement phi_A - phi_B.

For a contrastive set ``ds_ab`` (A = the clean prompts, B = the corrupted prompts) the displacement at
a site is d_b = phi_A,b(site) - phi_B,b(site). ``transfer`` adds ``alpha * d`` as a source
(:func:`fieldcheck.sources.steer`) at the same site of the *target* prompts' corrupted run
(``field.patch(targets, site, source=steer(d), direction="denoise", alpha=alpha)``) and reads the
metric (the targets' own answer and wrong tokens define "A's answer" for each target).

``pair="mean"`` (default) adds the mean displacement over ds_ab's examples to every target;
``pair="matched"`` adds example b's own displacement to target b (targets must have as many
examples as ds_ab). ``targets`` defaults to ds_ab itself (its corrupted prompts).
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any, Optional

import numpy as np
import torch

from fieldcheck.display import pyplot
from fieldcheck.errors import DatasetError, SiteError, check_choice, check_number
from fieldcheck.field.core import check_dataset
from fieldcheck.jsonable import jsonable, to_numpy
from fieldcheck.field.metrics import as_metric
from fieldcheck.field.sites import Site, as_site_set
from fieldcheck.field.sources import check_alpha, steer

__all__ = ["transfer", "TransferResult", "pair_hash"]


@dataclass
class TransferResult:
    """The effect of adding a displacement phi_A - phi_B at a site into target prompts, per target.

    shift:      ``[batch]`` metric after - metric before (targets' corrupted run); positive = toward
                the targets' answer (A's answer)
    flipped:    ``[batch]`` bool: logit_diff (answer - wrong) was <= 0 before and is > 0 after, i.e. the
                target's preference between its answer and wrong token flips to the answer. Targets that
                already preferred the answer (``eligible`` False) count as not flipped.
    gap_closed: ``[batch]`` shift / (metric on the clean target - metric on the corrupted target)
    before, after: ``[batch]`` the metric before/after; ld_before, ld_after: the logit difference
    rate, rate_ci: flipped.mean() over all targets and its exact (Clopper-Pearson) 95% interval
    """

    site: Site
    alpha: float
    pair: str
    metric: str
    before: np.ndarray
    after: np.ndarray
    clean: np.ndarray
    ld_before: np.ndarray
    ld_after: np.ndarray
    displacement_norm: np.ndarray
    dataset: str = ""
    targets: str = ""
    confidence: float = 0.95
    cost: dict = dc_field(default_factory=dict)
    dataset_hash: str = ""   # identity of the examples: the source set's and the targets' content hashes

    @property
    def n(self) -> int:
        """Number of target examples (the ``batch`` axis)."""
        return int(self.before.size)

    @property
    def shift(self) -> np.ndarray:
        """``[batch]`` metric after minus before adding the displacement (positive: toward the targets' answer)."""
        return self.after - self.before

    @property
    def gap(self) -> np.ndarray:
        """``[batch]`` metric on the clean target minus on the corrupted target (what a full transfer would
        close)."""
        return self.clean - self.before

    @property
    def gap_closed(self) -> np.ndarray:
        """``[batch]`` shift / gap (1 = the displacement closes the whole gap; inf/NaN where the gap is 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.shift / self.gap

    @property
    def eligible(self) -> np.ndarray:
        """``[batch]`` bool: the target preferred the wrong token before (logit difference <= 0), so it can flip."""
        return self.ld_before <= 0

    @property
    def flipped(self) -> np.ndarray:
        """``[batch]`` bool: the target's logit difference was <= 0 before and is > 0 after."""
        return (self.ld_before <= 0) & (self.ld_after > 0)

    @property
    def rate(self) -> float:
        """The flip rate over all targets (targets that already preferred the answer count as not flipped)."""
        return float(self.flipped.mean())

    @property
    def rate_ci(self) -> tuple[float, float]:
        """Clopper-Pearson interval ``(low, high)`` of ``rate`` at the result's ``confidence``."""
        return _binom_ci(int(self.flipped.sum()), self.n, self.confidence)

    @property
    def rate_eligible(self) -> float:
        """The flip rate among the eligible targets only (NaN when none is eligible)."""
        e = self.eligible
        return float(self.flipped[e].mean()) if e.any() else float("nan")

    @property
    def rate_eligible_ci(self) -> tuple[float, float]:
        """Clopper-Pearson interval ``(low, high)`` of ``rate_eligible`` at ``confidence`` (NaN when none is
        eligible)."""
        e = self.eligible
        return _binom_ci(int(self.flipped[e].sum()), int(e.sum()), self.confidence) if e.any() else (np.nan, np.nan)

    def summary(self) -> str:
        """A readable summary: site, source and target sets, alpha, n; mean and median shift, gap closed, flip
        rates with their interval."""
        lo, hi = self.rate_ci
        gc = self.gap_closed
        gcf = gc[np.isfinite(gc)]
        return (f"TransferResult(displacement at {self.site.label} from {self.dataset!r} ({self.pair}, mean |d| "
                f"{float(np.mean(self.displacement_norm)):.3g}) into {self.targets!r}, alpha={self.alpha:g}, "
                f"n={self.n}, metric={self.metric})\n"
                f"  shift mean {float(self.shift.mean()):+.4g} (median {float(np.median(self.shift)):+.4g}); "
                f"gap closed mean {float(gcf.mean()) if gcf.size else float('nan'):.3f}\n"
                f"  flipped to the answer: {int(self.flipped.sum())}/{self.n} = {self.rate:.3f} "
                f"[{lo:.3f}, {hi:.3f}] ({self.confidence:.0%} exact); among the {int(self.eligible.sum())} targets "
                f"that preferred the wrong token: {self.rate_eligible:.3f}")

    __repr__ = summary

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html

        return rich_html(self, self.plot)

    def to_dict(self) -> dict:
        """A JSON-safe dict: settings, per-target
        ``before``/``after``/``clean``/``shift``/``gap_closed``/``flipped`` ``[batch]``, rates with
        intervals, displacement norms and cost."""
        return jsonable({
            "kind": "transfer", "site": self.site.to_dict(), "alpha": self.alpha, "pair": self.pair,
            "metric": self.metric, "dataset": self.dataset, "targets": self.targets, "n": self.n,
            "before": self.before, "after": self.after, "clean": self.clean, "shift": self.shift,
            "gap_closed": self.gap_closed, "ld_before": self.ld_before, "ld_after": self.ld_after,
            "flipped": self.flipped.tolist(), "eligible": self.eligible.tolist(), "rate": self.rate,
            "rate_ci": list(self.rate_ci), "rate_eligible": self.rate_eligible,
            "rate_eligible_ci": list(self.rate_eligible_ci), "confidence": self.confidence,
            "displacement_norm": self.displacement_norm, "cost": self.cost})

    def plot(self, ax=None, bins: int = 20):
        """Histogram of the per-target metric shifts (flipped targets in a second colour)."""
        plt = pyplot()
        fig, ax = (plt.subplots(figsize=(5, 3.5)) if ax is None else (ax.figure, ax))
        s = self.shift
        edges = np.histogram_bin_edges(s, bins=bins)
        ax.hist([s[~self.flipped], s[self.flipped]], bins=edges, stacked=True,
                label=["not flipped", "flipped to the answer"], color=["tab:gray", "tab:green"])
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"shift of {self.metric} (toward the answer > 0)")
        ax.set_ylabel("targets")
        lo, hi = self.rate_ci
        ax.set_title(f"transfer at {self.site.label}, alpha={self.alpha:g}: flip rate {self.rate:.2f} "
                     f"[{lo:.2f}, {hi:.2f}]", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


def _binom_ci(k: int, n: int, confidence: float) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    from scipy.stats import binomtest
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return (float(ci.low), float(ci.high))


def transfer(field, ds_ab, site, targets=None, alpha: float = 1.0, metric="logit_diff", pair: str = "mean",
             confidence: float = 0.95) -> TransferResult:
    """Add the displacement phi_A - phi_B (clean - corrupt of ``ds_ab``) at ``site`` into ``targets``.

    site: one site (resid_pre/resid_mid/resid_post/attn_out/mlp_out/attn_head; its position may be a name,
    resolved per example in ds_ab and in the targets).
    targets: a ContrastiveSet whose corrupted prompts receive the displacement (default: ds_ab).
    pair: "mean" (the mean displacement over ds_ab into every target) or "matched" (example b's own
    displacement into target b).
    Returns a :class:`TransferResult`; ``alpha=0`` gives a shift of exactly 0.
    """
    check_choice("pair", pair, ("mean", "matched"), hint="'mean': the mean displacement into every target, "
                 "'matched': example b's displacement into target b")
    confidence = check_number("confidence", confidence, low=0, high=1, low_open=True, high_open=True,
                              hint="the level of the flip rate's interval, e.g. 0.95")
    alpha = check_alpha(alpha)
    check_dataset(ds_ab, field.model)
    targets = ds_ab if targets is None else targets
    check_dataset(targets, field.model)
    sites = as_site_set(site).resolve(field.n_layers, field.n_heads, ds_ab.seq_len, ds_ab.position_names)
    if len(sites) != 1:
        raise SiteError(f"transfer takes one site, got {len(sites)}; loop over sites for a sweep")
    s = sites[0]
    r = field.run(ds_ab)
    dev = r.metric_pos.device
    pos = ds_ab.position(s.pos).to(dev)
    disp = (field.site_values(r, r.clean, s, pos) - field.site_values(r, r.corrupt, s, pos)).detach()
    if pair == "mean":
        vec = disp.mean(0)
    else:
        if targets.n != ds_ab.n:
            raise DatasetError(f"pair='matched' needs as many targets as ds_ab examples ({ds_ab.n}), got "
                               f"{targets.n}; use pair='mean'")
        vec = disp
    m = as_metric(metric)
    names = [m, as_metric("logit_diff")] if m.name != "logit_diff" else [m]
    res = field.patch(targets, [s], source=steer(vec), direction="denoise", alpha=alpha,
                      metric=names, progress=False)
    main, ld = res[m.name], res["logit_diff"]
    return TransferResult(
        site=s, alpha=alpha, pair=pair, metric=m.name, before=main.baseline_corrupt.copy(),
        after=main.values[0].copy(), clean=main.baseline_clean.copy(), ld_before=ld.baseline_corrupt.copy(),
        ld_after=ld.values[0].copy(), displacement_norm=to_numpy(disp.norm(dim=-1)),
        dataset=getattr(ds_ab, "name", ""), targets=getattr(targets, "name", ""), confidence=confidence,
        cost=dict(main.cost), dataset_hash=pair_hash(ds_ab, targets, pair))


def pair_hash(ds_ab: Any, targets: Any, pair: str) -> str:
    """The identity of a transfer's examples (by which a gating run pairs results): the targets,
    and the source set whose displacements they got (``pair`` "mean" or "matched")."""
    import hashlib

    from fieldcheck.field.results import dataset_hash_of

    a, t = dataset_hash_of(ds_ab), dataset_hash_of(targets)
    if not a or not t:
        return ""
    return hashlib.sha256(f"transfer/{pair}/{a}/{t}".encode()).hexdigest()
