"""Dictionary features as sources in the field: patching, first-order and integrated attribution,
and feature activations.

A feature site (``fieldcheck.sites.features(sae, latents, positions)``) is latent i of a dictionary
at a position, or at every position together (``positions="all"``). Patching it is a source at the
dictionary's output hook:

    delta(b, t) = (f_i,new(b, t) - f_i,tgt(b, t)) * W_dec[i] * s(b, t)

with ``f`` the feature activations of the target run, ``f_new`` the source run's (``"other"``, the
default: denoising/noising), 0 (``"zero"``), the mean over the target run's examples (``"mean"``),
or ``f_tgt + alpha`` (``"steer"``: adds alpha times the decoder row); ``s`` undoes a per-token input
normalisation (1 for the SAEs fieldcheck trains). The error term (``latent=None``) is a node too:
its delta is the difference of the two runs' errors. Everything else -- the error term of every
other feature, the rest of the field -- is left as it is, so a patch of nothing changes nothing.
Patches run on the light-cone engine (``fieldcheck.field.engine``: one row per site and example,
a source at each position) or, for families it does not know, through full forwards.

Attribution (``predict_features``): the first-order prediction of every such patch from one
forward (from the dictionary's layer, on the cached run) and one backward pass per dictionary,
``sum_t delta(b, t) . dm/dphi(b, t)`` at the hook, or the integrated gradient along the straight
line between the two runs' activations at the hook (``steps`` forward+backward passes per
dictionary, Marks et al. 2024).
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field as dc_field
from typing import Optional, Sequence

import numpy as np
import torch

from fieldcheck.errors import SiteError, SourceError, UsageError
from fieldcheck.field.core import check_dataset
from fieldcheck.field.engine import Injection, LightConeEngine, Row
from fieldcheck.field.metrics import as_metric
from fieldcheck.field.results import PatchResult, dataset_hash_of
from fieldcheck.field.sites import FeatureSite, FeatureSiteSet, Site, site_of_hook
from fieldcheck.field.sources import check_alpha
from fieldcheck.jsonable import jsonable
from fieldcheck.sae.dictionary import Dictionary
from fieldcheck.sae.splice import check_fits, forward_with, hook_values

SOURCES = ("other", "zero", "mean", "steer")

__all__ = ["FeatureRun", "feature_run", "patch_features", "predict_features", "feature_activations",
           "FeatureActivations", "sae_report", "run_sources", "group_delta", "hook_gradients", "resolve_features"]


# --- the dictionaries' view of a data set's two runs ------------------------------------------------
@dataclass
class FeatureRun:
    """One dictionary on one data set: feature activations ``f [batch, pos, d_sae]``, input norms
    ``scale [batch, pos, 1]`` (model-space factor of a decoder row) and error terms ``err [batch, pos,
    d_out]`` for the clean and the corrupted run."""

    dictionary: Dictionary
    f: dict
    scale: dict
    err: dict
    explained_variance: float

    def delta_f(self, direction: str, source: str, alpha: float) -> torch.Tensor:
        """``f_new - f_tgt`` ``[batch, pos, d_sae]`` (times alpha)."""
        if source == "steer":
            return torch.full_like(self.f["clean"], alpha)
        return _source_delta(self.f, direction, source, alpha)

    def delta_err(self, direction: str, source: str, alpha: float) -> torch.Tensor:
        if source == "steer":
            raise SourceError("steering adds a decoder row; an error node has none (patch it with 'other', 'zero' or "
                              "'mean')")
        return _source_delta(self.err, direction, source, alpha)


def _source_delta(vals: dict, direction: str, source: str, alpha: float) -> torch.Tensor:
    """alpha x (new - target) for per-run values ``{"clean": ..., "corrupt": ...}`` ``[batch, pos, ...]``."""
    tgt = vals["corrupt" if direction == "denoise" else "clean"]
    if source == "other":
        return alpha * (vals["clean" if direction == "denoise" else "corrupt"] - tgt)
    if source == "zero":
        return -alpha * tgt
    return alpha * (tgt.mean(0, keepdim=True) - tgt)  # mean


_RUNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _model_name(field) -> str:
    return str((getattr(field.model, "fieldcheck_info", {}) or {}).get("spec", ""))


@torch.no_grad()
def feature_run(field, ds, d: Dictionary) -> FeatureRun:
    """The dictionary's activations on both runs of ``ds`` (cached per field, data set and dictionary)."""
    check_dataset(ds, field.model)
    check_fits(d, field.fm, _model_name(field))
    per_field = _RUNS.setdefault(field, {})
    key = (ds.content_hash(), id(d))
    if key in per_field and per_field[key].dictionary is d:
        return per_field[key]
    r = field.run(ds)
    if d.W_enc.device != field.device:
        d.to(device=field.device)
    f, scale, err, sse, sst = {}, {}, {}, 0.0, 0.0
    for which, cache in (("clean", r.clean), ("corrupt", r.corrupt)):
        x = hook_values(field.fm, cache, d.hook_name)
        xin = d.flatten_input(x).to(d.dtype)
        norm = d.norm(xin)
        f[which] = d.activate(d.pre_activations(xin, norm))
        scale[which] = norm.out_scale.expand(*xin.shape[:-1], 1) if not d.is_transcoder else torch.ones_like(xin[..., :1])
        y = hook_values(field.fm, cache, d.out_hook) if d.is_transcoder else xin
        rec = d.decode(f[which], norm, xin)
        err[which] = y.to(d.dtype) - rec
        e, yy = err[which][:, 1:].double(), y[:, 1:].double()  # BOS left out, as in training
        sse += float((e ** 2).sum())
        sst += float(((yy - yy.reshape(-1, yy.shape[-1]).mean(0)) ** 2).sum())
    run = FeatureRun(d, f, scale, err, 1.0 - sse / max(sst, 1e-30))
    per_field[key] = run
    return run


def sae_report(field, runs: Sequence[FeatureRun]) -> list[dict]:
    """One line of provenance per dictionary: where it was trained, where it is applied, and its
    explained variance (BOS left out) on this data set's clean and corrupted runs."""
    applied = _model_name(field)
    out = []
    for run in runs:
        d = run.dictionary
        out.append({"sae": d.name, "hook": d.hook_name, "trained_on": d.model_name, "applied_to": applied,
                    "other_model": bool(d.model_name and applied and d.model_name != applied),
                    "explained_variance": run.explained_variance,
                    "explained_variance_trained": d.quality.get("explained_variance")})
    return out


# --- resolving feature sites --------------------------------------------------------------------
def resolve_features(field, ds, sites) -> list[FeatureSite]:
    """The FeatureSites of ``sites`` (a FeatureSiteSet, a FeatureSite or a list of them) for ``ds``
    (DatasetError when ``ds`` is not a ContrastiveSet that fits the model)."""
    check_dataset(ds, field.model)
    if isinstance(sites, FeatureSite):
        sites = [sites]
    if isinstance(sites, (list, tuple)) and sites and all(isinstance(s, FeatureSite) for s in sites):
        return list(dict.fromkeys(sites))
    if not isinstance(sites, FeatureSiteSet):
        raise SiteError(f"{sites!r} is not a set of feature sites; name them with fieldcheck.sites.features(sae, ...)")
    return sites.resolve(field.n_layers, field.n_heads, ds.seq_len, ds.position_names)


def _pos_mask(ds, site: FeatureSite, T: int, device) -> torch.Tensor:
    """``[batch, pos]`` booleans: the positions the site covers in each example."""
    m = torch.zeros(ds.n, T, dtype=torch.bool, device=device)
    if site.pos == "all":
        m[:] = True
    else:
        p = ds.position(site.pos).to(device) if isinstance(site.pos, str) else torch.full((ds.n,), int(site.pos), device=device)
        m[torch.arange(ds.n, device=device), p] = True
    return m


def _site_delta(run: FeatureRun, site: FeatureSite, df: Optional[torch.Tensor], derr: Optional[torch.Tensor],
                direction: str) -> torch.Tensor:
    """``[batch, pos, d_out]`` model-space source of one feature site at every position (masked later)."""
    d = run.dictionary
    tgt = "corrupt" if direction == "denoise" else "clean"
    if site.latent is None:
        return derr
    return df[..., site.latent:site.latent + 1] * d.decoder[site.latent] * run.scale[tgt]


def _check_source(source) -> str:
    s = "other" if source in (None, "clean", "corrupt") else source
    if s not in SOURCES:
        raise SourceError(f"feature sources are {', '.join(repr(x) for x in SOURCES)} (got {source!r}): 'other' "
                          "patches the other run's activations, 'zero'/'mean' ablate, 'steer' adds alpha x the "
                          "decoder row")
    return s


# --- patching -----------------------------------------------------------------------------------
def patch_features(field, ds, sites, direction: str = "denoise", source=None, alpha: float = 1.0,
                   jointly: bool = False, metric="logit_diff", engine: Optional[str] = None,
                   progress: Optional[bool] = None):
    """Patch each feature site (or all jointly) and read the metric.

    Returns a PatchResult (a dict metric name -> PatchResult when ``metric`` is a list) whose
    ``sites`` are the FeatureSites, ``values [n_sites, batch]`` (``[1, batch]`` when jointly), and
    whose ``cost["sae"]`` says where each dictionary was trained and how well it reconstructs this
    data set."""
    if direction not in ("denoise", "noise"):
        raise UsageError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    alpha = check_alpha(alpha)
    src = _check_source(source)
    metrics = [as_metric(x) for x in (metric if isinstance(metric, (list, tuple)) else [metric])]
    site_list = resolve_features(field, ds, sites)
    t_start = time.perf_counter()
    runs = {id(d): feature_run(field, ds, d) for d in dict.fromkeys(s.dictionary for s in site_list)}
    T, dev = ds.seq_len, field.device
    deltas = {}
    for key, run in runs.items():
        df = run.delta_f(direction, src, alpha)
        derr = run.delta_err(direction, src, alpha) if any(s.latent is None and id(s.dictionary) == key
                                                          for s in site_list) else None
        deltas[key] = (df, derr)
    groups = [site_list] if jointly else [[s] for s in site_list]

    def sources(gi: int) -> dict:
        return group_delta(groups[gi], runs, deltas, ds, T, dev, direction)

    values, skipped, cost = run_sources(field, ds, direction, len(groups), sources, metrics, engine, progress)
    cost["seconds"] = time.perf_counter() - t_start
    cost["sae"] = sae_report(field, runs.values())
    base = {m.name: field.baselines(ds, m) for m in metrics}
    out = {m.name: PatchResult(sites=site_list, values=values[m.name], baseline_clean=base[m.name][0],
                               baseline_corrupt=base[m.name][1], direction=direction, metric=m.name,
                               jointly=jointly, alpha=alpha, source=f"feature:{src}",
                               dataset=getattr(ds, "name", ""), method="patch", cost=dict(cost),
                               skipped=skipped.copy(), dataset_hash=dataset_hash_of(ds))
           for m in metrics}
    return out if isinstance(metric, (list, tuple)) else out[metrics[0].name]


def group_delta(group, runs, deltas, ds, T, dev, direction) -> dict[str, torch.Tensor]:
    """hook -> summed model-space source ``[batch, pos, d]`` of the feature sites of one patch
    (``runs``: id(dictionary) -> FeatureRun; ``deltas``: id(dictionary) -> (delta_f, delta_err))."""
    out: dict[str, torch.Tensor] = {}
    for s in group:
        run = runs[id(s.dictionary)]
        df, derr = deltas[id(s.dictionary)]
        dl = _site_delta(run, s, df, derr, direction) * _pos_mask(ds, s, T, dev)[..., None]
        h = s.dictionary.out_hook
        out[h] = dl if h not in out else out[h] + dl
    return out


def run_sources(field, ds, direction: str, n_rows: int, sources, metrics, engine: Optional[str] = None,
                progress: Optional[bool] = None):
    """Run ``n_rows`` patched forwards of ``ds``'s target run and read each metric.

    ``sources(i)`` gives row i's additive sources, hook name -> ``[batch, pos, d]`` (hook_z:
    ``[batch, pos, n_heads * d_head]``). Returns ``(values {metric: [n_rows, batch]} float64,
    skipped [n_rows, batch], cost)``: on the light-cone engine one engine row per example whose
    source is not zero (a source at each of its positions; skipped rows keep the target's value),
    else one full forward of every example per row."""
    r = field.run(ds)
    engine = engine or field.engine_name
    if engine not in ("lightcone", "hooks"):
        raise UsageError(f"engine must be 'lightcone' or 'hooks', got {engine!r}")
    tgt_idx = 1 if direction == "denoise" else 0
    values = {m.name: field.baselines(ds, m)[tgt_idx].detach().double().cpu()[None].repeat(n_rows, 1)
              for m in metrics}
    skipped = np.ones((n_rows, ds.n), dtype=bool)
    if getattr(field.fm, "generic", False) or engine == "hooks":
        cost = _patch_full(field, ds, r, n_rows, sources, direction, metrics, values, skipped)
    else:
        cost = _patch_lightcone(field, ds, r, n_rows, sources, direction, metrics, values, skipped, progress)
    return values, skipped, cost


def _patch_lightcone(field, ds, r, n_rows, sources, direction, metrics, values, skipped, progress):
    fm = field.fm
    B, T = ds.n, ds.seq_len
    dev = field.device
    rows, slots = [], []
    metric_pos = r.metric_pos
    for gi in range(n_rows):
        injs: list[list[Injection]] = [[] for _ in range(B)]
        for hook, dl in sources(gi).items():
            kind, layer = site_of_hook(hook)
            stage = Site(kind if kind != "mlp_in" else "mlp_out", layer, 0).stage
            nz = (dl != 0).any(-1) & (torch.arange(T, device=dev)[None] <= metric_pos[:, None])
            for b, t in nz.nonzero().tolist():
                v = dl[b, t].to(r.clean.resid.dtype)
                if kind == "attn_head":
                    for h, vh in enumerate(v.view(fm.n_heads, fm.d_head)):
                        injs[b].append(Injection(stage, t, 1.0, vh, h))
                else:
                    injs[b].append(Injection(stage, t, 1.0, v))
        for b in range(B):
            if injs[b]:
                rows.append(Row(b, injs[b]))
                slots.append((gi, b))
    engine = LightConeEngine(fm, field.memory_budget)
    bar = None
    if (progress if progress is not None else False) and len(rows) > 200:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(rows), desc="fieldcheck feature patches", unit="row", leave=False)
    try:
        if rows:
            x_final = engine.run(r.target(direction), rows, metric_pos, progress=bar)
            ex = torch.tensor([b for _, b in slots], device=dev)
            for m in metrics:
                got = field.metric_on(m, r, x_final, ex).double().cpu()
                for (gi, b), v in zip(slots, got.tolist()):
                    values[m.name][gi, b] = v
            for gi, b in slots:
                skipped[gi, b] = False
    finally:
        if bar is not None:
            bar.close()
    return {"engine": "lightcone", "rows": len(rows), "rows_skipped": int(skipped.sum()),
            "chunks": engine.stats["forwards"], "token_layers": engine.stats["token_layers"]}


def _patch_full(field, ds, r, n_rows, sources, direction, metrics, values, skipped):
    """Families without the light-cone engine (or engine="hooks"): one full forward of every
    example per row."""
    fm = field.fm
    tgt = r.target(direction)
    ex = torch.arange(ds.n, device=field.device)
    with torch.no_grad():
        for gi in range(n_rows):
            edits = {h: (lambda dl: (lambda y, *rest: y + dl.to(y.dtype).reshape(y.shape)))(dl)
                     for h, dl in sources(gi).items()}
            xf = forward_with(fm, tgt.resid[0], edits)
            for m in metrics:
                values[m.name][gi] = field.metric_on(m, r, xf[ex, r.metric_pos], ex).double().cpu()
            skipped[gi] = False
    return {"engine": "full forwards", "forwards": n_rows}


# --- attribution ------------------------------------------------------------------------------
def hook_gradients(field, ds, hooks: Sequence[str], direction: str, metric, method: str = "gradient",
                   steps: int = 8) -> tuple[dict[str, torch.Tensor], dict]:
    """dm/d(activation) ``[batch, pos, d]`` at each hook of the target run.

    ``method="gradient"``: one forward from the hook's layer (the cached run's residual there,
    with the activation at the hook as the leaf) and one backward per hook. ``"integrated"``: the
    gradient averaged over ``steps`` midpoints of the straight line from the target to the source
    run's activation at the hook (``steps`` forward+backward passes per hook)."""
    if method not in ("gradient", "integrated"):
        raise UsageError(f"method must be 'gradient' or 'integrated', got {method!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:  # also where method="gradient" ignores it
        raise UsageError(f"steps must be a positive int, got {steps!r}")
    points = [0.0] if method == "gradient" else [(k + 0.5) / steps for k in range(steps)]
    m = as_metric(metric)
    r = field.run(ds)
    tgt, src = r.target(direction), r.source(direction)
    fm = field.require_functional()
    ex = torch.arange(ds.n, device=field.device)
    out, layers = {}, 0
    for h in hooks:
        kind, l = site_of_hook(h)
        a0 = hook_values(fm, tgt, h)
        a1 = hook_values(fm, src, h) if method == "integrated" else a0
        acc = torch.zeros_like(a0)
        start = l + 1 if kind == "resid_post" else l
        layers += len(points) * (field.n_layers - start)
        for a in points:
            leaf = (a0 + a * (a1 - a0)).detach().requires_grad_(True)
            with torch.enable_grad():
                if kind in ("resid_pre", "resid_post"):
                    xf = forward_with(fm, leaf, {}, start=start)
                else:
                    xf = forward_with(fm, tgt.resid[l], {h: lambda y, *rest: leaf.reshape(y.shape)}, start=start)
                val = field.metric_on(m, r, xf[ex, r.metric_pos], ex)
                (g,) = torch.autograd.grad(val.sum(), leaf)
            acc += g
        out[h] = acc / len(points)
    n = len(points) * len(hooks)
    return out, {"forward": n, "backward": n, "layers_forward": layers}


def predict_features(field, ds, sites, method: str = "gradient", steps: int = 8, direction: str = "denoise",
                     source=None, alpha: float = 1.0, metric="logit_diff") -> PatchResult:
    """The first-order (``method="gradient"``) or integrated prediction of ``patch_features`` for the
    same sites, without patching: ``sum_t delta(b, t) . g(b, t)`` per site and example."""
    alpha = check_alpha(alpha)
    src = _check_source(source)
    m = as_metric(metric)
    site_list = resolve_features(field, ds, sites)
    if method == "integrated" and src != "other":
        raise SourceError("method='integrated' integrates between the two runs; it needs the default source")
    t0 = time.perf_counter()
    runs = {id(d): feature_run(field, ds, d) for d in dict.fromkeys(s.dictionary for s in site_list)}
    hooks = list(dict.fromkeys(s.dictionary.out_hook for s in site_list))
    grads, cost = hook_gradients(field, ds, hooks, direction, m, method, steps)
    base_c, base_k = field.metric_values(ds, m, "clean"), field.metric_values(ds, m, "corrupt")
    target = (base_k if direction == "denoise" else base_c).detach().double().cpu()
    T, dev = ds.seq_len, field.device
    vals = torch.zeros(len(site_list), ds.n, dtype=torch.float64)
    tgt = "corrupt" if direction == "denoise" else "clean"
    per_dict = {}
    for key, run in runs.items():
        d = run.dictionary
        g = grads[d.out_hook].to(d.dtype)
        # every latent at once: (f_new - f_tgt) * (W_dec[i] . g) * s   [batch, pos, d_sae]
        score = run.delta_f(direction, src, alpha) * (g @ d.decoder.T) * run.scale[tgt]
        derr = run.delta_err(direction, src, alpha) if src != "steer" else None
        err = (derr * g).sum(-1) if derr is not None else None
        per_dict[key] = (score, err)
    for i, s in enumerate(site_list):
        score, err = per_dict[id(s.dictionary)]
        mask = _pos_mask(ds, s, T, dev)
        v = err if s.latent is None else score[..., s.latent]
        if v is None:
            raise SourceError("steering adds a decoder row; an error node has none")
        vals[i] = target + (v * mask).sum(-1).double().cpu()
    cost["seconds"] = time.perf_counter() - t0
    cost["sae"] = sae_report(field, runs.values())
    name = f"{method}" + (f"(steps={steps})" if method == "integrated" else "(order=1)")
    return PatchResult(sites=site_list, values=vals, baseline_clean=base_c, baseline_corrupt=base_k,
                       direction=direction, metric=m.name, jointly=False, alpha=alpha, source=f"feature:{src}",
                       dataset=getattr(ds, "name", ""), method=f"predict:{name}", cost=cost,
                       dataset_hash=dataset_hash_of(ds))


# --- activations -------------------------------------------------------------------------------
@dataclass
class FeatureActivations:
    """Activations ``values [batch, pos, n_latents]`` of some latents of a dictionary on one run.

    ``tokens``: the prompts' tokens as strings ``[batch][pos]``; ``at(pos)`` gives ``[batch,
    n_latents]`` at a position (an int or a name of the data set)."""

    dictionary: str
    latents: list
    values: np.ndarray
    which: str
    tokens: list
    positions: dict = dc_field(default_factory=dict)
    dataset: str = ""
    dataset_hash: str = ""

    def at(self, pos) -> np.ndarray:
        """``[batch, n_latents]`` at one position: an int (negative from the end), or a position name of
        the data set; SiteError naming the positions there are otherwise."""
        T = self.values.shape[1]
        if isinstance(pos, str):
            if pos not in self.positions:
                raise SiteError(f"position name {pos!r} is not in the data set ({sorted(self.positions)})")
            p = np.asarray(self.positions[pos])
        else:
            from fieldcheck.errors import check_int

            p = np.full(self.values.shape[0], check_int("position", pos, low=-T, high=T - 1, error=SiteError,
                                                        hint=f"the prompts have {T} tokens") % T)
        return self.values[np.arange(self.values.shape[0]), p]

    def max(self) -> np.ndarray:
        """``[batch, n_latents]``: the largest activation over positions."""
        return self.values.max(axis=1)

    def summary(self) -> str:
        """The dictionary, the run, the shape, and the six latents with the largest activation."""
        mx = self.values.max(axis=(0, 1))
        rate = (self.values > 0).any(axis=1).mean(0)
        order = np.argsort(-mx)[:6]
        tops = ", ".join(f"F{self.latents[i]} (max {mx[i]:.3g}, fires in {rate[i]:.0%} of prompts)" for i in order)
        return (f"FeatureActivations({self.dictionary}, {len(self.latents)} latents on the {self.which} run, "
                f"{self.values.shape[0]} prompts x {self.values.shape[1]} tokens)\n  strongest: {tops}")

    __repr__ = summary

    def heatmap(self, example: int = 0, top: int = 12, ax=None):
        """Tokens x the ``top`` most active latents of one example; returns the Figure."""
        from fieldcheck.display import pyplot

        plt = pyplot()
        v = self.values[example]
        order = np.argsort(-v.max(0))[:top]
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4, 0.4 * v.shape[0] + 2), max(3, 0.3 * len(order) + 1.5)))
        else:
            fig = ax.figure
        im = ax.imshow(v[:, order].T, aspect="auto", cmap="Reds", interpolation="nearest")
        ax.set_yticks(range(len(order)), [f"F{self.latents[i]}" for i in order], fontsize=7)
        ax.set_xticks(range(v.shape[0]), self.tokens[example], rotation=90, fontsize=7)
        fig.colorbar(im, ax=ax, label="activation")
        ax.set_title(f"{self.dictionary} on example {example} ({self.which})", fontsize=9)
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html
        return rich_html(self, self.heatmap)

    def to_dict(self) -> dict:
        """A JSON-safe dict: ``values [batch, pos, n_latents]``, latents, tokens and the data set."""
        return jsonable({"dictionary": self.dictionary, "latents": self.latents, "values": self.values,
                         "which": self.which, "tokens": self.tokens, "dataset": self.dataset,
                         "dataset_hash": self.dataset_hash})


def latent_list(d: Dictionary, latents) -> list[int]:
    """The latent indices ``latents`` names: "all", an int or a non-empty list/array of ints in 0..d_sae-1
    (negative counts from the end). SiteError naming the bad latent otherwise (a float is not truncated
    to a latent, a bool is not latent 1)."""
    import numbers

    if isinstance(latents, str) and latents == "all":
        return list(range(d.d_sae))
    if isinstance(latents, numbers.Integral) and not isinstance(latents, bool):
        items = [latents]
    elif isinstance(latents, (list, tuple, range, np.ndarray, torch.Tensor)):
        items = list(np.asarray(latents).ravel()) if isinstance(latents, (np.ndarray, torch.Tensor)) else list(latents)
    else:
        raise SiteError(f"latents={latents!r}: give 'all', a latent index or a list of them (0..{d.d_sae - 1})")
    if not items:
        raise SiteError(f"latents=[] names no latent; give 'all' or indices in 0..{d.d_sae - 1}")
    out = []
    for i in items:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, numbers.Integral):
            raise SiteError(f"latent {i!r} is not an int: {d.name} has latents 0..{d.d_sae - 1}")
        if not -d.d_sae <= i < d.d_sae:
            raise SiteError(f"latent {int(i)} out of range: {d.name} has latents 0..{d.d_sae - 1}")
        out.append(int(i) % d.d_sae)
    return out


def feature_activations(field, ds, dictionary: Dictionary, latents="all", which: str = "clean") -> FeatureActivations:
    """The activations of ``latents`` of ``dictionary`` on every prompt and token of one run of ``ds``."""
    if which not in ("clean", "corrupt"):
        raise UsageError(f"which must be 'clean' or 'corrupt', got {which!r}")
    run = feature_run(field, ds, dictionary)
    lat = latent_list(dictionary, latents)
    toks = ds.clean_tokens if which == "clean" else ds.corrupt_tokens
    tok = getattr(field.model, "tokenizer", None)
    strs = [[tok.decode([int(t)]) if tok is not None else str(int(t)) for t in row] for row in toks.tolist()]
    return FeatureActivations(dictionary.name, lat, run.f[which][..., lat].detach().cpu().double().numpy(), which,
                              strs, {n: ds.position(n).tolist() for n in ds.position_names},
                              getattr(ds, "name", ""), dataset_hash_of(ds))
