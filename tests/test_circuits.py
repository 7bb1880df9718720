"""Circuits (fieldcheck.experiments.circuits, .edges): exact identities and brute-force references.

The edge-ablated forward is checked against code that does not share it: the light-cone
engine's joint patching (a node circuit ablates exactly its outside nodes' outputs), path
patching (ablating one edge s -> r is noising the path from s into r only), and the clean and
corrupted runs themselves (every edge kept / none kept).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import fieldcheck as fc
from fieldcheck import datasets
from fieldcheck.errors import SiteError, UsageError
from fieldcheck.experiments.circuits import (Circuit, CircuitResult, FaithfulnessCurve, _masks_metric,
                                             evaluate_circuit, faithfulness_curve, minimality)
from fieldcheck.experiments.edges import EdgeGraph, derangement, edge_graph
from fieldcheck.experiments.paths import receiver_heads, receiver_mlps
from fieldcheck.lab import Field
from fieldcheck.sites import attn_head, mlp_out, resid_pre
from fieldcheck.testing import tiny_model

from _circuits_helpers import tiny_gqa_llama


@pytest.fixture(scope="module", params=["gpt2", "llama", "gqa"])
def setup(request):
    m = tiny_gqa_llama() if request.param == "gqa" else tiny_model(request.param, n_layers=2, dtype=torch.float64)
    f = Field(m)
    ds = datasets.ioi(m, n=8)
    return f, ds


def _metric(f, ds, which):
    return f.metric_values(ds, "logit_diff", which).numpy()


def test_graph_counts_match_an_independent_enumeration():
    for L, H in [(1, 1), (2, 4), (3, 2)]:
        g = EdgeGraph(L, H)
        n = 0
        for r in g.receivers:  # count upstream senders of each receiver from the names alone
            for s in g.senders:
                if r == "logits" or s == "embed":
                    n += 1
                    continue
                ls = int(s[1:].split(".")[0])
                lr = int(r[1:].split(".")[0])
                n += ls < lr or (ls == lr and ".H" in s and r.endswith(".mlp"))
        assert g.n_edges == n
        assert g.n_senders == 1 + L * (H + 1) and g.n_receivers == L * (3 * H + 1) + 1
        for s, r in g.edges()[:: max(1, g.n_edges // 20)]:
            assert g.edge_index(g.edge_label(s, r)) == (s, r)


def test_all_edges_is_the_full_model_and_none_is_the_corrupted_model(setup):
    f, ds = setup
    g = edge_graph(f)
    res = f.evaluate_circuit(ds, Circuit.all_edges(g))
    assert isinstance(res, CircuitResult) and res.n_edges == g.n_edges
    np.testing.assert_allclose(res.circuit, _metric(f, ds, "clean"), atol=1e-10)
    np.testing.assert_allclose(res.full, _metric(f, ds, "clean"), atol=0)
    np.testing.assert_allclose(res.empty, _metric(f, ds, "corrupt"), atol=1e-10)
    assert res.cpr == pytest.approx(1.0, abs=1e-9) and res.cmd < 1e-9
    assert np.abs(res.full - res.empty).max() > 1e-3  # not vacuous
    assert res.cost["edge_forwards"] == 0  # both ends are read off the cached runs...
    # ...which is right because the edge forward itself gives them
    full, empty = _masks_metric(f, ds, [g.adjacency, np.zeros_like(g.adjacency)], "corrupt", "logit_diff")
    np.testing.assert_allclose(full, _metric(f, ds, "clean"), atol=1e-10)
    np.testing.assert_allclose(empty, _metric(f, ds, "corrupt"), atol=1e-10)


@pytest.mark.parametrize("kept", [["L0.H1", "L0.H3", "L0.mlp", "L1.H0", "L1.H2"],
                                  ["L1.H0"],       # layer 0 and L1's MLP send nothing: not computed
                                  ["L0.mlp"]])     # no head at all
@pytest.mark.parametrize("ablation", ["corrupt", "mean", "zero"])
def test_node_circuit_equals_joint_patching_of_the_other_nodes(setup, ablation, kept):
    """Ablating every edge out of the nodes outside a node circuit replaces their outputs: the
    light-cone engine's joint noising patch of those heads and MLPs at every position."""
    f, ds = setup
    res = f.evaluate_circuit(ds, Circuit(nodes=kept), ablation=ablation)
    out = [attn_head(l, h, "all") for l in range(2) for h in range(f.n_heads) if f"L{l}.H{h}" not in kept]
    out += [mlp_out(l, "all") for l in range(2) if f"L{l}.mlp" not in kept]
    sites = out[0]
    for s in out[1:]:
        sites = sites + s
    ref = f.patch(ds, sites, direction="noise", jointly=True,
                  source={"corrupt": "other", "mean": "mean", "zero": "zero"}[ablation])
    np.testing.assert_allclose(res.circuit, ref.values[0], rtol=1e-8, atol=1e-8)
    assert np.abs(res.circuit - res.full).max() > 1e-3


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_empty_circuit_is_every_node_and_the_embeddings_ablated(setup, ablation):
    f, ds = setup
    # an empty Circuit is refused (evaluate_circuit reports the empty circuit next to each one)
    res = f.evaluate_circuit(ds, Circuit(edges=["L1.H0->logits"]), ablation=ablation)
    sites = resid_pre(0, "all") + attn_head([0, 1], "all", "all") + mlp_out([0, 1], "all")
    ref = f.patch(ds, sites, direction="noise", jointly=True, source=ablation)
    np.testing.assert_allclose(res.empty, ref.values[0], rtol=1e-8, atol=1e-8)


def test_resample_empty_circuit_is_the_other_examples_clean_run(setup):
    f, ds = setup
    res = f.evaluate_circuit(ds, Circuit(edges=["L1.H0->logits"]), ablation="resample", seed=3)
    r = f.run(ds)
    perm = derangement(ds.n, 3)
    assert not (perm == torch.arange(ds.n)).any()
    b = torch.arange(ds.n)
    xf = r.clean.resid[-1][perm, r.metric_pos]  # the metric reads the other example's final residual
    ref = f.metric_on(fc.metrics.as_metric("logit_diff"), r, xf, b).numpy()
    np.testing.assert_allclose(res.empty, ref, atol=1e-10)


def _sender_site(name):
    if name.endswith(".mlp"):
        return mlp_out(int(name[1:-4]), "all")
    l, h = name[1:].split(".H")
    return attn_head(int(l), int(h), "all")


def _receiver(name):
    if name == "logits":
        return "final"
    if name.endswith(".mlp"):
        return receiver_mlps(int(name[1:-4]))
    head, c = name.rsplit(".", 1)
    l, h = head[1:].split(".H")
    return receiver_heads(int(l), int(h), c)


EDGES = ["L0.H1->L1.H2.q", "L0.H2->L1.H0.k", "L0.H3->L1.H3.v", "L0.H0->L0.mlp", "L0.mlp->L1.H1.k",
         "L0.mlp->L1.mlp", "L1.H2->L1.mlp", "L1.H1->logits", "L1.mlp->logits", "L0.H1->logits"]


def test_single_edge_ablation_equals_path_patching(setup):
    """Removing one edge s -> r from the full model = noising only the path from s into r
    (fieldcheck.experiments.paths, an independent implementation)."""
    f, ds = setup
    g = edge_graph(f)
    A = g.adjacency
    masks = []
    for e in EDGES:
        k = A.copy()
        k[g.edge_index(e)] = False
        masks.append(k)
    ours = _masks_metric(f, ds, masks, "corrupt", "logit_diff")
    effects = []
    for i, e in enumerate(EDGES):
        s, r = e.split("->")
        ref = f.path_patch(ds, _sender_site(s), _receiver(r), direction="noise").values[0]
        np.testing.assert_allclose(ours[i], ref, rtol=1e-8, atol=1e-8, err_msg=e)
        effects.append(np.abs(ours[i] - _metric(f, ds, "clean")).max())
    assert max(effects) > 1e-3


def test_float_keep_weights_interpolate_exactly_at_the_ends(setup):
    f, ds = setup
    g = edge_graph(f)
    half = g.adjacency * 0.5
    v = _masks_metric(f, ds, [g.adjacency.astype(float), half * 0.0, half], "corrupt", "logit_diff")
    np.testing.assert_allclose(v[0], _metric(f, ds, "clean"), atol=1e-10)
    np.testing.assert_allclose(v[1], _metric(f, ds, "corrupt"), atol=1e-10)
    assert np.isfinite(v[2]).all()


def test_faithfulness_curve_area_and_sizes(setup):
    f, ds = setup
    g = edge_graph(f)
    curve = f.faithfulness_curve(ds, sizes=[1, 5, 20, 0.5, g.n_edges], method="eap")
    assert isinstance(curve, FaithfulnessCurve)
    assert curve.sizes.tolist() == sorted({1, 5, 20, int(np.ceil(0.5 * g.n_edges)), g.n_edges})
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-9)
    # the k-edge circuit evaluated on its own gives the same row
    es = f.edge_scores(ds, method="eap")
    one = f.evaluate_circuit(ds, es.top(5))
    np.testing.assert_allclose(curve.circuit[1], one.circuit, atol=1e-12)
    x = np.r_[0.0, curve.fractions]
    y = np.r_[0.0, curve.faithfulness]
    assert curve.area == pytest.approx(np.trapezoid(y, x), rel=1e-12)
    assert curve.cmd_area == pytest.approx(np.trapezoid(np.abs(1 - y), x), rel=1e-12)
    s = curve.smallest(0.8)
    assert s is not None and curve.faithfulness[list(curve.sizes).index(s)] >= 0.8
    assert all(v < 0.8 for k, v in zip(curve.sizes, curve.faithfulness) if k < s)
    json.dumps(curve.to_dict())
    assert "area" in str(curve)


def test_minimality_costs_match_evaluations(setup):
    f, ds = setup
    c = Circuit(nodes=["L0.H1", "L0.mlp", "L1.H2"])
    mn = f.minimality(ds, c)
    assert mn.without.shape == (3, ds.n)
    for i, p in enumerate(c.parts):
        ref = f.evaluate_circuit(ds, c.without(p))
        np.testing.assert_allclose(mn.without[i], ref.circuit, atol=1e-12)
        assert mn.cost[i] == pytest.approx(np.sum(mn.circuit - ref.circuit) / np.sum(ref.full - ref.empty))
    json.dumps(mn.to_dict())


def test_circuit_api_and_errors(tiny_gpt2):
    f = Field(tiny_gpt2)
    g = edge_graph(f)
    c = Circuit(edges=["L0.H1->L1.H2.q", ("L0.mlp", "logits")])
    assert len(c) == 2 and "L0.mlp->logits" in c and c.level == "edge"
    assert set(c.nodes) == {"L0.H1", "L1.H2", "L0.mlp", "logits"}
    assert c.mask(g).sum() == 2
    assert Circuit(nodes=["L0.H1"]).mask(g).sum() == g.adjacency[[0, 2]].sum()  # input + L0.H1
    with pytest.raises(SiteError, match="no edge"):
        Circuit(edges=["L1.H0->L0.H1.q"]).mask(g)
    with pytest.raises(SiteError, match="unknown sender"):
        Circuit(edges=["L7.H0->logits"]).mask(g)
    with pytest.raises(SiteError, match="sender->receiver"):
        Circuit(edges=["L0.H0"]).mask(g)
    with pytest.raises(SiteError, match="is an edge"):
        Circuit(nodes=["L0.H0->logits"])
    with pytest.raises(UsageError, match="exactly one"):
        Circuit()
    ds = datasets.ioi(tiny_gpt2, n=4)
    with pytest.raises(UsageError, match="unknown ablation"):
        f.evaluate_circuit(ds, c, ablation="noise")
    with pytest.raises(UsageError, match="not a circuit"):
        f.evaluate_circuit(ds, 3)
    res = f.evaluate_circuit(ds, ["L0.H1", "L0.mlp"])  # a list of node names
    assert res.spec.level == "node"
    assert "cpr" in str(res) and json.loads(json.dumps(res.to_dict()))["n_edges"] == res.n_edges
    assert fc.Circuit is Circuit


def _curve_like(fr, circ, full, empty):
    return FaithfulnessCurve(sizes=np.arange(1, len(fr) + 1), fractions=np.asarray(fr), circuit=np.asarray(circ),
                             full=np.asarray(full), empty=np.asarray(empty))


def test_assertions_on_circuits():
    from types import SimpleNamespace as NS

    rng = np.random.default_rng(0)
    n = 40
    full = 3 + rng.normal(0, 0.3, n)
    empty = rng.normal(0, 0.3, n)
    good = empty + 0.95 * (full - empty) + rng.normal(0, 0.05, n)
    r = fc.assert_faithful(NS(circuit=good, full=full, empty=empty), fc.cpr > 0.9, fc.cmd < 0.1, n_boot=500)
    assert r[0].estimate == pytest.approx(np.sum(good - empty) / np.sum(full - empty))
    assert r[1].estimate == pytest.approx(abs(1 - r[0].estimate))
    with pytest.raises(fc.ClaimFailed):
        fc.assert_faithful(NS(circuit=empty + 0.5 * (full - empty), full=full, empty=empty), fc.cmd < 0.2,
                           n_boot=500)
    # a curve that is 0.5 at 10%, 0.9 at 50% and 1 at 100%
    fr = [0.1, 0.5, 1.0]
    circ = [empty + a * (full - empty) for a in (0.5, 0.9, 1.0)]
    cur = _curve_like(fr, circ, full, empty)
    res = fc.assert_faithfulness_curve(cur, fc.area > 0.7, fc.cmd < 0.3, n_boot=500)
    assert res[0].estimate == pytest.approx(cur.area) and res[1].estimate == pytest.approx(cur.cmd_area)
    assert cur.area == pytest.approx(0.1 * 0.5 / 2 + 0.4 * 1.4 / 2 + 0.5 * 1.9 / 2)
    with pytest.raises(fc.ClaimFailed):
        fc.assert_faithfulness_curve(cur, fc.area > 0.9, n_boot=500)
    # minimality: part 0 costs 0.3, part 1 costs 0.02
    circuit = empty + 0.9 * (full - empty)
    without = np.stack([circuit - 0.3 * (full - empty), circuit - 0.02 * (full - empty)])
    mn = NS(without=without, circuit=circuit, full=full, empty=empty, parts=["a", "b"])
    res = fc.assert_minimal(mn, fc.min_cost > 0.01, n_boot=500)
    assert res[0].estimate == pytest.approx(0.02)
    assert res[0].details["cheapest_parts"][0][0] == "b"
    with pytest.raises(fc.ClaimFailed):
        fc.assert_minimal(mn, fc.min_cost > 0.1, n_boot=500)
    # no gap between the full model and the empty circuit: refused as assert_faithful refuses it
    with pytest.raises(fc.InsufficientData, match="full - empty gap is 0 .* not clearly away from 0"):
        fc.assert_minimal(NS(without=without, circuit=full, full=full, empty=full), fc.min_cost > 0.01)
    with pytest.raises(fc.InsufficientData, match="full - empty gap is 0 .* not clearly away from 0"):
        fc.assert_faithfulness_curve(_curve_like(fr, circ, full, full), fc.area > 0.5)
    bad = NS(without=without[:, :-1], circuit=circuit, full=full, empty=empty)
    with pytest.raises(fc.AssertionInputError if hasattr(fc, "AssertionInputError") else Exception):
        fc.assert_minimal(bad, fc.min_cost > 0.01)


def test_per_head_projections_match_the_models_own_qkv(setup, monkeypatch):
    """The per-head fast path (GPT-2, Llama) gives the same attention outputs as projecting every
    distinct input with the functional model's own qkv (the path any other family takes)."""
    from fieldcheck.experiments import edges

    f, ds = setup
    fm = f.fm
    r = f.run(ds)
    H = fm.n_heads
    x = torch.stack([r.clean.resid[1], r.corrupt.resid[1], r.clean.mid[0]])   # 3 distinct inputs
    g = torch.Generator().manual_seed(0)
    q_of, k_of, v_of = (torch.randint(0, 3, (H,), generator=g) for _ in range(3))
    assert edges._per_head_qkv(fm, 1, x, q_of, k_of, v_of) is not None
    fast = edges._heads_attend(fm, 1, x, x, x, q_of, k_of, v_of)
    monkeypatch.setattr(edges, "_per_head_qkv", lambda *a: None)
    slow = edges._heads_attend(fm, 1, x, x, x, q_of, k_of, v_of)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)
    for h in range(H):  # and each head's output is the model's own on the input its query reads
        if q_of[h] == k_of[h] == v_of[h]:
            qq, kk, vv = fm.qkv(1, x[q_of[h]], 0)
            torch.testing.assert_close(fast[:, :, h], fm.attend(qq, kk, vv, 0)[:, :, h], rtol=1e-10, atol=1e-10)


def test_curve_at_a_size_is_that_circuits_evaluation(setup):
    f, ds = setup
    es = f.edge_scores(ds, method="eap")
    curve = f.faithfulness_curve(ds, es, sizes=[3, 12])
    r = curve.at(12)
    ref = f.evaluate_circuit(ds, es.top(12))
    assert r.spec == es.top(12) and r.n_edges == 12 == ref.n_edges
    np.testing.assert_allclose(r.circuit, ref.circuit, atol=1e-12)
    assert r.cpr == pytest.approx(ref.cpr, abs=1e-12)
    nodes = f.faithfulness_curve(ds, es, sizes=[2], level="node")
    assert nodes.at(2).spec.level == "node" and nodes.at(2).n_edges > 2
    with pytest.raises(UsageError, match="not measured"):
        curve.at(5)


@pytest.mark.pretrained
def test_smollm2_identities_and_node_circuit(smollm2):
    """On SmolLM2 (float32, grouped-query attention): every edge kept is the clean run and none
    the corrupted run within 1e-5 (measured 0 and 1.3e-6 at n=16); a node circuit equals the
    joint noising patch of the other nodes; one edge into a key input equals path patching."""
    f = Field(smollm2)
    ds = datasets.ioi(smollm2, n=4)
    g = edge_graph(f)
    res = f.evaluate_circuit(ds, Circuit(nodes=[n for n in g.senders[1:]]))
    np.testing.assert_allclose(res.circuit, _metric(f, ds, "clean"), atol=1e-5)
    np.testing.assert_allclose(res.empty, _metric(f, ds, "corrupt"), atol=1e-5)
    kept = [f"L{l}.H{h}" for l in range(20, 30) for h in range(9)] + [f"L{l}.mlp" for l in range(30)]
    res = f.evaluate_circuit(ds, Circuit(nodes=kept))
    ref = f.patch(ds, attn_head(list(range(20)), "all", "all"), direction="noise", jointly=True)
    np.testing.assert_allclose(res.circuit, ref.values[0], rtol=1e-4, atol=1e-4)
    k = g.adjacency.copy()
    k[g.edge_index("L22.H3->L27.H4.k")] = False
    ours = _masks_metric(f, ds, [k], "corrupt", "logit_diff")[0]
    ref = f.path_patch(ds, attn_head(22, 3, "all"), receiver_heads(27, 4, "k"), direction="noise").values[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ablation", ["corrupt", "mean"])
def test_nodes_at_positions_equal_patching_their_other_positions(setup, ablation):
    """A node kept at some positions only ("L1.H2@END", "L0.mlp@3") has its output ablated at the
    other positions for every receiver: the joint noising patch of the other nodes everywhere and
    of these nodes at their other positions."""
    f, ds = setup
    T = ds.seq_len
    end = ds.position("END")
    assert (end == end[0]).all()
    end = int(end[0])
    kept = ["L0.H1", "L0.H3", "L0.mlp@3", "L0.mlp@END", "L1.H2@END", "L1.H0"]
    c = Circuit(nodes=kept)
    assert c.positional and c.nodes == ("L0.H1", "L0.H3", "L0.mlp", "L1.H2", "L1.H0")
    res = f.evaluate_circuit(ds, c, ablation=ablation)
    sites = [attn_head(l, h, "all") for l in range(2) for h in range(f.n_heads)
             if f"L{l}.H{h}" not in ("L0.H1", "L0.H3", "L1.H2", "L1.H0")] + [mlp_out(1, "all")]
    sites += [mlp_out(0, [t for t in range(T) if t not in (3, end)]),
              attn_head(1, 2, [t for t in range(T) if t != end])]
    ss = sites[0]
    for s in sites[1:]:
        ss = ss + s
    ref = f.patch(ds, ss, direction="noise", jointly=True, source="other" if ablation == "corrupt" else "mean")
    np.testing.assert_allclose(res.circuit, ref.values[0], rtol=1e-8, atol=1e-8)
    # the position-agnostic node differs: the positions matter
    agn = f.evaluate_circuit(ds, Circuit(nodes=[k.split("@")[0] for k in kept]), ablation=ablation)
    assert np.abs(agn.circuit - res.circuit).max() > 1e-4
    mn = f.minimality(ds, c, ablation=ablation)
    np.testing.assert_allclose(mn.circuit, res.circuit, atol=1e-12)
    with pytest.raises(SiteError, match="position-agnostic"):
        Circuit(edges=["L0.H1@END->logits"]).mask(edge_graph(f))


def test_notebook_displays(setup):
    f, ds = setup
    res = f.evaluate_circuit(ds, Circuit(nodes=["L0.H1", "L1.mlp"]))
    curve = f.faithfulness_curve(ds, sizes=[2, 10], method="eap")
    for obj in (res, curve, f.minimality(ds, res.spec), f.edge_scores(ds, method="eap")):
        html = obj._repr_html_()
        assert type(obj).__name__ in html and "no picture" not in html
    assert "<img" in res._repr_html_() and "<img" in curve._repr_html_()


def test_top_mask_is_the_mask_of_the_top_circuit(setup):
    f, ds = setup
    sc = f.edge_scores(ds, method="eap")
    g = sc.graph
    for level in ("edge", "node"):
        n = len(sc.ranking(level))
        for by in ("abs", "signed"):
            for k in sorted({1, 2, n // 3, n}):
                c = sc.top(k, level, by)
                assert len(c) == k
                np.testing.assert_array_equal(sc.top_mask(k, level, by), c.mask(g))
                # the circuit's parts are what the public constructor makes of the same labels
                again = Circuit(**{"edges" if level == "edge" else "nodes": list(c.parts)})
                assert again.parts == c.parts
    with pytest.raises(UsageError):
        sc.top_mask(0)


def test_mib_scores_are_trapezoid_areas_of_both_rankings(setup):
    """CPR and CMD (fieldcheck.experiments.mib) recomputed by hand from independent evaluations of
    each top-k circuit; the two ends cost no edge forward."""
    from fieldcheck.experiments.mib import MIB_PERCENTAGES, mib_scores

    f, ds = setup
    sc = f.edge_scores(ds, method="eap")
    res = mib_scores(f, ds, sc)
    n = sc.graph.n_edges
    full = _metric(f, ds, "clean").mean()
    empty = _metric(f, ds, "corrupt").mean()
    fr, faith = {}, {}
    for by in ("signed", "abs"):
        ks = sorted({max(1, int(p * n)) for p in MIB_PERCENTAGES})
        vals = [evaluate_circuit(f, ds, sc.top(k, "edge", by)).circuit.mean() for k in ks]
        faith[by] = (np.array(vals) - empty) / (full - empty)
        fr[by] = np.array(ks) / n if len(ks) != len(MIB_PERCENTAGES) else np.array(MIB_PERCENTAGES)
    cpr = np.trapezoid(faith["signed"], fr["signed"])
    cmd = np.trapezoid(np.abs(1 - faith["abs"]), fr["abs"])
    assert res.cpr == pytest.approx(cpr, abs=1e-9) and res.cmd == pytest.approx(cmd, abs=1e-9)
    np.testing.assert_allclose(res.signed.faithfulness, faith["signed"], atol=1e-9)
    assert res.cost["edge_forwards"] == 2 * (len(res.signed.sizes) - 1)   # neither end runs one
    json.dumps(res.to_dict())
