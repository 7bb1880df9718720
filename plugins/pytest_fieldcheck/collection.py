"""Claims and their results: which tests are claims, routing the ClaimResults a claim records
into its report (on xdist workers too, through ``user_properties``), and collecting outcomes,
errors and falsifying examples on the controller."""
from __future__ import annotations

import json
from typing import Optional

import pytest

from fieldcheck.claim.result import ClaimResult, current_sink, set_sink

from .common import marker_kwargs, model_param, settings_module, uses_our_fixture

PROPERTY = "fieldcheck"          # user_properties key holding one claim's JSON payload
_FIXTURES = ("fc_model", "field", "fc_seed", "fc_config")  # fc_session_seed alone makes no claim

_RESULTS = pytest.StashKey[list]()
_EXC = pytest.StashKey[Optional[str]]()


def _results(item) -> list:
    return item.stash.setdefault(_RESULTS, [])


class claim_scope:
    """Route recorded ClaimResults to the item and mark the running claim in fieldcheck.config."""

    def __init__(self, item):
        self.item = item
        self.ctx = None
        self.prev_sink = None

    def __enter__(self):
        results = _results(self.item)
        self.prev_sink = current_sink()

        def sink(r: ClaimResult) -> None:
            try:
                r.claim_id = self.item.nodeid
            except Exception:
                pass
            results.append(r)

        set_sink(None if _not_a_claim(self.item) else sink)
        m = settings_module()
        if m is not None and hasattr(m, "override"):
            # a claim run on several models draws the same resamples on each (seeded by the
            # claim id without the model's label)
            kw = {"claim_id": model_param(self.item)[1] or self.item.nodeid}
            seed = marker_kwargs(self.item).get("seed")
            if seed is not None:
                kw["seed"] = int(seed)
            try:
                self.ctx = m.override(**kw)
                self.ctx.__enter__()
            except Exception:
                self.ctx = None
        return self

    def __exit__(self, *exc):
        set_sink(self.prev_sink)
        if self.ctx is not None:
            self.ctx.__exit__(*exc)
        return False


def _not_a_claim(item) -> bool:
    from fnmatch import fnmatchcase

    try:
        pats = item.config.getini("fc_not_claims") or []
    except (ValueError, KeyError):
        pats = []
    nid = item.nodeid
    return any(fnmatchcase(nid, p) or (p.endswith("/") and nid.startswith(p)) for p in pats)


def _is_claim(item) -> bool:
    if _not_a_claim(item):
        return False
    if item.stash.get(_RESULTS, None):
        return True
    if item.get_closest_marker("fieldcheck") is not None:
        return True
    return uses_our_fixture(item, _FIXTURES)


def _falsifying_example(text: str) -> Optional[str]:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        s = line[1:].strip() if line.startswith("E ") else line.strip()
        if s.startswith(("Falsifying example:", "Failing test case:")):
            out = [s]
            for nxt in lines[i + 1:]:
                if not nxt.startswith("E ") and not nxt.startswith("  "):
                    break
                body = nxt[1:] if nxt.startswith("E ") else nxt
                if not body.strip():
                    break
                if body.strip().startswith(("Explanation:", "Traceback", "You can reproduce")):
                    break
                out.append(body.rstrip()[3:] if body.startswith("   ") else body.rstrip())
                if body.strip() == ")":
                    break
            return "\n".join(out)
    return None


def attach_results(item, call, report) -> None:
    """On the final report of a claim, store its results (JSON) in ``user_properties``."""
    if call.when == "call" and call.excinfo is not None:
        ei = call.excinfo
        skipped = ei.errisinstance(pytest.skip.Exception) or hasattr(report, "wasxfail")
        if not skipped and not ei.errisinstance(AssertionError):
            item.stash[_EXC] = "error"
    final = (call.when == "call") or (call.when == "setup" and report.outcome != "passed") or (
        call.when == "teardown" and report.outcome == "failed")
    if not final or not _is_claim(item):
        return
    results = [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in _results(item)]
    for r in results:
        r["claim_id"] = item.nodeid
    payload = {"results": results, "kind": item.stash.get(_EXC, None), "when": call.when,
               "marker": {k: v for k, v in marker_kwargs(item).items() if isinstance(v, (str, int, float))}}
    spec, base_id = model_param(item)
    if spec is not None:
        payload["model"], payload["base_id"] = spec, base_id
    # replace any earlier payload (teardown reports share the item's list)
    props = [p for p in item.user_properties if not (isinstance(p, tuple) and p and
                                                      str(p[0]).startswith(PROPERTY))]
    props.append((PROPERTY, json.dumps(payload, sort_keys=True)))
    for i, r in enumerate(_results(item)):
        try:
            props.append((f"{PROPERTY}[{i}]", r.summary()))
        except Exception:
            pass
    item.user_properties[:] = props
    report.user_properties = list(props)


def _payload(report) -> Optional[dict]:
    for p in getattr(report, "user_properties", ()) or ():
        if isinstance(p, (tuple, list)) and len(p) == 2 and p[0] == PROPERTY:
            try:
                return json.loads(p[1])
            except (TypeError, ValueError):
                return None
    return None


def _error_text(report) -> Optional[str]:
    lr = report.longrepr
    if lr is None:
        return None
    if isinstance(lr, tuple) and len(lr) == 3:   # skip: (path, line, reason)
        return str(lr[2])
    crash = getattr(lr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message)
    text = getattr(report, "longreprtext", "") or str(lr)
    return text.strip().splitlines()[-1] if text.strip() else None


def collect(state, report) -> None:
    """Fold one test report into ``state.claims`` (state: the session's FieldcheckPlugin): the
    claim's results, outcome, error text and falsifying example (controller only)."""
    payload = _payload(report)
    nid = report.nodeid
    entry = state.claims.get(nid)
    # every phase counts (a passed setup, where the claim's fixtures run, carries no payload);
    # the report keeps the durations of the items that turn out to be claims
    state.durations[nid] = state.durations.get(nid, 0.0) + float(getattr(report, "duration", 0.0) or 0.0)
    if payload is None and entry is None:
        return
    if entry is None:
        entry = state.claims[nid] = {"id": nid, "outcome": "passed", "results": [], "error": None,
                                     "falsifying_example": None, "marker": {}}
    if payload is not None and (payload.get("when") == report.when):
        entry["results"] = payload.get("results", [])
        entry["marker"] = payload.get("marker", {})
        if payload.get("model") is not None:
            entry["model"], entry["base_id"] = payload["model"], payload["base_id"]
    wasxfail = hasattr(report, "wasxfail")
    if report.when == "setup":
        if report.failed:
            entry["outcome"] = "error"
        elif report.skipped:
            entry["outcome"] = "xfailed" if wasxfail else "skipped"
    elif report.when == "call":
        if report.passed:
            entry["outcome"] = "xpassed" if wasxfail else "passed"
        elif report.skipped:
            entry["outcome"] = "xfailed" if wasxfail else "skipped"
        else:
            entry["outcome"] = "error" if (payload or {}).get("kind") == "error" else "failed"
    elif report.when == "teardown" and report.failed and entry["outcome"] in ("passed", "xpassed"):
        entry["outcome"] = "error"
    if report.failed or report.skipped:
        msg = _error_text(report)
        if msg and (entry["error"] is None or report.when != "teardown"):
            entry["error"] = msg
        ex = _falsifying_example(getattr(report, "longreprtext", "") or "")
        if ex:
            entry["falsifying_example"] = ex
            if entry["error"] and ex not in entry["error"]:
                entry["error"] = entry["error"] + "\n" + ex
