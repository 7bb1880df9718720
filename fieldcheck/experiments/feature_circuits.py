"""Sparse feature circuits (Marks et al. 2024, arXiv 2403.19647): node attribution over every latent
and error term of a set of dictionaries, the top-k circuit evaluated by ablating the rest, and
edges between the nodes of consecutive dictionaries.

Nodes are a dictionary's latents and its error term, each over all positions of a prompt
(``FeatureSite(sae, i, "all")``). ``feature_circuit(field, ds, saes, k)`` scores every node by the
first-order effect of ablating it on the clean run (``(a_ablated - a_clean) . dm/da``, gradient or
integrated gradient), keeps the k with the largest mean |score|, and evaluates them:

- ``circuit``: the clean run with every node *outside* the circuit ablated at every dictionary,
  from the lowest layer up (later dictionaries encode the already-edited activations);
- ``complement``: the nodes *in* the circuit ablated, the rest kept;
- ``full`` (the clean run) and ``empty`` (every node ablated).

Faithfulness is ``sum(circuit - empty) / sum(full - empty)`` and completeness
``1 - sum(complement - empty) / sum(full - empty)`` (Marks et al. report F(M \\ C), near 0 for a
complete circuit; here 1 - it, so that both are "higher is better"). Ablations: ``"mean"`` (each
node's mean over the examples at each position, Marks et al.'s default), ``"corrupt"`` (the
corrupted run's values) or ``"zero"``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field as dc_field
from typing import Optional, Sequence

import numpy as np
import torch

from fieldcheck.errors import UsageError, check_int
from fieldcheck.experiments.features import feature_run, hook_gradients, sae_report
from fieldcheck.field.metrics import as_metric
from fieldcheck.field.results import dataset_hash_of
from fieldcheck.field.sites import FeatureSite, site_of_hook
from fieldcheck.jsonable import jsonable
from fieldcheck.sae.dictionary import Dictionary
from fieldcheck.sae.splice import forward_with, hook_values

ABLATIONS = ("mean", "corrupt", "zero")
_SOURCE = {"mean": "mean", "corrupt": "other", "zero": "zero"}

__all__ = ["node_attribution", "NodeScores", "evaluate_feature_circuit", "feature_circuit", "FeatureCircuitResult"]


@dataclass
class NodeScores:
    """Per-example first-order effect of ablating each node on the clean run: ``scores [n_nodes, batch]``."""

    nodes: list
    scores: np.ndarray
    method: str
    ablation: str
    cost: dict = dc_field(default_factory=dict)

    @property
    def mean(self) -> np.ndarray:
        """``[n_nodes]``: each node's score averaged over the examples."""
        return self.scores.mean(1)

    def top(self, k: int) -> list:
        """The k nodes with the largest mean |score| (fewer when there are fewer nodes)."""
        k = check_int("k", k, low=0)
        order = np.argsort(-np.abs(self.mean), kind="stable")[:k]
        return [self.nodes[i] for i in order]

    def summary(self) -> str:
        """The number of nodes, the method, and the eight largest mean scores."""
        order = np.argsort(-np.abs(self.mean), kind="stable")[:8]
        return (f"NodeScores({len(self.nodes)} nodes, {self.method}, {self.ablation} ablation)\n  largest: "
                + ", ".join(f"{self.nodes[i].label} {self.mean[i]:+.3g}" for i in order))

    __repr__ = summary

    def to_dict(self) -> dict:
        """A JSON-safe dict: node labels, ``scores [n_nodes, batch]``, method, ablation, cost."""
        return jsonable({"nodes": [n.label for n in self.nodes], "scores": self.scores, "method": self.method,
                         "ablation": self.ablation, "cost": self.cost})


def _check(ablation: str, dictionaries) -> list[Dictionary]:
    if ablation not in ABLATIONS:
        raise UsageError(f"ablation must be one of {', '.join(ABLATIONS)}, got {ablation!r}")
    ds_ = ([dictionaries] if isinstance(dictionaries, Dictionary)
           else list(dictionaries) if isinstance(dictionaries, (list, tuple)) else None)
    if not ds_ or not all(isinstance(d, Dictionary) for d in ds_):
        raise UsageError(f"saes={dictionaries!r}: give one dictionary or a non-empty list of them "
                         "(fieldcheck.sae.load / train)")
    return sorted(ds_, key=lambda d: (d.layer, site_of_hook(d.out_hook)[0] != "resid_pre"))


def node_attribution(field, ds, dictionaries, method: str = "gradient", steps: int = 8, ablation: str = "mean",
                     metric="logit_diff") -> NodeScores:
    """Score every latent and error node of ``dictionaries`` (see the module doc)."""
    dl = _check(ablation, dictionaries)
    if method == "integrated" and ablation != "corrupt":
        raise UsageError("method='integrated' integrates from the clean to the corrupted run: use ablation='corrupt'")
    m = as_metric(metric)
    t0 = time.perf_counter()
    runs = [feature_run(field, ds, d) for d in dl]
    grads, cost = hook_gradients(field, ds, [d.out_hook for d in dl], "noise", m, method, steps)
    nodes, rows = [], []
    src = _SOURCE[ablation]
    for d, run in zip(dl, runs):
        g = grads[d.out_hook].to(d.dtype)
        score = run.delta_f("noise", src, 1.0) * (g @ d.decoder.T) * run.scale["clean"]   # [batch, pos, d_sae]
        err = (run.delta_err("noise", src, 1.0) * g).sum(-1)                               # [batch, pos]
        rows.append(score.sum(1).T)
        rows.append(err.sum(1)[None])
        nodes += [FeatureSite(d, i, "all") for i in range(d.d_sae)] + [FeatureSite(d, None, "all")]
    scores = torch.cat(rows).detach().double().cpu().numpy()
    cost["seconds"] = time.perf_counter() - t0
    return NodeScores(nodes, scores, method, ablation, cost)


@dataclass
class FeatureCircuitResult:
    """Per-example metrics ``[batch]`` of a feature circuit, its complement, the full model and the
    empty circuit; ``faithfulness`` and ``completeness`` as in the module doc."""

    nodes: list
    circuit: np.ndarray
    complement: np.ndarray
    full: np.ndarray
    empty: np.ndarray
    ablation: str = "mean"
    metric: str = "logit_diff"
    n_nodes_total: int = 0
    edges: list = dc_field(default_factory=list)
    scores: Optional[NodeScores] = None
    dataset: str = ""
    dataset_hash: str = ""
    cost: dict = dc_field(default_factory=dict)

    @staticmethod
    def _ratio(num, den) -> float:
        d = float(np.sum(den))
        return float(np.sum(num)) / d if d != 0 else math.nan

    @property
    def faithfulness(self) -> float:
        """sum(circuit - empty) / sum(full - empty) over the examples (1: the circuit does it all)."""
        return self._ratio(self.circuit - self.empty, self.full - self.empty)

    @property
    def completeness(self) -> float:
        """1 - sum(complement - empty) / sum(full - empty) (1: nothing outside the circuit does it)."""
        return 1.0 - self._ratio(self.complement - self.empty, self.full - self.empty)

    @property
    def cpr(self) -> float:
        """The faithfulness under MIB's name (circuit performance ratio)."""
        return self.faithfulness

    @property
    def n(self) -> int:
        """The number of examples the metrics were measured on."""
        return int(self.full.size)

    def summary(self) -> str:
        """Nodes kept, ablation, mean metrics of the four runs, faithfulness and completeness."""
        shown = ", ".join(n.label for n in self.nodes[:6]) + (", ..." if len(self.nodes) > 6 else "")
        e = f"; {len(self.edges)} edges" if self.edges else ""
        return (f"FeatureCircuitResult({len(self.nodes)} of {self.n_nodes_total} nodes, {self.ablation} ablation, "
                f"n={self.n}, {self.metric}{e})\n  nodes: {shown}\n  mean metric: empty {self.empty.mean():.4g}, "
                f"circuit {self.circuit.mean():.4g}, complement {self.complement.mean():.4g}, full "
                f"{self.full.mean():.4g}; faithfulness {self.faithfulness:.3f}, completeness {self.completeness:.3f}")

    __repr__ = summary

    def plot(self, ax=None):
        """The circuit's nodes by layer (marker size ~ |score|) with its edges; title: faithfulness, completeness."""
        from fieldcheck.display import pyplot

        plt = pyplot()
        fig, ax = (plt.subplots(figsize=(6, 4)) if ax is None else (ax.figure, ax))
        score = {}
        if self.scores is not None:
            mean = self.scores.mean
            score = {n: float(mean[i]) for i, n in enumerate(self.scores.nodes)}
        layers = sorted({n.dictionary.layer for n in self.nodes})
        pos = {}
        for li, layer in enumerate(layers):
            col = [n for n in self.nodes if n.dictionary.layer == layer]
            for j, n in enumerate(col):
                pos[n.label] = (li, j - (len(col) - 1) / 2)
        for up, down, w in self.edges:
            if up in pos and down in pos:
                (x0, y0), (x1, y1) = pos[up], pos[down]
                ax.plot([x0, x1], [y0, y1], color="tab:red" if w > 0 else "tab:blue",
                        lw=0.5 + 3 * min(1.0, abs(w) / (max(abs(e[2]) for e in self.edges) or 1)), alpha=0.6)
        for n in self.nodes:
            x, y = pos[n.label]
            s = abs(score.get(n, 0.0))
            ax.scatter([x], [y], s=30 + 300 * s / (max(abs(v) for v in score.values()) or 1) if score else 60,
                       color="0.5" if n.is_error else "tab:orange", zorder=3)
            ax.annotate(n.label.split(":")[1].replace("@all", ""), (x, y), fontsize=6, ha="center", va="bottom")
        ax.set_xticks(range(len(layers)), [f"layer {l}" for l in layers])
        ax.set_yticks([])
        ax.set_title(f"feature circuit: faithfulness {self.faithfulness:.2f}, completeness {self.completeness:.2f}",
                     fontsize=9)
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html
        return rich_html(self, self.plot)

    def to_dict(self) -> dict:
        """A JSON-safe dict: node labels, per-example metrics ``[batch]``, both ratios, edges, cost."""
        return jsonable({"nodes": [n.label for n in self.nodes], "circuit": self.circuit,
                         "complement": self.complement, "full": self.full, "empty": self.empty,
                         "faithfulness": self.faithfulness, "completeness": self.completeness,
                         "ablation": self.ablation, "metric": self.metric, "n_nodes_total": self.n_nodes_total,
                         "edges": [list(e) for e in self.edges], "dataset": self.dataset,
                         "dataset_hash": self.dataset_hash, "cost": self.cost})


def _ablation_values(run, ablation: str):
    """(f_abl, err_abl) ``[batch or 1, pos, ...]`` for the clean run."""
    f, err = run.f["clean"], run.err["clean"]
    if ablation == "mean":
        return f.mean(0, keepdim=True), err.mean(0, keepdim=True)
    if ablation == "corrupt":
        return run.f["corrupt"], run.err["corrupt"]
    return torch.zeros_like(f[:1]), torch.zeros_like(err[:1])


def _ablated_edit(d: Dictionary, keep: torch.Tensor, keep_err: bool, f_abl, err_abl, idx):
    """Replace latents where ``keep [d_sae]`` is False (and the error unless ``keep_err``) by their
    ablation values, for the examples ``idx``."""
    def run(y, *rest):
        x_in = d.flatten_input(rest[0] if d.is_transcoder else y).to(d.dtype)
        norm = d.norm(x_in)
        f = d.activate(d.pre_activations(x_in, norm))
        rec = d.decode(f, norm, x_in)
        err = y.reshape(rec.shape).to(d.dtype) - rec
        fa = f_abl if f_abl.shape[0] == 1 else f_abl[idx]
        f_new = torch.where(keep, f, fa.expand_as(f))
        out = rec + d.delta(f_new - f, norm) + (err if keep_err else (err_abl if err_abl.shape[0] == 1 else err_abl[idx]).expand_as(err))
        return out.to(y.dtype).reshape(y.shape)
    return run


def _circuit_metric(field, ds, dl, runs, keep_sets: list[set], ablation: str, m) -> np.ndarray:
    """The metric ``[len(keep_sets), batch]`` with every node outside each keep set ablated."""
    r = field.run(ds)
    dev = field.device
    ex = torch.arange(ds.n, device=dev)
    out = np.zeros((len(keep_sets), ds.n))
    abl = [_ablation_values(run, ablation) for run in runs]
    start = min(site_of_hook(d.out_hook)[1] for d in dl)
    with torch.no_grad():
        for i, keep in enumerate(keep_sets):
            edits = {}
            for d, (fa, ea) in zip(dl, abl):
                mask = torch.zeros(d.d_sae, dtype=torch.bool, device=dev)
                lat = [n.latent for n in keep if n.dictionary is d and n.latent is not None]
                if lat:
                    mask[torch.tensor(lat, device=dev)] = True
                keep_err = any(n.dictionary is d and n.latent is None for n in keep)
                edits[d.out_hook] = _ablated_edit(d, mask, keep_err, fa, ea, ex)
            xf = forward_with(field.fm, r.clean.resid[start], edits, start=start)
            out[i] = field.metric_on(m, r, xf[ex, r.metric_pos], ex).double().cpu().numpy()
    return out


def evaluate_feature_circuit(field, ds, nodes: Sequence[FeatureSite], dictionaries=None, ablation: str = "mean",
                             metric="logit_diff", scores: Optional[NodeScores] = None,
                             edges: Optional[list] = None) -> FeatureCircuitResult:
    """Faithfulness and completeness of the circuit ``nodes`` (FeatureSites at ``"all"`` positions) over
    ``dictionaries`` (default: the nodes' own)."""
    nodes = list(dict.fromkeys(nodes))
    bad = [n for n in nodes if not isinstance(n, FeatureSite) or n.pos != "all"]
    if bad:
        raise UsageError(f"circuit nodes are latents or error terms over all positions "
                         f"(fieldcheck.sites.features(sae, latents, 'all', error=...)); got {bad[0]!r}")
    dl = _check(ablation, dictionaries if dictionaries is not None else list(dict.fromkeys(n.dictionary for n in nodes)))
    m = as_metric(metric)
    t0 = time.perf_counter()
    runs = [feature_run(field, ds, d) for d in dl]
    every = {FeatureSite(d, i, "all") for d in dl for i in range(d.d_sae)} | {FeatureSite(d, None, "all") for d in dl}
    keep = set(nodes)
    vals = _circuit_metric(field, ds, dl, runs, [keep, every - keep, set()], ablation, m)
    full = field.metric_values(ds, m, "clean").detach().double().cpu().numpy()
    return FeatureCircuitResult(nodes=nodes, circuit=vals[0], complement=vals[1], full=full, empty=vals[2],
                                ablation=ablation, metric=m.name, n_nodes_total=len(every), edges=edges or [],
                                scores=scores, dataset=getattr(ds, "name", ""), dataset_hash=dataset_hash_of(ds),
                                cost={"forwards": 3, "seconds": time.perf_counter() - t0,
                                      "sae": sae_report(field, runs)})


def feature_edges(field, ds, nodes: Sequence[FeatureSite], dictionaries, ablation: str = "mean",
                  metric="logit_diff", max_down: int = 16) -> list[tuple[str, str, float]]:
    """Edges between circuit nodes of consecutive dictionaries: for a downstream node d and an upstream
    node u, the mean over examples of ``dm/da_d . da_d/dx_U . delta_u`` (Marks et al.'s edge effect,
    first order). One backward pass per downstream node (at most ``max_down``)."""
    dl = _check(ablation, dictionaries)
    m = as_metric(metric)
    r = field.run(ds)
    fm = field.fm
    dev = field.device
    runs = {id(d): feature_run(field, ds, d) for d in dl}
    grads, _ = hook_gradients(field, ds, [d.out_hook for d in dl], "noise", m)
    src = _SOURCE[ablation]
    edges = []
    for up, down in zip(dl[:-1], dl[1:]):
        ups = [n for n in nodes if n.dictionary is up]
        downs = [n for n in nodes if n.dictionary is down][:max_down]
        if not ups or not downs:
            continue
        ru, rd = runs[id(up)], runs[id(down)]
        lu = site_of_hook(up.out_hook)[1]
        x_u = hook_values(fm, r.clean, up.out_hook)
        for dn in downs:
            leaf = x_u.detach().clone().requires_grad_(True)
            got = {}

            def capture(y, *rest):
                got["x"] = rest[0] if down.is_transcoder else y
                return y
            with torch.enable_grad():
                edits = {up.out_hook: lambda y, *rest: leaf.reshape(y.shape), down.out_hook: capture}
                forward_with(fm, r.clean.resid[lu], edits, start=lu)
                xd = down.flatten_input(got["x"]).to(down.dtype)
                g_d = grads[down.out_hook].to(down.dtype)
                if dn.latent is None:  # the error term of an SAE: x - reconstruct(x)
                    q = ((xd - down.reconstruct(xd)) * g_d).sum()
                else:
                    f = down.encode(xd)[..., dn.latent]
                    w = ((g_d @ down.decoder[dn.latent]) * rd.scale["clean"][..., 0]).detach()
                    q = (f * w).sum()
                (gx,) = torch.autograd.grad(q, leaf, allow_unused=True)
            if gx is None:
                continue
            gx = gx.reshape(*gx.shape[:2], -1).to(up.dtype)
            df = ru.delta_f("noise", src, 1.0)
            for un in ups:
                if un.latent is None:
                    e = (ru.delta_err("noise", src, 1.0) * gx).sum(-1)
                else:
                    e = df[..., un.latent] * (gx @ up.decoder[un.latent]) * ru.scale["clean"][..., 0]
                edges.append((un.label, dn.label, float(e.sum(1).mean())))
    return edges


def feature_circuit(field, ds, dictionaries, k: int = 20, method: str = "gradient", steps: int = 8,
                    ablation: str = "mean", metric="logit_diff", edges: bool = True) -> FeatureCircuitResult:
    """Score every node (:func:`node_attribution`), keep the top ``k`` by mean |score|, evaluate them
    (:func:`evaluate_feature_circuit`) and, with ``edges``, attribute the edges between them."""
    if not isinstance(k, int) or k < 1:
        raise UsageError(f"k must be a positive int, got {k!r}")
    dl = _check(ablation, dictionaries)
    scores = node_attribution(field, ds, dl, method=method, steps=steps, ablation=ablation, metric=metric)
    nodes = scores.top(k)
    e = feature_edges(field, ds, nodes, dl, ablation, metric) if edges and len(dl) > 1 else []
    res = evaluate_feature_circuit(field, ds, nodes, dl, ablation, metric, scores=scores, edges=e)
    res.cost["node_attribution"] = scores.cost
    return res
