"""Verdicts a release gate can trust: the default correction passes large suites of true claims,
and a claim's verdict depends only on its own evidence and the size of its family."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

import fieldcheck as fc
from fieldcheck import config, effect, mean, rate, recovered
from fieldcheck.claim import result as claim_result
from fieldcheck.reports import schema

pytest_plugins = "pytester"

N = 16


class _Recording:
    def __enter__(self):
        self.results = []
        claim_result.set_sink(self.results.append)
        return self

    def __exit__(self, *exc):
        claim_result.set_sink(None)


def _true_claim(i: int, rng: np.random.Generator):
    """One true claim of a rotating kind (recovered, effect, mean, rate), n = 16, whose bar lies
    5 standard errors beyond its one-sided 95% bound. The standard error is the one the
    interval states on the tested side, |estimate - bound| / t_15(0.95) (a skewed statistic
    has a longer interval toward its bar), measured first at the default settings."""
    from scipy.stats import t as tdist

    kind = ("recovered", "effect", "mean", "rate")[i % 4]
    t95 = float(tdist.ppf(0.95, N - 1))

    def far(probe, sign):
        se = abs(probe.estimate - probe.bound) / t95
        return probe.bound - sign * 5 * se

    with config.override(claim_id=f"suite::claim_{i}"):
        if kind == "recovered":
            # gaps with a coefficient of variation of 0.25: with Gamma(4, 0.5) gaps (CV 0.5)
            # the ratio's bootstrap is skewed enough at n = 16 that 5 interval-SE beyond the
            # bound can leave p near 2e-4 (measured; docs/statistics.md)
            corrupt = rng.normal(0, 1, N)
            clean = corrupt + rng.gamma(16, 0.125, N)
            vals = corrupt + rng.uniform(0.5, 0.95) * (clean - corrupt) + rng.normal(0, 0.3, N)
            res = NS(values=vals[None], effect=(vals - corrupt)[None], baseline_clean=clean,
                     baseline_corrupt=corrupt, sites=[], direction="denoise", jointly=True,
                     metric="logit_diff")
            bar = far(fc.assert_effect(res, recovered > -100.0)[0], 1)
            return lambda: fc.assert_effect(res, recovered > bar)
        if kind == "effect":
            x = rng.normal(rng.uniform(-3, 3), rng.uniform(0.2, 2), N)
            res = NS(values=x[None], effect=x[None], baseline_clean=x + 5,
                     baseline_corrupt=np.zeros(N), sites=[], direction="denoise",
                     jointly=True, metric="logit_diff")
            bar = far(fc.assert_effect(res, effect < 100.0)[0], -1)
            return lambda: fc.assert_effect(res, effect < bar)
        if kind == "mean":
            x = rng.normal(rng.uniform(-3, 3), rng.uniform(0.2, 2), N)
            bar = far(fc.assert_prefers(x, mean > -100.0)[0], 1)
            return lambda: fc.assert_prefers(x, mean > bar)
        ld = rng.normal(2, 1, N) * np.where(rng.random(N) < 0.9, 1, -1)
        ld[0] = abs(ld[0]) + 0.1
        bar = max(far(fc.assert_prefers(ld, rate > 0.0)[0], 1), 0.01)
        return lambda: fc.assert_prefers(ld, rate > bar)


@pytest.mark.slow
def test_500_true_claims_pass_under_the_default_correction():
    """A suite of 500 true claims (n = 16, default settings, each bound >= 5 SE from its bar)
    passes the session's default correction (Bonferroni at alpha / 500 = 1e-4)."""
    rng = np.random.default_rng(12)
    claims = []
    with _Recording() as rec:
        makers = [_true_claim(i, rng) for i in range(500)]
        rec.results.clear()
        for i, make in enumerate(makers):
            with config.override(claim_id=f"suite::claim_{i}"):
                make()
    for i, r in enumerate(rec.results):
        assert r.passed
        claims.append({"id": f"suite::claim_{i:03d}", "outcome": "passed",
                       "results": [r.to_dict()]})
    assert len(claims) == 500
    rep = schema.build_report(claims, {})
    assert rep["summary"]["failed_after_correction"] == [] and rep["summary"]["ok"]
    ps = sorted(c["results"][0]["p_value"] for c in rep["claims"])
    assert ps[-1] <= 0.05 / 500
    assert {c["results"][0]["family_size"] for c in rep["claims"]} == {500}


# --- the decision layer: stability and families -------------------------------------------------
def _claims(ps: dict[str, float]) -> list[dict]:
    return [{"id": cid, "outcome": "passed",
             "results": [{"p_value": p, "passed": True, "decide": "bound", "alpha": 0.05}]}
            for cid, p in ps.items()]


def _verdict(ps: dict[str, float], who: str, **kw) -> tuple[bool, float]:
    cl = _claims(ps)
    schema.apply_correction(cl, **kw)
    r = next(c for c in cl if c["id"] == who)["results"][0]
    return r["passed_corrected"], r["p_adjusted"]


def test_bonferroni_verdict_depends_only_on_own_p_and_family_size():
    """Perturbing other claims' p-values never moves a claim's adjusted p under the default;
    under Holm the same perturbation flips it (why Holm is not the default)."""
    rng = np.random.default_rng(0)
    base = {"f.py::a": 0.008, **{f"f.py::o{i}": 1e-9 for i in range(5)}}
    ref = _verdict(base, "f.py::a")
    assert ref == (True, pytest.approx(0.048))
    for _ in range(50):
        other = {k: (float(rng.uniform(0, 1)) if k != "f.py::a" else v) for k, v in base.items()}
        assert _verdict(other, "f.py::a") == ref
    base["f.py::a"] = 0.02    # 6 * 0.02 > 0.05: fails under Bonferroni whatever the others
    assert all(not _verdict({**base, **{f"f.py::o{i}": x for i in range(5)}}, "f.py::a")[0]
               for x in (1e-9, 0.04))
    lucky = _verdict(base, "f.py::a", method="holm")
    unlucky = _verdict({k: (0.04 if k != "f.py::a" else v) for k, v in base.items()},
                       "f.py::a", method="holm")
    assert lucky[0] and not unlucky[0]


def test_families_session_file_claim():
    ps = {"a.py::x": 0.02, "a.py::y": 0.5, "b.py::z": 0.3, "b.py::w": 0.4}
    assert _verdict(ps, "a.py::x") == (True, pytest.approx(0.04))           # file: the default
    assert _verdict(ps, "a.py::x", family="session") == (False, pytest.approx(0.08))
    assert _verdict(ps, "a.py::x", family="claim") == (True, pytest.approx(0.02))
    with pytest.raises(ValueError, match="family"):
        _verdict(ps, "a.py::x", family="module")


def test_a_claim_counts_once_and_expected_failures_stay_out():
    """A claim with several criteria is one hypothesis (all must hold: its p is the largest);
    an xfailed or skipped claim asserts nothing and does not enlarge the family."""
    cl = _claims({"f.py::a": 0.01, "f.py::b": 0.001})
    cl[1]["results"].append(dict(cl[1]["results"][0], p_value=0.002))
    cl.append({"id": "f.py::x", "outcome": "xfailed",
               "results": [{"p_value": 0.9, "passed": False, "decide": "bound"}]})
    schema.apply_correction(cl)
    assert [r["family_size"] for c in cl for r in c["results"]] == [2, 2, 2, None]
    assert [r["p_adjusted"] for r in cl[1]["results"]] == [pytest.approx(0.002),
                                                           pytest.approx(0.004)]
    assert cl[0]["results"][0]["p_adjusted"] == pytest.approx(0.02)


STABLE = '''
import numpy as np
import pytest
import fieldcheck as fc
from fieldcheck import mean

def _x(mu, seed):
    return np.random.default_rng(seed).normal(mu, 1.0, 24)

def test_target():
    fc.assert_prefers(_x(0.9, 0), mean > 0.0)

@pytest.mark.parametrize("i", range({k}))
def test_other(i):
    fc.assert_prefers(_x({mu}, 100 + i), mean > 0.0)
'''


def _run(pytester, k, mu, *args):
    pytester.makepyfile(test_suite=STABLE.format(k=k, mu=mu))
    pytester.runpytest("-p", "no:cacheprovider", "--fc-report-json", "r.json", *args)
    rep = json.loads((pytester.path / "r.json").read_text())
    by = {c["id"]: c for c in rep["claims"]}
    t = by["test_suite.py::test_target"]["results"][0]
    return t, rep


def test_unrelated_claims_do_not_move_a_verdict(pytester):
    """Real assertions in pytester runs: the target's p-value is fixed by its own data; other
    claims are perturbed (strong -> barely passing), added and removed. Its verdict and
    adjusted p depend only on the family size m: p_adjusted = m * p."""
    strong, rep = _run(pytester, 3, 3.0)
    weak, _ = _run(pytester, 3, 0.45)
    assert strong["p_value"] == weak["p_value"] and strong["family_size"] == 4
    assert strong["p_adjusted"] == weak["p_adjusted"] == pytest.approx(4 * strong["p_value"])
    assert strong["passed_corrected"] == weak["passed_corrected"] is True
    more, _ = _run(pytester, 6, 0.45)
    assert more["p_adjusted"] == pytest.approx(7 * strong["p_value"])
    assert more["passed_corrected"] == (7 * strong["p_value"] <= 0.05)
    alone, _ = _run(pytester, 0, 0.45)
    assert alone["p_adjusted"] == pytest.approx(strong["p_value"]) and alone["passed_corrected"]
    # the claim family: nothing else counts
    fam, _ = _run(pytester, 6, 0.45, "--fc-correction-family", "claim")
    assert fam["family_size"] == 1 and fam["p_adjusted"] == strong["p_value"]


MANY = '''
import numpy as np
import pytest
import fieldcheck as fc
from fieldcheck import recovered

@pytest.mark.parametrize("i", range(120))
def test_many(i):
    rng = np.random.default_rng(i)
    corrupt = rng.normal(0, 1, 16)
    clean = corrupt + rng.gamma(4, 0.5, 16)
    vals = corrupt + 0.9 * (clean - corrupt) + rng.normal(0, 0.1, 16)
    fc.assert_prefers(vals - corrupt, fc.mean > -1.0) if i % 2 else None
    from types import SimpleNamespace as NS
    res = NS(values=vals[None], baseline_clean=clean, baseline_corrupt=corrupt, sites=[],
             direction="denoise", jointly=True, metric="logit_diff")
    fc.assert_effect(res, recovered > 0.5)
'''


@pytest.mark.slow
def test_a_pytester_suite_of_many_true_claims_passes(pytester):
    """180 results (120 claims, n = 16) far from their bars: the run passes with the default
    settings and pytest's last line says so."""
    pytester.makepyfile(test_many=MANY)
    res = pytester.runpytest("-p", "no:cacheprovider", "--fc-report-json", "r.json")
    assert res.ret == 0
    res.stdout.fnmatch_lines(["*= 120 passed in *"])
    rep = json.loads((pytester.path / "r.json").read_text())
    assert rep["summary"]["ok"] and rep["summary"]["results"] == 180
