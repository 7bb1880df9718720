"""PatchResult: the metric after patching each site, per example, with both baselines."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from fieldcheck.jsonable import jsonable as _jsonable, to_numpy
from fieldcheck.errors import SiteError, UsageError, check_choice, check_int
from fieldcheck.field.sites import Site


@dataclass
class PatchResult:
    """Metric values after patching, ``values [n_sites, batch]``.

    ``direction``: "denoise" (clean source into the corrupted run: sufficiency) or "noise"
    (corrupted source into the clean run: necessity). ``effect`` = values - the target run's
    baseline; ``normalized`` maps the corrupted baseline to 0 and the clean one to 1. A joint
    patch (``jointly=True``) has one row and lists every site it patched in ``sites``.
    ``predicted`` marks a first-order (or integrated) prediction rather than a real patch.
    """

    sites: list[Site]
    values: np.ndarray
    baseline_clean: np.ndarray
    baseline_corrupt: np.ndarray
    direction: str = "denoise"
    metric: str = "logit_diff"
    jointly: bool = False
    alpha: float = 1.0
    source: str = "other"
    dataset: str = ""
    method: str = "patch"
    cost: dict[str, Any] = field(default_factory=dict)
    skipped: Optional[np.ndarray] = None  # [n_sites, batch] True where the source was exactly zero
    dataset_hash: str = ""  # content hash of the data set (ContrastiveSet.content_hash): the examples' identity

    def __post_init__(self):
        try:
            self.values = to_numpy(self.values)
            self.baseline_clean = to_numpy(self.baseline_clean)
            self.baseline_corrupt = to_numpy(self.baseline_corrupt)
        except (TypeError, ValueError) as e:
            raise UsageError(f"PatchResult: values and baselines must be numbers ({e})") from None
        v = self.values
        if v.ndim != 2:
            raise UsageError(f"PatchResult: values must be [n_sites, batch], got shape {v.shape}")
        for name in ("baseline_clean", "baseline_corrupt"):
            b = getattr(self, name)
            if b.shape != (v.shape[1],):
                raise UsageError(f"PatchResult: {name} must be [batch] = ({v.shape[1]},) like the values' examples, "
                                 f"got shape {b.shape}")
        rows = 1 if self.jointly else len(self.sites)
        if v.shape[0] != rows:
            raise UsageError(f"PatchResult: values has {v.shape[0]} rows for {len(self.sites)} sites"
                             f"{' patched jointly (one row)' if self.jointly else ''}; the shape must match the sites")
        check_choice("direction", self.direction, ("denoise", "noise"))
        if self.skipped is not None and np.shape(self.skipped) != v.shape:
            raise UsageError(f"PatchResult: skipped must have the values' shape {v.shape}, got {np.shape(self.skipped)}")

    # --- derived ---------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of examples (the ``batch`` axis of ``values``)."""
        return self.values.shape[1]

    @property
    def baseline_target(self) -> np.ndarray:
        """``[batch]`` the metric of the run patched into: the corrupted run for "denoise", the clean run for
        "noise"."""
        return self.baseline_corrupt if self.direction == "denoise" else self.baseline_clean

    @property
    def effect(self) -> np.ndarray:
        """``[n_sites, batch]``: metric after the patch minus the target run's metric."""
        return self.values - self.baseline_target[None]

    @property
    def normalized(self) -> np.ndarray:
        """``[n_sites, batch]``: 0 at the corrupted baseline, 1 at the clean baseline."""
        gap = self.baseline_clean - self.baseline_corrupt
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.values - self.baseline_corrupt[None]) / gap[None]

    @property
    def mean_effect(self) -> np.ndarray:
        """``[n_sites]`` the effect averaged over the examples."""
        return self.effect.mean(axis=1)

    @property
    def labels(self) -> list[str]:
        """Site labels (``"L20.resid_pre@END"``, ``"L3.H2@IO"``, ...), one per row of ``values``; a joint patch has one label
        naming its sites."""
        if self.jointly:
            return ["joint(" + ", ".join(s.label for s in self.sites[:4]) + (", ..." if len(self.sites) > 4 else "") + ")"]
        return [s.label for s in self.sites]

    def select(self, keep) -> "PatchResult":
        """The sites for which ``keep(site)`` is true, as a PatchResult of the same run
        (values, skipped and every other field carried over). ``keep``: a function of a
        :class:`~fieldcheck.sites.Site` (``lambda s: s.layer >= 20``). SiteError when it keeps no
        site (the message lists the layers and positions the result has: a claim written for a
        deeper model selects layers that do not exist); UsageError for a joint patch."""
        if self.jointly:
            raise UsageError("select(keep): a joint patch has one row for all its sites; select sites before "
                             "patching")
        if not callable(keep):
            raise UsageError(f"select(keep): keep must be a function of a Site, e.g. lambda s: s.layer >= 20; "
                             f"got {keep!r}")
        idx = [i for i, s in enumerate(self.sites) if keep(s)]
        if not idx:
            raise SiteError(f"select(keep) kept no site of the {len(self.sites)}: this result has "
                            f"{_describe_sites(self.sites)}")
        return dataclasses.replace(self, sites=[self.sites[i] for i in idx], values=self.values[idx],
                                   skipped=None if self.skipped is None else self.skipped[idx])

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k sites with the largest mean |effect|, as (label, mean effect) (fewer when the result
        has fewer rows)."""
        k = check_int("k", k, low=0)
        m = self.mean_effect
        order = np.argsort(-np.abs(m))[:k]
        return [(self.labels[i], float(m[i])) for i in order]

    # --- grids and pictures -------------------------------------------------------------
    def grid(self, stat: str = "effect") -> tuple[np.ndarray, list, list, str, str]:
        """Mean ``stat`` ("effect", "normalized", "values") on a 2-D grid.

        Returns (grid, row labels, column labels, row axis name, column axis name): layer x position
        for residual sites, layer x head for head sites at a single position.
        """
        check_choice("stat", stat, ("effect", "normalized", "values"))
        vals = getattr(self, stat).mean(axis=1)
        layers = sorted({s.layer for s in self.sites})
        heads = sorted({s.head for s in self.sites if s.head is not None})
        positions = list(dict.fromkeys(s.pos for s in self.sites))
        if heads and len(positions) == 1:
            cols, key, cname = heads, (lambda s: s.head), "head"
        else:
            cols, key, cname = positions, (lambda s: s.pos), "position"
        g = np.full((len(layers), len(cols)), np.nan)
        acc: dict = {}
        for s, v in zip(self.sites, vals):
            acc.setdefault((layers.index(s.layer), cols.index(key(s))), []).append(v)
        for (i, j), vs in acc.items():
            g[i, j] = float(np.sum(vs)) if cname == "position" and heads else float(np.mean(vs))
        return g, layers, cols, "layer", cname

    def heatmap(self, stat: str = "normalized", ax=None, title: Optional[str] = None, tokens: Optional[list[str]] = None):
        """A layer x position (or layer x head) heatmap of the mean ``stat``; returns the matplotlib Figure."""
        from fieldcheck.display import pyplot

        plt = pyplot()

        g, rows, cols, rname, cname = self.grid(stat)
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(cols) + 2), max(3, 0.22 * len(rows) + 1.5)))
        else:
            fig = ax.figure
        lim = np.nanmax(np.abs(g)) if np.isfinite(g).any() else 1.0
        im = ax.imshow(g, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower", interpolation="nearest")
        ax.set_ylabel(rname)
        ax.set_xlabel(cname)
        ax.set_xticks(range(len(cols)))
        xt = [tokens[c] if tokens is not None and isinstance(c, int) and c < len(tokens) else str(c) for c in cols]
        ax.set_xticklabels(xt, rotation=90 if tokens else 0, fontsize=7)
        step = max(1, len(rows) // 15)
        ax.set_yticks(range(0, len(rows), step))
        ax.set_yticklabels([str(r) for r in rows][::step], fontsize=7)
        fig.colorbar(im, ax=ax, label=f"mean {stat}")
        ax.set_title(title or f"{self.direction} {self.metric} ({self.method}, n={self.n})", fontsize=9)
        fig.tight_layout()
        return fig

    # --- export -----------------------------------------------------------------------
    def to_dataframe(self):
        """One row per (site, example): site label, kind, layer, pos, head, example, value, effect, normalized."""
        import pandas as pd

        eff, norm = self.effect, self.normalized
        recs = []
        for i, label in enumerate(self.labels):
            s = self.sites[i] if not self.jointly else None
            for b in range(self.n):
                recs.append({"site": label, "kind": s.kind if s else "joint", "layer": s.layer if s else None,
                             "pos": s.pos if s else None, "head": s.head if s else None, "example": b,
                             "value": self.values[i, b], "effect": eff[i, b], "normalized": norm[i, b]})
        return pd.DataFrame.from_records(recs)

    def to_dict(self) -> dict:
        """A JSON-safe dict: sites, labels, ``values``/``effect``/``normalized [n_sites, batch]``, both baselines
        ``[batch]``, direction, metric, source, alpha, data set and its hash, method, cost and n."""
        return _jsonable({
            "sites": [s.to_dict() for s in self.sites], "labels": self.labels, "values": self.values,
            "baseline_clean": self.baseline_clean, "baseline_corrupt": self.baseline_corrupt,
            "effect": self.effect, "normalized": self.normalized, "direction": self.direction,
            "metric": self.metric, "jointly": self.jointly, "alpha": self.alpha, "source": self.source,
            "dataset": self.dataset, "dataset_hash": self.dataset_hash, "method": self.method, "cost": self.cost, "n": self.n})

    def summary(self) -> str:
        """A readable two-line summary: method, direction, number of sites, n, metric, source, alpha, the
        clean-corrupt gap and the five largest mean effects."""
        gap = float(np.mean(self.baseline_clean - self.baseline_corrupt))
        head = (f"PatchResult({self.method}, {self.direction}, {len(self.labels)} "
                f"{'joint patch' if self.jointly else 'sites'}, n={self.n}, metric={self.metric}, "
                f"source={self.source}, alpha={self.alpha:g}; clean-corrupt gap {gap:.3g})")
        tops = ", ".join(f"{lab} {v:+.3g}" for lab, v in self.top(5))
        return f"{head}\n  largest mean effects: {tops}"

    __repr__ = summary

    def _repr_html_(self) -> str:
        """Notebook display: the summary and, for a per-site result, its layer x position heatmap."""
        from fieldcheck.display import rich_html

        return rich_html(self, None if self.jointly or len(self.labels) < 2 else self.heatmap)


def _describe_sites(sites: list[Site]) -> str:
    """``"layers 0..29 of resid_pre at positions ['END']"``: what a list of sites covers."""
    by_kind: dict = {}
    for s in sites:
        k = by_kind.setdefault(s.kind, (set(), []))
        k[0].add(s.layer)
        if s.pos not in k[1]:
            k[1].append(s.pos)
    parts = []
    for kind, (layers, pos) in by_kind.items():
        ls = sorted(layers)
        lay = f"{ls[0]}..{ls[-1]}" if len(ls) > 2 and ls == list(range(ls[0], ls[-1] + 1)) else ", ".join(map(str, ls))
        parts.append(f"{kind} at layers {lay} and positions {pos[:8]}{' ...' if len(pos) > 8 else ''}")
    return "; ".join(parts) or "no sites"


def dataset_hash_of(ds: Any) -> str:
    """``ds.content_hash()`` when the data set has one, else ""."""
    try:
        return str(ds.content_hash())
    except Exception:
        return ""
