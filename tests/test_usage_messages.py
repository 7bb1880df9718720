"""The mistakes a new user makes (issue 22): each silent case now raises or warns, and each
unhelpful message says what to do. (Empty circuits and unknown labels: test_labels.py.)"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import fieldcheck as fc
from fieldcheck import cpr, datasets, rank
from fieldcheck.claim.deciding import AssertionInputError
from fieldcheck.errors import DatasetError, UsageError
from fieldcheck.lab import Field
from fieldcheck.testing import tiny_model


@pytest.fixture(scope="module")
def setup():
    m = tiny_model("gpt2", n_layers=2, dtype=torch.float64)
    return m, Field(m), datasets.ioi(m, n=8)


def test_dla_top_refuses_an_unknown_order(setup):
    _, f, ds = setup
    d = f.dla(ds)
    with pytest.raises(UsageError, match=r"top\(by='vlaue'\): use 'abs' \(largest \|mean\| first\) or 'value'"):
        d.top(3, by="vlaue")
    m = d.mean
    assert d.top(1, by="value") == [d.labels[int(np.argmax(m))]]
    assert d.top(1, by="abs") == [d.labels[int(np.argmax(np.abs(m)))]]


def test_attention_default_key_names_where_io_came_from(setup):
    m, f, _ = setup
    ds = fc.ContrastiveSet.from_pairs(m, ["When Mary and John went to the store , John gave a drink to"],
                                      ["When Mary and John went to the store , Mary gave a drink to"],
                                      [" Mary"], [" John"], positions={"S2": 10})
    with pytest.raises(DatasetError, match=r"position 'IO' is the default key= of field\.attention \(made for the "
                                           r"IOI sets.*has the positions \['END', 'S2'\]: pass key="):
        f.attention(ds, "all")
    with pytest.raises(DatasetError, match=r"key='S9': unknown position name 'S9'"):
        f.attention(ds, "all", key="S9")
    assert f.attention(ds, "all", key="S2").weights.shape == (8, 1)


@pytest.mark.pretrained
def test_answer_without_its_leading_space_warns(smollm2):
    clean = ["The doctor said that"] * 2
    corrupt = ["The nurses said that"] * 2
    with pytest.warns(UserWarning, match=r"answer 'she' of example 0 \(and 1 more\) has no leading space.*"
                                         r"the spaced ' she' \(also one token\)"):
        ds = fc.ContrastiveSet.from_pairs(smollm2, clean, corrupt, ["she", "she"], [" they", " they"])
    assert ds.answer_strs == ["she", "she"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fc.ContrastiveSet.from_pairs(smollm2, clean, corrupt, [" she", " she"], [" they", " they"])
        fc.ContrastiveSet.from_pairs(smollm2, ['He said "'] * 2, ['We said "'] * 2, ["Yes", "Yes"],
                                     ["No", "No"])


def test_assert_faithful_given_a_curve_points_to_the_curve_assertion(setup):
    _, f, ds = setup
    curve = f.faithfulness_curve(ds, sizes=[2, 8], method="eap")
    with pytest.raises(AssertionInputError, match=r"got a FaithfulnessCurve over 2 sizes: decide the whole curve "
                                                  r"with fc\.assert_faithfulness_curve\(curve, area > 0\.5\), or one "
                                                  r"size with fc\.assert_faithful\(curve\.at\(8\), cpr > 0\.8\)"):
        fc.assert_faithful(curve, cpr > 0.5)
    with pytest.raises(AssertionInputError, match="got a Minimality: decide it with fc.assert_minimal"):
        fc.assert_faithful(f.minimality(ds, ["L0.H1", "L1.mlp"]), cpr > 0.5)
    with pytest.raises(AssertionInputError, match="got the Circuit itself: evaluate it first"):
        fc.assert_faithful(fc.Circuit(nodes=["L0.H1"]), cpr > 0.5)


class _Lens:
    def __init__(self, ranks):
        self.rank = ranks

    def first_layer(self, leads):
        return np.zeros(self.rank.shape[1])


@pytest.mark.parametrize("n", [8, 16, 40])
def test_no_exact_zero_p_value_when_every_example_agrees(n):
    """rank(layer=-1) < 1 with the answer on top in every example: the bootstrap distribution is a
    point; the p-value is the sign test's 2**-n (n of n examples on the criterion's side), not 0."""
    from scipy.stats import binomtest

    (res,) = fc.assert_readable(_Lens(np.zeros((3, n))), rank(layer=-1) < 1)
    assert res.passed and res.p_value > 0
    assert res.p_value == pytest.approx(binomtest(n, n, 0.5, alternative="greater").pvalue, rel=1e-6)
    with pytest.raises(fc.ClaimFailed) as e:
        fc.assert_readable(_Lens(np.full((3, n), 2.0)), rank(layer=-1) < 1)
    assert e.value.results[0].p_value > 0.5


def test_a_bound_beyond_what_n_agreeing_examples_support_is_infinite():
    from fieldcheck.claim.statistics import bootstrap, make_rng

    est = bootstrap(lambda idx: np.median(np.zeros(8)[idx], axis=-1), 8, alpha=0.05, n_boot=500,
                    method="percentile", rng=make_rng(0), op="<", bar=1.0, discrete=True)
    assert est.p_value == pytest.approx(0.5 ** 8)
    lo, hi = est.at(0.5 ** 8 / 2)           # more confidence than 8 examples give
    assert hi == math.inf and est.at(0.05)[1] == 0.0
