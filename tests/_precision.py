"""Every experiment on one model in one dtype, and its error against float32: the harness of
tests/test_half_precision.py and benchmarks/bench_half_precision.py (which prints the table in
docs/models.md, "Half precision").

Each experiment runs with small arguments (a few examples and sites, few steps) and gives one
array, its main output. The error of a half-precision run is, for outputs in the metric's units
(patch effects, predictions, circuit metrics: ``"metric"``), the RMS of ``x_half - x_float32`` as a
fraction of the RMS clean-corrupt gap of the metric in float32 (0.01: one percent of the effect
the data set measures); for other outputs (gradients, Green functions, attention, scores:
``"tensor"``) ``||x_half - x_float32|| / ||x_float32||``; for ``discover_circuit`` ``1 - Jaccard``
of the parts. An experiment that refuses the model by name (a ``FieldcheckError``) must refuse it
in every dtype, and is reported as refused (none does on the three real models, Gemma 3's
post-norm DLA and edge circuits included).
"""
from __future__ import annotations

import gc
import time

import numpy as np
import torch

import fieldcheck as fc
from fieldcheck.errors import FieldcheckError, NumericalError
from fieldcheck.sites import attn_head, mlp_out, resid_pre


def _a(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def experiments(L: int, H: int) -> dict:
    """name -> (run(field, ds), the array compared, its kind: "metric", "tensor" or "set")."""
    mid = L // 2
    sites = resid_pre([0, mid, L - 1], ["S2", "END"])
    heads = fc.Circuit(nodes=[f"L{L - 1}.H0@END", f"L{L - 1}.H1@END"])
    eff = lambda r: r.effect  # noqa: E731
    return {
        "metric_values": (lambda f, ds: f.metric_values(ds), _a, "metric"),
        "patch resid_pre": (lambda f, ds: f.patch(ds, sites, progress=False), eff, "metric"),
        "patch attn_head": (lambda f, ds: f.patch(ds, attn_head(L - 1, "all", "END"), progress=False), eff, "metric"),
        "sensitivity": (lambda f, ds: f.sensitivity(ds), lambda r: _a(r.resid), "tensor"),
        "predict (gradient)": (lambda f, ds: f.predict(ds, sites), eff, "metric"),
        "predict (order 2)": (lambda f, ds: f.predict(ds, resid_pre(mid, "S2"), order=2, alpha=0.1), eff, "metric"),
        "predict (integrated)": (lambda f, ds: f.predict(ds, resid_pre(mid, "S2"), method="integrated", steps=2),
                                 eff, "metric"),
        "scale_sweep": (lambda f, ds: f.scale_sweep(ds, resid_pre(mid, "END"), alphas=[0.25, 1.0]), eff, "metric"),
        "select_sites": (lambda f, ds: f.select_sites(ds, 2, candidates=sites, method="gradient"),
                         lambda r: r.predicted, "metric"),
        "green": (lambda f, ds: f.green(ds, resid_pre(mid, "S2")), lambda r: _a(r.response), "tensor"),
        "propagate": (lambda f, ds: f.propagate(ds, resid_pre(mid, "S2")), lambda r: _a(r.response), "tensor"),
        "green_slice": (lambda f, ds: f.green_slice(ds, resid_pre(mid, "S2"), resid_pre(L - 1, "END"), rank=2,
                                                    n_iter=1, oversample=2, n_probe=2), lambda r: _a(r.S), "tensor"),
        "transfer": (lambda f, ds: f.transfer(ds, resid_pre(mid, "S2")), lambda r: r.after - r.before, "metric"),
        "path_patch": (lambda f, ds: f.path_patch(ds, mlp_out(mid, "END"), "final"), eff, "metric"),
        "attention": (lambda f, ds: f.attention(ds), lambda r: r.weights, "tensor"),
        "head_scores": (lambda f, ds: f.head_scores(n=2, length=8),
                        lambda r: np.concatenate([_a(v).ravel() for _, v in sorted(r.scores.items())]), "tensor"),
        "dla": (lambda f, ds: f.dla(ds), lambda r: r.values, "metric"),
        "logit_lens": (lambda f, ds: f.logit_lens(ds), lambda r: r.logit_diff, "metric"),
        "evaluate_circuit": (lambda f, ds: f.evaluate_circuit(ds, heads), lambda r: r.circuit, "metric"),
        "edge_scores (eap-ig)": (lambda f, ds: f.edge_scores(ds, method="eap-ig", steps=2), lambda r: r.scores,
                                 "tensor"),
        "discover_circuit": (lambda f, ds: f.discover_circuit(ds, 20, method="eap"), lambda r: set(r.parts), "set"),
        "faithfulness_curve": (lambda f, ds: f.faithfulness_curve(ds, sizes=[20], method="eap"),
                               lambda r: r.circuit, "metric"),
        "minimality": (lambda f, ds: f.minimality(ds, heads), lambda r: r.without, "metric"),
    }


def run_all(model, n: int = 4, only=None) -> dict:
    """``{"values": {experiment: array, set, or the FieldcheckError's type name}, "seconds": ...,
    "gap": the metric's clean-corrupt gap per example}``."""
    f = fc.Field(model)
    ds = fc.datasets.ioi(model, n=n, seed=1)
    out, secs = {}, {}
    gap = _a(f.metric_values(ds, which="clean")) - _a(f.metric_values(ds, which="corrupt"))
    for name, (run, pick, _) in experiments(f.n_layers, f.n_heads).items():
        if only is not None and name not in only:
            continue
        t = time.perf_counter()
        try:
            out[name] = pick(run(f, ds))
        except FieldcheckError as e:
            out[name] = f"refused: {type(e).__name__}"
        secs[name] = time.perf_counter() - t
    del f
    gc.collect()
    return {"values": out, "seconds": secs, "gap": gap}


def error(half, ref, gap=None) -> float:
    """Error of a half-precision output against float32 (see the module doc): relative to the
    RMS of ``gap`` (the float32 clean-corrupt gap) when given, else to the output's own norm."""
    if isinstance(ref, str) or isinstance(half, str):
        return 0.0 if isinstance(ref, str) and isinstance(half, str) and half == ref else float("inf")
    if isinstance(ref, set):
        return 1.0 - len(ref & half) / max(1, len(ref | half))
    ref, half = np.asarray(ref, float), np.asarray(half, float)
    if ref.shape != half.shape or not np.isfinite(half).all():
        return float("inf")
    if gap is not None:
        rms = float(np.sqrt(np.mean(np.square(gap))))
        return float(np.sqrt(np.mean(np.square(half - ref))) / rms) if rms > 0 else float("inf")
    scale = np.linalg.norm(ref)
    return float(np.linalg.norm(half - ref) / scale) if scale > 0 else float(np.linalg.norm(half))


def errors(spec: str, dtypes=("bfloat16", "float16"), n: int = 4, only=None) -> dict:
    """``{dtype: {experiment: error}}`` for one model, plus ``seconds`` per dtype; a dtype in which
    the data set's own clean/corrupted runs overflow gives ``{dtype: {"overflow": the
    NumericalError's message}}`` (Gemma 3 in float16)."""
    ref = run_all(fc.load_model(spec, dtype="float32"), n, only)
    gc.collect()
    kinds = {k: v[2] for k, v in experiments(4, 4).items()}
    out = {"seconds": {"float32": ref["seconds"]}, "gap_rms": float(np.sqrt(np.mean(np.square(ref["gap"]))))}
    for dt in dtypes:
        try:
            got = run_all(fc.load_model(spec, dtype=dt), n, only)
        except NumericalError as e:   # the data set's own runs overflow: no experiment can run
            out[dt], out["seconds"][dt] = {"overflow": str(e)}, {}
            gc.collect()
            continue
        gc.collect()
        out[dt] = {k: error(got["values"].get(k, "missing"), v, ref["gap"] if kinds[k] == "metric" else None)
                   for k, v in ref["values"].items()}
        out["seconds"][dt] = got["seconds"]
    out["refused"] = sorted(k for k, v in ref["values"].items() if isinstance(v, str))
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out
