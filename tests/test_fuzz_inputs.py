"""Fuzz of the entry points that build inputs (issue 23): sites, sources, metrics, the built-in data
sets and ContrastiveSet constructors, circuits and path-patching receivers, result constructors,
``fc.load_model``, the ``fieldcheck`` command line and the pytest plugin's ``--fc-*`` options.

Same property as every fuzz test (tests/_fuzz.py): a value that passes its invariants, or a
FieldcheckError naming the bad argument (for the plugin's options: a ``pytest.UsageError``, which
pytest turns into exit status 4; for the command line: exit status 1 with ``fieldcheck: error:``
or argparse's 2, never a traceback).
"""
from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import fieldcheck as fc
from _fuzz import Arg, Escaped, Exerciser, bad, call, choices, fuzz, ints, ok, seeds
from fieldcheck import sites as S
from fieldcheck.errors import FieldcheckError, InsufficientData

# the hypothesis suites are CI's (make test), not the edit-test loop's (make test-quick)
pytestmark = pytest.mark.slow

KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_head", "attn_out", "mlp_out")


def _index_like(word):
    """Layers, heads or positions as a constructor takes them: ints, ranges, lists, "all",
    numpy/torch arrays, and things that are not (floats, dicts, None)."""
    return st.one_of(
        ok(st.integers(-40, 40)), ok(st.just("all")), ok(st.just(all)),
        ok(st.lists(st.integers(-5, 40), min_size=0, max_size=4)),
        ok(st.integers(0, 5).map(range)), ok(st.integers(1, 4).map(lambda n: np.arange(n))),
        ok(st.integers(1, 4).map(lambda n: torch.arange(n))),
        bad(st.sampled_from([1.5, None, {"a": 1}, np.array([0.5]), True, b"x", object()]), word),
    )


@fuzz(60, "fc.sites.resid_pre", "fc.sites.resid_mid", "fc.sites.resid_post", "fc.sites.attn_head",
      "fc.sites.attn_out", "fc.sites.mlp_out", "fc.sites.site", "fc.sites.as_site_set")
@given(data=st.data())
def test_site_constructors_and_resolution(data):
    """Constructors refuse what is not an index by name; resolving against a model and a prompt
    length gives Sites inside the lattice, or a SiteError naming the layer, head or position."""
    kind = data.draw(st.sampled_from(KINDS))
    layers = data.draw(_index_like("layers"))
    positions = data.draw(st.one_of(_index_like("positions"), ok(st.sampled_from(["END", "IO", "S9"]))))
    heads = data.draw(_index_like("heads"))
    via = data.draw(st.sampled_from(["constructor", "site", "as_site_set"]))
    if via == "constructor":
        got = (call(S.attn_head, layers, heads, positions) if kind == "attn_head" else
               call(getattr(S, kind), layers, positions))
    elif via == "site":
        k = data.draw(st.one_of(ok(st.just(kind)), bad(st.sampled_from(["resid", "", None]), "kind")))
        if kind != "attn_head":  # only heads take a head
            heads = data.draw(st.one_of(ok(st.just(None)), st.just(Arg(heads.value, heads.bad + ("head",)))))
        got = call(S.site, k, layers, positions, heads)
    else:
        x = data.draw(st.one_of(ok(st.just(S.Site(kind, 0, 0, 0 if kind == "attn_head" else None))),
                                ok(st.just([S.Site("resid_pre", 1, "END")])),
                                bad(st.sampled_from(["L0.nothing@END", 3, None, [("resid_pre", 0, 0)], [S.Site("x", 0, 0), 1]]),
                                    "site")))
        got = call(S.as_site_set, x)
    if not isinstance(got, S.SiteSet):
        return
    n_layers, n_heads, seq_len = data.draw(st.tuples(st.integers(1, 6), st.integers(1, 4), st.integers(1, 20)))
    names = data.draw(st.sampled_from([("END",), ("END", "IO", "S2")]))
    resolved = call(got.resolve, n_layers, n_heads, seq_len, names,
                    allow=(fc.SiteError,))  # the drawn indices may not fit the drawn model: refused by name
    if isinstance(resolved, list):
        assert resolved, "resolve gave no sites without an error"
        for s in resolved:
            top = n_layers + 1 if s.kind == "resid_pre" else n_layers
            assert 0 <= s.layer < top, s
            assert (s.pos in names) if isinstance(s.pos, str) else 0 <= s.pos < seq_len, s
            assert (s.head is None) == (s.kind != "attn_head") and (s.head is None or 0 <= s.head < n_heads)
            assert isinstance(s.label, str) and s.hook_name.startswith("blocks.")
            json.dumps(s.to_dict())
    elif isinstance(resolved, fc.SiteError):
        msg = str(resolved)
        assert any(w in msg for w in ("layer", "head", "position", "empty", "kind")), msg


@fuzz(60, "fc.sites.depth", "fc.sites.first", "fc.sites.last", "fc.sites.from_label", "fc.sites.layer_index")
@given(data=st.data())
def test_relative_layers_and_labels(data):
    """Layers relative to the depth resolve inside any model (models of other depths: 1..40 layers);
    a label gives its site set or a SiteError naming it; a lookup by layer names the layers that exist."""
    n_layers = data.draw(st.integers(1, 40))
    frac = st.floats(0, 1)
    how = data.draw(st.sampled_from(["depth1", "depth2", "last", "first"]))
    if how == "depth1":
        rel = call(S.depth, data.draw(st.one_of(ok(frac), bad(st.sampled_from([-0.1, 1.5, float("nan"), "half", None,
                                                                             True]), "depth", "lo"))))
    elif how == "depth2":
        lo, hi = data.draw(st.tuples(frac, frac))
        rel = call(S.depth, lo, Arg(hi, () if hi > lo else ("hi", "above")))
    else:
        rel = call(getattr(S, how), data.draw(st.one_of(ok(st.integers(1, 50)),
                                                        bad(st.sampled_from([0, -2, 1.5, "3", None, True]), how))))
    if isinstance(rel, S.Depth):
        got = rel.of(n_layers)
        assert all(0 <= l < n_layers for l in got) and got == sorted(set(got)), (rel, n_layers, got)
        assert got or (how == "depth2"), (rel, n_layers)
        kind = data.draw(st.sampled_from(KINDS))
        sites = (S.attn_head(rel, 0, "END") if kind == "attn_head" else getattr(S, kind)(rel, "END"))
        resolved = call(sites.resolve, n_layers, 2, 5, ("END",), allow=(fc.SiteError,))
        if isinstance(resolved, list):
            assert sorted({x.layer for x in resolved}) == got
        call(rel.of, data.draw(bad(st.sampled_from([0, -1, "x", None]), "layers")))
    L = data.draw(st.integers(0, 30))
    label = data.draw(st.one_of(
        ok(st.sampled_from([f"L{L}.resid_pre@END", f"L{L}.H1@3", f"L{L}.mlp", f"L{L}.attn@END", f"L{L}.resid_mid",
                            f"L{L}.resid_post@0", f"L{L}"])),
        bad(st.sampled_from(["embed", "logits", f"L{L}.H1.q", "Lx", "", "L3.H", 3, None]), "label",
            "site", "component", "position", "L")))
    got = call(S.from_label, label)
    if isinstance(got, S.SiteSet):
        resolved = call(got.resolve, max(L + 1, 2), 4, 8, ("END",), allow=(fc.SiteError,))
        if isinstance(resolved, list):
            assert all(x.layer == L for x in resolved)
    n_rows = data.draw(st.integers(1, 30))
    i = call(S.layer_index, data.draw(st.one_of(
        ok(st.integers(-n_rows, n_rows - 1)),
        st.integers(n_rows, n_rows + 40).map(lambda l: Arg(l, ("layer", str(l), f"0..{n_rows - 1}"))),
        bad(st.sampled_from([1.5, "3", None, True]), "layer"))), n_rows, "this result")
    if isinstance(i, int):
        assert 0 <= i < n_rows


@fuzz(40, "fc.sources.example_groups", "fc.sources.group_mean")
@given(data=st.data())
def test_grouped_means(data):
    """Groups by a key of ``example_meta`` (a DatasetError naming the key and the examples without it);
    a grouped mean equals numpy's mean per group."""
    n = data.draw(st.integers(1, 6))
    keys = data.draw(st.lists(st.sampled_from(["a", "b", 0, None]), min_size=n, max_size=n))
    metas = [{"template": k} for k in keys]
    missing = data.draw(st.booleans()) and n > 1
    if missing:
        metas[-1] = {}
    ds = type("Set", (), {"n": n, "example_meta": metas, "name": "drawn"})()
    by = data.draw(st.one_of(ok(st.just("template")), bad(st.sampled_from(["nope"]), "nope", "example_meta")))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a one-example group: warned, as documented
        groups = call(fc.sources.example_groups, ds, Arg(by.value, by.bad + (("template",) if missing else ())))
    if isinstance(groups, torch.Tensor):
        assert groups.shape == (n,) and int(groups.min()) == 0
        x = torch.randn(n, 3, dtype=torch.float64)
        m = call(fc.sources.group_mean, x, groups)
        for g in groups.unique():
            sel = groups == g
            torch.testing.assert_close(m[sel], x[sel].mean(0, keepdim=True).expand(int(sel.sum()), 3))
        call(fc.sources.group_mean, x, None)
        call(fc.sources.group_mean, x, Arg(groups[:-1] if n > 1 else torch.tensor([0, 0]), ("groups", "batch",
                                                                                              "shape")))


@fuzz(60, "fc.sources.as_source", "fc.sources.check_alpha", "fc.sources.gaussian", "fc.sources.steer",
      "fc.sources.noise_for", "fc.sources.other", "fc.sources.zero", "fc.sources.mean", "fc.metrics.as_metric")
@given(data=st.data())
def test_sources_and_metrics(data):
    from fieldcheck.field.metrics import Metric
    from fieldcheck.field.sources import Source

    alpha = data.draw(st.one_of(ok(st.floats(-1e6, 1e6)), ok(st.integers(-3, 3)),
                                bad(st.sampled_from([float("nan"), float("inf"), "1", None, [1.0], True]), "alpha")))
    a = call(fc.sources.check_alpha, alpha)
    if isinstance(a, float):
        assert math.isfinite(a) and a == float(alpha.value)
    scale = data.draw(st.one_of(ok(st.floats(0, 10)), bad(st.sampled_from([-1.0, float("nan"), "x", None]), "scale")))
    seed = data.draw(seeds())
    g = call(fc.sources.gaussian, scale, seed=seed)
    vec = data.draw(st.one_of(ok(st.sampled_from([torch.ones(8), torch.zeros(3, 8), np.ones(8), [1.0, 2.0]])),
                              bad(st.sampled_from([torch.ones(2, 2, 2), torch.full((4,), float("nan")), "v", None,
                                                   torch.ones(0)]), "steering", "vector")))
    call(fc.sources.steer, vec)
    for fn in (fc.sources.other, fc.sources.zero, fc.sources.mean):
        assert isinstance(call(fn), Source)
    x = data.draw(st.one_of(ok(st.sampled_from([None, "other", "zero", "mean", torch.ones(4)])),
                            bad(st.sampled_from(["noise", 3, object(), torch.ones(2, 2, 2)]), "source", "steering")))
    call(fc.sources.as_source, x)
    if isinstance(g, Source):
        shape = data.draw(st.one_of(ok(st.sampled_from([(2, 8), (1, 4)])), bad(st.sampled_from([(-1, 4), "x"]), "shape")))
        out = call(fc.sources.noise_for, g, "L0@END", shape, torch.float32, "cpu")
        if isinstance(out, torch.Tensor):
            assert tuple(out.shape) == shape.value and torch.isfinite(out).all()
            assert torch.equal(out, fc.sources.noise_for(g, "L0@END", shape.value, torch.float32, "cpu"))
    m = data.draw(st.one_of(ok(st.sampled_from(["logit_diff", "logprob", "prob", "kl", lambda lg, ds: lg[:, 0]])),
                            bad(st.sampled_from(["logit-diff", "", 3, None, [1]]), "metric")))
    got = call(fc.metrics.as_metric, m)
    if isinstance(got, Metric):
        assert isinstance(got.name, str) and got.name


# --- data sets -------------------------------------------------------------------------------------------


@fuzz(60, "fc.datasets.ioi", "fc.datasets.factual_recall", "fc.datasets.induction", "fc.datasets.load",
      "fc.datasets.available", "fc.datasets.vocab", "fc.datasets.register")
@given(data=st.data())
def test_builtin_data_sets(fuzz_pool, data):
    ctx = fuzz_pool.get("gpt2-2L")
    model = data.draw(st.one_of(ok(st.just(ctx.model)), bad(st.sampled_from([None, "gpt2", 3]), "model", "tokenizer")))
    n = data.draw(ints(1, 12, "n", allow=(InsufficientData,)))
    seed = data.draw(seeds())
    which = data.draw(st.sampled_from(["ioi", "factual_recall", "induction", "load"]))
    if which == "ioi":
        kw = {"corruption": data.draw(choices(("abc", "flip"), "corruption")),
              "templates": data.draw(st.one_of(ok(st.sampled_from([None, 0, [0, 1]])),
                                               bad(st.sampled_from([-100, 10 ** 6, "x", [1.5]]), "template")))}
        got = call(fc.datasets.ioi, model, n=n, seed=seed, **kw, allow=(InsufficientData,))
    elif which == "factual_recall":
        rel = data.draw(st.one_of(ok(st.just(None)), bad(st.sampled_from(["no-such-relation", 3]), "relation")))
        got = call(fc.datasets.factual_recall, model, n=n, seed=seed, relation=rel, replace=data.draw(st.booleans()),
                   allow=(InsufficientData,))
    elif which == "induction":
        length = data.draw(ints(2, 6, "length", above=10 ** 4))
        got = call(fc.datasets.induction, model, n=n, seed=seed, length=length, allow=(InsufficientData,))
    else:
        name = data.draw(st.one_of(ok(st.sampled_from(["ioi", "factual", "factual_recall", "induction"])),
                                   bad(st.sampled_from(["nope", "", 3, None, ["ioi"]]), "data set")))
        extra = data.draw(st.one_of(ok(st.just({})), st.just(Arg({"bogus": 1}, ("bogus", "keyword")))))
        got = call(fc.datasets.load, name, model, n=n, seed=seed, allow=(InsufficientData,),
                   **({"bogus": extra} if extra.value else {}))
    if isinstance(got, fc.ContrastiveSet) and not n.bad:
        assert got.n == n.value
    assert all(isinstance(x, str) for x in fc.datasets.available())
    v = call(fc.datasets.vocab, model)
    if not isinstance(v, Exception):
        assert len(v.names) >= 3
    reg_name = data.draw(st.one_of(ok(st.just("fuzz-registered")), bad(st.sampled_from([3, None, "", ["x"]]), "name")))
    fn = data.draw(st.one_of(ok(st.just(lambda model, n=4, seed=0: fc.datasets.ioi(model, n=n, seed=seed))),
                             bad(st.sampled_from([None, "ioi", 3]), "callable", "fn")))
    call(fc.datasets.register, reg_name, fn)


def _prompts(words, k):
    """k prompts of one shape made of the tiny vocabulary (valid), and odd ones."""
    return st.lists(st.sampled_from(words), min_size=3, max_size=3).map(
        lambda ws: [" ".join(ws) + " and"] * k)


@fuzz(60, "ContrastiveSet.from_pairs", "ContrastiveSet.from_records", "ContrastiveSet.from_jsonl",
      "ContrastiveSet.split_by_length", "ContrastiveSet.concat", "fc.ContrastiveSet")
@given(data=st.data())
def test_contrastive_set_constructors(fuzz_pool, data, tmp_path_factory):
    ctx = fuzz_pool.get("gpt2-2L")
    model = ctx.model
    words = ["Mary", "John", "went", "to", "the", "store", "gave", "a", "book"]
    k = data.draw(st.integers(1, 3))
    clean = data.draw(st.one_of(
        ok(_prompts(words, k)),
        bad(st.sampled_from([[], "Mary went", [""], [None], [3]]), "empty", "string", "list", "prompt", "str"),
        bad(st.just(["Mary went to the store"] * (k + 1)), "length", "lists", str(k + 1))))
    corrupt = data.draw(st.one_of(
        ok(st.just([p.replace("Mary", "John", 1) if "Mary" in p else "Mary " + " ".join(p.split()[1:])
                    for p in (clean.value if isinstance(clean.value, list) and all(isinstance(x, str) for x in
                                                                                    clean.value) else [])])),
        bad(st.just(["zzyzx qqq"] * k), "token", "unknown", "length"),
        ok(st.just(list(clean.value) if isinstance(clean.value, list) else []), allow=(fc.DatasetError,)),
    ))
    answers = data.draw(st.one_of(ok(st.sampled_from([[" Mary"] * k, ["John"] * k, [5] * k])),
                                  bad(st.sampled_from([["Mary went"] * k, ["zzyzx"] * k, [10 ** 7] * k, [None] * k,
                                                       [" Mary"] * (k + 2)]),
                                      "answer", "token", "vocabulary", "length", "lists")))
    wrong = data.draw(st.one_of(ok(st.just(["book"] * k)),
                                st.just(Arg(list(answers.value), ("same token",))) if not answers.bad else
                                ok(st.just(["book"] * k))))
    positions = data.draw(st.one_of(ok(st.just(None)), ok(st.just({"X": 1})),
                                    bad(st.sampled_from([{"X": 99}, {"X": [0] * (k + 3)}, {"X": "a"}, [1, 2]]),
                                        "position", "X")))
    how = data.draw(st.sampled_from(["from_pairs", "from_records", "from_jsonl", "split_by_length"]))
    allow = (fc.DatasetError,) if clean.allow or corrupt.allow else ()
    if how == "from_pairs":
        got = call(fc.ContrastiveSet.from_pairs, model, clean, corrupt, answers, wrong, positions=positions,
                   ex=Exerciser(data), allow=allow)
    elif how in ("from_records", "from_jsonl"):
        n = max(len(x) if isinstance(x, list) else 1 for x in (clean.value, corrupt.value, answers.value, wrong.value))
        pick = lambda v, i: v[i] if isinstance(v, list) and i < len(v) else v  # noqa: E731
        recs = [{"clean": pick(clean.value, i), "corrupt": pick(corrupt.value, i), "answer": pick(answers.value, i),
                 "wrong": pick(wrong.value, i)} for i in range(n)]
        words_bad = tuple(w for a in (clean, corrupt, answers, wrong) for w in a.bad)
        drop = data.draw(st.sampled_from([None, "wrong", "clean"]), label="drop a field")
        if drop:
            for r in recs:
                r.pop(drop, None)
            words_bad += (drop, "missing")
        if how == "from_records":
            got = call(fc.ContrastiveSet.from_records, model, Arg(recs, words_bad), ex=Exerciser(data), allow=allow)
        else:
            path = tmp_path_factory.mktemp("jsonl") / "set.jsonl"
            body = data.draw(st.sampled_from(["records", "bad json", "not utf-8", "empty"]))
            if body == "records":
                path.write_text("".join(json.dumps(r, default=str) + "\n" for r in recs))
            elif body == "bad json":
                path.write_text('{"clean": "a",\n')
                words_bad = ("JSON",)
            elif body == "not utf-8":
                path.write_bytes(b"\xff\xfe{}\n")
                words_bad = ("UTF-8",)
            else:
                path.write_text("\n")
                words_bad = ("no records", "empty")
            missing = data.draw(st.booleans(), label="missing file")
            target = Arg(path if not missing else path.with_name("nope.jsonl"),
                         ("does not exist",) if missing else words_bad)
            got = call(fc.ContrastiveSet.from_jsonl, model, target, ex=Exerciser(data), allow=allow)
    else:
        got = call(fc.ContrastiveSet.split_by_length, model, clean, corrupt, answers, wrong, positions=positions,
                   allow=allow)
        if isinstance(got, dict):
            for length, ds in got.items():
                assert ds.seq_len == length
    if isinstance(got, fc.ContrastiveSet):
        other = ctx.sets["ioi4"]
        both = call(fc.ContrastiveSet.concat, Arg([got, other], ("length",)) if got.seq_len != other.seq_len
                    else [got, other])
        if isinstance(both, fc.ContrastiveSet):
            assert both.n == got.n + other.n
        call(fc.ContrastiveSet.concat, data.draw(bad(st.sampled_from([[], None, [got, 3]]), "set", "empty",
                                                     "ContrastiveSet")))
    direct = data.draw(st.sampled_from(["tokens", "mismatch"]))
    toks = torch.tensor([[1, 5, 6, 7]])
    call(fc.ContrastiveSet, clean_tokens=toks, corrupt_tokens=Arg(torch.tensor([[1, 5, 8, 7]])) if direct == "tokens"
         else Arg(torch.tensor([[1, 5, 8]]), ("shape", "length", "token")), answers=torch.tensor([9]),
         wrong=torch.tensor([10]), positions={}, clean_prompts=["a"], corrupt_prompts=["b"], answer_strs=["x"],
         wrong_strs=["y"])


# --- circuits, receivers, result constructors -------------------------------------------------------------


@fuzz(60, "fc.Circuit", "fc.receiver_heads", "fc.receiver_mlps", "fc.downstream")
@given(data=st.data())
def test_circuits_and_receivers(data):
    parts = st.lists(st.sampled_from(["L0.H1", "L0.mlp", "L1.H0@END", "embed->L0.mlp", "L0.H0->logits",
                                      "L0.H0->L1.H2.q", ("L0.H0", "logits")]), max_size=4, unique=True)
    edges = data.draw(st.one_of(ok(st.just(None)), ok(parts), ok(st.just("L0.H0->logits")),
                                bad(st.sampled_from([3, ["L0.H0->nowhere"]]), "edge", "receiver")))
    nodes = data.draw(st.one_of(ok(st.just(None)), ok(st.lists(st.sampled_from(["L0.H1", "L0.mlp", "L1.H0@END"]),
                                                               max_size=3, unique=True)),
                                bad(st.sampled_from([["L0.H0->logits"], ["L0.H0.q"]]), "node")))
    if (edges.value is None) == (nodes.value is None):
        edges = Arg(edges.value, edges.bad + ("exactly one", "edges"))
    # a Circuit is never empty (the empty circuit is what evaluate_circuit reports as `empty`)
    if edges.value == []:
        edges = Arg([], edges.bad + ("at least one part",))
    if nodes.value == []:
        nodes = Arg([], nodes.bad + ("at least one part",))
    if isinstance(edges.value, list) and nodes.value is None and any("->" not in str(x) and not isinstance(x, tuple)
                                                                      for x in edges.value):
        edges = Arg(edges.value, edges.bad + ("edge", "->"))
    n_parts = (len(edges.value) if isinstance(edges.value, list) else 1 if isinstance(edges.value, str)
               else len(nodes.value) if isinstance(nodes.value, list) else 0)
    scores = data.draw(st.one_of(ok(st.just(None)), ok(st.just([1.0] * n_parts)),
                                 bad(st.sampled_from([[1.0] * (n_parts + 1), ["x"] * max(1, n_parts)]), "score")))
    call(fc.Circuit, edges=edges, nodes=nodes, scores=scores, name=data.draw(st.sampled_from(["", "c"])),
         ex=Exerciser(data))
    layer = data.draw(st.one_of(ok(st.integers(0, 3)), ok(st.just("all")), ok(st.just([0, 1])),
                                bad(st.sampled_from([None, 1.5, "x"]), "layer")))
    heads = data.draw(st.one_of(ok(st.sampled_from(["all", 0, [0, 1]])), bad(st.sampled_from([None, 1.5]), "head")))
    inputs = data.draw(choices(("q", "k", "v", "qkv", "qk"), "input", extra_bad=("x", "qq ")))
    rh = call(fc.receiver_heads, layer, heads, inputs)
    call(fc.receiver_mlps, layer)
    senders = data.draw(st.one_of(ok(st.just([S.Site("attn_head", 0, 3, 1)])), ok(st.just([S.Site("mlp_out", 1, 0)])),
                                  bad(st.sampled_from([None, 3, ["L0.H0"]]), "sender", "site")))
    n_layers = data.draw(st.one_of(ok(st.integers(2, 4)), bad(st.sampled_from([0, -1, None, 1.5]), "n_layers")))
    got = call(fc.downstream, senders, n_layers)
    if rh is not None and not isinstance(rh, Exception) and not isinstance(got, Exception):
        call(lambda a, b: a + b, rh, got)


@fuzz(60, "fc.PatchResult", "fc.ClaimResult")
@given(data=st.data())
def test_result_constructors(data):
    """Results built by hand (a user's own experiment, a report loaded back): the constructor or the
    first use refuses inconsistent shapes by name."""
    S_, B = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    sites = [S.Site("resid_pre", i, 0) for i in range(S_)]
    values = data.draw(st.one_of(ok(st.just(np.zeros((S_, B)))),
                                 bad(st.sampled_from([np.zeros((S_ + 1, B)), np.zeros((S_, B, 2)), np.zeros(0)]),
                                     "values", "shape", "sites")))
    base = data.draw(st.one_of(ok(st.just(np.ones(B))), bad(st.just(np.ones(B + 2)), "baseline", "shape")))
    call(fc.PatchResult, sites, values, base, np.zeros(B),
         direction=data.draw(choices(("denoise", "noise"), "direction")), ex=Exerciser(data))
    est = data.draw(st.floats(-2, 2))
    lo, hi = sorted(data.draw(st.tuples(st.floats(-3, 3), st.floats(-3, 3))))
    interval = data.draw(st.one_of(ok(st.just((min(lo, est), max(hi, est)))), ok(st.just(None)),
                                   bad(st.just((hi + 1, lo - 1)), "interval")))
    p = data.draw(st.one_of(ok(st.sampled_from([None, 0.5, 1.0, 1e-300])),
                            bad(st.sampled_from([-0.1, 1.5, float("nan")]), "p_value", "p-value")))
    call(fc.ClaimResult, "recovered", est, interval, data.draw(choices((">", ">=", "<", "<="), "op")),
         data.draw(st.one_of(ok(st.floats(-1, 1)), bad(st.just(float("nan")), "bar"))), data.draw(st.booleans()),
         data.draw(st.one_of(ok(st.integers(0, 50)), bad(st.sampled_from([-1, 1.5]), "n"))), p_value=p,
         ex=Exerciser(data))


# --- models, the command line, the plugin's options --------------------------------------------------------


@fuzz(24, "fc.load_model")
@given(data=st.data())
def test_load_model(data, fieldcheck_home):
    spec = data.draw(st.one_of(
        ok(st.sampled_from(["tiny-gpt2", "tiny-llama"])),
        bad(st.sampled_from(["tiny-nonsense", "", "/nonexistent/model", "no-org/no-such-model", "x.gguf"]),
            "model", "tiny", "does not exist", "not available", "spec"),
        bad(st.sampled_from([None, 42, 1.5]), "spec", "model")))
    device = data.draw(st.one_of(ok(st.just("cpu")), bad(st.sampled_from(["tpu", "cuda:7", "", 3]), "device")))
    dtype = data.draw(st.one_of(ok(st.sampled_from([None, "float32", torch.float32])),
                                bad(st.sampled_from(["float8", "int8", torch.int64, 3]), "dtype")))
    got = call(fc.load_model, spec, device=device, dtype=dtype)
    if not isinstance(got, Exception):
        assert got.cfg.n_layers >= 1 and got.tokenizer is not None


def _cli(argv):
    from fieldcheck import cli

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = cli.main(argv)
        except SystemExit as e:  # argparse: --help/--version (0) and usage errors (2)
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


#: the command line's words: every subcommand and flag of fieldcheck.cli, names and junk
CLI_WORDS = ["models", "pull", "list", "path", "--json", "--verify", "--version", "--help", "smollm2-135m",
             "gemma3-270m", "no-such-model", "x.gguf", "/nonexistent/dir", "", "-x", "models",
             "report", "merge", "show", "compare", "--out", "--output", "--html", "--check", "--failed", "--quiet",
             "--fail", "--alpha", "--correction", "--compare", "/nonexistent/r.json", "0.05", "holm",
             "sae", "train", "info", "--example", "--hook", "blocks.1.hook_resid_pre", "--d-sae", "--k", "--tokens",
             "--context", "--corpus", "--epochs", "--seed", "0", "-3", "x"]


@fuzz(50, "cli.main")
@given(argv=st.lists(st.sampled_from(CLI_WORDS), max_size=4))
def test_command_line(argv, fieldcheck_home):
    """``fieldcheck ...`` with drawn words: exit 0, 1 with ``fieldcheck: error: <message>``, or argparse's
    2 with a usage line; never a traceback. (``pull`` of the real aliases is left out: it would
    convert a model into the temporary FIELDCHECK_HOME.)"""
    if ("pull" in argv or "train" in argv) and any(a in ("smollm2-135m", "gemma3-270m") for a in argv):
        argv = [a for a in argv if a not in ("smollm2-135m", "gemma3-270m")]   # no real conversion or training
    try:
        rc, out, err = _cli(argv)
    except Exception as e:  # noqa: BLE001
        raise Escaped(f"fieldcheck {' '.join(argv)}: raised {type(e).__name__}: {e}") from e
    assert rc in (0, 1, 2), (argv, rc)
    if rc == 1:
        assert err.startswith("fieldcheck: error: ") and len(err) > 25, (argv, err)
    if rc == 2:
        assert "usage" in err.lower() or "fieldcheck" in err, (argv, err)
    assert "Traceback" not in err + out


#: every --fc-* option of the plugin, with valid and invalid values
OPTION_VALUES = {
    "--fc-model": ["tiny-gpt2", ""], "--fc-device": ["cpu", "auto", "cuda:x", "gpu", ""],
    "--fc-dtype": ["float32", "bfloat16", "float8", ""], "--fc-seed": ["0", "17", "x", "1.5", "-1"],
    "--fc-alpha": ["0.05", "0.2", "0", "0.5", "nan", "x", "-1"],
    "--fc-correction": ["bonferroni", "holm", "bh", "none", "sidak", ""],
    "--fc-correction-family": ["file", "session", "claim", "module"], "--fc-decide": ["bound", "point", "mean"],
    "--fc-report-json": ["r.json"], "--fc-report-html": ["r.html"], "--fc-save": ["v1", "a/b"],
    "--fc-compare": ["latest", "v1"], "--fc-compare-fail": ["passed", "estimate:10%", "bogus:3"],
    "--fc-baseline-model": ["tiny-llama", "tiny-gpt2"], "--fc-models": ["tiny-gpt2,tiny-llama", "tiny-gpt2",
                                                                        "a,a"],
    "--fc-no-cache": [None],
    "--fc-memory-budget": ["2GiB", "512MiB", "1e9", "0", "lots", "-5", "nan"],
    "--fc-shard": ["1/2", "2/2", "0/2", "3/2", "x", "1/0"],
    "--fc-shard-durations": ["r.json", "/nonexistent/r.json"],
    "--fc-ray": [None, "auto", "local", "127.0.0.1:6379", "ray://h:1", "not an address"],
    "--fc-ray-shards": ["1", "4", "0", "-1", "x"], "--fc-ray-cpus": ["1", "0.5", "0", "x", "nan"],
    "--fc-ray-gpus": ["0", "1", "-1", "x"], "--fc-ray-retries": ["3", "0", "-1", "x"],
}


@fuzz(50, "plugin options")
@given(opts=st.dictionaries(st.sampled_from(sorted(OPTION_VALUES)), st.integers(0, 6), max_size=4))
def test_plugin_options(opts, tmp_path):
    """The plugin reads its options (command line, then ini, then default) into Options or raises
    ``pytest.UsageError`` naming the option (pytest exits 4); nothing else escapes."""
    from _pytest.config import _prepareconfig

    from pytest_fieldcheck.options import read_options

    args = []
    for flag, i in opts.items():
        vals = OPTION_VALUES[flag]
        v = vals[i % len(vals)]
        args += [flag] if v is None else [f"{flag}={v}"]
    config = _prepareconfig([*args, "-p", "no:cacheprovider", str(tmp_path)])
    try:
        o = read_options(config)
    except pytest.UsageError as e:
        msg = str(e)
        assert msg.startswith("--fc-") and any(f in msg for f in opts), (args, msg)
        return
    except Exception as e:  # noqa: BLE001
        raise Escaped(f"read_options({args}): raised {type(e).__name__}: {e}") from e
    finally:
        config._ensure_unconfigure()
    assert 0 < o.alpha < 0.5 and o.decide in ("bound", "point") and isinstance(o.seed, int)
    assert o.correction in ("bonferroni", "holm", "bh", "none")
    assert len(set(o.models)) == len(o.models) and (not o.models or len(o.models) >= 2)
