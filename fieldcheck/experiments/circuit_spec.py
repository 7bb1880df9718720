"""What a circuit is, shared by evaluation (:mod:`fieldcheck.experiments.circuits`) and discovery
(:mod:`fieldcheck.experiments.discovery`), below both: :class:`Circuit` (a set of edges or nodes of
the edge graph of :mod:`fieldcheck.experiments.edges`), :func:`as_circuit`, and the checks and
example chunks both use.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from fieldcheck.errors import SiteError, UsageError
from fieldcheck.experiments.edges import ABLATIONS, EdgeGraph

__all__ = ["Circuit", "as_circuit"]


class Circuit:
    """A circuit of ``edges`` (labels ``"sender->receiver"`` or (sender, receiver) pairs) or of
    ``nodes`` (``"L3.H2"``, ``"MLP3"``). Give exactly one. ``scores`` (optional) holds the
    attribution score of each part, in the order given (discovery fills it).

    ``len(c)`` is the number of parts; ``c.without(part)`` the circuit without one part;
    ``c.mask(graph)`` the kept edges as ``[n_senders, n_receivers]`` booleans."""

    def __init__(self, edges: Optional[Sequence] = None, nodes: Optional[Sequence[str]] = None,
                 scores: Optional[Sequence[float]] = None, name: str = ""):
        if (edges is None) == (nodes is None):
            raise UsageError("a Circuit takes edges=[...] or nodes=[...] (exactly one of them)")
        if edges is not None:
            parts = [e if isinstance(e, str) else f"{e[0]}->{e[1]}" for e in edges]
            self.level = "edge"
        else:
            parts = [str(n) for n in nodes]
            bad = [p for p in parts if "->" in p or p.split("@")[0].endswith((".q", ".k", ".v"))
                   or p.startswith(("input@", "logits@"))]
            if bad:
                raise SiteError(f"node {bad[0]!r}: nodes are heads 'L{{layer}}.H{{head}}' and MLPs 'MLP{{layer}}'; "
                                "for edges use Circuit(edges=[...])")
            self.level = "node"
        self.parts = tuple(dict.fromkeys(p.replace(" ", "") for p in parts))
        self.scores = None if scores is None else tuple(float(s) for s in scores)
        if self.scores is not None and len(self.scores) != len(self.parts):
            raise UsageError(f"a Circuit got {len(self.scores)} scores for {len(self.parts)} parts")
        self.name = name

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
        """This circuit without ``part`` (one of its labels; SiteError otherwise), same level and name."""
        if part not in self.parts:
            raise SiteError(f"{part!r} is not part of this circuit")
        keep = [p for p in self.parts if p != part]
        return Circuit(**{("edges" if self.level == "edge" else "nodes"): keep}, name=self.name)

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self):
        return iter(self.parts)

    def __contains__(self, part) -> bool:
        return part in self.parts

    def __eq__(self, other) -> bool:
        return isinstance(other, Circuit) and self.level == other.level and set(self.parts) == set(other.parts)

    def __hash__(self):
        return hash((self.level, frozenset(self.parts)))

    def __str__(self) -> str:
        shown = ", ".join(self.parts[:8]) + (", ..." if len(self.parts) > 8 else "")
        name = f" {self.name!r}" if self.name else ""
        return f"Circuit{name}({len(self.parts)} {self.level}s: {shown})"

    __repr__ = __str__

    def to_dict(self) -> dict:
        """A JSON-safe dict: level ("edge" or "node"), parts, name and scores (None when not discovered)."""
        return {"level": self.level, "parts": list(self.parts), "name": self.name,
                "scores": None if self.scores is None else list(self.scores)}


def as_circuit(x) -> Circuit:
    if isinstance(x, Circuit):
        return x
    if isinstance(x, (list, tuple)):
        if x and all(isinstance(p, str) and "->" not in p for p in x):
            return Circuit(nodes=list(x))
        return Circuit(edges=list(x))
    raise UsageError(f"{type(x).__name__} is not a circuit: give fieldcheck.Circuit(edges=[...]) or "
                     "Circuit(nodes=[...]), or field.discover_circuit(ds, k=...)")


def check_ablation(field, ablation: str) -> None:
    """UnsupportedArchitecture when ``field`` (a FieldCore) has no functional model, UsageError when
    ``ablation`` is not one of "corrupt", "mean", "zero", "resample"."""
    field.require_functional()
    if ablation not in ABLATIONS:
        raise UsageError(f"unknown ablation {ablation!r}; use one of {', '.join(ABLATIONS)}")


def example_chunks(n: int, size: int):
    """Example indices ``0..n-1`` in chunks of at most ``size``: yields index tensors ``[<= size]``."""
    for c in range(0, n, size):
        yield torch.arange(c, min(n, c + size))
