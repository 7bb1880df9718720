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

from fieldcheck.errors import UsageError, check_choice, check_int
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

    def _order(self, level: str, by: str) -> tuple[np.ndarray, ...]:
        """The parts in ranking order: ``(senders, receivers, values)`` of the edges, or ``(senders,
        values)`` of the nodes (sender indices, without ``embed``). Cached per (level, by): a
        faithfulness curve asks for a dozen prefixes of one ranking of 10^5 edges."""
        if by not in ("abs", "signed"):
            raise UsageError(f"by must be 'abs' or 'signed', got {by!r}")
        check_choice("level", level, ("edge", "node"))
        cache = self.__dict__.setdefault("_orders", {})
        if (level, by) not in cache:
            key = (lambda v: -np.abs(v)) if by == "abs" else (lambda v: v)
            if level == "edge":
                s, r = np.nonzero(self.graph.adjacency)
                v = self.scores[s, r]
                o = np.argsort(key(v), kind="stable")
                cache[level, by] = (s[o], r[o], v[o])
            else:
                v = self.node_scores[1:]
                o = np.argsort(key(v), kind="stable")
                cache[level, by] = (o + 1, v[o])
        return cache[level, by]

    def _labels(self, level: str, by: str, k: int) -> list[tuple[str, float]]:
        order = self._order(level, by)
        if level == "edge":
            s, r, v = (a[:k] for a in order)
            return [(self.graph.edge_label(int(a), int(b)), float(x)) for a, b, x in zip(s, r, v)]
        s, v = (a[:k] for a in order)
        return [(self.graph.senders[int(a)], float(x)) for a, x in zip(s, v)]

    def ranking(self, level: str = "edge", by: str = "abs") -> list[tuple[str, float]]:
        """Parts by decreasing |score| (``by="abs"``), or from the most negative score up
        (``by="signed"``: first the parts whose ablation lowers the metric most, i.e. that help the
        model most; MIB ranks by signed score for its CPR): (label, score)."""
        return self._labels(level, by, len(self._order(level, by)[0]))

    def _check_k(self, k, level: str, by: str) -> int:
        n = len(self._order(level, by)[0])
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n:
            raise UsageError(f"k must be an integer in 1..{n} ({level}s of this model), got {k!r}")
        return int(k)

    def top(self, k: int, level: str = "edge", by: str = "abs") -> Circuit:
        """The circuit of the ``k`` first parts of ``ranking(level, by)`` (largest |score| by default)."""
        k = self._check_k(k, level, by)
        parts = self._labels(level, by, k)
        how = "" if by == "abs" else " (signed)"
        return Circuit.from_graph_labels(level, [p for p, _ in parts], [s for _, s in parts],
                                         name=f"top {k} {level}s by {self.method}{how}")

    def top_mask(self, k: int, level: str = "edge", by: str = "abs") -> np.ndarray:
        """``[n_senders, n_receivers]`` booleans: the edges kept by ``top(k, level, by)`` (what
        ``top(k, level, by).mask(graph)`` gives, from the indices without going through labels)."""
        k = self._check_k(k, level, by)
        order = self._order(level, by)
        if level == "node":
            m = np.zeros(self.graph.n_senders, dtype=bool)
            m[0] = True
            m[order[0][:k]] = True
            return self.graph.adjacency & m[:, None]
        m = np.zeros(self.graph.adjacency.shape, dtype=bool)
        m[order[0][:k], order[1][:k]] = True
        return m

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
    """Examples per backward under the field's memory budget: per example, the gradient at every
    receiver input and the senders' deltas (float32 at least) and the activations the backward
    pass keeps (every head's own copy of its inputs), twice: the backward's transient gradients
    are about as large again (calibrated on Qwen2.5-0.5B, benchmarks/README.md "Memory")."""
    return max(1, min(ds.n, int(field.memory_budget // max(eap_bytes_per_example(field.fm, ds.seq_len), 1))))


def eap_bytes_per_example(fm, T: int, itemsize: int = 4) -> int:
    """Peak bytes one example adds to an EAP/EAP-IG backward (see ``_score_chunk_size``)."""
    n_recv = fm.n_layers * (3 * fm.n_heads + 1) + 1
    n_send = 1 + fm.n_layers * (fm.n_heads + 1)
    item = max(4, itemsize)
    d_mlp = getattr(fm, "d_mlp", 4 * fm.d_model)
    kept = (n_recv + 2 * n_send) * T * fm.d_model * item + fm.n_layers * T * (
        (3 * fm.n_heads + 12) * fm.d_model + 4 * d_mlp + 2 * fm.n_heads * T) * item
    return 2 * kept


def edge_scores(field, ds, method: str = "eap-ig", steps: int = 5, ablation: str = "corrupt",
                metric="logit_diff", seed: int = 0) -> EdgeScores:
    """Attribution scores of every edge (see the module doc): ``steps`` forward+backward passes
    for "eap-ig", one for "eap"."""
    ablation = check_ablation(field, ablation, ds, seed)
    if not isinstance(method, str) or method not in METHODS:
        raise UsageError(f"unknown method {method!r}; use 'eap' or 'eap-ig'")
    steps = check_int("steps", steps, low=1, hint="integration points of method='eap-ig'")
    if method == "eap":
        steps = 1
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
        step: dict = {}
        sums: dict = {}

        def hook(kind, l, t):
            if kind == "attn_sum":       # post-norm families: the block's pre-norm sum in this run
                sums[l] = t.detach()
                return

            def acc(gr, key=(kind, l)):
                step[key] = gr.detach()
            t.register_hook(acc)

        b = torch.arange(len(idx), device=dev)
        for k in range(steps):
            a = 1.0 if method == "eap" else (k + 0.5) / steps
            step.clear()
            with torch.enable_grad():
                x0 = (x_abl + a * (x_clean - x_abl)).detach().requires_grad_(True)
                xf = edge_forward(fm, g, x0, abl, None, hooks=hook)
                field.metric_on(m, r, xf[b, r.metric_pos[idx]], idx).sum().backward()
            if fm.attn_post_norm:
                _post_norm_head_scores(fm, g, scores, delta, step, sums)
            for key, gr in step.items():
                grads[key] = grads[key] + gr if key in grads else gr.clone()
        if fm.attn_post_norm:  # the heads' terms went through each block's norm above
            for l in range(fm.n_layers):
                delta[g.head_senders(l)] = 0
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


@torch.no_grad()
def _post_norm_head_scores(fm, g: EdgeGraph, scores: torch.Tensor, delta: torch.Tensor, grads: dict,
                           sums: dict) -> None:
    """Add one gradient step's scores of the head senders of a post-norm family: a receiver that
    drops the edge from head h of block l reads ``norm_l(y_l + delta_h)`` for ``norm_l(y_l)``, so
    the first-order change is ``delta_h . J_l(y_l)^T grad_r`` (the norm's Jacobian at this run's
    pre-norm sum ``y_l``; the edge forward's renormalized ablation, differentiated exactly)."""
    L, H = fm.n_layers, fm.n_heads
    for lp in range(L):
        hs = g.head_senders(lp)
        dr = delta[hs]                                                   # [H, b, T, d]
        _, vjp = torch.func.vjp(lambda v, lp=lp: fm.attn_post(lp, v), sums[lp])
        pull = torch.func.vmap(vjp)

        def add(cols, G):                                                # G: [R, b, T, d]
            (jt,) = pull(G)
            scores[hs, cols] += torch.einsum("hbtd,rbtd->hr", dr, jt).double()

        for l in range(lp + 1, L):
            add(g.head_receivers(l), grads[("heads", l)])
        for l in range(lp, L):
            add([g.mlp_receiver(l)], grads[("mlp", l)][None])
        add([g.logits], grads[("logits", L)][None])


def discover_circuit(field, ds, k: int, level: str = "edge", method: str = "eap-ig", steps: int = 5,
                     ablation: str = "corrupt", metric="logit_diff", seed: int = 0) -> Circuit:
    """The circuit of the ``k`` edges (``level="edge"``) or nodes (``level="node"``) with the
    largest |attribution score| (``method`` "eap-ig" with ``steps`` or "eap"). The circuit's
    ``scores`` hold each part's score; ``circuit.edge_scores`` the full :class:`EdgeScores`."""
    check_choice("level", level, ("edge", "node"))
    es = edge_scores(field, ds, method=method, steps=steps, ablation=ablation, metric=metric, seed=seed)
    c = es.top(k, level)
    c.edge_scores = es
    return c
