"""Half precision against float32: every experiment on each real model, in bfloat16 and float16.

    .venv/bin/python benchmarks/bench_half_precision.py [--models smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b]
        [--dtypes bfloat16,float16] [--n 4] [--only NAME,NAME] [--json PATH]

Each experiment runs with the small arguments of ``tests/_precision.py`` (IOI, ``--n`` examples, a
few sites) in float32 and in each half dtype (``--only``: those experiments, by their names in
``tests/_precision.experiments``); the error is the one ``tests/_precision.py`` defines: outputs in
the metric's units as a fraction of the RMS clean-corrupt gap in float32, other outputs
``||x_half - x_float32|| / ||x_float32||``, ``1 - Jaccard`` of the parts for ``discover_circuit``.
Prints one table per model and the maximum over the models (docs/models.md, "Half precision",
records it with the tolerances the tests check); writes the raw numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("FIELDCHECK_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _precision import errors  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b")
    ap.add_argument("--dtypes", default="bfloat16,float16")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--only", default=None, help="comma-separated experiment names (default: all)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    dtypes = tuple(a.dtypes.split(","))
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
           "n": a.n, "only": a.only, "models": {}}
    for spec in a.models.split(","):
        t0 = time.perf_counter()
        res = errors(spec, dtypes, n=a.n, only=a.only.split(",") if a.only else None)
        res["total_s"] = round(time.perf_counter() - t0, 1)
        out["models"][spec] = res
        print(f"\n{spec} ({res['total_s']} s; refused in every dtype: {', '.join(res['refused']) or 'none'})")
        for d in dtypes:
            if "overflow" in res[d]:
                print(f"{d}: {res[d]['overflow']}")
        ok = [d for d in dtypes if "overflow" not in res[d]]
        print(f"{'experiment':24s} " + " ".join(f"{d:>10s}" for d in ok))
        for k in res[ok[0]] if ok else ():
            print(f"{k:24s} " + " ".join(f"{res[d][k]:10.2e}" for d in ok))
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=1, default=str))
    print("\nmax over models (an overflowing model left out of its dtype)")
    names = {k for m in out["models"].values() for d in dtypes for k in m[d] if k != "overflow"}
    for k in sorted(names):
        print(f"{k:24s} " + " ".join(f"{max((m[d][k] for m in out['models'].values() if k in m[d]), default=float('nan')):10.2e}"
                                     for d in dtypes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
