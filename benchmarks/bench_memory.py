"""Peak memory of a resid_pre sweep, EAP-IG and a gate run, measured on one model, with the formula
that predicts them, evaluated for 7-8B models.

    .venv/bin/python benchmarks/bench_memory.py [--model qwen2.5-coder-0.5b] [--n 8] [--dtype float32]
        [--budget 2GiB] [--gate-files claims/test_behaviour.py] [--json PATH]

Each workload runs in its own process. On the CPU the peak is the process's resident high-water
mark (``VmHWM``, reset with ``/proc/self/clear_refs`` after the model is loaded, so that the
sweep's own peak is separated from loading), on CUDA ``torch.cuda.max_memory_allocated``. Data:
``fieldcheck.datasets.ioi(model, n=N, seed=0)``. Workloads: ``field.patch(ds, resid_pre("all",
"all"))``; ``field.edge_scores(ds, method="eap-ig", steps=5)``; the gate: pytest on
``--gate-files`` with ``--fc-model`` the model and ``--fc-baseline-model`` the same weights under
another spec (its cache folder), peak of the pytest process (``ru_maxrss``).

The formula (bytes; ``b`` bytes per number of the dtype, ``B`` examples, ``T`` tokens, ``L``
layers, ``d`` d_model, ``H`` heads, ``K`` kv heads, ``h`` d_head, ``m`` d_mlp, ``P`` parameters,
``M`` the memory budget)::

    weights   = P b
    runs      = 2 B T (L (3 d + 2 K h) + d) b                       (the clean and corrupted caches)
    sweep     = min(M, B L bytes_per_row(T))                         (the rows of one source position;
                LightConeEngine.bytes_per_row, an upper bound)
    eap_ig    = max(e, min(M, B e)) + S R 8                          (e: discovery.eap_bytes_per_example,
                calibrated on Qwen2.5-0.5B; S senders x R receivers of float64 scores)
    peak      = runtime + weights + runs + max(sweep, eap_ig, sensitivities)

``runtime`` (Python, torch, the tokenizer) is measured once per process (the peak before loading).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("FIELDCHECK_NO_PROGRESS", "1")
ROOT = Path(__file__).resolve().parents[1]

#: shapes of 7-8B models for the projection (their config.json)
PROJECT = {
    "Llama-3.1-8B": dict(P=8.03e9, L=32, d=4096, H=32, K=8, h=128, m=14336, V=128256),
    "Qwen2.5-7B": dict(P=7.62e9, L=28, d=3584, H=28, K=4, h=128, m=18944, V=152064),
    "Mistral-7B-v0.3": dict(P=7.25e9, L=32, d=4096, H=32, K=8, h=128, m=14336, V=32768),
}


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def probe(workload: str, spec: str, n: int, dtype: str, budget: str, device: str) -> dict:
    import torch

    import fieldcheck as fc
    from fieldcheck.sites import resid_pre

    runtime = _status("VmHWM")
    model = fc.load_model(spec, dtype=dtype, device=device)
    f = fc.Field(model, memory_budget=budget)
    ds = fc.datasets.ioi(model, n=n, seed=0)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    f.run(ds)
    runs = sum(t.numel() * t.element_size() for c in (f.run(ds).clean, f.run(ds).corrupt)
               for t in (c.resid, c.mid, c.z, c.k, c.v))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = _status("VmRSS")
    reset = _reset_hwm()
    t = time.perf_counter()
    if workload == "resid":
        r = f.patch(ds, resid_pre("all", "all"), progress=False)
        extra = {"rows": r.cost["rows"], "chunks": r.cost["chunks"]}
    else:
        s = f.edge_scores(ds, method="eap-ig", steps=5)
        extra = {"forward_backward": s.cost["forward_backward"], "edges": int(s.graph.n_edges)}
    out = {"workload": workload, "seconds": round(time.perf_counter() - t, 2), "runtime": runtime,
           "weights": weights, "runs": runs, "rss_before": before, "peak": _status("VmHWM"), "hwm_reset": reset,
           "budget": f.memory_budget, "n": n, "T": ds.seq_len, **extra,
           "shape": {"P": sum(p.numel() for p in model.parameters()), "L": f.fm.n_layers, "d": f.fm.d_model,
                     "H": f.fm.n_heads, "K": f.fm.n_kv_heads, "h": f.fm.d_head, "m": getattr(f.fm, "d_mlp", 0),
                     "V": f.fm.d_vocab}}
    if cuda:
        out["cuda_peak"] = torch.cuda.max_memory_allocated()
    return out


def gate(spec: str, files: list[str], budget: str) -> dict:
    """The gate's pytest process: its own peak (``wait4``'s rusage of that child alone)."""
    from fieldcheck.models.loading import pull

    folder, _ = pull(spec)
    t = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                                 "--fc-model", spec, "--fc-baseline-model", str(folder),
                                 "--fc-memory-budget", budget, *files], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        tail = out.read().decode(errors="replace")[-400:]
    return {"workload": "gate", "files": files, "seconds": round(time.perf_counter() - t, 1),
            "peak": usage.ru_maxrss * 1024, "exit": os.waitstatus_to_exitcode(status), "tail": tail}


def predict(shape: dict, B: int, T: int, b: int, budget: int) -> dict:
    """The formula of the module doc for a model ``shape`` (P, L, d, H, K, h, m, V), with the
    library's own per-row and per-example estimates."""
    from types import SimpleNamespace

    from fieldcheck.experiments.discovery import eap_bytes_per_example
    from fieldcheck.field.engine import LightConeEngine

    L, d, H, K, h, m = (shape[k] for k in "LdHKhm")
    fm = SimpleNamespace(n_layers=L, d_model=d, n_heads=H, n_kv_heads=K, d_head=h, d_mlp=m)
    weights = shape["P"] * b
    runs = 2 * B * T * (L * (3 * d + 2 * K * h) + d) * b
    # a resid_pre sweep runs the rows of one source position at a time (B examples x L layers),
    # each chunk at most the budget (the engine's own estimate: an upper bound)
    sweep = min(budget, B * L * LightConeEngine(fm).bytes_per_row(T, T, b))
    e = eap_bytes_per_example(fm, T, b)
    n_recv, n_send = L * (3 * H + 1) + 1, 1 + L * (H + 1)
    eap = max(e, min(budget, B * e)) + n_send * n_recv * 8
    return {"weights": weights, "runs": runs, "sweep": sweep, "eap_ig": eap, "eap_per_example": e}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget", default="2GiB")
    ap.add_argument("--gate-files", default="claims/test_behaviour.py")
    ap.add_argument("--workloads", default="resid,eapig,gate")
    ap.add_argument("--json", default=None)
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.probe:
        print(json.dumps(probe(a.probe, a.model, a.n, a.dtype, a.budget, a.device)))
        return 0
    out = {"model": a.model, "n": a.n, "dtype": a.dtype, "device": a.device, "results": []}
    for w in a.workloads.split(","):
        if w == "gate":
            res = gate(a.model, a.gate_files.split(","), a.budget)
        else:
            p = subprocess.run([sys.executable, __file__, "--probe", w, "--model", a.model, "--n", str(a.n),
                                "--dtype", a.dtype, "--budget", a.budget, "--device", a.device],
                               capture_output=True, text=True)
            res = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {"workload": w, "error": p.stderr[-2000:]}
        out["results"].append(res)
        gib = lambda x: f"{x / 2**30:.2f} GiB"  # noqa: E731
        if "error" in res:
            print(f"{w}: failed\n{res['error']}")
        elif w == "gate":
            print(f"gate ({', '.join(res['files'])}): peak {gib(res['peak'])} in {res['seconds']} s (exit {res['exit']})")
        else:
            print(f"{w}: peak {gib(res['peak'])} (runtime {gib(res['runtime'])}, weights {gib(res['weights'])}, "
                  f"runs {gib(res['runs'])}, own growth {gib(res['peak'] - res['rss_before'])}) in {res['seconds']} s"
                  + (f"; CUDA peak {gib(res['cuda_peak'])}" if "cuda_peak" in res else ""))
    from fieldcheck.config import parse_bytes

    b = {"float32": 4, "bfloat16": 2, "float16": 2}[a.dtype]
    budget = parse_bytes(a.budget)
    first = next((r for r in out["results"] if "T" in r), None)
    T = first["T"] if first else 15
    for r in out["results"]:   # the formula against the measurement on this model
        if "shape" in r:
            pr = predict(r["shape"], a.n, T, b, budget)
            key = "sweep" if r["workload"] == "resid" else "eap_ig"
            r["predicted"] = {**pr, "peak": r["runtime"] + pr["weights"] + pr["runs"] + pr[key]}
            print(f"{r['workload']}: predicted peak {r['predicted']['peak'] / 2**30:.2f} GiB (runtime + weights "
                  f"{pr['weights'] / 2**30:.2f} + runs {pr['runs'] / 2**20:.1f} MiB + {key} {pr[key] / 2**30:.2f} GiB), "
                  f"measured {r['peak'] / 2**30:.2f} GiB")
    out["projection"] = {}
    print(f"\nprojection (n={a.n}, T={T}, memory budget {budget / 2**30:.1f} GiB; bfloat16 weights):")
    for name, shape in PROJECT.items():
        pr = predict(shape, a.n, T, 2, budget)
        out["projection"][name] = pr
        print(f"{name:16s} weights {pr['weights'] / 2**30:6.1f} GiB + runs {pr['runs'] / 2**20:7.1f} MiB + "
              f"max(sweep {pr['sweep'] / 2**30:.2f}, EAP-IG {pr['eap_ig'] / 2**30:.2f}) GiB")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
