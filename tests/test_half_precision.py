"""Half precision: every experiment runs in bfloat16 and float16 (statistics in float64), within the
tolerances against float32 that docs/models.md documents for the three real models; a NaN or an
overflow is an error that names the hook where the run stopped being finite, never a number."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import fieldcheck as fc
from _precision import error, errors, experiments, run_all
from fieldcheck.errors import NumericalError
from fieldcheck.sites import mlp_out, resid_pre

DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"


@pytest.fixture(scope="module")
def tiny_ref():
    return run_all(fc.load_model("tiny-llama:layers=3", dtype="float32"))["values"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_every_experiment_runs_in_half_precision_with_float64_statistics(dtype, tiny_ref):
    m = fc.load_model("tiny-llama:layers=3", dtype=dtype)
    got = run_all(m)["values"]
    assert set(got) == set(experiments(3, 4)) and not any(isinstance(v, str) for v in got.values())
    errs = {k: error(got[k], v) for k, v in tiny_ref.items()}
    # a random tiny model's logit differences are small, so relative errors are large-ish: this
    # bounds gross failures; the real models' tolerances are checked below
    assert all(np.isfinite(e) and e < 0.5 for e in errs.values()), errs
    f = fc.Field(m)
    ds = fc.datasets.ioi(m, n=4, seed=1)
    p = f.patch(ds, resid_pre(1, "END"), progress=False)
    assert p.values.dtype == np.float64 and p.effect.dtype == np.float64
    res = fc.assert_effect(p, fc.effect > -100, decide="point")
    assert all(isinstance(r.estimate, float) for r in res)


def _overflowing(scale: float):
    """A tiny Llama whose layer-1 MLP output is scaled by ``scale`` (float16 overflows past 65504)."""
    from fieldcheck.testing import tiny_model

    m = tiny_model("llama", n_layers=3, dtype=torch.float16)
    from fieldcheck.field.arch import functional_model

    fm = functional_model(m)
    with torch.no_grad():
        fm.blocks[1]["mlp"][2][0].mul_(scale)
    return m


def test_a_float16_overflow_in_the_cached_runs_names_its_hook():
    m = _overflowing(1e6)
    f = fc.Field(m)
    ds = fc.datasets.ioi(m, n=4, seed=1)
    with pytest.raises(NumericalError) as e:
        f.patch(ds, resid_pre(0, "END"), progress=False)
    msg = str(e.value)
    assert re.search(r"from blocks\.2\.hook_resid_pre on", msg), msg   # after block 1's MLP
    assert "float16 overflowed (it holds at most 6.55e+04" in msg and "bfloat16" in msg


def test_a_float16_overflow_of_one_patch_names_the_site_and_the_hook():
    m = fc.load_model("tiny-llama:layers=3", dtype="float16")
    f = fc.Field(m)
    ds = fc.datasets.ioi(m, n=4, seed=1)
    big = torch.full((m.cfg.d_model,), 3e4)
    ok = f.patch(ds, mlp_out(2, "END"), source=fc.sources.steer(big * 0), progress=False)
    assert np.isfinite(ok.values).all()
    with pytest.raises(NumericalError) as e:
        f.patch(ds, resid_pre(1, "END"), source=fc.sources.steer(big), alpha=3.0, progress=False)
    msg = str(e.value)
    assert "after patching L1.resid_pre@END" in msg and "float16 overflowed" in msg, msg
    assert re.search(r"from blocks\.1\.hook_\w+ on", msg), msg


def test_nonfinite_gradients_name_the_highest_layer():
    from fieldcheck.field.precision import check_grads

    g = {"resid": torch.zeros(4, 2, 3, 8, dtype=torch.float16)}
    g["resid"][2, 1, 0, 0] = float("inf")
    g["resid"][1, 1, 0, 0] = float("nan")
    with pytest.raises(NumericalError, match=r"gradient at blocks\.2\.hook_resid_pre on \(example\(s\) 1, float16\)"):
        check_grads(g, "dm/dphi", torch.float16)
    check_grads({"resid": torch.ones(4, 2, 3, 8)}, "dm/dphi", torch.float32)   # finite: no error


# --- the three real models against the documented tolerances -----------------------------------
def documented_tolerances() -> dict:
    """``{experiment: tolerance}`` for bfloat16 from docs/models.md ("Half precision" table)."""
    text = DOCS.read_text()
    sec = text[text.index("## Half precision"):]
    sec = sec[:sec.index("\n## ", 5)] if "\n## " in sec[5:] else sec
    out = {}
    for line in sec.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] in experiments(4, 4) and re.fullmatch(r"[0-9.e-]+", cells[-1]):
            out[cells[0]] = float(cells[-1])
    return out


def test_the_documented_tolerances_cover_every_experiment():
    assert set(documented_tolerances()) == set(experiments(4, 4))


# one experiment per path through the code: the cached runs, the light-cone engine, a backward
# pass, a JVP, the attention from the cache, the edge forward with its backward (every experiment on
# the three models, with 4 examples, is benchmarks/bench_half_precision.py: docs/models.md)
PATHS = ("metric_values", "patch resid_pre", "sensitivity", "green", "attention", "edge_scores (eap-ig)")


@pytest.mark.pretrained
@pytest.mark.slow
@pytest.mark.parametrize("spec", ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"])
def test_bfloat16_on_the_real_models_is_within_the_documented_tolerances(spec):
    tol = documented_tolerances()
    got = errors(spec, dtypes=("bfloat16",), n=2, only=PATHS)
    assert set(got["bfloat16"]) == set(PATHS)
    over = {k: (e, tol[k]) for k, e in got["bfloat16"].items() if not e <= tol[k]}
    assert not over, over
    assert not got["refused"], got["refused"]   # Gemma 3 too: its post-norm edges are scored
