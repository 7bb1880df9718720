"""Release gating across models: the paired comparison (fieldcheck.claim.comparison) against
scipy, per-example values in ClaimResults, the ``significant`` rule, and whole runs with
``--fc-baseline-model`` / ``--fc-models`` on tiny models saved to folders (a perturbed copy and
an identical copy), with xdist, the grid in the HTML report and, with SmolLM2, a perturbed copy
whose attention output projections at layers 24-27 are scaled by 0.3."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from scipy import stats

# C-extension modules must be imported once, out here, before in-process pytester runs
import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402,F401
import matplotlib.pyplot  # noqa: E402,F401
import torch  # noqa: E402,F401
import transformer_lens.model_bridge  # noqa: E402,F401  (imports datasets/pyarrow: once, out here)

import fieldcheck.display  # noqa: E402,F401
import fieldcheck.reports.grid  # noqa: E402,F401

import fieldcheck as fc  # noqa: E402
import fieldcheck.claim.statistics  # noqa: E402

fieldcheck.claim.statistics.adjust_pvalues([0.01, 0.02], "holm")
from fieldcheck.claim.comparison import (example_values, paired_change, pairing_problem,  # noqa: E402
                                         value_of)
from fieldcheck.claim.result import ClaimResult  # noqa: E402
from fieldcheck import reports  # noqa: E402
from pytest_fieldcheck import baselines  # noqa: E402
from _gate_helpers import GATE_CLAIMS, perturbed_smollm2, tiny_folders  # noqa: E402

pytest_plugins = "pytester"

H = "a" * 64  # a data set's content hash


# --- the paired statistics against scipy ------------------------------------------------------
def test_paired_mean_matches_scipy_permutation_and_ttest():
    rng = np.random.default_rng(1)
    base = rng.normal(1.0, 1.0, 40)
    cand = base - 0.3 + rng.normal(0, 0.4, 40)        # worse by 0.3, paired noise 0.4
    b = example_values("mean", {"x": base}, dataset=H)
    c = example_values("mean", {"x": cand}, dataset=H)
    pc = paired_change(c, b, op=">", alpha=0.05, n_boot=4000, rng=np.random.default_rng(0))
    d = cand - base
    assert pc.estimate == pytest.approx(d.mean()) and pc.n == 40 and pc.against == "-"
    perm = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=4000,
                                  alternative="less", rng=np.random.default_rng(2)).pvalue
    tt = stats.ttest_rel(cand, base, alternative="less").pvalue
    # both tests must agree (the larger p is reported): never below the permutation test's
    assert pc.p_value >= perm - 0.003 and pc.p_value < 10 * max(perm, tt, 1e-3)
    lo, hi = stats.ttest_rel(cand, base).confidence_interval(0.90)
    assert pc.low <= lo + 0.03 and pc.high >= hi - 0.03       # hull of two intervals
    assert pc.high - pc.low < 1.5 * (hi - lo)
    assert pc.worse and not pc.better
    # far less uncertain than an unpaired comparison of the two means
    unpaired = stats.ttest_ind(cand, base).confidence_interval(0.90)
    assert (pc.high - pc.low) < 0.6 * (unpaired.high - unpaired.low)


def test_paired_ratio_matches_scipy_paired_bootstrap():
    rng = np.random.default_rng(3)
    n = 60
    den = rng.uniform(1.0, 2.0, n)
    num_b = den * 0.8 + rng.normal(0, 0.1, n)
    num_c = num_b * 0.9 + rng.normal(0, 0.02, n)
    b = example_values("ratio", {"num": num_b, "den": den}, dataset=H)
    c = example_values("ratio", {"num": num_c, "den": den}, dataset=H)
    pc = paired_change(c, b, op=">", alpha=0.05, n_boot=4000, method="percentile",
                       rng=np.random.default_rng(0))
    assert pc.candidate == pytest.approx(num_c.sum() / den.sum())
    assert pc.baseline == pytest.approx(num_b.sum() / den.sum())

    def diff(nc, nb, dd, axis=-1):
        return nc.sum(axis) / dd.sum(axis) - nb.sum(axis) / dd.sum(axis)
    ref = stats.bootstrap((num_c, num_b, den), diff, paired=True, n_resamples=4000,
                          confidence_level=0.90, method="percentile", vectorized=True,
                          rng=np.random.default_rng(5)).confidence_interval
    width = ref.high - ref.low
    assert abs(pc.low - ref.low) < 0.25 * width and abs(pc.high - ref.high) < 0.25 * width
    assert pc.p_value < 0.01 and pc.worse


def test_identical_values_do_not_change_and_direction_matters():
    x = np.linspace(-1, 2, 16)
    e = example_values("mean", {"x": x}, dataset=H)
    pc = paired_change(e, e, op=">", n_boot=500)
    assert (pc.estimate, pc.low, pc.high) == (0.0, 0.0, 0.0) and pc.p_value == 1.0
    up = example_values("mean", {"x": x + 1.0 + 0.01 * np.sin(np.arange(16))}, dataset=H)
    assert paired_change(up, e, op=">", n_boot=500).p_value > 0.9   # better is no regression
    assert paired_change(up, e, op="<", n_boot=500).p_value < 0.01  # lower is better: worse


def test_pairing_needs_the_same_examples():
    a = example_values("mean", {"x": np.ones(8)}, dataset=H)
    assert pairing_problem(a, a) is None
    assert "different data sets" in pairing_problem(a, dict(a, dataset="b" * 64))
    assert "unknown" in pairing_problem(a, dict(a, dataset=None))
    assert "no per-example values" in pairing_problem(a, None)
    assert "different numbers" in pairing_problem(a, example_values("mean", {"x": np.ones(9)}, dataset=H))
    with pytest.raises(ValueError, match="different data sets"):
        paired_change(a, dict(a, dataset="b" * 64), op=">")


def test_assertions_store_per_example_values(tiny_gpt2):
    """The stored values recompute each statistic exactly; the data set's hash names them."""
    from fieldcheck.sites import mlp_out, resid_pre

    field = fc.Field(tiny_gpt2)
    ds = fc.datasets.induction(tiny_gpt2, n=32, seed=0, length=6)  # a clear clean-corrupt gap
    pr = field.patch(ds, resid_pre(1, "END"))
    assert pr.dataset_hash == ds.content_hash()
    rec, eff = fc.assert_effect(pr, fc.recovered > -100, fc.effect < 100, decide="point")
    assert rec.examples["kind"] == "ratio" and rec.examples["dataset"] == ds.content_hash()
    assert value_of(rec.examples) == pytest.approx(rec.estimate, rel=1e-9)
    assert value_of(eff.examples) == pytest.approx(eff.estimate, rel=1e-9)
    multi = fc.assert_effect(field.patch(ds, mlp_out([0, 1], "END")), fc.effect < 100,
                             decide="point")[0]
    assert multi.examples["agg"] == "max" and len(multi.examples["labels"]) == 2
    assert value_of(multi.examples) == pytest.approx(multi.estimate, rel=1e-9)
    sites = resid_pre([0, 1], "END")
    r2 = fc.assert_predicted_effect(field.predict(ds, sites), field.patch(ds, sites),
                                    fc.r2 > -1e9, decide="point")[0]
    assert r2.examples["kind"] == "r2"
    assert value_of(r2.examples) == pytest.approx(r2.estimate, rel=1e-9)
    assert json.loads(json.dumps(rec.to_dict()))["examples"]["n"] == 32


# --- the significant rule on reports ------------------------------------------------------------
def _claim(cid, values, *, bar=0.0, op=">", dataset=H, passed=None):
    x = np.asarray(values, float)
    ok = bool(x.mean() > bar) if passed is None else passed
    r = ClaimResult(statistic="mean", estimate=float(x.mean()), interval=None, op=op, bar=bar,
                    passed=ok, n=x.size, p_value=0.001, assertion="assert_prefers",
                    criterion=f"mean {op} {bar}",
                    examples=example_values("mean", {"x": x}, dataset=dataset)).to_dict()
    return {"id": cid, "outcome": "passed" if ok else "failed", "results": [r]}


def _report(claims):
    return reports.build_report(claims, {"model": {"spec": "m"}}, correction="none")


def test_significant_rule_flags_only_real_moves_and_corrects_across_results():
    rng = np.random.default_rng(0)
    base = {k: rng.normal(2.0, 1.0, 24) for k in "abcd"}
    cand = {"a": base["a"] - 0.8 + rng.normal(0, 0.1, 24),       # moved down: regression
            "b": base["b"] + rng.normal(0, 0.05, 24),           # did not move
            "c": base["c"] + 1.0,                               # moved up: better
            "d": base["d"] + (lambda e: e - e.mean())(rng.normal(0, 0.3, 24))}  # noise only
    rules = [baselines.parse_rule("significant")]
    comp = baselines.compare(_report([_claim(k, v) for k, v in cand.items()]),
                             _report([_claim(k, v) for k, v in base.items()]), rules,
                             alpha=0.05, correction="holm", n_boot=2000)
    rows = {r["claim_id"]: r for r in comp["rows"]}
    assert [r.split(":")[0] for r in comp["regressions"]] == ["a"]
    assert "paired change" in comp["regressions"][0]
    assert rows["c"]["paired"]["better"] and not rows["c"]["regressed"]
    assert comp["paired"]["n_paired"] == 4 and comp["paired"]["n_unpaired"] == 0
    from statsmodels.stats.multitest import multipletests

    p = [rows[k]["paired"]["p_value"] for k in "abcd"]
    adj = multipletests(p, method="holm")[1]
    assert [rows[k]["p_change_adjusted"] for k in "abcd"] == pytest.approx(list(adj))


def test_crossing_the_bar_and_unpaired_results_are_said_plainly():
    x = np.full(12, 0.905) + np.linspace(0, 0.01, 12)
    wiggle = 0.02 * np.tile([1.0, -1.0], 6) - 0.011  # mean 0.899: crossed, no significant move
    base = _report([_claim("a", x, bar=0.9), _claim("b", x, dataset="b" * 64),
                    _claim("c", x, bar=0.9)])
    cur = _report([_claim("a", x + wiggle, bar=0.9), _claim("b", x - 5),
                   _claim("c", x + 0.02 * np.tile([1.0, -1.0], 6), bar=0.9, passed=False)])
    comp = baselines.compare(cur, base, [baselines.parse_rule("significant")], n_boot=500)
    rows = {r["claim_id"]: r for r in comp["rows"]}
    assert rows["a"]["regressed"] == ["significant: crossed the bar"]
    assert rows["a"]["p_change_adjusted"] > 0.05
    # c's verdict flipped but its estimate stayed above the bar and did not move: no regression
    assert rows["c"]["regressed"] == [] and not rows["c"]["passed"]
    assert baselines.compare(cur, base, [baselines.parse_rule("passed")])["regressions"]
    assert rows["b"]["paired"] is None and "different data sets" in rows["b"]["unpaired_reason"]
    assert list(comp["paired"]["unpaired"]) == [rows["b"]["unpaired_reason"]]


# --- whole runs on tiny models saved to folders ------------------------------------------------
CLAIMS = '''
import gc, json, os, weakref
import pytest
import fieldcheck as fc
from fieldcheck import effect
from fieldcheck.sites import attn_out, mlp_out

SEEN = []


@pytest.fixture(scope="session")
def ind(fc_model):
    gc.collect()
    alive = [r() is not None for r in SEEN]   # models of earlier params: freed by now?
    SEEN.append(weakref.ref(fc_model))
    ds = fc.datasets.induction(fc_model, n=32, seed=0, length=6)
    with open(os.environ["FC15_LOG"], "a") as f:
        f.write(json.dumps({"alive": alive, "hash": ds.content_hash(),
                            "worker": os.environ.get("PYTEST_XDIST_WORKER")}) + "\\n")
    return ds
''' + GATE_CLAIMS


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny GPT-2 saved to a folder, an identical copy and a copy whose layer-0 MLP output
    is zeroed. Measured: noising that MLP at END moves the logit difference by 0.73 on the base
    model and by 0 on the copy (paired change -0.73 [-1.28, -0.24], p 0.008: test_moves);
    denoising it, -0.83 -> 0 (a change toward `effect > -50`: test_improves)."""
    return tiny_folders(tmp_path_factory.mktemp("models"), names=("base", "same", "pert"))


def _run(pytester, monkeypatch, *args, subprocess=False):
    pytester.makepyfile(test_claims=CLAIMS)
    log = pytester.path / "log.jsonl"
    monkeypatch.setenv("FC15_LOG", str(log))
    common = ("-p", "no:cacheprovider", "--fc-report-json", "r.json", "--fc-report-html", "r.html")
    res = (pytester.runpytest_subprocess(*common, *args) if subprocess
           else pytester.runpytest_inprocess("-p", "no:xdist", *common, *args))
    rep = json.loads((pytester.path / "r.json").read_text()) if (pytester.path / "r.json").exists() else None
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return res, rep, lines


@pytest.mark.slow   # 5-18 s: make test and CI, not make test-quick
def test_baseline_model_finds_the_regression_that_moved(pytester, monkeypatch, folders):
    # a subprocess: an in-process run's hook recorder keeps every failure's frames alive
    res, rep, log = _run(pytester, monkeypatch, "--fc-model", folders["pert"],
                         "--fc-baseline-model", folders["base"], "-p", "no:xdist", subprocess=True)
    res.assert_outcomes(passed=5, failed=2)
    assert res.ret == 1
    comp = rep["comparison"]
    assert comp["baseline"]["model"] == folders["base"] and comp["rules"] == ["significant"]
    rows = {r["claim_id"].split("::")[-1]: r for r in comp["rows"]}
    assert rows["test_moves"]["regressed"] == ["significant"]
    assert rows["test_moves"]["paired"]["high"] < 0 and rows["test_moves"]["p_change_adjusted"] < 0.05
    assert rows["test_improves"]["regressed"] == [] and rows["test_improves"]["paired"]["better"]
    assert [r.split("::")[-1].split(":")[0] for r in comp["regressions"]] == ["test_moves"]
    out = res.stdout.str()
    assert "1 regression(s)" in out and "fieldcheck claims x models" in out
    # models one after another, the first freed before the second; the same data set on both
    assert [x["alive"] for x in log] == [[], [False]]
    assert log[0]["hash"] == log[1]["hash"]
    ids = sorted(c["id"].split("::")[-1] for c in rep["claims"])
    assert ids == ["test_fails_everywhere[baseline]", "test_fails_everywhere[candidate]",
                   "test_improves[baseline]", "test_improves[candidate]", "test_moves[baseline]",
                   "test_moves[candidate]"]
    # the same claim draws the same resamples on each model (seeded by the id without the label)
    grid = rep["models"]
    assert grid["labels"] == ["baseline", "candidate"] and grid["roles"] == ["baseline", "candidate"]


@pytest.mark.slow   # 5-18 s: make test and CI, not make test-quick
def test_identical_candidate_has_no_regression(pytester, monkeypatch, folders):
    res, rep, _ = _run(pytester, monkeypatch, "--fc-model", folders["same"],
                       "--fc-baseline-model", folders["base"])
    res.assert_outcomes(passed=5, failed=2)   # the claim that fails on both models
    assert rep["comparison"]["regressions"] == [] and "regression(s)" not in res.stdout.str()
    for row in rep["comparison"]["rows"]:
        assert row["paired"]["estimate"] == 0.0 and row["paired"]["interval"] == [0.0, 0.0]
    by = {c["id"]: c["results"][0] for c in rep["claims"]}
    for cid, r in by.items():   # identical model, identical draws: identical intervals
        twin = by[cid.replace("[baseline]", "[candidate]")]
        assert r["interval"] == twin["interval"] and r["p_value"] == twin["p_value"]


@pytest.mark.slow   # 5-18 s: make test and CI, not make test-quick
def test_sweep_with_xdist_renders_the_grid(pytester, monkeypatch, folders):
    specs = ",".join(folders[k] for k in ("base", "same", "pert"))
    res, rep, log = _run(pytester, monkeypatch, "-n", "2", "--fc-models", specs, subprocess=True)
    res.assert_outcomes(passed=7, failed=3)
    grid = rep["models"]
    assert grid["labels"] == ["base", "same", "pert"] and len(grid["rows"]) == 3
    moves = next(r for r in grid["rows"] if r["claim"].endswith("test_moves"))
    assert [c["verdict"] for c in moves["cells"]] == ["PASS"] * 3
    assert moves["changes"][0] is None and moves["changes"][1]["estimate"] == 0.0
    assert moves["changes"][2]["worse"]
    assert len({x["hash"] for x in log}) == 1 and {x["worker"] for x in log} <= {"gw0", "gw1"}
    html = (pytester.path / "r.html").read_text()
    assert html.count('class="trend"') == 3 and "Claims x models" in html


SAE_CLAIMS = '''
import os
import pytest
import fieldcheck as fc
from fieldcheck import auroc, effect, mean_diff, rate_on, recovered


@pytest.fixture(scope="session")
def sae():
    """One SAE, trained on the baseline, applied to both models."""
    return fc.sae.load(os.environ["FC_SAE"])


@pytest.fixture(scope="session")
def ind(fc_model):
    return fc.datasets.induction(fc_model, n=24, seed=0, length=6)


@pytest.fixture(scope="session")
def ioi(fc_model):
    return fc.datasets.ioi(fc_model, n=24, seed=0)


def test_feature_effect(field, ind, sae):
    lat = [int(x) for x in os.environ["FC_LATENTS"].split(",")]
    res = field.patch(ind, fc.sites.features(sae, lat, "all"), direction="noise", jointly=True)
    fc.assert_feature_effect(res, effect > -100, decide="point")


def test_feature_activations(field, ind, ioi, sae):
    sel = field.selectivity(sae, int(os.environ["FC_LATENTS"].split(",")[0]), ind, ioi)
    fc.assert_selective(sel, rate_on > -1, mean_diff > -100, auroc > -1, decide="point")
'''


@pytest.fixture(scope="module")
def tiny_sae(folders, tmp_path_factory):
    """An SAE trained in-process on the base model's layer-1 residual stream, and the latents
    most active at END of its induction prompts (the claims patch and read those)."""
    from fieldcheck.experiments.features import feature_run

    base = fc.load_model(folders["base"])
    out = tmp_path_factory.mktemp("sae") / "sae"
    with pytest.MonkeyPatch.context() as mp:  # the activation cache too, not the user's $FIELDCHECK_HOME
        mp.setenv("FIELDCHECK_HOME", str(out.parent))
        d = fc.sae.train(base, "blocks.1.hook_resid_pre", d_sae=128, k=8, n_tokens=3000, context=32, epochs=2,
                         batch_size=256, out=out, progress=False)
    ds = fc.datasets.induction(base, n=24, seed=0, length=6)
    f = feature_run(fc.Field(base), ds, d).f["clean"][:, 1:]
    latents = [int(i) for i in f.mean((0, 1)).argsort(descending=True)[:4]]
    return str(out), latents


@pytest.mark.slow   # subprocesses or plugin runs: make test and CI, not make test-quick
def test_baseline_model_pairs_feature_effects_and_activations(pytester, monkeypatch, folders, tiny_sae):
    """A gating run applies one SAE to both models: the feature effect and the selectivity
    statistics are compared paired over the same examples (mean_diff and auroc over both prompt
    sets), and the terminal says that the SAE was trained on the baseline, with its explained
    variance on the candidate."""
    path, latents = tiny_sae
    monkeypatch.setenv("FC_SAE", path)
    monkeypatch.setenv("FC_LATENTS", ",".join(map(str, latents)))
    pytester.makepyfile(test_sae_claims=SAE_CLAIMS)
    res = pytester.runpytest_inprocess("-p", "no:xdist", "-p", "no:cacheprovider", "--fc-model", folders["pert"],
                                       "--fc-baseline-model", folders["base"], "--fc-report-json", "r.json")
    res.assert_outcomes(passed=4)
    rep = json.loads((pytester.path / "r.json").read_text())
    rows = {(r["claim_id"].split("::")[-1], r["statistic"]): r for r in rep["comparison"]["rows"]}
    assert set(rows) == {("test_feature_effect", "effect"), ("test_feature_activations", "rate_on"),
                         ("test_feature_activations", "mean_diff"), ("test_feature_activations", "auroc")}
    for key, row in rows.items():
        assert row["paired"] is not None, (key, row.get("unpaired_reason"))
        assert row["paired"]["n"] == 24 if key[1] in ("effect", "rate_on") else row["paired"]["n"] == 48
    assert rows[("test_feature_effect", "effect")]["paired"]["method"].startswith("paired: ")
    assert "paired" in rows[("test_feature_activations", "auroc")]["paired"]["method"]
    by = {c["id"].split("::")[-1]: c["results"] for c in rep["claims"]}
    sae_base = by["test_feature_effect[baseline]"][0]["details"]["sae"][0]
    sae_cand = by["test_feature_effect[candidate]"][0]["details"]["sae"][0]
    assert not sae_base["other_model"] and sae_cand["other_model"]
    assert sae_cand["trained_on"] == sae_base["applied_to"] and sae_cand["applied_to"] != sae_base["applied_to"]
    # the perturbed model's layer-0 MLP is zeroed: the SAE reconstructs its layer-1 stream worse
    assert sae_cand["explained_variance"] < sae_base["explained_variance"]
    out = res.stdout.str()
    line = next(x for x in out.splitlines() if "was trained on" in x)
    assert sae_base["applied_to"] in line and sae_cand["applied_to"] in line
    evs = [s["explained_variance"] for c, rs in by.items() if c.endswith("[candidate]") for r in rs
           for s in r["details"]["sae"]]
    assert f"explained variance {min(evs):.3f} to {max(evs):.3f} there" in line and "4 result(s) use it" in line
    assert sum("was trained on" in x for x in out.splitlines()) == 1


def _sweep_report():
    claims = []
    for spec, lab, shift in (("m1", "step1", 0.0), ("m2", "step2", 0.5), ("m3", "step3", 1.0)):
        c = _claim(f"t.py::test_a[{lab}]", np.linspace(0, 1, 12) + shift, bar=0.8)
        c.update(model=spec, base_id="t.py::test_a")
        claims.append(c)
    rep = _report(claims)
    rep["models"] = reports.build_grid(rep["claims"], ["m1", "m2", "m3"],
                                       {"m1": "step1", "m2": "step2", "m3": "step3"}, n_boot=500)
    return rep


def test_grid_rows_changes_and_trend_plots():
    rep = _sweep_report()
    g = rep["models"]
    (row,) = g["rows"]
    assert row["claim"] == "t.py::test_a" and [c["verdict"] for c in row["cells"]] == ["FAIL", "PASS", "PASS"]
    assert row["changes"][0] is None
    assert [ch["estimate"] for ch in row["changes"][1:]] == pytest.approx([0.5, 1.0])
    assert row["changes"][2]["better"] and not row["changes"][2]["worse"]
    text = reports.format_grid(rep)
    assert text.splitlines()[0].split()[-3:] == ["step1", "step2", "step3"]
    assert "1.5 PASS (+1 [1, 1])" in text
    page = reports.render_html(rep)
    assert page.count('class="trend"') == 1 and "Claims x models" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed: "
                    "apt-get update && apt-get install -y chromium")
@pytest.mark.slow   # subprocesses or plugin runs: make test and CI, not make test-quick
def test_html_grid_in_headless_chromium(tmp_path):
    """The grid and its trend plots render in a real browser: the DOM holds the grid and the
    decoded pictures have their size, and the page is not blank."""
    import subprocess

    from PIL import Image, ImageStat

    rep = _sweep_report()
    page = reports.write_html(tmp_path / "grid.html", rep)
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
             "--window-size=1200,1600"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert "Claims x models" in dom and "step3" in dom
    assert dom.count('class="trend"') == 1 and "data:image/png;base64," in dom
    assert "1.5 PASS" in dom and "0.5 FAIL" in dom
    shot = tmp_path / "shot.png"
    out = subprocess.run(flags + [f"--screenshot={shot}", page.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert shot.is_file(), out.stderr[-2000:]
    assert ImageStat.Stat(Image.open(shot).convert("L")).var[0] > 100, "screenshot is blank"


def test_usage_errors(pytester):
    pytester.makepyfile(test_x="def test_a():\n    pass\n")
    for args, msg in ((("--fc-models", "a"), "give at least two"),
                      (("--fc-models", "a,a"), "names a model twice"),
                      (("--fc-baseline-model", "x", "--fc-models", "a,b"), "cannot be combined"),
                      (("--fc-baseline-model", "tiny-gpt2", "--fc-model", "tiny-gpt2"), "is the --fc-model itself"),
                      (("--fc-baseline-model", "x", "--fc-compare=v1"), "use one of them")):
        res = pytester.runpytest_inprocess("-p", "no:xdist", "-p", "no:cacheprovider", *args)
        assert res.ret == 4 and msg in res.stderr.str(), (args, res.stderr.str())


# --- SmolLM2 and a perturbed copy ------------------------------------------------------------
SMOL_CLAIMS = '''
import pytest
import fieldcheck as fc
from fieldcheck import recovered
from fieldcheck.sites import resid_pre


@pytest.fixture(scope="session")
def ioi(fc_model):
    return fc.datasets.ioi(fc_model, n=16, seed=0)


def test_joint_s2_end_recovers(field, ioi):
    """Denoising S2 and END together at layer 22 (measured on SmolLM2: 0.95; on the copy with
    attention outputs of layers 24-27 scaled by 0.3: 0.925, paired change -0.025)."""
    fc.assert_effect(field.patch(ioi, resid_pre(22, ["S2", "END"]), jointly=True),
                     recovered > 0.85)


def test_early_residual(field, ioi):
    """Denoising the S2 embedding restores the clean run (the only differing token):
    recovered is 1 whatever layers 24-27 do, so the estimate cannot move."""
    fc.assert_effect(field.patch(ioi, resid_pre(0, "S2")), recovered > 0.9, decide="point")
'''


@pytest.mark.pretrained
def test_smollm2_perturbed_copy(pytester, monkeypatch, smollm2, tmp_path):
    cand = perturbed_smollm2(tmp_path / "smollm2-oproj-x0.3")
    pytester.makepyfile(test_smol=SMOL_CLAIMS)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fc-model", str(cand),
                                        "--fc-baseline-model", "smollm2-135m",
                                        "--fc-report-json", "r.json")
    rep = json.loads((pytester.path / "r.json").read_text())
    rows = {r["claim_id"].split("::")[-1]: r for r in rep["comparison"]["rows"]}
    late, early = rows["test_joint_s2_end_recovers"], rows["test_early_residual"]
    assert late["regressed"] == ["significant"] and late["paired"]["worse"], res.stdout.str()
    assert late["passed"] and late["baseline_passed"]        # it moved, and still passes
    assert early["regressed"] == [] and abs(early["paired"]["estimate"]) < 1e-6
    assert res.ret == 1
