"""GPU benchmark: the light-cone engine against TransformerLens in float32 and bfloat16, on a model
on one GPU and on a model dispatched over devices (accelerate ``device_map``). Run as is on a
machine with CUDA (it was not run in the session that wrote it: that machine had no GPU):

    .venv/bin/python benchmarks/bench_devices.py [--model smollm2-135m] [--reps 3] [--json PATH]
    .venv/bin/python benchmarks/bench_devices.py --cpu-smoke      # the same code paths on the CPU

Placements:

- ``single``: ``load_model(spec, device="cuda:0", dtype=...)``;
- ``dispatched``: ``load_model(spec, device_map=MAP, dtype=...)``, the blocks split evenly over the
  visible GPUs (two or more), or with one GPU the second half of the blocks offloaded to the CPU
  (their weights move to the GPU block by block); embedding, final norm and unembedding on GPU 0.
  (``--cpu-smoke``: the CPU, and the second half of the blocks offloaded to disk.)

Workload (as ``bench_patching.py`` workload 1): resid_pre at every (layer, position) on
``fieldcheck.datasets.ioi(model, n=8, seed=0)``: TransformerLens's ``get_act_patch_resid_pre``
(one hooked forward per site) against ``Field(model).patch(ds, resid_pre("all", "all"))``; the
same process, alternating, ``--reps`` repetitions, the median of the per-repetition ratios.
Prints one row per (placement, dtype): seconds of each side, the speedup and the largest
|fieldcheck - TransformerLens| over every site and example.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_patching import run_fc, run_tl, timed  # noqa: E402


def device_map(folder: Path, n_layers: int, devices: list, offload_to=None) -> dict:
    """Blocks split evenly over ``devices``; with ``offload_to``, the second half of the blocks
    there instead (``"cpu"`` or ``"disk"``); embedding, final norm and unembedding on devices[0]."""
    import json as _json

    from fieldcheck.field.arch import FAMILY_SPECS
    from fieldcheck.models.info import LIGHTCONE_FAMILIES

    arch = _json.loads((folder / "config.json").read_text())["architectures"][0]
    fam = FAMILY_SPECS[LIGHTCONE_FAMILIES[arch]]
    core = fam.core
    first = devices[0]
    dm = {f"{core}.{fam.embed}": first, f"{core}.rotary_emb": first, f"{core}.{fam.final_norm}": first,
          fam.lm_head: first}
    for i in range(n_layers):
        if offload_to is not None:
            dm[f"{core}.layers.{i}"] = first if i < n_layers // 2 else offload_to
        else:
            dm[f"{core}.layers.{i}"] = devices[min(len(devices) - 1, i * len(devices) // n_layers)]
    return dm


def placements(spec: str, smoke: bool) -> list:
    from fieldcheck.models.loading import pull

    folder, _ = pull(spec) if not spec.startswith(("tiny", "/", ".")) else (Path(spec), None)
    cfg = json.loads((Path(folder) / "config.json").read_text())
    L = cfg["num_hidden_layers"]
    if smoke:
        return [("single", {"device": "cpu"}),
                ("dispatched (cpu + disk)", {"device_map": device_map(Path(folder), L, ["cpu"], "disk"),
                                             "offload_folder": tempfile.mkdtemp(prefix="fc-offload-")})]
    n = torch.cuda.device_count()
    if n >= 2:
        disp = ("dispatched (%d GPUs)" % n, {"device_map": device_map(Path(folder), L, list(range(n)))})
    else:
        disp = ("dispatched (GPU + CPU offload)", {"device_map": device_map(Path(folder), L, [0], "cpu")})
    return [("single", {"device": "cuda:0"}), disp]


def bench(spec: str, dtype: str, where: dict, reps: int) -> dict:
    import fieldcheck as fc

    model = fc.load_model(spec, dtype=dtype, **where)
    ds = fc.datasets.ioi(model, n=8, seed=0)
    dev = where.get("device") or "cuda:0" if torch.cuda.is_available() else "cpu"
    ratios, tl_s, fc_s, diff = [], [], [], 0.0
    for rep in range(reps):
        sides = [("tl", lambda: run_tl(model, ds, "resid_pre", None, None)),
                 ("fc", lambda: run_fc(model, ds, "resid_pre", None, None))]
        got = {}
        for name, fn in (sides if rep % 2 == 0 else sides[::-1]):
            got[name] = timed(fn, dev)
        tl_s.append(got["tl"][0])
        fc_s.append(got["fc"][0])
        ratios.append(got["tl"][0] / got["fc"][0])
        a, b = got["tl"][1].double(), got["fc"][1][0].double()
        diff = max(diff, float((a - b).abs().max()))
    field = fc.Field(model)
    out = {"dtype": dtype, "tl_s": statistics.median(tl_s), "fc_s": statistics.median(fc_s),
           "speedup": statistics.median(ratios), "max_abs_diff": diff,
           "dispatch": field.fm.dispatch.describe() if getattr(field.fm, "dispatch", None) is not None else None}
    del model, field
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpu-smoke", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if not a.cpu_smoke and not torch.cuda.is_available():
        print("no CUDA device: run this on a machine with a GPU (or --cpu-smoke to check the code paths)")
        return 2
    rows = []
    for name, where in placements(a.model, a.cpu_smoke):
        for dt in a.dtypes.split(","):
            r = bench(a.model, dt, where, a.reps)
            r["placement"] = name
            rows.append(r)
            print(f"| {name} | {dt} | {r['tl_s']:.2f} | {r['fc_s']:.2f} | {r['speedup']:.1f}x | {r['max_abs_diff']:.2g} |",
                  flush=True)
    print("\n| placement | dtype | TransformerLens s | fieldcheck s | speedup | max abs diff |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['placement']} | {r['dtype']} | {r['tl_s']:.2f} | {r['fc_s']:.2f} | {r['speedup']:.1f}x | "
              f"{r['max_abs_diff']:.2g} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "gpus": torch.cuda.device_count(), "rows": rows},
                                           indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
