"""Response objects: sensitivity fields, first-order and integrated predictions, alpha sweeps and
the linear regime, and adjoint site selection.

- ``sensitivity``: S(l, t) = dm/dphi(l, t) for every site from one backward pass through the
  target run (``torch.autograd.grad`` on captured activations, never parameter gradients).
- ``predict``: a PatchResult-shaped prediction of ``field.patch`` for the same sites:
  ``method="gradient", order=1`` is S . delta (attribution patching); ``order=2`` adds the exact
  second directional derivative 1/2 delta^T H delta of each site's own path (forward-over-forward
  JVP through the light cone); ``method="integrated"`` averages the gradient over ``steps`` points of
  the straight path from the target run to the source run (EAP-IG style), so one prediction costs
  ``steps`` forward+backward passes whatever the number of sites.
- ``scale_sweep``: the metric response to phi <- phi + alpha * delta for each alpha at one site,
  per example, with the first-order line; ``Sweep.linear_regime`` estimates alpha*.
- ``select_sites``: the inverse problem: rank candidate sites by predicted effect, take the top k,
  patch them jointly, and report predicted versus real recovery and the recall of the real top k.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field as dc_field
from typing import Any, Optional

import numpy as np
import torch

from fieldcheck.jsonable import jsonable as _jsonable
from fieldcheck.errors import SiteError, SourceError, UsageError, check_choice, check_int, check_number
from fieldcheck.field.core import DIRECTIONS, WHICH, check_dataset
from fieldcheck.field.metrics import as_metric
from fieldcheck.field.results import PatchResult, dataset_hash_of
from fieldcheck.field.sites import Site, as_site_set, layer_index, resid_pre
from fieldcheck.field.sources import as_source, check_alpha
from fieldcheck.measures import alpha_star_of


# --- differentiable forwards -------------------------------------------------------------------
def _forward_collect(fm, x0: torch.Tensor, l0: int = 0):
    """Forward from ``x0 [B, T, d]`` = phi(l0) (the embeddings for ``l0 = 0``) keeping every site
    activation of blocks l0.. in the graph.

    Returns dict with lists: resid (L+1-l0) [B,T,d], mid (L-l0), z (L-l0) [B,T,H,dh], mlp_out,
    attn_out (L-l0), for layers l0..
    """
    if getattr(fm, "generic", False) and l0 == 0:  # the hooked fallback: one bridge forward
        return fm.forward_collect(x0)
    acts: dict[str, list] = {"resid": [x0], "mid": [], "z": [], "mlp_out": [], "attn_out": []}
    x = x0
    for l in range(l0, fm.n_layers):
        q, k, v = fm.qkv(l, x, 0)
        z = fm.attend(q, k, v, 0, l)
        acts["z"].append(z)
        a = fm.o_proj(l, z)
        acts["attn_out"].append(a)
        x_mid = x + a
        acts["mid"].append(x_mid)
        m = fm.mlp(l, fm.mlp_in(x, x_mid))
        acts["mlp_out"].append(m)
        x = x_mid + m
        acts["resid"].append(x)
    return acts


def _metric_at_end(field, m, r, x_final_full: torch.Tensor, ex: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Metric per example from the full final residual ``[b, T, d]`` of examples ``ex`` (default: all)."""
    b = x_final_full.shape[0]
    rows = torch.arange(b, device=x_final_full.device)
    ex = rows if ex is None else ex.to(x_final_full.device)
    pos = r.metric_pos.to(x_final_full.device)[ex]
    ref = None
    if m.name == "kl":
        xc = r.clean.resid[-1][ex, pos]
        ref = torch.log_softmax(field.fm.unembed(field.fm.final_norm(xc)).float(), -1)
    return m(field.fm, x_final_full[rows, pos], ex, r.ds, ref)


@dataclass
class Sensitivity:
    """dm/d(activation) at every site of the target run.

    resid: ``[layer(0..L), batch, pos, d_model]``; resid_mid, attn_out, mlp_out: ``[layer, batch, pos, d_model]``;
    z: ``[layer, batch, pos, head, d_head]``. ``metric`` is the metric's value on the run, ``[batch]``.
    """

    resid: torch.Tensor
    resid_mid: torch.Tensor
    mlp_out: torch.Tensor
    attn_out: torch.Tensor
    z: torch.Tensor
    metric_value: torch.Tensor
    run: str
    metric: str
    cost: dict = dc_field(default_factory=dict)

    def at(self, site: Site, pos: torch.Tensor) -> torch.Tensor:
        """The sensitivity at ``site`` (a Site; its position is ignored) for each example ``[batch, dim]``,
        read at the positions ``pos [batch]``. SiteError naming the layers, heads or positions that exist
        when the site or a position is out of range."""
        if not isinstance(site, Site) or site.kind not in _SENS_KEY:
            raise SiteError(f"{site!r} is not a Site; use e.g. fieldcheck.sites.Site('resid_pre', 3, 'END')")
        L1, B, T = self.resid.shape[:3]
        rows = L1 if site.kind == "resid_pre" else L1 - 1
        l = layer_index(site.layer, rows, f"the {site.kind} sensitivities of this {L1 - 1}-block model")
        pos = torch.as_tensor(pos)
        if pos.shape != (B,) or pos.is_floating_point() or bool(((pos < 0) | (pos >= T)).any()):
            raise SiteError(f"pos must be {B} positions (one per example) in 0..{T - 1}, got {pos.tolist()}")
        if site.kind == "attn_head" and (not isinstance(site.head, int) or not 0 <= site.head < self.z.shape[3]):
            raise SiteError(f"head {site.head!r} out of range: the model has heads 0..{self.z.shape[3] - 1}")
        b = torch.arange(pos.shape[0])
        table = {"resid_pre": lambda: self.resid[l], "resid_post": lambda: self.resid[l + 1],
                 "resid_mid": lambda: self.resid_mid[l], "attn_out": lambda: self.attn_out[l],
                 "mlp_out": lambda: self.mlp_out[l]}
        if site.kind == "attn_head":
            return self.z[l][b, pos, site.head]
        return table[site.kind]()[b, pos]

    def norm(self) -> np.ndarray:
        """``[layer, pos]`` mean over examples of |S(l, t)|."""
        return self.resid.norm(dim=-1).mean(1).cpu().numpy()

    def heatmap(self, ax=None, tokens=None):
        """Layer x position heatmap of the mean |S(l, t)| (``norm()``) on ``ax`` (a new figure when None), with
        ``tokens`` as position labels when given; returns the Figure."""
        from fieldcheck.display import pyplot

        plt = pyplot()
        g = self.norm()
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4, 0.4 * g.shape[1] + 2), 4))
        else:
            fig = ax.figure
        im = ax.imshow(g, aspect="auto", origin="lower", cmap="viridis")
        ax.set_xlabel("position")
        ax.set_ylabel("layer")
        if tokens is not None:
            ax.set_xticks(range(len(tokens)))
            ax.set_xticklabels(tokens, rotation=90, fontsize=7)
        fig.colorbar(im, ax=ax, label=f"|d {self.metric} / d phi|")
        ax.set_title(f"sensitivity field ({self.run} run)", fontsize=9)
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        """A JSON-safe dict: run, metric, ``norm [layer, pos]``, ``metric_value [batch]`` and cost (not the full
        gradients)."""
        return _jsonable({"run": self.run, "metric": self.metric, "norm": self.norm(),
                          "metric_value": self.metric_value.cpu().numpy(), "cost": self.cost})

    def __repr__(self) -> str:
        g = self.norm()
        l, t = np.unravel_index(np.argmax(g), g.shape)
        return (f"Sensitivity({self.metric} on the {self.run} run: {g.shape[0]} layers x {g.shape[1]} positions, "
                f"largest |S| = {g.max():.3g} at L{l}@P{t}; {self.cost.get('backward', 1)} backward pass)")

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html

        return rich_html(self, self.heatmap)


def _sens_one_pass(field, r, m, x0: torch.Tensor, ex: Optional[torch.Tensor] = None,
                   l0: int = 0) -> tuple[dict, torch.Tensor]:
    """Gradients of the metric at every activation of blocks ``l0..`` of the forward from ``x0`` =
    phi(l0) ``[batch, pos, d_model]``; the entries of earlier layers are zeros (callers that pass
    ``l0 > 0`` read none)."""
    home = x0.device
    x0 = x0.detach().requires_grad_(True)
    with torch.enable_grad():
        acts = _forward_collect(field.fm, x0, l0)
        val = _metric_at_end(field, m, r, acts["resid"][-1], ex)
        inputs = acts["resid"] + acts["mid"] + acts["mlp_out"] + acts["attn_out"] + acts["z"]
        grads = torch.autograd.grad(val.sum(), inputs, allow_unused=True)
    n = field.n_layers - l0
    g = [(torch.zeros_like(t) if gr is None else gr).to(home) for t, gr in zip(inputs, grads)]
    parts = {"resid": g[:n + 1], "mid": g[n + 1:2 * n + 1], "mlp_out": g[2 * n + 1:3 * n + 1],
             "attn_out": g[3 * n + 1:4 * n + 1], "z": g[4 * n + 1:]}
    B, T, D = x0.shape
    # a start at the final residual (l0 = n_layers: a resid_post site of the last block) runs no block:
    # every per-block entry is zeros of its shape
    like = {"z": x0.new_zeros(B, T, field.fm.n_heads, field.fm.d_head, device=home)}
    out = {k: torch.stack([torch.zeros_like(v[0] if v else like.get(k, g[0]))] * l0 + v) for k, v in parts.items()}
    return out, val.detach().to(home)


def examples_per_backward(fm, T: int, itemsize: int, budget: int) -> int:
    """Examples one forward+backward through every site may take under ``budget`` bytes: per
    example and layer, the activations autograd keeps (about 12 d_model + 4 d_mlp + 2 heads x T
    numbers per position) and the gradients returned (5 d_model per position)."""
    d_mlp = getattr(fm, "d_mlp", 4 * fm.d_model)
    per_ex = fm.n_layers * T * ((17 * fm.d_model + 4 * d_mlp) * itemsize + 2 * fm.n_heads * T * 4)
    return max(1, int(budget // max(per_ex, 1)))


def _sens_from_x0(field, r, m, x0: torch.Tensor, l0: int = 0) -> tuple[dict, torch.Tensor]:
    """Sensitivities of every site for ``x0 [batch, pos, d_model]`` = phi(l0) (the embeddings for
    ``l0 = 0``), in chunks of
    examples under the field's memory budget; non-finite gradients are an error naming the layer."""
    from fieldcheck.field.memory import oom_hint
    from fieldcheck.field.precision import check_grads

    B, T = x0.shape[:2]
    size = examples_per_backward(field.fm, T, x0.element_size(), field.memory_budget)
    parts = []
    with oom_hint(f"computing sensitivities of {min(size, B)} example(s) per backward", field.memory_budget):
        for s0 in range(0, B, size):
            ex = torch.arange(s0, min(B, s0 + size), device=x0.device)
            parts.append(_sens_one_pass(field, r, m, x0[s0:s0 + size], None if size >= B else ex, l0))
    if len(parts) == 1:
        out, val = parts[0]
    else:
        out = {k: torch.cat([p[0][k] for p in parts], dim=1) for k in parts[0][0]}
        val = torch.cat([p[1] for p in parts])
    check_grads(out, f"the sensitivity dm/dphi ({m.name})", x0.dtype)
    return out, val


def sensitivity(field, ds, metric="logit_diff", run: str = "corrupt") -> Sensitivity:
    """S = dm/dphi at every site of the ``run`` ("corrupt" for denoising, "clean" for noising)."""
    check_choice("run", run, WHICH, hint="the run differentiated ('corrupt' for denoising, 'clean' for noising)")
    m = as_metric(metric)
    r = field.run(ds)
    cache = r.clean if run == "clean" else r.corrupt
    t0 = time.perf_counter()
    g, val = _sens_from_x0(field, r, m, cache.resid[0])
    return Sensitivity(g["resid"], g["mid"], g["mlp_out"], g["attn_out"], g["z"], val, run, m.name,
                       {"forward": 1, "backward": 1, "seconds": time.perf_counter() - t0})


def _integrated_sens(field, ds, m, direction: str, steps: int) -> dict:
    """Mean sensitivity along the straight path of the embeddings from the target to the source run."""
    r = field.run(ds)
    tgt, src = r.target(direction), r.source(direction)
    e0, e1 = tgt.resid[0], src.resid[0]
    acc = None
    for k in range(steps):
        a = (k + 0.5) / steps  # midpoint rule on (0, 1)
        g, _ = _sens_from_x0(field, r, m, e0 + a * (e1 - e0))
        acc = g if acc is None else {key: acc[key] + g[key] for key in acc}
    return {key: v / steps for key, v in acc.items()}


_SENS_KEY = {"resid_pre": ("resid", 0), "resid_post": ("resid", 1), "resid_mid": ("mid", 0),
             "attn_out": ("attn_out", 0), "mlp_out": ("mlp_out", 0), "attn_head": ("z", 0)}


def _site_grad(g: dict, site: Site, pos: torch.Tensor) -> torch.Tensor:
    key, off = _SENS_KEY[site.kind]
    b = torch.arange(pos.shape[0], device=pos.device)
    t = g[key][site.layer + off]
    return t[b, pos, site.head] if site.kind == "attn_head" else t[b, pos]


METHODS = ("gradient", "integrated")


def predict(field, ds, sites, order: int = 1, method: str = "gradient", steps: int = 8,
            direction: str = "denoise", source=None, alpha: float = 1.0, metric="logit_diff") -> PatchResult:
    """Predict ``field.patch(ds, sites, ...)`` per site and example without patching.

    order=1 (gradient): S . delta. order=2: plus 1/2 d^2m/da^2 along each site's own path (exact,
    forward-over-forward JVP; costs ~3 light-cone forwards per site). method="integrated": the
    gradient averaged over ``steps`` points between the target and source runs (EAP-IG), dotted with
    delta; costs ``steps`` forward+backward passes in all.
    """
    check_choice("method", method, METHODS)
    check_choice("order", order, (1, 2))
    steps = check_int("steps", steps, low=1, hint="integration points of method='integrated'")
    check_choice("direction", direction, DIRECTIONS)
    alpha = check_alpha(alpha)
    src = as_source(source)
    m = as_metric(metric)
    r = field.run(ds)
    site_list = list(dict.fromkeys(as_site_set(sites).resolve(field.n_layers, field.n_heads, ds.seq_len,
                                                              ds.position_names)))
    t_start = time.perf_counter()
    if method == "integrated":
        if src.kind != "other":
            raise SourceError("method='integrated' integrates between the two runs; it needs the default source")
        g = _integrated_sens(field, ds, m, direction, steps)
        cost = {"forward": steps, "backward": steps}
    else:
        # the gradient at a site needs only the forward from the earliest site's layer on: start the
        # graph at the target run's cached phi(l0) (the same numbers as a forward from the embeddings)
        l0 = 0 if getattr(field.fm, "generic", False) else min(s.layer + (s.kind == "resid_post") for s in site_list)
        cache = r.target(direction)
        g, _ = _sens_from_x0(field, r, m, cache.resid[l0], l0)
        cost = {"forward": 1, "backward": 1, "from_layer": l0}
    base_c, base_k = field.metric_values(ds, m, "clean"), field.metric_values(ds, m, "corrupt")
    target = base_k if direction == "denoise" else base_c
    vals = torch.zeros(len(site_list), ds.n, dtype=torch.float64)
    n_second = 0
    for i, site in enumerate(site_list):
        _, delta = field.injections(r, site, direction, src, alpha)
        delta = alpha * delta
        pos = _positions(ds, site, field.device)
        lin = (_site_grad(g, site, pos) * delta).sum(-1).double()
        if order == 2 and site.kind == "resid_pre":
            lin = lin + 0.5 * _second_derivative(field, r, m, site, pos, delta, direction).double()
            n_second += 1
        vals[i] = target.double() + lin
    if order == 2:
        cost["second_order_sites"] = n_second
        cost["jvp2_passes"] = n_second
    cost["seconds"] = time.perf_counter() - t_start
    name = f"{method}" + (f"(steps={steps})" if method == "integrated" else f"(order={order})")
    return PatchResult(sites=site_list, values=vals, baseline_clean=base_c, baseline_corrupt=base_k,
                       direction=direction, metric=m.name, jointly=False, alpha=alpha, source=src.describe(),
                       dataset=getattr(ds, "name", ""), method=f"predict:{name}", cost=cost,
                       dataset_hash=dataset_hash_of(ds))


def _positions(ds, site: Site, device) -> torch.Tensor:
    if isinstance(site.pos, str):
        return ds.position(site.pos).to(device)
    return torch.full((ds.n,), int(site.pos), device=device, dtype=torch.long)


def _second_derivative(field, r, m, site: Site, pos: torch.Tensor, delta: torch.Tensor, direction: str):
    """d^2/da^2 m(phi_target with phi(l, t) += a * delta) at a = 0, per example (forward-over-forward)."""
    from torch.func import jvp

    fm = field.fm
    cache = r.target(direction)
    l = site.layer
    B, T = cache.tokens.shape
    onehot = torch.zeros(B, T, 1, dtype=cache.resid.dtype, device=cache.resid.device)
    onehot[torch.arange(B), pos] = 1.0
    tangent_field = onehot * delta[:, None, :].to(cache.resid.dtype)
    x_l = cache.resid[l]

    def f(a):
        x = x_l + a * tangent_field
        for j in range(l, fm.n_layers):
            x, _, _, _ = fm.block(j, x)
        return _metric_at_end(field, m, r, x)

    def df(a):
        return jvp(f, (a,), (torch.ones_like(a),))[1]

    a0 = torch.zeros((), dtype=cache.resid.dtype, device=cache.resid.device)
    return jvp(df, (a0,), (torch.ones_like(a0),))[1].detach()


# --- alpha sweeps and the linear regime -----------------------------------------------------------
@dataclass
class LinearRegime:
    """alpha*: the largest alpha whose mean effect stays within ``tol`` of the tangent line."""

    alpha_star: float
    interval: tuple[float, float]
    tol: float
    n: int
    level: float = 0.9

    def to_dict(self) -> dict:
        """A JSON-safe dict: alpha_star, its interval, tol, n and the confidence level."""
        return _jsonable(self.__dict__)

    def __repr__(self) -> str:
        return (f"LinearRegime(alpha* = {self.alpha_star:.3g} [{self.interval[0]:.3g}, {self.interval[1]:.3g}] "
                f"({round(self.level * 100)}% bootstrap interval, n={self.n}), tol={self.tol:g})")


@dataclass
class Sweep:
    """Metric response to phi <- phi + alpha * delta at one site.

    alphas ``[n_alpha]``; values/effect/linear ``[n_alpha, batch]`` (linear = alpha * S . delta).
    """

    site: Site
    alphas: np.ndarray
    values: np.ndarray
    baseline: np.ndarray
    slope: np.ndarray
    direction: str
    metric: str
    source: str

    @property
    def effect(self) -> np.ndarray:
        """``[n_alpha, batch]``: the metric at each alpha minus the unpatched baseline."""
        return self.values - self.baseline[None]

    @property
    def linear(self) -> np.ndarray:
        """``[n_alpha, batch]``: the first-order prediction alpha * S . delta (the tangent line)."""
        return self.alphas[:, None] * self.slope[None]

    @property
    def n(self) -> int:
        """Number of examples (the ``batch`` axis)."""
        return self.values.shape[1]

    def deviation(self) -> np.ndarray:
        """``[n_alpha]`` relative deviation of the mean effect from the mean tangent line."""
        me, ml = self.effect.mean(1), self.linear.mean(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(me - ml) / np.maximum(np.abs(ml), 1e-12)

    def linear_regime(self, tol: float = 0.1, n_boot: int = 1000, seed: int = 0, level: float = 0.9) -> LinearRegime:
        """alpha*: the largest alpha up to which the mean effect stays within relative ``tol`` (default 0.1) of
        the tangent line, with a percentile bootstrap interval (``n_boot`` resamples seeded by
        ``seed``, confidence ``level``). Returns a :class:`LinearRegime`."""
        tol = check_number("tol", tol, low=0, low_open=True, hint="the relative deviation allowed, e.g. 0.1")
        n_boot = check_int("n_boot", n_boot, low=1)
        seed = check_int("seed", seed, low=0)
        level = check_number("level", level, low=0, high=1, low_open=True, high_open=True)
        order = np.argsort(self.alphas)
        al, E, L = self.alphas[order], self.effect[order], self.linear[order]
        tiny = max(1e-12 * float(np.abs(L.mean(1)).max()), 1e-300)
        est = float(alpha_star_of(al, E.mean(1), L.mean(1), tol, tiny))
        rng = np.random.default_rng(seed)
        boots = []
        for _ in range(n_boot):
            idx = rng.integers(0, self.n, self.n)
            boots.append(float(alpha_star_of(al, E[:, idx].mean(1), L[:, idx].mean(1), tol, tiny)))
        lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2], method="inverted_cdf")
        return LinearRegime(est, (float(lo), float(hi)), tol, self.n, level)

    def plot(self, ax=None):
        """Effect against alpha (a few examples in grey, the mean) with the mean first-order line, on ``ax`` (a
        new figure when None); returns the Figure."""
        from fieldcheck.display import pyplot

        plt = pyplot()
        if ax is None:
            fig, ax = plt.subplots(figsize=(5, 3.5))
        else:
            fig = ax.figure
        for b in range(min(self.n, 12)):
            ax.plot(self.alphas, self.effect[:, b], color="0.8", lw=0.7)
        ax.plot(self.alphas, self.effect.mean(1), "o-", label="real (mean)")
        ax.plot(self.alphas, self.linear.mean(1), "--", label="first order (mean)")
        ax.set_xlabel("alpha")
        ax.set_ylabel(f"effect on {self.metric}")
        ax.set_title(f"alpha sweep at {self.site.label}", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        """A JSON-safe dict: site, ``alphas [n_alpha]``, ``effect``/``linear [n_alpha, batch]``, direction,
        metric, source and the deviation ``[n_alpha]``."""
        return _jsonable({"site": self.site.to_dict(), "alphas": self.alphas, "effect": self.effect,
                          "linear": self.linear, "direction": self.direction, "metric": self.metric,
                          "source": self.source, "deviation": self.deviation()})

    def __repr__(self) -> str:
        dev = self.deviation()
        return (f"Sweep({self.site.label}, {len(self.alphas)} alphas in [{self.alphas.min():g}, {self.alphas.max():g}], "
                f"n={self.n}; relative deviation from the tangent: "
                + ", ".join(f"{a:g}:{d:.2g}" for a, d in zip(self.alphas, dev)) + ")")

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html

        return rich_html(self, self.plot)


DEFAULT_ALPHAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def _alpha_grid(alphas) -> np.ndarray:
    """``[n_alpha]`` finite scales from a list (default DEFAULT_ALPHAS); SourceError naming the bad one."""
    if alphas is None:
        return np.asarray(DEFAULT_ALPHAS, dtype=float)
    if isinstance(alphas, (str, bytes)) or not hasattr(alphas, "__len__") or len(alphas) == 0:
        raise SourceError(f"alphas must be a non-empty list of scales such as [0, 0.1, 0.5, 1.0], got {alphas!r}")
    return np.asarray([check_alpha(a) for a in alphas], dtype=float)


def scale_sweep(field, ds, site, alphas=None, direction: str = "denoise", source=None,
                metric="logit_diff") -> Sweep:
    """The metric response at one site for each alpha, per example, with the first-order line."""
    check_dataset(ds, field.model)
    sl = as_site_set(site).resolve(field.n_layers, field.n_heads, ds.seq_len, ds.position_names)
    if len(sl) != 1:
        raise SiteError(f"scale_sweep takes one site, got {len(sl)} ({', '.join(s.label for s in sl[:4])}...)")
    s = sl[0]
    alphas = _alpha_grid(alphas)
    m = as_metric(metric)
    values = np.stack([field.patch(ds, [s], direction=direction, source=source, alpha=float(a), metric=m,
                                   progress=False).values[0] for a in alphas])
    pred = predict(field, ds, [s], order=1, direction=direction, source=source, alpha=1.0, metric=m)
    base = pred.baseline_target
    slope = pred.values[0] - base
    return Sweep(s, alphas, values, base, slope, direction, m.name, as_source(source).describe())


# --- adjoint site selection -------------------------------------------------------------------------
@dataclass
class Selection:
    """Top-k sites by predicted effect, verified by patching them jointly.

    predicted: ``[batch]`` predicted effect of the joint patch (sum of the chosen sites' predictions);
    real: the joint PatchResult; recall: share of the real top-k (by single-site patches) that the
    prediction chose (None when not verified).
    """

    sites: list[Site]
    predicted: np.ndarray
    real: PatchResult
    recall: Optional[float]
    ranking: list[tuple[str, float]]
    gap: np.ndarray
    method: str
    cost: dict = dc_field(default_factory=dict)

    @property
    def predicted_recovered(self) -> float:
        """The predicted recovered fraction of the joint patch: sum(predicted) / sum(clean - corrupt gap) over
        the examples."""
        return float(self.predicted.sum() / self.gap.sum())

    @property
    def real_recovered(self) -> float:
        """Recovered fraction of the joint patch, sum(patched - corrupt) / sum(clean - corrupt)."""
        return float((self.real.values[0] - self.real.baseline_corrupt).sum() / self.gap.sum())

    def to_dict(self) -> dict:
        """A JSON-safe dict: chosen sites, ``predicted [batch]``, the real joint patch, recall, ranking,
        predicted and real recovered fractions, method and cost."""
        return _jsonable({"sites": [s.to_dict() for s in self.sites], "predicted": self.predicted,
                          "real": self.real.to_dict(), "recall": self.recall, "ranking": self.ranking,
                          "predicted_recovered": self.predicted_recovered, "real_recovered": self.real_recovered,
                          "method": self.method, "cost": self.cost})

    def __repr__(self) -> str:
        rec = "not verified" if self.recall is None else f"{self.recall:.2f}"
        return (f"Selection(k={len(self.sites)}: {', '.join(s.label for s in self.sites)}; "
                f"predicted recovery {self.predicted_recovered:.3g}, real (joint patch) {self.real_recovered:.3g}; "
                f"recall of the real top-k {rec})")

    def plot(self, ax=None, top: int = 20):
        """The ``top`` candidates by predicted mean effect (chosen sites highlighted), with the
        predicted and the real (joint patch) recovery in the title; returns the Figure."""
        from fieldcheck.display import pyplot

        plt = pyplot()
        rows = self.ranking[:top]
        chosen = {s.label for s in self.sites}
        if ax is None:
            fig, ax = plt.subplots(figsize=(5, 0.25 * len(rows) + 1.2))
        else:
            fig = ax.figure
        ax.barh(range(len(rows)), [v for _, v in rows],
                color=["#c0392b" if lab in chosen else "0.7" for lab, _ in rows])
        ax.set_yticks(range(len(rows)), [lab for lab, _ in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("predicted mean effect")
        ax.set_title(f"top-{len(self.sites)} sites: predicted recovery {self.predicted_recovered:.2f}, "
                     f"real {self.real_recovered:.2f}", fontsize=9)
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html

        return rich_html(self, self.plot)


def select_sites(field, ds, k: int, candidates=None, method: str = "integrated", steps: int = 8,
                 direction: str = "denoise", metric="logit_diff", verify_recall: bool = True,
                 prediction: Optional[PatchResult] = None) -> Selection:
    """Rank candidates (default: every resid_pre site) by predicted mean effect, take the top k,
    patch them jointly, and compare. ``verify_recall`` also patches every candidate singly (cheap
    with the light-cone engine) to report the recall of the real top k. ``prediction``: reuse a
    ``field.predict`` result over the candidates instead of computing one."""
    k = check_int("k", k, low=1, hint="the number of sites to choose")
    check_choice("method", method, METHODS)
    check_int("steps", steps, low=1, hint="integration points of method='integrated'")
    check_choice("direction", direction, DIRECTIONS)
    check_dataset(ds, field.model)
    cands = candidates if candidates is not None else resid_pre("all", "all")
    t0 = time.perf_counter()
    if prediction is not None:
        if not isinstance(prediction, PatchResult):
            raise UsageError(f"prediction must be a field.predict(...) result over the candidates, got "
                             f"{type(prediction).__name__}")
        if prediction.direction != direction:
            raise UsageError(f"the prediction is for direction {prediction.direction!r}, not {direction!r}")
        pred = prediction
    else:
        pred = predict(field, ds, cands, method=method, steps=steps, direction=direction, metric=metric)
    me = pred.mean_effect
    sign = 1.0 if direction == "denoise" else -1.0
    order = np.argsort(-sign * me, kind="stable")
    if k > len(order):
        raise UsageError(f"k={k} but there are only {len(order)} candidate sites; choose k <= {len(order)} or give "
                         "more candidates")
    chosen = [pred.sites[i] for i in order[:k]]
    real = field.patch(ds, chosen, direction=direction, jointly=True, metric=metric)
    recall = None
    if verify_recall:
        single = field.patch(ds, pred.sites, direction=direction, metric=metric, progress=False)
        real_top = set(np.argsort(-sign * single.mean_effect, kind="stable")[:k].tolist())
        recall = len(real_top & set(order[:k].tolist())) / k
    predicted = pred.effect[order[:k]].sum(0)
    gap = pred.baseline_clean - pred.baseline_corrupt
    return Selection(chosen, predicted, real, recall, [(pred.labels[i], float(me[i])) for i in order[:max(k, 10)]],
                     gap, pred.method, {"seconds": time.perf_counter() - t0, **pred.cost})
