"""Benchmark: what --fc-ray and fieldcheck report merge cost.

    .venv/bin/python benchmarks/bench_ray.py [--tasks 4] [--merge-claims 1000] [--merge-shards 10]
        [--smollm2-gate claims/test_behaviour.py,claims/test_ioi_localization.py] [--json PATH]

1. Ray overhead per task: a suite of ``--tasks`` claim files of statistics only (no model), run
   serially and with ``--fc-ray --fc-ray-shards N`` on a local cluster (one task per file). Per
   task: *dispatch* (submission to the task's start on a worker: Ray's scheduling and a worker's
   start), *return* (the task's end to the driver holding its result), *pytest start* (the task's
   own pytest process: Python, torch, fieldcheck, collection) and the claims themselves; plus the
   cluster's start. The reports must be equal (timing aside).
2. Merge time: ``fieldcheck report merge`` over ``--merge-shards`` shard reports of a gate run
   (two models, ``--merge-claims`` claims each with 64 per-example values, so every claim is paired
   and bootstrapped), built from a real shard report whose claims are replicated.
3. ``--smollm2-gate FILES``: SmolLM2 against a copy whose attention output projections at layers
   24-27 are scaled by 0.3, serially and with ``--fc-ray`` (one task per model), wall times and
   equal reports.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

STAT = '''
import numpy as np
import fieldcheck as fc
from fieldcheck import mean


def test_{n}(fc_config):
    fc.assert_prefers(np.linspace(-0.3, 1.0 + {k} / 100, 64), mean > 0.0)
'''


def _pytest(cwd: Path, *args: str) -> tuple[float, dict, str]:
    report = Path(tempfile.mkdtemp(prefix="fc-bench-report-")) / "r.json"   # never in the checkout
    t = time.perf_counter()
    out = subprocess.run([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                          f"--rootdir={cwd}", "--fc-report-json", str(report), *args], cwd=cwd,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t
    rep = json.loads(report.read_text())
    shutil.rmtree(report.parent, ignore_errors=True)
    return wall, rep, out.stdout[-3000:]


def _same(a: dict, b: dict) -> bool:
    sys.path.insert(0, str(ROOT / "tests"))
    from _gate_helpers import same_report

    return same_report(a, b) == []


def _differences(a, b, path: str = "", out=None) -> list:
    """``(path, a value, b value)`` where two reports differ (``timing`` and ``shard`` aside)."""
    out = [] if out is None else out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if not path and k in ("timing", "shard"):
                continue
            _differences(a.get(k), b.get(k), f"{path}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _differences(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append((path, a, b))
    return out


def overhead(n_tasks: int) -> dict:
    d = Path(tempfile.mkdtemp(prefix="fc-bench-ray-"))
    for k in range(n_tasks):
        (d / f"test_s{k}.py").write_text(STAT.format(n=f"s{k}", k=k))
    serial_s, serial, _ = _pytest(d)
    ray_s, dist, text = _pytest(d, "--fc-ray-shards", str(n_tasks), "--fc-ray")
    tasks = dist["timing"]["ray"]["tasks"]
    med = lambda key: statistics.median(float(t[key]) for t in tasks)  # noqa: E731
    start = statistics.median(float(t["task_s"]) - float(t["session_s"]) for t in tasks)
    shutil.rmtree(d, ignore_errors=True)
    return {"tasks": n_tasks, "equal_reports": _same(serial, dist), "serial_s": round(serial_s, 2),
            "ray_s": round(ray_s, 2), "cluster_start_s": dist["timing"]["ray"]["connect_s"],
            "dispatch_s_median": round(med("dispatch_s"), 3), "return_s_median": round(med("return_s"), 3),
            "pytest_start_s_median": round(start, 2), "claims_s_median": round(med("session_s"), 3),
            "per_task": tasks}


def merge_time(n_claims: int, n_shards: int) -> dict:
    """Shard reports of a two-model gate with ``n_claims`` claims per model, merged."""
    d = Path(tempfile.mkdtemp(prefix="fc-bench-merge-"))
    # a real gate shard on two tiny models, its claims replicated into many files
    sys.path.insert(0, str(ROOT / "tests"))
    from _gate_helpers import MODEL_CLAIMS, tiny_folders

    for name, text in MODEL_CLAIMS.items():
        (d / f"{name}.py").write_text(text)
    m = tiny_folders(d)
    _, rep, _ = _pytest(d, "--fc-model", m["pert"], "--fc-baseline-model", m["base"], "--fc-shard", "1/1")
    proto = [c for c in rep["claims"] if c["results"]]
    per_file = max(1, len(proto) // 2)          # claims per model in one file
    files = [f"claims/test_{i:04d}.py" for i in range(max(1, n_claims // per_file))]
    paths = []
    for s in range(n_shards):
        mine = files[s::n_shards]
        r = copy.deepcopy(rep)
        r["claims"] = []
        for f in mine:
            for c in proto:
                cc = copy.deepcopy(c)
                cc["id"] = f + "::" + c["id"].split("::", 1)[1]
                cc["base_id"] = f + "::" + c["base_id"].split("::", 1)[1]
                for res in cc["results"]:
                    res["claim_id"] = cc["id"]
                r["claims"].append(cc)
        r["shard"] = dict(rep["shard"], index=s + 1, count=n_shards, files=sorted(mine))
        r["shard"]["suite"] = dict(rep["shard"]["suite"], files=sorted(files))
        p = d / f"shard{s + 1}.json"
        p.write_text(json.dumps(r))
        paths.append(str(p))
    t = time.perf_counter()
    out = subprocess.run([str(Path(PY).with_name("fieldcheck")), "report", "merge", *paths, "-o", str(d / "run.json"),
                          "-q"], capture_output=True, text=True)
    wall = time.perf_counter() - t
    merged = json.loads((d / "run.json").read_text())
    res = {"claims": merged["summary"]["claims"], "shards": n_shards, "wall_s": round(wall, 2),
           "merge_s": merged["timing"]["merge_s"], "paired": merged["comparison"]["paired"]["n_paired"],
           "exit": out.returncode}
    shutil.rmtree(d, ignore_errors=True)
    return res


def smollm2_gate(files: list[str]) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from _gate_helpers import perturbed_smollm2

    tmp = Path(tempfile.mkdtemp(prefix="fc-bench-gate-"))
    cand = perturbed_smollm2(tmp / "smollm2-oproj-x0.3")
    gate = ["--fc-model", str(cand), "--fc-baseline-model", "smollm2-135m", *files]
    serial_s, serial, _ = _pytest(ROOT, *gate)
    ray_s, dist, _ = _pytest(ROOT, *gate, "--fc-ray")
    shutil.rmtree(tmp, ignore_errors=True)
    diff = _differences(serial, dist)
    nums = [abs(x - y) for _, x, y in diff if isinstance(x, float) and isinstance(y, float)]
    return {"files": files, "claims": serial["summary"]["claims"], "equal_reports": not diff,
            "differences": len(diff), "first_differences": [list(d) for d in diff[:10]],
            "max_abs_numeric_difference": max(nums, default=0.0),
            "serial_s": round(serial_s, 1), "ray_s": round(ray_s, 1), "ray": dist["timing"]["ray"],
            "regressions": len((serial.get("comparison") or {}).get("regressions") or [])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--merge-claims", type=int, default=1000)
    ap.add_argument("--merge-shards", type=int, default=10)
    ap.add_argument("--smollm2-gate", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    out = {"overhead": overhead(a.tasks)}
    o = out["overhead"]
    print(f"ray overhead: {o['tasks']} tasks, equal reports {o['equal_reports']}; cluster start "
          f"{o['cluster_start_s']} s; per task (median): dispatch {o['dispatch_s_median']} s, return "
          f"{o['return_s_median']} s, pytest start {o['pytest_start_s_median']} s, claims {o['claims_s_median']} s; "
          f"serial {o['serial_s']} s, ray {o['ray_s']} s")
    out["merge"] = merge_time(a.merge_claims, a.merge_shards)
    mg = out["merge"]
    print(f"merge: {mg['claims']} claims from {mg['shards']} shards ({mg['paired']} paired tests) in "
          f"{mg['merge_s']} s (command {mg['wall_s']} s)")
    if a.smollm2_gate:
        out["smollm2_gate"] = g = smollm2_gate(a.smollm2_gate.split(","))
        print(f"SmolLM2 gate ({g['claims']} claim results, {g['regressions']} regressions): serial {g['serial_s']} s, "
              f"--fc-ray {g['ray_s']} s, equal reports {g['equal_reports']}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
