"""Positions named by token text or by a marker in the prompt (fieldcheck.data.positions), and
grouped (per-template) mean ablation, checked against TransformerLens hooks and by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fieldcheck as fc
from fieldcheck import datasets
from fieldcheck.errors import DatasetError, SourceError, UsageError
from fieldcheck.lab import Field
from fieldcheck.sites import resid_pre
from fieldcheck.testing import tiny_model

from _reference import tl_logit_diff

CLEAN = ["When Mary and John went to the store , John gave a drink to",
         "When Anna and Paul went to the park , Paul gave a ball to"]
CORRUPT = ["When Mary and John went to the store , Mary gave a drink to",
           "When Anna and Paul went to the park , Anna gave a ball to"]
COUNTED = {"IO": [2, 2], "S1": [4, 4], "S2": [10, 10]}


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("gpt2", n_layers=2, dtype=torch.float64)


def _pairs(model, **kw):
    return fc.ContrastiveSet.from_pairs(model, kw.pop("clean", CLEAN), kw.pop("corrupt", CORRUPT),
                                        [" Mary", " Anna"], [" John", " Paul"], **kw)


def test_token_texts_give_the_counted_positions(tiny):
    by_count = _pairs(tiny, positions=COUNTED)
    by_text = _pairs(tiny, positions={"IO": [" Mary", " Anna"], "S1": [(" John", 0), (" Paul", 0)],
                                      "S2": [(" John", -1), (" Paul", 1)]})
    assert by_text == by_count
    one = fc.ContrastiveSet.from_pairs(tiny, CLEAN[:1], CORRUPT[:1], [" Mary"], [" John"],
                                       positions={"IO": " Mary", "store": " store"})
    assert one.positions["IO"].tolist() == [2] and one.positions["store"].tolist() == [8]


def test_markers_give_the_counted_positions(tiny):
    marked = ["When Mary[[IO]] and John[[S1]] went to the store , John[[S2]] gave a drink to",
              "When Anna[[IO]] and Paul[[S1]] went to the park , Paul[[S2]] gave a ball to"]
    ds = _pairs(tiny, clean=marked, markers=True)
    assert ds == _pairs(tiny, positions=COUNTED)
    assert ds.clean_prompts == CLEAN


@pytest.mark.parametrize("kw,pattern", [
    ({"positions": {"S": " John"}}, r"the text occurs 2 times \(positions \[4, 10\]\); name one with \(' John', 0\)"),
    ({"positions": {"X": " Bob"}}, r"the text's tokens \['Bob'\] do not occur in the prompt's tokens"),
    ({"positions": {"S": (" John", 5)}}, r"occurrence 5 out of range, the text occurs 2 time\(s\)"),
    ({"positions": {"S": [" John"]}}, r"position 'S' has 1 entries for 2 examples"),
    ({"markers": True}, r"markers=True but no clean prompt has a marker"),
    ({"markers": True, "clean": ["When Mary[[IO]] and John went to the store , John gave a drink to", CLEAN[1]]},
     r"markers: example 1 .* marks \[\], example 0 marks \['IO'\]"),
    ({"markers": True, "positions": {"IO": 2},
      "clean": ["When Mary[[IO]] and John went to the store , John gave a drink to",
                "When Anna[[IO]] and Paul went to the park , Paul gave a ball to"]},
     r"position 'IO' is both marked in the prompts and given in positions="),
    ({"markers": True, "clean": ["[[IO]]When Mary and John went to the store , John gave a drink to",
                                 "[[IO]]When Anna and Paul went to the park , Paul gave a ball to"]},
     r"marker \[\[IO\]\] of example 0 stands at the start of the prompt"),
])
def test_position_errors_name_the_fix(tiny, kw, pattern):
    with pytest.raises(DatasetError, match=pattern):
        _pairs(tiny, **kw)


@pytest.mark.pretrained
def test_text_and_markers_on_a_real_tokenizer(smollm2):
    """SmolLM2's BPE: spaced words are single tokens, a multi-token subject names its last token,
    and positions count the BOS token."""
    clean = ["The Eiffel Tower is located in the city of", "The Colosseum is located in the city of"]
    corrupt = ["The Statue of Liberty is located in the city of", "The Big Ben is located in the city of"]
    by_text = fc.ContrastiveSet.from_pairs(smollm2, clean[:1], corrupt[:1], [" Paris"], [" Rome"],
                                           positions={"subject": " Eiffel Tower", "city": " city"})
    toks = smollm2.to_str_tokens(clean[0])
    assert toks[int(by_text.positions["subject"])] == " Tower" and toks[int(by_text.positions["city"])] == " city"
    marked = fc.ContrastiveSet.from_pairs(smollm2, ["The Eiffel Tower[[subject]] is located in the city[[city]] of"],
                                          corrupt[:1], [" Paris"], [" Rome"], markers=True)
    assert marked == by_text and marked.clean_prompts == clean[:1]


# --- grouped (per-template) mean ablation -----------------------------------------------------------------
@pytest.fixture(scope="module")
def grouped(tiny):
    ds = datasets.ioi(tiny, n=8, seed=3, templates=[0, 1])   # two templates, 3 and 5 examples
    return Field(tiny), ds, [m["template"] for m in ds.example_meta]


def test_grouped_mean_patch_equals_transformer_lens_hooks(tiny, grouped):
    f, ds, templates = grouped
    assert len(set(templates)) > 1
    site = resid_pre(1, "END")
    got = f.patch(ds, site, source=fc.sources.mean(by="template"))
    end = ds.positions["END"]
    b = torch.arange(ds.n)
    _, cache = tiny.run_with_cache(ds.corrupt_tokens, names_filter=lambda n: n == "blocks.1.hook_resid_pre")
    x = cache["blocks.1.hook_resid_pre"][b, end]
    groups = {t: [i for i in range(ds.n) if templates[i] == t] for t in set(templates)}
    means = torch.stack([x[groups[templates[i]]].mean(0) for i in range(ds.n)])

    def hook(act, hook):
        act = act.clone()
        act[b, end] = means.to(act.dtype)
        return act

    logits = tiny.run_with_hooks(ds.corrupt_tokens, fwd_hooks=[("blocks.1.hook_resid_pre", hook)])
    np.testing.assert_allclose(got.values[0], tl_logit_diff(ds)(logits).numpy(), atol=1e-8)
    plain = f.patch(ds, site, source="mean")
    assert not np.allclose(plain.values, got.values)
    assert "mean(by=template)" == fc.sources.mean(by="template").describe()


def test_grouped_mean_ablation_of_circuits_is_the_per_group_mean(grouped):
    """The empty circuit under grouped mean ablation is the model run on each group's mean embeddings
    and sender outputs; every example of a one-template set gets the plain mean."""
    f, ds, templates = grouped
    g = f.evaluate_circuit(ds, ["L0.H1", "L1.mlp"], ablation=fc.sources.mean(by="template"))
    plain = f.evaluate_circuit(ds, ["L0.H1", "L1.mlp"], ablation="mean")
    assert g.ablation == "mean(by=template)" and not np.allclose(g.empty, plain.empty)
    for t in set(templates):
        idx = [i for i in range(ds.n) if templates[i] == t]
        sub_p = f.evaluate_circuit(ds.subset(idx), ["L0.H1", "L1.mlp"], ablation="mean")
        np.testing.assert_allclose(g.circuit[idx], sub_p.circuit, atol=1e-10)
        np.testing.assert_allclose(g.empty[idx], sub_p.empty, atol=1e-10)
    scores = f.edge_scores(ds, method="eap", ablation=fc.sources.mean(by="template"))
    assert scores.ablation == "mean(by=template)"


def test_grouped_mean_errors(tiny, grouped):
    f, ds, _ = grouped
    with pytest.raises(DatasetError, match=r"mean\(by='nope'\): example\(s\) \[0, 1, 2, 3, 4\] .* have no "
                                           r"example_meta\['nope'\] \(keys present: .*'template'"):
        f.patch(ds, resid_pre(1, "END"), source=fc.sources.mean(by="nope"))
    with pytest.raises(SourceError, match="takes a key of the data set's example_meta"):
        fc.sources.mean(by="")
    with pytest.raises(UsageError, match=r"unknown ablation 'avg'.*fieldcheck\.sources\.mean\(by='template'\)"):
        f.evaluate_circuit(ds, ["L0.H1"], ablation="avg")
    lone = ds.subset([0, 1, 2])   # templates 1, 0, 0
    with pytest.warns(UserWarning, match=r"1 of 2 groups have one example \(1\): their mean is the example itself"):
        r = f.patch(lone, resid_pre(1, "END"), source=fc.sources.mean(by="template"))
    assert r.values[0, 0] == r.baseline_corrupt[0]
