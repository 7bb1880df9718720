"""Sum the fuzz suite's call counts (tests/_fuzz.py writes ``calls-<worker>-<pid>.json`` per process
when ``FIELDCHECK_FUZZ_STATS=DIR`` is set) into one table for docs/fuzzing.md.

    FIELDCHECK_FUZZ_STATS=/tmp/fuzz make test TESTS="tests/test_fuzz_*.py"
    python tools/fuzz_stats.py /tmp/fuzz            # markdown: entry point | generated calls
    python tools/fuzz_stats.py /tmp/fuzz --total    # one line: entry points, calls
"""
from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys


def load(folder: pathlib.Path) -> "collections.Counter[str]":
    calls: collections.Counter = collections.Counter()
    for f in sorted(folder.glob("calls-*.json")):
        calls.update(json.loads(f.read_text()))
    return calls


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=pathlib.Path)
    p.add_argument("--total", action="store_true", help="print only the totals")
    a = p.parse_args(argv)
    calls = load(a.folder)
    if not calls:
        print(f"no calls-*.json in {a.folder}", file=sys.stderr)
        return 1
    public = {k: v for k, v in calls.items() if not k.startswith("<") and "." in k or k == "Field"}
    print(f"{len(public)} entry points, {sum(public.values())} generated calls "
          f"({sum(calls.values())} with helpers and lambdas)")
    if not a.total:
        print("\n| entry point | calls |\n| --- | ---: |")
        for name, n in sorted(public.items()):
            print(f"| `{name}` | {n} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
