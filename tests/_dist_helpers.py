"""Shared by test_shards and test_distributed: claim files on tiny models saved to folders, runs of
pytest in a subprocess, and the comparison of two reports without their volatile parts."""
from __future__ import annotations

import json
from pathlib import Path

# two claim files on the session's model(s): the gate's paired tests, a failing claim, a test that
# is not a claim; with FIELDCHECK_TEST_KILL set, test_dies kills the Ray worker running it (once
# when the marker file does not exist yet, every time when FIELDCHECK_TEST_KILL=always)
MODEL_CLAIMS = {
    "test_mlp": '''
import pytest
import fieldcheck as fc
from fieldcheck import effect
from fieldcheck.sites import attn_out, mlp_out


@pytest.fixture(scope="module")
def ind(fc_model):
    return fc.datasets.induction(fc_model, n=24, seed=0, length=6)


def test_moves(field, ind):
    fc.assert_effect(field.patch(ind, mlp_out(0, "END"), direction="noise"), effect > -50, decide="point")


def test_improves(field, ind):
    fc.assert_effect(field.patch(ind, mlp_out(0, "END")), effect > -50, decide="point")


def test_fails_everywhere(field, ind):
    fc.assert_effect(field.patch(ind, attn_out(1, "END")), effect > 50, decide="point")


def test_no_model():
    assert True
''',
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


def tiny_folders(root: Path) -> dict[str, str]:
    """A tiny GPT-2 saved to a folder and a copy whose layer-0 MLP output is zeroed."""
    import torch

    from fieldcheck.testing import tiny_hf_model

    out = {}
    for name, scale in (("base", 1.0), ("pert", 0.0)):
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
