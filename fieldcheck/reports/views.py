"""``fieldcheck report show`` and ``fieldcheck report compare``: read JSON run reports without pytest.

    fieldcheck report show RUN.json [--html OUT.html] [--failed]
        the run's settings, its claims table (with the site or criterion that decides each row),
        what failed after the correction, the comparison it was run with, and the time per claim
        file (fixtures apart); exit 0 (1 with --check when the run failed)
    fieldcheck report compare NEW.json BASE.json [--fail RULE]... [--html OUT.html]
        the claims of NEW against BASE (the rules and paired tests of --fc-compare, from
        :mod:`fieldcheck.reports.compare`): the table with the baseline value and the change, and
        the regressions; exit 1 when a rule finds one (default rule: ``significant``)

:func:`add_view_commands` adds both to the ``report`` command group (``fieldcheck.cli``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fieldcheck.errors import UsageError

__all__ = ["read_report", "show_text", "add_view_commands"]


def read_report(path: str) -> dict:
    """A JSON run report from ``path``; UsageError naming the file and what is wrong with it."""
    from fieldcheck.reports.schema import SCHEMA_VERSION

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"report {str(p)!r} does not exist: write one with pytest --fc-report-json PATH")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"report {str(p)!r} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list) or "schema_version" not in data:
        raise UsageError(f"report {str(p)!r} is not a fieldcheck run report (no schema_version or claims list)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise UsageError(f"report {str(p)!r} has schema_version {data['schema_version']!r}; this fieldcheck reads "
                         f"{SCHEMA_VERSION}")
    return data


def _run_line(rep: dict) -> str:
    run = rep.get("run") or {}
    model = run.get("model")
    model = model.get("spec") if isinstance(model, dict) else model
    t = rep.get("timing") or {}
    return (f"model {model}, seed {run.get('seed')}, alpha {run.get('alpha')}, correction {run.get('correction')} "
            f"(family {run.get('correction_family', 'file')}), decide {run.get('decide')}, git "
            f"{(run.get('git_commit') or '-')[:12]}, started {t.get('started', '-')}, "
            f"{t.get('duration_s', '-')} s")


def _files_lines(rep: dict, k: int = 10) -> list[str]:
    from fieldcheck.reports.table import fmt

    files = ((rep.get("timing") or {}).get("files") or {})
    rows = sorted(((f, t) for f, t in files.items() if isinstance(t, dict)),
                  key=lambda ft: -float(ft[1].get("total_s") or 0))[:k]
    if not rows:
        return []
    w = max(len(f) for f, _ in rows)
    out = [f"time per claim file (s), slowest first: {'file'.ljust(w)}  claims  fixtures  bodies  total"]
    for f, t in rows:
        out.append(f"  {f.ljust(w)}  {str(t.get('claims', '')).rjust(6)}  {fmt(t.get('fixtures_s')).rjust(8)}  "
                   f"{fmt(t.get('calls_s')).rjust(6)}  {fmt(t.get('total_s')).rjust(5)}")
    return out


def show_text(rep: dict, failed_only: bool = False, width: int | None = None) -> str:
    """What ``fieldcheck report show`` prints for the report ``rep``: its settings, outcome counts, claims
    table (only the failing claims with ``failed_only``), grid, corrections, regressions and times."""
    from fieldcheck.reports.grid import format_grid
    from fieldcheck.reports.table import format_table

    summ = rep.get("summary") or {}
    counts = ", ".join(f"{v} {k}" for k, v in (summ.get("outcomes") or {}).items() if v) or "no claims"
    lines = [_run_line(rep), f"{'OK' if summ.get('ok') else 'FAILED'}: {counts}"]
    shown = rep
    if failed_only:
        after = set(summ.get("failed_after_correction") or [])
        shown = dict(rep, claims=[c for c in rep["claims"] if c.get("outcome") in ("failed", "error")
                                  or c["id"] in after])
    if shown["claims"]:
        lines += ["", format_table(shown, width=width)]
    if rep.get("models"):
        lines += ["", format_grid(rep, width=width)]
    for cid in summ.get("failed_after_correction") or []:
        lines.append(f"failed after correction: {cid}")
    comp = rep.get("comparison") or {}
    for r in comp.get("regressions") or []:
        lines.append(f"regression: {r}")
    files = _files_lines(rep)
    if files:
        lines += [""] + files
    return "\n".join(lines)


def _cmd_show(args: argparse.Namespace) -> int:
    from fieldcheck.reports.html import write_html

    rep = read_report(args.report)
    print(show_text(rep, failed_only=args.failed))
    if args.html:
        print(f"fieldcheck HTML report: {write_html(args.html, rep)}")
    return 1 if args.check and not (rep.get("summary") or {}).get("ok") else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from fieldcheck.reports.compare import compare, parse_rule
    from fieldcheck.reports.html import write_html

    new, base = read_report(args.new), read_report(args.base)
    try:
        rules = [parse_rule(r) for r in (args.fail or ["significant"])]
    except Exception as e:  # BaselineError: the rule's text says what is valid
        raise UsageError(str(e).replace("--fc-compare-fail", "--fail")) from None
    run = new.get("run") or {}
    alpha = args.alpha if args.alpha is not None else float(run.get("alpha") or 0.05)
    correction = args.correction or run.get("correction") or "bonferroni"
    comp = compare(new, base, rules, path=args.base, alpha=alpha, correction=correction,
                   seed=int(run.get("seed") or 0))
    rep = dict(new, comparison=comp)
    print(f"{args.new} against {args.base}")
    print(show_text(rep))
    pinfo = comp.get("paired") or {}
    print(f"{pinfo.get('n_paired', 0)} result(s) paired over the same examples; missing now: "
          f"{', '.join(comp['missing']) or 'none'}; new: {', '.join(comp['new']) or 'none'}")
    for why, k in sorted((pinfo.get("unpaired") or {}).items()):
        print(f"  not paired ({k} result(s)): {why}")
    if args.html:
        print(f"fieldcheck HTML report: {write_html(args.html, rep)}")
    print(f"{len(comp['regressions'])} regression(s) ({', '.join(comp['rules'])})")
    return 1 if comp["regressions"] else 0


def add_view_commands(rsub) -> None:
    """Add ``show`` and ``compare`` to the subparsers ``rsub`` of the ``report`` command group."""
    show = rsub.add_parser("show", help="print a JSON run report: settings, claims table, corrections, times",
                           description="Print a run report written by pytest --fc-report-json: the settings, the "
                                       "claims table, what failed after the correction, regressions and the time "
                                       "per claim file.")
    show.add_argument("report", metavar="RUN.json")
    show.add_argument("--html", metavar="OUT.html", help="also write the HTML report of it")
    show.add_argument("--failed", action="store_true", help="table only the claims that fail")
    show.add_argument("--check", action="store_true", help="exit 1 when the run failed")
    show.set_defaults(func=_cmd_show)
    cmp = rsub.add_parser("compare", help="compare a run report with a baseline report (paired tests, rules)",
                          description="Compare the claims of NEW with BASE as pytest --fc-compare does: the "
                                      "baseline value and change of every result, paired tests over the same "
                                      "examples, and the regressions the rules find (exit 1 when there are any).")
    cmp.add_argument("new", metavar="NEW.json")
    cmp.add_argument("base", metavar="BASE.json")
    cmp.add_argument("--fail", action="append", metavar="RULE",
                     help="repeatable: significant (default), passed, estimate:10%%, estimate:0.05")
    cmp.add_argument("--alpha", type=float, default=None, help="level of the paired tests (default: NEW's alpha)")
    cmp.add_argument("--correction", default=None, choices=("holm", "bonferroni", "bh", "none"),
                     help="correction across the paired results (default: NEW's correction, as --fc-compare)")
    cmp.add_argument("--html", metavar="OUT.html", help="also write NEW's HTML report with the comparison")
    cmp.set_defaults(func=_cmd_compare)
