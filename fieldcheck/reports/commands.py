"""The ``fieldcheck report`` command group (added to the ``fieldcheck`` console script by
:mod:`fieldcheck.cli`): one function per action, registered by :func:`add_report_commands`.

    fieldcheck report merge SHARD.json... -o RUN.json [--html RUN.html] [--compare PATH]
    fieldcheck report show RUN.json | compare NEW.json BASE.json   (fieldcheck.reports.views)

Exit codes of ``merge``: 0 the merged run passes, 1 a claim fails (alone, after the correction
over the merged families, or as a regression against the baseline), 3 the shards do not belong to
one run (the message says why), 2 bad usage.
"""
from __future__ import annotations

import argparse
import sys
import time

from fieldcheck.reports.views import add_view_commands

#: exit code of a refused merge
REFUSED = 3


def _cmd_merge(args: argparse.Namespace) -> int:
    from fieldcheck.errors import MergeError
    from fieldcheck.reports import format_table, write_html, write_json
    from fieldcheck.reports.assemble import failing
    from fieldcheck.reports.grid import format_grid
    from fieldcheck.reports.merge import merge_files

    t0 = time.perf_counter()
    try:
        report = merge_files(args.shards, compare_with=args.compare)
    except MergeError as e:
        print(f"fieldcheck: error: {e}", file=sys.stderr)
        return REFUSED
    merge_s = time.perf_counter() - t0
    report.setdefault("timing", {})["merge_s"] = round(merge_s, 4)
    written = [f"JSON report: {write_json(args.output, report)}"]
    if args.html:
        written.append(f"HTML report: {write_html(args.html, report)}")
    summ = report["summary"]
    if not args.quiet:
        if report["claims"]:
            print(format_table(report))
        if report.get("models"):
            print()
            print(format_grid(report))
    counts = ", ".join(f"{v} {k}" for k, v in summ["outcomes"].items() if v)
    after = summ["failed_after_correction"]
    print(f"merged {len(args.shards)} shard(s): {summ['claims']} claim(s) ({counts or 'none'}) in "
          f"{merge_s:.2f} s; correction {report['run'].get('correction')} over family "
          f"{report['run'].get('correction_family')}")
    for cid in after:
        print(f"  failed after correction: {cid}")
    for r in (report.get("comparison") or {}).get("regressions") or []:
        print(f"  regression: {r}")
    for w in written:
        print(f"fieldcheck {w}")
    return 1 if failing(report) else 0


def add_report_commands(sub) -> None:
    """Add ``report`` and its actions to the console script's subparsers ``sub``."""
    report = sub.add_parser("report", help="work with JSON run reports (merge CI shards, show, compare)")
    rsub = report.add_subparsers(dest="report_command", metavar="ACTION")
    merge = rsub.add_parser(
        "merge", help="join the reports of CI shards (pytest --fc-shard K/N) into the run's report",
        description="Join shard reports into the report of the whole run: the correction over the "
                    "merged families and the gate rules are applied as in a serial run. Shards of "
                    "different models, seeds, settings or code are refused (exit 3).")
    merge.add_argument("shards", nargs="+", metavar="SHARD.json", help="the JSON report of every shard")
    merge.add_argument("-o", "--output", required=True, metavar="RUN.json", help="write the merged JSON report here")
    merge.add_argument("--html", metavar="RUN.html", help="also write the HTML report")
    merge.add_argument("--compare", metavar="PATH",
                       help="the saved baseline the shards compared with (--fc-compare), when it is "
                            "not at the path they recorded")
    merge.add_argument("-q", "--quiet", action="store_true", help="print only the summary, not the table")
    merge.set_defaults(func=_cmd_merge)
    add_view_commands(rsub)
    report.set_defaults(func=None, _parser=report)
