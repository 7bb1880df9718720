"""The field core: the residual stream phi(l, t) of a model over a contrastive data set, and patching.

:class:`FieldCore` runs each data set's clean and corrupted prompts once and caches what the
light-cone engine needs (``run``, ``phi``, ``metric_values``, ``baselines``); ``patch`` inserts
sources at sites and reads the metric. Every experiment in :mod:`fieldcheck.experiments` takes a
FieldCore as its first argument. The public ``fieldcheck.Field`` (:mod:`fieldcheck.lab`) is a
subclass one layer above the experiments that offers each of them as a method.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch

from fieldcheck.field.arch import FunctionalModel, UnsupportedArchitecture, functional_model
from fieldcheck.field.engine import Injection, LightConeEngine, Row, RunCache, run_cache
from fieldcheck.errors import (DatasetError, ModelNotAvailable, NumericalError, PatchError, SourceError, UsageError,
                               check_choice)
from fieldcheck.field.memory import oom_hint, resolve_budget
from fieldcheck.field.metrics import Metric, as_metric
from fieldcheck.field.precision import check_cache
from fieldcheck.field.results import PatchResult, dataset_hash_of
from fieldcheck.field.sites import Site, as_site_set
from fieldcheck.field.sources import Source, as_source, check_alpha, example_groups, group_mean, noise_for

DIRECTIONS = ("denoise", "noise")
WHICH = ("clean", "corrupt")


@dataclass
class FieldRun:
    """Both runs of one data set: caches ``clean``/``corrupt`` and the metric position ``[batch]``."""

    ds: object
    clean: RunCache
    corrupt: RunCache
    metric_pos: torch.Tensor

    def target(self, direction: str) -> RunCache:
        """The run patched into: the corrupted run for "denoise", the clean run for "noise"."""
        check_choice("direction", direction, DIRECTIONS)
        return self.corrupt if direction == "denoise" else self.clean

    def source(self, direction: str) -> RunCache:
        """The run patched from: the clean run for "denoise", the corrupted run for "noise"."""
        check_choice("direction", direction, DIRECTIONS)
        return self.clean if direction == "denoise" else self.corrupt


def _show_progress() -> bool:
    """Progress bars: the session setting (the plugin turns them off under -q, in CI and off a
    terminal), FIELDCHECK_NO_PROGRESS=1, else only on a terminal outside CI."""
    if os.environ.get("FIELDCHECK_NO_PROGRESS") == "1":
        return False
    from fieldcheck import config
    flag = config.get().show_progress
    if flag is not None:
        return bool(flag)
    return sys.stderr.isatty() and not os.environ.get("CI")


class FieldCore:
    """The residual field of ``model`` (a TransformerBridge), without the experiment methods.

    Use ``fieldcheck.Field`` (this class plus one method per experiment); experiments in
    :mod:`fieldcheck.experiments` take a FieldCore. model: a model loaded by
    ``fieldcheck.load_model`` or a spec/path that ``load_model`` accepts.
    memory_budget: bytes one chunk of a patch sweep, edge scoring or EAP-IG may use (default: the
    session's ``--fc-memory-budget``, else 2 GiB; a size such as "512MiB" works too).
    engine: "lightcone" (default where the family is supported: fieldcheck.field.arch) or "hooks"
    (the default for other families, and the reference): one hooked TransformerLens forward per
    patched site, and sensitivities, predictions, Green functions and transfer through the bridge's
    own forward driven by its hooks (fieldcheck.field.hooked.HookedFunctional). ``field.engine_name``
    says which; each result's ``cost["engine"]`` what ran.
    """

    def __init__(self, model, memory_budget: Optional[int] = None, engine: str = "auto"):
        if isinstance(model, (str, os.PathLike)):
            from fieldcheck.models.loading import load_model
            model = load_model(model)
        if not hasattr(model, "cfg") or not hasattr(model, "original_model"):
            raise ModelNotAvailable(f"Field needs a model loaded by fieldcheck.load_model(...) (a TransformerBridge), "
                                    f"got {type(model).__name__}")
        self.model = model
        cfg = model.cfg
        self.n_layers: int = cfg.n_layers
        self.n_heads: int = cfg.n_heads
        self.d_model: int = cfg.d_model
        self.memory_budget = resolve_budget(memory_budget)
        try:
            self.fm: Optional[FunctionalModel] = functional_model(model)
        except UnsupportedArchitecture:
            # the generic path: the bridge's own forward driven through its hooks (slower, same experiments)
            from fieldcheck.field.hooked import HookedFunctional
            try:
                self.fm = HookedFunctional(model)
            except UnsupportedArchitecture:
                self.fm = None
        if engine == "hooks" and self.fm is not None and not getattr(self.fm, "generic", False):
            # asked for the hooked path: every experiment through the bridge's hooks (the reference)
            from fieldcheck.field.hooked import HookedFunctional
            try:
                self.fm = HookedFunctional(model)
            except UnsupportedArchitecture:
                pass
        generic = self.fm is None or getattr(self.fm, "generic", False)
        if engine == "auto":
            engine = "hooks" if generic else "lightcone"
        if engine not in ("lightcone", "hooks"):
            raise UsageError(f"engine must be 'lightcone', 'hooks' or 'auto', got {engine!r}")
        if engine == "lightcone" and generic:
            raise UnsupportedArchitecture(f"the light-cone engine does not support {type(model.original_model).__name__}; "
                                          "use Field(model) (engine='auto' runs it through the hooks)")
        self.engine_name = engine
        self._runs: dict[str, FieldRun] = {}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({getattr(self.model, 'fieldcheck_info', {}).get('spec', type(self.model).__name__)}: "
                f"{self.n_layers} layers, d_model={self.d_model}, engine={self.engine_name})")

    @property
    def device(self):
        """The torch device of the model's parameters (where the cached runs live)."""
        return next(iter(self.model.parameters())).device

    # --- runs ------------------------------------------------------------------------
    def run(self, ds) -> FieldRun:
        """Run the clean and corrupted prompts of ``ds`` (a ContrastiveSet) once, cached by the data
        set's content hash. Returns a :class:`FieldRun`: ``clean``/``corrupt`` caches (residuals
        ``resid [layer 0..L, batch, pos, d_model]`` and what the engine needs) and ``metric_pos
        [batch]``. DatasetError when ``ds`` does not fit the model."""
        check_dataset(ds, self.model)
        key = ds.content_hash()
        if key not in self._runs:
            fm = self.require_functional()
            dev = self.device
            B = ds.n
            toks = torch.cat([ds.clean_tokens, ds.corrupt_tokens]).to(dev)
            with oom_hint(f"running the {2 * B} clean and corrupted prompts of {getattr(ds, 'name', 'the data set')}",
                          chunked=False):
                both = fm.run_cache(toks) if getattr(fm, "generic", False) else run_cache(fm, toks)
            sl = lambda c, s: RunCache(c.tokens[s], c.resid[:, s], c.mid[:, s], c.z[:, s], c.k[:, s], c.v[:, s])
            clean, corrupt = sl(both, slice(0, B)), sl(both, slice(B, 2 * B))
            for which, c in (("clean", clean), ("corrupted", corrupt)):
                check_cache(c, f"the residual stream of the {which} prompts of {getattr(ds, 'name', 'the data set')!r}")
            self._runs[key] = FieldRun(ds, clean, corrupt, ds.positions["END"].to(dev))
        return self._runs[key]

    def clear(self) -> None:
        """Drop every cached run (frees their memory; the next experiment reruns the data set)."""
        self._runs.clear()

    def phi(self, ds, which: str = "clean") -> torch.Tensor:
        """The residual field of ``ds`` on the ``which`` run ("clean" or "corrupt").

        Returns a tensor ``[layer, batch, pos, d_model]`` (layer 0..n_layers: layer l enters block l,
        the last is the final residual before the final norm)."""
        check_choice("which", which, WHICH)
        r = self.run(ds)
        return (r.clean if which == "clean" else r.corrupt).resid

    def require_functional(self) -> FunctionalModel:
        """The functional model the engines run (``self.fm``), or UnsupportedArchitecture naming
        the model's class when its family has none (for experiments that need it)."""
        if self.fm is None:
            raise UnsupportedArchitecture(
                f"{type(self.model.original_model).__name__} is not supported by the functional engine; "
                "use Field(model, engine='hooks') for patching")
        return self.fm

    # --- metrics -------------------------------------------------------------------------
    def metric_values(self, ds, metric="logit_diff", which: str = "clean") -> torch.Tensor:
        """The metric on an unpatched run of ``ds``.

        metric: "logit_diff" (default), "logprob", "prob", "kl" or a callable ``(logits [rows,
        d_vocab], ds) -> [rows]`` (:mod:`fieldcheck.metrics`). which: "clean" (default) or
        "corrupt". Returns a tensor ``[batch]`` (carrying ``dataset_hash``, by which the
        assertions pair results over the same examples)."""
        check_choice("which", which, WHICH)
        r = self.run(ds)
        cache = r.clean if which == "clean" else r.corrupt
        out = self.metric_on(as_metric(metric), r, cache.resid[-1][torch.arange(ds.n), r.metric_pos],
                           torch.arange(ds.n, device=self.device))
        out.dataset_hash = dataset_hash_of(ds)  # names the examples (assertions pair results by it)
        return out

    def metric_on(self, m: Metric, r: FieldRun, x_final: torch.Tensor, ex: torch.Tensor) -> torch.Tensor:
        """The metric ``m`` (a Metric) of final residuals ``x_final [rows, d_model]`` at the metric
        position, row i being example ``ex[i]`` of the run ``r`` (a FieldRun). Returns ``[rows]``;
        NumericalError when a value is not finite. For experiments that run their own forwards."""
        ex = torch.as_tensor(ex)
        if ex.shape != x_final.shape[:1] or ex.is_floating_point() or bool(((ex < 0) | (ex >= r.ds.n)).any()):
            raise UsageError(f"metric_on: ex must give one example index in 0..{r.ds.n - 1} per row of x_final "
                             f"({x_final.shape[0]} rows), got {ex.tolist()}")
        ref = None
        if m.name == "kl":
            xc = r.clean.resid[-1][torch.arange(r.ds.n), r.metric_pos]
            ref = torch.log_softmax(self.fm.unembed(self.fm.final_norm(xc)).float(), -1)
        out = []
        step = 256 if m.needs_full_logits else 1 << 30
        for s in range(0, len(ex), step):
            out.append(m(self.fm, x_final[s:s + step], ex[s:s + step], r.ds, ref))
        vals = torch.cat(out) if out else x_final.new_zeros(0)
        if not torch.isfinite(vals).all():
            raise NumericalError(f"metric {m.name!r} is NaN or inf for {int((~torch.isfinite(vals)).sum())} rows; "
                                 "the model's outputs are not finite (a claim on them cannot pass)")
        return vals

    # --- sources -------------------------------------------------------------------------
    def site_values(self, r: FieldRun, cache: RunCache, site: Site, pos: torch.Tensor) -> torch.Tensor:
        """The activation at ``site`` (a resolved Site) in ``cache`` (a RunCache of the run ``r``) at
        positions ``pos [batch]``. Returns ``[batch, dim]`` (dim = d_head for heads, else d_model)."""
        b = torch.arange(r.ds.n, device=pos.device)
        l = site.layer
        if site.kind == "resid_pre":
            return cache.resid[l][b, pos]
        if site.kind == "resid_post":
            return cache.resid[l + 1][b, pos]
        if site.kind == "resid_mid":
            return cache.mid[l][b, pos]
        if site.kind == "attn_head":
            return cache.z[l][b, pos, site.head]
        if site.kind in ("attn_out", "mlp_out") and getattr(self.fm, "generic", False):
            return self.fm.site_value(cache, site.kind, l, b, pos)
        if site.kind == "attn_out":
            return self.fm.o_proj(l, cache.z[l][b, pos][:, None])[:, 0]
        if site.kind == "mlp_out":
            return self.fm.mlp(l, self.fm.mlp_in(cache.resid[l][b, pos], cache.mid[l][b, pos])[:, None])[:, 0]
        raise PatchError(f"unknown site kind {site.kind}")

    def injections(self, r: FieldRun, site: Site, direction: str, src: Source, alpha: float):
        """What inserting ``src`` (a Source) at ``site`` with scale ``alpha`` does in run ``r``.

        direction: "denoise" (into the corrupted run) or "noise" (into the clean run). Returns
        (injections, delta): one engine Injection per example (None where the source is exactly
        zero, e.g. before the prompts differ) and the source ``delta [batch, dim]``."""
        alpha = check_alpha(alpha)
        ds = r.ds
        pos = ds.position(site.pos).to(self.device) if isinstance(site.pos, str) else \
            torch.full((ds.n,), int(site.pos), device=self.device)
        tgt = self.site_values(r, r.target(direction), site, pos)
        if src.kind == "other":
            v = self.site_values(r, r.source(direction), site, pos)
            delta = v - tgt
        elif src.kind == "zero":
            v = torch.zeros_like(tgt)
            delta = -tgt
        elif src.kind == "mean":
            v = group_mean(tgt, None if src.by is None else example_groups(ds, src.by))
            delta = v - tgt
        elif src.kind == "gaussian":
            delta = noise_for(src, site.label, tgt.shape, tgt.dtype, tgt.device)
            v = None
        else:  # steer
            vec = src.vector.to(tgt.device, tgt.dtype)
            if vec.shape[-1] != tgt.shape[-1] or (vec.ndim == 2 and vec.shape[0] != ds.n):
                raise SourceError(f"steering vector of shape {tuple(vec.shape)} does not fit site {site.label}: "
                                  f"expected [{tgt.shape[-1]}] or [{ds.n}, {tgt.shape[-1]}]")
            delta = vec.expand_as(tgt)
            v = None
        stage = site.stage
        # attn_out sources are inserted as residual deltas after attention (exact for single sites)
        replace = src.replaces and site.kind != "attn_out"
        zero = (delta == 0).all(-1)
        if src.kind == "other":  # identical token prefixes give identical activations: exactly zero source
            zero |= pos < ds.first_diff.to(pos.device)
        if alpha == 0.0:  # phi + 0 * delta is phi: a no-op, exactly
            zero[:] = True
        zero_l, pos_l = zero.tolist(), pos.tolist()  # one copy per site, not a device sync per example
        out = []
        for b in range(ds.n):
            if zero_l[b]:
                out.append(None)
            elif replace:
                out.append(Injection(stage, pos_l[b], 1.0 - alpha, alpha * v[b], site.head if site.head is not None else -1))
            else:
                out.append(Injection(stage, pos_l[b], 1.0, alpha * delta[b], site.head if site.head is not None else -1))
        return out, delta

    # --- patching --------------------------------------------------------------------------
    def patch(self, ds, sites, direction: str = "denoise", source=None, alpha: float = 1.0,
              jointly: bool = False, metric: Union[str, callable, Sequence] = "logit_diff",
              engine: Optional[str] = None, progress: Optional[bool] = None):
        """Activation patching: insert a source at each site (or all jointly) and read the metric.

        ds: a ContrastiveSet. sites: a site set from :mod:`fieldcheck.sites` (``resid_pre(range(20,
        30), "END")``, ``attn_head(5, 1, "IO")``, ...), a Site, a label (``"L20.resid_pre@END"``,
        ``"L5.H1@IO"``; docs/writing-claims.md) or a list of them; positions are ints or the data
        set's position names. direction: "denoise" (default: the clean value into
        the corrupted run, sufficiency) or "noise" (corrupted into clean, necessity). source: None
        (the other run's value), "zero", "mean", ``fieldcheck.sources.mean(by="template")`` (the
        mean over the examples of the same template), ``fieldcheck.sources.gaussian(scale)`` or a
        steering tensor ``[d]``/``[batch, d]``. alpha: the scale in ``phi + alpha * delta`` (1.0
        replaces the value). jointly: patch every site together (one row) instead of one row per
        site. metric: a metric name, a callable, or a list of them. engine: None (the field's),
        "lightcone" or "hooks". progress: show a progress bar (None: the session's setting).

        Returns a :class:`~fieldcheck.field.results.PatchResult` with ``values [n_sites, batch]``
        (``[1, batch]`` when jointly) and both baselines ``[batch]``; a dict metric name ->
        PatchResult when ``metric`` is a list.
        """
        if direction not in DIRECTIONS:
            raise UsageError(f"direction must be 'denoise' (clean into corrupted: sufficiency) or 'noise' "
                             f"(corrupted into clean: necessity), got {direction!r}")
        alpha = check_alpha(alpha)
        src = as_source(source)
        metrics = [as_metric(m) for m in (metric if isinstance(metric, (list, tuple)) else [metric])]
        check_dataset(ds, self.model)
        site_list = _dedupe(as_site_set(sites).resolve(self.n_layers, self.n_heads, ds.seq_len, ds.position_names))
        engine = self.engine_name if engine is None else check_choice("engine", engine, ("lightcone", "hooks"))
        if engine == "lightcone" and getattr(self.fm, "generic", True):
            raise UnsupportedArchitecture(f"the light-cone engine does not support {type(self.model.original_model).__name__}; "
                                          "patch with engine='hooks' (the default for this model)")
        t_start = time.perf_counter()
        if engine == "hooks":
            from fieldcheck.field.hooked import patch_hooked
            values, skipped, baselines, cost = patch_hooked(self, ds, site_list, direction, src, alpha, jointly, metrics)
        else:
            values, skipped, baselines, cost = self._patch_lightcone(ds, site_list, direction, src, alpha, jointly,
                                                                     metrics, progress)
        cost["seconds"] = time.perf_counter() - t_start
        results = {}
        for m in metrics:
            results[m.name] = PatchResult(
                sites=site_list, values=values[m.name], baseline_clean=baselines[m.name][0],
                baseline_corrupt=baselines[m.name][1], direction=direction, metric=m.name, jointly=jointly,
                alpha=alpha, source=src.describe(), dataset=getattr(ds, "name", ""), method="patch", dataset_hash=dataset_hash_of(ds),
                cost=dict(cost), skipped=skipped)
        return results if isinstance(metric, (list, tuple)) else results[metrics[0].name]

    def baselines(self, ds, metric="logit_diff") -> tuple[torch.Tensor, torch.Tensor]:
        """The ``metric`` (a name or callable, default "logit_diff") on the unpatched runs of
        ``ds``: ``(clean [batch], corrupt [batch])``."""
        m = as_metric(metric)
        return self.metric_values(ds, m, "clean"), self.metric_values(ds, m, "corrupt")

    def _patch_lightcone(self, ds, site_list, direction, src, alpha, jointly, metrics, progress):
        r = self.run(ds)
        B = ds.n
        base = {m.name: (self.metric_values(ds, m, "clean"), self.metric_values(ds, m, "corrupt")) for m in metrics}
        tgt_idx = 1 if direction == "denoise" else 0
        rows: list[Row] = []
        slots: list[tuple[int, int]] = []  # (site row in result, example)
        n_out = 1 if jointly else len(site_list)
        skipped = np.ones((n_out, B), dtype=bool)
        mpos = r.metric_pos.tolist()  # once: no device sync per row
        if jointly:
            per_ex: list[list[Injection]] = [[] for _ in range(B)]
            for s in site_list:
                injs, _ = self.injections(r, s, direction, src, alpha)
                for b, inj in enumerate(injs):
                    if inj is not None:
                        per_ex[b].append(inj)
            for b in range(B):
                if per_ex[b] and min(i.pos for i in per_ex[b]) <= mpos[b]:
                    rows.append(Row(b, per_ex[b]))
                    slots.append((0, b))
        else:
            for i, s in enumerate(site_list):
                injs, _ = self.injections(r, s, direction, src, alpha)
                for b, inj in enumerate(injs):
                    if inj is not None and inj.pos <= mpos[b]:
                        rows.append(Row(b, [inj]))
                        slots.append((i, b))
        engine = LightConeEngine(self.fm, self.memory_budget)
        show = _show_progress() if progress is None else progress
        bar = None
        if show and len(rows) > 200:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(rows), desc=f"fieldcheck {direction} {len(site_list)} sites", unit="row", leave=False)
        try:
            labels = [("jointly " + ", ".join(x.label for x in site_list[:4]) if jointly else site_list[i].label)
                      for i, _ in slots]
            x_final = engine.run(r.target(direction), rows, r.metric_pos, progress=bar, labels=labels) if rows else None
        finally:
            if bar is not None:
                bar.close()
        values = {}
        for m in metrics:
            v = base[m.name][tgt_idx].detach().clone()[None].repeat(n_out, 1)
            if rows:
                ex = torch.tensor([b for _, b in slots], device=self.device)
                got = self.metric_on(m, r, x_final, ex)
                si = torch.tensor([i for i, _ in slots], device=self.device)
                v[si, ex] = got.to(v.dtype)
            values[m.name] = v
        for i, b in slots:
            skipped[i, b] = False
        cost = {"engine": "lightcone", "rows": len(rows), "rows_skipped": int(skipped.sum()),
                "chunks": engine.stats["forwards"], "token_layers": engine.stats["token_layers"],
                "full_forward_token_layers": B * ds.seq_len * self.n_layers}
        return values, skipped, {k: (v[0], v[1]) for k, v in base.items()}, cost


def _dedupe(sites: list[Site]) -> list[Site]:
    return list(dict.fromkeys(sites))


def check_dataset(ds, model=None) -> None:
    """DatasetError unless ``ds`` is a ContrastiveSet whose tokens and answers fit ``model``'s
    vocabulary and context (only the type is checked when ``model`` is None)."""
    for attr in ("clean_tokens", "corrupt_tokens", "answers", "wrong", "positions", "content_hash"):
        if not hasattr(ds, attr):
            raise DatasetError(f"{type(ds).__name__} is not a ContrastiveSet (missing {attr!r}); build one with "
                               "fieldcheck.ContrastiveSet.from_pairs(...) or fieldcheck.datasets.ioi(model, ...)")
    if model is None:
        return
    d_vocab = model.cfg.d_vocab
    for what, t in (("token", torch.cat([ds.clean_tokens.flatten(), ds.corrupt_tokens.flatten()])),
                    ("answer", torch.cat([ds.answers, ds.wrong]))):
        big = int(t.max()) if t.numel() else 0
        if big >= d_vocab or (t.numel() and int(t.min()) < 0):
            raise DatasetError(f"the data set {getattr(ds, 'name', '')!r} has {what} id {big}, outside this model's "
                               f"vocabulary of {d_vocab}: build the set with this model (fieldcheck.datasets.*(model, ...) "
                               "or ContrastiveSet.from_pairs(model, ...))")
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx and ds.seq_len > n_ctx:
        raise DatasetError(f"the prompts have {ds.seq_len} tokens, longer than the model's context of {n_ctx}; "
                           "use shorter prompts")
