"""Green functions of the field: how a source at one residual site propagates over the lattice.

    G(l', t'; l, t) = d phi(l', t') / d phi(l, t)        (a d_model x d_model map)

``green(field, ds, source_site, direction)`` applies G to a direction (by default the patch
delta at the site) for every example with one forward-mode Jacobian-vector product
(``torch.func.jvp``) through blocks l..L-1 of the functional model, started from the target
run's cached residual ``phi(l)`` over *all* positions. The tangent is zero everywhere except at
the source position, so the computed response at positions t' < t (and at layer l away from t)
is a real test of causality: ``outside_cone_max`` is the largest |response| found there and is
exactly 0.0 for a causal model (masked attention contributes exact zeros in forward mode).

``propagate(field, ds, source_site, alpha)`` is the real, non-linear counterpart: the same
blocks run on ``phi(l) + alpha * delta`` minus the same blocks run on ``phi(l)``.

``green_slice(field, ds, source_site, target_site, rank)`` describes the d x d block
G(target; source) by a randomized SVD (Halko, Martinsson & Tropp 2011) built from JVPs
(G @ Omega) and VJPs (G^T @ Q); the dense Jacobian is never formed.

Only residual sites are sources and targets here: ``resid_pre(l, t)`` (= phi(l, t)) and
``resid_post(l, t)`` (= phi(l+1, t)); positions may be names (resolved per example).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from typing import Optional, Sequence, Union

import numpy as np
import torch

from fieldcheck.display import pyplot
from fieldcheck.jsonable import jsonable, to_numpy
from fieldcheck.errors import SiteError, SourceError, UsageError, check_choice, check_int
from fieldcheck.field.core import check_dataset
from fieldcheck.field.sources import check_alpha
from fieldcheck.field.metrics import as_metric
from fieldcheck.field.sites import Site, as_site_set, layer_index

__all__ = ["green", "propagate", "green_slice", "GreenResult", "Propagation", "LinearVsReal",
           "GreenSlice"]


# --- helpers -----------------------------------------------------------------------------------
def _one_site(field, ds, site, what: str) -> Site:
    """The single residual site ``site`` as (layer index into phi, pos spec)."""
    check_dataset(ds, field.model)
    sites = as_site_set(site).resolve(field.n_layers, field.n_heads, ds.seq_len, ds.position_names)
    if len(sites) != 1:
        raise SiteError(f"{what} must be one site, got {len(sites)} ({', '.join(s.label for s in sites[:4])}"
                        f"{', ...' if len(sites) > 4 else ''}); pick one layer and one position")
    s = sites[0]
    if s.kind not in ("resid_pre", "resid_post"):
        raise SiteError(f"{what} {s.label} is a {s.kind} site; Green functions are defined between residual "
                        "sites: use fieldcheck.sites.resid_pre(layer, pos) (or resid_post)")
    return s


def _phi_layer(s: Site) -> int:
    """Index into phi (0..L) of a residual site."""
    return s.layer + (1 if s.kind == "resid_post" else 0)


def _positions(ds, s: Site, device) -> torch.Tensor:
    return ds.position(s.pos).to(device)


def _forward_from(fm, x: torch.Tensor, l: int, stop: Optional[int] = None) -> torch.Tensor:
    """phi(l..stop) ``[stop+1-l, rows, T, d]`` from phi(l) = ``x [rows, T, d]`` (all positions of x;
    ``stop`` defaults to L, the final residual)."""
    if getattr(fm, "generic", False):  # the hooked fallback: one bridge forward
        return torch.stack(fm.forward_from(l, x, stop))
    xs = [x]
    for j in range(l, fm.n_layers if stop is None else stop):
        x = fm.block(j, x)[0]
        xs.append(x)
    return torch.stack(xs)


def _full_lattice(part: torch.Tensor, l: int) -> torch.Tensor:
    """``[L+1-l, B, T, d]`` -> ``[B, L+1, T, d]`` with zeros for layers < l."""
    n, B, T, d = part.shape
    out = part.new_zeros(B, l + n, T, d)
    out[:, l:] = part.transpose(0, 1)
    return out


def _target_run(field, ds, which: str):
    check_choice("which", which, ("corrupt", "clean"), hint="the run linearized around ('corrupt', the denoising "
                 "target, by default)")
    r = field.run(ds)
    return r, (r.corrupt if which == "corrupt" else r.clean), (r.clean if which == "corrupt" else r.corrupt)


def _direction(field, ds, r, tgt, src, s: Site, pos: torch.Tensor, direction) -> tuple[torch.Tensor, str]:
    """``[B, d]`` source direction per example, and a description."""
    l = _phi_layer(s)
    b = torch.arange(ds.n, device=pos.device)
    x = tgt.resid[l]
    if direction is None or (isinstance(direction, str) and direction in ("patch", "delta")):
        return src.resid[l][b, pos] - x[b, pos], "patch delta (other run - target run)"
    if isinstance(direction, str):
        raise SourceError(f"direction={direction!r}: give None (the patch delta) or a tensor [d_model] or "
                          f"[batch, d_model]; the run linearized around is chosen with which='corrupt'|'clean'")
    v = torch.as_tensor(direction).to(x.device, x.dtype)
    if v.ndim == 1:
        v = v[None].expand(ds.n, -1)
    if v.shape != (ds.n, x.shape[-1]):
        raise SourceError(f"direction of shape {tuple(torch.as_tensor(direction).shape)} does not fit: expected "
                          f"[{x.shape[-1]}] or [{ds.n}, {x.shape[-1]}]")
    if not torch.isfinite(v).all():
        raise SourceError("the direction contains NaN or inf")
    return v, f"given vector (|v| mean {float(v.norm(dim=-1).mean()):.3g})"


def _tangent(x: torch.Tensor, pos: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    t = torch.zeros_like(x)
    t[torch.arange(x.shape[0], device=x.device), pos] = vec.to(x.dtype)
    return t


def _cone_mask(B: int, L1: int, T: int, l: int, pos: torch.Tensor) -> torch.Tensor:
    """``[B, L+1, T]`` True inside the forward light cone (l' >= l and t' >= t_b)."""
    lay = torch.arange(L1, device=pos.device)[None, :, None] >= l
    tok = torch.arange(T, device=pos.device)[None, None, :] >= pos[:, None, None]
    return lay & tok


# --- Green response ------------------------------------------------------------------------------
@dataclass
class GreenResult:
    """The linear response of the field to a source at one residual site, per example.

    response:      ``[batch, L+1, pos, d_model]`` d phi(l', t') along the direction (zero for l' < l)
    response_norm: ``[batch, L+1, pos]`` its Euclidean norm
    outside_cone_max: max |response| over l' < l or t' < t (computed entries; exactly 0.0 when causal)
    depth_share:   ``[batch]`` sum_{l'>l} |r(l', t)| / sum_{l'>l} sum_{t'>=t} |r(l', t')|: the share of the
                   response norm that stays at the source's token along depth, versus all tokens of the
                   cone at the same layers (norms, not squared; NaN where the direction is zero; 1 when
                   t is the last position)
    spread:        ``[batch, L+1]`` norm-weighted RMS distance in tokens, sqrt(sum_t' w (t'-t)^2 / sum_t' w)
                   with w = |r(l', t')| over t' >= t (a second-moment fit of how far the response has
                   spread across later tokens at each layer; 0 at l' = l, NaN for l' < l)
    metric_response: ``[batch]`` the first-order change of the metric (d m along the direction), when a
                   metric was given
    """

    source_site: Site
    layer: int                      # phi index of the source
    positions: torch.Tensor         # [batch] source position per example
    response: torch.Tensor
    response_norm: torch.Tensor
    outside_cone_max: float
    depth_share: np.ndarray
    spread: np.ndarray
    direction_norm: np.ndarray
    direction_desc: str
    which: str
    metric: Optional[str] = None
    metric_response: Optional[np.ndarray] = None
    cost: dict = dc_field(default_factory=dict)
    _ctx: dict = dc_field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        """Number of examples (the ``batch`` axis of ``response``)."""
        return int(self.response.shape[0])

    @property
    def mean_norm(self) -> np.ndarray:
        """``[L+1, pos]`` response norm averaged over examples."""
        return to_numpy(self.response_norm.mean(0))

    @property
    def spread_mean(self) -> np.ndarray:
        """``[L+1]`` mean spread per layer over examples (NaN-aware)."""
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN layers (before the source)
            return np.nanmean(np.where(np.isfinite(self.spread), self.spread, np.nan), axis=0)

    def at(self, layer: int, pos: Union[int, str, None] = None) -> torch.Tensor:
        """``[batch, d_model]`` the response at phi index ``layer`` (0..L, negative from the end) and a
        position (default: the metric position END). SiteError naming the layers that exist when
        ``layer`` is not one of them; DatasetError for a position the data set does not have."""
        ds = self._ctx["ds"]
        L1 = self.response.shape[1]
        i = layer_index(layer, L1, f"this Green response ({L1 - 1}-block model)")
        p = ds.position(pos if pos is not None else "END").to(self.response.device)
        return self.response[torch.arange(self.n, device=p.device), i, p]

    def linear_vs_real(self, alphas: Sequence[float] = (0.01, 0.1, 0.5, 1.0)) -> "LinearVsReal":
        """Compare ``alpha * response`` with the real propagated difference at each alpha.

        rel_error[a, b] = ||D_alpha - alpha R||_F / ||D_alpha||_F over the whole lattice of example b
        (0/0 -> 0 for a zero source); also at the final residual at the metric position.
        """
        ctx = self._ctx
        alphas = [float(a) for a in alphas]
        rel, rel_end, real_norm = [], [], []
        ds = ctx["ds"]
        mpos = ds.position("END").to(self.response.device)
        b = torch.arange(self.n, device=mpos.device)
        for a in alphas:
            prop = propagate(ctx["field"], ds, self.source_site, a, direction=ctx["direction"], which=self.which)
            D = prop.response
            E = D - a * self.response
            num = E.flatten(1).norm(dim=1)
            den = D.flatten(1).norm(dim=1)
            rel.append(to_numpy(torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))))
            De, Ee = D[b, -1, mpos], E[b, -1, mpos]
            dn = De.norm(dim=-1)
            rel_end.append(to_numpy(torch.where(dn > 0, Ee.norm(dim=-1) / dn.clamp_min(1e-300), torch.zeros_like(dn))))
            real_norm.append(to_numpy(den))
        return LinearVsReal(np.array(alphas), np.stack(rel), np.stack(rel_end), np.stack(real_norm),
                            self.source_site.label)

    # --- reporting -----------------------------------------------------------------------
    def summary(self) -> str:
        """A readable summary: source site, run, n, direction; the light-cone check, depth share, spread and
        response sizes."""
        ds_ = np.asarray(self.depth_share, dtype=float)
        fin = ds_[np.isfinite(ds_)]
        sp = self.spread_mean
        last = sp[-1] if sp.size else float("nan")
        lines = [f"GreenResult(source {self.source_site.label}, linearized around the {self.which} run, "
                 f"n={self.n}, direction: {self.direction_desc})",
                 f"  light cone: outside_cone_max = {self.outside_cone_max:.3g}"
                 f" ({'exact' if self.outside_cone_max == 0.0 else 'LEAKS'})",
                 f"  depth_share mean {np.mean(fin) if fin.size else float('nan'):.3f}"
                 f" (min {np.min(fin) if fin.size else float('nan'):.3f}, {ds_.size - fin.size} undefined);"
                 f" spread at the final layer {last:.3g} tokens",
                 f"  |direction| mean {float(np.mean(self.direction_norm)):.3g}; "
                 f"|response| at the final layer, metric position, mean "
                 f"{float(self.at(self.response.shape[1] - 1).norm(dim=-1).mean()):.3g}"]
        if self.metric_response is not None:
            lines.append(f"  d{self.metric} (first order) mean {float(np.mean(self.metric_response)):+.4g}")
        return "\n".join(lines)

    __repr__ = summary

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html

        return rich_html(self, self.plot)

    def to_dict(self, include_response: bool = False) -> dict:
        """A JSON-safe dict of the summary statistics (``depth_share [batch]``, ``response_norm [batch, layer,
        pos]``, ...); ``include_response=True`` adds the full ``response [batch, layer, pos,
        d_model]``."""
        d = {"kind": "green", "source_site": self.source_site.to_dict(), "layer": self.layer,
             "positions": self.positions, "which": self.which, "direction": self.direction_desc,
             "direction_norm": self.direction_norm, "outside_cone_max": self.outside_cone_max,
             "depth_share": self.depth_share, "spread": self.spread, "spread_mean": self.spread_mean,
             "response_norm": self.response_norm, "mean_norm": self.mean_norm, "metric": self.metric,
             "metric_response": self.metric_response, "cost": self.cost, "n": self.n}
        if include_response:
            d["response"] = self.response
        return jsonable(d)

    def plot(self, ax=None, log: bool = True, title: Optional[str] = None):
        """Heatmap layer x position of the mean response norm, with the light cone's edges marked."""
        plt = pyplot()
        g = self.mean_norm
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4, 0.35 * g.shape[1] + 2), max(3, 0.2 * g.shape[0] + 1.5)))
        else:
            fig = ax.figure
        show = np.where(g > 0, g, np.nan)
        if log:
            with np.errstate(divide="ignore"):
                show = np.log10(show)
        im = ax.imshow(show, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax, label=("log10 " if log else "") + "mean |response|")
        t = to_numpy(self.positions)
        ax.axhline(self.layer - 0.5, color="red", lw=1)
        ax.axvline(float(t.min()) - 0.5, color="red", lw=1, ls="-" if t.min() == t.max() else "--")
        ax.set_xlabel("position t'")
        ax.set_ylabel("layer l' (phi index)")
        ax.set_title(title or f"Green response to {self.source_site.label} (n={self.n}); "
                     f"outside cone max {self.outside_cone_max:.2g}", fontsize=9)
        fig.tight_layout()
        return fig


def _response_stats(resp: torch.Tensor, l: int, pos: torch.Tensor):
    """outside_cone_max, response_norm, depth_share, spread from ``resp [B, L+1, T, d]``."""
    B, L1, T, _ = resp.shape
    rn = resp.norm(dim=-1)  # [B, L+1, T]
    cone = _cone_mask(B, L1, T, l, pos)
    outside = resp.abs().amax(-1).masked_fill(cone, 0)
    outside_max = float(outside.max()) if outside.numel() else 0.0
    rn64 = rn.double()
    bidx = torch.arange(B, device=pos.device)
    later = rn64[:, l + 1:]  # [B, L-l, T]
    same = later[bidx, :, pos].sum(-1) if later.shape[1] else rn64.new_zeros(B)
    tok = torch.arange(T, device=pos.device)
    after = (tok[None, :] >= pos[:, None]).double()  # [B, T]
    tot = (later * after[:, None]).sum((1, 2)) if later.shape[1] else rn64.new_zeros(B)
    depth = torch.where(tot > 0, same / tot.clamp_min(1e-300), torch.full_like(tot, float("nan")))
    dist2 = ((tok[None, :] - pos[:, None]).double().clamp_min(0) ** 2) * after  # [B, T]
    w = rn64 * after[:, None]
    wsum = w.sum(-1)
    spread = torch.sqrt((w * dist2[:, None]).sum(-1) / wsum.clamp_min(1e-300))
    spread = torch.where(wsum > 0, spread, torch.full_like(spread, float("nan")))
    spread[:, :l] = float("nan")
    return outside_max, rn, to_numpy(depth), to_numpy(spread)


def green(field, ds, source_site, direction=None, which: str = "corrupt", metric=None,
          batch_size: int = 32) -> GreenResult:
    """The linear response d phi over the whole lattice to a source at one residual site.

    source_site: ``resid_pre(l, t)`` (or ``resid_post``), t an int or a position name.
    direction: None (default: the patch delta at the site, other run - ``which`` run, per example), or a
    tensor ``[d_model]`` / ``[batch, d_model]``.
    which: the run linearized around ("corrupt", the denoising target, by default; or "clean").
    metric: optionally a metric name/callable: ``metric_response`` is then its first-order change.
    batch_size: examples per forward-mode pass (memory: about 3x a forward of that many prompts, plus the
    response itself, ``[batch, L+1, pos, d_model]``, kept on the model's device).

    Cost: one forward-mode pass (about 2-3 forwards) of blocks l..L-1 over the batch, all positions.
    """
    fm = field.require_functional()
    batch_size = check_int("batch_size", batch_size, low=1)
    s = _one_site(field, ds, source_site, "source_site")
    r, tgt, src = _target_run(field, ds, which)
    l = _phi_layer(s)
    pos = _positions(ds, s, tgt.resid.device)
    vec, desc = _direction(field, ds, r, tgt, src, s, pos, direction)
    x = tgt.resid[l]
    tan = _tangent(x, pos, vec)
    parts = []
    with torch.no_grad():
        for c in range(0, ds.n, int(batch_size)):
            sl = slice(c, c + int(batch_size))
            parts.append(torch.func.jvp(lambda x_: _forward_from(fm, x_, l), (x[sl],), (tan[sl],))[1])
    resp = _full_lattice(torch.cat(parts, dim=1), l)
    outside, rn, depth, spread = _response_stats(resp, l, pos)
    depth = np.where(to_numpy(vec.norm(dim=-1)) > 0, depth, np.nan)
    mresp = mname = None
    if metric is not None:
        m = as_metric(metric)
        mname = m.name
        b = torch.arange(ds.n, device=pos.device)
        mpos = r.metric_pos
        xf, tf = tgt.resid[-1][b, mpos], resp[b, -1, mpos]
        ref = None
        if m.name == "kl":  # KL(clean || .) needs the clean run's next-token log-probabilities
            xc = r.clean.resid[-1][b, mpos]
            ref = torch.log_softmax(fm.unembed(fm.final_norm(xc)).float(), -1)
        # d m along the response: the gradient of the metric at the final residual dotted with it (each row's
        # metric reads only its own row); autograd rather than a JVP so that user metrics and the metric's
        # own finiteness checks run on plain tensors
        with torch.enable_grad():
            xf_ = xf.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(m(fm, xf_, b, ds, ref).sum(), xf_, allow_unused=True)
        dm = (g * tf.to(g.dtype)).sum(-1) if g is not None else torch.zeros(ds.n, dtype=xf.dtype)
        mresp = to_numpy(dm)
    return GreenResult(source_site=s, layer=l, positions=pos, response=resp, response_norm=rn,
                       outside_cone_max=outside, depth_share=depth, spread=spread,
                       direction_norm=to_numpy(vec.norm(dim=-1)), direction_desc=desc, which=which,
                       metric=mname, metric_response=mresp,
                       cost={"jvp_passes": 1, "blocks": fm.n_layers - l, "rows": ds.n, "positions": ds.seq_len},
                       _ctx={"field": field, "ds": ds, "direction": direction})


# --- real propagation ----------------------------------------------------------------------------
@dataclass
class Propagation:
    """The real (non-linear) propagated difference phi_patched - phi_target over the lattice.

    response: ``[batch, L+1, pos, d_model]`` (zero for layers < l); response_norm ``[batch, L+1, pos]``;
    outside_cone_max as in :class:`GreenResult`; ``alpha`` the scale of the source.
    """

    source_site: Site
    layer: int
    positions: torch.Tensor
    alpha: float
    response: torch.Tensor
    response_norm: torch.Tensor
    outside_cone_max: float
    depth_share: np.ndarray
    spread: np.ndarray
    which: str

    @property
    def n(self) -> int:
        """Number of examples (the ``batch`` axis of ``response``)."""
        return int(self.response.shape[0])

    def summary(self) -> str:
        """A readable one-line summary: source site, alpha, run, n, the light-cone check and the mean depth
        share."""
        fin = self.depth_share[np.isfinite(self.depth_share)]
        return (f"Propagation(source {self.source_site.label}, alpha={self.alpha:g}, around the {self.which} run, "
                f"n={self.n}): outside_cone_max {self.outside_cone_max:.3g}, depth_share mean "
                f"{np.mean(fin) if fin.size else float('nan'):.3f}")

    __repr__ = summary

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html

        return rich_html(self, self.plot)

    def to_dict(self) -> dict:
        """A JSON-safe dict: source site, alpha, run, positions, ``response_norm [batch, layer, pos]``,
        outside_cone_max, depth_share, spread and n."""
        return jsonable({"kind": "propagation", "source_site": self.source_site.to_dict(), "alpha": self.alpha,
                          "which": self.which, "positions": self.positions, "response_norm": self.response_norm,
                          "outside_cone_max": self.outside_cone_max, "depth_share": self.depth_share,
                          "spread": self.spread, "n": self.n})

    plot = GreenResult.plot
    mean_norm = GreenResult.mean_norm


def propagate(field, ds, source_site, alpha: float = 1.0, direction=None, which: str = "corrupt",
              batch_size: int = 32) -> Propagation:
    """phi(with phi(l, t) += alpha * direction) - phi(target run), over the whole lattice, per example.

    Both runs go through the same blocks from the cached phi(l) (so alpha = 0 gives exactly 0).
    """
    fm = field.require_functional()
    batch_size = check_int("batch_size", batch_size, low=1)
    alpha = check_alpha(alpha)
    s = _one_site(field, ds, source_site, "source_site")
    r, tgt, src = _target_run(field, ds, which)
    l = _phi_layer(s)
    pos = _positions(ds, s, tgt.resid.device)
    vec, _ = _direction(field, ds, r, tgt, src, s, pos, direction)
    x = tgt.resid[l]
    parts = []
    xp = x + float(alpha) * _tangent(x, pos, vec)
    with torch.no_grad():
        for c in range(0, ds.n, int(batch_size)):
            sl = slice(c, c + int(batch_size))
            parts.append(_forward_from(fm, xp[sl], l) - _forward_from(fm, x[sl], l))
    resp = _full_lattice(torch.cat(parts, dim=1), l)
    outside, rn, depth, spread = _response_stats(resp, l, pos)
    return Propagation(s, l, pos, float(alpha), resp, rn, outside, depth, spread, which)


@dataclass
class LinearVsReal:
    """Agreement of the linear response (alpha * G delta) with the real propagated difference.

    rel_error: ``[n_alpha, batch]`` over the whole lattice; rel_error_end: at the final residual at the
    metric position; real_norm: ``[n_alpha, batch]`` ||D_alpha||_F.
    """

    alphas: np.ndarray
    rel_error: np.ndarray
    rel_error_end: np.ndarray
    real_norm: np.ndarray
    source: str = ""

    @property
    def mean_rel_error(self) -> np.ndarray:
        """``[n_alpha]`` relative error of the linear response over the whole lattice, averaged over the
        examples."""
        return self.rel_error.mean(1)

    def summary(self) -> str:
        """A readable one-line summary: for each alpha, the mean relative error over the lattice and at the final
        residual."""
        rows = ", ".join(f"alpha={a:g}: {e:.3g} (end {ee:.3g})" for a, e, ee in
                         zip(self.alphas, self.mean_rel_error, self.rel_error_end.mean(1)))
        return f"LinearVsReal({self.source}, mean relative error of the linear response) {rows}"

    __repr__ = summary

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html

        return rich_html(self, self.plot)

    def to_dict(self) -> dict:
        """A JSON-safe dict: source, ``alphas [n_alpha]``, ``rel_error``/``rel_error_end``/``real_norm [n_alpha,
        batch]`` and the mean relative error."""
        return jsonable({"kind": "linear_vs_real", "source": self.source, "alphas": self.alphas,
                          "rel_error": self.rel_error, "rel_error_end": self.rel_error_end,
                          "mean_rel_error": self.mean_rel_error, "real_norm": self.real_norm})

    def plot(self, ax=None):
        """Relative error of the linear response against alpha (log-log; whole lattice and final residual at END)
        on ``ax`` (a new figure when None); returns the Figure."""
        plt = pyplot()
        fig, ax = (plt.subplots(figsize=(5, 3.5)) if ax is None else (ax.figure, ax))
        ax.plot(self.alphas, self.mean_rel_error, "o-", label="whole lattice")
        ax.plot(self.alphas, self.rel_error_end.mean(1), "s--", label="final residual @ END")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("alpha")
        ax.set_ylabel("||real - linear|| / ||real||")
        ax.set_title(f"linear vs real response, source {self.source}", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


# --- sliced Green operators -------------------------------------------------------------------------
class _Block:
    """Products with G(target; source) = d phi(l2, t2) / d phi(l1, t1), averaged over chosen examples."""

    def __init__(self, fm, x: torch.Tensor, l1: int, t1: torch.Tensor, l2: int, t2: torch.Tensor):
        # only positions 0..max(t2) and blocks l1..l2-1 can reach the target
        x = x[:, :int(t2.max()) + 1]
        self.fm, self.x, self.l1, self.t1, self.l2, self.t2 = fm, x, l1, t1, l2, t2  # x [E, T', d]
        self.E, self.T, self.d = x.shape
        with torch.no_grad():  # warm per-length caches (rotary tables) outside the functorch transforms
            if not getattr(fm, "generic", False):
                fm.qkv(l1 if l1 < fm.n_layers else 0, x[:1], 0)
        self.calls = {"jvp": 0, "vjp": 0, "columns": 0}

    def _f(self, xr: torch.Tensor, ex: torch.Tensor) -> torch.Tensor:
        out = _forward_from(self.fm, xr, self.l1, self.l2)[-1]  # [rows, T', d]
        return out[torch.arange(xr.shape[0], device=xr.device), self.t2[ex]]

    def matmul(self, M: torch.Tensor) -> torch.Tensor:
        """G @ M for M ``[d, k]`` (columns as rows of a stacked batch); returns ``[d, k]``."""
        k = M.shape[1]
        ex = torch.arange(self.E, device=M.device).repeat_interleave(k)
        xr = self.x[ex]
        tan = torch.zeros_like(xr)
        tan[torch.arange(len(ex), device=M.device), self.t1[ex]] = M.T.repeat(self.E, 1).to(xr.dtype)
        with torch.no_grad():
            _, out = torch.func.jvp(lambda x_: self._f(x_, ex), (xr,), (tan,))
        self.calls["jvp"] += 1
        self.calls["columns"] += k
        return out.view(self.E, k, self.d).mean(0).T

    def rmatmul(self, M: torch.Tensor) -> torch.Tensor:
        """G^T @ M for M ``[d, k]``; returns ``[d, k]``."""
        k = M.shape[1]
        ex = torch.arange(self.E, device=M.device).repeat_interleave(k)
        xr = self.x[ex]
        with torch.enable_grad():
            _, vjp_fn = torch.func.vjp(lambda x_: self._f(x_, ex), xr)
            (g,) = vjp_fn(M.T.repeat(self.E, 1).to(xr.dtype))
        self.calls["vjp"] += 1
        self.calls["columns"] += k
        g = g[torch.arange(len(ex), device=M.device), self.t1[ex]]
        return g.view(self.E, k, self.d).mean(0).T.detach()


@dataclass
class GreenSlice:
    """A rank-k description G_k = U diag(S) V^T of the block G(target; source) (d_model x d_model).

    U: ``[d, k]`` output directions (at the target site), S: ``[k]``, V: ``[d, k]`` input directions (at the
    source site). ``explained`` = sum S^2 / ||G||_F^2 where ||G||_F^2 = sum S^2 + a Hutchinson estimate of
    ||G - G_k||_F^2 from ``n_probe`` Gaussian probes (``explained_se`` its standard error).
    ``example``: the example whose block this is, or "mean" (the block averaged over all examples).
    """

    source_site: Site
    target_site: Site
    example: Union[int, str]
    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor
    explained: float
    explained_se: float
    frob2: float
    rank: int
    n_iter: int
    oversample: int
    cost: dict = dc_field(default_factory=dict)
    _ctx: dict = dc_field(default_factory=dict, repr=False)

    def predict(self, delta: torch.Tensor) -> torch.Tensor:
        """G_k @ delta for ``delta [d]`` or ``[n, d]`` (rows); SourceError for another shape."""
        d = torch.as_tensor(delta).to(self.U.device, self.U.dtype)
        D = self.U.shape[0]
        if d.ndim not in (1, 2) or d.shape[-1] != D:
            raise SourceError(f"delta must be [{D}] or [n, {D}] (d_model = {D}), got shape {tuple(d.shape)}")
        return ((d @ self.V) * self.S) @ self.U.T

    def matrix(self) -> torch.Tensor:
        """The dense rank-k matrix ``[d, d]`` (small d only)."""
        return (self.U * self.S) @ self.V.T

    def check(self, ds=None, alpha: float = 1.0) -> dict:
        """How well predictions through the slice match real propagated differences at the target site.

        For each example b of ``ds`` (default: the data set of the slice): delta_b = the patch delta at the
        source (``alpha`` times), real_b = the real propagated difference at the target, and
        rel_error_slice[b] = ||G_k delta_b - real_b|| / ||real_b||; rel_error_full[b] the same for the full
        linear response G_b delta_b (one JVP; the error of linearization alone), and
        captured[b] = ||U U^T real_b|| / ||real_b|| (how much of the real difference lies in the slice's
        output space). Examples with a zero delta get NaN.
        """
        ctx = self._ctx
        field = ctx["field"]
        ds = ds if ds is not None else ctx["ds"]
        fm = field.require_functional()
        r, tgt, src = _target_run(field, ds, ctx["which"])
        l1, l2 = _phi_layer(self.source_site), _phi_layer(self.target_site)
        p1 = _positions(ds, self.source_site, tgt.resid.device)
        p2 = _positions(ds, self.target_site, tgt.resid.device)
        b = torch.arange(ds.n, device=p1.device)
        delta = alpha * (src.resid[l1][b, p1] - tgt.resid[l1][b, p1])
        x = tgt.resid[l1]
        tan = _tangent(x, p1, delta)
        with torch.no_grad():
            base = _forward_from(fm, x, l1)[l2 - l1][b, p2]
            real = _forward_from(fm, x + tan, l1)[l2 - l1][b, p2] - base
            _, lin = torch.func.jvp(lambda x_: _forward_from(fm, x_, l1)[l2 - l1][b, p2], (x,), (tan,))
        pred = self.predict(delta).to(real.dtype)
        rn = real.norm(dim=-1)
        ok = rn > 0

        def rel(a):
            return to_numpy(torch.where(ok, (a - real).norm(dim=-1) / rn.clamp_min(1e-300), torch.full_like(rn, float("nan"))))
        cap = (real @ self.U.to(real.dtype)).norm(dim=-1)
        out = {"rel_error_slice": rel(pred), "rel_error_full": rel(lin),
               "captured": to_numpy(torch.where(ok, cap / rn.clamp_min(1e-300), torch.full_like(rn, float("nan")))),
               "real_norm": to_numpy(rn), "alpha": alpha, "n": ds.n}
        for k in ("rel_error_slice", "rel_error_full", "captured"):
            v = out[k]
            out[k + "_median"] = float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan")
        return out

    def summary(self) -> str:
        """A readable one-line summary: the block, example, rank, explained fraction with its standard error, the
        leading singular values and the passes used."""
        s = to_numpy(self.S)
        return (f"GreenSlice(G({self.target_site.label}; {self.source_site.label}), example {self.example}, "
                f"rank {self.rank}, n_iter {self.n_iter}): explained {self.explained:.3f} +- {self.explained_se:.3f} "
                f"of ||G||_F^2 = {self.frob2:.4g}; singular values {', '.join(f'{v:.3g}' for v in s[:6])}"
                f"{', ...' if s.size > 6 else ''}; {self.cost.get('jvp', 0)} JVP + {self.cost.get('vjp', 0)} VJP "
                f"batched passes")

    __repr__ = summary

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html

        return rich_html(self, self.plot)

    def to_dict(self, include_vectors: bool = False) -> dict:
        """A JSON-safe dict: source and target sites, example, ``S [k]``, explained fraction and its standard
        error, settings and cost; ``include_vectors=True`` adds ``U``/``V [d_model, k]``."""
        d = {"kind": "green_slice", "source_site": self.source_site.to_dict(),
             "target_site": self.target_site.to_dict(), "example": self.example, "S": self.S,
             "explained": self.explained, "explained_se": self.explained_se, "frob2": self.frob2,
             "rank": self.rank, "n_iter": self.n_iter, "oversample": self.oversample, "cost": self.cost}
        if include_vectors:
            d.update(U=self.U, V=self.V)
        return jsonable(d)

    def plot(self, ax=None):
        """Singular values and the cumulative explained fraction."""
        plt = pyplot()
        fig, ax = (plt.subplots(figsize=(5, 3.5)) if ax is None else (ax.figure, ax))
        s2 = to_numpy(self.S) ** 2
        ks = np.arange(1, s2.size + 1)
        ax.bar(ks, to_numpy(self.S), color="tab:blue")
        ax.set_xlabel("k")
        ax.set_ylabel("singular value")
        ax2 = ax.twinx()
        ax2.plot(ks, np.cumsum(s2) / self.frob2, "o-", color="tab:red")
        ax2.set_ylabel("cumulative explained ||G||_F^2")
        ax2.set_ylim(0, 1.05)
        ax.set_title(f"G({self.target_site.label}; {self.source_site.label}) rank {self.rank}", fontsize=9)
        fig.tight_layout()
        return fig


def _orth(Y: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns of ``Y [d, k]``; QR in float32 at least (no half-precision QR on CPUs)."""
    work = Y if Y.dtype in (torch.float32, torch.float64) else Y.float()
    return torch.linalg.qr(work, mode="reduced")[0].to(Y.dtype)


def green_slice(field, ds, source_site, target_site, rank: int = 8, n_iter: int = 2, oversample: int = 8,
                seed: int = 0, example: Union[int, str] = 0, which: str = "corrupt", n_probe: int = 16) -> GreenSlice:
    """Rank-``rank`` randomized SVD of G(target_site; source_site), linearized around the ``which`` run.

    example: an example index (default 0), or "mean" for the block averaged over all examples.
    Cost: (2 + 2 * n_iter) batched passes of ``rank + oversample`` columns (JVP for G @ ., VJP for
    G^T @ .) plus one JVP pass of ``n_probe`` probes for the explained fraction.
    """
    fm = field.require_functional()
    n_iter = check_int("n_iter", n_iter, low=0)
    oversample = check_int("oversample", oversample, low=0)
    seed = check_int("seed", seed, low=0)
    n_probe = check_int("n_probe", n_probe, low=2, hint="Gaussian probes of the explained fraction (2 or more: its "
                        "standard error needs two)")
    s1 = _one_site(field, ds, source_site, "source_site")
    s2 = _one_site(field, ds, target_site, "target_site")
    l1, l2 = _phi_layer(s1), _phi_layer(s2)
    r, tgt, _ = _target_run(field, ds, which)
    dev = tgt.resid.device
    p1, p2 = _positions(ds, s1, dev), _positions(ds, s2, dev)
    if isinstance(example, str) and example == "mean":
        idx = torch.arange(ds.n, device=dev)
    else:
        example = check_int("example", example, low=-ds.n, high=ds.n - 1, error=UsageError,
                            hint=f"an example index 0..{ds.n - 1} (or -{ds.n}..-1), or 'mean'")
        idx = torch.tensor([example % ds.n], device=dev)
    if l2 < l1 or bool((p2[idx] < p1[idx]).any()):
        raise SiteError(f"target {s2.label} lies outside the forward light cone of {s1.label} "
                        "(needs layer' >= layer and pos' >= pos): the block G is exactly zero there")
    d = fm.d_model
    rank = check_int("rank", rank, low=1, high=d, hint="the rank of the slice, at most d_model")
    k = min(d, rank + oversample)
    G = _Block(fm, tgt.resid[l1][idx], l1, p1[idx], l2, p2[idx])
    dtype = tgt.resid.dtype
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    Omega = torch.randn(d, k, generator=gen, dtype=torch.float64).to(dev, dtype)
    Q = _orth(G.matmul(Omega))
    for _ in range(int(n_iter)):
        Q = _orth(G.rmatmul(Q))
        Q = _orth(G.matmul(Q))
    Bt = G.rmatmul(Q)  # G^T Q = B^T, [d, k]
    Ub, S, Vt = torch.linalg.svd(Bt.T.double(), full_matrices=False)  # B = Q^T G [k, d]
    U = (Q.double() @ Ub)[:, :rank].to(dtype)
    S_k, V = S[:rank].to(dtype), Vt[:rank].T.to(dtype)
    # explained fraction: ||G_k||^2 / (||G_k||^2 + Hutchinson estimate of ||G - G_k||_F^2)
    W = torch.randn(d, int(n_probe), generator=gen, dtype=torch.float64).to(dev, dtype)
    Rw = (G.matmul(W) - (U * S_k) @ (V.T @ W)).double()
    res = Rw.pow(2).sum(0)  # [n_probe] unbiased for ||G - G_k||_F^2
    sk2 = float((S_k.double() ** 2).sum())
    res_mean = float(res.mean())
    res_se = float(res.std(unbiased=True) / math.sqrt(res.numel())) if res.numel() > 1 else float("nan")
    frob2 = sk2 + res_mean
    explained = sk2 / frob2 if frob2 > 0 else float("nan")
    explained_se = sk2 * res_se / frob2 ** 2 if frob2 > 0 else float("nan")
    cost = dict(G.calls, n_probe=int(n_probe), columns_per_pass=k, examples=int(idx.numel()))
    return GreenSlice(s1, s2, example, U, S_k, V, explained, explained_se, frob2, rank, int(n_iter), k - rank,
                      cost=cost, _ctx={"field": field, "ds": ds, "which": which})
