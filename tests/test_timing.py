"""Where a run's time goes: fixture setup times counted per claim file (report and terminal)."""
from __future__ import annotations

import json

import pytest

import matplotlib
import numpy  # noqa: F401

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402,F401
import scipy.special  # noqa: E402,F401
import scipy.stats  # noqa: E402,F401
import statsmodels.stats.multitest  # noqa: E402,F401

import fieldcheck.claim.statistics  # noqa: E402,F401

pytest_plugins = "pytester"

HELPER = '''
import time
import pytest
from fieldcheck.claim.result import ClaimResult, record


def claim():
    record(ClaimResult(statistic="r2", estimate=0.95, interval=(0.9, 1.0), op=">", bar=0.9, passed=True,
                       n=50, p_value=0.001, assertion="assert_demo"))
'''
CONFTEST = '''
import time
import pytest


@pytest.fixture(scope="session")
def shared():
    time.sleep(0.3)
    return 1
'''
SLOW = HELPER + '''

@pytest.fixture(scope="module")
def sweep(shared):
    time.sleep(0.6)
    return 2


@pytest.mark.fieldcheck
def test_a(sweep):
    claim()


@pytest.mark.fieldcheck
def test_b(sweep):
    time.sleep(0.2)
    claim()
'''
FAST = HELPER + '''

@pytest.mark.fieldcheck
def test_c(shared):
    claim()
'''


@pytest.mark.slow   # subprocesses or plugin runs: make test and CI, not make test-quick
@pytest.mark.parametrize("xdist", [False, True])
def test_fixture_time_is_counted_per_claim_file(pytester, xdist):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_slow=SLOW, test_fast=FAST)
    args = ["-p", "no:cacheprovider", "--fc-report-json", "r.json", "--fc-correction", "none"]
    res = (pytester.runpytest_subprocess(*args, "-n", "2") if xdist
           else pytester.runpytest_inprocess(*args, "-p", "no:xdist"))
    res.assert_outcomes(passed=3)
    timing = json.loads((pytester.path / "r.json").read_text())["timing"]
    files = timing["files"]
    slow, fast = files["test_slow.py"], files["test_fast.py"]
    assert slow["claims"] == 2 and fast["claims"] == 1
    assert 0.55 <= slow["fixtures"]["sweep"] <= 2.0 and set(slow["fixtures"]) == {"sweep"}
    assert slow["seconds"] >= slow["fixtures_s"] + 0.15            # the module fixture and test_b's own 0.2 s
    (shared,) = [k for k in timing["session_fixtures"] if k == "shared"]
    assert 0.25 <= timing["session_fixtures"][shared]["seconds"] <= 2.0
    # the session fixture is counted once, apart, not in whichever file first used it
    assert fast["seconds"] < 0.25 and slow["seconds"] < 0.6 + 0.2 + 0.25 + 1.0
    out = res.stdout.str()
    assert "time by claim file" in out and "test_slow.py:" in out and "sweep" in out
    assert "session fixtures:" in out
