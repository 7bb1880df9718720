"""Circuit discovery by edge attribution: EAP and EAP-IG over the whole edge graph.

The score of an edge ``s -> r`` is the first-order prediction of what ablating it does to the
mean metric: ``(ablated_s - clean_s) . dm/d input(r)``, summed over positions and averaged over
examples, where ``input(r)`` is the receiver's own input (an edge's change reaches only that
receiver) and ``ablated_s`` the sender's output in the ablation run (see
:mod:`fieldcheck.experiments.edges`).

- ``method="eap"`` (Syed et al. 2023): the gradient at the clean run; one forward and one
  backward pass for every edge at once.
- ``method="eap-ig"`` (Hanna et al. 2024, "inputs" variant): the gradient averaged over ``steps``
  points on the straight line between the ablation run's and the clean run's embeddings (midpoint
  rule); ``steps`` forward and backward passes, whatever the number of edges.

Every receiver input is its own tensor in the forward (its q, k and v are computed from it), so
one backward pass gives the gradient at each of them. ``discover_circuit`` keeps the ``k`` edges
with the largest |score| (``level="edge"``), or the ``k`` nodes whose summed outgoing scores are
largest in magnitude (``level="node"``: ablating a node ablates all its outgoing edges, so its
first-order effect is the sum of theirs).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field as dc_field

import numpy as np
import torch

from fieldcheck.errors import UsageError
from fieldcheck.experiments.circuit_spec import Circuit, check_ablation, example_chunks
from fieldcheck.experiments.edges import EdgeGraph, ablation_values, edge_forward, edge_graph, sender_values
from fieldcheck.field.metrics import as_metric
from fieldcheck.jsonable import jsonable

__all__ = ["EdgeScores", "edge_scores", "discover_circuit", "METHODS"]

METHODS = ("eap", "eap-ig")


@dataclass
class EdgeScores:
    """Attribution scores ``[n_senders, n_receivers]`` (0 where there is no edge): the predicted
    change of the mean metric when the edge is ablated. ``top(k, level)`` is the circuit of the
    k largest |scores|; ``node_scores [n_senders]`` sums each sender's outgoing scores."""

    graph: EdgeGraph
    scores: np.ndarray
    method: str
    ablation: str = "corrupt"
    metric: str = "logit_diff"
    steps: int = 1
    dataset: str = ""
    cost: dict = dc_field(default_factory=dict)

    def edge(self, label) -> float:
        """The score of one edge, given as ``"sender->receiver"`` or a (sender, receiver) pair (SiteError when
        the graph has no such edge)."""
        return float(self.scores[self.graph.edge_index(label)])

    @property
    def node_scores(self) -> np.ndarray:
        """``[n_senders]``: each sender's outgoing scores summed (the first-order effect of ablating the node)."""
        return self.scores.sum(1)

    def ranking(self, level: str = "edge") -> list[tuple[str, float]]:
        """Parts by decreasing |score|: (label, score)."""
        if level == "edge":
            s, r = np.nonzero(self.graph.adjacency)
            v = self.scores[s, r]
            order = np.argsort(-np.abs(v), kind="stable")
            return [(self.graph.edge_label(int(s[i]), int(r[i])), float(v[i])) for i in order]
        if level == "node":
            v = self.node_scores[1:]
            order = np.argsort(-np.abs(v), kind="stable")
            return [(self.graph.senders[i + 1], float(v[i])) for i in order]
        raise UsageError(f"level must be 'edge' or 'node', got {level!r}")

    def top(self, k: int, level: str = "edge") -> Circuit:
        """The circuit of the ``k`` parts with the largest |score|."""
        ranked = self.ranking(level)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= len(ranked):
            raise UsageError(f"k must be an integer in 1..{len(ranked)} ({level}s of this model), got {k!r}")
        parts = ranked[:int(k)]
        kw = {"edges" if level == "edge" else "nodes": [p for p, _ in parts]}
        return Circuit(**kw, scores=[s for _, s in parts], name=f"top {k} {level}s by {self.method}")

    def summary(self) -> str:
        """A readable summary: method, steps, ablation, the number of edges and the five largest scores."""
        top = ", ".join(f"{p} ({s:+.3g})" for p, s in self.ranking("edge")[:5])
        return (f"EdgeScores({self.method}, {self.steps} step(s), {self.ablation} ablation, {self.graph.n_edges} "
                f"edges)\n  largest: {top}")

    __str__ = __repr__ = summary

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html
        return rich_html(self)

    def to_dict(self) -> dict:
        """A JSON-safe dict: method, ablation, metric, steps, data set, number of edges, the 50 top edges and
        nodes with their scores, and cost."""
        return jsonable({"method": self.method, "ablation": self.ablation, "metric": self.metric,
                         "steps": self.steps, "dataset": self.dataset, "n_edges": self.graph.n_edges,
                         "top_edges": self.ranking("edge")[:50], "top_nodes": self.ranking("node")[:50],
                         "cost": self.cost})


def _score_chunk_size(field, ds) -> int:
    """Examples per backward: the gradient at every receiver input is kept for the chunk."""
    fm = field.fm
    n_recv = fm.n_layers * (3 * fm.n_heads + 1) + 1
    n_send = 1 + fm.n_layers * (fm.n_heads + 1)
    per_ex = (n_recv + 2 * n_send) * ds.seq_len * fm.d_model * 4
    return max(1, min(ds.n, int(field.memory_budget // max(per_ex, 1))))


def edge_scores(field, ds, method: str = "eap-ig", steps: int = 5, ablation: str = "corrupt",
                metric="logit_diff", seed: int = 0) -> EdgeScores:
    """Attribution scores of every edge (see the module doc): ``steps`` forward+backward passes
    for "eap-ig", one for "eap"."""
    check_ablation(field, ablation)
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; use 'eap' or 'eap-ig'")
    if method == "eap":
        steps = 1
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise UsageError(f"steps must be a positive integer, got {steps!r}")
    fm = field.fm
    m = as_metric(metric)
    g = edge_graph(field)
    r = field.run(ds)
    dev = field.device
    t0 = time.perf_counter()
    H = fm.n_heads
    S = g.n_senders
    scores = torch.zeros(S, g.n_receivers, dtype=torch.float64, device=dev)
    for idx in example_chunks(ds.n, _score_chunk_size(field, ds)):
        idx = idx.to(dev)
        with torch.no_grad():
            abl = ablation_values(field, r, ablation, idx, seed)
            delta = abl - sender_values(fm, r.clean, idx)                   # [S, b, T, d]
        x_clean, x_abl = r.clean.resid[0][idx], abl[0]
        grads: dict = {}

        def hook(kind, l, t):
            def acc(gr, key=(kind, l)):
                grads[key] = grads[key] + gr.detach() if key in grads else gr.detach().clone()
            t.register_hook(acc)

        b = torch.arange(len(idx), device=dev)
        for k in range(steps):
            a = 1.0 if method == "eap" else (k + 0.5) / steps
            with torch.enable_grad():
                x0 = (x_abl + a * (x_clean - x_abl)).detach().requires_grad_(True)
                xf = edge_forward(fm, g, x0, abl, None, hooks=hook)
                field.metric_on(m, r, xf[b, r.metric_pos[idx]], idx).sum().backward()
        with torch.no_grad():
            for l in range(fm.n_layers):
                n = g.heads_before(l)
                scores[:n, g.head_receivers(l)] += torch.einsum(
                    "sbtd,rbtd->sr", delta[:n], grads[("heads", l)]).double()
                ms = g.mlp_sender(l)
                scores[:ms, g.mlp_receiver(l)] += torch.einsum(
                    "sbtd,btd->s", delta[:ms], grads[("mlp", l)]).double()
            scores[:, g.logits] += torch.einsum("sbtd,btd->s", delta, grads[("logits", fm.n_layers)]).double()
        del grads
    scores = scores / (steps * ds.n)
    sc = scores.cpu().numpy() * g.adjacency
    return EdgeScores(graph=g, scores=sc, method=method, ablation=ablation, metric=m.name, steps=steps,
                      dataset=getattr(ds, "name", ""),
                      cost={"forward_backward": steps * len(list(example_chunks(ds.n, _score_chunk_size(field, ds)))),
                            "seconds": time.perf_counter() - t0})


def discover_circuit(field, ds, k: int, level: str = "edge", method: str = "eap-ig", steps: int = 5,
                     ablation: str = "corrupt", metric="logit_diff", seed: int = 0) -> Circuit:
    """The circuit of the ``k`` edges (``level="edge"``) or nodes (``level="node"``) with the
    largest |attribution score| (``method`` "eap-ig" with ``steps`` or "eap"). The circuit's
    ``scores`` hold each part's score; ``circuit.edge_scores`` the full :class:`EdgeScores`."""
    if level not in ("edge", "node"):
        raise UsageError(f"level must be 'edge' or 'node', got {level!r}")
    es = edge_scores(field, ds, method=method, steps=steps, ablation=ablation, metric=metric, seed=seed)
    c = es.top(k, level)
    c.edge_scores = es
    return c
