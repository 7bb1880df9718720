"""End-to-end tests of the pytest plugin: small claim files run with ``pytester``."""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET

import pytest

# Modules with C extensions cannot be imported twice in one process, and in-process pytester
# runs drop the modules first imported inside them: import them out here first.
import matplotlib
import numpy  # noqa: F401

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402,F401

try:  # fieldcheck.claim.assertions may import torch inside a run: import it out here first
    import torch  # noqa: F401
except ImportError:  # pragma: no cover
    pass

import fieldcheck.claim.statistics  # noqa: F401

# the scipy/statsmodels stack (C extensions cannot be imported twice, and an in-process pytester
# run drops the modules first imported inside it): import it out here
import scipy.special  # noqa: E402,F401
import scipy.stats  # noqa: E402,F401
import statsmodels.stats.multitest  # noqa: E402,F401
from fieldcheck.reports.schema import strip_volatile

pytest_plugins = "pytester"

# A claim helper that records ClaimResults the way fieldcheck.claim.assertions does.
HELPER = '''
import pytest
from fieldcheck.claim.result import ClaimResult, ClaimFailed, record

def claim(stat, est, bar, p, op=">", plot=None):
    ok = est > bar if op == ">" else est < bar
    r = record(ClaimResult(statistic=stat, estimate=est, interval=(est - 0.05, est + 0.05), op=op,
                           bar=bar, passed=ok, n=50, p_value=p, assertion="assert_demo",
                           plot=plot))
    if not ok:
        raise ClaimFailed(r.summary(), [r])
'''

CLAIMS = HELPER + '''
@pytest.mark.fieldcheck(seed=3)
def test_strong():
    claim("r2", 0.95, 0.9, 0.001, plot={"kind": "heatmap", "values": [[1, 2], [3, 4]]})

@pytest.mark.fieldcheck
def test_weak():
    claim("recovered", 0.85, 0.8, 0.03)

@pytest.mark.fieldcheck
def test_fail():
    claim("rate", 0.5, 0.8, 0.9)

@pytest.mark.fieldcheck
def test_boom():
    raise ValueError("boom")

def test_not_a_claim():
    assert True
'''

ALL_PASS = HELPER + '''
@pytest.mark.fieldcheck
def test_a():
    claim("r2", {a}, 0.9, 0.001)

@pytest.mark.fieldcheck
def test_b():
    claim("recovered", 0.85, 0.8, 0.04)

@pytest.mark.fieldcheck
def test_c():
    claim("loss", 0.1, 0.2, 0.03, op="<")
'''


def _json(pytester, name="r.json") -> dict:
    return json.loads((pytester.path / name).read_text())


@pytest.fixture(autouse=True)
def _no_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)


def test_pass_fail_error_summary_json_junit_html(pytester):
    pytester.makepyfile(test_claims=CLAIMS)
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-report-json", "r.json",
                             "--fc-report-html", "out/r.html", "--junitxml", "j.xml")
    assert res.ret == 1
    out = res.stdout.str()
    # test_weak passed on its own and fails after the correction: pytest's last line says so
    res.stdout.fnmatch_lines(["*= 2 failed, 2 passed, 1 failed after correction in *"])
    assert "fieldcheck claims" in out
    res.stdout.fnmatch_lines(["*test_strong*r2*0.95*[[]0.9, 1[]]*> 0.9*0.001*0.003*50*PASS*",
                              "*test_weak*recovered*0.85*FAIL(adj)*",
                              "*FAIL after the bonferroni correction*",
                              "*test_claims.py::test_weak*"])
    rep = _json(pytester)
    assert rep["schema_version"] == 1
    ids = [c["id"] for c in rep["claims"]]
    assert ids == sorted(ids) and "test_claims.py::test_not_a_claim" not in ids
    by = {c["id"].split("::")[1]: c for c in rep["claims"]}
    assert by["test_boom"]["outcome"] == "error" and "ValueError: boom" in by["test_boom"]["error"]
    assert by["test_fail"]["outcome"] == "failed" and "needs > 0.8" in by["test_fail"]["error"]
    assert by["test_strong"]["outcome"] == "passed" and by["test_strong"]["marker"] == {"seed": 3}
    assert by["test_weak"]["failed_after_correction"] is True
    r = by["test_weak"]["results"][0]
    assert r["p_value"] == 0.03 and r["p_adjusted"] == pytest.approx(0.09)
    assert r["family_size"] == 3
    assert r["passed"] is True and r["passed_corrected"] is False
    assert rep["summary"]["failed_after_correction"] == ["test_claims.py::test_weak"]
    assert rep["summary"]["outcomes"]["error"] == 1 and rep["summary"]["ok"] is False
    for key in ("fieldcheck", "torch", "transformer_lens", "seed", "alpha", "correction",
                "decide", "device", "dtype", "model", "git_commit"):
        assert key in rep["run"]
    assert set(rep["timing"]) >= {"started", "finished", "duration_s", "claims"}
    # JUnit: per-claim properties
    root = ET.parse(pytester.path / "j.xml").getroot()
    case = next(tc for tc in root.iter("testcase") if tc.get("name") == "test_strong")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert "r2 = 0.95" in props["fieldcheck[0]"]
    assert json.loads(props["fieldcheck"])["results"][0]["statistic"] == "r2"
    html = (pytester.path / "out" / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_correction_alone_fails_the_run_and_none_does_not(pytester):
    pytester.makepyfile(test_c=ALL_PASS.format(a=0.95))
    res = pytester.runpytest("-p", "no:cacheprovider")
    assert res.ret == 1  # p = 0.001, 0.04, 0.03 -> bonferroni 0.003, 0.12, 0.09
    res.stdout.fnmatch_lines(["*2 claim(s) passed on their own but FAIL after the bonferroni correction over 3 "
                              "claim(s) in 1 family (family = file: the claims of one test file; m = 3 claims "
                              "per family) (alpha=0.05):*",
                              "*= 1 passed, 2 failed after correction in *"])
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-correction", "holm")
    assert res.ret == 1  # holm 0.003, 0.06, 0.06
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-correction", "none")
    assert res.ret == 0
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-correction", "bh")
    assert res.ret == 0  # bh: 0.003, 0.04, 0.04


def test_ini_options_and_command_line_override(pytester):
    pytester.makeini("[pytest]\nfc_correction = none\nfc_seed = 7\nfc_alpha = 0.01\n"
                     "fc_report_json = ini.json\n")
    pytester.makepyfile(test_c=ALL_PASS.format(a=0.95))
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-seed", "11")
    rep = _json(pytester, "ini.json")
    assert rep["run"]["correction"] == "none" and rep["run"]["seed"] == 11
    assert rep["run"]["alpha"] == 0.01
    # with alpha 0.01 nothing is re-decided by the plugin (correction none): exit 0
    assert res.ret == 0


@pytest.mark.parametrize("args, needle", [
    (["--fc-compare-fail", "bogus:3"], "--fc-compare-fail 'bogus:3' is not a valid expression"),
    (["--fc-compare-fail", "estimate:ten%"], "'estimate:ten%'"),
    (["--fc-compare=nope"], "--fc-compare 'nope': no baseline of that name"),
    (["--fc-compare"], "no baseline saved yet"),
    (["--fc-compare", "bad.json"], "is not valid JSON"),
    (["--fc-compare", "other.json"], "not a fieldcheck report"),
    (["--fc-alpha", "2"], "--fc-alpha '2'"),
    (["--fc-correction", "sidak"], "--fc-correction 'sidak' is unknown"),
    (["--fc-correction-family", "module"], "--fc-correction-family 'module' is unknown"),
    (["--fc-decide", "maybe"], "--fc-decide 'maybe'"),
    (["--fc-device", "tpu"], "--fc-device 'tpu' is unknown"),
    (["--fc-save", "a/b"], "--fc-save 'a/b' is not a usable baseline name"),
])
def test_usage_errors_exit_4(pytester, args, needle):
    pytester.makepyfile(test_c=ALL_PASS.format(a=0.95))
    (pytester.path / "bad.json").write_text("{not json")
    (pytester.path / "other.json").write_text('{"hello": 1}')
    res = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert res.ret == 4
    assert needle in res.stderr.str()


def test_save_compare_and_compare_fail(pytester):
    pytester.makepyfile(test_c=ALL_PASS.format(a=0.95))
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-correction", "none", "--fc-save", "v1")
    assert res.ret == 0
    base = pytester.path / ".fieldcheck" / "baselines"
    assert (base / "LATEST").read_text().strip() == "v1"
    saved = json.loads((base / "v1.json").read_text())
    assert [c["id"] for c in saved["claims"]] == ["test_c.py::test_a", "test_c.py::test_b",
                                                  "test_c.py::test_c"]
    assert not [p for p in base.iterdir() if p.name.endswith(".tmp")]

    # a candidate whose r2 dropped from 0.95 to 0.92: still passes its bar of 0.9
    pytester.makepyfile(test_c=ALL_PASS.format(a=0.92))
    common = ["-p", "no:cacheprovider", "--fc-correction", "none", "--fc-report-json", "r.json"]
    res = pytester.runpytest(*common, "--fc-compare")
    assert res.ret == 0
    res.stdout.fnmatch_lines(["*baseline*delta*", "*test_a*0.92*0.95*-0.03*"])
    comp = _json(pytester)["comparison"]
    row = next(r for r in comp["rows"] if r["claim_id"] == "test_c.py::test_a")
    assert row["delta"] == pytest.approx(-0.03) and row["baseline_estimate"] == 0.95

    res = pytester.runpytest(*common, "--fc-compare=v1", "--fc-compare-fail", "estimate:10%")
    assert res.ret == 0
    res = pytester.runpytest(*common, "--fc-compare=v1", "--fc-compare-fail", "estimate:2%")
    assert res.ret == 1
    res.stdout.fnmatch_lines(["*1 regression(s) against the baseline*",
                              "*test_c.py::test_a: r2 0.95 -> 0.92*estimate:2%*"])
    assert _json(pytester)["comparison"]["regressions"][0].startswith("test_c.py::test_a")
    res = pytester.runpytest(*common, "--fc-compare", str(base / "v1.json"),
                             "--fc-compare-fail", "estimate:0.05")
    assert res.ret == 0
    res = pytester.runpytest(*common, "--fc-compare=v1", "--fc-compare-fail", "estimate:0.01")
    assert res.ret == 1
    # "passed": a claim that passed in the baseline now fails
    res = pytester.runpytest(*common, "--fc-compare=v1", "--fc-compare-fail", "passed")
    assert res.ret == 0
    pytester.makepyfile(test_c=ALL_PASS.format(a=0.85))
    res = pytester.runpytest(*common, "--fc-compare-fail", "passed")  # implies --fc-compare latest
    assert res.ret == 1
    res.stdout.fnmatch_lines(["*test_c.py::test_a: passed in the baseline, now failed (passed)*"])


def test_one_claim_error_does_not_break_reports(pytester):
    pytester.makepyfile(test_e=HELPER + '''
@pytest.fixture
def broken():
    raise RuntimeError("fixture exploded")

@pytest.mark.fieldcheck
def test_setup_error(broken):
    pass

@pytest.mark.fieldcheck
def test_raises():
    claim("r2", 0.95, 0.9, 0.001)
    raise KeyError("unexpected")

@pytest.mark.fieldcheck
def test_ok():
    claim("r2", 0.95, 0.9, 0.001)

@pytest.mark.fieldcheck
@pytest.mark.xfail(reason="known")
def test_xfail():
    claim("r2", 0.5, 0.9, 0.9)

@pytest.mark.fieldcheck
def test_skip():
    pytest.skip("not here")
''')
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-report-json", "r.json",
                             "--fc-report-html", "r.html")
    assert res.ret == 1
    rep = _json(pytester)
    by = {c["id"].split("::")[1]: c for c in rep["claims"]}
    assert by["test_setup_error"]["outcome"] == "error"
    assert "fixture exploded" in by["test_setup_error"]["error"]
    assert by["test_raises"]["outcome"] == "error" and by["test_raises"]["results"]
    assert by["test_ok"]["outcome"] == "passed"
    assert by["test_xfail"]["outcome"] == "xfailed"
    assert by["test_skip"]["outcome"] == "skipped" and "not here" in by["test_skip"]["error"]
    assert (pytester.path / "r.html").stat().st_size > 1000
    res.stdout.fnmatch_lines(["*fieldcheck claims*", "*test_raises*r2*PASS*"])


def test_report_is_deterministic_across_runs(pytester):
    pytester.makepyfile(test_claims=CLAIMS)
    pytester.runpytest("-p", "no:cacheprovider", "--fc-report-json", "a.json")
    pytester.runpytest("-p", "no:cacheprovider", "--fc-report-json", "b.json")
    a, b = _json(pytester, "a.json"), _json(pytester, "b.json")
    assert a["timing"] and strip_volatile(a) == strip_volatile(b)


@pytest.mark.slow   # subprocesses or plugin runs: make test and CI, not make test-quick
def test_xdist_two_workers_same_report_as_one(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_claims=CLAIMS, test_more=ALL_PASS.format(a=0.93))
    r1 = pytester.runpytest("-p", "no:cacheprovider", "-n", "1", "--fc-report-json", "n1.json")
    r2 = pytester.runpytest("-p", "no:cacheprovider", "-n", "2", "--fc-report-json", "n2.json")
    assert r1.ret == r2.ret == 1
    a, b = _json(pytester, "n1.json"), _json(pytester, "n2.json")
    assert len(a["claims"]) == 7
    assert strip_volatile(a) == strip_volatile(b)
    r2.stdout.fnmatch_lines(["*fieldcheck claims*", "*FAIL after the bonferroni correction over 6 claim(s) in 2 families*"])


@pytest.mark.slow   # 5-18 s: make test and CI, not make test-quick
def test_model_fixtures_load_once_and_pinned_models(pytester):
    # a subprocess: the model stack (torch, transformers, scipy) must not be imported inside an
    # in-process run, which drops it afterwards (C extensions cannot be imported twice)
    pytest.importorskip("torch")
    pytest.importorskip("transformer_lens")
    pytester.makepyfile(test_m='''
import pytest

def test_uses_model(fc_model, fc_seed, fc_config):
    assert fc_model.cfg.n_layers >= 1
    assert fc_seed == 5 and fc_config.model == "tiny-gpt2"

def test_same_model(fc_model, request):
    state = request.config.pluginmanager.get_plugin("fieldcheck-state")
    assert list(state.models) == ["tiny-gpt2"]

@pytest.mark.fieldcheck(model="./no-such-model-folder", n=12)
def test_pinned_missing(fc_model):
    raise AssertionError("must be skipped")

@pytest.mark.fieldcheck(model="tiny-llama", seed=9, n=12)
def test_pinned_ok(fc_model, fc_seed, fc_config):
    assert fc_model.fieldcheck_info["spec"] == "tiny-llama"
    assert fc_seed == 9 and fc_config.n == 12
''')
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fc-model", "tiny-gpt2",
                                        "--fc-seed", "5", "--fc-report-json", "r.json", "-rs")
    res.assert_outcomes(passed=3, skipped=1)
    res.stdout.fnmatch_lines(["*claim pinned to model './no-such-model-folder', which cannot be loaded*"])
    rep = _json(pytester)
    assert rep["run"]["model"]["spec"] == "tiny-gpt2" and rep["run"]["model"]["n_layers"] >= 1
    assert "tiny-llama" in rep["run"]["other_models"]
    assert "load_seconds" not in json.dumps(rep["run"])


def test_file_without_model_fixtures_loads_no_model(pytester):
    pytester.makepyfile(test_c=ALL_PASS.format(a=0.95), test_p="""
import pytest

@pytest.mark.parametrize("field", [1, 2])
def test_param_named_field(field):
    assert field
""")
    pytester.runpytest("-p", "no:cacheprovider", "--fc-report-json", "r.json")
    rep = _json(pytester)
    assert rep["run"]["model"] == {"spec": "smollm2-135m", "loaded": False}
    assert not [c for c in rep["claims"] if "test_param_named_field" in c["id"]]


def test_results_reach_fieldcheck_config_claim_id(pytester):
    pytester.makepyfile(test_id='''
import pytest
from fieldcheck import config

@pytest.mark.fieldcheck(seed=4)
def test_id():
    s = config.get()
    assert s.claim_id == "test_id.py::test_id" and s.seed == 4 and s.alpha == 0.02

def test_session_seed():
    assert config.get().seed == 3
''')
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-alpha", "0.02", "--fc-seed", "3")
    res.assert_outcomes(passed=2)


HYPO = HELPER + '''
from hypothesis import given, strategies as st

@pytest.mark.fieldcheck
@given(st.integers(min_value=0, max_value=1000))
def test_property(x):
    claim("value", float(x), 50.0, None, op="<")
'''


def test_hypothesis_falsifying_example_in_report(pytester, monkeypatch):
    pytest.importorskip("hypothesis")
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_h=HYPO)
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-report-json", "r.json")
    assert res.ret == 1
    c = _json(pytester)["claims"][0]
    assert c["outcome"] == "failed"
    ex = c["falsifying_example"]
    assert ("Falsifying example" in ex or "Failing test case" in ex) and "x=50" in ex
    assert "x=50" in c["error"]
    # the CI profile is derandomized: a second run gives the same report
    first = _json(pytester)
    pytester.runpytest("-p", "no:cacheprovider", "--fc-report-json", "r.json")
    assert strip_volatile(first) == strip_volatile(_json(pytester))


ASSERTIONS = '''
import numpy as np
import pytest
import fieldcheck as fc

rng = np.random.default_rng(0)
PRED = rng.normal(size=(6, 30))
GOOD = PRED + 0.05 * rng.normal(size=PRED.shape)
BAD = rng.normal(size=PRED.shape)

@pytest.mark.fieldcheck
def test_predicts():
    fc.assert_predicted_effect(PRED, GOOD, fc.r2 > 0.9)

@pytest.mark.fieldcheck
def test_does_not_predict():
    fc.assert_predicted_effect(PRED, BAD, fc.r2 > 0.9)
'''


def test_real_assertions_on_arrays(pytester):
    pytest.importorskip("fieldcheck.claim.assertions")
    pytester.makepyfile(test_a=ASSERTIONS)
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-report-json", "a.json")
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines(["*test_does_not_predict*r2*FAIL*", "*test_predicts*r2*PASS*"])
    rep = _json(pytester, "a.json")
    good = next(c for c in rep["claims"] if c["id"].endswith("test_predicts"))
    r = good["results"][0]
    assert r["statistic"] == "r2" and r["assertion"] == "assert_predicted_effect"
    assert r["claim_id"] == "test_a.py::test_predicts" and r["passed"] is True
    # bootstrap draws are seeded by the claim id: a second run gives the same report
    pytester.runpytest("-p", "no:cacheprovider", "--fc-report-json", "b.json")
    assert strip_volatile(rep) == strip_volatile(_json(pytester, "b.json"))


def test_device_auto_spreads_workers(monkeypatch):
    torch = pytest.importorskip("torch")
    from pytest_fieldcheck.plugin import resolve_device

    assert resolve_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    assert resolve_device("auto") == "cuda:1"
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert resolve_device("auto") == "cuda:0"


def test_not_claims_ini_excludes_library_tests(pytester):
    pytester.makeini("[pytest]\nfc_not_claims =\n    unit/*\n")
    pytester.mkpydir("unit")
    (pytester.path / "unit" / "test_lib.py").write_text(ALL_PASS.format(a=0.95))
    pytester.makepyfile(test_c=ALL_PASS.format(a=0.95).replace("0.04", "0.001").replace("0.03", "0.001"))
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-report-json", "r.json")
    res.assert_outcomes(passed=6)
    assert res.ret == 0  # the unit tests' p-values are not part of the correction
    assert [c["id"] for c in _json(pytester)["claims"]] == [
        "test_c.py::test_a", "test_c.py::test_b", "test_c.py::test_c"]


def test_session_seed_fixture_is_public(pytester):
    """Claim files read the session seed through ``fc_session_seed`` (session scope), never through
    the plugin's private state; requesting it alone does not make a test a claim."""
    pytester.makepyfile(test_seed='''
import pytest

@pytest.fixture(scope="session")
def data_seed(fc_session_seed):
    return fc_session_seed

def test_seed(data_seed, fc_session_seed):
    assert data_seed == fc_session_seed == 7
''')
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-seed", "7", "--fc-report-json", "r.json")
    res.assert_outcomes(passed=1)
    assert _json(pytester)["claims"] == []


def test_expected_failures_are_shown_as_such_and_dtype_is_recorded(pytester):
    """A strict xfail that failed as expected is an XFAIL row (not a red FAIL) in the terminal
    table and the HTML report; the run metadata names the dtype even when --fc-dtype is unset."""
    pytester.makepyfile(test_x=HELPER + '''
@pytest.mark.fieldcheck
@pytest.mark.xfail(strict=True, reason="measured: 0.5")
def test_known_false():
    claim("r2", 0.5, 0.9, 0.9)

@pytest.mark.fieldcheck
@pytest.mark.xfail(reason="thought false")
def test_surprise():
    claim("r2", 0.95, 0.9, 0.001)
''')
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-correction", "none",
                             "--fc-report-json", "r.json", "--fc-report-html", "r.html")
    res.stdout.fnmatch_lines(["*test_known_false*r2*XFAIL*", "*test_surprise*r2*XPASS*"])
    html = (pytester.path / "r.html").read_text()
    assert '<td class="XFAIL">XFAIL</td>' in html and '<td class="XPASS">XPASS</td>' in html
    assert '<td class="FAIL">' not in html
    assert _json(pytester)["run"]["dtype"] == "float32"
