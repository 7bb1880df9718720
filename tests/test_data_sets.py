"""ContrastiveSet: construction, derived sets, export/import, and every DatasetError case."""
from __future__ import annotations

import json
import types

import pytest
import torch

from fieldcheck.data.contrastive import ContrastiveSet, NotEnoughExamples
from fieldcheck.errors import DatasetError, FieldcheckError, InsufficientData

from _datasets_helpers import small_model, stub_model

CLEAN = ["When Mary and John went to the store, John gave a drink to",
         "When Tom and Kate went to the park, Kate gave a ring to"]
CORRUPT = ["When Mary and John went to the store, Paul gave a drink to",
           "When Tom and Kate went to the park, Lisa gave a ring to"]


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def ds(model):
    return ContrastiveSet.from_pairs(model, CLEAN, CORRUPT, [" Mary", " Tom"], [" John", " Kate"],
                                     positions={"IO": [2, 2], "S2": 10, "LAST2": -2}, name="t")


def ids(model, word):
    return model.tokenizer(word, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------------------- construction
def test_from_pairs_shapes_and_positions(ds, model):
    assert ds.n == len(ds) == 2 and ds.seq_len == 15
    assert ds.clean_tokens.shape == ds.corrupt_tokens.shape == (2, 15)
    assert ds.clean_tokens.dtype == torch.long
    assert ds.answers.tolist() == [ids(model, " Mary")[0], ids(model, " Tom")[0]]
    assert ds.wrong.tolist() == [ids(model, " John")[0], ids(model, " Kate")[0]]
    assert ds.positions["END"].tolist() == [14, 14]
    assert ds.positions["S2"].tolist() == [10, 10]
    assert ds.positions["LAST2"].tolist() == [13, 13]  # negative counts from the end
    assert ds.positions["IO"].tolist() == [2, 2]
    assert ds.first_diff.tolist() == [10, 10]
    assert ds.clean_prompts == CLEAN and ds.corrupt_prompts == CORRUPT
    assert ds.answer_strs == [" Mary", " Tom"] and ds.wrong_strs == [" John", " Kate"]
    assert ds.name == "t"
    # BOS first, then the prompt's words
    bos = model.tokenizer.bos_token_id
    assert (ds.clean_tokens[:, 0] == bos).all()
    assert int(ds.clean_tokens[0, 10]) == ids(model, " John")[0]
    assert int(ds.corrupt_tokens[0, 10]) == ids(model, " Paul")[0]


def test_int_answers_are_accepted(ds, model):
    d2 = ContrastiveSet.from_pairs(model, CLEAN, CORRUPT, ds.answers.tolist(), ds.wrong.tolist())
    assert torch.equal(d2.answers, ds.answers) and torch.equal(d2.wrong, ds.wrong)
    assert d2.answer_strs[0].strip() == "Mary"
    assert list(d2.positions) == ["END"]


def test_no_bos_when_model_does_not_prepend():
    m = stub_model(prepend_bos=False)
    d = ContrastiveSet.from_pairs(m, CLEAN[:1], CORRUPT[:1], [" Mary"], [" John"])
    assert d.seq_len == 14 and int(d.clean_tokens[0, 0]) == ids(m, "When")[0]


def test_identical_prompts_are_refused_or_named(model):
    """All corrupted prompts identical to the clean ones: DatasetError; some: a warning naming
    them (their first_diff is seq_len)."""
    with pytest.raises(DatasetError, match="identical to its clean prompt"):
        ContrastiveSet.from_pairs(model, CLEAN[:1], CLEAN[:1], [" Mary"], [" John"])
    with pytest.warns(UserWarning, match=r"1 of 2 examples .* example 1 \('When"):
        d = ContrastiveSet.from_pairs(model, CLEAN[:2], [CORRUPT[0], CLEAN[1]], [" Mary"] * 2,
                                      [" John"] * 2)
    assert d.first_diff.tolist()[1] == d.seq_len and d.first_diff.tolist()[0] < d.seq_len


# ------------------------------------------------------------------------------- derived sets
def test_subset(ds):
    s = ds.subset([1])
    assert s.n == 1 and s.clean_prompts == [CLEAN[1]] and s.answer_strs == [" Tom"]
    assert torch.equal(s.clean_tokens[0], ds.clean_tokens[1])
    assert s.positions["END"].tolist() == [14] and s.positions["IO"].tolist() == [2]
    assert ds.subset(range(2)) == ds
    assert ds.subset(torch.tensor([1, 0])).clean_prompts == CLEAN[::-1]
    assert ds.subset(torch.tensor([False, True])).clean_prompts == [CLEAN[1]]
    assert ds[0].n == 1
    with pytest.raises(DatasetError, match="index 5 is out of range"):
        ds.subset([5])
    with pytest.raises(DatasetError, match="empty subset"):
        ds.subset([])


def test_swapped(ds):
    s = ds.swapped()
    assert torch.equal(s.clean_tokens, ds.corrupt_tokens)
    assert torch.equal(s.corrupt_tokens, ds.clean_tokens)
    assert torch.equal(s.answers, ds.wrong) and torch.equal(s.wrong, ds.answers)
    assert s.clean_prompts == CORRUPT and s.answer_strs == ds.wrong_strs
    assert s.meta["swapped"] is True
    assert s.swapped().content_hash() == ds.content_hash()
    assert s.content_hash() != ds.content_hash()


def test_content_hash(ds, model):
    h = ds.content_hash()
    assert len(h) == 64 and h == ds.content_hash()
    same = ContrastiveSet.from_pairs(model, CLEAN, CORRUPT, [" Mary", " Tom"], [" John", " Kate"],
                                     positions={"IO": [2, 2], "S2": 10, "LAST2": -2}, name="x")
    assert same.content_hash() == h  # names and meta do not matter
    other = ContrastiveSet.from_pairs(model, CLEAN, CORRUPT, [" Mary", " Tom"],
                                      [" John", " Kate"], positions={"IO": [2, 2], "S2": 9})
    assert other.content_hash() != h  # positions do
    wrong2 = ContrastiveSet.from_pairs(model, CLEAN, CORRUPT, [" Mary", " Tom"],
                                       [" Paul", " Kate"], positions={"IO": [2, 2], "S2": 10,
                                                                      "LAST2": -2})
    assert wrong2.content_hash() != h


def test_records_roundtrip(ds, model):
    recs = ds.to_records()
    assert recs[0]["clean"] == CLEAN[0] and recs[0]["answer"] == " Mary"
    assert recs[0]["positions"] == {"IO": 2, "S2": 10, "LAST2": 13}
    json.dumps(recs)
    back = ContrastiveSet.from_records(model, recs)
    assert back.content_hash() == ds.content_hash()


def test_jsonl_roundtrip(ds, model, tmp_path):
    p = tmp_path / "set.jsonl"
    ds.to_jsonl(p)
    assert len(p.read_text().splitlines()) == 2
    back = ContrastiveSet.from_jsonl(model, p)
    assert back.content_hash() == ds.content_hash() and back.name == "set"


def test_to_dict_summary_repr(ds):
    d = ds.to_dict()
    json.dumps(d)
    assert d["n"] == 2 and d["seq_len"] == 15 and d["content_hash"] == ds.content_hash()
    assert d["positions"]["END"] == [14, 14]
    s = ds.summary()
    assert "2 examples x 15 tokens" in s and CLEAN[0] in s and "' Mary'" in s
    r = repr(ds)
    assert r.startswith("ContrastiveSet(name='t', n=2, seq_len=15") and "Mary" in r


def test_concat_and_to(ds):
    c = ContrastiveSet.concat([ds, ds.subset([0])])
    assert c.n == 3 and c.clean_prompts == CLEAN + CLEAN[:1]
    assert c.to("cpu").content_hash() == c.content_hash()


def test_split_by_length(model):
    clean = CLEAN + ["Then, Mary and John went to the store. John gave a drink to"]
    corrupt = CORRUPT + ["Then, Mary and John went to the store. Paul gave a drink to"]
    groups = ContrastiveSet.split_by_length(model, clean, corrupt, [" Mary", " Tom", " Mary"],
                                            [" John", " Kate", " John"])
    assert sorted(groups) == [15, 16]
    assert groups[15].n == 2 and groups[16].n == 1
    assert groups[16].meta["example_index"] == [2]
    assert groups[16].seq_len == 16


def test_take_and_sample(ds):
    assert ds.take(1).clean_prompts == CLEAN[:1]
    assert ds.sample(2, seed=1).n == 2
    assert ds.sample(1, seed=3).content_hash() == ds.sample(1, seed=3).content_hash()
    with pytest.raises(NotEnoughExamples) as e:
        ds.take(5)
    assert "take(5)" in str(e.value) and "only 2 examples" in str(e.value)
    with pytest.raises(NotEnoughExamples, match="sample\\(3\\)"):
        ds.sample(3)


def test_position_lookup(ds):
    assert ds.position("S2").tolist() == [10, 10]
    assert ds.position(-1).tolist() == [14, 14]
    with pytest.raises(DatasetError, match="unknown position name 'S3'"):
        ds.position("S3")


# ------------------------------------------------------------------------------- error cases
def test_errors_are_fieldcheck_errors():
    assert issubclass(DatasetError, FieldcheckError)
    assert issubclass(NotEnoughExamples, DatasetError)
    assert issubclass(NotEnoughExamples, InsufficientData)


def test_error_unequal_clean_corrupt_length(model):
    clean = "When Mary and John went to the store, John gave a drink to"
    corrupt = "When Mary and John went to the big store, Paul gave a drink to"
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_pairs(model, [CLEAN[1], clean], [CORRUPT[1], corrupt],
                                  [" Tom", " Mary"], [" Kate", " John"])
    msg = str(e.value)
    assert "example 1" in msg and "15 tokens" in msg and "16 tokens" in msg
    assert clean in msg and corrupt in msg


def test_error_mixed_lengths_suggests_split(model):
    clean = [CLEAN[0], "Then, Mary and John went to the store. John gave a drink to"]
    corrupt = [CORRUPT[0], "Then, Mary and John went to the store. Paul gave a drink to"]
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_pairs(model, clean, corrupt, [" Mary"] * 2, [" John"] * 2)
    msg = str(e.value)
    assert "[15, 16]" in msg and "split_by_length" in msg


def test_error_multi_token_answer(model):
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_pairs(model, CLEAN[:1], CORRUPT[:1], [" Mary Kate"], [" John"])
    msg = str(e.value)
    assert "' Mary Kate'" in msg and "not a single token" in msg and "2 tokens" in msg
    assert "example 0" in msg


def test_error_unknown_answer_word(model):
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_pairs(model, CLEAN[:1], CORRUPT[:1], [" Zyxwvut"], [" John"])
    msg = str(e.value)
    assert "Zyxwvut" in msg


def test_error_unknown_token_id(model):
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_pairs(model, CLEAN[:1], CORRUPT[:1], [10 ** 7], [" John"])
    msg = str(e.value)
    assert "10000000" in msg and "not in the vocabulary" in msg


def test_error_unknown_word_in_prompt():
    m = stub_model()  # word-level: an unknown word becomes <unk>
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_pairs(m, ["When Mary and Zorblax went"], ["When Mary and John went"],
                                  [" Mary"], [" John"])
    assert "unknown to the tokenizer" in str(e.value) and "Zorblax" in str(e.value)


def test_error_empty_set(model):
    with pytest.raises(DatasetError, match="empty data set"):
        ContrastiveSet.from_pairs(model, [], [], [], [])
    with pytest.raises(DatasetError, match="empty data set"):
        ContrastiveSet.from_records(model, [])


def test_error_answer_equals_wrong(model):
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_pairs(model, CLEAN, CORRUPT, [" Mary", " Tom"], [" John", " Tom"])
    msg = str(e.value)
    assert "example 1" in msg and "' Tom'" in msg and "same token" in msg


def test_error_named_position_missing(model):
    recs = [{"clean": CLEAN[0], "corrupt": CORRUPT[0], "answer": " Mary", "wrong": " John",
             "positions": {"S2": 10}},
            {"clean": CLEAN[1], "corrupt": CORRUPT[1], "answer": " Tom", "wrong": " Kate"}]
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_records(model, recs)
    msg = str(e.value)
    assert "'S2'" in msg and "missing in example 1" in msg


def test_error_named_position_out_of_range(model):
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_pairs(model, CLEAN, CORRUPT, [" Mary", " Tom"], [" John", " Kate"],
                                  positions={"S2": [10, 15]})
    msg = str(e.value)
    assert "'S2' = 15" in msg and "example 1" in msg and "15 tokens" in msg
    with pytest.raises(DatasetError, match="'X' = -16"):
        ContrastiveSet.from_pairs(model, CLEAN, CORRUPT, [" Mary", " Tom"], [" John", " Kate"],
                                  positions={"X": -16})


def test_error_position_list_wrong_length(model):
    with pytest.raises(DatasetError, match="position 'S2' has 3 entries for 2 examples"):
        ContrastiveSet.from_pairs(model, CLEAN, CORRUPT, [" Mary", " Tom"], [" John", " Kate"],
                                  positions={"S2": [10, 10, 10]})


def test_error_lists_of_different_lengths(model):
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_pairs(model, CLEAN, CORRUPT, [" Mary"], [" John", " Kate"])
    msg = str(e.value)
    assert "different lengths" in msg and "answers: 1" in msg and "clean: 2" in msg


def test_error_single_string_instead_of_list(model):
    with pytest.raises(DatasetError, match="wrap it in a list"):
        ContrastiveSet.from_pairs(model, CLEAN[0], CORRUPT[0], " Mary", " John")


def test_error_jsonl_bad_json(model, tmp_path):
    p = tmp_path / "bad.jsonl"
    good = json.dumps({"clean": CLEAN[0], "corrupt": CORRUPT[0], "answer": " Mary",
                       "wrong": " John"})
    p.write_text(good + "\n\n" + '{"clean": "When Mary",\n')
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_jsonl(model, p)
    msg = str(e.value)
    assert f"{p}:3" in msg and "bad JSON" in msg


def test_error_jsonl_missing_field(model, tmp_path):
    p = tmp_path / "missing.jsonl"
    good = {"clean": CLEAN[0], "corrupt": CORRUPT[0], "answer": " Mary", "wrong": " John"}
    bad = {"clean": CLEAN[1], "answer": " Tom", "wrong": " Kate"}
    p.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_jsonl(model, p)
    msg = str(e.value)
    assert ":2" in msg and "line 2" in msg and "'corrupt'" in msg


def test_error_jsonl_bad_value_names_line(model, tmp_path):
    p = tmp_path / "v.jsonl"
    recs = [{"clean": CLEAN[0], "corrupt": CORRUPT[0], "answer": " Mary", "wrong": " John"},
            {"clean": CLEAN[1], "corrupt": CORRUPT[1], "answer": " Tom", "wrong": " Tom"}]
    p.write_text("\n".join(json.dumps(r) for r in recs))
    with pytest.raises(DatasetError, match=r"example 1 \(line 2\)"):
        ContrastiveSet.from_jsonl(model, p)


def test_error_jsonl_missing_file(model, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        ContrastiveSet.from_jsonl(model, tmp_path / "nope.jsonl")


def test_error_tokenizer_without_bos():
    m = stub_model(bos=False, prepend_bos=True)
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_pairs(m, CLEAN[:1], CORRUPT[:1], [" Mary"], [" John"])
    msg = str(e.value)
    assert "no BOS token" in msg and "default_prepend_bos" in msg
    # without BOS prepending it is fine
    m2 = stub_model(bos=False, prepend_bos=False)
    assert ContrastiveSet.from_pairs(m2, CLEAN[:1], CORRUPT[:1], [" Mary"], [" John"]).n == 1


def test_error_prompt_longer_than_context():
    m = stub_model(n_ctx=8)
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_pairs(m, CLEAN[:1], CORRUPT[:1], [" Mary"], [" John"])
    msg = str(e.value)
    assert "15 tokens" in msg and "context of 8" in msg and "example 0" in msg


def test_error_model_without_tokenizer():
    m = types.SimpleNamespace(tokenizer=None, cfg=types.SimpleNamespace())
    with pytest.raises(DatasetError, match="no tokenizer"):
        ContrastiveSet.from_pairs(m, CLEAN[:1], CORRUPT[:1], [" Mary"], [" John"])


def test_error_empty_prompt(model):
    with pytest.raises(DatasetError, match="corrupt prompt of example 0 is empty"):
        ContrastiveSet.from_pairs(model, CLEAN[:1], [""], [" Mary"], [" John"])


# ------------------------------------------------------------------------------- real tokenizer
@pytest.mark.pretrained
def test_tokens_equal_model_to_tokens_smollm2(smollm2):
    m = smollm2
    d = ContrastiveSet.from_pairs(m, CLEAN, CORRUPT, [" Mary", " Tom"], [" John", " Kate"])
    assert torch.equal(d.clean_tokens, m.to_tokens(CLEAN).cpu())
    assert torch.equal(d.corrupt_tokens, m.to_tokens(CORRUPT).cpu())
    assert d.answers.tolist() == [int(m.to_tokens(" Mary", prepend_bos=False)[0, 0]),
                                  int(m.to_tokens(" Tom", prepend_bos=False)[0, 0])]
    assert d.seq_len == 15


@pytest.mark.pretrained
def test_multi_token_answer_shows_tokens_smollm2(smollm2):
    m = smollm2
    with pytest.raises(DatasetError) as e:
        ContrastiveSet.from_pairs(m, CLEAN[:1], CORRUPT[:1], [" Eiffel"], [" John"])
    msg = str(e.value)
    assert "' Eiffel'" in msg and "' E'" in msg and "'iffel'" in msg
