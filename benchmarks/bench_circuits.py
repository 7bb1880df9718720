"""Benchmark: edge attribution (EAP, EAP-IG) vs brute-force edge ablation, and the cost of
evaluating a circuit, on SmolLM2-135M IOI.

    .venv/bin/python benchmarks/bench_circuits.py [--n 16] [--sample 40] [--steps 5] [--json PATH]

Workloads (``fieldcheck.datasets.ioi(model, n, seed=0)``, 15 tokens; 123,211 edges):

1. **Attribution vs brute force.** ``field.edge_scores(ds, method="eap-ig", steps)`` and
   ``method="eap"`` score every edge in ``steps`` (1) forward+backward passes. Brute force ablates
   one edge at a time (one edge-ablated forward each, the ablated values computed once): it is
   timed on ``--sample`` edges (half the top edges by |EAP-IG|, half drawn at random) and
   extrapolated to all edges; the ratio is brute-force time over attribution time, in one run.
   The sampled edges also give the rank agreement (Spearman) of EAP-IG and EAP with the real
   single-edge effects.
2. **Circuit evaluation.** ``field.evaluate_circuit`` on the top-k edge circuits (k = 100, 1000,
   10000, all) against one plain clean forward of the same prompts (the functional model, no
   cache kept), as a ratio.

The last line printed is ``attribution_speedup_vs_brute_force=<eap-ig ratio> eval_cost_vs_forward=<ratio at k=1000>``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=16, help="IOI examples (default 16)")
    ap.add_argument("--sample", type=int, default=40, help="edges ablated one at a time (default 40)")
    ap.add_argument("--steps", type=int, default=5, help="EAP-IG steps (default 5)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    import fieldcheck as fc
    from scipy.stats import spearmanr

    from fieldcheck.experiments.circuits import _masks_metric
    from fieldcheck.experiments.edges import edge_graph
    from fieldcheck.field.engine import run_cache

    model = fc.load_model("smollm2-135m")
    field = fc.Field(model)
    ds = fc.datasets.ioi(model, n=args.n, seed=0)
    field.run(ds)
    g = edge_graph(field)
    res = {"model": "smollm2-135m", "n": ds.n, "seq_len": ds.seq_len, "n_edges": g.n_edges,
           "steps": args.steps, "sample": args.sample, "torch_threads": torch.get_num_threads(),
           "machine": platform.machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "load_average": os.getloadavg()}
    print(f"SmolLM2 IOI n={ds.n}, {ds.seq_len} tokens, {g!r}", flush=True)

    t = time.perf_counter()
    ig = field.edge_scores(ds, method="eap-ig", steps=args.steps)
    res["eap_ig_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    eap = field.edge_scores(ds, method="eap")
    res["eap_seconds"] = time.perf_counter() - t
    print(f"EAP-IG ({args.steps} steps): {res['eap_ig_seconds']:.1f} s; EAP: {res['eap_seconds']:.1f} s", flush=True)

    edges = g.edges()
    rank = np.argsort(-np.abs(np.array([ig.scores[s, r] for s, r in edges])))
    rng = np.random.default_rng(0)
    half = args.sample // 2
    pick = list(rank[:half]) + list(rng.choice(rank[half:], args.sample - half, replace=False))
    masks = []
    for i in pick:
        k = g.adjacency.copy()
        k[edges[i]] = False
        masks.append(k)
    full = field.metric_values(ds).numpy()
    t = time.perf_counter()
    vals = _masks_metric(field, ds, masks, "corrupt", "logit_diff")
    per_edge = (time.perf_counter() - t) / len(masks)
    bf = (vals - full[None]).mean(1)
    res["brute_force_seconds_per_edge"] = per_edge
    res["brute_force_seconds_all_edges_extrapolated"] = per_edge * g.n_edges
    res["speedup_eap_ig"] = per_edge * g.n_edges / res["eap_ig_seconds"]
    res["speedup_eap"] = per_edge * g.n_edges / res["eap_seconds"]
    a_ig = np.array([ig.scores[edges[i]] for i in pick])
    a_eap = np.array([eap.scores[edges[i]] for i in pick])
    res["spearman_eap_ig_sample"] = float(spearmanr(a_ig, bf)[0])
    res["spearman_eap_sample"] = float(spearmanr(a_eap, bf)[0])
    res["spearman_eap_ig_top_half"] = float(spearmanr(a_ig[:half], bf[:half])[0])
    print(f"brute force: {per_edge:.2f} s per edge -> {per_edge * g.n_edges / 3600:.1f} h for all edges; "
          f"speedup EAP-IG {res['speedup_eap_ig']:.0f}x, EAP {res['speedup_eap']:.0f}x; Spearman with real "
          f"single-edge effects on the {len(pick)} sampled edges: EAP-IG {res['spearman_eap_ig_sample']:.3f}, "
          f"EAP {res['spearman_eap_sample']:.3f} (top {half} only: EAP-IG {res['spearman_eap_ig_top_half']:.3f})",
          flush=True)

    fm = field.fm
    toks = ds.clean_tokens.to(field.device)
    fwd = []
    for _ in range(3):
        t = time.perf_counter()
        with torch.no_grad():
            run_cache(fm, toks)
        fwd.append(time.perf_counter() - t)
    res["forward_seconds"] = float(np.median(fwd))
    res["eval"] = {}
    for k in (100, 1000, 10000, g.n_edges):
        c = ig.top(k)
        t = time.perf_counter()
        r = field.evaluate_circuit(ds, c)
        dt = time.perf_counter() - t
        res["eval"][str(k)] = {"seconds": dt, "ratio_to_forward": dt / res["forward_seconds"], "cpr": r.cpr}
        print(f"evaluate_circuit top {k}: {dt:.2f} s = {dt / res['forward_seconds']:.1f} forwards "
              f"(plain forward {res['forward_seconds']:.2f} s), cpr {r.cpr:.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    print(f"attribution_speedup_vs_brute_force={res['speedup_eap_ig']:.0f} "
          f"eval_cost_vs_forward={res['eval']['1000']['ratio_to_forward']:.1f}")


if __name__ == "__main__":
    main()
