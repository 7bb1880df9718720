"""Hypothesis strategies: every draw is a valid set for the tokenizer; shrinking is minimal and
deterministic."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, find, given, settings, strategies as st

from fieldcheck import datasets as D
from fieldcheck import strategies as S
from fieldcheck.data.contrastive import ContrastiveSet
from fieldcheck.errors import DatasetError

from _datasets_helpers import small_model

MODEL = small_model()
FAST = settings(max_examples=25, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def check_valid(ds: ContrastiveSet):
    assert isinstance(ds, ContrastiveSet)
    assert ds.clean_tokens.shape == ds.corrupt_tokens.shape == (ds.n, ds.seq_len)
    assert (ds.answers != ds.wrong).all()
    for k, v in ds.positions.items():
        assert ((v >= 0) & (v < ds.seq_len)).all(), k
    assert (ds.positions["END"] == ds.seq_len - 1).all()


@FAST
@given(ds=S.contrastive_sets(MODEL, kind="ioi", min_size=4, max_size=8))
def test_drawn_ioi_sets_are_valid(ds):
    check_valid(ds)
    assert 4 <= ds.n <= 8 and ds.seq_len == 15
    idx = torch.arange(ds.n)
    assert torch.equal(ds.clean_tokens[idx, ds.positions["IO"]], ds.answers)
    assert torch.equal(ds.clean_tokens[idx, ds.positions["S2"]], ds.wrong)
    assert torch.equal(ds.first_diff, ds.positions["S2"])


@FAST
@given(ds=S.contrastive_sets(MODEL, kind="factual", min_size=2, max_size=6))
def test_drawn_factual_sets_are_valid(ds):
    check_valid(ds)
    assert "SUBJ_FIRST" in ds.positions and "SUBJ_LAST" in ds.positions


@FAST
@given(ds=S.contrastive_sets(MODEL, kind="induction", min_size=1, max_size=4, length=4))
def test_drawn_induction_sets_are_valid(ds):
    check_valid(ds)
    assert ds.seq_len == 8
    idx = torch.arange(ds.n)
    assert torch.equal(ds.clean_tokens[:, 1:4], ds.clean_tokens[:, 5:8])
    assert torch.equal(ds.clean_tokens[idx, ds.positions["PREV"] + 1], ds.answers)


@FAST
@given(ex=S.ioi_examples(MODEL, templates=[2, 3], corruption="flip"))
def test_ioi_examples_single(ex):
    check_valid(ex)
    assert ex.n == 1 and ex.seq_len == 16
    assert int(ex.corrupt_tokens[0, ex.positions["S2"][0]]) == int(ex.answers[0])


@FAST
@given(ex=S.factual_examples(MODEL, relation="language"))
def test_factual_examples_single(ex):
    check_valid(ex)
    assert ex.clean_prompts[0].startswith("The official language of")
    assert ex.example_meta[0]["subject"] != ex.example_meta[0]["corrupt_subject"]


@FAST
@given(ex=S.induction_examples(MODEL, length=3))
def test_induction_examples_single(ex):
    check_valid(ex)
    assert ex.seq_len == 6


def _shrink(strategy, predicate):
    return find(strategy, predicate,
                settings=settings(derandomize=True, database=None, max_examples=500,
                                  deadline=None))


def test_shrinking_ioi_moves_to_first_entries():
    v = D.vocab(MODEL)
    bad = v.names[7]  # a property that fails whenever this name is the indirect object
    ex = _shrink(S.ioi_examples(MODEL), lambda e: e.answer_strs[0] == " " + bad)
    m = ex.example_meta[0]
    # everything else shrinks to the first entries of the lists
    assert m["IO"] == bad
    assert m["template"] == D.vocab(MODEL).template_groups()[0][0] == 0
    assert m["S"] == v.names[0] and m["C"] == v.names[1]
    assert m["place"] == v.places[0] and m["object"] == v.objects[0]
    assert ex.clean_prompts[0] == (f"When {bad} and {v.names[0]} went to the {v.places[0]}, "
                                   f"{v.names[0]} gave a {v.objects[0]} to")
    # deterministic: the same minimal example again
    again = _shrink(S.ioi_examples(MODEL), lambda e: e.answer_strs[0] == " " + bad)
    assert again.content_hash() == ex.content_hash()


def test_shrinking_sets_to_minimal_size():
    v = D.vocab(MODEL)
    bad = " " + v.names[3]
    ds = _shrink(S.contrastive_sets(MODEL, "ioi", min_size=4, max_size=8),
                 lambda d: bad in d.answer_strs)
    assert 4 <= ds.n <= 8
    # one example carries the failing name; every other example shrank to the minimal one
    assert ds.answer_strs.count(bad) == 1
    first = (f"When {v.names[0]} and {v.names[1]} went to the {v.places[0]}, {v.names[1]} "
             f"gave a {v.objects[0]} to")
    others = [p for p, a in zip(ds.clean_prompts, ds.answer_strs) if a != bad]
    assert others == [first] * (ds.n - 1)
    m = ds.example_meta[ds.answer_strs.index(bad)]
    assert (m["S"], m["C"], m["template"]) == (v.names[0], v.names[1], 0)


def test_falsifying_example_is_reported():
    """A failing @given property raises with the minimal prompt in hypothesis's report."""
    v = D.vocab(MODEL)

    @settings(derandomize=True, database=None, max_examples=200, deadline=None)
    @given(ex=S.ioi_examples(MODEL))
    def prop(ex):
        assert ex.example_meta[0]["S"] != v.names[2]

    with pytest.raises(AssertionError) as e:
        prop()
    notes = "\n".join(getattr(e.value, "__notes__", []))
    # hypothesis's report shows the falsifying prompt, shrunk toward the first entries
    assert ("Falsifying example" in notes) or ("Failing test case" in notes), notes
    assert f"'clean': 'When " in notes and f"'S': '{v.names[2]}'" in notes, notes
    assert f"went to the {v.places[0]}," in notes and f"gave a {v.objects[0]} to" in notes


def test_strategy_errors():
    with pytest.raises(DatasetError, match="unknown example kind 'nope'"):
        S.contrastive_sets(MODEL, kind="nope")
    with pytest.raises(DatasetError, match="min_size=0"):
        S.contrastive_sets(MODEL, min_size=0)
    with pytest.raises(DatasetError, match="max_size=2"):
        S.contrastive_sets(MODEL, min_size=4, max_size=2)
    with pytest.raises(DatasetError, match="length=40"):
        S.induction_examples(MODEL, length=40)
    with pytest.raises(DatasetError, match="unknown IOI corruption"):
        S.ioi_examples(MODEL, corruption="zzz")


@pytest.mark.pretrained
def test_drawn_sets_valid_for_smollm2(smollm2):
    m = smollm2

    @settings(max_examples=10, derandomize=True, deadline=None, database=None)
    @given(ds=st.one_of(S.contrastive_sets(m, "ioi", 2, 6), S.contrastive_sets(m, "factual", 2, 6),
                        S.contrastive_sets(m, "induction", 2, 6)))
    def prop(ds):
        check_valid(ds)
        assert torch.equal(ds.clean_tokens, m.to_tokens(ds.clean_prompts).cpu())
        assert torch.equal(ds.corrupt_tokens, m.to_tokens(ds.corrupt_prompts).cpu())

    prop()
