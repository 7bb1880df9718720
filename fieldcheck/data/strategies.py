"""Hypothesis strategies that draw contrastive examples valid for a model's tokenizer.

Every strategy filters the word lists with the tokenizer up front (single-token names, one token
length per template group), so every draw is valid by construction; nothing is rejected with
``assume()``. Names, templates, places, objects, facts and words are drawn with
``sampled_from`` over the lists in ``words.json`` order, so hypothesis shrinks a falsifying
example toward the first entries (template 0, "Mary", "John", ...).

Single-example strategies draw a :class:`~fieldcheck.ContrastiveSet` of one example (its
``repr``/``summary`` shows the prompt, which is what hypothesis prints for a falsifying example):

    from hypothesis import given, settings
    from fieldcheck.data.strategies import ioi_examples

    @settings(derandomize=True, max_examples=25, deadline=None)
    @given(ex=ioi_examples(model))
    def test_prefers_io(ex):
        assert field.patch(ex, ...).values ...

``contrastive_sets(model, kind="ioi", min_size=4, max_size=16)`` draws whole sets.
"""
from __future__ import annotations

from typing import Any, Sequence

from hypothesis import strategies as st

from fieldcheck.data.contrastive import ContrastiveSet
from fieldcheck.data.builtin import (IOI_CORRUPTIONS, factual_record, induction_record, ioi_record,
                                 vocab)
from fieldcheck.errors import DatasetError

__all__ = ["ioi_examples", "factual_examples", "induction_examples", "contrastive_sets",
           "ioi_records", "factual_records", "induction_records", "KINDS"]

KINDS = ("ioi", "factual", "induction")


# --------------------------------------------------------------------------------------------
# record strategies (plain dicts, cheap; used by the set strategies)
# --------------------------------------------------------------------------------------------

def ioi_records(model: Any, templates: Sequence[int] | int | None = None,
                corruption: str = "abc") -> st.SearchStrategy[dict]:
    """IOI records (dicts for ContrastiveSet.from_records) of one token length."""
    if corruption not in IOI_CORRUPTIONS:
        raise DatasetError(f"unknown IOI corruption {corruption!r}: use one of {IOI_CORRUPTIONS}")
    v = vocab(model)
    chosen, _ = v.template_groups(templates)
    need = 3 if corruption == "abc" else 2
    if len(v.names) < need or not v.places or not v.objects:
        raise DatasetError(f"ioi strategies need {need} single-token names, a place and an "
                           f"object; this tokenizer has {len(v.names)} names, {len(v.places)} "
                           f"places, {len(v.objects)} objects")

    @st.composite
    def draw(dr):
        t = dr(st.sampled_from(chosen))
        io = dr(st.sampled_from(v.names))
        s = dr(st.sampled_from([x for x in v.names if x != io]))
        c = None
        if corruption == "abc":
            c = dr(st.sampled_from([x for x in v.names if x not in (io, s)]))
        place = dr(st.sampled_from(v.places))
        obj = dr(st.sampled_from(v.objects))
        return ioi_record(v, t, io, s, c, place, obj, corruption)

    return draw()


def factual_records(model: Any, relation: str | None = None) -> st.SearchStrategy[dict]:
    """Factual-recall records of one prompt length (see ``datasets.factual_recall``)."""
    v = vocab(model)
    pairs, _ = v.fact_pairs(relation)
    partners: dict[int, list[int]] = {}
    for i, j in pairs:
        partners.setdefault(i, []).append(j)
    cleans = sorted(partners)

    @st.composite
    def draw(dr):
        i = dr(st.sampled_from(cleans))
        j = dr(st.sampled_from(partners[i]))
        return factual_record(v, i, j)

    return draw()


def induction_records(model: Any, length: int = 6) -> st.SearchStrategy[dict]:
    """Induction records with a repeated sequence of ``length`` distinct single-token words."""
    v = vocab(model)
    W = v.induction_words
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise DatasetError(f"induction: length={length!r} must be an integer >= 2")
    if 2 * length > len(W):
        raise DatasetError(f"induction: length={length} needs {2 * length} distinct "
                           f"single-token words, this tokenizer has {len(W)}; use length <= "
                           f"{len(W) // 2}")

    @st.composite
    def draw(dr):
        # draw 2*length distinct words: a permutation prefix drawn index by index from the
        # remaining list, so that shrinking moves toward the first words of the list
        pool = list(W)
        picked = []
        for _ in range(2 * length):
            w = dr(st.sampled_from(pool))
            pool.remove(w)
            picked.append(w)
        seq, others, wrong = picked[:length], picked[length:2 * length - 1], picked[-1]
        return induction_record(v, seq, others, wrong)

    return draw()


def _records(model: Any, kind: str, **kw: Any) -> st.SearchStrategy[dict]:
    if kind == "ioi":
        return ioi_records(model, **kw)
    if kind in ("factual", "factual_recall"):
        return factual_records(model, **kw)
    if kind == "induction":
        return induction_records(model, **kw)
    raise DatasetError(f"unknown example kind {kind!r}: use one of {KINDS}")


def one_example_set(model: Any, rec: dict, kind: str) -> ContrastiveSet:
    """A one-example set from a drawn record (hypothesis shows this call with the record, i.e.
    the prompts, in its falsifying-example report)."""
    return ContrastiveSet.from_records(model, [rec], name=f"{kind}-drawn",
                                       meta={"strategy": kind})


# --------------------------------------------------------------------------------------------
# single examples and whole sets
# --------------------------------------------------------------------------------------------

def ioi_examples(model: Any, templates: Sequence[int] | int | None = None,
                 corruption: str = "abc") -> st.SearchStrategy[ContrastiveSet]:
    """One-example IOI sets with drawn template, names, place and object."""
    return ioi_records(model, templates, corruption).map(
        lambda r: one_example_set(model, r, "ioi"))


def factual_examples(model: Any, relation: str | None = None
                     ) -> st.SearchStrategy[ContrastiveSet]:
    """One-example factual-recall sets with drawn (clean, corrupt) subjects."""
    return factual_records(model, relation).map(
        lambda r: one_example_set(model, r, "factual"))


def induction_examples(model: Any, length: int = 6) -> st.SearchStrategy[ContrastiveSet]:
    """One-example induction sets with a drawn repeated sequence."""
    return induction_records(model, length).map(
        lambda r: one_example_set(model, r, "induction"))


def contrastive_sets(model: Any, kind: str = "ioi", min_size: int = 4, max_size: int = 16,
                     **kw: Any) -> st.SearchStrategy[ContrastiveSet]:
    """Whole ContrastiveSets of ``min_size..max_size`` drawn examples of one kind (one token
    length). ``kw`` go to the record strategy (``templates``/``corruption`` for ioi,
    ``relation`` for factual, ``length`` for induction)."""
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
        raise DatasetError(f"contrastive_sets: min_size={min_size!r} must be an integer >= 1 "
                           "(an empty set is not a data set)")
    if not isinstance(max_size, int) or max_size < min_size:
        raise DatasetError(f"contrastive_sets: max_size={max_size!r} must be >= "
                           f"min_size={min_size}")
    recs = _records(model, kind, **kw)
    return st.lists(recs, min_size=min_size, max_size=max_size).map(
        lambda rs: ContrastiveSet.from_records(model, rs, name=f"{kind}-drawn",
                                               meta={"strategy": kind, **kw}))
