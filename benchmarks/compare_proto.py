"""Alternating timing of fieldcheck's LightConeEngine vs benchmarks/engine_proto.ProtoEngine (same sweep).

    .venv/bin/python benchmarks/compare_proto.py [--reps N] [--heads]
"""
import argparse, os, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
import fieldcheck
import fieldcheck.field.core as ff
from fieldcheck.data.builtin import ioi
from fieldcheck.field.engine import LightConeEngine
from fieldcheck.field.sites import attn_head, resid_pre
from engine_proto import ProtoEngine

ap = argparse.ArgumentParser(); ap.add_argument("--reps", type=int, default=3); ap.add_argument("--heads", action="store_true")
a = ap.parse_args()
model = fieldcheck.load_model("smollm2-135m")
ds = ioi(model, n=8, seed=0)
sites = attn_head([15, 29], "all", "all") if a.heads else resid_pre("all", "all")
field = ff.Field(model); field.run(ds)  # runs cached: time the engine only
t = {"orig": [], "proto": []}; vals = {}
for r in range(a.reps + 1):
    for name, cls in (("orig", LightConeEngine), ("proto", ProtoEngine))[:: 1 if r % 2 else -1]:
        ff.LightConeEngine = cls
        s = time.perf_counter(); res = field.patch(ds, sites, progress=False); dt = time.perf_counter() - s
        if r: t[name].append(dt)  # rep 0 is a warm-up
        vals[name] = torch.as_tensor(res.values)
ff.LightConeEngine = LightConeEngine
print({k: [round(x, 2) for x in v] for k, v in t.items()})
print(f"median orig {statistics.median(t['orig']):.2f}s proto {statistics.median(t['proto']):.2f}s "
      f"gain {statistics.median(t['orig']) / statistics.median(t['proto']):.2f}x "
      f"max diff {float((vals['orig'] - vals['proto']).abs().max()):.2e}")
