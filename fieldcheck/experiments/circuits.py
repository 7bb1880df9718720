"""Circuits: a set of edges (or nodes) of the model's edge graph, evaluated by ablating the rest.

A :class:`Circuit` is either a set of **edges** ``"sender->receiver"`` (``"L0.H1->L2.H3.q"``,
``"embed->L0.mlp"``, ``"L1.mlp->logits"``; see :mod:`fieldcheck.experiments.edges` for the graph) or a
set of **nodes** (heads ``"L3.H2"`` and MLPs ``"L3.mlp"``; the embeddings and the logits always belong
to it). Edges are position-agnostic; a node is position-agnostic or kept only at some positions,
``"L3.H2@END"`` or ``"L5.mlp@4"`` (a position name of the data set, resolved per example, or an
int; repeat the node for several positions): its output elsewhere is ablated.

``evaluate_circuit(field, ds, circuit, ablation="corrupt")`` runs the clean prompts with every edge
outside the circuit ablated (a node circuit ablates every edge out of a node outside it) and
returns per-example metrics for the circuit, the full model (the clean run) and the empty
circuit (every edge ablated: the ablation run itself), with MIB's faithfulness
``(m(C) - m(empty)) / (m(full) - m(empty))`` (ratio of means over examples: the circuit
performance ratio, ``cpr``). Ablations: ``"corrupt"`` (the corrupted run's values, as MIB),
``"mean"`` (mean over the examples of the clean run), ``"zero"``, ``"resample"`` (another
example's clean run).

Engine: the edge-ablated forward of :func:`fieldcheck.experiments.edges.edge_forward`, built on
the light-cone engine's functional model (not TransformerBridge hooks) but over all positions:
an edge ablation changes every position, so there is no light cone to save. One evaluation
costs about one forward in which each layer's q/k/v projections run once per distinct set of
incoming edges among the layer's head inputs (at most 3 x heads).
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field as dc_field
from typing import Optional, Sequence, Union

import numpy as np
import torch

from fieldcheck.errors import UsageError, check_choice, check_int, check_number
from fieldcheck.experiments.circuit_spec import Circuit, check_ablation, example_chunks, as_circuit  # noqa: F401 (Circuit re-exported)
from fieldcheck.experiments.discovery import EdgeScores, edge_scores
from fieldcheck.experiments.edges import ablation_values, edge_forward, edge_graph
from fieldcheck.field.metrics import as_metric
from fieldcheck.jsonable import jsonable, to_numpy

__all__ = ["Circuit", "CircuitResult", "FaithfulnessCurve", "Minimality", "evaluate_circuit",
           "faithfulness_curve", "minimality"]


def _ratio(num: np.ndarray, den: np.ndarray) -> float:
    d = float(np.sum(den))
    return float(np.sum(num)) / d if d != 0 else math.nan


@dataclass
class CircuitResult:
    """Per-example metrics ``[batch]`` of a circuit, the full model and the empty circuit.

    ``cpr``: sum(circuit - empty) / sum(full - empty) (MIB's faithfulness of one circuit, ratio
    of means); ``cmd``: |1 - cpr|. ``fc.assert_faithful(result, cpr > 0.8)`` decides it with a
    bootstrap over the examples."""

    spec: Circuit
    circuit: np.ndarray
    full: np.ndarray
    empty: np.ndarray
    ablation: str = "corrupt"
    metric: str = "logit_diff"
    n_edges: int = 0
    n_edges_total: int = 0
    dataset: str = ""
    cost: dict = dc_field(default_factory=dict)

    @property
    def cpr(self) -> float:
        """The circuit performance ratio sum(circuit - empty) / sum(full - empty) over the examples (MIB's
        faithfulness; NaN when full equals empty)."""
        return _ratio(self.circuit - self.empty, self.full - self.empty)

    @property
    def cmd(self) -> float:
        """The circuit-model difference |1 - cpr| (0 for a perfectly faithful circuit)."""
        return abs(1.0 - self.cpr)

    @property
    def n(self) -> int:
        """Number of examples (the ``batch`` axis of the metrics)."""
        return int(self.full.size)

    def summary(self) -> str:
        """A readable two-line summary: the circuit's size in parts and edges, the ablation, n, the mean metric
        of the empty circuit, the circuit and the full model, cpr and cmd."""
        return (f"CircuitResult({self.spec.level} circuit of {len(self.spec)} parts = {self.n_edges} of "
                f"{self.n_edges_total} edges, {self.ablation} ablation, n={self.n}, {self.metric})\n"
                f"  mean metric: empty {self.empty.mean():.4g}, circuit {self.circuit.mean():.4g}, "
                f"full {self.full.mean():.4g}; cpr {self.cpr:.3f}, cmd {self.cmd:.3f}")

    __str__ = __repr__ = summary

    def plot(self, ax=None):
        """Per-example metric of the empty circuit, the circuit and the full model."""
        from fieldcheck.display import pyplot
        plt = pyplot()
        fig, ax = (plt.subplots(figsize=(5, 3.5)) if ax is None else (ax.figure, ax))
        for i in range(self.n):
            ax.plot([0, 1, 2], [self.empty[i], self.circuit[i], self.full[i]], color="tab:gray", lw=0.6, alpha=0.6)
        ax.plot([0, 1, 2], [self.empty.mean(), self.circuit.mean(), self.full.mean()], marker="o", color="tab:blue",
                lw=2, label="mean")
        ax.set_xticks([0, 1, 2], ["empty", f"circuit ({len(self.spec)} {self.spec.level}s)", "full"])
        ax.set_ylabel(self.metric)
        ax.set_title(f"{self.ablation} ablation: cpr {self.cpr:.3f}")
        ax.legend(fontsize=8)
        return ax

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html
        return rich_html(self, self.plot)

    def plot_data(self) -> Optional[dict]:
        """The circuit drawn over the layers for the HTML report (:meth:`Circuit.plot_data`; None when the
        circuit's parts are not known)."""
        return self.spec.plot_data() if len(self.spec) else None

    def to_dict(self) -> dict:
        """A JSON-safe dict: the circuit spec, per-example ``circuit``/``full``/``empty [batch]``, cpr, cmd,
        ablation, metric, edge counts, data set and cost."""
        return jsonable({"circuit_spec": self.spec.to_dict(), "circuit": self.circuit, "full": self.full,
                         "empty": self.empty, "cpr": self.cpr, "cmd": self.cmd, "ablation": self.ablation,
                         "metric": self.metric, "n_edges": self.n_edges, "n_edges_total": self.n_edges_total,
                         "dataset": self.dataset, "cost": self.cost})


def _chunk_size(field, ds) -> int:
    """Examples per edge forward: the deltas and ablated values of every sender, ~256 MiB each."""
    fm = field.fm
    per_ex = (1 + fm.n_layers * (fm.n_heads + 1)) * ds.seq_len * fm.d_model * 4
    return max(1, min(ds.n, int(field.memory_budget // 8 // max(per_ex, 1))))


def _masks_metric(field, ds, masks: list, ablation: str, metric, seed: int = 0,
                  pos_masks: Optional[list] = None, ends: bool = False, cost: Optional[dict] = None) -> np.ndarray:
    """The metric ``[len(masks), batch]`` with each keep mask ``[n_senders, n_receivers]`` (None: all)
    and, optionally, each sender position mask ``[n_senders, batch, pos]`` (None: every position).

    ends: read the two ends off the cached runs instead of running the edge forward (every edge
    kept: the clean run; no edge kept under "corrupt" ablation: the corrupted run). cost: a dict
    that gets the number of edge forwards run under "edge_forwards"."""
    fm = field.require_functional()
    m = as_metric(metric)
    g = edge_graph(field)
    r = field.run(ds)
    dev = field.device
    out = torch.empty(len(masks), ds.n, dtype=torch.float64)
    # The two ends need no edge forward: every edge kept is the model itself, and with "corrupt"
    # ablation no edge kept is the corrupted run (edge_forward gives both exactly; tests/test_circuits.py)
    todo = []
    for i, k in enumerate(masks):
        positional = pos_masks is not None and pos_masks[i] is not None
        if ends and not positional and (k is None or bool(np.all(np.asarray(k)[g.adjacency]))):
            out[i] = field.metric_values(ds, m, "clean").double().cpu()
        elif ends and not positional and ablation == "corrupt" and not np.asarray(k).any():
            out[i] = field.metric_values(ds, m, "corrupt").double().cpu()
        else:
            todo.append(i)
    if cost is not None:
        cost["edge_forwards"] = len(todo)
    if not todo:
        return out.numpy()
    with torch.no_grad():
        keeps = {i: None if masks[i] is None else torch.as_tensor(masks[i], device=dev) for i in todo}
        for idx in example_chunks(ds.n, _chunk_size(field, ds)):
            idx = idx.to(dev)
            abl = ablation_values(field, r, ablation, idx, seed)
            x0 = r.clean.resid[0][idx]
            pos = r.metric_pos[idx]
            for i, k in keeps.items():
                P = None if pos_masks is None or pos_masks[i] is None else pos_masks[i][:, idx.cpu()].to(dev)
                xf = edge_forward(fm, g, x0, abl, k, pos_keep=P)
                out[i, idx.cpu()] = field.metric_on(m, r, xf[torch.arange(len(idx), device=dev), pos], idx).double().cpu()
    return out.numpy()


def evaluate_circuit(field, ds, circuit: Union[Circuit, Sequence[str]], ablation: str = "corrupt",
                     metric="logit_diff", seed: int = 0) -> CircuitResult:
    """Run the clean prompts with every edge outside ``circuit`` ablated (see the module doc).

    circuit: a :class:`Circuit` (a list of labels is read as edges when they contain ``->``,
    else as nodes). ablation: "corrupt" (default), "mean", "zero" or "resample" (``seed`` picks
    the other example). Returns a :class:`CircuitResult` with ``circuit``, ``full`` and
    ``empty`` metrics ``[batch]``."""
    ablation = check_ablation(field, ablation, ds, seed)
    c = as_circuit(circuit)
    g = edge_graph(field)
    t0 = time.perf_counter()
    mask = c.mask(g)
    cost: dict = {}
    vals = _masks_metric(field, ds, [mask, np.zeros_like(mask)], ablation, metric, seed,
                         pos_masks=[c.position_mask(g, ds), None], ends=True, cost=cost)
    full = to_numpy(field.metric_values(ds, metric, "clean"))
    return CircuitResult(spec=c, circuit=vals[0], full=full, empty=vals[1], ablation=ablation,
                         metric=as_metric(metric).name, n_edges=int(mask.sum()), n_edges_total=g.n_edges,
                         dataset=getattr(ds, "name", ""),
                         cost={**cost, "seconds": time.perf_counter() - t0})


# --- faithfulness over circuit sizes -----------------------------------------------------------------
DEFAULT_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass
class FaithfulnessCurve:
    """Faithfulness of the top-k circuits of a ranking, for each size k.

    ``sizes [n_sizes]`` (parts: edges or nodes), ``fractions [n_sizes]`` (share of all edges or
    nodes), per-example metrics ``circuit [n_sizes, batch]``, ``full``/``empty [batch]``.
    ``faithfulness`` per size is the ratio of means (MIB); ``area`` the area under faithfulness
    over the fraction axis from 0 (faithfulness 0) to the largest fraction measured (trapezoids,
    MIB's CPR score), ``cmd_area`` the area under |1 - faithfulness| (MIB's CMD score).
    ``smallest(0.8)`` is the smallest size whose faithfulness is at least 0.8."""

    sizes: np.ndarray
    fractions: np.ndarray
    circuit: np.ndarray
    full: np.ndarray
    empty: np.ndarray
    level: str = "edge"
    ablation: str = "corrupt"
    metric: str = "logit_diff"
    method: str = ""
    dataset: str = ""
    cost: dict = dc_field(default_factory=dict)
    circuits: list = dc_field(default_factory=list, repr=False)

    @property
    def faithfulness(self) -> np.ndarray:
        """``[n_sizes]`` faithfulness of each size: sum(circuit - empty) / sum(full - empty) over the examples
        (NaN when full equals empty)."""
        den = float(np.sum(self.full - self.empty))
        return (self.circuit - self.empty[None]).sum(1) / den if den != 0 else np.full(len(self.sizes), np.nan)

    @property
    def n(self) -> int:
        """Number of examples (the ``batch`` axis of the metrics)."""
        return int(self.full.size)

    @staticmethod
    def _areas(fr: np.ndarray, f: np.ndarray) -> tuple[float, float]:
        x = np.concatenate([[0.0], fr])
        y = np.concatenate([[0.0], f])
        trap = lambda v: float(np.sum((x[1:] - x[:-1]) * (v[1:] + v[:-1]) / 2))
        return trap(y), trap(np.abs(1 - y))

    @property
    def area(self) -> float:
        """Area under faithfulness over the share of parts kept, from 0 to the largest share measured
        (trapezoids; MIB's CPR score)."""
        return self._areas(self.fractions, self.faithfulness)[0]

    @property
    def cmd_area(self) -> float:
        """Area under |1 - faithfulness| over the share of parts kept (trapezoids; MIB's CMD score, lower is
        better)."""
        return self._areas(self.fractions, self.faithfulness)[1]

    def smallest(self, bar: float = 0.8) -> Optional[int]:
        """The smallest measured size with faithfulness >= bar (None if none reaches it)."""
        bar = check_number("bar", bar)
        ok = np.nonzero(self.faithfulness >= bar)[0]
        return int(self.sizes[ok[0]]) if len(ok) else None

    def at(self, size: int) -> CircuitResult:
        """The :class:`CircuitResult` of the measured size ``size`` (without its Circuit)."""
        if size not in self.sizes:
            raise UsageError(f"size {size} was not measured; measured sizes: {self.sizes.tolist()}")
        i = int(np.nonzero(self.sizes == size)[0][0])
        spec = self.circuits[i] if i < len(self.circuits) else Circuit.placeholder(self.level, f"top {size}")
        return CircuitResult(spec=spec, circuit=self.circuit[i], full=self.full, empty=self.empty,
                             ablation=self.ablation, metric=self.metric, n_edges=int(self.cost.get("edges", {}).get(
                                 str(int(size)), 0)), n_edges_total=int(self.cost.get("n_edges_total", 0)),
                             dataset=self.dataset)

    def summary(self) -> str:
        """A readable summary: the ranking, ablation and n, faithfulness by size, area, cmd area and the smallest
        size reaching 0.8."""
        rows = ", ".join(f"{int(k)}: {f:.3f}" for k, f in zip(self.sizes, self.faithfulness))
        s8 = self.smallest(0.8)
        return (f"FaithfulnessCurve({self.level}s ranked by {self.method or 'scores'}, {self.ablation} ablation, "
                f"n={self.n})\n  faithfulness by size: {rows}\n  area {self.area:.3f}, cmd area {self.cmd_area:.3f}, "
                f"smallest size with faithfulness >= 0.8: {s8}")

    __str__ = __repr__ = summary

    def to_dict(self) -> dict:
        """A JSON-safe dict: sizes, fractions, faithfulness ``[n_sizes]``, area, cmd_area, smallest size reaching
        0.8, per-example metrics ``circuit [n_sizes, batch]`` and ``full``/``empty [batch]``, settings
        and cost."""
        return jsonable({"sizes": self.sizes, "fractions": self.fractions, "faithfulness": self.faithfulness,
                         "area": self.area, "cmd_area": self.cmd_area, "smallest_0.8": self.smallest(0.8),
                         "circuit": self.circuit, "full": self.full, "empty": self.empty, "level": self.level,
                         "ablation": self.ablation, "metric": self.metric, "method": self.method,
                         "dataset": self.dataset, "cost": self.cost})

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html
        return rich_html(self, self.plot)

    def plot_data(self) -> dict:
        """A JSON-able line plot for the HTML report: faithfulness against the share of parts kept (log x)."""
        return {"kind": "line", "x": self.fractions.tolist(), "y": self.faithfulness.tolist(), "xscale": "log",
                "hline": 1.0, "xlabel": f"share of {self.level}s in the circuit", "ylabel": "faithfulness",
                "title": f"faithfulness of the top {self.level}s by {self.method or 'score'} ({self.ablation} "
                         f"ablation): area {self.area:.3f}"}

    def plot(self, ax=None):
        """Faithfulness against the share of parts kept (log scale)."""
        from fieldcheck.display import pyplot
        plt = pyplot()
        fig, ax = (plt.subplots(figsize=(5.5, 3.5)) if ax is None else (ax.figure, ax))
        ax.plot(self.fractions, self.faithfulness, marker="o")
        ax.set_xscale("log")
        ax.axhline(1.0, color="gray", lw=0.5)
        ax.set_xlabel(f"share of {self.level}s in the circuit")
        ax.set_ylabel("faithfulness (circuit - empty) / (full - empty)")
        return ax


def faithfulness_curve(field, ds, scores=None, sizes=None, level: str = "edge", ablation: str = "corrupt",
                       metric="logit_diff", method: str = "eap-ig", steps: int = 5, seed: int = 0,
                       eval_ds=None, by: str = "abs") -> FaithfulnessCurve:
    """Faithfulness of the top-k parts of a ranking for each k in ``sizes``.

    scores: an :class:`~fieldcheck.experiments.discovery.EdgeScores` (default: computed on ``ds``
    with ``method``/``steps``/``ablation``). sizes: counts of parts, or fractions in (0, 1] of all
    parts (default MIB's 0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%, 50%, 100%). level: "edge" or
    "node". eval_ds: the data set the circuits are evaluated on (default ``ds``); ``ds`` then only
    gives the scores, and with precomputed ``scores`` it is not used at all. by: "abs" ranks parts
    by |score| (MIB's CMD ranking), "signed" from the most helpful part on (MIB's CPR ranking; see
    :func:`fieldcheck.experiments.mib.mib_scores`)."""
    ev = ds if eval_ds is None else eval_ds
    ablation = check_ablation(field, ablation, ev, seed)
    check_choice("level", level, ("edge", "node"))
    check_int("steps", steps, low=1, hint="integration points of method='eap-ig'")
    t0 = time.perf_counter()
    if scores is None:
        scores = edge_scores(field, ds, method=method, steps=steps, ablation=ablation, metric=metric)
    elif not isinstance(scores, EdgeScores):
        raise UsageError(f"scores must be the EdgeScores of field.edge_scores(...), got {type(scores).__name__}")
    total = scores.graph.n_edges if level == "edge" else scores.graph.n_senders - 1
    sizes = DEFAULT_FRACTIONS if sizes is None else sizes
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__") or not len(sizes):
        raise UsageError(f"sizes must be a non-empty list of circuit sizes (counts of {level}s, or fractions in "
                         f"(0, 1]), got {sizes!r}")
    ks = []
    for s in sizes:
        if isinstance(s, float) and 0 < s <= 1:
            k = int(math.ceil(s * total))
        elif isinstance(s, numbers.Integral) and not isinstance(s, bool):
            k = int(s)
        else:
            k = 0
        if not 1 <= k <= total:
            raise UsageError(f"circuit size {s!r} is outside 1..{total} {level}s (or a fraction in (0, 1])")
        ks.append(k)
    ks = sorted(set(ks))
    circuits = [scores.top(k, level, by) for k in ks]
    masks = [scores.top_mask(k, level, by) for k in ks]
    cost: dict = {}
    vals = _masks_metric(field, ev, masks + [np.zeros_like(masks[0])], ablation, metric, seed, ends=True, cost=cost)
    return FaithfulnessCurve(sizes=np.array(ks), fractions=np.array(ks, dtype=float) / total, circuit=vals[:-1],
                             full=to_numpy(field.metric_values(ev, metric, "clean")), empty=vals[-1], level=level,
                             ablation=ablation, metric=as_metric(metric).name, method=scores.method,
                             dataset=getattr(ev, "name", ""), circuits=circuits,
                             cost={**cost, "seconds": time.perf_counter() - t0,
                                   "edges": {str(k): int(m.sum()) for k, m in zip(ks, masks)},
                                   "n_edges_total": scores.graph.n_edges})


# --- minimality ------------------------------------------------------------------------------------
@dataclass
class Minimality:
    """What removing each part of a circuit costs: ``without [n_parts, batch]`` is the metric of
    the circuit without that part, ``circuit``/``full``/``empty [batch]`` as in
    :class:`CircuitResult`. ``cost [n_parts]`` = sum(circuit - without) / sum(full - empty) (the
    share of the full model's effect lost). ``fc.assert_minimal(m, min_cost > 0.01)``."""

    spec: Circuit
    parts: list
    without: np.ndarray
    circuit: np.ndarray
    full: np.ndarray
    empty: np.ndarray
    ablation: str = "corrupt"
    metric: str = "logit_diff"
    cost_info: dict = dc_field(default_factory=dict)

    @property
    def cost(self) -> np.ndarray:
        """``[n_parts]`` share of the full model's effect lost without each part: sum(circuit - without) /
        sum(full - empty) (NaN when full equals empty)."""
        den = float(np.sum(self.full - self.empty))
        return (self.circuit[None] - self.without).sum(1) / den if den != 0 else np.full(len(self.parts), np.nan)

    @property
    def n(self) -> int:
        """Number of examples (the ``batch`` axis of the metrics)."""
        return int(self.full.size)

    def summary(self) -> str:
        """A readable summary: the circuit's size, ablation, n and the five parts whose removal costs least."""
        order = np.argsort(self.cost)
        worst = ", ".join(f"{self.parts[i]} ({self.cost[i]:.3g})" for i in order[:5])
        return (f"Minimality({len(self.parts)} parts of a {self.spec.level} circuit, {self.ablation} ablation, "
                f"n={self.n})\n  smallest costs of removing one part: {worst}")

    __str__ = __repr__ = summary

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html
        return rich_html(self)

    def to_dict(self) -> dict:
        """A JSON-safe dict: the circuit spec, parts, ``cost [n_parts]``, ``without [n_parts, batch]``,
        ``circuit``/``full``/``empty [batch]``, ablation, metric and cost info."""
        return jsonable({"circuit_spec": self.spec.to_dict(), "parts": list(self.parts), "cost": self.cost,
                         "without": self.without, "circuit": self.circuit, "full": self.full,
                         "empty": self.empty, "ablation": self.ablation, "metric": self.metric,
                         "cost_info": self.cost_info})


def minimality(field, ds, circuit, ablation: str = "corrupt", metric="logit_diff", seed: int = 0) -> Minimality:
    """Evaluate ``circuit`` without each one of its parts (one edge forward per part)."""
    ablation = check_ablation(field, ablation, ds, seed)
    c = as_circuit(circuit)
    g = edge_graph(field)
    t0 = time.perf_counter()
    # a one-part circuit without its part is the empty circuit (no Circuit object: a Circuit is never empty)
    cs = [c] + ([c.without(p) for p in c.parts] if len(c) > 1 else [None])
    empty = np.zeros(g.adjacency.shape, bool)
    masks = [empty if x is None else x.mask(g) for x in cs] + [empty]
    cost: dict = {}
    vals = _masks_metric(field, ds, masks, ablation, metric, seed,
                         pos_masks=[None if x is None else x.position_mask(g, ds) for x in cs] + [None], ends=True,
                         cost=cost)
    return Minimality(spec=c, parts=list(c.parts), without=vals[1:-1], circuit=vals[0],
                      full=to_numpy(field.metric_values(ds, metric, "clean")), empty=vals[-1], ablation=ablation,
                      metric=as_metric(metric).name,
                      cost_info={**cost, "seconds": time.perf_counter() - t0})
