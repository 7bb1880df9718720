"""Write the per-model tables of claims/README.md from a fieldcheck JSON report (``make claims`` or
``make claims-grid``): one row per assertion, with the site or head that decided it, the measured
value and its 90% interval, the bar, n and the claim's outcome.

    python tools/claims_tables.py reports/claims-grid.json              # print the tables
    python tools/claims_tables.py reports/claims-grid.json --update claims/README.md

``--update`` rewrites, for each model in the report, the part of the file between
``<!-- table:MODEL -->`` and ``<!-- /table:MODEL -->`` (models without markers are left alone).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

FAILED_SITE = re.compile(r"FAILED \(([^)]+)\)|worst: ([^ ,]+) \(")


def _num(x) -> str:
    if x is None:
        return ""
    x = float(x)
    if x == 0:
        return "0"
    return f"{x:.3g}" if abs(x) >= 1e-3 else f"{x:.2g}"


def _site(r: dict) -> str:
    """The site, head or layer that decided a per-site assertion (empty when there is one value)."""
    d = r.get("details") or {}
    if isinstance(d.get("row"), str) and d.get("require") == "all":
        return d["row"]
    if isinstance(d.get("site"), str) and d.get("n_sites", 1) != 1 or d.get("require") == "all" and d.get("site"):
        s = str(d["site"])
        return s if len(s) <= 48 else s[:45] + "..."
    m = FAILED_SITE.search(r.get("message") or "")
    return (m.group(1) or m.group(2)) if m and d.get("require") else ""


def _outcome(c: dict) -> str:
    out = c.get("outcome", "")
    if c.get("failed_after_correction"):
        out += " (failed after the correction)"
    return out


def rows(claims: list) -> list[str]:
    lines = ["| claim | criterion (site deciding) | measured [90% CI] | bar | n | outcome |",
             "| --- | --- | --- | --- | --- | --- |"]
    for c in sorted(claims, key=lambda c: c.get("base_id") or c["id"]):
        name = (c.get("base_id") or c["id"]).split("[")[0]
        name = name.replace("claims/", "").replace(".py::", "::")
        results = c.get("results") or []
        if not results:
            how = "property (hypothesis)" if c.get("falsifying_example") is not None or "generality" in name else ""
            lines.append(f"| `{name}` | {how} | | | | {_outcome(c)} |")
            continue
        for i, r in enumerate(results):
            stat = r.get("statistic") or r.get("criterion", "")
            site = _site(r)
            crit = f"{stat} ({site})" if site else stat
            iv = r.get("interval")
            meas = _num(r.get("estimate")) + (f" [{_num(iv[0])}, {_num(iv[1])}]" if iv else "")
            bar = f"{r.get('op', '')} {_num(r.get('bar'))}".strip()
            first = f"`{name}`" if i == 0 else "same"
            lines.append(f"| {first} | {crit} | {meas} | {bar} | {r.get('n', '')} | {_outcome(c) if i == 0 else ''} |")
    return lines


def tables(report: dict) -> dict[str, str]:
    """Markdown table per model label of the report."""
    by: dict[str, list] = {}
    for c in report.get("claims", []):
        by.setdefault(c.get("model") or (report.get("run") or {}).get("model") or "model", []).append(c)
    return {m: "\n".join(rows(cs)) for m, cs in by.items()}


def update(path: pathlib.Path, tabs: dict[str, str]) -> list[str]:
    text = path.read_text()
    done = []
    for model, tab in tabs.items():
        begin, end = f"<!-- table:{model} -->", f"<!-- /table:{model} -->"
        if begin in text and end in text:
            a = text.index(begin) + len(begin)
            text = text[:a] + "\n" + tab + "\n" + text[text.index(end):]
            done.append(model)
    path.write_text(text)
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report")
    ap.add_argument("--update", default=None, help="a markdown file with <!-- table:MODEL --> markers")
    a = ap.parse_args(argv)
    tabs = tables(json.loads(pathlib.Path(a.report).read_text()))
    if a.update:
        done = update(pathlib.Path(a.update), tabs)
        print(f"updated {', '.join(done) or 'nothing'} in {a.update}")
    else:
        for model, tab in tabs.items():
            print(f"## {model}\n\n{tab}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
