"""What a circuit is, shared by evaluation (:mod:`fieldcheck.experiments.circuits`) and discovery
(:mod:`fieldcheck.experiments.discovery`), below both: :class:`Circuit` (a set of edges or nodes of
the edge graph of :mod:`fieldcheck.experiments.edges`), :func:`as_circuit`, and the checks and
example chunks both use.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import numpy as np
import torch

from fieldcheck.errors import SiteError, UsageError, check_int
from fieldcheck.experiments.edges import ABLATIONS, MEAN_BY, EdgeGraph
from fieldcheck.field.sources import Source
from fieldcheck.field.labels import canonical, parse, unknown
from fieldcheck.field.sites import Site, SiteSet, as_site_set

__all__ = ["Circuit", "as_circuit"]


class Circuit:
    """A circuit of ``edges`` (labels ``"sender->receiver"`` such as ``"L0.H1->L2.H3.q"``, or
    (sender, receiver) pairs) or of ``nodes`` (heads ``"L3.H2"`` and MLPs ``"L3.mlp"``, optionally at a
    position ``"L3.H2@END"``, or ``attn_head``/``mlp_out`` site objects). Give exactly one, with at
    least one part. Labels follow :mod:`fieldcheck.field.labels`; the 0.1 spellings ``"MLP3"`` and
    ``"input"`` still work with a DeprecationWarning. ``scores`` (optional) holds the attribution score
    of each part, in the order given (discovery fills it).

    ``len(c)`` is the number of parts; ``c.without(part)`` the circuit without one part;
    ``c.mask(graph)`` the kept edges as ``[n_senders, n_receivers]`` booleans."""

    def __init__(self, edges: Optional[Sequence] = None, nodes: Optional[Sequence] = None,
                 scores: Optional[Sequence[float]] = None, name: str = ""):
        if (edges is None) == (nodes is None):
            raise UsageError("a Circuit takes edges=[...] or nodes=[...] (exactly one of them)")
        if edges is not None:
            parts = [_edge_text(e) for e in _as_parts(edges, "edges")]
            self.level = "edge"
        else:
            parts = _node_texts(_as_parts(nodes, "nodes"))
            self.level = "node"
        if not parts:
            raise UsageError(f"a Circuit needs at least one part, got {self.level}s=[]: the empty circuit (every "
                             "edge ablated) is what evaluate_circuit reports as `empty` next to each circuit")
        self.parts = tuple(dict.fromkeys(parts))
        if scores is not None:
            if isinstance(scores, (str, bytes)) or not hasattr(scores, "__len__") or len(scores) != len(parts):
                raise UsageError(f"a Circuit got {len(scores) if hasattr(scores, '__len__') else scores!r} scores "
                                 f"for {len(parts)} parts: give one score per part, in order")
            if len(self.parts) != len(parts):
                raise UsageError(f"a Circuit with scores names a part twice ({len(parts)} parts, "
                                 f"{len(self.parts)} distinct): give each part once with its score")
            try:
                scores = [float(x) for x in scores]
            except (TypeError, ValueError):
                raise UsageError(f"a Circuit's scores must be numbers, got {list(scores)!r}") from None
        self.scores = None if scores is None else tuple(scores)
        self.name = name

    @classmethod
    def from_graph_labels(cls, level: str, parts: Sequence[str], scores: Optional[Sequence[float]] = None,
                          name: str = "") -> "Circuit":
        """A circuit of labels exactly as an :class:`EdgeGraph` writes them (``graph.edge_label``,
        ``graph.senders``), distinct and in canonical spelling, so they are not parsed again (a
        ranking of 10^5 edges). Anything else goes through ``Circuit(edges=..., nodes=...)``."""
        if level not in ("edge", "node") or not parts:
            raise UsageError(f"from_graph_labels takes level 'edge' or 'node' and at least one part, got "
                             f"{level!r} with {len(parts)} parts")
        c = cls.__new__(cls)
        c.level, c.parts, c.name = level, tuple(parts), name
        c.scores = None if scores is None else tuple(float(x) for x in scores)
        return c

    @classmethod
    def placeholder(cls, level: str, name: str = "") -> "Circuit":
        """A circuit whose parts are not known (a FaithfulnessCurve read back without its circuits): no parts,
        ``level`` "edge" or "node"; it cannot be evaluated."""
        c = cls.__new__(cls)
        c.level, c.parts, c.scores, c.name = level, (), None, name
        return c

    @classmethod
    def all_edges(cls, graph: EdgeGraph) -> "Circuit":
        """Every edge of ``graph`` (the full model)."""
        return cls(edges=[graph.edge_label(s, r) for s, r in graph.edges()], name="all edges")

    @property
    def edges(self) -> tuple[str, ...]:
        """The edge labels ``"sender->receiver"`` of an edge circuit (empty for a node circuit)."""
        return self.parts if self.level == "edge" else ()

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes of a node circuit; for an edge circuit the senders and receivers it touches."""
        if self.level == "node":
            return tuple(dict.fromkeys(p.split("@")[0] for p in self.parts))
        out = []
        for e in self.parts:
            s, r = e.split("->", 1)
            out += [s, r.rsplit(".", 1)[0] if r.endswith((".q", ".k", ".v")) else r]
        return tuple(dict.fromkeys(out))

    def mask(self, graph: EdgeGraph) -> np.ndarray:
        """Kept edges ``[n_senders, n_receivers]`` (SiteError for a part the graph does not have)."""
        if self.level == "node":
            return graph.node_mask(self.nodes)
        m = np.zeros(graph.adjacency.shape, dtype=bool)
        for e in self.parts:
            if "@" in e:
                raise SiteError(f"edge {e!r}: edges are position-agnostic; keep a node at a position with "
                                "Circuit(nodes=['L3.H2@END', ...])")
            m[graph.edge_index(e)] = True
        return m

    @property
    def positional(self) -> bool:
        """Whether some node is kept only at some positions."""
        return self.level == "node" and any("@" in p for p in self.parts)

    def position_mask(self, graph: EdgeGraph, ds) -> Optional[torch.Tensor]:
        """``[n_senders, batch, pos]``: 1 where a sender's output is kept (None without positional
        nodes). A node named both with and without a position is kept everywhere."""
        if not self.positional:
            return None
        P = torch.ones(graph.n_senders, ds.n, ds.seq_len)
        at: dict[str, list] = {}
        for p in self.parts:
            node, _, pos = p.partition("@")
            at.setdefault(node, []).append(pos or None)
        b = torch.arange(ds.n)
        for node, poss in at.items():
            if None in poss:
                continue
            s = graph.sender_index(node)
            P[s] = 0
            for pos in poss:
                name = int(pos) if pos.lstrip("-").isdigit() else pos
                P[s, b, ds.position(name).cpu()] = 1
        return P

    def without(self, part: str) -> "Circuit":
        """This circuit without ``part`` (one of its labels; SiteError listing the nearest parts otherwise),
        same level and name; UsageError when ``part`` is the only one (a circuit is never empty)."""
        key = _part_text(part, self.level)
        if key not in self.parts:
            raise unknown(part, self.parts, self.level, "this circuit")
        keep = [p for p in self.parts if p != key]
        if not keep:
            raise UsageError(f"without({part!r}) would leave no part: {part!r} is this circuit's only {self.level}; "
                             "the empty circuit (every edge ablated) is what evaluate_circuit reports as `empty`")
        return Circuit(**{("edges" if self.level == "edge" else "nodes"): keep}, name=self.name)

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self):
        return iter(self.parts)

    def __contains__(self, part) -> bool:
        try:
            return _part_text(part, self.level) in self.parts
        except SiteError:
            return False

    def __eq__(self, other) -> bool:
        return isinstance(other, Circuit) and self.level == other.level and set(self.parts) == set(other.parts)

    def __hash__(self):
        return hash((self.level, frozenset(self.parts)))

    def __str__(self) -> str:
        shown = ", ".join(self.parts[:8]) + (", ..." if len(self.parts) > 8 else "")
        name = f" {self.name!r}" if self.name else ""
        return f"Circuit{name}({len(self.parts)} {self.level}s: {shown})"

    __repr__ = __str__

    def plot_data(self, max_parts: int = 400) -> dict:
        """A JSON-able picture of the circuit for the HTML report (``kind="circuit"``): ``nodes [[label, x, y],
        ...]`` with y the layer (an MLP half a layer above its heads, ``embed`` below layer 0, ``logits``
        on top) and x the head index, and ``edges [[i, j, port], ...]`` (port "q"/"k"/"v" or "");
        the ``max_parts`` parts with the largest |score| when the circuit has more."""
        keep = list(range(len(self.parts)))
        if len(keep) > max_parts:
            order = (np.argsort(-np.abs(np.asarray(self.scores)), kind="stable") if self.scores is not None
                     else np.arange(len(keep)))
            keep = sorted(int(i) for i in order[:max_parts])
        pairs = []
        for i in keep:
            p = self.parts[i]
            if self.level == "edge":
                snd, rcv = p.split("->", 1)
                pairs.append((parse(snd), parse(rcv)))
            else:
                pairs.append((parse(p), None))
        labs = [x for pr in pairs for x in pr if x is not None]
        H = max([x.head for x in labs if x.head is not None] or [0]) + 1
        top = max([x.layer for x in labs if x.layer is not None] or [0]) + 1
        mid = (H - 1) / 2

        def xy(lab) -> tuple[str, float, float]:
            if lab.kind == "head":
                return lab.component.rsplit(".", 1)[0] if lab.port else lab.component, float(lab.head), float(lab.layer)
            if lab.kind == "mlp":
                return lab.component, mid, lab.layer + 0.5
            return lab.component, mid, (-0.6 if lab.kind == "embed" else top + 0.2)

        index: dict[str, int] = {}
        nodes: list = []

        def node(lab) -> int:
            name, x, y = xy(lab)
            if name not in index:
                index[name] = len(nodes)
                nodes.append([name if lab.pos is None else f"{name}@{lab.pos}", x, y])
            return index[name]

        edges = [[node(a), node(b), b.port or ""] for a, b in pairs if b is not None]
        for a, b in pairs:
            if b is None:
                node(a)
        shown = "" if len(keep) == len(self.parts) else f" (the {len(keep)} largest of {len(self.parts)})"
        return {"kind": "circuit", "nodes": nodes, "edges": edges, "level": self.level,
                "title": f"{self.name or 'circuit'}: {len(self.parts)} {self.level}s{shown}"}

    def to_dict(self) -> dict:
        """A JSON-safe dict: level ("edge" or "node"), parts, name and scores (None when not discovered)."""
        return {"level": self.level, "parts": list(self.parts), "name": self.name,
                "scores": None if self.scores is None else list(self.scores)}


def _as_parts(x, what: str) -> list:
    if isinstance(x, (str, SiteSet, Site)):
        return [x]
    try:
        return list(x)
    except TypeError:
        raise UsageError(f"{what}={x!r} is not a list of labels") from None


def _edge_text(e) -> str:
    if isinstance(e, str):
        return _edge_str(e)
    if isinstance(e, (tuple, list)) and len(e) == 2:
        return f"{canonical(e[0], 'sender')}->{canonical(e[1], 'receiver')}"
    raise SiteError(f"edge {e!r}: give 'sender->receiver' or a (sender, receiver) pair")


@functools.lru_cache(maxsize=1 << 18)
def _edge_str(e: str) -> str:
    """Canonical text of one edge label (cached: a full graph has 10^5 edges)."""
    snd, arrow, rcv = e.replace(" ", "").partition("->")
    if not arrow:
        raise SiteError(f"edge {e!r}: write 'sender->receiver', e.g. 'L0.H1->L2.H3.q' or 'L1.mlp->logits' "
                        "(for nodes use Circuit(nodes=[...]))")
    return f"{canonical(snd, 'sender')}->{canonical(rcv, 'receiver')}"


def _node_texts(nodes: list) -> list[str]:
    out = []
    for n in nodes:
        if isinstance(n, (Site, SiteSet)):
            out += as_site_set(n).component_labels()
        elif isinstance(n, str) and "->" in n:
            raise SiteError(f"node {n!r} is an edge: for edges use Circuit(edges=[...])")
        else:
            out.append(n)
    texts = []
    for n in out:
        lab = parse(n, "node")
        if lab.port is not None or lab.kind not in ("head", "mlp", "embed", "logits"):
            raise SiteError(f"node {str(lab)!r}: nodes are heads 'L{{layer}}.H{{head}}' and MLPs 'L{{layer}}.mlp' "
                            "(optionally '@position'); for edges into q/k/v use Circuit(edges=[...])")
        texts.append(str(lab))
    return texts


def _part_text(part, level: str) -> str:
    return _edge_text(part) if level == "edge" else _node_texts([part])[0]


def as_circuit(x) -> Circuit:
    """A Circuit from a Circuit, or from a list of labels (edges when they contain ``->``, else nodes) or node
    site objects; UsageError for an empty list or anything else."""
    if isinstance(x, Circuit):
        return x
    if isinstance(x, (list, tuple)):
        if not x:
            raise UsageError("the circuit is empty ([]): give at least one edge or node; the empty circuit (every "
                             "edge ablated) is what evaluate_circuit reports as `empty` next to each circuit")
        if all(isinstance(p, (str, Site, SiteSet)) and not (isinstance(p, str) and "->" in p) for p in x):
            return Circuit(nodes=list(x))
        return Circuit(edges=list(x))
    if isinstance(x, (Site, SiteSet)):
        return Circuit(nodes=[x])
    raise UsageError(f"{type(x).__name__} is not a circuit: give fieldcheck.Circuit(edges=[...]) or "
                     "Circuit(nodes=[...]), or field.discover_circuit(ds, k=...)")


def check_ablation(field, ablation, ds, seed: int = 0) -> str:
    """The ablation's name ("corrupt", "mean", "zero", "resample", or "mean(by=KEY)" for
    ``fieldcheck.sources.mean(by=KEY)``, grouped mean ablation). UnsupportedArchitecture when ``field``
    (a FieldCore) has no functional model, UsageError for any other ablation or a ``seed`` that is not an
    int >= 0, DatasetError when ``ds`` (the set the call runs on) is not a ContrastiveSet that fits the model."""
    from fieldcheck.field.core import check_dataset

    field.require_functional()
    check_int("seed", seed, low=0, hint="it picks the other example of ablation='resample'")
    check_dataset(ds, field.model)
    if isinstance(ablation, Source) and ablation.kind in ("mean", "zero"):
        return ablation.describe()
    if isinstance(ablation, str) and (ablation in ABLATIONS or MEAN_BY.fullmatch(ablation)):
        return ablation
    raise UsageError(f"unknown ablation {ablation!r}; use one of {', '.join(ABLATIONS)}, or "
                     "fieldcheck.sources.mean(by='template') (the mean within each example's template)")


def example_chunks(n: int, size: int):
    """Example indices ``0..n-1`` in chunks of at most ``size``: yields index tensors ``[<= size]``."""
    for c in range(0, n, size):
        yield torch.arange(c, min(n, c + size))
