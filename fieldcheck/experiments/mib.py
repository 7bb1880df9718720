"""MIB's circuit-localization scores (Mueller et al. 2025, "MIB: A Mechanistic Interpretability
Benchmark"), computed the way MIB's evaluation code computes them.

Both scores integrate faithfulness ``f(k) = (m(C_k) - m(empty)) / (m(full) - m(empty))`` (ratio of
means over the examples; every edge outside the circuit patched from the corrupted run) over MIB's
size grid, ``k = int(p * n_edges)`` for ``p`` in 0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%, 50%,
100%, by trapezoids between consecutive grid points on the linear share axis (from 0.1% to 100%):

- **CPR** (circuit performance ratio, higher is better): the area under ``f`` with the edges
  ranked by *signed* score, most helpful first (the edges whose ablation lowers the metric most);
- **CMD** (circuit-model difference, lower is better): the area under ``|1 - f|`` with the edges
  ranked by *absolute* score.

The edge graph is MIB's (an input node, every head and MLP as senders, every head's q/k/v input,
every MLP input and the logits as receivers). One difference from MIB's code: edges left dangling
by the top-k cut are kept (MIB prunes them, ``prune=True``), so a circuit holds exactly ``k``
edges. ``FaithfulnessCurve.area`` and ``cmd_area`` (what the claim statistics ``area`` and ``cmd``
assert on) start their trapezoids at (0, 0) instead, which adds at most 0.001 to each area.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field

import numpy as np

from fieldcheck.jsonable import jsonable

__all__ = ["MIB_PERCENTAGES", "MIBScores", "mib_scores", "mib_area"]

MIB_PERCENTAGES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def mib_area(percentages, faithfulness) -> tuple[float, float]:
    """(area under f, area under |1 - f|) by trapezoids between consecutive points (MIB's rule)."""
    x = np.asarray(percentages, dtype=float)
    f = np.asarray(faithfulness, dtype=float)
    dx = x[1:] - x[:-1]
    return float(np.sum(dx * (f[1:] + f[:-1]) / 2)), float(np.sum(dx * (np.abs(1 - f[1:]) + np.abs(1 - f[:-1])) / 2))


@dataclass
class MIBScores:
    """CPR and CMD of one edge ranking on one data set, with both faithfulness curves.

    ``signed`` and ``absolute`` are :class:`~fieldcheck.experiments.circuits.FaithfulnessCurve`
    objects over MIB's grid (``sizes [10]`` edges each)."""

    cpr: float
    cmd: float
    signed: object
    absolute: object
    n_edges: int
    percentages: tuple = MIB_PERCENTAGES
    method: str = ""
    dataset: str = ""
    cost: dict = dc_field(default_factory=dict)

    def summary(self) -> str:
        fs = ", ".join(f"{p:g}: {f:.2f}" for p, f in zip(self.percentages, self.signed.faithfulness))
        fa = ", ".join(f"{p:g}: {f:.2f}" for p, f in zip(self.percentages, self.absolute.faithfulness))
        return (f"MIBScores({self.method} on {self.dataset}, {self.n_edges} edges): CPR {self.cpr:.3f} "
                f"(higher is better), CMD {self.cmd:.3f} (lower is better)\n"
                f"  faithfulness, signed ranking: {fs}\n  faithfulness, |score| ranking: {fa}")

    __str__ = __repr__ = summary

    def to_dict(self) -> dict:
        return jsonable({"cpr": self.cpr, "cmd": self.cmd, "n_edges": self.n_edges,
                         "percentages": list(self.percentages), "method": self.method, "dataset": self.dataset,
                         "faithfulness_signed": self.signed.faithfulness, "faithfulness_abs": self.absolute.faithfulness,
                         "sizes": self.signed.sizes, "cost": self.cost})


def mib_scores(field, ds, scores, ablation: str = "corrupt", metric="logit_diff") -> MIBScores:
    """CPR and CMD (see the module doc) of the edge ranking ``scores`` (an EdgeScores, e.g.
    ``field.edge_scores(train, method="eap-ig")``) evaluated on ``ds`` (MIB evaluates on held-out
    examples). Costs 18 edge-ablated forwards (the 100% circuit is the model, and under "corrupt" ablation
    the empty circuit is the corrupted run: neither needs one)."""
    from fieldcheck.experiments.circuits import faithfulness_curve

    n = scores.graph.n_edges
    sizes = [max(1, int(p * n)) for p in MIB_PERCENTAGES]
    signed = faithfulness_curve(field, ds, scores, sizes=sizes, ablation=ablation, metric=metric, by="signed")
    absolute = faithfulness_curve(field, ds, scores, sizes=sizes, ablation=ablation, metric=metric, by="abs")
    if len(signed.sizes) != len(MIB_PERCENTAGES):   # a graph so small that two grid points coincide
        fr = np.asarray([k / n for k in signed.sizes])
    else:
        fr = np.asarray(MIB_PERCENTAGES)
    cpr, _ = mib_area(fr, signed.faithfulness)
    _, cmd = mib_area(fr, absolute.faithfulness)
    secs = signed.cost.get("seconds", 0.0) + absolute.cost.get("seconds", 0.0)
    fwd = signed.cost.get("edge_forwards", 0) + absolute.cost.get("edge_forwards", 0)
    return MIBScores(cpr=cpr, cmd=cmd, signed=signed, absolute=absolute, n_edges=n,
                     percentages=tuple(float(x) for x in fr), method=scores.method,
                     dataset=getattr(ds, "name", ""), cost={"seconds": secs, "edge_forwards": fwd})
