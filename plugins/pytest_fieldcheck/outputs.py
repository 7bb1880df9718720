"""The run report: built on the controller at the end of the session (with the multiple-
comparison correction and the baseline comparison), then written to the JSON/HTML files and the
baseline store; a report that cannot be written fails the run."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from . import baselines
from . import timing as fixture_timing
from .session import FieldcheckPlugin


def build(state: FieldcheckPlugin) -> dict:
    from fieldcheck import reports
    from fieldcheck.reports.assemble import assemble

    o = state.opts
    model = state.model_infos.get(o.model) or {"spec": o.model, "loaded": False}
    others = {k: v for k, v in sorted(state.model_infos.items()) if k != o.model}
    run = reports.run_metadata(cwd=str(state.config.rootpath), model=model,
                               other_models=others or None, device=o.device,
                               dtype=o.dtype or model.get("dtype") or "float32",
                               seed=o.seed, alpha=o.alpha, correction=o.correction,
                               correction_family=o.correction_family, decide=o.decide)
    if state.specs:
        run["models"] = [state.model_infos.get(s) or {"spec": s, "loaded": False} for s in state.specs]
    now = time.time()
    timing = {
        "started": datetime.fromtimestamp(state.started, timezone.utc).isoformat(timespec="seconds"),
        "finished": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(now - state.started, 3),
        "claims": {k: round(v, 4) for k, v in sorted(state.durations.items()) if k in state.claims},
        "models": {k: v for k, v in sorted(state.load_times.items())},
    }
    timing["files"], timing["session_fixtures"] = fixture_timing.by_file(state.config, state.durations,
                                                                         state.claims)
    timing.update(state.extra_timing)
    return assemble(state.claims.values(), run, settings(state), timing=timing)


def settings(state: FieldcheckPlugin):
    """The run's :class:`~fieldcheck.reports.assemble.RunSettings` from the session's options."""
    from fieldcheck.reports.assemble import RunSettings

    o = state.opts
    return RunSettings(alpha=o.alpha, correction=o.correction, family=o.correction_family, seed=o.seed,
                       model=o.model, baseline_model=o.baseline_model, specs=list(state.specs),
                       labels=dict(state.labels), rules=list(state.rules), saved=state.baseline,
                       saved_path=None if state.baseline_path is None else str(state.baseline_path))


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
