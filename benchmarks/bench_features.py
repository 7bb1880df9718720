"""Attribution to every latent (one forward + one backward beyond the cached runs) against
patching each feature one at a time (light-cone engine), in one run, on SmolLM2-135M with its
example SAE (blocks.15.hook_resid_pre, 4608 latents) and 16 IOI pairs.

    .venv/bin/python benchmarks/bench_features.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import fieldcheck as fc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--positions", default="END", help="END (one position) or all (each latent over the prompt)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = fc.load_model("smollm2-135m")
    sae = fc.sae.example("smollm2-135m")
    field = fc.Field(model)
    ds = fc.datasets.ioi(model, n=16, seed=0)
    sites = fc.sites.features(sae, "all", args.positions)
    field.run(ds)
    field.feature_activations(ds, sae)  # both runs encoded once (shared by both methods)
    t0 = time.perf_counter()
    pred = field.predict(ds, sites)
    t_attr = time.perf_counter() - t0
    t0 = time.perf_counter()
    real = field.patch(ds, sites, progress=False)
    t_patch = time.perf_counter() - t0
    active = ~real.skipped.all(1)
    P, A = pred.effect[active], real.effect[active]
    out = {"latents": sae.d_sae, "examples": ds.n, "position": args.positions,
           "latents_with_a_nonzero_source": int(active.sum()), "rows_patched": real.cost["rows"],
           "attribution_seconds": round(t_attr, 3), "patching_seconds": round(t_patch, 3),
           "ratio": round(t_patch / t_attr, 1),
           "r2_prediction_vs_patch": float(1 - ((A - P) ** 2).sum() / ((A - A.mean()) ** 2).sum()),
           "max_abs_first_order_error": float(np.abs(A - P).max()), "max_abs_effect": float(np.abs(A).max())}
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
