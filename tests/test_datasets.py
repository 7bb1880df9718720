"""Built-in data sets: ioi, factual_recall, induction, and the registry."""
from __future__ import annotations

import pytest
import torch

from fieldcheck import datasets as D
from fieldcheck.data.contrastive import ContrastiveSet, NotEnoughExamples
from fieldcheck.errors import DatasetError

from _datasets_helpers import small_model, stub_model


@pytest.fixture(scope="module")
def model():
    return small_model()


def tok1(model, word):
    ids = model.tokenizer(word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (word, ids)
    return ids[0]


def check_valid(ds: ContrastiveSet):
    assert ds.clean_tokens.shape == ds.corrupt_tokens.shape == (ds.n, ds.seq_len)
    assert (ds.answers != ds.wrong).all()
    for k, v in ds.positions.items():
        assert v.shape == (ds.n,) and ((v >= 0) & (v < ds.seq_len)).all(), k
    assert (ds.positions["END"] == ds.seq_len - 1).all()


# ------------------------------------------------------------------------------------- ioi
def check_ioi(ds, model, corruption):
    check_valid(ds)
    idx = torch.arange(ds.n)
    for k in ("IO", "S1", "S2", "S1+1", "END"):
        assert k in ds.positions
    assert (ds.positions["S1+1"] == ds.positions["S1"] + 1).all()
    assert torch.equal(ds.clean_tokens[idx, ds.positions["IO"]], ds.answers)
    assert torch.equal(ds.clean_tokens[idx, ds.positions["S1"]], ds.wrong)
    assert torch.equal(ds.clean_tokens[idx, ds.positions["S2"]], ds.wrong)
    # the corrupt prompt differs from the clean one only at S2
    diff = ds.clean_tokens != ds.corrupt_tokens
    assert (diff.sum(1) == 1).all()
    assert torch.equal(ds.first_diff, ds.positions["S2"])
    s2c = ds.corrupt_tokens[idx, ds.positions["S2"]]
    if corruption == "flip":
        assert torch.equal(s2c, ds.answers)
    else:
        assert not (s2c == ds.answers).any() and not (s2c == ds.wrong).any()
    for i in range(ds.n):
        m = ds.example_meta[i]
        assert ds.answer_strs[i] == " " + m["IO"] and ds.wrong_strs[i] == " " + m["S"]
        assert ds.clean_prompts[i].count(m["S"]) == 2


@pytest.mark.parametrize("corruption", ["abc", "flip"])
def test_ioi(model, corruption):
    ds = D.ioi(model, n=24, seed=1, corruption=corruption)
    assert ds.n == 24 and ds.seq_len == 15
    check_ioi(ds, model, corruption)
    assert ds.meta["builtin"] == "ioi" and ds.meta["corruption"] == corruption
    assert ds.meta["seed"] == 1
    assert ds.meta["template_ids"] == [0, 1, 4, 5, 6, 7]
    assert ds.meta["dropped_templates"] == {2: 16, 3: 16}
    assert "left out" in ds.meta["note"]
    used = {m["template"] for m in ds.example_meta}
    assert used <= {0, 1, 4, 5, 6, 7} and len(used) > 1
    # distinct examples
    if corruption == "flip":  # (with "abc" two examples may differ only in the third name)
        assert len(set(ds.clean_prompts)) == ds.n
    keys = [tuple(sorted(m.items())) for m in ds.example_meta]
    assert len(set(keys)) == ds.n


def test_ioi_template0_positions(model):
    ds = D.ioi(model, n=4, templates=[0])
    assert ds.seq_len == 15
    assert ds.positions["IO"].tolist() == [2] * 4
    assert ds.positions["S1"].tolist() == [4] * 4
    assert ds.positions["S2"].tolist() == [10] * 4
    assert ds.positions["END"].tolist() == [14] * 4
    assert all(p.startswith("When ") for p in ds.clean_prompts)


def test_ioi_template_groups(model):
    ds = D.ioi(model, n=6, templates=[2, 3])
    assert ds.seq_len == 16 and ds.positions["S2"].tolist() == [11] * 6
    check_ioi(ds, model, "abc")
    # mixed lengths: the most common length wins, the others are named in meta
    ds2 = D.ioi(model, n=6, templates=[2, 0, 1])
    assert ds2.seq_len == 15 and ds2.meta["template_ids"] == [0, 1]
    assert ds2.meta["dropped_templates"] == {2: 16}
    # tie: the group of the first listed template
    assert D.ioi(model, n=2, templates=[3, 0]).seq_len == 16
    assert D.ioi(model, n=2, templates=5).meta["template_ids"] == [5]


def test_ioi_deterministic(model):
    a = D.ioi(model, n=8, seed=3)
    b = D.ioi(model, n=8, seed=3)
    c = D.ioi(model, n=8, seed=4)
    assert a.content_hash() == b.content_hash() and a.clean_prompts == b.clean_prompts
    assert a.content_hash() != c.content_hash()


def test_ioi_errors(model):
    with pytest.raises(DatasetError, match="unknown IOI corruption 'xyz'"):
        D.ioi(model, corruption="xyz")
    with pytest.raises(DatasetError, match="IOI template 99 does not exist.*0..7"):
        D.ioi(model, templates=[99])
    with pytest.raises(DatasetError, match="n=0"):
        D.ioi(model, n=0)
    with pytest.raises(NotEnoughExamples) as e:
        D.ioi(model, n=10 ** 9)
    assert "n=1000000000" in str(e.value) and "distinct examples" in str(e.value)


# ------------------------------------------------------------------------------------- factual
def test_factual_recall(model):
    ds = D.factual_recall(model, n=16, seed=0)
    check_valid(ds)
    assert ds.seq_len == 6 and ds.meta["relations"] == ["capital"]
    assert ds.positions["SUBJ_FIRST"].tolist() == [4] * 16
    assert ds.positions["SUBJ_LAST"].tolist() == [4] * 16
    for i in range(ds.n):
        m = ds.example_meta[i]
        assert m["subject"] != m["corrupt_subject"]
        assert m["subject"] in ds.clean_prompts[i] and m["corrupt_subject"] in ds.corrupt_prompts[i]
        assert ds.clean_prompts[i].startswith("The capital of")
    assert (ds.first_diff == ds.positions["SUBJ_FIRST"]).all()
    pairs = {(m["subject"], m["corrupt_subject"]) for m in ds.example_meta}
    assert len(pairs) == 16  # distinct pairs
    # France -> Paris is in the table
    rec = [r for r in D.vocab(model).facts if r["subject"] == "France"][0]
    assert rec["attribute"] == "Paris"


@pytest.mark.parametrize("relation", ["capital", "language", "landmark_city"])
def test_factual_relations(model, relation):
    ds = D.factual_recall(model, n=4, seed=2, relation=relation)
    check_valid(ds)
    assert ds.meta["relations"] == [relation]
    assert (ds.positions["SUBJ_LAST"] >= ds.positions["SUBJ_FIRST"]).all()
    idx = torch.arange(ds.n)
    v = D.vocab(model)
    for i in range(ds.n):
        f = [x for x in v.facts if x["subject"] == ds.example_meta[i]["subject"]
             and x["relation"] == relation][0]
        assert ds.answer_strs[i] == " " + f["attribute"]
    assert (ds.clean_tokens[idx, ds.positions["SUBJ_FIRST"]]
            != ds.corrupt_tokens[idx, ds.positions["SUBJ_FIRST"]]).any()


def test_factual_errors_and_replace(model):
    with pytest.raises(DatasetError, match="unknown relation 'height'.*capital"):
        D.factual_recall(model, relation="height")
    avail = D.vocab(model).fact_pairs("landmark_city")[0]
    with pytest.raises(NotEnoughExamples) as e:
        D.factual_recall(model, n=len(avail) + 1, relation="landmark_city")
    assert f"n={len(avail) + 1}" in str(e.value) and "replace=True" in str(e.value)
    ds = D.factual_recall(model, n=len(avail) + 5, relation="landmark_city", replace=True)
    assert ds.n == len(avail) + 5
    check_valid(ds)


# ------------------------------------------------------------------------------------- induction
@pytest.mark.parametrize("length", [2, 6, 10])
def test_induction(model, length):
    ds = D.induction(model, n=8, seed=0, length=length)
    check_valid(ds)
    bos = 1
    assert ds.seq_len == bos + 2 * length - 1
    idx = torch.arange(ds.n)
    for i in range(ds.n):
        c = ds.clean_tokens[i, bos:].tolist()
        seq = c[:length]
        assert len(set(seq)) == length
        assert c[length:] == seq[:-1]
        assert int(ds.answers[i]) == seq[-1]
        r = ds.corrupt_tokens[i, bos:].tolist()
        assert r[:length] == seq and not set(r[length:]) & set(seq)
        assert len(set(r)) == len(r)  # no repetition in the corrupt prompt
        assert int(ds.wrong[i]) not in set(r)
    # PREV: first occurrence of the token at END; the answer followed it
    assert torch.equal(ds.clean_tokens[idx, ds.positions["PREV"]],
                       ds.clean_tokens[idx, ds.positions["END"]])
    assert torch.equal(ds.clean_tokens[idx, ds.positions["PREV"] + 1], ds.answers)
    assert (ds.first_diff == bos + length).all()


def test_induction_errors(model):
    with pytest.raises(DatasetError, match="length=1"):
        D.induction(model, length=1)
    with pytest.raises(NotEnoughExamples) as e:
        D.induction(model, length=16)
    assert "length=16 needs 32" in str(e.value) and "length <= 15" in str(e.value)


def test_induction_deterministic(model):
    assert D.induction(model, n=4, seed=7).content_hash() == \
        D.induction(model, n=4, seed=7).content_hash()


# ------------------------------------------------------------------------------------- registry
def test_load_registry(model):
    assert {"ioi", "factual_recall", "induction"} <= set(D.available())
    assert D.load("ioi", model, n=4).content_hash() == D.ioi(model, n=4).content_hash()
    assert D.load("induction", model, n=2, length=3).seq_len == 6
    with pytest.raises(DatasetError, match="unknown data set 'nope'"):
        D.load("nope", model)
    with pytest.raises(DatasetError, match="colour"):
        D.load("ioi", model, colour="red")


def test_filtering_drops_non_single_token_words():
    """A word that is not one token for the tokenizer is never used (stub tokenizer: ' Mary'
    is one word; make 'Mary' unknown by building a vocabulary without it)."""
    m = stub_model()
    v = D.vocab(m)
    assert "Mary" in v.names
    # a model whose tokenizer splits one name into two tokens
    import types

    class Splitting:
        def __init__(self, tok):
            self.t = tok
            self.bos_token, self.bos_token_id = tok.bos_token, tok.bos_token_id
            self.unk_token, self.unk_token_id = tok.unk_token, tok.unk_token_id

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": self.t(text.replace("Mary", "Mary Mary"),
                                        add_special_tokens=False)["input_ids"]}

        def decode(self, ids):
            return self.t.decode(ids)

        def __len__(self):
            return len(self.t)

    m2 = types.SimpleNamespace(tokenizer=Splitting(m.tokenizer), cfg=m.cfg)
    v2 = D.vocab(m2)
    assert "Mary" not in v2.names and "Mary" in v2.dropped["names"]
    ds = D.ioi(m2, n=50)
    assert not any("Mary" in p for p in ds.clean_prompts + ds.corrupt_prompts)


# ------------------------------------------------------------------------------------- SmolLM2
@pytest.mark.pretrained
def test_smollm2_word_lists_and_template_lengths(smollm2):
    m = smollm2
    v = D.vocab(m)
    assert (len(v.names), len(v.places), len(v.objects), len(v.induction_words),
            len(v.facts)) == (40, 12, 15, 30, 38)
    lengths = {t: L for t, (_, L, _) in v.templates.items()}
    assert lengths == {0: 15, 1: 15, 2: 16, 3: 16, 4: 15, 5: 15, 6: 15, 7: 15}
    assert v.templates[0][2] == {"IO": 2, "S1": 4, "S2": 10, "S1+1": 5}


@pytest.mark.pretrained
@pytest.mark.parametrize("corruption", ["abc", "flip"])
def test_smollm2_ioi(corruption, smollm2):
    m = smollm2
    ds = D.ioi(m, n=16, corruption=corruption)
    check_ioi(ds, m, corruption)
    assert torch.equal(ds.clean_tokens, m.to_tokens(ds.clean_prompts).cpu())
    assert torch.equal(ds.corrupt_tokens, m.to_tokens(ds.corrupt_prompts).cpu())
    d0 = D.ioi(m, n=4, templates=[0])
    assert d0.seq_len == 15 and d0.positions["S2"].tolist() == [10] * 4
    assert m.to_str_tokens(d0.clean_tokens[0])[10] == d0.wrong_strs[0]


@pytest.mark.pretrained
def test_smollm2_factual_and_induction(smollm2):
    m = smollm2
    ds = D.factual_recall(m, n=8, relation="landmark_city")
    check_valid(ds)
    assert ds.seq_len == 10  # three-token landmarks ("The Eiffel Tower is in the city of")
    assert torch.equal(ds.clean_tokens, m.to_tokens(ds.clean_prompts).cpu())
    assert (ds.positions["SUBJ_LAST"] - ds.positions["SUBJ_FIRST"] == 2).all()
    f = D.factual_recall(m, n=8)
    assert f.seq_len == 6 and f.meta["pairs_by_length"] == {6: 380, 7: 110, 9: 2, 10: 20}
    ind = D.induction(m, n=4, length=5)
    assert torch.equal(ind.clean_tokens, m.to_tokens(ind.clean_prompts).cpu())
    assert torch.equal(ind.clean_tokens[:, 1:5], ind.clean_tokens[:, 6:10])


def test_same_set_for_both_tiny_archs(tiny_gpt2, tiny_llama):
    for fn in (D.ioi, D.factual_recall, D.induction):
        assert fn(tiny_gpt2, n=4).content_hash() == fn(tiny_llama, n=4).content_hash()
