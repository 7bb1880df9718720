"""Per-model expectations: ``@pytest.mark.fc_xfail_on(model, reason=..., strict=True)``, run with
pytester on two tiny models (``--fc-models tiny-gpt2,tiny-llama``) and on one (``--fc-model``)."""
from __future__ import annotations

import json

import pytest

# C extensions cannot be imported twice; an in-process pytester run drops what it first imported
import matplotlib
import numpy  # noqa: F401

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402,F401
import scipy.special  # noqa: E402,F401
import scipy.stats  # noqa: E402,F401
import statsmodels.stats.multitest  # noqa: E402,F401
import torch  # noqa: E402,F401
import transformer_lens.model_bridge  # noqa: E402,F401

import fieldcheck.claim.statistics  # noqa: E402,F401

pytest_plugins = "pytester"

CLAIMS = '''
import pytest
from fieldcheck.claim.result import ClaimFailed, ClaimResult, record


def claim(est, bar=0.8):
    r = record(ClaimResult(statistic="recovered", estimate=est, interval=(est - 0.05, est + 0.05),
                           op=">", bar=bar, passed=est > bar, n=50, p_value=0.001 if est > bar else 0.9,
                           assertion="assert_demo"))
    if not est > bar:
        raise ClaimFailed(r.summary(), [r])


VALUE = {"tiny-gpt2": 0.95, "tiny-llama": 0.4}


@pytest.mark.fc_xfail_on("tiny-llama", reason="measured: 0.40 on tiny-llama")
def test_holds_on_gpt2_only(fc_model, fc_config):
    claim(VALUE[fc_config.model])


@pytest.mark.fc_xfail_on("tiny-gpt2", reason="wrongly expected to fail")
def test_passes_everywhere(fc_model, fc_config):
    claim(0.95)


@pytest.mark.fc_xfail_on(["some-other-model", "tiny-llama"], reason="list form", strict=False)
def test_not_strict(fc_model, fc_config):
    claim(0.95)


@pytest.mark.fc_xfail_on("some-other-model", reason="not in this run")
def test_unrelated_model(fc_model):
    claim(0.9)
'''


def _run(pytester, *args):
    pytester.makepyfile(test_claims=CLAIMS)
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:xdist", "-rxX",
                                       "--fc-report-json", "r.json", *args)
    path = pytester.path / "r.json"
    return res, (json.loads(path.read_text()) if path.exists() else None)


def test_xfail_on_one_model_of_a_multi_model_run(pytester):
    res, rep = _run(pytester, "--fc-models", "tiny-gpt2,tiny-llama")
    outcomes = {c["id"].split("::")[-1]: c["outcome"] for c in rep["claims"]}
    assert outcomes == {
        "test_holds_on_gpt2_only[tiny-gpt2]": "passed",
        "test_holds_on_gpt2_only[tiny-llama]": "xfailed",       # fails there, as expected
        "test_passes_everywhere[tiny-gpt2]": "failed",          # strict: an unexpected pass fails
        "test_passes_everywhere[tiny-llama]": "passed",
        "test_not_strict[tiny-gpt2]": "passed",
        "test_not_strict[tiny-llama]": "xpassed",               # strict=False: an xpass is allowed
        "test_unrelated_model[tiny-gpt2]": "passed",
        "test_unrelated_model[tiny-llama]": "passed",
    }
    res.assert_outcomes(passed=5, failed=1, xfailed=1, xpassed=1)
    assert res.ret == 1
    out = res.stdout.str()
    assert "on tiny-llama: measured: 0.40 on tiny-llama" in out
    assert "[XPASS(strict)] on tiny-gpt2: wrongly expected to fail" in out
    grid = {r["claim"].split("::")[-1]: [c["outcome"] for c in r["cells"]] for r in rep["models"]["rows"]}
    assert grid["test_holds_on_gpt2_only"] == ["passed", "xfailed"]


def test_xfail_on_the_session_model(pytester):
    res, rep = _run(pytester, "--fc-model", "tiny-llama", "-k", "holds or unrelated")
    res.assert_outcomes(passed=1, xfailed=1)
    assert res.ret == 0
    res, rep = _run(pytester, "--fc-model", "tiny-gpt2", "-k", "holds or unrelated")
    res.assert_outcomes(passed=2)


@pytest.mark.parametrize("marker, needle", [
    ("@pytest.mark.fc_xfail_on(reason='x')", "needs at least one model"),
    ("@pytest.mark.fc_xfail_on('tiny-gpt2', because='x')", "unknown argument"),
    ("@pytest.mark.fc_xfail_on(3)", "non-empty string"),
])
def test_bad_marker_is_a_usage_error(pytester, marker, needle):
    pytester.makepyfile(test_bad=f"import pytest\n\n{marker}\ndef test_a(fc_model):\n    pass\n")
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:xdist", "--fc-model", "tiny-gpt2")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert needle in res.stderr.str() + res.stdout.str()
