"""Baselines: names, LATEST, resolution, compare-fail expressions and comparisons."""
from __future__ import annotations

import pytest

from fieldcheck import reports
from fieldcheck.claim.result import ClaimResult
from fieldcheck.errors import BaselineError
from pytest_fieldcheck import baselines


def _rep(values: dict, outcomes: dict | None = None, op=">", bar=0.5):
    claims = []
    for cid, v in values.items():
        r = ClaimResult(statistic="s", estimate=v, interval=None, op=op, bar=bar,
                        passed=(v > bar) if op == ">" else (v < bar), n=10,
                        assertion="assert_x").to_dict()
        out = (outcomes or {}).get(cid, "passed" if r["passed"] else "failed")
        claims.append({"id": cid, "outcome": out, "results": [r]})
    return reports.build_report(claims, {"model": {"spec": "m"}, "git_commit": "abc"},
                                correction="none")


@pytest.mark.parametrize("expr, field, thr, rel", [
    ("passed", "passed", 0.0, False), ("PASSED", "passed", 0.0, False),
    ("significant", "significant", 0.0, False), (" Significant ", "significant", 0.0, False),
    ("estimate:10%", "estimate", 0.1, True), ("estimate:0.05", "estimate", 0.05, False),
    ("value:2.5%", "estimate", 0.025, True), (" estimate : 1e-3 ", "estimate", 0.001, False),
])
def test_parse_rule(expr, field, thr, rel):
    r = baselines.parse_rule(expr)
    assert (r.field, r.threshold, r.relative) == (field, pytest.approx(thr), rel)
    assert r.describe()


@pytest.mark.parametrize("expr", ["", "bogus", "estimate", "estimate:", "estimate:-1",
                                  "min:5%", "estimate:10%%", "estimate:abc", "passed:1"])
def test_parse_rule_rejects_bad_expressions(expr):
    with pytest.raises(BaselineError, match="is not a valid expression"):
        baselines.parse_rule(expr)


@pytest.mark.parametrize("name", ["", "latest", "LATEST", "a/b", "../x", "v1.json", ".hidden"])
def test_bad_names(name):
    with pytest.raises(BaselineError, match="not a usable baseline name"):
        baselines.check_name(name)


def test_save_latest_and_resolve(tmp_path):
    with pytest.raises(BaselineError, match="no baseline saved yet"):
        baselines.resolve(None, tmp_path)
    p1 = baselines.save(_rep({"a": 0.9}), "v1", tmp_path)
    p2 = baselines.save(_rep({"a": 0.8}), "v2", tmp_path)
    assert baselines.resolve(None, tmp_path) == p2
    assert baselines.resolve("latest", tmp_path) == p2
    assert baselines.resolve("v1", tmp_path) == p1
    assert baselines.resolve(str(p1), tmp_path) == p1
    with pytest.raises(BaselineError, match="saved baselines: v1, v2"):
        baselines.resolve("v3", tmp_path)
    (tmp_path / ".fieldcheck" / "baselines" / "LATEST").write_text("../../etc/passwd")
    with pytest.raises(BaselineError, match="malformed"):
        baselines.resolve("latest", tmp_path)
    path, data = baselines.load("v1", tmp_path)
    assert data["claims"][0]["results"][0]["estimate"] == 0.9


def test_compare_estimate_rules_respect_direction():
    base = _rep({"a": 1.0, "b": 1.0, "gone": 0.9})
    cur = _rep({"a": 0.85, "b": 1.3, "new": 0.7})
    rules = [baselines.parse_rule("estimate:10%")]
    comp = baselines.compare(cur, base, rules)
    assert comp["missing"] == ["gone"] and comp["new"] == ["new"]
    rows = {r["claim_id"]: r for r in comp["rows"]}
    assert rows["a"]["delta"] == pytest.approx(-0.15) and rows["a"]["regressed"] == ["estimate:10%"]
    assert rows["b"]["regressed"] == []  # moved toward "better" (op ">")
    assert len(comp["regressions"]) == 1 and comp["regressions"][0].startswith("a: s 1 -> 0.85")
    # lower-is-better statistics regress upward
    comp = baselines.compare(_rep({"a": 0.3}, op="<"), _rep({"a": 0.2}, op="<"),
                             [baselines.parse_rule("estimate:0.05")])
    assert comp["regressions"]
    comp = baselines.compare(_rep({"a": 0.1}, op="<"), _rep({"a": 0.2}, op="<"),
                             [baselines.parse_rule("estimate:0.05")])
    assert not comp["regressions"]


def test_compare_nan_estimate_is_a_regression():
    comp = baselines.compare(_rep({"a": float("nan")}), _rep({"a": 0.9}),
                             [baselines.parse_rule("estimate:50%")])
    assert comp["regressions"]


def test_compare_passed_rule():
    base = _rep({"a": 0.9, "b": 0.9, "c": 0.1})
    cur = _rep({"a": 0.4, "b": 0.9, "c": 0.1}, outcomes={"b": "error"})
    comp = baselines.compare(cur, base, [baselines.parse_rule("passed")])
    assert sorted(r.split(":")[0] for r in comp["regressions"]) == ["a", "b"]
    assert baselines.compare(cur, base, [])["regressions"] == []


def test_compare_says_why_results_are_not_paired():
    """Reports without per-example values (older baselines) are compared by the fixed rules
    only; the comparison says so instead of pretending to pair them."""
    comp = baselines.compare(_rep({"a": 0.6}), _rep({"a": 0.9}),
                             [baselines.parse_rule("significant")])
    row = comp["rows"][0]
    assert row["paired"] is None and "no per-example values" in row["unpaired_reason"]
    assert comp["paired"]["n_paired"] == 0 and comp["paired"]["n_unpaired"] == 1
    assert comp["regressions"] == []      # 0.6 still clears the bar 0.5: nothing crossed


def test_compare_paired_with_a_saved_baseline(tmp_path):
    """A saved report keeps the per-example values, so --fc-compare pairs against it; a data
    set whose content changed is named as the reason it cannot."""
    import numpy as np

    from fieldcheck.claim.comparison import example_values

    def rep(x, h):
        r = ClaimResult(statistic="mean", estimate=float(np.mean(x)), interval=None, op=">",
                        bar=0.0, passed=True, n=len(x), assertion="assert_prefers",
                        examples=example_values("mean", {"x": x}, dataset=h)).to_dict()
        return reports.build_report([{"id": "a", "outcome": "passed", "results": [r]}],
                                    {"model": {"spec": "m"}}, correction="none")
    x = np.linspace(1.0, 2.0, 20)
    baselines.save(rep(x, "h1"), "v1", tmp_path)
    _, saved = baselines.load("v1", tmp_path)
    rule = [baselines.parse_rule("significant")]
    comp = baselines.compare(rep(x - 0.5, "h1"), saved, rule, n_boot=500)
    assert comp["rows"][0]["paired"]["estimate"] == pytest.approx(-0.5) and comp["regressions"]
    comp = baselines.compare(rep(x - 0.5, "h2"), saved, rule, n_boot=500)
    assert "different data sets" in comp["rows"][0]["unpaired_reason"] and not comp["regressions"]
