"""Reliability (issue 9): the bad-input catalogue, determinism of reports, faults.

- ``test_catalogue_rows_point_at_real_tests`` walks the table in docs/troubleshooting.md: every
  row names a FieldcheckError subclass (or a usage error / warning) and the test that checks it.
- The bad inputs that had no test elsewhere are tested here (``CASES``); the ones fieldcheck
  did not handle at first are tested at the end of the table-driven section.
- End-to-end (pytester, subprocess, ``--fc-model tiny-gpt2``): a model whose outputs are NaN makes
  its claim an error, never a pass, and the session still reports; real claims (bootstrap and
  sign-flip draws) give the same JSON report across two runs and across ``-n 1``/``-n 2``, and a
  claim run alone gets the same draws as in the full run; a baseline writer killed mid-write
  never leaves a baseline that a later ``--fc-compare`` trusts.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import fieldcheck as fc
import fieldcheck.errors as E
from fieldcheck import sites as S
from fieldcheck.claim.assertions import AssertionInputError
from fieldcheck.data.contrastive import ContrastiveSet, NotEnoughExamples
from fieldcheck.reports.schema import strip_volatile

pytest_plugins = "pytester"

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "troubleshooting.md"


# ------------------------------------------------------------------------------------------------
# the catalogue in docs/troubleshooting.md


def _catalogue_rows() -> list[list[str]]:
    rows = []
    for line in DOC.read_text().split("## More cases", 1)[1].splitlines():
        if not line.startswith("| ") or line.startswith("| case") or set(line) <= set("|- "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append(cells)
    return rows


_NOT_FIELDCHECK_ERRORS = {"UsageError", "RuntimeWarning", "ClaimFailed"}
_ERROR_MODULES = ("fieldcheck.errors", "fieldcheck.data.contrastive", "fieldcheck.claim.assertions")


def _error_class(name: str):
    for mod in _ERROR_MODULES:
        cls = getattr(importlib.import_module(mod), name, None)
        if cls is not None:
            return cls
    return None


def test_catalogue_rows_point_at_real_tests():
    rows = _catalogue_rows()
    assert len(rows) >= 25
    for case, err, fix, tested in rows:
        assert case and fix, (case, fix)
        names = re.findall(r"`([A-Z]\w+)`", err)
        assert names or err == "none" or err.startswith("outcome"), f"row {case!r}: {err!r}"
        for n in names:
            if n in _NOT_FIELDCHECK_ERRORS:
                continue
            cls = _error_class(n)
            assert cls is not None and issubclass(cls, E.FieldcheckError), f"row {case!r}: {n}"
        refs = re.findall(r"`([\w/]+\.py)::(\w+)`", tested)
        assert refs, f"row {case!r}: no test named in {tested!r}"
        for path, func in refs:
            src = (ROOT / "tests" / path).read_text()
            assert re.search(rf"^def {func}\(", src, re.M), f"row {case!r}: {path}::{func} is missing"


# ------------------------------------------------------------------------------------------------
# bad inputs without a test elsewhere


@pytest.fixture(scope="module")
def setup(tiny_gpt2):
    ds = fc.datasets.ioi(tiny_gpt2, n=4, seed=0)
    return tiny_gpt2, ds, fc.Field(tiny_gpt2)


def _long_set(n_ctx: int) -> ContrastiveSet:
    """A set whose prompts are longer than ``n_ctx`` tokens (as if built for another model)."""
    toks = torch.arange(n_ctx + 4).remainder(50).repeat(2, 1) + 10
    return ContrastiveSet(clean_tokens=toks, corrupt_tokens=toks.flip(1), answers=[11, 11], wrong=[12, 12],
                          positions={}, clean_prompts=["a", "b"], corrupt_prompts=["c", "d"],
                          answer_strs=["x", "x"], wrong_strs=["y", "y"], name="long")


# (case id, call(model, ds, field), error class, pattern the message must match)
CASES = [
    ("empty site set", lambda m, ds, f: f.patch(ds, S.resid_pre(range(0), 0)),
     E.SiteError, r"site set is empty; give at least one layer"),
    ("layer not an int", lambda m, ds, f: f.patch(ds, S.resid_pre(None, 0)),
     E.SiteError, r"layers=None is not an int"),
    ("negative head out of range", lambda m, ds, f: f.patch(ds, S.attn_head(0, -9, 0)),
     E.SiteError, r"head -9 out of range: the model has heads 0\.\.3"),
    ("site label with an empty position", lambda m, ds, f: f.patch(ds, "L0.resid_pre@"),
     E.SiteError, r"has an empty position after '@'; write e\.g\. 'L0\.resid_pre@END'"),
    ("site label of a component that is not a site", lambda m, ds, f: f.patch(ds, "embed@END"),
     E.SiteError, r"'embed@END' is a component but not a site"),
    ("site label with a misspelled component", lambda m, ds, f: f.patch(ds, "L0.mpl@END"),
     E.SiteError, r"unknown component 'mpl' \(did you mean 'L0\.mlp'\?\)"),
    ("site given as a number", lambda m, ds, f: f.patch(ds, 3),
     E.SiteError, r"3 is not a site set; build one with fieldcheck\.sites"),
    ("Site with an unknown position name", lambda m, ds, f: f.patch(ds, S.Site("resid_pre", 0, "S9")),
     E.SiteError, r"position name 'S9' is not in the data set.*'S2'"),
    ("metric neither name nor callable", lambda m, ds, f: f.patch(ds, S.resid_pre(0, "END"), metric=3),
     E.MetricError, r"metric 3 is neither a name \(logit_diff"),
    ("metric returning inf", lambda m, ds, f: f.patch(ds, S.resid_pre(1, "END"),
                                                      metric=lambda lg, d: lg[:, 0] * float("inf")),
     E.MetricError, r"returned NaN or inf for 4 of 4 examples"),
    ("alpha not a number", lambda m, ds, f: f.patch(ds, S.resid_pre(0, "END"), alpha="half"),
     E.SourceError, r"alpha must be a number, got 'half'"),
    ("steering vector with NaN", lambda m, ds, f: f.patch(ds, S.resid_pre(0, "END"),
                                                          source=torch.full((m.cfg.d_model,), float("nan"))),
     E.SourceError, r"steering vector contains NaN or inf"),
    ("steering vector of three dims", lambda m, ds, f: f.patch(ds, S.resid_pre(0, "END"),
                                                               source=torch.ones(1, 1, m.cfg.d_model)),
     E.SourceError, r"\[d_model\] or \[batch, d_model\], got shape \(1, 1, 64\)"),
    ("steering vector for another batch", lambda m, ds, f: f.patch(ds, S.resid_pre(0, "END"),
                                                                   source=torch.ones(3, m.cfg.d_model)),
     E.SourceError, r"shape \(3, 64\) does not fit site L0\.resid_pre@END: expected \[64\] or \[4, 64\]"),
    ("gaussian scale negative", lambda m, ds, f: fc.sources.gaussian(-1.0),
     E.SourceError, r"scale must be a finite number >= 0, got -1\.0"),
    ("unknown source object", lambda m, ds, f: f.patch(ds, S.resid_pre(0, "END"), source=5),
     E.SourceError, r"unknown source 5; use 'other', 'zero', 'mean'"),
    ("take 0 examples", lambda m, ds, f: ds.take(0),
     E.DatasetError, r"take\(0\): give a positive number of examples"),
    ("claim asks for more examples than the set has", lambda m, ds, f: ds.sample(10, seed=1),
     NotEnoughExamples, r"sample\(10\): the data set 'ioi-abc' has only 4 examples; ask for at most 4"),
    ("concat of different lengths", lambda m, ds, f: ContrastiveSet.concat([ds, _long_set(20)]),
     E.DatasetError, r"cannot concatenate sets of token lengths \[15, 24\]"),
    ("JSONL line that is not an object", "jsonl:[1, 2]\n",
     E.DatasetError, r":1: expected a JSON object, got list"),
    ("JSONL file with no records", "jsonl:\n\n",
     E.DatasetError, r"empty data set: .* has no records"),
    ("JSONL file that is not UTF-8", b"jsonl:\xff\xfe{}\n",
     E.DatasetError, r"is not UTF-8 text .*save it as UTF-8"),
    ("JSONL positions not an object", 'jsonl:{"clean": "a", "corrupt": "b", "answer": " x", '
                                      '"wrong": " y", "positions": [1]}\n',
     E.DatasetError, r":1: .*'positions' must be an object"),
    ("assertion given the wrong object", lambda m, ds, f: fc.assert_effect([1, 2, 3], fc.recovered > 0.5),
     AssertionInputError, r"assert_effect expects"),
    ("assertion without a criterion", lambda m, ds, f: fc.assert_effect(f.patch(ds, S.resid_pre(1, "S2"))),
     E.CriterionError, r"needs at least one criterion"),
]


@pytest.mark.parametrize("case, call, err, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input(setup, tmp_path, case, call, err, pattern):
    m, ds, f = setup
    if isinstance(call, (str, bytes)):  # a JSONL file with this content
        p = tmp_path / "set.jsonl"
        body = call[len("jsonl:"):] if isinstance(call, str) else call[len(b"jsonl:"):]
        p.write_bytes(body.encode() if isinstance(body, str) else body)
        call = lambda m, ds, f: ContrastiveSet.from_jsonl(m, p)  # noqa: E731
    with pytest.raises(err) as e:
        call(m, ds, f)
    assert isinstance(e.value, E.FieldcheckError)
    assert re.search(pattern, str(e.value)), str(e.value)


# --- Field, sites and metrics: errors handled in field.py / sites.py / metrics.py ---------------------



@pytest.mark.parametrize("site, pattern", [
    (S.Site("resid_pre", 99, 0), r"layer 99 out of range"),
    (S.Site("attn_head", 0, 0, 99), r"head 99 out of range"),
    (S.Site("resid_pre", 0, 99), r"position 99 out of range"),
    (S.Site("attn_head", 0, 0), r"head"),
])
def test_direct_site_out_of_range(setup, site, pattern):
    m, ds, f = setup
    with pytest.raises(E.SiteError, match=pattern):
        f.patch(ds, site)


@pytest.mark.parametrize("call", [
    lambda m, ds, f: fc.Field(m, engine="fast"),
    lambda m, ds, f: f.patch(ds, S.resid_pre(0, 0), direction="sideways"),
    lambda m, ds, f: f.phi(ds, "both"),
], ids=["engine", "direction", "which"])
def test_field_argument_errors_are_fieldcheck_errors(setup, call):
    m, ds, f = setup
    with pytest.raises(E.FieldcheckError):
        call(m, ds, f)


@pytest.mark.parametrize("model", [None, 42], ids=["None", "int"])
def test_field_of_something_that_is_not_a_model(model):
    with pytest.raises(E.FieldcheckError, match="load_model"):
        fc.Field(model)


@pytest.mark.parametrize("what", ["answers", "tokens"])
def test_set_of_another_vocabulary(setup, what):
    m, ds, f = setup
    big = m.cfg.d_vocab + 7
    if what == "answers":
        bad = ds._replace(answers=torch.full((ds.n,), big))
    else:
        bad = ds._replace(clean_tokens=ds.clean_tokens + big, corrupt_tokens=ds.corrupt_tokens + big)
    with pytest.raises(E.DatasetError, match=rf"outside this model's vocabulary of {m.cfg.d_vocab}: build the set"):
        fc.Field(m).patch(bad, S.resid_pre(1, "END"))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_set_longer_than_the_context_at_the_field(arch):
    from fieldcheck.testing import tiny_model

    m = tiny_model(arch, n_ctx=16)
    with pytest.raises(E.DatasetError, match=r"20 tokens.*context of 16"):
        fc.Field(m).patch(_long_set(16), S.resid_pre(1, "END"))


def test_metric_returning_a_non_number(setup):
    m, ds, f = setup
    with pytest.raises(E.MetricError, match="str"):
        f.patch(ds, S.resid_pre(1, "END"), metric=lambda lg, d: "high")


# ------------------------------------------------------------------------------------------------
# the plugin: usage errors, a device that does not exist


@pytest.fixture(autouse=True)
def _no_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)


CLAIM_PASSES = '''
import fieldcheck as fc
from fieldcheck.sites import resid_pre

def test_claim(field):
    ds = fc.datasets.ioi(field.model, n=8, seed=0)
    fc.assert_effect(field.patch(ds, resid_pre(1, "S2")), fc.effect > -100)
'''


@pytest.mark.parametrize("args, needle", [
    (["--fc-dtype", "float8"], "--fc-dtype 'float8' is unknown: use float32, bfloat16 or float16"),
    (["--fc-seed", "abc"], "--fc-seed 'abc' is not an integer"),
])
def test_plugin_usage_errors(pytester, args, needle):
    pytester.makepyfile(test_c=CLAIM_PASSES)
    res = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert res.ret == 4
    assert needle in res.stderr.str()


def test_plugin_device_that_does_not_exist(pytester):
    """--fc-device cuda:99: every claim that needs the model errors, naming the device."""
    pytester.makepyfile(test_c=CLAIM_PASSES)
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-model", "tiny-gpt2", "--fc-device", "cuda:99",
                             "--fc-report-json", "r.json")
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines(["*could not load the model 'tiny-gpt2' (--fc-model): DeviceError*cuda:99*"])
    rep = json.loads((pytester.path / "r.json").read_text())
    assert rep["claims"][0]["outcome"] == "error" and rep["summary"]["ok"] is False


# ------------------------------------------------------------------------------------------------
# end to end with a real tiny model (subprocesses: the model stack is imported there)

NAN_CLAIMS = '''
import torch
import fieldcheck as fc
from fieldcheck.field.arch import _raw
from fieldcheck.sites import resid_pre


def test_a_poisoned_model(field, fc_model):
    """The weights are poisoned with NaN for this claim only; whatever the statistic, the claim
    must not pass."""
    w = _raw(fc_model.original_model.transformer).ln_f.weight
    saved = w.detach().clone()
    with torch.no_grad():
        w.fill_(float("nan"))
    try:
        ds = fc.datasets.ioi(fc_model, n=8, seed=1)
        fc.assert_effect(field.patch(ds, resid_pre(1, "S2")), fc.recovered > -100)
    finally:
        with torch.no_grad():
            w.copy_(saved)


def test_b_inf_only_at_the_output(field, fc_model):
    """inf in the unembedding: the residual stream is finite, the metric is not."""
    W = fc_model.original_model.lm_head.weight
    saved = W.detach().clone()
    with torch.no_grad():
        W[:5] = float("inf")
    try:
        ds = fc.datasets.ioi(fc_model, n=8, seed=2)
        fc.assert_effect(field.patch(ds, resid_pre(1, "S2"), metric="logprob"), fc.recovered > -100)
    finally:
        with torch.no_grad():
            W.copy_(saved)


def test_c_after_the_poison(field):
    ds = fc.datasets.ioi(field.model, n=8, seed=0)
    # effect, not recovered: a random tiny model's clean-corrupt gap is not clearly away from 0
    fc.assert_effect(field.patch(ds, resid_pre(1, "S2")), fc.effect > -100)
'''


@pytest.mark.slow
def test_nan_model_outputs_make_the_claim_an_error_never_a_pass(pytester):
    pytester.makepyfile(test_nan=NAN_CLAIMS)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fc-model", "tiny-gpt2",
                                        "--fc-report-json", "r.json", "--fc-report-html", "r.html")
    res.assert_outcomes(passed=1, failed=2)
    assert res.ret == 1
    rep = json.loads((pytester.path / "r.json").read_text())
    by = {c["id"].split("::")[1]: c for c in rep["claims"]}
    for name in ("test_a_poisoned_model", "test_b_inf_only_at_the_output"):
        assert by[name]["outcome"] == "error", by[name]
        assert "NumericalError" in by[name]["error"] and "NaN or inf" in by[name]["error"]
        assert by[name]["results"] == []  # nothing was decided on non-finite numbers
    assert by["test_c_after_the_poison"]["outcome"] == "passed"
    assert rep["summary"]["ok"] is False and rep["summary"]["outcomes"]["error"] == 2
    assert (pytester.path / "r.html").stat().st_size > 1000
    res.stdout.fnmatch_lines(["*fieldcheck claims*"])


DET_CLAIMS = '''
import pytest
import fieldcheck as fc
from fieldcheck import effect
from fieldcheck.sites import resid_pre


def _ds(field, seed):
    return fc.datasets.ioi(field.model, n=24, seed=seed)


def test_s2_layer1(field, fc_seed):
    # effect criteria only: a random tiny model's clean-corrupt gap is not clearly away from 0,
    # so recovered is refused there (InsufficientData)
    fc.assert_effect(field.patch(_ds(field, fc_seed), resid_pre(1, "S2")), effect > 0, effect > -1)


def test_end_per_layer(field, fc_seed):
    fc.assert_effect(field.patch(_ds(field, fc_seed), resid_pre(1, ["S2", "END"])), effect > 0, require="any")


@pytest.mark.fieldcheck(seed=7)
def test_pinned_seed(field, fc_seed):
    fc.assert_effect(field.patch(_ds(field, fc_seed), resid_pre(1, ["IO", "S2"]), jointly=True),
                     effect > 0.5, effect > 0)
'''


def _draws(rep: dict) -> dict:
    """Per claim: the results without the session-wide correction."""
    keep = ("statistic", "estimate", "interval", "p_value", "n", "passed", "method")
    return {c["id"]: [{k: r.get(k) for k in keep} for r in c["results"]] for c in rep["claims"]}


@pytest.mark.slow
def test_real_claims_give_identical_reports_across_runs_and_workers(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_det=DET_CLAIMS)
    common = ["-p", "no:cacheprovider", "--fc-model", "tiny-gpt2", "--fc-seed", "3"]
    reps = {}
    # "a" and "n1" are two separate runs in one process each; "n2" spreads the claims over two
    for name, extra in (("a", []), ("n1", ["-n", "1"]), ("n2", ["-n", "2"])):
        res = pytester.runpytest_subprocess(*common, *extra, "--fc-report-json", f"{name}.json")
        assert res.ret in (0, 1), res.stdout.str()[-2000:]
        reps[name] = json.loads((pytester.path / f"{name}.json").read_text())
    a = reps["a"]
    assert len(a["claims"]) == 3 and all(c["results"] for c in a["claims"])
    # the draws are real (not degenerate): a bootstrap interval of positive width
    assert any(r["interval"][1] > r["interval"][0] for c in a["claims"] for r in c["results"])
    for name in ("n1", "n2"):
        assert strip_volatile(reps[name]) == strip_volatile(a), name
    # a claim run alone (other claims not run before it) gets the same draws
    res = pytester.runpytest_subprocess(*common, "test_det.py::test_end_per_layer",
                                        "--fc-report-json", "alone.json")
    alone = _draws(json.loads((pytester.path / "alone.json").read_text()))
    assert alone == {k: v for k, v in _draws(a).items() if k.endswith("test_end_per_layer")}


# ------------------------------------------------------------------------------------------------
# faults: a baseline writer killed mid-write


def test_killed_baseline_save_never_leaves_a_baseline_that_is_trusted(tmp_path):
    """--fc-save killed at random moments: ``--fc-compare`` (latest) then loads a complete baseline
    or says that none is saved, never a half-written one."""
    code = textwrap.dedent(f"""
        from pathlib import Path
        from pytest_fieldcheck import baselines
        from fieldcheck import reports
        big = {{"schema_version": reports.SCHEMA_VERSION, "run": {{}}, "timing": {{}},
               "claims": [{{"id": "c%d" % i, "outcome": "passed", "results": [],
                           "pad": "x" * 2000}} for i in range(2000)]}}
        print("ready", flush=True)
        i = 0
        while True:
            big["run"]["i"] = i
            baselines.save(big, "v%d" % (i % 3), Path({str(tmp_path)!r}))
            i += 1
    """)
    from fieldcheck.errors import BaselineError
    from pytest_fieldcheck import baselines

    for delay in (0.05, 0.3, 0.6):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            _, rep = baselines.load("latest", tmp_path)
        except BaselineError as e:
            assert "no baseline saved yet" in str(e)
        else:
            assert len(rep["claims"]) == 2000
        for p in baselines.baseline_dir(tmp_path).glob("v*.json"):
            assert len(json.loads(p.read_text())["claims"]) == 2000
