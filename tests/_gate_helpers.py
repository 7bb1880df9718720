"""Shared by test_gating, test_shards, test_distributed and benchmarks/bench_ray.py: the gate's claims
on tiny models saved to folders (and a perturbed SmolLM2), runs of pytest, and the comparison of
two reports without their volatile parts."""
from __future__ import annotations

import json
from pathlib import Path

# the gate's claims on an ``ind`` fixture (an induction set): noising layer 0's MLP moves the logit
# difference on the base model and not on the perturbed one (a regression), denoising it improves,
# one claim fails on every model, one test is not a claim
GATE_CLAIMS = '''

def test_moves(field, ind):
    fc.assert_effect(field.patch(ind, mlp_out(0, "END"), direction="noise"), effect > -50,
                     decide="point")


def test_improves(field, ind):
    fc.assert_effect(field.patch(ind, mlp_out(0, "END")), effect > -50, decide="point")


def test_fails_everywhere(field, ind):
    """Fails on every model (not a regression); its traceback must not keep the model alive."""
    fc.assert_effect(field.patch(ind, attn_out(1, "END")), effect > 50, decide="point")


def test_no_model():
    assert True
'''

# two claim files on the session's model(s): the gate's claims, and with FIELDCHECK_TEST_KILL set,
# test_dies kills the Ray worker running it (once when the marker file does not exist yet, every
# time when FIELDCHECK_TEST_KILL=always)
MODEL_CLAIMS = {
    "test_mlp": '''
import pytest
import fieldcheck as fc
from fieldcheck import effect
from fieldcheck.sites import attn_out, mlp_out


@pytest.fixture(scope="module")
def ind(fc_model):
    return fc.datasets.induction(fc_model, n=24, seed=0, length=6)
''' + GATE_CLAIMS,
    "test_resid": '''
import os
import signal
import time
from pathlib import Path

import pytest
import fieldcheck as fc
from fieldcheck import effect, mean
from fieldcheck.sites import resid_pre


@pytest.fixture(scope="module")
def ind(fc_model):
    return fc.datasets.induction(fc_model, n=24, seed=1, length=6)


def test_early_end(field, ind):
    fc.assert_effect(field.patch(ind, resid_pre(0, "END")), effect > -50, decide="point")


def test_dies(field, ind):
    how = os.environ.get("FIELDCHECK_TEST_KILL")
    if how and os.environ.get("FIELDCHECK_RAY_TASK"):
        marker = Path(os.environ["FIELDCHECK_TEST_MARKER"])
        if how == "always" or not marker.exists():
            marker.touch()
            os.kill(int(os.environ["FIELDCHECK_RAY_PARENT"]), signal.SIGKILL)   # the Ray worker
            time.sleep(60)
    fc.assert_prefers(field.metric_values(ind, "logit_diff", "clean"), mean > -100)
''',
}


def tiny_folders(root: Path, names=("base", "pert")) -> dict[str, str]:
    """A tiny GPT-2 saved to a folder (``base``), an identical copy (``same``) and a copy whose
    layer-0 MLP output is zeroed (``pert``): the ``names`` asked for."""
    import torch

    from fieldcheck.testing import tiny_hf_model

    out = {}
    for name, scale in ((n, {"base": 1.0, "same": 1.0, "pert": 0.0}[n]) for n in names):
        hf, tok = tiny_hf_model("gpt2", n_layers=2, d_model=64, n_heads=4, seed=0)
        with torch.no_grad():
            hf.transformer.h[0].mlp.c_proj.weight.mul_(scale)
            hf.transformer.h[0].mlp.c_proj.bias.mul_(scale)
        hf.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = str(root / name)
    return out


def run(pytester, *args, report: str = "r.json", inprocess: bool = False):
    """pytest (in a subprocess, or in this process) without xdist and cache, writing the JSON
    report ``report``; returns (result, report dict or None)."""
    path = pytester.path / report
    if path.exists():
        path.unlink()
    go = pytester.runpytest_inprocess if inprocess else pytester.runpytest_subprocess
    res = go("-p", "no:cacheprovider", "-p", "no:xdist", f"--rootdir={pytester.path}",
             "--fc-report-json", report, *args)
    return res, (json.loads(path.read_text()) if path.exists() else None)


def same_report(a: dict, b: dict) -> list[str]:
    """The members in which two reports differ, apart from ``timing`` and the ``shard`` member."""
    drop = ("timing", "shard")
    keys = sorted((set(a) | set(b)) - set(drop))
    return [k for k in keys if a.get(k) != b.get(k)]


def perturbed_smollm2(folder: Path) -> Path:
    """SmolLM2-135M with the attention output projections of layers 24-27 scaled by 0.3, saved to
    ``folder`` with the original's tokenizer files."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from fieldcheck.models.loading import pull

    src, _ = pull("smollm2-135m")
    hf = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    with torch.no_grad():
        for layer in range(24, 28):
            hf.model.layers[layer].self_attn.o_proj.weight.mul_(0.3)
    hf.save_pretrained(folder)
    del hf
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (src / f).exists():
            shutil.copy(src / f, folder / f)
    return folder
