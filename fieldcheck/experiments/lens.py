"""Direct logit attribution and the logit lens, read from the cached runs.

**Direct logit attribution** (``dla``). The final residual at the metric position is a sum of
component outputs: the embeddings, each attention head (``z @ W_O[head]``), each attention
layer's output bias, each MLP. The final norm is affine once its scale is fixed,

    final_norm(x) = w * P(x) / s + b     (P = centering for LayerNorm, identity for RMSNorm),

so with the scale ``s`` **frozen at its value on the run itself** (the convention of
TransformerLens's ``apply_ln_to_stack``) the logit difference splits exactly into one term per
component, ``d . (w * P(c)) / s`` with ``d = W_U[answer] - W_U[wrong]``, plus a constant
``"bias"`` term ``d . b + b_U[answer] - b_U[wrong]``. The terms add up to the run's logit
difference (checked at run time). The scale is what the frozen convention hides: a component's
term is not the change in the metric if the component were removed (removing it changes ``s``).
In post-norm families (Gemma 2/3, OLMo-2: attn_out = norm(sum of head results)) a head's term is
its share of attn_out with the post-norm's scale frozen the same way (``fm.head_shares``), so the
heads of a block add up to its attention output and ``L{l}.attn_bias`` holds only the bias's
share. ``which="diff"`` gives clean minus corrupted terms, each run with its own scale, comparable to
the denoising effects of patching.

**Logit lens** (``logit_lens``). The cached residual ``phi(l, t)`` of every layer decoded
through the final norm and the unembedding: the answer's rank (0 = top token), the logit
difference answer - wrong, and the answer's probability, per layer and example.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field as dc_field
from typing import Any, Optional

import numpy as np
import torch

from fieldcheck.errors import NumericalError, SiteError, UsageError, check_choice, check_int, check_number
from fieldcheck.field.labels import parse, unknown
from fieldcheck.field.sites import layer_index
from fieldcheck.display import pyplot
from fieldcheck.jsonable import jsonable as _jsonable

_MAX_PLOT = 64


# --- the final norm as an affine map --------------------------------------------------------------
def final_norm_affine(fm, x: torch.Tensor):
    """``(scale [rows], weight [d], bias [d] or None, center)`` such that
    ``final_norm(x) = weight * P(x) / scale + bias``; checked against ``fm.final_norm``.

    Known forms: RMSNorm (``fm.w_norm``, ``fm.eps``) and LayerNorm (``fm.lnf = (w, b)``,
    ``fm.eps``); other families raise UnsupportedArchitecture (DLA needs the norm's form)."""
    from fieldcheck.field.arch import UnsupportedArchitecture

    xf = x.double()
    if hasattr(fm, "lnf") and hasattr(fm, "eps"):
        w, b = fm.lnf
        xc = xf - xf.mean(-1, keepdim=True)
        scale = torch.sqrt((xc * xc).mean(-1) + fm.eps)
        center, weight, bias = True, w, b
    elif hasattr(fm, "w_norm") and hasattr(fm, "eps"):
        scale = torch.sqrt(xf.pow(2).mean(-1) + fm.eps)
        center, weight, bias = False, fm.w_norm, None
    else:
        raise UnsupportedArchitecture(f"direct logit attribution does not know the final norm of "
                                      f"{type(fm).__name__}; it supports LayerNorm and RMSNorm models")
    recon = _apply_affine(xf, scale, weight, bias, center)
    ref = fm.final_norm(x).double()
    err = float((recon - ref).abs().max()) if x.numel() else 0.0
    tol = max(1e-4, 50 * torch.finfo(x.dtype).eps) * max(1.0, float(ref.abs().max())) \
        if x.dtype != torch.float64 else 1e-9
    if not err <= tol:
        raise NumericalError(f"the final norm of {type(fm).__name__} is not the LayerNorm/RMSNorm form that "
                             f"direct logit attribution assumes (max deviation {err:.3g}); DLA is not supported "
                             "for this model")
    return scale, weight, bias, center


def _apply_affine(x, scale, weight, bias, center):
    xc = x - x.mean(-1, keepdim=True) if center else x
    out = weight.double() * xc / scale[..., None]
    return out + bias.double() if bias is not None else out


# --- DLA -----------------------------------------------------------------------------------------
@dataclass
class DirectAttribution:
    """Direct contribution of each component to the logit difference at the metric position.

    values: ``[component, batch]`` for the requested components (``labels``: ``"embed"``,
    ``"L3.H5"``, ``"L3.attn_bias"``, ``"L3.mlp"``, ``"bias"``); total: ``[batch]``, the logit
    difference of the run (for ``which="diff"``: clean minus corrupted), which the terms of *all*
    components add up to; scale: ``[batch]`` the frozen final-norm scale (``[2, batch]`` for diff).
    """

    labels: list[str]
    values: np.ndarray
    total: np.ndarray
    scale: np.ndarray
    which: str = "clean"
    dataset: str = ""
    n_layers: int = 0
    n_heads: int = 0
    sum_error: float = 0.0
    cost: dict = dc_field(default_factory=dict)

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=float)
        self.total = np.asarray(self.total, dtype=float)

    @property
    def n(self) -> int:
        """Number of examples (the ``batch`` axis of ``values``)."""
        return self.values.shape[1]

    @property
    def mean(self) -> np.ndarray:
        """``[component]`` mean direct term over the examples, in the order of ``labels``."""
        return self.values.mean(1)

    @property
    def share(self) -> float:
        """Sum of the requested components' terms over the total, ratio of means over examples."""
        return float(self.values.sum(0).sum() / self.total.sum())

    def select(self, labels) -> "DirectAttribution":
        """Rows by label (``["L20.H3", "L21.mlp"]``), one label, or attn_head/attn_out/mlp_out site objects;
        SiteError naming the nearest labels this attribution has for one it does not."""
        want = component_labels(labels, self.n_layers, self.n_heads, "select")
        idx = {lab: i for i, lab in enumerate(self.labels)}
        missing = [x for x in want if x not in idx]
        if missing:
            raise unknown(missing[0], self.labels, "component", "this attribution")
        rows = [idx[x] for x in want]
        return DirectAttribution(want, self.values[rows], self.total, self.scale, self.which, self.dataset,
                                 self.n_layers, self.n_heads, self.sum_error, dict(self.cost))

    #: the orders :meth:`top` knows
    TOP_BY = ("abs", "value")

    def top(self, k: int = 10, by: str = "abs") -> list[str]:
        """The labels of the ``k`` components (default 10) with the largest mean term: by |mean| (``by="abs"``,
        default: the largest in either direction) or by the signed mean (``by="value"``: the most
        positive first, the components that push toward the answer); UsageError for another ``by``."""
        k = check_int("k", k, low=0)
        if not isinstance(by, str) or by not in self.TOP_BY:
            raise UsageError(f"top(by={by!r}): use 'abs' (largest |mean| first) or 'value' (largest signed mean "
                             "first)")
        m = self.mean
        key = -np.abs(m) if by == "abs" else -m
        return [self.labels[i] for i in np.argsort(key, kind="stable")[:k]]

    def head_grid(self) -> np.ndarray:
        """``[layer, head]`` mean term of each head (NaN where not measured)."""
        g = np.full((self.n_layers, self.n_heads), np.nan)
        for lab, m in zip(self.labels, self.mean):
            if lab.startswith("L") and ".H" in lab:
                l, h = lab[1:].split(".H")
                g[int(l), int(h)] = m
        return g

    def plot_data(self) -> dict:
        """A JSON-able heatmap dict (layer x head mean direct term of the heads) for the HTML report."""
        g = self.head_grid()
        return {"kind": "heatmap", "z": np.where(np.isfinite(g), g, np.nan).tolist(), "xlabel": "head",
                "ylabel": "layer", "title": f"direct logit attribution of heads ({self.which})"}

    def heatmap(self, ax=None):
        """Layer x head heatmap of the heads' mean direct terms (diverging colours)."""
        plt = pyplot()
        g = self.head_grid()
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4, 0.35 * g.shape[1] + 2), max(3, 0.25 * g.shape[0] + 1)))
        else:
            fig = ax.figure
        v = float(np.nanmax(np.abs(g))) if np.isfinite(g).any() else 1.0
        im = ax.imshow(g, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-v, vmax=v)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, label="direct term of the logit difference")
        ax.set_title(f"direct logit attribution ({self.which})", fontsize=9)
        fig.tight_layout()
        return fig

    def plot(self, k: int = 15, ax=None):
        """Bar chart of the k largest mean terms."""
        plt = pyplot()
        labs = self.top(k)
        idx = [self.labels.index(x) for x in labs]
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 0.3 * len(labs) + 1.5))
        else:
            fig = ax.figure
        ax.barh(range(len(labs)), self.mean[idx], xerr=self.values[idx].std(1), color="#4a7ab0")
        ax.set_yticks(range(len(labs)), labs, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"direct term (total {self.total.mean():.3g})")
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        """A JSON-safe dict: labels, ``values [component, batch]``, ``mean [component]``, ``total [batch]``,
        which run, data set, the sum error and cost."""
        return _jsonable({"labels": self.labels, "values": self.values, "mean": self.mean, "total": self.total,
                          "which": self.which, "dataset": self.dataset, "sum_error": self.sum_error,
                          "convention": "final-norm scale frozen at the run's own value", "cost": self.cost})

    def __str__(self) -> str:
        m = self.mean
        top = ", ".join(f"{lab} {m[self.labels.index(lab)]:+.3g}" for lab in self.top(5))
        return (f"DirectAttribution({self.which}, {len(self.labels)} components x {self.n} examples, "
                f"total logit diff {self.total.mean():.3g}, these components {self.values.sum(0).mean():.3g} "
                f"(share {self.share:.3f}); largest: {top})")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html

        return rich_html(self, self.heatmap)


_DLA_KINDS = ("embed", "bias", "head", "attn", "attn_bias", "mlp")


def component_labels(components, n_layers: int, n_heads: int, what: str = "components") -> list[str]:
    """DLA component labels (positions dropped) from a label, a list of labels, or attn_head/attn_out/
    mlp_out site objects (:mod:`fieldcheck.field.labels`); SiteError for anything else."""
    from fieldcheck.field.sites import Site, SiteSet, as_site_set

    try:
        items = [components] if isinstance(components, (str, Site, SiteSet)) else list(components)
    except TypeError:
        raise SiteError(f"{what}={components!r} names no components; use a list of labels ('L3.H5', 'L3.mlp', "
                        "'L3.attn', 'embed', 'bias') or attn_head/attn_out/mlp_out sites") from None
    if not items:
        raise SiteError(f"{what} is empty; give at least one component label ('L3.H5', 'L3.mlp', 'L3.attn', "
                        "'embed', 'bias')")
    out = []
    for c in items:
        texts = as_site_set(c).component_labels(n_layers, n_heads) if isinstance(c, (Site, SiteSet)) else [c]
        for t in texts:
            lab = parse(t, "component")
            if lab.kind not in _DLA_KINDS or lab.port is not None:
                raise SiteError(f"direct logit attribution splits the final residual into 'embed', heads 'L3.H5', "
                                f"attention layers 'L3.attn' (and their biases 'L3.attn_bias'), MLPs 'L3.mlp' and "
                                f"'bias'; {str(lab)!r} is not one of them")
            out.append(lab.component)
    return list(dict.fromkeys(out))


def _components(field, components) -> Optional[list[str]]:
    """Requested component labels (None: all)."""
    import builtins

    if components is None or components is builtins.all or components == "all":
        return None
    if components == "heads":
        return [f"L{l}.H{h}" for l in range(field.n_layers) for h in range(field.n_heads)]
    if components == "layers":
        return [f"L{l}.{k}" for l in range(field.n_layers) for k in ("attn", "mlp")]
    return component_labels(components, field.n_layers, field.n_heads)


@torch.no_grad()
def _terms(field, cache, ds, metric_pos) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All components' terms ``[component, batch]`` (float64), labels, total (from the model's
    own final norm and unembedding), the frozen scale, and the terms' sum."""
    fm = field.fm
    if getattr(fm, "logit_softcap", None) is not None or not getattr(fm, "linear_unembed", True):
        from fieldcheck.field.arch import UnsupportedArchitecture
        raise UnsupportedArchitecture(f"direct logit attribution needs logits linear in the final residual; "
                                      f"{getattr(fm, 'family', 'this model')} soft-caps its logits (tanh) or runs "
                                      "through the generic path; use patching or the logit lens")
    B = ds.n
    b = torch.arange(B, device=metric_pos.device)
    x_final = cache.resid[-1][b, metric_pos]
    scale, weight, bias, center = final_norm_affine(fm, x_final)
    a, w = ds.answers.to(x_final.device), ds.wrong.to(x_final.device)
    d = (fm.W_U[a] - fm.W_U[w]).double() * weight.double()  # [batch, d_model]

    def term(c: torch.Tensor) -> torch.Tensor:  # c: [batch, d_model] -> [batch]
        c = c.double()
        if center:
            c = c - c.mean(-1, keepdim=True)
        return (d * c).sum(-1) / scale

    labels, rows = ["embed"], [term(cache.resid[0][b, metric_pos])]
    for l in range(field.n_layers):
        z = cache.z[l][b, metric_pos]  # [batch, head, d_head]
        attn_total = cache.mid[l][b, metric_pos] - cache.resid[l][b, metric_pos]
        heads_sum = torch.zeros_like(attn_total, dtype=torch.float64)
        shares = fm.head_shares(l, z[:, None])[:, :, 0]  # [head, batch, d_model]: they add up to attn_out
        for h in range(field.n_heads):
            out_h = shares[h].double()
            heads_sum = heads_sum + out_h
            labels.append(f"L{l}.H{h}")
            rows.append(term(out_h))
        labels.append(f"L{l}.attn_bias")
        rows.append(term(attn_total.double() - heads_sum))
        labels.append(f"L{l}.mlp")
        rows.append(term(cache.resid[l + 1][b, metric_pos] - cache.mid[l][b, metric_pos]))
    const = torch.zeros(B, dtype=torch.float64, device=x_final.device)
    if bias is not None:
        const = const + ((fm.W_U[a] - fm.W_U[w]).double() * bias.double()).sum(-1)
    if fm.b_U is not None:
        const = const + (fm.b_U[a] - fm.b_U[w]).double()
    labels.append("bias")
    rows.append(const)
    T = torch.stack(rows)
    xn = fm.final_norm(x_final)
    total = (torch.diagonal(fm.unembed(xn, a)) - torch.diagonal(fm.unembed(xn, w))).double()
    return labels, T, total, scale, T.sum(0)


def dla(field, ds, components="all", which: str = "clean", tol: Optional[float] = None) -> DirectAttribution:
    """Direct logit attribution of the logit difference at the metric position (END).

    components: "all" (embed, every head, every attention bias, every MLP, the constant bias),
    "heads", "layers" (``L{l}.attn`` = heads + bias, ``L{l}.mlp``), a list of labels, or
    attn_head/attn_out/mlp_out sites (their positions are ignored: the terms are read at END).
    which: "clean", "corrupt" or "diff" (clean - corrupt). Raises NumericalError when the terms
    do not add up to the run's logit difference within ``tol`` (relative to its scale; default
    1e-3, or 5e-2 for 16-bit models, whose own logits carry that much rounding).
    """
    check_choice("which", which, ("clean", "corrupt", "diff"))
    if tol is not None:
        tol = check_number("tol", tol, low=0, low_open=True, hint="the relative mismatch allowed, e.g. 1e-3")
    t0 = time.perf_counter()
    want = _components(field, components)
    r = field.run(ds)
    if tol is None:
        tol = 5e-2 if r.clean.resid.dtype in (torch.float16, torch.bfloat16) else 1e-3
    runs = ["clean", "corrupt"] if which == "diff" else [which]
    parts = []
    for w in runs:
        cache = r.clean if w == "clean" else r.corrupt
        labels, T, total, scale, ssum = _terms(field, cache, ds, r.metric_pos)
        err = float((ssum - total).abs().max())
        ref = max(1.0, float(total.abs().max()))
        if not err <= tol * ref:
            raise NumericalError(f"direct logit attribution: the components' terms add up to the {w} run's logit "
                                 f"difference only within {err:.3g}; this is a fieldcheck bug, please report it")
        parts.append((T, total, scale, err))
    if which == "diff":
        T = parts[0][0] - parts[1][0]
        total = parts[0][1] - parts[1][1]
        scale = torch.stack([parts[0][2], parts[1][2]])
    else:
        T, total, scale = parts[0][0], parts[0][1], parts[0][2]
    err = max(p[3] for p in parts)
    # aggregate labels: L{l}.attn = heads + bias
    index = {lab: i for i, lab in enumerate(labels)}
    if want is None:
        keep_labels, rows = labels, T
    else:
        out = []
        for lab in want:
            if lab in index:
                out.append(T[index[lab]])
            elif lab.endswith(".attn") and lab[:-5] + ".mlp" in index:
                pre = lab[:-5]
                out.append(sum(T[index[f"{pre}.H{h}"]] for h in range(field.n_heads)) + T[index[f"{pre}.attn_bias"]])
            else:
                valid = labels + [f"L{l}.attn" for l in range(field.n_layers)]
                raise unknown(lab, valid, "component", f"this model (layers 0..{field.n_layers - 1}, heads "
                              f"0..{field.n_heads - 1})")
        keep_labels, rows = want, torch.stack(out)
    return DirectAttribution(list(keep_labels), rows.cpu().numpy(), total.cpu().numpy(), scale.cpu().numpy(),
                             which=which, dataset=getattr(ds, "name", ""), n_layers=field.n_layers,
                             n_heads=field.n_heads, sum_error=err,
                             cost={"seconds": time.perf_counter() - t0, "forwards": 0})


# --- logit lens ----------------------------------------------------------------------------------
@dataclass
class LensLayer:
    """One layer of a :class:`LogitLens` (``lens.at(layer)``): ``logit_diff``, ``rank``, ``wrong_rank``
    and ``prob``, each ``[batch]``, at phi index ``layer``. It has a ``logit_diff``, so
    ``fc.assert_prefers(lens.at(l), mean > 1.0)`` decides the logit difference read at that layer."""

    layer: int
    logit_diff: np.ndarray
    rank: np.ndarray
    wrong_rank: np.ndarray
    prob: np.ndarray
    position: str = "END"
    which: str = "clean"

    @property
    def n(self) -> int:
        """Number of examples (the ``batch`` axis)."""
        return int(self.logit_diff.shape[0])

    def to_dict(self) -> dict:
        """A JSON-safe dict: layer, position, which run, ``logit_diff``/``rank``/``wrong_rank``/``prob [batch]``."""
        return _jsonable({"layer": self.layer, "position": self.position, "which": self.which,
                          "logit_diff": self.logit_diff, "rank": self.rank, "wrong_rank": self.wrong_rank,
                          "prob": self.prob})

    def summary(self) -> str:
        """One line: the layer, position, run, n, mean logit difference and median answer rank."""
        return (f"LensLayer(layer {self.layer} at {self.position}, {self.which} run, n={self.n}: mean logit diff "
                f"{self.logit_diff.mean():.3g}, median answer rank {np.median(self.rank):g})")

    __repr__ = __str__ = summary


@dataclass
class LogitLens:
    """The residual of every layer decoded at one position.

    Layers 0..L (layer l is the residual entering block l; L the final residual, whose decoding
    is the model's output). logit_diff, prob: ``[layer, batch]``; rank: ``[layer, batch]`` the
    answer's rank among all tokens (0 = top; ties counted against the answer); wrong_rank likewise.
    """

    logit_diff: np.ndarray
    rank: np.ndarray
    wrong_rank: np.ndarray
    prob: np.ndarray
    position: str
    which: str = "clean"
    dataset: str = ""
    cost: dict = dc_field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        """Number of blocks L (the layer axis runs over 0..L, L + 1 rows)."""
        return self.logit_diff.shape[0] - 1

    @property
    def n(self) -> int:
        """Number of examples (the ``batch`` axis)."""
        return self.logit_diff.shape[1]

    def at(self, layer: int) -> "LensLayer":
        """One layer of the lens: a :class:`LensLayer` with ``logit_diff``/``rank``/``wrong_rank``/``prob
        [batch]`` at ``layer`` (0..n_layers, negative from the end: -1 is the model's output), e.g.
        ``fc.assert_prefers(lens.at(24), mean > 1.0)``. SiteError naming the layers this lens has when
        ``layer`` is not one of them (a claim written for a deeper model)."""
        L1 = self.logit_diff.shape[0]
        i = layer_index(layer, L1, f"the logit lens of this {L1 - 1}-block model")
        return LensLayer(i, self.logit_diff[i], self.rank[i], self.wrong_rank[i], self.prob[i], self.position,
                         self.which)

    def leads(self, leads: str = "wrong") -> np.ndarray:
        """``[layer, batch]`` bool: the answer beats the wrong answer ("wrong") or is the top token ("top1")."""
        if leads == "wrong":
            return self.logit_diff > 0
        if leads == "top1":
            return self.rank == 0
        raise UsageError(f"leads must be 'wrong' or 'top1', got {leads!r}")

    def first_layer(self, leads: str = "wrong") -> np.ndarray:
        """``[batch]`` the first layer from which the answer leads at every later layer
        (n_layers + 1 where it does not lead even at the output)."""
        ok = self.leads(leads)
        tail = np.logical_and.accumulate(ok[::-1], axis=0)[::-1]  # leads at l and every later layer
        L1 = ok.shape[0]
        first = np.where(tail.any(0), L1 - tail.sum(0), L1)
        return first.astype(float)

    def plot_data(self) -> dict:
        """A JSON-able heatmap dict for the HTML report: logit difference, layer x example."""
        return {"kind": "heatmap", "z": self.logit_diff[:, :_MAX_PLOT].tolist(), "xlabel": "example",
                "ylabel": "layer", "title": f"logit lens at {self.position}: logit diff ({self.which})"}

    def heatmap(self, ax=None, stat: str = "logit_diff"):
        """Layer x example heatmap of the logit difference (or ``stat="rank"``: log10(1 + rank))."""
        plt = pyplot()
        g = self.logit_diff if stat == "logit_diff" else np.log10(1 + self.rank)
        g = g[:, :_MAX_PLOT]
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4, 0.25 * g.shape[1] + 2), max(3, 0.2 * g.shape[0] + 1)))
        else:
            fig = ax.figure
        if stat == "logit_diff":
            v = float(np.abs(g).max()) or 1.0
            im = ax.imshow(g, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-v, vmax=v)
        else:
            im = ax.imshow(g, aspect="auto", origin="lower", cmap="viridis_r")
        ax.set_xlabel("example")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, label="logit diff" if stat == "logit_diff" else "log10(1 + answer rank)")
        ax.set_title(f"logit lens at {self.position} ({self.which} run)", fontsize=9)
        fig.tight_layout()
        return fig

    def plot(self, ax=None):
        """Mean logit difference and median answer rank per layer."""
        plt = pyplot()
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 4))
        else:
            fig = ax.figure
        x = np.arange(self.n_layers + 1)
        ax.plot(x, self.logit_diff.mean(1), marker=".", label="mean logit diff")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("layer")
        ax.set_ylabel("logit diff")
        ax2 = ax.twinx()
        ax2.plot(x, np.median(self.rank, 1), color="C1", marker=".", label="median answer rank")
        ax2.set_yscale("symlog")
        ax2.set_ylabel("answer rank")
        ax.set_title(f"logit lens at {self.position} ({self.which} run)", fontsize=9)
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        """A JSON-safe dict: position, which run, data set, per-layer mean logit difference, median answer rank
        and mean probability, ``first_layer [batch]``, ``logit_diff``/``rank [layer, batch]`` and
        cost."""
        return _jsonable({"position": self.position, "which": self.which, "dataset": self.dataset,
                          "mean_logit_diff": self.logit_diff.mean(1), "median_rank": np.median(self.rank, 1),
                          "mean_prob": self.prob.mean(1), "first_layer": self.first_layer(),
                          "logit_diff": self.logit_diff, "rank": self.rank, "cost": self.cost})

    def __str__(self) -> str:
        fl = self.first_layer()
        med = np.median(self.rank, 1)
        top1 = int(np.argmax(med == 0)) if (med == 0).any() else None
        return (f"LogitLens(at {self.position}, {self.which} run, layers 0..{self.n_layers} x {self.n} examples; "
                f"answer leads the wrong answer from layer {np.median(fl):g} (median), median rank 0 from "
                f"{'layer ' + str(top1) if top1 is not None else 'no layer'}; final mean logit diff "
                f"{self.logit_diff[-1].mean():.3g})")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html

        return rich_html(self, self.heatmap)


@torch.no_grad()
def logit_lens(field, ds, position: Any = "END", which: str = "clean") -> LogitLens:
    """Decode ``phi(l, position)`` of every layer with the final norm and the unembedding."""
    check_choice("which", which, ("clean", "corrupt"))
    t0 = time.perf_counter()
    r = field.run(ds)
    fm = field.fm
    cache = r.clean if which == "clean" else r.corrupt
    pos = ds.position(position).to(field.device)
    b = torch.arange(ds.n, device=field.device)
    a, w = ds.answers.to(field.device), ds.wrong.to(field.device)
    L1 = cache.resid.shape[0]
    ld, rk, wrk, pr = (np.zeros((L1, ds.n)) for _ in range(4))
    for l in range(L1):
        logits = fm.unembed(fm.final_norm(cache.resid[l][b, pos])).float()  # [batch, vocab]
        la, lw = logits[b, a], logits[b, w]
        ld[l] = (la - lw).double().cpu().numpy()
        rk[l] = (logits > la[:, None]).sum(-1).cpu().numpy()
        wrk[l] = (logits > lw[:, None]).sum(-1).cpu().numpy()
        pr[l] = torch.softmax(logits, -1)[b, a].double().cpu().numpy()
    if not np.isfinite(ld).all():
        raise NumericalError("the logit lens is NaN or inf; check the model's dtype and weights")
    return LogitLens(ld, rk, wrk, pr, position=str(position), which=which, dataset=getattr(ds, "name", ""),
                     cost={"seconds": time.perf_counter() - t0, "forwards": 0})
