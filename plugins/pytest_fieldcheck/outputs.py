"""The run report: built on the controller at the end of the session (with the multiple-
comparison correction and the baseline comparison), then written to the JSON/HTML files and the
baseline store; a report that cannot be written fails the run."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from . import baselines
from .session import FieldcheckPlugin

def build(state: FieldcheckPlugin) -> dict:
    from fieldcheck import reports

    o = state.opts
    model = state.model_infos.get(o.model) or {"spec": o.model, "loaded": False}
    others = {k: v for k, v in sorted(state.model_infos.items()) if k != o.model}
    run = reports.run_metadata(cwd=str(state.config.rootpath), model=model,
                               other_models=others or None, device=o.device,
                               dtype=o.dtype or model.get("dtype") or "float32",
                               seed=o.seed, alpha=o.alpha, correction=o.correction,
                               correction_family=o.correction_family, decide=o.decide)
    now = time.time()
    timing = {
        "started": datetime.fromtimestamp(state.started, timezone.utc).isoformat(timespec="seconds"),
        "finished": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(now - state.started, 3),
        "claims": {k: round(v, 4) for k, v in sorted(state.durations.items()) if k in state.claims},
        "models": {k: v for k, v in sorted(state.load_times.items())},
    }
    from . import timing as fixture_timing

    timing["files"], timing["session_fixtures"] = fixture_timing.by_file(state.config, state.durations,
                                                                         state.claims)
    if state.specs:
        run["models"] = [dict(state.model_infos.get(s) or {"spec": s, "loaded": False},
                              label=state.labels[s]) for s in state.specs]
        if o.baseline_model:
            run["baseline_model"] = run["models"][0]
    report = reports.build_report(state.claims.values(), run, timing=timing,
                                  correction=o.correction, alpha=o.alpha,
                                  family=o.correction_family)
    if state.specs:
        _correct_per_model(report, o)
    if state.baseline is not None:
        report["comparison"] = baselines.compare(report, state.baseline, state.rules,
                                                 path=str(state.baseline_path), alpha=o.alpha,
                                                 correction=o.correction, seed=o.seed)
    if state.specs:
        changes = None
        if o.baseline_model:
            report["comparison"] = _compare_models(state, report)
            changes = {(row["claim_id"], row["key"], o.model): row["paired"]
                       for row in report["comparison"]["rows"] if row.get("paired")}
        from fieldcheck.reports.grid import build_grid

        roles = {o.baseline_model: "baseline", o.model: "candidate"} if o.baseline_model else None
        report["models"] = build_grid(report["claims"], state.specs, state.labels, roles=roles,
                                      alpha=o.alpha, seed=o.seed, changes=changes)
    return report


def _correct_per_model(report: dict, o) -> None:
    """In a multi-model run each model's results are their own family for the multiple-comparison
    correction (as in a run on that model alone): running a claim on a second model must not
    change the first model's verdicts."""
    from fieldcheck.reports.schema import apply_correction

    groups: dict = {}
    for c in report["claims"]:
        groups.setdefault(c.get("model"), []).append(c)
    after = []
    for group in groups.values():
        after += apply_correction(group, o.correction, o.alpha, family=o.correction_family)
    summ = report["summary"]
    summ["failed_after_correction"] = sorted(after)
    counts = summ["outcomes"]
    summ["ok"] = not after and counts.get("failed", 0) == 0 and counts.get("error", 0) == 0


def _compare_models(state: FieldcheckPlugin, report: dict) -> dict:
    """``--fc-baseline-model``: the candidate's claims against the baseline's, matched by the
    claim id without the model's label, with the paired tests (default rule: significant)."""
    o = state.opts

    def side(spec):
        return {"run": {"model": {"spec": spec}},
                "claims": [dict(c, id=c["base_id"]) for c in report["claims"]
                           if c.get("model") == spec]}
    rules = state.rules or [baselines.parse_rule("significant")]
    return baselines.compare(side(o.model), side(o.baseline_model), rules, alpha=o.alpha,
                             correction=o.correction, seed=o.seed,
                             baseline_model=o.baseline_model)


def write_outputs(state: FieldcheckPlugin) -> None:
    from fieldcheck import reports

    o = state.opts
    jobs = []
    if o.report_json:
        jobs.append(("JSON report", lambda: reports.write_json(Path(o.report_json), state.report)))
    if o.report_html:
        jobs.append(("HTML report", lambda: reports.write_html(Path(o.report_html), state.report)))
    if o.save:
        jobs.append(("baseline", lambda: baselines.save(state.report, o.save, state.config.rootpath)))
    for what, job in jobs:
        try:
            state.written.append(f"{what}: {job()}")
        except Exception as e:  # a report that cannot be written must not pass silently
            state.write_errors.append(f"{what} not written: {type(e).__name__}: {e}")
