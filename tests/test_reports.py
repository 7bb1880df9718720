"""fieldcheck.reports: schema, correction, atomic writes, HTML (rendered in headless Chromium)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fieldcheck import reports
from fieldcheck.reports import schema
from fieldcheck.claim.result import ClaimResult
from fieldcheck.errors import BaselineError


def _res(stat="r2", est=0.95, bar=0.9, p=0.001, passed=True, plot=None, decide="bound"):
    return ClaimResult(statistic=stat, estimate=est, interval=(est - 0.05, est + 0.05), op=">",
                       bar=bar, passed=passed, n=40, p_value=p, decide=decide,
                       assertion="assert_demo", plot=plot).to_dict()


PLOTS = [
    {"kind": "heatmap", "values": [[0.1, -0.2, 0.3], [0.5, 0.9, -0.1]], "layers": [0, 1],
     "positions": ["a", "b", "c"]},
    {"kind": "scatter", "predicted": [0.1, 0.5, 0.9], "real": [0.2, 0.4, 1.0]},
    {"kind": "alpha_curve", "alphas": [0, 0.25, 0.5, 1.0], "curves": {"L3": [0, 0.2, 0.4, 0.6]},
     "alpha_star": 0.5},
    {"kind": "cone", "values": [[1, 0, 0], [0.5, 1, 0], [0.2, 0.6, 1]]},
    {"kind": "mystery", "numbers": [1, 2, 3], "note": "x"},
]


def _report(**kw):
    claims = [
        {"id": "c.py::b", "outcome": "passed", "results": [_res(p=0.03, plot=PLOTS[1])]},
        {"id": "c.py::a", "outcome": "passed", "results": [_res(p=0.001, plot=PLOTS[0]),
                                                          _res("rate", p=0.002, plot=PLOTS[2])]},
        {"id": "c.py::c", "outcome": "failed", "results": [_res(est=0.5, p=0.9, passed=False,
                                                                plot=PLOTS[3])],
         "error": "ClaimFailed: r2 = 0.5"},
        {"id": "c.py::d", "outcome": "error", "results": [], "error": "ValueError: boom <b>"},
        {"id": "c.py::e", "outcome": "passed", "results": [_res("x", p=0.2, decide="point",
                                                                plot=PLOTS[4])]},
    ]
    run = reports.run_metadata(model={"spec": "tiny-gpt2"}, device="cpu", dtype=None, seed=0,
                               alpha=0.05, correction="holm", decide="bound")
    return reports.build_report(claims, run, timing={"started": "now", "duration_s": 1.0}, **kw)


def test_build_report_sorted_corrected_and_summarized():
    rep = _report()
    assert rep["schema_version"] == reports.SCHEMA_VERSION
    assert [c["id"] for c in rep["claims"]] == ["c.py::a", "c.py::b", "c.py::c", "c.py::d", "c.py::e"]
    b = rep["claims"][1]
    # 4 claims with p-values in c.py (a's two results count once: a claim is one hypothesis),
    # bonferroni (the default): 0.03 * 4 = 0.12 > 0.05
    assert b["results"][0]["p_adjusted"] == pytest.approx(0.12)
    assert b["results"][0]["family_size"] == 4
    # holm over the claims' p (a: max 0.002, b 0.03, c 0.9, e 0.2): b 2nd -> 0.03 * 3 = 0.09
    holm = _report(correction="holm")["claims"][1]["results"][0]
    assert holm["p_adjusted"] == pytest.approx(0.09)
    assert b["failed_after_correction"] is True
    assert rep["summary"]["failed_after_correction"] == ["c.py::b"]
    # decide="point" keeps its decision; only the adjusted p is reported
    e = rep["claims"][4]["results"][0]
    assert e["p_adjusted"] > 0.05 and e["passed_corrected"] is True
    assert rep["summary"]["outcomes"] == {"passed": 3, "failed": 1, "error": 1, "skipped": 0,
                                          "xfailed": 0, "xpassed": 0}
    assert rep["summary"]["ok"] is False
    json.loads(reports.dumps(rep))  # strict JSON (no NaN literals)


def test_strip_volatile_only_removes_timing():
    a, b = _report(), _report()
    b["timing"] = {"started": "later", "duration_s": 9.0}
    assert a != b and reports.strip_volatile(a) == reports.strip_volatile(b)


@pytest.mark.parametrize("method", ["bonferroni", "holm", "bh", "none"])
def test_fallback_adjustment_matches_stats(method):
    from fieldcheck.claim import statistics as stats

    p = [0.01, 0.04, 0.03, 0.2, 0.001]
    assert schema._adjust_fallback(p, method) == pytest.approx(stats.adjust_pvalues(p, method))


def test_nan_pvalues_and_estimates_are_safe():
    r = _res(est=float("nan"), p=float("nan"), passed=False)
    rep = reports.build_report([{"id": "x", "outcome": "failed", "results": [r]}], {})
    text = reports.dumps(rep)
    assert "NaN" not in text and json.loads(text)["claims"][0]["results"][0]["estimate"] == "nan"
    assert "x" in reports.format_table(rep)


def test_table_has_one_row_per_result():
    header, rows = reports.table_rows(_report())
    assert header[:10] == ["claim", "statistic", "decided by", "estimate", "interval", "bar", "p",
                           "p_adj", "n", "verdict"]
    assert len(rows) == 6
    assert [r[9] for r in rows] == ["PASS", "PASS", "FAIL(adj)", "FAIL", "ERROR", "PASS"]


def test_load_report_errors(tmp_path):
    with pytest.raises(BaselineError, match="does not exist"):
        reports.load_report(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BaselineError, match="not valid JSON"):
        reports.load_report(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(BaselineError, match="not a fieldcheck report"):
        reports.load_report(tmp_path / "list.json")
    (tmp_path / "v9.json").write_text('{"schema_version": 99, "claims": []}')
    with pytest.raises(BaselineError, match="schema_version 99"):
        reports.load_report(tmp_path / "v9.json")
    (tmp_path / "c.json").write_text('{"schema_version": 1, "claims": [{"outcome": "passed"}]}')
    with pytest.raises(BaselineError, match="malformed claim"):
        reports.load_report(tmp_path / "c.json")
    p = reports.write_json(tmp_path / "ok.json", _report())
    assert reports.load_report(p)["claims"][0]["id"] == "c.py::a"


def test_atomic_write_leaves_no_temp_and_keeps_mode(tmp_path):
    p = reports.atomic_write_text(tmp_path / "sub" / "f.txt", "hello")
    assert p.read_text() == "hello" and os.listdir(p.parent) == ["f.txt"]
    assert p.stat().st_mode & 0o044  # readable by others, like a normal file


def test_killed_writer_never_leaves_a_trusted_partial_file(tmp_path):
    """A writer killed at random moments: the report file is either absent or complete."""
    target = tmp_path / "report.json"
    code = textwrap.dedent(f"""
        import sys
        from fieldcheck import reports
        big = {{"schema_version": reports.SCHEMA_VERSION, "run": {{}}, "timing": {{}},
               "claims": [{{"id": "c%d" % i, "outcome": "passed", "results": [],
                           "pad": "x" * 2000}} for i in range(2000)]}}
        print("ready", flush=True)
        i = 0
        while True:
            big["run"]["i"] = i
            reports.write_json({str(target)!r}, big)
            i += 1
    """)
    for delay in (0.05, 0.2, 0.35):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if target.exists():
            data = reports.load_report(target)  # complete and valid, never half-written
            assert len(data["claims"]) == 2000
    # stray temp files may remain, but they are never the report itself
    assert all(p.name == "report.json" or p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_html_is_self_contained_and_draws_every_kind(tmp_path):
    html = reports.render_html(_report())
    assert html.count("data:image/png;base64,") == 4   # heatmap, scatter, alpha curve, cone
    assert "mystery" in html and "<table>" in html      # unknown kind -> table of numbers
    assert "ValueError: boom &lt;b&gt;" in html           # escaped
    for bad in ("http://", "https://", "<script", "<link", "@import"):
        assert bad not in html


def test_html_bad_plot_data_does_not_break_the_report():
    r = _res(plot={"kind": "heatmap", "values": "not numbers"})
    r2 = _res(plot={"kind": "scatter", "predicted": [1, 2], "real": [1]})
    rep = reports.build_report([{"id": "x", "outcome": "passed", "results": [r, r2]}], {})
    html = reports.render_html(rep)
    assert "not numbers" in html and html.rstrip().endswith("</html>")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed: "
                    "apt-get update && apt-get install -y chromium")
def test_html_renders_in_headless_chromium(tmp_path):
    from PIL import Image, ImageStat

    page = reports.write_html(tmp_path / "report.html", _report())
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--window-size=1200,1600",
           f"--screenshot={shot}", page.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), out.stderr[-2000:]
    img = Image.open(shot).convert("L")
    stat = ImageStat.Stat(img)
    assert stat.var[0] > 100, "screenshot is blank"
    console = [ln for ln in out.stderr.splitlines()
               if "CONSOLE" in ln or "Uncaught" in ln or "ERR_" in ln and "report.html" in ln]
    assert not console, console


def test_short_ids_keep_the_test_name():
    assert reports.short_id("a/b/c.py::test_x", 80) == "a/b/c.py::test_x"
    assert reports.short_id("claims/deep/c.py::test_x", 12) == "c.py::test_x"
    assert reports.short_id("claims/deep/c.py::test_long_name", 10) == "test_long_name"
    table = reports.format_table(_report(), width=60)
    assert "c.py::a" in table
