"""Run reports on plain JSON-able dicts, usable without pytest.

``schema``: the JSON report (build, load, atomic writes, run metadata, the session-level
correction, result keys); ``table``: the terminal table; ``html``: the self-contained HTML
report. The names below are re-exported so that ``fieldcheck.reports.render_html`` etc. work.
"""
from __future__ import annotations

from fieldcheck.reports.schema import (CORRECTIONS, OUTCOMES, SCHEMA_VERSION, adjust_pvalues,
                                       apply_correction, atomic_write_text, build_report, dumps,
                                       git_commit, iter_keyed_results, load_report, result_key,
                                       run_metadata, strip_volatile, write_json)
from fieldcheck.reports.table import (fmt, fmt_interval, format_table, short_id, table_rows,
                                      verdict)
from fieldcheck.reports.grid import build_grid, format_grid, grid_html
from fieldcheck.reports.html import render_html, write_html

__all__ = ["CORRECTIONS", "OUTCOMES", "SCHEMA_VERSION", "adjust_pvalues", "apply_correction",
           "atomic_write_text", "build_report", "dumps", "git_commit", "iter_keyed_results",
           "load_report", "result_key", "run_metadata", "strip_volatile", "write_json", "fmt",
           "fmt_interval", "format_table", "short_id", "table_rows", "verdict", "render_html",
           "write_html", "build_grid", "format_grid", "grid_html"]
