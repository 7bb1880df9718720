"""Benchmark: the light-cone engine vs TransformerLens's resid_pre sweep, one row per model family.

    .venv/bin/python benchmarks/bench_families.py [--families qwen2,gemma2,...] [--reps N]
        [--layers 12] [--d-model 256] [--heads 8] [--json PATH]
    .venv/bin/python benchmarks/bench_families.py --models smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b

``--models`` runs the same workload on real models instead (aliases, folders or GGUF files loaded
with ``fieldcheck.load_model``; the three built-in models: SmolLM2-135M, Gemma-3-270m,
Qwen2.5-Coder-0.5B), one row each, in one run.

For each family a random model of a realistic small shape (default 12 layers, d_model 256, 8 heads,
d_mlp 4 * d_model, every family feature on: see ``fieldcheck.models.tiny.tiny_hf_model``) is written
with ``save_pretrained`` and loaded with ``fieldcheck.load_model(folder)``, as a user would. Data:
``fieldcheck.datasets.ioi(model, n=8, seed=0)`` (8 IOI pairs). Workload: resid_pre at every
(layer, position):

- TransformerLens: ``transformer_lens.patching.get_act_patch_resid_pre(model, corrupt, clean_cache,
  metric, reduce="none")`` with the clean cache from ``model.run_with_cache`` (timed);
- fieldcheck: ``Field(model).patch(ds, resid_pre("all", "all"))`` on a fresh Field (its clean and
  corrupted runs timed).

Both sides run in one process, alternating (order flipped every repetition); the ratio is the median
of the per-repetition ratios, ``max_abs_diff`` the largest |fieldcheck - TransformerLens| over every
site and example. The last line printed is ``min_speedup=<ratio> max_abs_diff=<float>``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def build(arch: str, folder: str, n_layers: int, d_model: int, n_heads: int):
    import fieldcheck as fc
    from fieldcheck.models.tiny import tiny_hf_model

    hf, tok = tiny_hf_model(arch, n_layers=n_layers, d_model=d_model, n_heads=n_heads, init_std=0.05)
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    del hf
    model = fc.load_model(folder)
    return model, fc.datasets.ioi(model, n=8, seed=0)


def load_real(spec: str):
    import fieldcheck as fc

    model = fc.load_model(spec)
    return model, fc.datasets.ioi(model, n=8, seed=0)


def tl_metric(ds):
    end, ans, wrong = ds.positions["END"], ds.answers, ds.wrong

    def logit_diff(logits):
        b = torch.arange(logits.shape[0])
        return logits[b, end, ans] - logits[b, end, wrong]

    return logit_diff


def run_tl(model, ds):
    import transformer_lens.patching as tp

    t0 = time.perf_counter()
    with torch.no_grad():
        _, cache = model.run_with_cache(ds.clean_tokens)
        vals = tp.get_act_patch_resid_pre(model, ds.corrupt_tokens, cache, tl_metric(ds), reduce="none").values
    return time.perf_counter() - t0, vals


def run_fc(model, ds):
    from fieldcheck.lab import Field
    from fieldcheck.sites import resid_pre

    t0 = time.perf_counter()
    field = Field(model)
    res = field.patch(ds, resid_pre("all", "all"), progress=False)
    return time.perf_counter() - t0, res, field.engine_name


def main(argv=None):
    from fieldcheck.models.tiny import FAMILIES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--json", default=None)
    ap.add_argument("--models", default=None, help="real models (comma-separated specs) instead of families")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.platform()}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"{'model' if args.models else 'family':<18} {'engine':<9} {'sites':>5} {'TL s':>7} {'fc s':>7} {'ratio':>7} {'max diff':>9}", flush=True)
    names = args.models.split(",") if args.models else args.families.split(",")
    for arch in names:
        with tempfile.TemporaryDirectory(prefix="fc-bench-") as folder:
            model, ds = load_real(arch) if args.models else build(arch, folder, args.layers, args.d_model,
                                                                   args.heads)
            L, T, B = model.cfg.n_layers, ds.seq_len, ds.n
            run_fc(model, ds)  # warm-up (rotary tables, allocator)
            tl_t, fc_t, ratios, diff, engine = [], [], [], 0.0, "?"
            for rep in range(args.reps):
                order = ("tl", "fc") if rep % 2 == 0 else ("fc", "tl")
                out = {}
                for side in order:
                    out[side] = run_tl(model, ds) if side == "tl" else run_fc(model, ds)
                t_tl, v_tl = out["tl"]
                t_fc, res, engine = out["fc"]
                tl_t.append(t_tl)
                fc_t.append(t_fc)
                ratios.append(t_tl / t_fc)
                ours = np.asarray(torch.as_tensor(res.values), dtype=np.float64)
                diff = max(diff, float(np.abs(ours - v_tl.reshape(L * T, B).double().numpy()).max()))
            row = dict(family=arch if not args.models else getattr(model, "fieldcheck_info", {}).get("family"),
                       model=arch if args.models else None, engine=engine,
                       architecture=type(model.original_model).__name__, n_layers=L, d_model=model.cfg.d_model,
                       sites=L * T, batch=B, seq_len=T, tl_s=statistics.median(tl_t), fc_s=statistics.median(fc_t),
                       ratio=statistics.median(ratios), max_abs_diff=diff, rows=res.cost.get("rows"),
                       reps=args.reps)
            rows.append(row)
            if args.json:  # after every family, so that a long run keeps what it measured
                with open(args.json, "w") as fh:
                    json.dump(dict(shape=None if args.models else dict(n_layers=args.layers, d_model=args.d_model,
                                                                          n_heads=args.heads),
                                   rows=rows, partial=True), fh, indent=1)
            print(f"{arch:<18} {engine:<9} {L * T:>5} {row['tl_s']:>7.2f} {row['fc_s']:>7.3f} {row['ratio']:>6.1f}x "
                  f"{diff:>9.1e}", flush=True)
            del model
    out = dict(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), torch=torch.__version__,
               threads=torch.get_num_threads(), load_average=os.getloadavg(),
               shape=None if args.models else dict(n_layers=args.layers, d_model=args.d_model, n_heads=args.heads),
               models=names if args.models else None, rows=rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    print(f"min_speedup={min(r['ratio'] for r in rows):.2f} max_abs_diff={max(r['max_abs_diff'] for r in rows):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
