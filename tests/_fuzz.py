"""The fuzz harness of issue 23: every public call, fed generated valid and invalid arguments.

The property of every call (:func:`call`): it returns a result that passes its own invariants
(:func:`_invariants.check_invariants`: shapes, finite values where promised, intervals that contain
their estimate, p in (0, 1], a strict-JSON ``to_dict``), or it raises a ``FieldcheckError`` whose
message names the bad argument; an assertion may also raise ``ClaimFailed`` with results that
pass their invariants. Nothing else escapes.

Arguments are drawn as :class:`Arg`: the value, and for an invalid one the words one of which the
error message must contain (``bad``); a valid but degenerate value (a huge alpha, a one-example
set) may list the FieldcheckError classes it is allowed to cause (``allow``). A call with a bad
argument that returns a result has accepted it silently: that fails too.

Profiles (``HYPOTHESIS_PROFILE``): ``fuzz-ci`` (the default: derandomized, so CI is reproducible,
a fixed number of examples per entry point given by each test's ``@fuzz(n)``, a 60 s deadline per
example that only catches hangs, no example database) and ``fuzz-long`` (random, seeded with
``--hypothesis-seed``; ``FIELDCHECK_FUZZ_EXAMPLES`` examples per entry point, default 10000; see
docs/fuzzing.md).
"""
from __future__ import annotations

import atexit
import collections
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from hypothesis import HealthCheck, Phase, settings, strategies as st

import fieldcheck as fc
from fieldcheck.claim.result import ClaimFailed
from fieldcheck.errors import FieldcheckError

# --------------------------------------------------------------------------------------------
# profiles

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
          HealthCheck.function_scoped_fixture, HealthCheck.differing_executors]
settings.register_profile("fuzz-ci", derandomize=True, database=None, print_blob=True,
                          deadline=datetime.timedelta(seconds=60), suppress_health_check=_QUIET)
settings.register_profile("fuzz-long", derandomize=False, database=None, print_blob=True,
                          deadline=datetime.timedelta(seconds=120), suppress_health_check=_QUIET)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fuzz-ci")
if PROFILE not in ("fuzz-ci", "fuzz-long"):
    PROFILE = "fuzz-ci"
LONG_EXAMPLES = int(os.environ.get("FIELDCHECK_FUZZ_EXAMPLES", "10000"))
#: entry point -> examples it runs per test in this profile (read by tests/test_fuzz_coverage.py)
BUDGET: dict[str, int] = {}


def fuzz(examples: int, *entry_points: str):
    """``@fuzz(n, "Field.patch", ...)``: hypothesis settings of this profile with ``n`` examples in
    CI (``FIELDCHECK_FUZZ_EXAMPLES`` in ``fuzz-long``), recording which entry points the test covers.
    ``FIELDCHECK_FUZZ_NO_SHRINK=1`` reports the first failing example as drawn (quicker while fixing)."""
    n = examples if PROFILE == "fuzz-ci" else max(examples, LONG_EXAMPLES)
    for e in entry_points:
        BUDGET[e] = BUDGET.get(e, 0) + n
    extra = {}
    if os.environ.get("FIELDCHECK_FUZZ_NO_SHRINK") == "1":
        extra["phases"] = [Phase.explicit, Phase.reuse, Phase.generate]
    return settings(settings.get_profile(PROFILE), max_examples=n, **extra)


# --------------------------------------------------------------------------------------------
# arguments


@dataclass(frozen=True)
class Arg:
    """A drawn argument. ``bad``: words one of which the FieldcheckError must name (the call must
    refuse the value); ``allow``: FieldcheckError classes a valid but degenerate value may cause."""

    value: Any
    bad: tuple = ()
    allow: tuple = ()

    def __repr__(self) -> str:
        tag = f" [bad: {'/'.join(self.bad)}]" if self.bad else (" [may raise]" if self.allow else "")
        return f"{_short(self.value)}{tag}"


def _short(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"tensor{tuple(v.shape)}{'(nan)' if v.is_floating_point() and torch.isnan(v).any() else ''}"
    if isinstance(v, fc.ContrastiveSet):
        return f"<set {v.name!r} n={v.n} T={v.seq_len}>"
    r = repr(v)
    return r if len(r) <= 120 else r[:117] + "..."


def ok(s: st.SearchStrategy, allow: tuple = ()) -> st.SearchStrategy[Arg]:
    return s.map(lambda v: Arg(v, (), tuple(allow)))


def bad(s: st.SearchStrategy, *words: str, show: bool = False) -> st.SearchStrategy[Arg]:
    """Invalid values: the error must name one of ``words`` (or the value itself with ``show``)."""
    return s.map(lambda v: Arg(v, tuple(words) + ((str(v),) if show else ())))


def either(*strategies: st.SearchStrategy[Arg]) -> st.SearchStrategy[Arg]:
    return st.one_of(*strategies)


def value(x: Any) -> Any:
    return x.value if isinstance(x, Arg) else x


class Escaped(AssertionError):
    """A call broke the property: a raw exception escaped, a result broke its invariants, a bad
    argument was accepted or an error did not name it."""


# --------------------------------------------------------------------------------------------
# the property


class Exerciser:
    """What invariants use to fuzz a result's own methods: draws their arguments from the test's
    hypothesis ``data`` and calls them through :func:`call` (depth-limited). ``plots``: also draw
    the result's pictures (matplotlib; drawn for some examples only, they are slow)."""

    def __init__(self, data=None, plots: bool = False, depth: int = 0):
        self.data, self.plots, self.depth = data, plots, depth

    def draw(self, strategy: st.SearchStrategy, default: Any = None) -> Any:
        if self.data is None:
            return default
        return self.data.draw(strategy)

    @property
    def deep(self) -> bool:
        """Whether to fuzz methods of the result (not for results of results of results)."""
        return self.depth < 2

    def call(self, fn: Callable, *args: Any, allow: tuple = (), **kwargs: Any) -> Any:
        return call(fn, *args, allow=allow, ex=Exerciser(self.data, self.plots, self.depth + 1), **kwargs)


def _name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


# --- counting the generated calls per public entry point ------------------------------------------------
#: API name -> calls made through :func:`call` in this process (``FIELDCHECK_FUZZ_STATS=DIR`` writes them
#: to DIR/calls-<worker>.json at exit; tools/fuzz_stats.py sums them for docs/fuzzing.md)
CALLS: "collections.Counter[str]" = collections.Counter()
_API_NAMES: dict = {}


def _api_name(fn: Callable) -> str:
    if not _API_NAMES:
        from _api_walk import API

        for name, obj in API.items():
            obj = obj.fget if isinstance(obj, property) else obj
            _API_NAMES.setdefault(id(obj), name if not name.startswith("fc.Field") else "Field")
    for target in (fn, getattr(fn, "__wrapped__", None)):  # a test's wrapper counts as what it wraps
        target = getattr(target, "__func__", target)
        if target is not None and id(target) in _API_NAMES:
            return _API_NAMES[id(target)]
    return _name(fn)


def _write_calls() -> None:
    out = os.environ.get("FIELDCHECK_FUZZ_STATS")
    if out and CALLS:
        import json
        import pathlib

        d = pathlib.Path(out)
        d.mkdir(parents=True, exist_ok=True)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        (d / f"calls-{worker}-{os.getpid()}.json").write_text(json.dumps(dict(CALLS), indent=1, sort_keys=True))


atexit.register(_write_calls)


def call(fn: Callable, *args: Any, allow: tuple = (), ex: Optional[Exerciser] = None, claims: bool = False,
         **kwargs: Any) -> Any:
    """Call ``fn`` with the drawn arguments and check the property. Returns the result, the
    FieldcheckError raised, or the ClaimFailed (``claims=True``: an assertion, whose failure is an
    outcome). ``allow``: FieldcheckError classes this call may raise on valid arguments."""
    from _invariants import check_invariants

    CALLS[_api_name(fn)] += 1
    drawn = [a for a in (*args, *kwargs.values()) if isinstance(a, Arg)]
    bad_args = [a for a in drawn if a.bad]
    allowed = tuple(allow) + tuple(c for a in drawn for c in a.allow)
    name = _name(fn)
    try:
        out = fn(*[value(a) for a in args], **{k: value(v) for k, v in kwargs.items()})
    except ClaimFailed as e:
        if not claims:
            raise Escaped(f"{name}: raised ClaimFailed outside an assertion: {e}") from e
        if bad_args:
            raise Escaped(f"{name}: decided a claim on a bad argument ({bad_args}) instead of refusing it: "
                          f"{e}") from e
        if not e.results or all(r.passed for r in e.results):
            raise Escaped(f"{name}: ClaimFailed without a failed ClaimResult: {e}")
        for r in e.results:
            check_invariants(r, ex)
        return e
    except FieldcheckError as e:
        msg = str(e)
        if isinstance(e, tuple(allow)):
            pass  # refused for a documented reason of its own (an experiment the family does not support)
        elif bad_args:
            words = [w for a in bad_args for w in a.bad]
            if not any(w.lower() in msg.lower() for w in words):
                raise Escaped(f"{name}: {type(e).__name__} does not name the bad argument "
                              f"(one of {words}): {msg}") from e
        elif not isinstance(e, allowed):
            raise Escaped(f"{name}: valid arguments gave {type(e).__name__}: {msg}") from e
        if not msg.strip():
            raise Escaped(f"{name}: {type(e).__name__} with an empty message") from e
        return e
    except Escaped:
        raise
    except Exception as e:  # noqa: BLE001 - the property: nothing else escapes
        raise Escaped(f"{name}: raised {type(e).__name__} (not a FieldcheckError): {e}") from e
    if bad_args:
        raise Escaped(f"{name}: accepted the bad argument(s) {bad_args} and returned {_short(out)}")
    check_invariants(out, ex)
    return out


# --------------------------------------------------------------------------------------------
# models and data sets

#: tiny models of several families and depths: name -> tiny_model keywords
TINY = {
    "gpt2-2L": dict(arch="gpt2", n_layers=2),
    "llama-3L": dict(arch="llama", n_layers=3),
    "gemma2-1L": dict(arch="gemma2", n_layers=1),
    "neox-2L": dict(arch="neox", n_layers=2),
}
TINY_DIMS = dict(d_model=32, n_heads=4)


@dataclass
class Ctx:
    """One model under fuzzing: its Field and a few data sets built for it."""

    name: str
    model: Any
    field: Any
    sets: dict

    @property
    def n_layers(self) -> int:
        return self.field.n_layers

    @property
    def n_heads(self) -> int:
        return self.field.n_heads

    @property
    def d_model(self) -> int:
        return self.field.d_model

    def __repr__(self) -> str:
        return f"<{self.name}: {self.n_layers} layers, {self.n_heads} heads, d_model {self.d_model}>"


def make_ctx(name: str, model: Any, engine: str = "auto", sets: Optional[dict] = None) -> Ctx:
    field = fc.Field(model, engine=engine)
    if sets is None:
        sets = {"ioi4": fc.datasets.ioi(model, n=4, seed=0),
                "ioi1": fc.datasets.ioi(model, n=1, seed=1),
                "induction3": fc.datasets.induction(model, n=3, seed=0, length=4),
                "factual2": fc.datasets.factual_recall(model, n=2, seed=0)}
    return Ctx(name, model, field, sets)


class Pool:
    """Tiny models built on first use (one process builds each once)."""

    def __init__(self):
        self._ctx: dict = {}

    def get(self, name: str) -> Ctx:
        if name not in self._ctx:
            from fieldcheck.testing import tiny_model

            base, _, engine = name.partition("+")
            self._ctx[name] = make_ctx(name, self.get(base).model if engine else
                                       tiny_model(**TINY[base], **TINY_DIMS), engine=engine or "auto",
                                       sets=self.get(base).sets if engine else None)
        return self._ctx[name]


#: the contexts a Field test draws from: every tiny family, and GPT-2 through the hooks engine
CTX_NAMES = (*TINY, "gpt2-2L+hooks")


def contexts(pool: Pool, names: Sequence[str] = CTX_NAMES) -> st.SearchStrategy[Ctx]:
    return st.sampled_from(list(names)).map(pool.get)


def random_sae(hook: str, d_in: int = 32, d_sae: int = 16, seed: int = 0, architecture: str = "standard",
               name: str = ""):
    """A random SAE on ``hook`` built in-process (no training, no files): enough for the feature calls to
    run on real shapes. ``architecture`` "standard" (ReLU) or "topk" (k = 4)."""
    from fieldcheck.sae.dictionary import Dictionary

    g = torch.Generator().manual_seed(seed)
    W_enc = torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5
    W_dec = torch.randn(d_sae, d_in, generator=g) / d_sae ** 0.5
    return Dictionary(W_enc=W_enc, b_enc=torch.zeros(d_sae), W_dec=W_dec, b_dec=torch.zeros(d_in),
                      architecture=architecture, hook_name=hook, k=4 if architecture == "topk" else None,
                      model_name="tiny-llama", name=name)


def foreign_set(ctx: Ctx, what: str) -> Any:
    """A ContrastiveSet that does not fit ``ctx``'s model: token ids outside its vocabulary
    (``"vocab"``) or prompts longer than its context (``"long"``)."""
    ds = ctx.sets["ioi4"]
    if what == "vocab":
        toks = ds.clean_tokens.clone()
        toks[:, 2] = ctx.model.cfg.d_vocab + 5
        return ds._replace(clean_tokens=toks, name="foreign-vocab")
    n = ctx.model.cfg.n_ctx + 3
    toks = torch.arange(n).remainder(40).repeat(2, 1) + 10
    return fc.ContrastiveSet(clean_tokens=toks, corrupt_tokens=toks.flip(1), answers=[11, 11], wrong=[12, 12],
                             positions={}, clean_prompts=["a", "b"], corrupt_prompts=["c", "d"],
                             answer_strs=["x", "x"], wrong_strs=["y", "y"], name="too-long")


def datasets(ctx: Ctx, names: Sequence[str] = ("ioi4", "ioi1", "induction3", "factual2"),
             invalid: bool = True) -> st.SearchStrategy[Arg]:
    """Data sets for ``ctx``: the built ones (valid), and (``invalid``) things that are not
    ContrastiveSets or do not fit the model."""
    valid = st.sampled_from(list(names)).map(lambda k: Arg(ctx.sets[k]))
    if not invalid:
        return valid
    return st.one_of(
        valid,
        st.sampled_from([None, [1, 2, 3], "ioi", 5]).map(lambda v: Arg(v, ("ContrastiveSet",))),
        st.sampled_from(["vocab", "long"]).map(
            lambda w: Arg(foreign_set(ctx, w), ("vocabulary",) if w == "vocab" else ("context",))),
    )


def shape_of(ds: Any) -> tuple[int, list[str]]:
    """``(seq_len, position names)`` of a drawn data set (a stand-in for what is not a set)."""
    if isinstance(ds, fc.ContrastiveSet):
        return ds.seq_len, list(ds.position_names)
    return 15, ["END"]


# --------------------------------------------------------------------------------------------
# sites


def _layer_values(n_layers: int, kind: str) -> st.SearchStrategy[Arg]:
    top = n_layers + 1 if kind == "resid_pre" else n_layers
    return st.one_of(
        ok(st.integers(-n_layers, top - 1)),
        st.integers(top, top + 40).map(lambda l: Arg(l, ("layer", str(l)))),
        st.integers(-n_layers - 40, -n_layers - 1).map(lambda l: Arg(l, ("layer", str(l)))),
    )


def _list_arg(items: st.SearchStrategy[Arg], word: str, all_ok: bool = True,
              none_is_all: bool = False) -> st.SearchStrategy[Arg]:
    """One item, a list of items, "all", or invalid containers (``none_is_all``: None means "all",
    as ``attn_head(heads=None)``)."""
    def combine(xs: list) -> Arg:
        return Arg([x.value for x in xs], tuple(w for x in xs for w in x.bad))
    strats = [items, st.lists(items, min_size=1, max_size=3).map(combine),
              bad(st.sampled_from([1.5, {"a": 1}, True] + ([] if none_is_all else [None])), word)]
    if all_ok:
        strats.append(ok(st.sampled_from(["all", None] if none_is_all else ["all"])))
    return st.one_of(*strats)


def _positions(seq_len: int, names: Sequence[str]) -> st.SearchStrategy[Arg]:
    known = list(names)
    return st.one_of(
        ok(st.integers(-seq_len, seq_len - 1)),
        ok(st.sampled_from(known)),
        st.integers(seq_len, seq_len + 30).map(lambda p: Arg(p, ("position", str(p)))),
        st.integers(-seq_len - 30, -seq_len - 1).map(lambda p: Arg(p, ("position", str(p)))),
        st.sampled_from([n for n in ("IO", "S2", "SUBJ_LAST", "PREV", "X9") if n not in known]).map(
            lambda p: Arg(p, ("position", p))),
    )


def _heads(n_heads: int) -> st.SearchStrategy[Arg]:
    return st.one_of(ok(st.integers(-n_heads, n_heads - 1)),
                     st.integers(n_heads, n_heads + 20).map(lambda h: Arg(h, ("head", str(h)))),
                     st.integers(-n_heads - 20, -n_heads - 1).map(lambda h: Arg(h, ("head", str(h)))))


KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_head", "attn_out", "mlp_out")


@st.composite
def site_sets(draw, ctx: Ctx, ds: Any, kinds: Sequence[str] = KINDS, max_terms: int = 2,
              direct: bool = True) -> Arg:
    """A site set for ``ds`` on ``ctx``'s model: constructor calls (``resid_pre(layers, positions)``)
    with valid and out-of-range layers, heads and positions, sums of them, lists of Sites built
    directly, and things that are not site sets."""
    from fieldcheck import sites as S

    seq_len, names = shape_of(ds)
    choice = draw(st.integers(0, 9))
    if choice == 9:  # not a site set
        return draw(bad(st.sampled_from(["L0.nothing@END", 3, None, [], [("resid_pre", 0)]]), "site"))
    if choice == 8 and direct:  # Sites built directly
        items = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(list(kinds)))
            layer = draw(_layer_values(ctx.n_layers, kind))
            pos = draw(_positions(seq_len, names))
            head = draw(_heads(ctx.n_heads)) if kind == "attn_head" else Arg(None)
            items.append(Arg(S.Site(kind, layer.value, pos.value, head.value), layer.bad + pos.bad + head.bad))
        return Arg([a.value for a in items], tuple(w for a in items for w in a.bad))
    out, words = None, ()
    for _ in range(draw(st.integers(1, max_terms))):
        kind = draw(st.sampled_from(list(kinds)))
        layers = draw(_list_arg(_layer_values(ctx.n_layers, kind), "layers"))
        positions = draw(_list_arg(_positions(seq_len, names), "positions"))
        if kind == "attn_head":
            heads = draw(_list_arg(_heads(ctx.n_heads), "heads", none_is_all=True))
            make = lambda: S.attn_head(layers.value, heads.value, positions.value)  # noqa: E731
            w = layers.bad + positions.bad + heads.bad
        else:
            make = lambda: getattr(S, kind)(layers.value, positions.value)  # noqa: E731
            w = layers.bad + positions.bad
        try:
            term = make()
        except FieldcheckError as e:  # the constructor refused (a container that is not a list)
            if not w or not any(x.lower() in str(e).lower() for x in w):
                raise Escaped(f"{kind}({layers}, {positions}) refused with {type(e).__name__}: {e}") from e
            return Arg(_Refused(e), w + ("site",))
        out = term if out is None else out + term
        words += w
    return Arg(out, words)


class _Refused:
    """A site-set constructor refused the drawn values already (checked in the fuzz of the
    constructors); the call that would get it must refuse it too."""

    def __init__(self, err):
        self.err = err

    def __repr__(self) -> str:
        return f"<refused: {self.err}>"


@st.composite
def one_site(draw, ctx: Ctx, ds: Any, kinds: Sequence[str] = ("resid_pre", "resid_post")) -> Arg:
    """One site (a one-site set) of the given kinds, or invalid ones (several sites, other kinds)."""
    from fieldcheck import sites as S

    seq_len, names = shape_of(ds)
    c = draw(st.integers(0, 6))
    if c == 6:  # any site set: valid only when it is one site of the kinds asked for
        a = draw(site_sets(ctx, ds))
        if a.bad:
            return a
        try:
            got = S.as_site_set(a.value).resolve(ctx.n_layers, ctx.n_heads, seq_len, names)
        except FieldcheckError:
            return Arg(a.value, ("site",))
        return a if len(got) == 1 and got[0].kind in kinds else Arg(a.value, ("site",))
    kind = draw(st.sampled_from(list(kinds)))
    layer = draw(_layer_values(ctx.n_layers, kind))
    pos = draw(_positions(seq_len, names))
    return Arg(getattr(S, kind)(layer.value, pos.value), layer.bad + pos.bad)


# --------------------------------------------------------------------------------------------
# sources, scales, metrics, choices


def alphas(allow_zero: bool = True) -> st.SearchStrategy[Arg]:
    from fieldcheck.errors import NumericalError

    finite = st.floats(-3, 3, allow_nan=False, allow_infinity=False)
    return st.one_of(
        ok(finite if allow_zero else finite.filter(lambda a: a != 0)),
        ok(st.sampled_from([0.0, 1.0, 0.5, 1e-8])),
        ok(st.sampled_from([1e6, -1e9, 1e30]), allow=(NumericalError,)),
        bad(st.sampled_from([float("nan"), float("inf"), -float("inf"), "half", None, [1.0]]), "alpha"),
    )


def choices(valid: Sequence[Any], word: str, extra_bad: Sequence[Any] = ()) -> st.SearchStrategy[Arg]:
    """One of the documented string choices, or a value outside them (the error must say ``word``)."""
    wrong = [v for v in ("", "both", "Clean", "DENOISE", "eap_ig", 1, None, *extra_bad) if v not in valid]
    return st.one_of(ok(st.sampled_from(list(valid))), bad(st.sampled_from(wrong), word))


def ints(lo: int, hi: int, word: str, below: int = 5, above: Optional[int] = None,
         allow: tuple = ()) -> st.SearchStrategy[Arg]:
    """Integers in lo..hi (valid), below lo or above ``above`` (invalid), and non-integers."""
    strats = [ok(st.integers(lo, hi), allow=allow),
              st.integers(lo - below, lo - 1).map(lambda v: Arg(v, (word,))),
              bad(st.sampled_from([1.5, "3", None, True][: 3 if lo > 1 else 4]), word)]
    if above is not None:
        strats.append(st.integers(above + 1, above + 50).map(lambda v: Arg(v, (word,))))
    return st.one_of(*strats)


def metrics(ctx: Ctx, ds: Any, names: Sequence[str] = ("logit_diff", "logprob", "prob", "kl")) -> st.SearchStrategy[Arg]:
    n = ds.n if isinstance(ds, fc.ContrastiveSet) else 1

    def wrong_shape(logits, d):
        return logits[:1, 0].repeat(n + 1)

    def nan_metric(logits, d):
        return logits[:, 0] * float("nan")

    def text_metric(logits, d):
        return "high"

    def own(logits, d):
        return logits[:, 0] - logits[:, 1]

    return st.one_of(
        ok(st.sampled_from(list(names))),
        ok(st.just(own)),
        bad(st.sampled_from(["logit-diff", "accuracy", 3, None]), "metric"),
        bad(st.sampled_from([wrong_shape, nan_metric, text_metric]), "metric"),
    )


def sources(ctx: Ctx, ds: Any, dim: Optional[int] = None) -> st.SearchStrategy[Arg]:
    """Patch sources: None/"other", "zero", "mean", gaussian(scale), steering tensors [d]/[batch, d]
    (``dim``: the width the site needs; None when sites of several widths are drawn) and invalid ones."""
    n = ds.n if isinstance(ds, fc.ContrastiveSet) else 2
    d = dim or ctx.d_model
    strats = [ok(st.sampled_from([None, "other", "zero", "mean"])),
              ok(st.floats(0, 2).map(fc.sources.gaussian)),
              bad(st.sampled_from(["noise", 5, object()]), "source"),
              bad(st.sampled_from([torch.full((d,), float("nan")), torch.ones(1, 1, d)]), "steering")]
    if dim is not None:
        strats += [ok(st.sampled_from([torch.ones(d), torch.linspace(-1, 1, d).repeat(n, 1), torch.zeros(d)])),
                   bad(st.sampled_from([torch.ones(d + 1), torch.ones(n + 1, d)]), "steering")]
    return st.one_of(*strats)


def seeds() -> st.SearchStrategy[Arg]:
    return st.one_of(ok(st.integers(0, 2**31)), bad(st.sampled_from([-1, 1.5, "x", None]), "seed"))

