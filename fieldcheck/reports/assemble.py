"""One run's report from its claim entries: the multiple-comparison correction (per model in a
multi-model run), the comparison with a saved baseline or a baseline model, and the claims x
models grid.

Every path that ends a run goes through :func:`assemble`: the pytest plugin at the end of a
session (serial, xdist or Ray: the claim entries are the same whichever process ran them) and
``fieldcheck report merge`` over the claims of CI shards. Equal claim entries and settings give
equal reports, so a sharded or distributed run reproduces the serial one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from fieldcheck.reports.compare import FailRule, compare, parse_rule
from fieldcheck.reports.grid import build_grid
from fieldcheck.reports.schema import DEFAULT_CORRECTION, DEFAULT_FAMILY, apply_correction, build_report


@dataclass
class RunSettings:
    """What decides a run's verdicts beyond its claims' own results.

    model: the session's model spec (the candidate with ``baseline_model``); specs/labels: the
    models of a multi-model run in order, with their test-id labels (empty for one model);
    rules: the ``--fc-compare-fail`` rules; saved/saved_path: a saved baseline report to compare
    with (``--fc-compare``)."""

    alpha: float = 0.05
    correction: str = DEFAULT_CORRECTION
    family: str = DEFAULT_FAMILY
    seed: int = 0
    model: Optional[str] = None
    baseline_model: Optional[str] = None
    specs: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    rules: list = field(default_factory=list)
    saved: Optional[dict] = None
    saved_path: Optional[str] = None


def assemble(claims: Iterable[dict], run: dict, s: RunSettings, *, timing: Optional[dict] = None) -> dict:
    """The report of a run whose claims (plugin claim entries: id, outcome, results, error...)
    are ``claims``; ``run``: the run metadata (``run_metadata``)."""
    run = dict(run)
    if s.specs:
        infos = {m.get("spec"): m for m in run.get("models") or [] if isinstance(m, dict)}
        run["models"] = [dict(infos.get(sp) or {"spec": sp, "loaded": False}, label=s.labels.get(sp, sp))
                         for sp in s.specs]
        if s.baseline_model:
            run["baseline_model"] = run["models"][0]
    report = build_report(claims, run, timing=timing, correction=s.correction, alpha=s.alpha,
                          family=s.family)
    if s.specs:
        correct_per_model(report, s)
    if s.saved is not None:
        report["comparison"] = compare(report, s.saved, list(s.rules), path=str(s.saved_path),
                                       alpha=s.alpha, correction=s.correction, seed=s.seed)
    if s.specs:
        changes = None
        if s.baseline_model:
            report["comparison"] = compare_models(report, s)
            changes = {(row["claim_id"], row["key"], s.model): row["paired"]
                       for row in report["comparison"]["rows"] if row.get("paired")}
        roles = {s.baseline_model: "baseline", s.model: "candidate"} if s.baseline_model else None
        report["models"] = build_grid(report["claims"], s.specs, s.labels, roles=roles,
                                      alpha=s.alpha, seed=s.seed, changes=changes)
    return report


def correct_per_model(report: dict, s: RunSettings) -> None:
    """In a multi-model run each model's results are their own family for the multiple-comparison
    correction (as in a run on that model alone): running a claim on a second model must not
    change the first model's verdicts."""
    groups: dict = {}
    for c in report["claims"]:
        groups.setdefault(c.get("model"), []).append(c)
    after = []
    for group in groups.values():
        after += apply_correction(group, s.correction, s.alpha, family=s.family)
    summ = report["summary"]
    summ["failed_after_correction"] = sorted(after)
    counts = summ["outcomes"]
    summ["ok"] = not after and counts.get("failed", 0) == 0 and counts.get("error", 0) == 0


def compare_models(report: dict, s: RunSettings) -> dict:
    """``--fc-baseline-model``: the candidate's claims against the baseline's, matched by the
    claim id without the model's label, with the paired tests (default rule: significant)."""
    def side(spec):
        return {"run": {"model": {"spec": spec}},
                "claims": [dict(c, id=c["base_id"]) for c in report["claims"] if c.get("model") == spec]}
    rules: list[FailRule] = list(s.rules) or [parse_rule("significant")]
    return compare(side(s.model), side(s.baseline_model), rules, alpha=s.alpha,
                   correction=s.correction, seed=s.seed, baseline_model=s.baseline_model)


def failing(report: dict) -> bool:
    """Whether the run fails the gate: a claim fails (alone or after the correction), errors, or
    regresses against the baseline."""
    summ = report.get("summary") or {}
    comp = report.get("comparison") or {}
    return bool(summ.get("failed_after_correction")) or not summ.get("ok", True) or bool(comp.get("regressions"))
