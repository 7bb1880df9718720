"""CI shards: ``--fc-shard K/N`` splits whole claim files deterministically (balanced by a previous
report's durations), and ``fieldcheck report merge`` joins the shards into the report a serial
run gives, or refuses shards of different runs with the reason."""
from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import given, settings, strategies as st

# C-extension modules must be imported once, out here, before in-process pytester runs
import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402,F401
import matplotlib.pyplot  # noqa: E402,F401
import torch  # noqa: E402,F401
import transformer_lens.model_bridge  # noqa: E402,F401

from _gate_helpers import MODEL_CLAIMS, run, same_report, tiny_folders  # noqa: E402
from fieldcheck.cli import main as cli  # noqa: E402
from fieldcheck.errors import UsageError  # noqa: E402
from fieldcheck.reports.shards import durations_by_file, parse_shard, plan, weights  # noqa: E402

pytest_plugins = "pytester"

# three files of claims on numbers (no model: fast); each p is about 0.02, so every claim passes
# alone and in a file of its own, and fails after a Bonferroni correction over the session (m = 3)
STAT = '''
import numpy as np
import fieldcheck as fc
from fieldcheck import mean


def test_{n}(fc_config):
    fc.assert_prefers(np.linspace(-0.3, 1.0, 12), mean > 0.0)


def test_{n}_strong(fc_config):
    fc.assert_prefers(np.linspace({lo}, 3.0, 12), mean > 0.5)
'''


def _stat_suite(pytester):
    for n, lo in (("a", 1.0), ("b", 0.8), ("c", 0.9)):
        pytester.makepyfile(**{f"test_{n}": STAT.format(n=n, lo=lo)})


# --- the split --------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z]{1,6}\.py", fullmatch=True),
                       st.floats(0.0, 100.0, allow_nan=False), min_size=1, max_size=30),
       st.integers(1, 8))
def test_plan_keeps_files_whole_balances_and_ignores_order(w, n):
    shards = plan(w, n)
    flat = [f for s in shards for f in s]
    assert sorted(flat) == sorted(w) and len(shards) == n            # every file once
    loads = [sum(w[f] for f in s) for s in shards]
    assert max(loads) <= sum(w.values()) / n + max(w.values()) + 1e-9  # greedy's bound
    assert plan(dict(reversed(list(w.items()))), n) == shards        # no dependence on order


def test_weights_and_durations():
    rep = {"timing": {"claims": {"a.py::t1": 3.0, "a.py::t2[x]": 1.0, "b.py::t": 2.0}}}
    d = durations_by_file(rep)
    assert d == {"a.py": 4.0, "b.py": 2.0}
    # c.py is unknown: its 2 claims cost the mean seconds per known claim (6 s / 3 claims)
    assert weights({"a.py": 2, "b.py": 1, "c.py": 2}, d) == {"a.py": 4.0, "b.py": 2.0, "c.py": 4.0}
    assert weights({"a.py": 2, "b.py": 1}) == {"a.py": 2.0, "b.py": 1.0}
    assert parse_shard(" 2/4 ") == (2, 4)
    for bad in ("0/2", "3/2", "x", "1/0", "1-2"):
        with pytest.raises(UsageError, match="K/N"):
            parse_shard(bad)


# --- shards merged into the serial report -----------------------------------------------------
@pytest.mark.parametrize("family", ["file", "session"])
def test_merged_shards_equal_the_serial_report(pytester, family):
    _stat_suite(pytester)
    fam = ("--fc-correction-family", family)
    res, serial = run(pytester, *fam, report="serial.json", inprocess=True)
    if family == "session":   # each claim passes alone, not after the correction over the session
        assert serial["summary"]["failed_after_correction"] == [
            "test_a.py::test_a", "test_b.py::test_b", "test_c.py::test_c"] and res.ret == 1
    else:
        assert res.ret == 0 and serial["summary"]["ok"]
    paths = []
    for k in range(1, 5):     # four shards of three files: one shard is empty
        res, rep = run(pytester, *fam, "--fc-shard", f"{k}/4", report=f"s{k}.json", inprocess=True)
        # a shard's own correction covers its claims only: with the session family it is
        # provisional and does not fail the shard (the merge decides)
        assert res.ret == 0, res.stdout.str()
        assert rep["shard"]["index"] == k and rep["shard"]["count"] == 4
        assert len(rep["shard"]["suite"]["files"]) == 3 and len(rep["shard"]["files"]) == (k < 4)
        paths.append(str(pytester.path / f"s{k}.json"))
    assert sorted(f for p in paths for f in json.loads(open(p).read())["shard"]["files"]) == [
        "test_a.py", "test_b.py", "test_c.py"]
    code = cli(["report", "merge", *paths, "-o", str(pytester.path / "m.json"),
                "--html", str(pytester.path / "m.html")])
    merged = json.loads((pytester.path / "m.json").read_text())
    assert same_report(merged, serial) == [] and "shard" not in merged
    assert code == (1 if family == "session" else 0)
    assert [s["index"] for s in merged["timing"]["shards"]] == [1, 2, 3, 4]
    assert "test_a.py::test_a" in (pytester.path / "m.html").read_text()


def test_shards_balance_by_a_previous_report(pytester):
    _stat_suite(pytester)
    prev = {"schema_version": 1, "claims": [],
            "timing": {"claims": {"test_b.py::test_b": 50.0, "test_a.py::test_a": 1.0}}}
    (pytester.path / "prev.json").write_text(json.dumps(prev))
    got = {}
    for k in (1, 2):
        _, rep = run(pytester, "--fc-shard", f"{k}/2", "--fc-shard-durations", "prev.json",
                     report=f"s{k}.json", inprocess=True)
        got[k] = rep["shard"]["files"]
    # b is the long file: alone; a (1 s) and c (unknown: 2 claims x 0.5 s/claim) share the other
    assert got == {1: ["test_b.py"], 2: ["test_a.py", "test_c.py"]}
    _, rep = run(pytester, "--fc-shard", "1/2", report="plain.json", inprocess=True)   # by claims per file instead
    assert rep["shard"]["files"] == ["test_a.py", "test_c.py"]   # 2 claims each: a, c | b


@pytest.mark.slow   # subprocesses or plugin runs: make test and CI, not make test-quick
def test_a_sharded_gate_on_two_models_merges_into_the_serial_gate(pytester, tmp_path_factory):
    """The baseline-model gate (paired tests, regressions, grid) from two shards of its files."""
    m = tiny_folders(tmp_path_factory.mktemp("models"))
    pytester.makepyfile(**MODEL_CLAIMS)
    gate = ("--fc-model", m["pert"], "--fc-baseline-model", m["base"])
    res, serial = run(pytester, *gate, report="serial.json", inprocess=True)
    assert res.ret == 1 and serial["comparison"]["regressions"]
    paths = []
    for k in (1, 2):
        res, rep = run(pytester, *gate, "--fc-shard", f"{k}/2", report=f"s{k}.json", inprocess=True)
        paths.append(str(pytester.path / f"s{k}.json"))
    assert cli(["report", "merge", *paths, "-o", str(pytester.path / "m.json"), "-q"]) == 1
    merged = json.loads((pytester.path / "m.json").read_text())
    assert same_report(merged, serial) == []
    assert merged["models"]["labels"] == ["baseline", "candidate"]
    assert any("test_moves" in r for r in merged["comparison"]["regressions"])


# --- refusals -----------------------------------------------------------------------------------
def _edit(path, fn):
    rep = json.loads(path.read_text())
    fn(rep)
    new = path.with_name("edited-" + path.name)
    new.write_text(json.dumps(rep))
    return new


EDITS = [
    (lambda r: r["run"].update(seed=7), "seed 0 vs 7"),
    (lambda r: r["run"]["model"].update(spec="other-model"), "model smollm2-135m"),
    (lambda r: r["run"].update(alpha=0.01), "setting alpha: 0.05 vs 0.01"),
    (lambda r: r["run"].update(dtype="bfloat16"), "setting dtype"),
    (lambda r: r["run"].update(torch="2.0.0"), "code version torch"),
    (lambda r: r["shard"]["suite"].update(fieldcheck_sha256="0" * 64), "fieldcheck's source differ"),
    (lambda r: r["shard"].update(count=3), "number of shards 2 vs 3"),
    (lambda r: r["shard"].update(rules=["passed"]), "--fc-compare-fail"),
]


def test_merge_refuses_shards_of_different_runs(pytester, capsys):
    _stat_suite(pytester)
    for k in (1, 2):
        run(pytester, "--fc-shard", f"{k}/2", report=f"s{k}.json", inprocess=True)
    s1, s2 = pytester.path / "s1.json", pytester.path / "s2.json"
    out = str(pytester.path / "m.json")
    capsys.readouterr()
    for edit, reason in EDITS:
        assert cli(["report", "merge", str(s1), str(_edit(s2, edit)), "-o", out]) == 3
        err = capsys.readouterr().err
        assert "refusing to merge" in err and reason in err, (reason, err)
        assert not (pytester.path / "m.json").exists()
    assert cli(["report", "merge", str(s1), "-o", out]) == 3
    assert "shard(s) 2/2 missing" in capsys.readouterr().err
    assert cli(["report", "merge", str(s1), str(s1), "-o", out]) == 3
    assert "shard 1/2 is given twice" in capsys.readouterr().err
    assert cli(["report", "merge", str(_edit(s1, lambda r: r.pop("shard"))), str(s2), "-o", out]) == 3
    assert "is not the report of a shard" in capsys.readouterr().err
    assert cli(["report", "merge", str(pytester.path / "nope.json"), "-o", out]) == 3
    assert "cannot read shard report" in capsys.readouterr().err
    # a claim file edited between the shards' runs: a different suite
    (pytester.path / "test_c.py").write_text(STAT.format(n="c", lo=0.0))
    run(pytester, "--fc-shard", "2/2", report="s2.json", inprocess=True)
    assert cli(["report", "merge", str(s1), str(s2), "-o", out]) == 3
    assert "the claim files differ" in capsys.readouterr().err


def test_usage_errors(pytester):
    pytester.makepyfile(test_x="def test_a():\n    pass\n")
    for args, msg in ((("--fc-shard", "3/2"), "K/N"),
                      (("--fc-shard-durations", "r.json"), "give --fc-shard K/N too"),
                      (("--fc-shard", "1/2", "--fc-shard-durations", "nope.json"), "--fc-shard-durations"),
                      (("--fc-memory-budget", "lots"), "--fc-memory-budget"),
                      (("--fc-ray=claims/",), "is not a Ray address"),
                      (("--fc-ray-shards", "0"), "--fc-ray-shards")):
        res = pytester.runpytest_inprocess("-p", "no:xdist", "-p", "no:cacheprovider", *args)
        assert res.ret == 4 and msg in res.stderr.str(), (args, res.stderr.str())
