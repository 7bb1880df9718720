"""Built-in contrastive data sets: ``ioi``, ``factual_recall`` and ``induction``.

Each built-in is ``f(model, n=16, seed=0, ...) -> ContrastiveSet``, deterministic for a seed, and
uses only words that are single tokens for the model's tokenizer (with the leading space they
have in the prompt). The word lists are package data (``fieldcheck/data/words.json``) and are
filtered with the tokenizer up front; every set has one token length.

``load(name, model, **kw)`` looks a built-in up by name (``available()`` lists the names).
"""
from __future__ import annotations

import itertools
import json
import math
import random
import weakref
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Sequence

import torch

from fieldcheck.data.contrastive import ContrastiveSet, NotEnoughExamples, tok_info, weak_cached
from fieldcheck.errors import DatasetError, check_int

__all__ = ["ioi", "factual_recall", "induction", "load", "available", "register", "words",
           "vocab", "IOI_CORRUPTIONS"]

IOI_CORRUPTIONS = ("abc", "flip")


@lru_cache(maxsize=1)
def words() -> dict[str, Any]:
    """The raw word lists (package data ``fieldcheck/data/words.json``)."""
    with resources.files("fieldcheck.data").joinpath("words.json").open(encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------------------------
# the word lists filtered for one tokenizer
# --------------------------------------------------------------------------------------------

class Vocab:
    """The word lists of ``words.json`` filtered for one model's tokenizer.

    Attributes (all in the order of ``words.json``, so that "first entries" are stable):
        names, places, objects, induction_words: words ``w`` for which ``" " + w`` is one token.
        ids: word -> token id of ``" " + word``.
        templates: IOI template id -> (template, token length, {"IO": p, "S1": p, "S2": p}).
        facts: facts whose attribute is one token; each dict gets ``subj_len``, ``length``,
            ``subj_first`` and ``subj_last``.
        dropped: what was filtered out, per list.
    """

    def __init__(self, model: Any):
        self.tok = tok_info(model)
        self.tok.check_bos()
        w = words()
        self.dropped: dict[str, list] = {}
        self.ids: dict[str, int] = {}
        for key in ("names", "places", "objects", "induction_words"):
            keep, drop, seen = [], [], set()
            for word in w[key]:
                tid = self.tok.single_token(" " + word)
                if tid is None or tid in seen:
                    drop.append(word)
                else:
                    keep.append(word)
                    seen.add(tid)
                    self.ids[word] = tid
            setattr(self, key, keep)
            self.dropped[key] = drop
        self._ioi_templates(w["ioi_templates"])
        self._facts(w["relations"], w["facts"])

    # IOI -------------------------------------------------------------------------------------
    def _ioi_templates(self, templates: Sequence[str]) -> None:
        self.templates: dict[int, tuple[str, int, dict[str, int]]] = {}
        self.dropped["ioi_templates"] = []
        if len(self.names) < 2 or not self.places or not self.objects:
            return
        io, s, place, obj = self.names[0], self.names[1], self.places[0], self.objects[0]
        for tid, t in enumerate(templates):
            p = ioi_fill(t, io, s, s, place, obj)
            ids = self.tok.prompt_tokens(p)
            io_pos = [j for j, x in enumerate(ids) if x == self.ids[io]]
            s_pos = [j for j, x in enumerate(ids) if x == self.ids[s]]
            if len(io_pos) != 1 or len(s_pos) != 2:
                self.dropped["ioi_templates"].append(tid)
                continue
            self.templates[tid] = (t, len(ids), {"IO": io_pos[0], "S1": s_pos[0],
                                                 "S2": s_pos[1], "S1+1": s_pos[0] + 1})

    def template_groups(self, template_ids: Sequence[int] | None = None
                        ) -> tuple[list[int], dict[int, list[int]]]:
        """(the chosen template ids, {token length: template ids}) for ``template_ids``
        (default all usable). The chosen group is the most common length; ties go to the group
        of the first listed template."""
        n_all = len(words()["ioi_templates"])
        if template_ids is None:
            ids = list(self.templates)
        else:
            if isinstance(template_ids, int):
                template_ids = [template_ids]
            ids = []
            for t in template_ids:
                if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < n_all:
                    raise DatasetError(f"IOI template {t!r} does not exist: valid template "
                                       f"indices are 0..{n_all - 1} (words.json ioi_templates)")
                if t not in self.templates:
                    raise DatasetError(
                        f"IOI template {t} cannot be used with this tokenizer (its names are "
                        "not found as single tokens in the tokenized prompt); usable templates: "
                        f"{sorted(self.templates)}")
                if t not in ids:
                    ids.append(t)
        if not ids:
            raise DatasetError(
                "no IOI template is usable with this tokenizer: need at least 2 single-token "
                f"names (have {len(self.names)}), 1 place ({len(self.places)}) and 1 object "
                f"({len(self.objects)}); extend fieldcheck/data/words.json")
        groups: dict[int, list[int]] = {}
        for t in ids:
            groups.setdefault(self.templates[t][1], []).append(t)
        best = max(groups, key=lambda L: (len(groups[L]), -ids.index(groups[L][0])))
        return groups[best], groups

    # facts -----------------------------------------------------------------------------------
    def _facts(self, relations: dict[str, str], facts: Sequence[dict]) -> None:
        self.relations = dict(relations)
        self.facts: list[dict[str, Any]] = []
        self.dropped["facts"] = []
        for i, f in enumerate(facts):
            rel, subj, attr = f["relation"], f["subject"], f["attribute"]
            tmpl = relations.get(rel)
            aid = self.tok.single_token(" " + attr)
            if tmpl is None or aid is None or "[SUBJECT]" not in tmpl:
                self.dropped["facts"].append(f)
                continue
            prompt = tmpl.replace("[SUBJECT]", subj)
            ids = self.tok.prompt_tokens(prompt)
            prefix = tmpl.split("[SUBJECT]")[0]
            if prefix.strip():
                pre = self.tok.prompt_tokens(prefix.rstrip())
            else:
                pre = self.tok.prompt_tokens("x")[:-1] if self.tok.prepend_bos else []
            subj_ids = self.tok.piece_tokens((" " if prefix.endswith(" ") else "") + subj)
            k = len(subj_ids)
            if (ids[:len(pre)] != pre or ids[len(pre):len(pre) + k] != subj_ids
                    or any(self.tok._is_unk(x, prompt) for x in ids)):
                self.dropped["facts"].append(f)
                continue
            self.ids[attr] = aid
            self.facts.append({"index": i, "relation": rel, "subject": subj, "attribute": attr,
                               "prompt": prompt, "length": len(ids), "subj_len": k,
                               "subj_first": len(pre), "subj_last": len(pre) + k - 1})

    def fact_pairs(self, relation: str | None = None) -> tuple[list[tuple[int, int]], dict]:
        """Valid (clean, corrupt) index pairs into ``self.facts`` for one prompt length:
        same relation, same subject token length, different subject and attribute. Returns
        (pairs, info) where info names the chosen length and the lengths found."""
        if relation is not None and relation not in self.relations:
            raise DatasetError(f"unknown relation {relation!r}: the relations are "
                               f"{sorted(self.relations)} (words.json)")
        facts = [(i, f) for i, f in enumerate(self.facts)
                 if relation is None or f["relation"] == relation]
        by_len: dict[int, list[tuple[int, int]]] = {}
        for (i, f), (j, g) in itertools.permutations(facts, 2):
            if (f["relation"] == g["relation"] and f["subj_len"] == g["subj_len"]
                    and f["length"] == g["length"] and f["subject"] != g["subject"]
                    and self.ids[f["attribute"]] != self.ids[g["attribute"]]):
                by_len.setdefault(f["length"], []).append((i, j))
        if not by_len:
            raise DatasetError(
                f"no factual-recall pairs for relation {relation!r} with this tokenizer: need "
                "two facts of one relation whose subjects have the same token length and whose "
                f"attributes differ and are single tokens ({len(facts)} usable facts); extend "
                "fieldcheck/data/words.json")
        best = max(by_len, key=lambda L: (len(by_len[L]), -L))
        info = {"length": best, "pairs_by_length": {L: len(v) for L, v in sorted(by_len.items())}}
        return by_len[best], info


_VOCABS: "weakref.WeakKeyDictionary[Any, Vocab]" = weakref.WeakKeyDictionary()


def vocab(model: Any) -> Vocab:
    """The filtered word lists for ``model`` (cached weakly per model object)."""
    return weak_cached(_VOCABS, model, Vocab)


# --------------------------------------------------------------------------------------------
# example builders (shared with fieldcheck.strategies)
# --------------------------------------------------------------------------------------------

def ioi_fill(template: str, io: str, s1: str, s2: str, place: str, obj: str) -> str:
    """Fill an IOI template; the first [S] gets ``s1``, the second ``s2``."""
    a, b = template.split("[S]", 1) if template.count("[S]") == 2 else (template, "")
    if b:
        out = a.replace("[S]", s1) + s1 + b.replace("[S]", s2)
    else:  # pragma: no cover - templates always have two [S]
        out = template.replace("[S]", s1)
    return out.replace("[IO]", io).replace("[PLACE]", place).replace("[OBJECT]", obj)


def ioi_record(v: Vocab, template_id: int, io: str, s: str, c: str | None, place: str,
               obj: str, corruption: str = "abc") -> dict[str, Any]:
    """One IOI example as a record (see ContrastiveSet.from_records)."""
    t, _, pos = v.templates[template_id]
    if corruption == "abc":
        s2_corrupt = c
    elif corruption == "flip":
        s2_corrupt = io
    else:
        raise DatasetError(f"unknown IOI corruption {corruption!r}: use one of {IOI_CORRUPTIONS} "
                           "('abc' replaces the second S by a third name, 'flip' by the IO name)")
    return {"clean": ioi_fill(t, io, s, s, place, obj),
            "corrupt": ioi_fill(t, io, s, s2_corrupt, place, obj),
            "answer": " " + io, "wrong": " " + s, "positions": dict(pos),
            "meta": {"template": template_id, "IO": io, "S": s,
                     **({"C": c} if corruption == "abc" else {}),
                     "place": place, "object": obj}}


def factual_record(v: Vocab, clean_fact: int, corrupt_fact: int) -> dict[str, Any]:
    f, g = v.facts[clean_fact], v.facts[corrupt_fact]
    return {"clean": f["prompt"], "corrupt": g["prompt"], "answer": " " + f["attribute"],
            "wrong": " " + g["attribute"],
            "positions": {"SUBJ_FIRST": f["subj_first"], "SUBJ_LAST": f["subj_last"]},
            "meta": {"relation": f["relation"], "subject": f["subject"],
                     "corrupt_subject": g["subject"]}}


def induction_record(v: Vocab, seq: Sequence[str], others: Sequence[str], wrong: str
                     ) -> dict[str, Any]:
    """[BOS] w1..wk w1..w(k-1) -> wk; corrupt: [BOS] w1..wk r1..r(k-1); wrong: another word."""
    k = len(seq)
    bos = 1 if v.tok.prepend_bos else 0
    clean = " " + " ".join(list(seq) + list(seq[:-1]))
    corrupt = " " + " ".join(list(seq) + list(others))
    return {"clean": clean, "corrupt": corrupt, "answer": " " + seq[-1], "wrong": " " + wrong,
            "positions": {"PREV": bos + k - 2},
            "meta": {"sequence": list(seq), "others": list(others)}}


def _verify_ioi(ds: ContrastiveSet, v: Vocab, corruption: str) -> None:
    idx = torch.arange(ds.n)
    io = ds.clean_tokens[idx, ds.positions["IO"]]
    s1 = ds.clean_tokens[idx, ds.positions["S1"]]
    s2 = ds.clean_tokens[idx, ds.positions["S2"]]
    ok = (io == ds.answers) & (s1 == ds.wrong) & (s2 == ds.wrong)
    if corruption == "flip":
        ok &= ds.corrupt_tokens[idx, ds.positions["S2"]] == ds.answers
    if not bool(ok.all()):  # pragma: no cover - a tokenizer that merges names with neighbours
        i = int(torch.nonzero(~ok)[0])
        raise DatasetError(f"IOI example {i} {ds.clean_prompts[i]!r}: the names are not at the "
                           "expected token positions for this tokenizer")


def _check_n(n: Any, what: str, seed: Any = 0) -> int:
    """``n`` if it is a positive int; DatasetError for it, or for a ``seed`` that is not an int >= 0 (a
    seed of None or 1.5 would build a set of its own, silently not the one of any integer seed)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DatasetError(f"{what}: n={n!r} must be a positive integer number of examples")
    check_int("seed", seed, low=0, error=DatasetError, hint=f"{what}'s examples are drawn with this seed")
    return n


def _sample_distinct(rng: random.Random, n: int, capacity: int, draw: Callable[[], tuple],
                     enumerate_all: Callable[[], list[tuple]], what: str) -> list[tuple]:
    if n > capacity:
        raise NotEnoughExamples(
            f"{what}: asked for n={n} examples but only {capacity} distinct examples can be "
            "made with this tokenizer's single-token words; ask for n <= "
            f"{capacity} or extend fieldcheck/data/words.json")
    if capacity <= 50_000 and n > capacity // 4:
        return rng.sample(enumerate_all(), n)
    seen: set = set()
    out = []
    while len(out) < n:
        x = draw()
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


# --------------------------------------------------------------------------------------------
# built-ins
# --------------------------------------------------------------------------------------------

def ioi(model: Any, n: int = 16, seed: int = 0, corruption: str = "abc",
        templates: Sequence[int] | int | None = None) -> ContrastiveSet:
    """Indirect object identification: "When Mary and John went to the store, John gave a drink
    to" -> " Mary" (answer = IO), wrong = " John" (S).

    corruption="abc" (default) replaces the second S by a third name C, so the corrupted prompt
    carries no IOI signal; "flip" replaces it by the IO name. Both keep the clean answer/wrong
    tokens. Positions: "IO", "S1", "S1+1", "S2", "END". Templates of different token lengths are
    not mixed: the most common length among the chosen ones is used (``meta["dropped_templates"]``
    says which were left out and why).
    """
    n = _check_n(n, "ioi", seed)
    if corruption not in IOI_CORRUPTIONS:
        raise DatasetError(f"unknown IOI corruption {corruption!r}: use one of {IOI_CORRUPTIONS} "
                           "('abc' replaces the second S by a third name, 'flip' by the IO name)")
    v = vocab(model)
    chosen, groups = v.template_groups(templates)
    need = 3 if corruption == "abc" else 2
    if len(v.names) < need:
        raise DatasetError(f"ioi(corruption={corruption!r}) needs {need} single-token names, "
                           f"this tokenizer has {len(v.names)} ({v.names}); extend words.json")
    N, P, O = len(v.names), len(v.places), len(v.objects)
    per_t = N * (N - 1) * ((N - 2) if corruption == "abc" else 1) * P * O
    capacity = len(chosen) * per_t
    rng = random.Random(f"ioi/{seed}/{corruption}")

    def draw():
        t = rng.choice(chosen)
        names = rng.sample(v.names, need)
        c = names[2] if corruption == "abc" else None
        return (t, names[0], names[1], c, rng.choice(v.places), rng.choice(v.objects))

    def all_():
        out = []
        for t in chosen:
            for names in itertools.permutations(v.names, need):
                c = names[2] if corruption == "abc" else None
                out += [(t, names[0], names[1], c, p, o) for p in v.places for o in v.objects]
        return out

    specs = _sample_distinct(rng, n, capacity, draw, all_, f"ioi(corruption={corruption!r})")
    records = [ioi_record(v, t, io, s, c, p, o, corruption) for t, io, s, c, p, o in specs]
    all_ids = sorted(t for g in groups.values() for t in g)
    dropped = {t: v.templates[t][1] for t in all_ids if t not in chosen}
    meta = {"builtin": "ioi", "seed": seed, "n": n, "corruption": corruption,
            "template_ids": chosen, "seq_len": v.templates[chosen[0]][1],
            "dropped_templates": dropped,
            "note": (f"templates {sorted(dropped)} left out: their token lengths "
                     f"{sorted(set(dropped.values()))} differ from {v.templates[chosen[0]][1]}"
                     if dropped else "")}
    ds = ContrastiveSet.from_records(model, records, name=f"ioi-{corruption}", meta=meta)
    _verify_ioi(ds, v, corruption)
    return ds


def factual_recall(model: Any, n: int = 16, seed: int = 0, relation: str | None = None,
                   replace: bool = False) -> ContrastiveSet:
    """Entity -> attribute prompts ("The capital of France is" -> " Paris").

    The corrupted prompt swaps the subject for another subject of the same relation with the
    same token length and a different attribute; answer = clean attribute, wrong = the corrupt
    subject's attribute. Positions: "SUBJ_FIRST", "SUBJ_LAST", "END". With relation=None the
    prompt length with the most (clean, corrupt) pairs is used. Pairs are distinct unless
    ``replace=True`` (then drawn with replacement, so any n works).
    """
    n = _check_n(n, "factual_recall", seed)
    v = vocab(model)
    pairs, info = v.fact_pairs(relation)
    rng = random.Random(f"factual/{seed}/{relation}")
    if replace:
        chosen = [rng.choice(pairs) for _ in range(n)]
    else:
        if n > len(pairs):
            raise NotEnoughExamples(
                f"factual_recall(relation={relation!r}): asked for n={n} examples but only "
                f"{len(pairs)} distinct (clean, corrupt) pairs of one prompt length "
                f"({info['length']} tokens) exist for this tokenizer; ask for n <= {len(pairs)}, "
                "pass replace=True to draw pairs with replacement, or extend words.json")
        chosen = rng.sample(pairs, n)
    records = [factual_record(v, i, j) for i, j in chosen]
    rels = sorted({v.facts[i]["relation"] for i, _ in chosen})
    meta = {"builtin": "factual_recall", "seed": seed, "n": n, "relation": relation,
            "relations": rels, "seq_len": info["length"], "replace": replace,
            "pairs_available": len(pairs), "pairs_by_length": info["pairs_by_length"]}
    name = f"factual-{relation}" if relation else "factual"
    return ContrastiveSet.from_records(model, records, name=name, meta=meta)


def induction(model: Any, n: int = 16, seed: int = 0, length: int = 6) -> ContrastiveSet:
    """Repeated random single-token words: [BOS] w1..wk w1..w(k-1) -> wk (k = ``length``).

    Corrupted: the second half is replaced by other random words (no repetition); wrong = a word
    not in either prompt. Positions: "END", "PREV" (the first occurrence of the token at END,
    i.e. the token after which wk came first).
    """
    n = _check_n(n, "induction", seed)
    v = vocab(model)
    W = len(v.induction_words)
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise DatasetError(f"induction: length={length!r} must be an integer >= 2 (the repeated "
                           "sequence needs at least two words)")
    if 2 * length > W:
        raise NotEnoughExamples(
            f"induction: length={length} needs {2 * length} distinct single-token words "
            f"({length} for the sequence, {length - 1} for the corruption, 1 wrong answer) but "
            f"this tokenizer has {W} usable induction_words; use length <= {W // 2}, or extend "
            "words.json")
    capacity = math.perm(W, length)
    rng = random.Random(f"induction/{seed}/{length}")
    if n > capacity:
        raise NotEnoughExamples(f"induction: asked for n={n} but only {capacity} distinct "
                                f"sequences of length {length} exist; ask for fewer")
    seen: set = set()
    records = []
    while len(records) < n:
        seq = tuple(rng.sample(v.induction_words, length))
        if seq in seen:
            continue
        seen.add(seq)
        rest = [w for w in v.induction_words if w not in seq]
        picked = rng.sample(rest, length)
        records.append(induction_record(v, seq, picked[:-1], picked[-1]))
    meta = {"builtin": "induction", "seed": seed, "n": n, "length": length,
            "seq_len": (1 if v.tok.prepend_bos else 0) + 2 * length - 1}
    return ContrastiveSet.from_records(model, records, name=f"induction-{length}", meta=meta)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[..., ContrastiveSet]] = {
    "ioi": ioi, "factual_recall": factual_recall, "factual": factual_recall,
    "induction": induction,
}


def register(name: str, fn: Callable[..., ContrastiveSet]) -> None:
    """Register a data set builder ``fn(model, n=..., seed=..., **kw)`` under ``name`` (a non-empty
    string; registering a name again replaces its builder). DatasetError for a name that is not a
    string or a ``fn`` that is not callable."""
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(f"register(name, fn): name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise DatasetError(f"register({name!r}, fn): fn must be a callable fn(model, n=..., seed=..., **kw) that "
                           f"returns a ContrastiveSet, got {fn!r}")
    _REGISTRY[name] = fn


def available() -> list[str]:
    """The names of the built-in (and registered) data sets that ``load(name, model)`` builds, sorted."""
    return sorted(_REGISTRY)


def load(name: str, model: Any, **kw: Any) -> ContrastiveSet:
    """Build the built-in data set ``name`` (``"ioi"``, ``"factual_recall"``, ``"induction"``, or one
    registered with :func:`register`) for ``model``. ``**kw``: passed to that data set's generator
    (e.g. ``n=16, seed=0``; an unknown keyword is a DatasetError). Returns a ContrastiveSet."""
    fn = _REGISTRY.get(name) if isinstance(name, str) else None
    if fn is None:
        raise DatasetError(f"unknown data set {name!r}: the built-ins are {available()} "
                           "(or register your own with fieldcheck.datasets.register)")
    try:
        return fn(model, **kw)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise DatasetError(f"data set {name!r}: {e}") from None
        raise
