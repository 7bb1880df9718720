"""The terminal table of a run report: formatted numbers, verdicts, short claim ids."""
from __future__ import annotations

import math
from typing import Any, Optional

from fieldcheck.reports.schema import finite_number, iter_keyed_results

# --- formatting -----------------------------------------------------------------------------
def fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        ax = abs(x)
        if ax != 0 and (ax < 1e-3 or ax >= 1e5):
            return f"{x:.{digits - 1}g}"
        return f"{x:.{digits}g}"
    return str(x)


def fmt_interval(iv: Any) -> str:
    if not iv:
        return "-"
    return f"[{fmt(iv[0])}, {fmt(iv[1])}]"


def verdict(claim: dict, result: Optional[dict]) -> str:
    """PASS, FAIL, FAIL(adj) (passed alone, not after the correction), or for a claim marked
    ``xfail``: XFAIL (it failed, as expected) and XPASS (it passed unexpectedly)."""
    if result is None:
        return claim["outcome"].upper()
    if claim.get("outcome") == "xfailed":
        return "XFAIL"
    if claim.get("outcome") == "xpassed":
        return "XPASS"
    if result.get("passed") and not result.get("passed_corrected", True):
        return "FAIL(adj)"
    return "PASS" if result.get("passed") else "FAIL"


def decided_by(result: dict) -> str:
    """What a table row's number comes from, so that the rows of one claim can be told apart: the
    site, head or component that decides it (``L20.resid_pre@END (worst of 5)`` for a claim on
    several sites, each of which must pass; ``best of`` for ``require="any"``), the layer of a
    logit-lens rank, the circuit, or else the criterion as written (``rank(layer=-1) < 1``)."""
    d = result.get("details") or {}
    for key, n_key in (("site", "n_sites"), ("row", "n_rows")):
        v = d.get(key)
        if isinstance(v, str) and v:
            n = d.get(n_key)
            if isinstance(n, int) and n > 1:
                return f"{v} ({'best' if d.get('require') == 'any' else 'worst'} of {n})"
            return v
    comps = d.get("components")
    if isinstance(comps, list) and comps:
        n = d.get("n_components", len(comps))
        return str(comps[0]) if n == 1 else f"{n} components ({', '.join(map(str, comps[:2]))}, ...)"
    for key in ("circuit", "decided_by"):
        if isinstance(d.get(key), str) and d[key]:
            return d[key]
    if isinstance(d.get("layer"), int):
        return f"layer {d['layer']}"
    return str(result.get("criterion") or "-")


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table: one row per result (one per claim without
    results, showing its outcome); ``decided by`` names the site, head, component or criterion
    behind each row (:func:`decided_by`)."""
    comp = report.get("comparison") or {}
    by_key = {(row["claim_id"], row["key"]): row for row in comp.get("rows", [])}
    header = ["claim", "statistic", "decided by", "estimate", "interval", "bar", "p", "p_adj", "n", "verdict"]
    if comp:
        header += ["baseline", "delta"]
    rows = []
    for c in report["claims"]:
        keyed = list(iter_keyed_results(c))
        if not keyed:
            row = [c["id"], "-", "-", "-", "-", "-", "-", "-", "-", verdict(c, None)]
            if comp:
                row += ["-", "-"]
            rows.append(row)
            continue
        for key, r in keyed:
            row = [c["id"], str(r.get("statistic", "")), decided_by(r), fmt(r.get("estimate")),
                   fmt_interval(r.get("interval")), f"{r.get('op', '')} {fmt(r.get('bar'))}",
                   fmt(r.get("p_value")), fmt(r.get("p_adjusted")), fmt(r.get("n")),
                   verdict(c, r)]
            if comp:
                cr = by_key.get((c.get("base_id") or c["id"], key))
                if c.get("model") is not None and c["model"] == (comp.get("baseline") or {}).get("model") \
                        and not (comp.get("baseline") or {}).get("path"):
                    row += ["(baseline)", "-"]
                elif cr is None:
                    row += ["(new)", "-"]
                else:
                    d = cr.get("delta")
                    row += [fmt(cr.get("baseline_estimate")),
                            ("+" if finite_number(d) and d > 0 else "") + fmt(d)]
            rows.append(row)
    return header, rows


def short_id(cid: str, width: int) -> str:
    """A claim id shortened to ``width`` by dropping folders, then the file; the test name
    itself is never cut."""
    if len(cid) <= width:
        return cid
    path, sep, name = cid.partition("::")
    short = path.rsplit("/", 1)[-1] + sep + name
    if len(short) <= width or not sep:
        return short
    return "..." + sep + name if len(sep + name) + 3 <= width else name


def format_table(report: dict, width: Optional[int] = None) -> str:
    header, rows = table_rows(report)
    if width and rows:  # shorten claim ids to fit the terminal
        others = [max(len(str(r[i])) for r in [header] + rows) for i in range(1, len(header))]
        room = max(20, width - sum(others) - 2 * (len(header) - 1))
        rows = [[short_id(r[0], room)] + r[1:] for r in rows]
    cols = list(zip(*([header] + rows))) if rows else [[h] for h in header]
    widths = [max(len(str(x)) for x in col) for col in cols]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
    return "\n".join(lines)
