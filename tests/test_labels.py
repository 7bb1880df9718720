"""One label grammar for components (fieldcheck.field.labels): parsed and printed the same way by
sites, patching, attention, DLA, circuits and discovery; strings and site objects give the same
numbers; an unknown label names the nearest valid ones; the 0.1 spellings warn."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fieldcheck as fc
from fieldcheck import datasets
from fieldcheck.errors import SiteError, UsageError
from fieldcheck.experiments.circuit_spec import Circuit, as_circuit
from fieldcheck.experiments.edges import EdgeGraph
from fieldcheck.field import labels as L
from fieldcheck.lab import Field
from fieldcheck.sites import attn_head, attn_out, mlp_out, resid_mid, resid_post, resid_pre
from fieldcheck.testing import tiny_model


@pytest.fixture(scope="module")
def setup():
    m = tiny_model("gpt2", n_layers=2, dtype=torch.float64)
    f = Field(m)
    return f, datasets.ioi(m, n=8)


# --- the grammar ------------------------------------------------------------------------------
@pytest.mark.parametrize("text,kind,layer,head,port,pos", [
    ("L3.H2", "head", 3, 2, None, None), ("L3.H2@END", "head", 3, 2, None, "END"),
    ("L3.H2.q", "head", 3, 2, "q", None), ("L5.mlp@-1", "mlp", 5, None, None, -1),
    ("L5.attn@7", "attn", 5, None, None, 7), ("L5.attn_bias", "attn_bias", 5, None, None, None),
    ("L20.resid_pre@IO", "resid_pre", 20, None, None, "IO"), ("L20@END", "resid_pre", 20, None, None, "END"),
    ("L2.resid_mid", "resid_mid", 2, None, None, None), ("L2.resid_post@S2", "resid_post", 2, None, None, "S2"),
    ("embed", "embed", None, None, None, None), ("bias", "bias", None, None, None, None),
    ("logits@END", "logits", None, None, None, "END")])
def test_labels_parse_and_print_back(text, kind, layer, head, port, pos):
    lab = L.parse(text)
    assert (lab.kind, lab.layer, lab.head, lab.port, lab.pos) == (kind, layer, head, port, pos)
    canon = text.replace("L20@", "L20.resid_pre@")
    assert str(lab) == canon and L.parse(canon) == lab and L.canonical(text) == canon


def test_sites_print_their_labels_and_labels_give_the_same_sites():
    cases = [(resid_pre(4, "END"), "L4.resid_pre@END"), (resid_mid(1, 3), "L1.resid_mid@3"),
             (resid_post(0, "IO"), "L0.resid_post@IO"), (attn_head(2, 1, "S2"), "L2.H1@S2"),
             (attn_out(3, 0), "L3.attn@0"), (mlp_out(1, "END"), "L1.mlp@END")]
    for ss, text in cases:
        (site,) = ss.resolve(6, 4, 9, ["END", "IO", "S2"])
        assert site.label == str(site) == text
        assert fc.sites.from_label(text).resolve(6, 4, 9, ["END", "IO", "S2"]) == [site]
    assert attn_head(1, [0, 2]).component_labels() == ["L1.H0", "L1.H2"]
    assert mlp_out([0, 1], ["END", 2]).component_labels() == ["L0.mlp@END", "L0.mlp@2", "L1.mlp@END", "L1.mlp@2"]
    with pytest.raises(SiteError, match="needs a model"):
        attn_head("all", 0).component_labels()


@pytest.mark.parametrize("bad,pattern", [
    ("L3.mpl", r"unknown component 'mpl' \(did you mean 'L3\.mlp'\?\)"),
    ("X3", r"'X3' is not a label: labels are 'L\{layer\}\.H\{head\}'"),
    ("L3.H2@", r"empty position after '@'; write e\.g\. 'L3\.H2@END'"),
    (3, r"3 is not a label")])
def test_malformed_labels_say_what_the_grammar_is(bad, pattern):
    with pytest.raises(SiteError, match=pattern):
        L.parse(bad)


def test_nearest_prefers_the_same_layer():
    valid = [f"L{l}.{p}" for l in range(30) for p in ("mlp", "attn")] + [f"L{l}.H{h}" for l in range(30) for h in range(9)]
    near = L.nearest("L23.ml", valid)
    assert near[0] == "L23.mlp" and all(n.startswith("L23.") for n in near[:3])
    err = L.unknown("L23.ml", valid, "component", "this attribution")
    assert "unknown component 'L23.ml' in this attribution; nearest valid: L23.mlp" in str(err)


def test_old_spellings_parse_with_a_deprecation_warning():
    for old, new in [("MLP23", "L23.mlp"), ("MLP5@END", "L5.mlp@END"), ("input", "embed")]:
        with pytest.warns(DeprecationWarning, match=f"write '{new.split('@')[0]}'"):
            assert L.canonical(old) == new


# --- every feature takes labels and prints them ---------------------------------------------------
def test_patch_takes_labels_and_site_objects_alike(setup):
    f, ds = setup
    objs = resid_pre(1, "END") + attn_head(0, 2, "S2") + mlp_out(1, "IO")
    by_obj = f.patch(ds, objs)
    by_text = f.patch(ds, ["L1.resid_pre@END", "L0.H2@S2", "L1.mlp@IO"])
    mixed = f.patch(ds, ["L1@END", attn_head(0, 2, "S2"), "L1.mlp@IO"])
    for r in (by_text, mixed):
        np.testing.assert_array_equal(r.values, by_obj.values)
    assert by_text.labels == ["L1.resid_pre@END", "L0.H2@S2", "L1.mlp@IO"] == by_obj.labels
    assert "L1.resid_pre@END" in by_obj.summary()


def test_attention_takes_labels_tuples_and_sites(setup):
    f, ds = setup
    a = f.attention(ds, ["L1.H0", "L0.H3"], key="S1")
    b = f.attention(ds, [(1, 0), (0, 3)], key="S1")
    c = f.attention(ds, attn_head(1, 0) + attn_head(0, 3), key="S1")
    d = f.attention(ds, "L1.H0", key="S1")
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.weights, c.weights)
    np.testing.assert_array_equal(d.weights, a.weights[:1])
    assert a.labels == ["L1.H0", "L0.H3"]
    np.testing.assert_array_equal(a.select("L0.H3").weights, a.weights[1:])
    assert a.plot(head="L0.H3") is not None
    with pytest.raises(SiteError, match=r"unknown head 'L1\.H1' in this result; nearest valid: L1\.H0"):
        a.select(["L1.H1"])
    with pytest.raises(SiteError, match=r"unknown head 'L1\.H9' in a model of 2 layers x 4 heads; nearest valid"):
        f.attention(ds, "L1.H9", key="S1")
    with pytest.raises(SiteError, match=r"attention needs attention heads, got 'L1\.mlp'"):
        f.attention(ds, ["L1.mlp"], key="S1")


def test_path_patching_takes_labels_for_senders_and_receivers(setup):
    from fieldcheck.experiments.paths import receiver_heads, receiver_mlps

    f, ds = setup
    a = f.path_patch(ds, ["L0.H1@END", "L0.mlp@END"], ["L1.H2.q", "L1.H0", "L1.mlp"])
    b = f.path_patch(ds, attn_head(0, 1, "END") + mlp_out(0, "END"),
                     [receiver_heads(1, 2, "q"), receiver_heads(1, 0, "qkv"), receiver_mlps(1)])
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(f.path_patch(ds, "L0.H1@END", "logits").values,
                                  f.path_patch(ds, attn_head(0, 1, "END"), "final").values)
    with pytest.raises(SiteError, match="receivers are head inputs 'L3.H2.q'"):
        f.path_patch(ds, "L0.H1@END", "embed")


def test_dla_takes_labels_and_sites_and_names_the_nearest(setup):
    f, ds = setup
    d = f.dla(ds)
    by_text = f.dla(ds, ["L1.mlp", "L0.H2", "L1.attn", "embed"])
    by_site = f.dla(ds, mlp_out(1, "END") + attn_head(0, 2) + attn_out(1))
    assert by_text.labels == ["L1.mlp", "L0.H2", "L1.attn", "embed"]
    assert by_site.labels == ["L1.mlp", "L0.H2", "L1.attn"]
    np.testing.assert_array_equal(by_text.values[:3], by_site.values)
    np.testing.assert_array_equal(d.select("L1.mlp").values, by_text.values[:1])
    np.testing.assert_array_equal(d.select(mlp_out(1)).values, by_text.values[:1])
    with pytest.warns(DeprecationWarning, match="write 'L1.mlp'"):
        np.testing.assert_array_equal(d.select(["MLP1"]).values, by_text.values[:1])
    with pytest.raises(SiteError, match=r"unknown component 'L1\.H7' in this attribution; nearest valid: L1\.H"):
        d.select(["L1.H7"])
    with pytest.raises(SiteError, match=r"unknown component 'L5\.mlp' in this model .*nearest valid"):
        f.dla(ds, ["L5.mlp"])
    with pytest.raises(SiteError, match="not one of them"):
        f.dla(ds, ["logits"])


def test_circuits_print_and_take_one_grammar(setup):
    f, ds = setup
    g = EdgeGraph(2, 4)
    assert g.senders[:2] == ["embed", "L0.H0"] and "L1.mlp" in g.senders and g.receivers[-2:] == ["L1.mlp", "logits"]
    with pytest.warns(DeprecationWarning):
        old = Circuit(edges=["input->MLP0", ("MLP0", "logits")])
    assert old.parts == ("embed->L0.mlp", "L0.mlp->logits") and "L0.mlp->logits" in old
    nodes = Circuit(nodes=["L0.H1@END", attn_head(1, 2), mlp_out(0, "IO")])
    assert nodes.parts == ("L0.H1@END", "L1.H2", "L0.mlp@IO")
    a = f.evaluate_circuit(ds, ["L0.H1", "L0.mlp", "L1.H2"])
    b = f.evaluate_circuit(ds, attn_head(0, 1) + mlp_out(0) + attn_head(1, 2))
    np.testing.assert_array_equal(a.circuit, b.circuit)
    with pytest.warns(DeprecationWarning):
        c = f.evaluate_circuit(ds, ["L0.H1", "MLP0", "L1.H2"])
    np.testing.assert_array_equal(a.circuit, c.circuit)
    es = f.edge_scores(ds, method="eap")
    top = es.top(3)
    assert all("->" in p and "MLP" not in p and "input" not in p for p in top.parts)
    assert top.without(top.parts[0]).parts == top.parts[1:]
    with pytest.raises(SiteError, match=r"unknown sender 'L0\.H9' in the edge graph of this model .*nearest valid"):
        es.edge("L0.H9->logits")
    with pytest.raises(SiteError, match=r"unknown edge .* in this circuit; nearest valid"):
        top.without("L1.H3->logits" if "L1.H3->logits" not in top else "L1.H2->logits")
    with pytest.raises(SiteError, match="nodes are heads 'L\\{layer\\}.H\\{head\\}' and MLPs 'L\\{layer\\}.mlp'"):
        Circuit(nodes=["L0.H1.q"])


def test_a_circuit_draws_itself_over_the_layers():
    c = Circuit(edges=["embed->L0.H1.q", "L0.H1->L1.mlp", "L1.mlp->logits"], name="toy")
    p = c.plot_data()
    names = [n[0] for n in p["nodes"]]
    assert p["kind"] == "circuit" and set(names) == {"embed", "L0.H1", "L1.mlp", "logits"}
    y = {n[0]: n[2] for n in p["nodes"]}
    assert y["embed"] < y["L0.H1"] < y["L1.mlp"] < y["logits"]
    assert [e[2] for e in p["edges"]] == ["q", "", ""]
    from fieldcheck.display import draw_plot
    assert draw_plot(p) and draw_plot(Circuit(nodes=["L0.H1@END", "L1.mlp"]).plot_data())


# --- empty circuits are refused (they used to evaluate as "0 parts = 841 of ... edges") -----------
def test_empty_circuits_are_refused(setup):
    f, ds = setup
    with pytest.raises(UsageError, match=r"a Circuit needs at least one part, got nodes=\[\]"):
        fc.Circuit(nodes=[])
    with pytest.raises(UsageError, match=r"a Circuit needs at least one part, got edges=\[\]"):
        fc.Circuit(edges=[])
    with pytest.raises(UsageError, match=r"the circuit is empty \(\[\]\)"):
        f.evaluate_circuit(ds, [])
    with pytest.raises(UsageError, match=r"the circuit is empty"):
        as_circuit(())


def test_reports_of_0_1_still_pair_with_new_ones():
    """0.1 printed sites as L20@END / mlp:L5@P3; a baseline saved then still pairs site by site."""
    from fieldcheck.claim.comparison import pairing_problem

    assert [L.from_0_1(t) for t in ("L20@END", "mlp:L5@P3", "L3.H2@P7", "post:L1@S2", "L5.mlp@3")] == \
        ["L20.resid_pre@END", "L5.mlp@3", "L3.H2@7", "L1.resid_post@S2", "L5.mlp@3"]
    new = {"kind": "mean", "dataset": "abc", "n": 4, "labels": ["L20.resid_pre@END", "L5.mlp@3"]}
    assert pairing_problem(new, dict(new, labels=["L20@END", "mlp:L5@P3"])) is None
    assert pairing_problem(new, dict(new, labels=["L21@END", "mlp:L5@P3"])) == "different sites"
