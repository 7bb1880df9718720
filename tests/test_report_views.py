"""What a researcher reads after a run: the row's deciding site or criterion, the time per claim
file with the fixtures counted, circuits and faithfulness curves drawn in the HTML report, and
``fieldcheck report show`` / ``fieldcheck report compare``."""
from __future__ import annotations

import json
import re

import pytest

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402,F401
import numpy  # noqa: E402,F401
import scipy.special  # noqa: E402,F401
import scipy.stats  # noqa: E402,F401
import statsmodels.stats.multitest  # noqa: E402,F401

from fieldcheck import reports  # noqa: E402
from fieldcheck.claim.result import ClaimResult  # noqa: E402
from fieldcheck.cli import main  # noqa: E402
from fieldcheck.reports.table import decided_by  # noqa: E402

pytest_plugins = "pytester"


def _res(est=0.9, bar=0.8, p=0.001, passed=True, details=None, plot=None, stat="recovered", criterion=""):
    return ClaimResult(statistic=stat, estimate=est, interval=(est - 0.05, est + 0.05), op=">", bar=bar,
                       passed=passed, n=16, p_value=p, assertion="assert_effect", details=details or {},
                       plot=plot, criterion=criterion or f"{stat} > {bar}").to_dict()


def _report(claims, **kw):
    run = reports.run_metadata(model={"spec": "tiny-gpt2"}, device="cpu", dtype=None, seed=0, alpha=0.05,
                               correction="bonferroni", decide="bound")
    timing = {"started": "2026-12-04T00:00:00+00:00", "duration_s": 3.0,
              "files": {"c.py": {"claims": 2, "fixtures_s": 2.5, "calls_s": 0.5, "total_s": 3.0}}}
    return reports.build_report(claims, run, timing=timing, **kw)


@pytest.mark.parametrize("details,criterion,want", [
    ({"site": "L20.resid_pre@END", "n_sites": 1}, "", "L20.resid_pre@END"),
    ({"site": "L3.H2@END", "n_sites": 5, "require": "all"}, "", "L3.H2@END (worst of 5)"),
    ({"site": "L3.H2@END", "n_sites": 5, "require": "any"}, "", "L3.H2@END (best of 5)"),
    ({"row": "L23.H3", "n_rows": 2}, "", "L23.H3 (worst of 2)"),
    ({"components": ["L20.H3", "L21.mlp"], "n_components": 2}, "", "2 components (L20.H3, L21.mlp, ...)"),
    ({"circuit": "12 edges, corrupt ablation"}, "", "12 edges, corrupt ablation"),
    ({"layer": 30}, "", "layer 30"),
    ({}, "rank(layer=-1) < 1", "rank(layer=-1) < 1"),
])
def test_each_row_names_what_decides_it(details, criterion, want):
    assert decided_by(_res(details=details, criterion=criterion)) == want


def test_the_rows_of_one_claim_can_be_told_apart():
    rep = _report([{"id": "c.py::test_five_sites", "outcome": "passed",
                    "results": [_res(details={"site": f"L{l}.resid_pre@END", "n_sites": 1}) for l in range(3)]}])
    header, rows = reports.table_rows(rep)
    col = header.index("decided by")
    assert header[:3] == ["claim", "statistic", "decided by"]
    assert [r[col] for r in rows] == ["L0.resid_pre@END", "L1.resid_pre@END", "L2.resid_pre@END"]
    html = reports.render_html(rep)
    assert "<th>decided by</th>" in html and "L2.resid_pre@END" in html


def test_html_draws_circuits_curves_and_bars():
    from fieldcheck.experiments.circuit_spec import Circuit

    circuit = Circuit(edges=["embed->L0.H1.q", "L0.H1->L1.mlp", "L1.mlp->logits"]).plot_data()
    curve = {"kind": "line", "x": [0.01, 0.1, 1.0], "y": [0.2, 0.7, 1.0], "xscale": "log", "hline": 1.0}
    bars = {"kind": "bars", "labels": ["empty", "circuit", "full"], "y": [0.1, 2.0, 2.5]}
    rep = _report([{"id": "c.py::test_circuit", "outcome": "passed",
                    "results": [_res(stat="cpr", plot=[bars, circuit]), _res(stat="area", plot=curve)]}])
    html = reports.render_html(rep)
    for kind in ("circuit", "line", "bars"):
        assert f'<img alt="{kind}" src="data:image/png;base64,' in html
    assert "Time per claim file" in html and "<td>c.py</td>" in html


def test_file_times_count_the_fixtures(pytester):
    pytester.makepyfile(test_slowfix='''
import time
import pytest
from fieldcheck.claim.result import ClaimResult, record

@pytest.fixture(scope="module")
def scores():
    time.sleep(0.4)           # a module fixture, e.g. EAP-IG over every edge
    return 1

def _claim():
    record(ClaimResult(statistic="r2", estimate=0.9, interval=(0.85, 0.95), op=">", bar=0.5, passed=True,
                       n=20, p_value=0.001, assertion="assert_demo"))

def test_a(scores):
    _claim()

def test_b(scores):
    _claim()
''')
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-report-json", "r.json")
    assert res.ret == 0
    timing = json.loads((pytester.path / "r.json").read_text())["timing"]
    row = timing["files"]["test_slowfix.py"]
    assert row["claims"] == 2 and row["fixtures_s"] >= 0.4 and row["total_s"] >= row["fixtures_s"]
    assert timing["claims"]["test_slowfix.py::test_a"] >= 0.4      # its setup ran the fixture


# --- the command line ---------------------------------------------------------------------------------
def _write(path, rep):
    reports.write_json(path, rep)
    return str(path)


def test_fieldcheck_help_offers_report(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "models" in out and "report" in out
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    out = capsys.readouterr().out
    assert "show" in out and "compare" in out


def test_report_show(tmp_path, capsys):
    rep = _report([{"id": "c.py::test_ok", "outcome": "passed", "results": [_res(details={"site": "L1.H0@END"})]},
                   {"id": "c.py::test_bad", "outcome": "failed",
                    "results": [_res(est=0.3, p=0.9, passed=False, details={"site": "L2.H0@END"})]}])
    path = _write(tmp_path / "run.json", rep)
    assert main(["report", "show", path]) == 0
    out = capsys.readouterr().out
    assert "model tiny-gpt2, seed 0" in out
    assert re.search(r"FAILED: 1 (passed, 1 failed|failed, 1 passed)", out)
    assert "L1.H0@END" in out and "L2.H0@END" in out and re.search(r"c\.py\s+2\s+2\.5\s+0\.5\s+3", out)
    assert main(["report", "show", path, "--failed", "--check", "--html", str(tmp_path / "r.html")]) == 1
    out = capsys.readouterr().out
    assert "L2.H0@END" in out and "test_ok" not in out.split("failed")[1].split("time per")[0]
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["report", "show", str(tmp_path / "nope.json")]) == 1
    assert "nope.json' does not exist: write one with pytest --fc-report-json" in capsys.readouterr().err


def test_report_compare_flags_a_regression(tmp_path, capsys):
    base = _report([{"id": "c.py::test_x", "outcome": "passed", "results": [_res(est=0.9)]}])
    same = _report([{"id": "c.py::test_x", "outcome": "passed", "results": [_res(est=0.9)]}])
    worse = _report([{"id": "c.py::test_x", "outcome": "failed",
                      "results": [_res(est=0.5, p=0.9, passed=False)]}])
    b, s, w = (_write(tmp_path / f"{n}.json", r) for n, r in (("base", base), ("same", same), ("worse", worse)))
    assert main(["report", "compare", s, b]) == 0
    assert "0 regression(s) (significant)" in capsys.readouterr().out
    assert main(["report", "compare", w, b, "--fail", "passed", "--fail", "estimate:10%"]) == 1
    out = capsys.readouterr().out
    assert "c.py::test_x: passed in the baseline, now failed (passed)" in out
    assert "recovered 0.9 -> 0.5" in out and "2 regression(s) (passed, estimate:10%)" in out
    assert main(["report", "compare", w, b, "--fail", "bogus"]) == 1
    assert "--fail 'bogus' is not a valid expression" in capsys.readouterr().err
