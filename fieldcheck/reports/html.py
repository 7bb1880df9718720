"""The self-contained HTML report: a table of claims, then one section per claim with its
numbers and plots (heatmaps, lines, histograms) drawn by matplotlib into inline PNGs."""
from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from fieldcheck.display import draw_plot
from fieldcheck.reports.grid import grid_html
from fieldcheck.jsonable import jsonable
from fieldcheck.reports.schema import atomic_write_text
from fieldcheck.reports.table import decided_by, fmt, fmt_interval, table_rows

# --- HTML -----------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1a1a1a;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 6px;word-break:break-all}
.meta{color:#555;font-size:13px;margin-bottom:14px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0} td.num{text-align:right;font-variant-numeric:tabular-nums}
.PASS,.passed{background:#d9f2d9} .FAIL,.failed,.error{background:#f8d4d4}
.adj{background:#fde8c8} .skipped{background:#eee} .xfailed,.XFAIL{background:#dde8f5} .xpassed,.XPASS{background:#fde8c8}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600;font-size:13px}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px;white-space:pre-wrap}
img{max-width:100%;border:1px solid #ddd;margin:6px 0}
.ok{background:#d9f2d9} .bad{background:#f8d4d4}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _numbers_table(plot: dict) -> str:
    rows = []
    for k, v in plot.items():
        if isinstance(v, (list, tuple)):
            flat = json.dumps(jsonable(v))
            if len(flat) > 400:
                flat = flat[:400] + " ..."
            rows.append((k, flat))
        elif isinstance(v, dict):
            rows.append((k, json.dumps(jsonable(v))[:400]))
        else:
            rows.append((k, fmt(v)))
    return "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows) + "</table>"


def _plot_html(plot: Any) -> str:
    plots = plot if isinstance(plot, list) else [plot]
    out = []
    for p in plots:
        if not isinstance(p, dict):
            continue
        try:
            png = draw_plot(p)
        except Exception as e:  # a picture must never break the report
            png = None
            out.append(f"<p>(could not draw: {_esc(type(e).__name__)}: {_esc(e)})</p>")
        if png:
            out.append(f'<img alt="{_esc(p.get("kind", "plot"))}" src="data:image/png;base64,{png}">')
        else:
            out.append(_numbers_table(p))
    return "\n".join(out)


def render_html(report: dict) -> str:
    """One self-contained HTML page: inline CSS, PNG pictures inlined as base64, no script,
    nothing fetched from the network."""
    run = report.get("run", {})
    summ = report.get("summary", {})
    timing = report.get("timing", {})
    model = run.get("model") or {}
    model_desc = model.get("spec") if isinstance(model, dict) else model
    head = (f"fieldcheck {_esc(run.get('fieldcheck', ''))} &middot; model {_esc(model_desc)} &middot; "
            f"device {_esc(run.get('device'))} &middot; dtype {_esc(run.get('dtype') or 'float32 (default)')} &middot; "
            f"seed {_esc(run.get('seed'))} &middot; alpha {_esc(run.get('alpha'))} &middot; "
            f"correction {_esc(run.get('correction'))} &middot; decide {_esc(run.get('decide'))}"
            f" &middot; git {_esc((run.get('git_commit') or '-')[:12])}"
            f" &middot; {_esc(timing.get('started', ''))}")
    ok = summ.get("ok", False)
    counts = summ.get("outcomes", {})
    badge = (f'<span class="badge {"ok" if ok else "bad"}">{"OK" if ok else "FAILED"}</span> '
             + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    after = summ.get("failed_after_correction") or []
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>fieldcheck report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>fieldcheck report</h1>", f'<div class="meta">{head}</div>', f"<p>{badge}</p>"]
    if after:
        parts.append("<p><b>Failed after the multiple-comparison correction:</b> "
                     + ", ".join(_esc(a) for a in after) + "</p>")
    comp = report.get("comparison")
    if comp and comp.get("regressions"):
        parts.append("<p><b>Regressions against the baseline:</b></p><ul>"
                     + "".join(f"<li>{_esc(r)}</li>" for r in comp["regressions"]) + "</ul>")
    header, rows = table_rows(report)
    parts.append("<table><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for h, v in zip(header, row):
            cls = ""
            if h == "verdict":
                cls = {"FAIL(adj)": "adj", "PASS": "PASS", "PASSED": "PASS", "FAIL": "FAIL",
                       "FAILED": "FAIL", "ERROR": "FAIL", "XFAIL": "XFAIL", "XFAILED": "XFAIL",
                       "XPASS": "XPASS", "XPASSED": "XPASS"}.get(v, "skipped")
            elif h not in ("claim", "statistic", "decided by", "interval", "bar"):
                cls = "num"
            if h == "claim":
                v = f'<a href="#c-{_esc(_anchor(v))}">{_esc(v)}</a>'
            else:
                v = _esc(v)
            cells.append(f'<td class="{cls}">{v}</td>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    parts.append(grid_html(report))
    parts.append(_file_times_html(timing.get("files") or {}))
    for c in report.get("claims", []):
        parts.append(f'<h2 id="c-{_esc(_anchor(c["id"]))}">{_esc(c["id"])} '
                     f'<span class="badge {_esc(c["outcome"])}">{_esc(c["outcome"])}</span>'
                     + (' <span class="badge adj">fails after correction</span>'
                        if c.get("failed_after_correction") else "") + "</h2>")
        for r in c.get("results", []):
            line = (f"{r.get('assertion', '')} &middot; {_esc(r.get('statistic'))} = {_esc(fmt(r.get('estimate')))} "
                    f"({_esc(decided_by(r))}) "
                    f"{_esc(fmt_interval(r.get('interval')))}, needs {_esc(r.get('op'))} {_esc(fmt(r.get('bar')))}"
                    f" &middot; p = {_esc(fmt(r.get('p_value')))}, adjusted {_esc(fmt(r.get('p_adjusted')))}"
                    f" &middot; n = {_esc(r.get('n'))}")
            parts.append(f"<p>{line}</p>")
            if r.get("message"):
                parts.append(f"<pre>{_esc(r['message'])}</pre>")
            if r.get("plot"):
                parts.append(_plot_html(r["plot"]))
        if c.get("error"):
            parts.append(f"<pre>{_esc(c['error'])}</pre>")
        if c.get("falsifying_example"):
            parts.append(f"<p><b>Falsifying example</b></p><pre>{_esc(c['falsifying_example'])}</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _file_times_html(files: dict) -> str:
    """The time spent per claim file, fixtures (setup and teardown) apart from the test bodies."""
    if not files:
        return ""
    rows = "".join(f"<tr><td>{_esc(f)}</td><td class=\"num\">{_esc(t.get('claims', ''))}</td>"
                   + "".join(f"<td class=\"num\">{_esc(fmt(t.get(k)))}</td>" for k in ("fixtures_s", "calls_s", "total_s"))
                   + "</tr>" for f, t in files.items() if isinstance(t, dict))
    return ("<p><b>Time per claim file</b> (seconds; fixtures: setup and teardown, where module fixtures "
            "build data sets or score edges)</p><table><tr><th>file</th><th>claims</th><th>fixtures</th>"
            f"<th>claims' bodies</th><th>total</th></tr>{rows}</table>")


def _anchor(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s)


def write_html(path: str | os.PathLike, report: dict) -> Path:
    return atomic_write_text(path, render_html(report))
