"""Benchmark: fieldcheck's light-cone patching engine vs TransformerLens's one-forward-per-site sweep.

    .venv/bin/python benchmarks/bench_patching.py [--quick] [--reps N] [--device cpu|cuda] [--json PATH]

Workloads (SmolLM2-135M, ``fieldcheck.datasets.ioi(model, n=8, seed=0)``: 8 IOI pairs of 15 tokens):

1. resid_pre at every (layer, position): ``transformer_lens.patching.get_act_patch_resid_pre``
   (``reduce="none"``, per-example logit difference at the last position, clean cache from
   ``model.run_with_cache``) vs ``Field(model).patch(ds, resid_pre("all", "all"))``.
2. attention-head outputs by position (``hook_z``) on a subset of layers:
   ``get_act_patch_attn_head_out_by_pos`` restricted by ``index_df`` vs ``field.patch(ds, attn_head(...))``.
3. all-site first-order prediction ``field.predict(ds, resid_pre("all", "all"))`` vs one clean + one
   corrupted forward (skipped with a note if ``fieldcheck.experiments.response`` is not there).

Both sides run in the same process, alternating, each repetition from scratch: TransformerLens's
time includes its clean ``run_with_cache``; fieldcheck's a fresh ``Field`` (its clean + corrupted
run). Peak memory is measured per side in a fresh subprocess (``--mem-probe``): the process's
VmHWM is reset (``/proc/self/clear_refs``) after the model is loaded, so the peak covers only the
sweep (TransformerLens's sweep memory does not grow with the number of sites -- one forward per
site -- so its probe runs a subset of the sites).

The last line printed is ``speedup_vs_transformer_lens=<median ratio, workload 1> max_abs_diff=<float>``.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's per-site progress bar
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

MODEL = "smollm2-135m"


# --- setup ---------------------------------------------------------------------------------
def load(device: str):
    import fieldcheck
    from fieldcheck.data.builtin import ioi

    model = fieldcheck.load_model(MODEL, device=device)
    ds = ioi(model, n=8, seed=0)
    return model, ds


def tl_metric(ds, device):
    end = ds.positions["END"].to(device)
    ans, wrong = ds.answers.to(device), ds.wrong.to(device)

    def logit_diff(logits):  # per example: logit(IO) - logit(S) at the last position
        b = torch.arange(logits.shape[0], device=logits.device)
        return logits[b, end, ans] - logits[b, end, wrong]

    return logit_diff


def _rss_now() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    return 0


def _hwm() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


# --- the two sides ---------------------------------------------------------------------------
def run_tl(model, ds, kind: str, layers, positions, heads=None):
    """TransformerLens sweep; returns values ``[n_sites, batch]`` in fieldcheck's site order."""
    import pandas as pd
    import transformer_lens.patching as tp

    dev = model.cfg.device
    metric = tl_metric(ds, dev)
    clean, corrupt = ds.clean_tokens.to(dev), ds.corrupt_tokens.to(dev)
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
    L, T = model.cfg.n_layers, clean.shape[1]
    if kind == "resid_pre":
        if layers is None and positions is None:
            res = tp.get_act_patch_resid_pre(model, corrupt, cache, metric, reduce="none")
            return res.values.reshape(L * T, -1).detach().cpu()  # [layer, pos, batch] -> [sites, batch]
        layers = range(L) if layers is None else layers
        positions = range(T) if positions is None else positions
        rows = [(l, p) for l in layers for p in positions]
        df = pd.DataFrame(rows, columns=["layer", "pos"])
        res = tp.get_act_patch_resid_pre(model, corrupt, cache, metric, index_axis_names=None,
                                         index_df=df, reduce="none")
        return res.values.detach().cpu()
    rows = [(l, p, h) for l in layers for p in positions for h in heads]
    df = pd.DataFrame(rows, columns=["layer", "pos", "head"])
    res = tp.get_act_patch_attn_head_out_by_pos(model, corrupt, cache, metric, index_axis_names=None,
                                                index_df=df, reduce="none")
    return res.values.detach().cpu()


def fc_sites(kind, layers, positions, heads=None):
    from fieldcheck.field.sites import attn_head, resid_pre

    if kind == "resid_pre":
        return resid_pre("all" if layers is None else layers, "all" if positions is None else positions)
    return attn_head(layers, heads, positions)


def run_fc(model, ds, kind, layers, positions, heads=None, memory_budget=None):
    from fieldcheck.lab import Field

    field = Field(model) if memory_budget is None else Field(model, memory_budget=memory_budget)
    res = field.patch(ds, fc_sites(kind, layers, positions, heads), progress=False)
    return torch.as_tensor(res.values).cpu(), res


def timed(fn, device):
    gc.collect()
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


# --- light-cone accounting ---------------------------------------------------------------------
def light_cone_floor(model, ds, kind, layers, positions, heads=None):
    """Sum over sites with a non-zero source (and source position <= metric position) of
    (L - l) * (T - t) token-layers: the least a sweep that recomputes only a site's forward light
    cone must do (within layer l, an attn_head source needs only o_proj + MLP; counted as a whole layer)."""
    from fieldcheck.field.engine import run_cache

    from fieldcheck.field.arch import functional_model

    fm = functional_model(model)
    dev = next(iter(model.parameters())).device
    with torch.no_grad():
        c = run_cache(fm, ds.clean_tokens.to(dev))
        k = run_cache(fm, ds.corrupt_tokens.to(dev))
    L, T, B = fm.n_layers, ds.seq_len, ds.n
    end = ds.positions["END"]
    layers = list(range(L)) if layers is None else list(layers)
    positions = list(range(T)) if positions is None else list(positions)
    total, n_nonzero, n_sites = 0, 0, 0
    for l in layers:
        for t in positions:
            for h in (heads if kind == "attn_head" else [None]):
                n_sites += 1
                if kind == "resid_pre":
                    d = (c.resid[l][:, t] - k.resid[l][:, t])
                else:
                    d = (c.z[l][:, t, h] - k.z[l][:, t, h])
                nz = (d != 0).any(-1).cpu() & (t <= end)
                n_nonzero += int(nz.sum())
                total += int(nz.sum()) * (L - l) * (T - t)
    return {"floor_token_layers": total, "nonzero_rows": n_nonzero,
            "tl_token_layers": n_sites * L * T * B, "one_forward_token_layers": L * T * B}


# --- memory probe (subprocess) -----------------------------------------------------------------
def mem_probe(side: str, workload: str, device: str, spec: dict) -> dict:
    model, ds = load(device)
    if side == "tl":  # the peak of one hooked forward per site does not depend on how many sites: run a few
        spec = dict(spec)
        spec["layers"] = [model.cfg.n_layers - 1]
        spec["positions"] = [ds.seq_len - 2, ds.seq_len - 1]
        if spec.get("heads"):
            spec["heads"] = spec["heads"][:2]
    gc.collect()
    reset = _reset_hwm()
    rss0 = _rss_now()
    t = time.perf_counter()
    if side == "tl":
        run_tl(model, ds, spec["kind"], spec["layers"], spec["positions"], spec.get("heads"))
    else:
        run_fc(model, ds, spec["kind"], spec["layers"], spec["positions"], spec.get("heads"))
    peak = _hwm()
    out = {"side": side, "workload": workload, "rss_before": rss0, "peak_rss": peak,
           "delta": peak - rss0, "hwm_reset": reset, "seconds": time.perf_counter() - t,
           "layers": spec["layers"]}
    if str(device).startswith("cuda"):
        out["cuda_peak"] = torch.cuda.max_memory_allocated()
    return out


def run_probe(side, workload, device, spec) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--mem-probe", side, "--device", device,
           "--probe-spec", json.dumps({"workload": workload, **spec})]
    p = subprocess.run(cmd, capture_output=True, text=True)
    for line in p.stdout.splitlines()[::-1]:
        if line.startswith("MEMPROBE "):
            return json.loads(line[len("MEMPROBE "):])
    raise RuntimeError(f"memory probe {side}/{workload} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")


# --- main --------------------------------------------------------------------------------------------
def fmt_s(xs):
    return f"{statistics.median(xs):8.2f} {min(xs):8.2f} {max(xs):8.2f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced sites, 1 repetition, no memory probes (< 2 min)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per side (default 3; 1 with --quick)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--head-layers", default=None, help="comma-separated layers for workload 2 (default 15,29)")
    ap.add_argument("--no-mem", action="store_true", help="skip the memory probes")
    ap.add_argument("--mem-probe", choices=["tl", "fc"], help=argparse.SUPPRESS)
    ap.add_argument("--probe-spec", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.mem_probe:
        spec = json.loads(args.probe_spec)
        print("MEMPROBE " + json.dumps(mem_probe(args.mem_probe, spec.pop("workload"), args.device, spec)))
        return

    reps = args.reps or (1 if args.quick else 3)
    t_load = time.perf_counter()
    model, ds = load(args.device)
    t_load = time.perf_counter() - t_load
    L, H, T, B = model.cfg.n_layers, model.cfg.n_heads, ds.seq_len, ds.n
    if args.quick:
        w1 = {"kind": "resid_pre", "layers": [0, L - 1], "positions": None}
        w2 = {"kind": "attn_head", "layers": [L - 1], "positions": list(range(T - 3, T)), "heads": list(range(H))}
    else:
        w1 = {"kind": "resid_pre", "layers": None, "positions": None}
        hl = [int(x) for x in args.head_layers.split(",")] if args.head_layers else [L // 2, L - 1]
        w2 = {"kind": "attn_head", "layers": hl, "positions": list(range(T)), "heads": list(range(H))}
    workloads = {"resid_pre": w1, "attn_head": w2}

    print(f"# fieldcheck patching benchmark  {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    print(f"# {platform.platform()}  python {platform.python_version()}  torch {torch.__version__}  "
          f"threads {torch.get_num_threads()}  cpus {os.cpu_count()}  device {args.device}")
    print(f"# model {MODEL}: {L} layers, {H} heads, d_model {model.cfg.d_model}; ioi n={B} seq_len={T} "
          f"first_diff={ds.first_diff.tolist()} END={ds.positions['END'].tolist()}; load {t_load:.1f}s")
    print(f"# {'quick' if args.quick else 'full'} run, {reps} repetition(s) per side, alternating")

    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform(),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device,
               "quick": args.quick, "reps": reps, "workloads": {}}
    # warm-up (allocator, rotary cache, lazy imports) on a couple of sites, not timed
    run_fc(model, ds, "resid_pre", [0], [T - 1])
    run_tl(model, ds, "resid_pre", [0], [T - 1])

    for name, spec in workloads.items():
        n_sites = len(fc_sites(spec["kind"], spec["layers"], spec["positions"], spec.get("heads"))
                      .resolve(L, H, T, ds.position_names))
        tl_t, fc_t, diffs, cost = [], [], [], None
        print(f"\n## workload {name}: {n_sites} sites x {B} examples "
              f"(layers {'all' if spec['layers'] is None else spec['layers']}, positions "
              f"{'all' if spec['positions'] is None else spec['positions']})", flush=True)
        for r in range(reps):
            order = ("tl", "fc") if r % 2 == 0 else ("fc", "tl")
            vals = {}
            for side in order:
                if side == "tl":
                    dt, v = timed(lambda: run_tl(model, ds, spec["kind"], spec["layers"], spec["positions"],
                                                 spec.get("heads")), args.device)
                    tl_t.append(dt)
                    vals["tl"] = v
                else:
                    dt, (v, res) = timed(lambda: run_fc(model, ds, spec["kind"], spec["layers"], spec["positions"],
                                                        spec.get("heads")), args.device)
                    fc_t.append(dt)
                    vals["fc"], cost = v, res.cost
                print(f"   rep {r}: {side} {dt:7.2f}s", flush=True)
            assert vals["tl"].shape == vals["fc"].shape, (vals["tl"].shape, vals["fc"].shape)
            diffs.append(float((vals["tl"].float() - vals["fc"].float()).abs().max()))
        floor = light_cone_floor(model, ds, spec["kind"], spec["layers"], spec["positions"], spec.get("heads"))
        ratios = [a / b for a, b in zip(tl_t, fc_t)]
        results["workloads"][name] = {
            "sites": n_sites, "tl_seconds": tl_t, "fc_seconds": fc_t,
            "speedup_median_of_ratios": statistics.median(ratios),
            "speedup_ratio_of_medians": statistics.median(tl_t) / statistics.median(fc_t),
            "max_abs_diff": max(diffs), "fc_cost": {k: v for k, v in cost.items() if k != "seconds"}, **floor}

    # workload 3: first-order prediction vs one clean + one corrupted forward
    if importlib.util.find_spec("fieldcheck.experiments.response") is not None and not os.environ.get("BENCH_SKIP_PREDICT"):
        from fieldcheck.lab import Field
        from fieldcheck.field.sites import resid_pre

        dev = next(iter(model.parameters())).device
        clean, corrupt = ds.clean_tokens.to(dev), ds.corrupt_tokens.to(dev)
        fwd_t, pred_t, pred_warm_t = [], [], []
        try:
            for r in range(reps):
                with torch.no_grad():
                    dt, _ = timed(lambda: (model(clean), model(corrupt)), args.device)
                fwd_t.append(dt)
                field = Field(model)
                dt, _ = timed(lambda: field.predict(ds, resid_pre("all", "all")), args.device)
                pred_t.append(dt)
                dt, _ = timed(lambda: field.predict(ds, resid_pre("all", "all")), args.device)
                pred_warm_t.append(dt)
            results["workloads"]["predict"] = {
                "two_forwards_seconds": fwd_t, "predict_seconds": pred_t, "predict_cached_run_seconds": pred_warm_t,
                "ratio": statistics.median(pred_t) / statistics.median(fwd_t)}
        except Exception as e:  # the response module is the lead's, possibly mid-change
            results["workloads"]["predict"] = {"skipped": f"{type(e).__name__}: {e}"}
    else:
        results["workloads"]["predict"] = {"skipped": "fieldcheck.experiments.response (Field.predict) is not available"}

    # memory, each side in its own process
    if not (args.quick or args.no_mem):
        for name, spec in workloads.items():
            mem = {}
            for side in ("tl", "fc"):
                try:
                    mem[side] = run_probe(side, name, args.device, spec)
                except Exception as e:
                    mem[side] = {"error": str(e)[-500:]}
            results["workloads"][name]["memory"] = mem

    # --- report ----------------------------------------------------------------------------------
    MiB = 2 ** 20
    print("\n| workload | sites | side | median s | min s | max s | speedup (median of ratios) | peak RSS MiB (sweep delta) | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ("resid_pre", "attn_head"):
        w = results["workloads"][name]
        for side, key in (("TransformerLens", "tl"), ("fieldcheck", "fc")):
            xs = w[f"{key}_seconds"]
            m = w.get("memory", {}).get(key, {})
            mem = f"{m['peak_rss'] / MiB:.0f} ({m['delta'] / MiB:+.0f})" if "peak_rss" in m else "-"
            sp = f"{w['speedup_median_of_ratios']:.1f}x" if key == "fc" else ""
            print(f"| {name} | {w['sites']} | {side} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} "
                  f"| {sp} | {mem} | {w['max_abs_diff']:.2e} |" if key == "fc" else
                  f"| {name} | {w['sites']} | {side} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} "
                  f"| | {mem} | |")
    p = results["workloads"]["predict"]
    if "skipped" in p:
        print(f"| predict | all resid_pre | - | skipped: {p['skipped']} |")
    else:
        print(f"| predict | {L * T} resid_pre | two plain forwards | {fmt_s(p['two_forwards_seconds']).split()[0]} | "
              f"{min(p['two_forwards_seconds']):.2f} | {max(p['two_forwards_seconds']):.2f} | | | |")
        print(f"| predict | {L * T} resid_pre | field.predict (fresh Field) | {statistics.median(p['predict_seconds']):.2f} | "
              f"{min(p['predict_seconds']):.2f} | {max(p['predict_seconds']):.2f} | {p['ratio']:.2f}x of two forwards | | |")
        print(f"| predict | {L * T} resid_pre | field.predict (runs cached) | {statistics.median(p['predict_cached_run_seconds']):.2f} | "
              f"{min(p['predict_cached_run_seconds']):.2f} | {max(p['predict_cached_run_seconds']):.2f} | | | |")

    print("\nlight cone (token-layers; one full forward of the batch = "
          f"{results['workloads']['resid_pre']['one_forward_token_layers']}):")
    for name in ("resid_pre", "attn_head"):
        w = results["workloads"][name]
        did = w["fc_cost"]["token_layers"]
        print(f"  {name}: TransformerLens {w['tl_token_layers']}  floor {w['floor_token_layers']} "
              f"({w['floor_token_layers'] / w['tl_token_layers']:.2%} of TL)  fieldcheck {did} "
              f"({did / w['tl_token_layers']:.2%} of TL, {did / max(w['floor_token_layers'], 1):.2f}x the floor; "
              f"{w['fc_cost']['rows']} rows, {w['fc_cost']['rows_skipped']} skipped, {w['fc_cost']['chunks']} chunks)")
    for name in ("resid_pre", "attn_head"):
        mem = results["workloads"][name].get("memory")
        if mem and "peak_rss" in mem.get("tl", {}) and "peak_rss" in mem.get("fc", {}):
            print(f"  memory {name}: peak RSS fieldcheck/TransformerLens = "
                  f"{mem['fc']['peak_rss'] / mem['tl']['peak_rss']:.2f} (sweep deltas "
                  f"{mem['fc']['delta'] / MiB:.0f} MiB vs {mem['tl']['delta'] / MiB:.0f} MiB; "
                  f"TL probe on layers {mem['tl']['layers']})")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    w1r = results["workloads"]["resid_pre"]
    max_diff = max(results["workloads"][n]["max_abs_diff"] for n in ("resid_pre", "attn_head"))
    print(f"speedup_vs_transformer_lens={w1r['speedup_median_of_ratios']:.2f} max_abs_diff={max_diff:.3g}")


if __name__ == "__main__":
    main()
