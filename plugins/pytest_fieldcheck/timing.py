"""Where a run's time goes: every fixture's setup time, counted per claim file.

A claim's own duration (setup + call + teardown) includes the fixtures first set up for it: a
module-scoped sweep, EAP-IG scores, a model load. This module times each fixture's setup
(``pytest_fixture_setup``), hands the times of one item's setup to its setup report (so they
travel from xdist workers like any report) and, on the controller, adds them up by file:

    timing["files"][path] = {"seconds": ..., "fixtures_s": ..., "calls_s": ..., "total_s": ...,
                             "claims": n, "fixtures": {name: s}}

``seconds`` is the sum of the file's claim durations less the session-scoped fixtures set up
inside them (``total_s`` the same, ``calls_s`` = ``total_s`` - ``fixtures_s``: the claims'
bodies and teardowns); those (the model load, data sets shared by several files) are listed apart in
``timing["session_fixtures"]`` (``{name: {"seconds": s, "first_used_in": path}}``), so that the
files and the session fixtures add up to the time spent in claims. The terminal summary prints one
line per file, slowest first, with its costliest fixtures.
"""
from __future__ import annotations

import json
import time

import pytest

PROPERTY = "fc_fixture_times"      # setup report user_properties key: [[name, scope, seconds], ...]
_PENDING = pytest.StashKey[list]()
_SEEN = pytest.StashKey[dict]()    # nodeid -> [[name, scope, seconds], ...] (controller)


def fixture_setup(fixturedef, request):
    """Time one fixture's setup (the body of a ``pytest_fixture_setup`` hook wrapper)."""
    t0 = time.perf_counter()
    try:
        return (yield)
    finally:
        if fixturedef.argname not in ("request",):
            name = fixturedef.argname
            param = getattr(request, "param", None)
            if isinstance(param, (str, int, float)):
                name = f"{name}[{param}]"
            request.config.stash.setdefault(_PENDING, []).append(
                [name, fixturedef.scope, round(time.perf_counter() - t0, 4)])


def attach(item, call, report) -> None:
    """Put the fixtures set up during this phase of ``item`` (its setup, or a fixture requested
    lazily during the call) on the phase's report."""
    pending = item.config.stash.setdefault(_PENDING, [])
    if pending:
        report.user_properties.append((PROPERTY, json.dumps(pending)))
        item.config.stash[_PENDING] = []


def collect(config, report) -> None:
    """Controller: remember the fixture times of each item's setup."""
    for p in getattr(report, "user_properties", ()) or ():
        if isinstance(p, (tuple, list)) and len(p) == 2 and p[0] == PROPERTY:
            try:
                config.stash.setdefault(_SEEN, {}).setdefault(report.nodeid, []).extend(json.loads(p[1]))
            except (TypeError, ValueError):
                pass


def by_file(config, durations: dict, claim_ids) -> tuple[dict, dict]:
    """(files, session_fixtures) for the report's timing member (see the module doc)."""
    seen = config.stash.get(_SEEN, {})
    files: dict[str, dict] = {}
    session: dict[str, dict] = {}
    for nid in sorted(claim_ids):
        path = nid.split("::")[0]
        f = files.setdefault(path, {"seconds": 0.0, "fixtures_s": 0.0, "claims": 0, "fixtures": {}})
        f["claims"] += 1
        f["seconds"] += float(durations.get(nid, 0.0))
        for name, scope, sec in seen.get(nid, ()):
            if scope == "session":
                s = session.setdefault(name, {"seconds": 0.0, "first_used_in": path})
                s["seconds"] += sec
                f["seconds"] -= sec
            else:
                f["fixtures"][name] = f["fixtures"].get(name, 0.0) + sec
                f["fixtures_s"] += sec
    for f in files.values():
        f["seconds"] = round(max(f["seconds"], 0.0), 3)
        f["fixtures_s"] = round(f["fixtures_s"], 3)
        f["total_s"] = f["seconds"]
        f["calls_s"] = round(max(f["seconds"] - f["fixtures_s"], 0.0), 3)
        f["fixtures"] = {k: round(v, 3) for k, v in sorted(f["fixtures"].items(), key=lambda kv: -kv[1])}
    for s in session.values():
        s["seconds"] = round(s["seconds"], 3)
    return files, dict(sorted(session.items(), key=lambda kv: -kv[1]["seconds"]))


def summary_lines(timing: dict, top: int = 2) -> list[str]:
    """One line per claim file, slowest first, and one for the session fixtures."""
    files = timing.get("files") or {}
    if not files:
        return []
    out = ["time by claim file (its claims and their fixtures; session fixtures apart):"]
    for path, f in sorted(files.items(), key=lambda kv: -kv[1]["seconds"]):
        fx = ", ".join(f"{k} {v:.1f} s" for k, v in list(f["fixtures"].items())[:top] if v >= 0.05)
        out.append(f"  {path}: {f['seconds']:.1f} s, {f['claims']} claim(s)"
                   + (f" (fixtures {f['fixtures_s']:.1f} s: {fx})" if fx else ""))
    sess = timing.get("session_fixtures") or {}
    if sess:
        total = sum(s["seconds"] for s in sess.values())
        fx = ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in list(sess.items())[:4] if v["seconds"] >= 0.05)
        out.append(f"  session fixtures: {total:.1f} s" + (f" ({fx})" if fx else ""))
    return out
