"""Criteria: named statistics compared with a bar, written as Python comparisons.

``r2 > 0.9`` builds a :class:`Criterion` that prints as written and that an assertion decides
over the examples. Statistics that take a parameter are called first:
``top_k_overlap(10) >= 0.7``, ``alpha_star(tol=0.05) >= 0.3``.

A criterion is not a boolean: ``assert r2 > 0.9`` raises a CriterionError that tells you to
pass the criterion to an assertion. ``==`` and ``!=`` are not criteria (a bar cannot be met
exactly by an estimate with an interval); use ``>=`` / ``<=``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from fieldcheck.errors import CriterionError

# name -> (description, parameter names, defaults)
STATISTICS: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {
    "r2": ("coefficient of determination of the prediction as is, 1 - SS_res/SS_tot over all "
           "(site, example) pairs", (), {}),
    "pearson": ("Pearson correlation of predicted and real effects over all (site, example) "
                "pairs", (), {}),
    "spearman": ("Spearman rank correlation of the sites' mean predicted and mean real "
                 "effects", (), {}),
    "top_k_overlap": ("share of the top-k sites by |mean real effect| that are also top-k by "
                      "|mean predicted effect|", ("k",), {}),
    "recovered": ("recovered fraction, sum(patched - corrupt) / sum(clean - corrupt) over "
                  "examples", (), {}),
    "effect": ("mean patch effect (metric with the patch minus without)", (), {}),
    "mean": ("mean of the per-example values", (), {}),
    "alpha_star": ("largest scale alpha up to which the real effect stays within tol "
                   "(relative) of the first-order prediction", ("tol",), {"tol": 0.1}),
    "depth_share": ("mean share of the response norm along depth at the source token",
                    (), {}),
    "rate": ("share of examples that succeed (flip, prefer the answer), Clopper-Pearson "
             "interval", (), {}),
    "shift": ("mean metric shift of a transfer", (), {}),
    "gap_closed": ("mean fraction of the clean-corrupt gap closed by a transfer", (), {}),
    "cpr": ("circuit performance ratio, sum(circuit - empty) / sum(full - empty)", (), {}),
    "explained": ("fraction of a Green block's squared Frobenius norm captured by a rank-k slice "
                  "(randomized SVD; the rest estimated with Hutchinson probes)", (), {}),
    "share": ("share of the logit difference that components carry directly, sum(terms) / "
              "sum(total) over examples (direct logit attribution, ratio of means)", (), {}),
    "rank": ("median rank of the answer among all tokens in the logit lens at a layer (0 = the "
             "top token; layer -1 = the final residual)", ("layer",), {"layer": -1}),
    "first_layer": ("mean over examples of the first layer of the logit lens from which the "
                    "answer leads at every later layer", (), {}),
}

_OPS = {"__gt__": ">", "__ge__": ">=", "__lt__": "<", "__le__": "<="}


class Statistic:
    """A named statistic, possibly with parameters; compare it with a number to get a
    :class:`Criterion`. ``Statistic(name, **params)``: ``name`` one of ``STATISTICS``;
    ``**params`` its parameters (``top_k_overlap(k=10)``, ``rank(layer=-1)``), passed to the
    statistic when an assertion computes it (CriterionError for an unknown one)."""

    __slots__ = ("name", "params")

    def __init__(self, name: str, **params: Any):
        if name not in STATISTICS:
            raise CriterionError(f"unknown statistic {name!r}; valid statistics: "
                                 f"{', '.join(STATISTICS)}")
        _, names, defaults = STATISTICS[name]
        unknown = set(params) - set(names)
        if unknown:
            raise CriterionError(f"{name} has no parameter {sorted(unknown)[0]!r}"
                                 + (f"; its parameters: {', '.join(names)}" if names
                                    else "; it takes no parameters"))
        object.__setattr__(self, "name", name)
        # only the parameters written; param() falls back to the defaults
        object.__setattr__(self, "params", tuple((k, params[k]) for k in names if k in params))
        self._validate()

    def _validate(self) -> None:
        p = dict(self.params)
        if "k" in p:
            k = p["k"]
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise CriterionError(f"top_k_overlap(k): k must be a positive integer, got {k!r}")
        if "tol" in p:
            tol = p["tol"]
            try:
                ok = math.isfinite(float(tol)) and float(tol) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise CriterionError(f"alpha_star(tol=...): tol must be a positive number, "
                                     f"got {tol!r}")

    def __setattr__(self, key, value):
        raise AttributeError("statistics are immutable")

    def __call__(self, *args: Any, **kw: Any) -> "Statistic":
        _, names, _ = STATISTICS[self.name]
        if not names:
            raise CriterionError(f"{self.name} takes no arguments; write e.g. `{self.name} > 0.5`")
        if len(args) > len(names):
            raise CriterionError(f"{self.name} takes at most {len(names)} argument(s): "
                                 f"{', '.join(names)}")
        params = dict(zip(names, args))
        for k, v in kw.items():
            if k in params:
                raise CriterionError(f"{self.name}: {k} given twice")
            params[k] = v
        return Statistic(self.name, **params)

    def param(self, key: str, default: Any = None) -> Any:
        """The parameter as written, else its documented default, else ``default``."""
        written = dict(self.params)
        if key in written:
            return written[key]
        return STATISTICS[self.name][2].get(key, default)

    def __repr__(self) -> str:
        _, names, defaults = STATISTICS[self.name]
        shown = list(self.params)
        if not shown:
            if names and not defaults:  # a required parameter is missing: show the call
                return f"{self.name}(...)"
            return self.name
        if len(names) == 1 and names[0] not in defaults:
            return f"{self.name}({shown[0][1]!r})"
        return f"{self.name}(" + ", ".join(f"{k}={v!r}" for k, v in shown) + ")"

    __str__ = __repr__

    def __hash__(self) -> int:
        return hash((self.name, self.params))

    def _compare(self, op: str, bar: Any) -> "Criterion":
        if isinstance(bar, (Statistic, Criterion)):
            raise CriterionError(f"a criterion compares a statistic with a number, not with "
                                 f"{bar!r}")
        if isinstance(bar, bool):
            raise CriterionError(f"{self} {op} {bar!r}: the bar must be a number")
        try:
            b = float(bar)
        except (TypeError, ValueError):
            raise CriterionError(f"{self} {op} {bar!r}: the bar must be a number") from None
        if not math.isfinite(b):
            raise CriterionError(f"{self} {op} {bar!r}: the bar must be a finite number")
        return Criterion(self, op, b)

    def __gt__(self, bar): return self._compare(">", bar)
    def __ge__(self, bar): return self._compare(">=", bar)
    def __lt__(self, bar): return self._compare("<", bar)
    def __le__(self, bar): return self._compare("<=", bar)

    def __eq__(self, other):
        if isinstance(other, Statistic):
            return self.name == other.name and self.params == other.params
        if isinstance(other, (int, float)):
            raise CriterionError(f"`{self} == {other}` is not a criterion: an estimate never "
                                 f"equals a bar exactly; use >= or <=")
        return NotImplemented

    def __ne__(self, other):
        if isinstance(other, (int, float)):
            raise CriterionError(f"`{self} != {other}` is not a criterion; use > or <")
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __bool__(self):
        raise CriterionError(f"the statistic {self} is not a truth value; compare it with a "
                             f"bar and pass it to an assertion, e.g. `{self} > 0.5`")


@dataclass(frozen=True, eq=True)
class Criterion:
    """``statistic op bar``, e.g. ``r2 > 0.9``."""

    statistic: Statistic
    op: str
    bar: float

    @property
    def name(self) -> str:
        return self.statistic.name

    def __str__(self) -> str:
        return f"{self.statistic} {self.op} {self.bar!r}"

    __repr__ = __str__

    def holds(self, value: Optional[float]) -> bool:
        """Whether ``value op bar`` (False for None/NaN)."""
        if value is None or math.isnan(value):
            return False
        return {">": value > self.bar, ">=": value >= self.bar,
                "<": value < self.bar, "<=": value <= self.bar}[self.op]

    def __bool__(self):
        raise CriterionError(f"`{self}` is a criterion, not a truth value: pass it to an "
                             f"assertion, e.g. fc.assert_effect(result, {self}); chained "
                             f"comparisons (0.5 < r2 < 0.9) are not supported, write two "
                             f"criteria")


def stat(name: str, **params: Any) -> Statistic:
    """The statistic called ``name`` (``stat("r2")``); CriterionError if there is none.
    ``**params``: its parameters, passed to :class:`Statistic` (``stat("top_k_overlap", k=10)``)."""
    return Statistic(name, **params)


def as_criteria(criteria: tuple, assertion: str, valid: tuple[str, ...]) -> list[Criterion]:
    """Check the criteria passed to ``assertion``: each a Criterion on one of ``valid``."""
    out = []
    for c in criteria:
        if isinstance(c, bool):
            raise CriterionError(f"{assertion} got a bool where a criterion was expected; "
                                 f"write a comparison such as `{valid[0]} > 0.5`")
        if isinstance(c, Statistic):
            raise CriterionError(f"{assertion} got the statistic {c} without a bar; write "
                                 f"e.g. `{c} > 0.5`")
        if not isinstance(c, Criterion):
            raise CriterionError(f"{assertion} expects criteria such as `{valid[0]} > 0.5`, "
                                 f"got {c!r}")
        if c.name not in valid:
            raise CriterionError(f"{assertion} cannot decide `{c}`: {c.name} is not a "
                                 f"statistic of this assertion; valid: {', '.join(valid)}")
        if c.name == "top_k_overlap" and c.statistic.param("k") is None:
            raise CriterionError("top_k_overlap needs k: write e.g. `top_k_overlap(10) >= 0.7`")
        out.append(c)
    return out


r2 = Statistic("r2")
pearson = Statistic("pearson")
spearman = Statistic("spearman")
top_k_overlap = Statistic("top_k_overlap")
recovered = Statistic("recovered")
effect = Statistic("effect")
mean = Statistic("mean")
alpha_star = Statistic("alpha_star")
depth_share = Statistic("depth_share")
rate = Statistic("rate")
shift = Statistic("shift")
gap_closed = Statistic("gap_closed")
cpr = Statistic("cpr")
explained = Statistic("explained")
share = Statistic("share")
rank = Statistic("rank")
first_layer = Statistic("first_layer")

__all__ = ["Statistic", "Criterion", "stat", "STATISTICS", *STATISTICS]

# --- circuits (fieldcheck.claim.circuit_assertions) ------------------------------------------------
STATISTICS.update({
    "cmd": ("circuit-model difference: |1 - faithfulness| of one circuit, or for a faithfulness "
            "curve the area under |1 - faithfulness| over the share of edges (MIB's CMD)", (), {}),
    "area": ("area under a faithfulness curve over the share of edges kept, from 0 to the largest "
             "size measured (MIB's CPR score)", (), {}),
    "min_cost": ("smallest share of the full model's effect, sum(circuit - without part) / "
                 "sum(full - empty), lost by removing any one part of a circuit", (), {}),
})
cmd = Statistic("cmd")
area = Statistic("area")
min_cost = Statistic("min_cost")
__all__ += ["cmd", "area", "min_cost"]

# --- dictionary features (fieldcheck.claim.feature_assertions) ---------------------------------------
STATISTICS.update({
    "faithfulness": ("share of the full model's effect a feature circuit keeps, sum(circuit - empty) / "
                     "sum(full - empty), the rest of the nodes ablated (Marks et al.)", (), {}),
    "completeness": ("1 - the faithfulness of a feature circuit's complement, 1 - sum(complement - empty) / "
                     "sum(full - empty): near 1 when the nodes outside the circuit matter little", (), {}),
    "rate_on": ("share of the 'on' prompts on which a feature fires (Clopper-Pearson)", (), {}),
    "rate_off": ("share of the 'off' prompts on which a feature fires (Clopper-Pearson)", (), {}),
    "mean_diff": ("mean activation on the 'on' prompts minus on the 'off' prompts (Welch t)", (), {}),
    "auroc": ("probability that an 'on' prompt activates a feature more than an 'off' prompt (ties 1/2); "
              "DeLong normal interval", (), {}),
})
faithfulness = Statistic("faithfulness")
completeness = Statistic("completeness")
rate_on = Statistic("rate_on")
rate_off = Statistic("rate_off")
mean_diff = Statistic("mean_diff")
auroc = Statistic("auroc")
__all__ += ["faithfulness", "completeness", "rate_on", "rate_off", "mean_diff", "auroc"]
