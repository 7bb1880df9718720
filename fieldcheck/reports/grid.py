"""The claims x models grid of a multi-model run (``--fc-models``, ``--fc-baseline-model``):
one row per (claim, result), one cell per model, the paired change of each model against the
first (the reference), and a trend plot per row across the models with the bar drawn.

Works on plain report dicts: :func:`build_grid` makes the report's ``models`` member from the
claims (each carries ``model`` and ``base_id``, the claim id without the model's label);
:func:`format_grid` prints it and :func:`grid_html` renders it with its trend plots.
"""
from __future__ import annotations

import html
from typing import Optional

from fieldcheck.reports.schema import finite_number, iter_keyed_results
from fieldcheck.reports.table import fmt, fmt_interval, short_id, verdict


def build_grid(claims: list[dict], specs: list[str], labels: dict[str, str], *,
               roles: Optional[dict[str, str]] = None, alpha: float = 0.05, seed: int = 0,
               n_boot: Optional[int] = None, changes: Optional[dict] = None) -> dict:
    """The ``models`` member: ``specs``/``labels`` in run order and ``rows``, each with the
    claim (``base_id``), the result key, statistic, op, bar, one cell per model (None where
    the model has no such result) and one paired change per model against ``specs[0]``
    (None for the reference, or where the results cannot be paired; ``unpaired`` says why).

    ``changes``: paired changes already computed, ``{(claim, key, spec): dict}``."""
    from fieldcheck.claim.comparison import pairing_problem, paired_change
    from fieldcheck.claim.statistics import make_rng

    if n_boot is None:
        from fieldcheck import config as fc_config

        n_boot = fc_config.get().n_boot
    by: dict[tuple[str, str], dict] = {}
    order: list[tuple[str, Optional[str]]] = []
    keyed: dict[tuple[str, Optional[str]], dict[str, tuple[dict, Optional[dict]]]] = {}
    for c in claims:
        spec, base = c.get("model"), c.get("base_id")
        if spec not in specs or base is None:
            continue
        by[(base, spec)] = c
        results = list(iter_keyed_results(c)) or [(None, None)]
        for key, r in results:
            k = (base, key)
            if k not in keyed:
                keyed[k] = {}
                order.append(k)
            keyed[k][spec] = (c, r)
    order.sort(key=lambda k: (k[0], k[1] or ""))
    rows = []
    ref = specs[0]
    for base, key in order:
        got = keyed[(base, key)]
        first = next((r for _, r in got.values() if r is not None), None) or {}
        cells, deltas, why = [], [], []
        for spec in specs:
            if spec not in got:
                cells.append(None)
                deltas.append(None)
                why.append("no result")
                continue
            c, r = got[spec]
            cell = {"outcome": c.get("outcome"), "verdict": verdict(c, r), "claim_id": c.get("id")}
            if r is not None:
                cell.update(estimate=r.get("estimate"), interval=r.get("interval"),
                            passed=r.get("passed_corrected", r.get("passed")),
                            p_value=r.get("p_value"), n=r.get("n"))
            cells.append(cell)
            if spec == ref or r is None or ref not in got or got[ref][1] is None:
                deltas.append(None)
                why.append(None if spec == ref else "no result on the reference model")
                continue
            pre = (changes or {}).get((base, key, spec))
            if pre is not None:
                deltas.append(pre)
                why.append(None)
                continue
            rr = got[ref][1]
            problem = pairing_problem(r.get("examples"), rr.get("examples"))
            op = str(r.get("op", ""))
            if problem is None and op not in (">", ">=", "<", "<="):
                problem = f"the criterion has no direction (op {op!r})"
            if problem is None:
                try:
                    pc = paired_change(r["examples"], rr["examples"], op=op, alpha=alpha,
                                       n_boot=n_boot, rng=make_rng(seed, base, key, spec, "grid"),
                                       statistic=str(r.get("statistic") or ""))
                    deltas.append(pc.to_dict())
                    why.append(None)
                    continue
                except ValueError as e:
                    problem = str(e)
            deltas.append(None)
            why.append(problem)
        rows.append({"claim": base, "key": key, "statistic": first.get("statistic"),
                     "op": first.get("op"), "bar": first.get("bar"), "cells": cells,
                     "changes": deltas, "unpaired": why})
    return {"specs": list(specs), "labels": [labels.get(s, s) for s in specs],
            "roles": [(roles or {}).get(s) for s in specs], "reference": ref, "rows": rows}


def _cell_text(cell: Optional[dict]) -> str:
    if cell is None:
        return "-"
    if "estimate" not in cell:
        return cell.get("verdict", "-")
    return f"{fmt(cell.get('estimate'))} {cell.get('verdict', '')}".strip()


def _change_text(ch: Optional[dict]) -> str:
    if not ch:
        return ""
    d = ch.get("estimate")
    sign = "+" if finite_number(d) and d > 0 else ""
    return f" ({sign}{fmt(d, 3)} [{fmt(ch.get('low'), 3)}, {fmt(ch.get('high'), 3)}])"


def grid_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the terminal grid: claim, statistic, bar, then one column per model
    (estimate, verdict and, after the reference, the paired change with its interval)."""
    g = report.get("models") or {}
    header = ["claim", "statistic", "bar"] + list(g.get("labels", []))
    rows = []
    for row in g.get("rows", []):
        cells = [_cell_text(c) + (_change_text(ch) if i else "")
                 for i, (c, ch) in enumerate(zip(row["cells"], row["changes"]))]
        bar = f"{row.get('op') or ''} {fmt(row.get('bar'))}" if row.get("key") else "-"
        rows.append([row["claim"], str(row.get("statistic") or "-"), bar] + cells)
    return header, rows


def format_grid(report: dict, width: Optional[int] = None) -> str:
    header, rows = grid_rows(report)
    if not rows:
        return ""
    if width:
        others = [max(len(str(r[i])) for r in [header] + rows) for i in range(1, len(header))]
        room = max(20, width - sum(others) - 2 * (len(header) - 1))
        rows = [[short_id(r[0], room)] + r[1:] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(*([header] + rows))]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [header] + rows]
    return "\n".join(lines)


# --- HTML -----------------------------------------------------------------------------------
def trend_png(row: dict, labels: list[str]) -> Optional[str]:
    """A base64 PNG: the row's estimate on each model with its interval, the bar dashed,
    passing models green and failing ones red; None when no model has a number."""
    from matplotlib.figure import Figure

    from fieldcheck.display import png_base64

    xs, ys, lo, hi, colors = [], [], [], [], []
    for i, cell in enumerate(row["cells"]):
        if not cell or not finite_number(cell.get("estimate")):
            continue
        y = float(cell["estimate"])
        iv = cell.get("interval") or [y, y]
        a = float(iv[0]) if finite_number(iv[0]) else y
        b = float(iv[1]) if finite_number(iv[1]) else y
        xs.append(i)
        ys.append(y)
        lo.append(max(0.0, y - a))
        hi.append(max(0.0, b - y))
        colors.append("#2a9d2a" if cell.get("passed") else "#c0392b")
    if not xs:
        return None
    fig = Figure(figsize=(max(3.2, 0.9 * len(labels) + 1.5), 2.6))
    ax = fig.subplots()
    ax.plot(xs, ys, "-", color="#888", lw=1, zorder=1)
    ax.errorbar(xs, ys, yerr=[lo, hi], fmt="none", ecolor="#555", capsize=3, zorder=2)
    ax.scatter(xs, ys, c=colors, zorder=3)
    if finite_number(row.get("bar")):
        ax.axhline(float(row["bar"]), color="k", ls="--", lw=1, label=f"bar {row.get('op', '')} {fmt(row['bar'])}")
        ax.legend(fontsize=7, loc="best")
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0, fontsize=8)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_ylabel(str(row.get("statistic") or "estimate"))
    ax.set_title(short_id(str(row["claim"]), 60), fontsize=8)
    return png_base64(fig)


_CLASS = {"PASS": "PASS", "PASSED": "PASS", "FAIL": "FAIL", "FAILED": "FAIL", "ERROR": "FAIL",
          "FAIL(adj)": "adj", "XFAIL": "XFAIL", "XFAILED": "XFAIL", "XPASS": "XPASS",
          "XPASSED": "XPASS"}


def grid_html(report: dict) -> str:
    """The grid as an HTML table (cells coloured by verdict, the paired change after the
    reference) followed by one trend plot per row. Empty when the report has no grid."""
    g = report.get("models") or {}
    if not g.get("rows"):
        return ""
    e = html.escape
    labels = list(g.get("labels", []))
    roles = [r for r in g.get("roles", []) if r]
    out = ['<h2 id="models-grid">Claims x models</h2>',
           f'<p class="meta">reference: {e(labels[0] if labels else "")}; in brackets: the paired '
           f'change against it with its interval (same examples)'
           + (f"; roles: {e(', '.join(f'{l} = {r}' for l, r in zip(labels, g.get('roles', [])) if r))}"
              if roles else "") + "</p>",
           '<table class="grid"><tr><th>claim</th><th>statistic</th><th>bar</th>'
           + "".join(f"<th>{e(l)}</th>" for l in labels) + "</tr>"]
    for row in g["rows"]:
        tds = []
        for i, (cell, ch) in enumerate(zip(row["cells"], row["changes"])):
            cls = "skipped" if cell is None else _CLASS.get(cell.get("verdict"), "skipped")
            tds.append(f'<td class="{cls} num">{e(_cell_text(cell))}{e(_change_text(ch) if i else "")}</td>')
        bar = f"{row.get('op') or ''} {fmt(row.get('bar'))}" if row.get("key") else "-"
        out.append(f"<tr><td>{e(str(row['claim']))}</td><td>{e(str(row.get('statistic') or '-'))}</td>"
                   f"<td>{e(bar)}</td>" + "".join(tds) + "</tr>")
    out.append("</table>")
    out.append('<div class="trends">')
    for row in g["rows"]:
        if not row.get("key"):
            continue
        try:
            png = trend_png(row, labels)
        except Exception as ex:  # a picture must never break the report
            out.append(f"<p>(could not draw the trend: {e(type(ex).__name__)}: {e(str(ex))})</p>")
            continue
        if png:
            out.append(f'<img class="trend" alt="trend {e(str(row.get("statistic")))}" '
                       f'src="data:image/png;base64,{png}">')
    out.append("</div>")
    return "\n".join(out)

