"""``fieldcheck.Field``: the field of a model with every experiment as a documented method.

This module is the layer above :mod:`fieldcheck.experiments`: :class:`Field` is the field core
(:class:`fieldcheck.field.core.FieldCore`: cached runs, ``phi``, ``metric_values``,
``baselines``, ``patch``) plus one method per experiment, each calling the experiment's function
with every keyword spelled out, so that ``help(fc.Field.attention)`` shows the options and what
comes back. The experiments take the core and never import this module. Add a method here
(with its docstring) when you add an experiment.

Shapes use the names ``batch`` (examples of the data set), ``pos`` (token positions), ``layer``
(``0..L``: layer l is the residual entering block l, L the final residual), ``head`` and
``d_model``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from fieldcheck.experiments import attention as _attention
from fieldcheck.experiments import circuits as _circuits
from fieldcheck.experiments import discovery as _discovery
from fieldcheck.experiments import feature_circuits as _feature_circuits
from fieldcheck.experiments import feature_paths as _feature_paths
from fieldcheck.experiments import feature_views as _feature_views
from fieldcheck.experiments import features as _features
from fieldcheck.experiments import green as _green
from fieldcheck.experiments import lens as _lens
from fieldcheck.experiments import paths as _paths
from fieldcheck.experiments import response as _response
from fieldcheck.experiments import transfer as _transfer
from fieldcheck.experiments.attention import HEAD_KINDS, AttentionResult, HeadScores
from fieldcheck.experiments.circuit_spec import Circuit
from fieldcheck.experiments.circuits import CircuitResult, FaithfulnessCurve, Minimality
from fieldcheck.experiments.discovery import EdgeScores
from fieldcheck.experiments.feature_circuits import FeatureCircuitResult, NodeScores
from fieldcheck.experiments.feature_views import FeatureDLA, Selectivity, TopExamples
from fieldcheck.experiments.features import FeatureActivations
from fieldcheck.experiments.green import GreenResult, GreenSlice, Propagation
from fieldcheck.experiments.lens import DirectAttribution, LogitLens
from fieldcheck.experiments.paths import PathResult
from fieldcheck.experiments.response import Selection, Sensitivity, Sweep
from fieldcheck.experiments.transfer import TransferResult
from fieldcheck.errors import UsageError
from fieldcheck.field.core import FieldCore
from fieldcheck.field.results import PatchResult
from fieldcheck.field.sources import Source
from fieldcheck.field.sites import is_feature_sites

__all__ = ["Field"]


class Field(FieldCore):
    """The residual field of ``model`` over contrastive data sets, and every experiment on it.

    ``Field(model, memory_budget=None, engine="auto")``. model: a model from
    ``fieldcheck.load_model`` (a TransformerBridge) or a spec/path ``load_model`` accepts.
    memory_budget: bytes (or a size such as "512MiB") one chunk of a patch sweep, edge scoring,
    EAP-IG, circuit evaluation or a sensitivity may use; None: the session's
    ``--fc-memory-budget`` (``fieldcheck.config``), else 2 GiB. engine: "auto" (the light-cone
    engine where the family supports it, else the hooks), "lightcone" or "hooks" (one hooked
    TransformerLens forward per patched site: the reference). ``field.engine_name`` says which.

    Each data set's clean and corrupted runs are computed once and cached (``run``, ``phi``,
    ``metric_values``, ``baselines``, ``clear``). ``patch`` is activation patching; the other
    methods are the experiments (sensitivities and predictions, scale sweeps, site selection,
    Green functions, transfer, path patching, attention, direct logit attribution, the logit
    lens, circuits and their discovery, dictionary features), each returning a plain result
    object with ``summary()``, ``to_dict()`` and a matplotlib ``plot``/``heatmap``. In a claim
    file, the ``field`` fixture is the session's Field.

    Dictionary features (``fieldcheck.sites.features(sae, latents, positions)``, SAEs and
    transcoders from :mod:`fieldcheck.sae`) are sites of ``patch``, ``predict``, ``transfer`` and
    ``path_patch`` like any other; the feature experiments (``feature_activations``,
    ``node_attribution``, ``feature_circuit``, ``selectivity``, ...) are methods too.
    """

    # --- patching ------------------------------------------------------------------------------------
    def patch(self, ds, sites, direction: str = "denoise", source=None, alpha: float = 1.0,
              jointly: bool = False, metric: Union[str, Any, Sequence] = "logit_diff",
              engine: Optional[str] = None, progress: Optional[bool] = None):
        """Activation patching: insert a source at each site (or all jointly) and read the metric.

        ds: a ContrastiveSet. sites: a site set from :mod:`fieldcheck.sites` (``resid_pre(range(20,
        30), "END")``, ``attn_head(5, 1, "IO")``, ...), a Site or a list of them; positions are
        ints or the data set's position names. Dictionary features
        (``fieldcheck.sites.features(sae, latents, positions, error=)``) are patched along their
        decoder rows with the SAE's error term kept, so that a patch of nothing changes nothing
        (:mod:`fieldcheck.experiments.features`). direction: "denoise" (default: the clean value
        into the corrupted run, sufficiency) or "noise" (corrupted into clean, necessity). source:
        None (the other run's value), "zero", "mean", ``fieldcheck.sources.gaussian(scale)`` or a
        steering tensor ``[d]``/``[batch, d]``; for features None/"other", "zero", "mean" (over the
        target run's examples) or "steer" (adds alpha times the decoder row). alpha: the scale in
        ``phi + alpha * delta`` (1.0 replaces the value). jointly: patch every site together (one
        row) instead of one row per site. metric: a metric name, a callable, or a list of them.
        engine: None (the field's), "lightcone" or "hooks". progress: show a progress bar (None:
        the session's setting).

        Returns a :class:`~fieldcheck.field.results.PatchResult` with ``values [n_sites, batch]``
        (``[1, batch]`` when jointly) and both baselines ``[batch]``; a dict metric name ->
        PatchResult when ``metric`` is a list. For features, ``cost["sae"]`` says where each SAE
        was trained and its explained variance on this data set;
        ``fc.assert_feature_effect(result, recovered > 0.5)`` decides it.
        """
        if is_feature_sites(sites):
            return _features.patch_features(self, ds, sites, direction=direction, source=source, alpha=alpha,
                                            jointly=jointly, metric=metric, engine=engine, progress=progress)
        return super().patch(ds, sites, direction=direction, source=source, alpha=alpha, jointly=jointly,
                             metric=metric, engine=engine, progress=progress)

    # --- sensitivities, predictions, sweeps, site selection ------------------------------------
    def sensitivity(self, ds, metric="logit_diff", run: str = "corrupt") -> Sensitivity:
        """The sensitivity field S = dm/dphi at every site, from one backward pass.

        ds: a ContrastiveSet. metric: "logit_diff" (default), "logprob", "prob", "kl" or a
        callable ``(logits [rows, d_vocab], ds) -> [rows]``. run: the run differentiated,
        "corrupt" (default: the target of denoising) or "clean" (the target of noising).

        Returns a :class:`~fieldcheck.experiments.response.Sensitivity`: ``resid [layer 0..L,
        batch, pos, d_model]``, ``resid_mid``/``attn_out``/``mlp_out [layer, batch, pos,
        d_model]``, ``z [layer, batch, pos, head, d_head]``, ``metric_value [batch]``;
        ``at(site, pos)`` reads one site ``[batch, dim]``, ``norm()`` the mean ``[layer, pos]``.
        """
        return _response.sensitivity(self, ds, metric=metric, run=run)

    def predict(self, ds, sites, order: int = 1, method: str = "gradient", steps: int = 8,
                direction: str = "denoise", source=None, alpha: float = 1.0,
                metric="logit_diff") -> PatchResult:
        """Predict ``patch(ds, sites, ...)`` per site and example without patching (attribution patching).

        ds, sites, direction, source, alpha, metric: as in :meth:`patch`. order: 1 (default, the
        first-order prediction S . delta) or 2 (plus 1/2 d^2m/dalpha^2 along each site's own path,
        exact forward-over-forward; about 3 light-cone forwards per site). method: "gradient"
        (default) or "integrated" (EAP-IG: the gradient averaged over ``steps`` points between
        the target and the source run, dotted with delta; ``steps`` forward+backward passes in
        all). steps: integration points for ``method="integrated"`` (default 8).

        Feature sites (``fieldcheck.sites.features(sae, ...)``): every latent's first-order effect
        from one backward pass (``(f_new - f_tgt) * W_dec[i] . dm/dphi`` at the SAE's hook), or the
        gradient integrated between the two runs' activations at the hook (``method="integrated"``,
        Marks et al.); order 1 only.

        Returns a :class:`~fieldcheck.field.results.PatchResult` with ``values [n_sites, batch]``
        and ``method`` naming the prediction; compare it with the real patch with
        ``fc.assert_predicted_effect(pred, field.patch(ds, sites), r2 > 0.7)``.
        """
        if is_feature_sites(sites):
            if order != 1:
                raise UsageError(f"feature sites take order=1 (first order or integrated), got order={order!r}")
            return _features.predict_features(self, ds, sites, method=method, steps=steps, direction=direction,
                                              source=source, alpha=alpha, metric=metric)
        return _response.predict(self, ds, sites, order=order, method=method, steps=steps, direction=direction,
                                 source=source, alpha=alpha, metric=metric)

    def scale_sweep(self, ds, site, alphas=None, direction: str = "denoise", source=None,
                    metric="logit_diff") -> Sweep:
        """The metric's response to ``phi + alpha * delta`` at one site, for each scale alpha.

        ds: a ContrastiveSet. site: one site (e.g. ``resid_pre(20, "END")``). alphas: the scales
        (default 0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0). direction, source, metric: as in
        :meth:`patch`.

        Returns a :class:`~fieldcheck.experiments.response.Sweep`: ``alphas [n_alpha]``,
        ``values``/``effect``/``linear [n_alpha, batch]`` (``linear`` = alpha * S . delta, the
        tangent line); ``linear_regime(tol)`` estimates alpha*, which
        ``fc.assert_linear_regime(sweep, alpha_star >= 0.3)`` decides.
        """
        return _response.scale_sweep(self, ds, site, alphas=alphas, direction=direction, source=source,
                                     metric=metric)

    def select_sites(self, ds, k: int, candidates=None, method: str = "integrated", steps: int = 8,
                     direction: str = "denoise", metric="logit_diff", verify_recall: bool = True,
                     prediction: Optional[PatchResult] = None) -> Selection:
        """Adjoint site selection: the ``k`` sites with the largest predicted effect, patched jointly.

        ds: a ContrastiveSet. k: how many sites to choose. candidates: the site set ranked
        (default: every ``resid_pre`` site, ``resid_pre("all", "all")``). method, steps: the
        prediction, as in :meth:`predict` (default "integrated" with 8 steps). direction,
        metric: as in :meth:`patch`. verify_recall: also patch every candidate singly (cheap with
        the light-cone engine) to report the recall of the real top k. prediction: a
        :meth:`predict` result over the candidates to reuse instead of computing one.

        Returns a :class:`~fieldcheck.experiments.response.Selection`: the chosen ``sites``,
        ``predicted [batch]`` (the joint patch's predicted effect), ``real`` (the joint
        PatchResult), ``recall`` (None when not verified) and the ``ranking``; decided by
        ``fc.assert_localized(sel, recovered > 0.8)``.
        """
        return _response.select_sites(self, ds, k, candidates=candidates, method=method, steps=steps,
                                      direction=direction, metric=metric, verify_recall=verify_recall,
                                      prediction=prediction)

    # --- Green functions ---------------------------------------------------------------------------
    def green(self, ds, source_site, direction=None, which: str = "corrupt", metric=None,
              batch_size: int = 32) -> GreenResult:
        """The Green function: the linear response d phi over the whole lattice to a source at one site.

        ds: a ContrastiveSet. source_site: a residual site ``resid_pre(l, t)`` (or ``resid_post``),
        t an int or a position name. direction: None (default: the patch delta at the site, the
        other run minus the ``which`` run, per example) or a tensor ``[d_model]`` /
        ``[batch, d_model]``. which: the run linearized around, "corrupt" (default) or "clean".
        metric: None, or a metric name/callable whose first-order change is then
        ``metric_response [batch]``. batch_size: examples per forward-mode pass (memory: about
        3x a forward of that many prompts). Cost: one forward-mode pass of blocks l..L-1.

        Returns a :class:`~fieldcheck.experiments.green.GreenResult`: ``response [batch, layer
        0..L, pos, d_model]`` (zero outside the light cone), ``response_norm [batch, layer, pos]``,
        ``outside_cone_max`` (exactly 0.0 for a causal model), ``depth_share [batch]``;
        ``linear_vs_real(alphas)`` compares it with real propagation.
        ``fc.assert_light_cone(g)`` and ``fc.assert_anisotropic(g, depth_share > 0.5)`` decide it.
        """
        return _green.green(self, ds, source_site, direction=direction, which=which, metric=metric,
                            batch_size=batch_size)

    def propagate(self, ds, source_site, alpha: float = 1.0, direction=None, which: str = "corrupt",
                  batch_size: int = 32) -> Propagation:
        """The real (non-linear) propagation of a source: phi with ``phi(l, t) += alpha * direction``
        minus phi of the ``which`` run, over the whole lattice, per example.

        ds, source_site, direction, which, batch_size: as in :meth:`green`. alpha: the scale of
        the source (0 gives exactly 0: both runs go through the same blocks).

        Returns a :class:`~fieldcheck.experiments.green.Propagation`: ``response [batch, layer
        0..L, pos, d_model]``, ``response_norm [batch, layer, pos]``, ``outside_cone_max``.
        """
        return _green.propagate(self, ds, source_site, alpha=alpha, direction=direction, which=which,
                                batch_size=batch_size)

    def green_slice(self, ds, source_site, target_site, rank: int = 8, n_iter: int = 2, oversample: int = 8,
                    seed: int = 0, example: Union[int, str] = 0, which: str = "corrupt",
                    n_probe: int = 16) -> GreenSlice:
        """A low-rank description of one block G(target; source) = d phi(target) / d phi(source).

        ds: a ContrastiveSet. source_site, target_site: residual sites (the target inside the
        source's light cone). rank: the rank k of the randomized SVD (default 8). n_iter: power
        iterations (default 2). oversample: extra columns of the randomized SVD (default 8).
        seed: its random generator's seed. example: the example index (default 0), or "mean" for
        the block averaged over all examples. which: the run linearized around ("corrupt" or
        "clean"). n_probe: Gaussian probes for the explained fraction's Hutchinson estimate.
        Cost: (2 + 2 n_iter) passes of ``rank + oversample`` columns plus one of ``n_probe``.

        Returns a :class:`~fieldcheck.experiments.green.GreenSlice`: ``U [d_model, k]``,
        ``S [k]``, ``V [d_model, k]``, ``explained`` (share of ||G||_F^2) with ``explained_se``;
        ``predict(delta)`` and ``check()`` compare it with real propagation.
        ``fc.assert_explained(slice, explained > 0.9)`` decides it.
        """
        return _green.green_slice(self, ds, source_site, target_site, rank=rank, n_iter=n_iter,
                                  oversample=oversample, seed=seed, example=example, which=which, n_probe=n_probe)

    # --- transfer and path patching ------------------------------------------------------------------
    def transfer(self, ds_ab, site, targets=None, alpha: float = 1.0, metric="logit_diff", pair: str = "mean",
                 confidence: float = 0.95) -> TransferResult:
        """Displacement transfer: add phi_A - phi_B (clean minus corrupt of ``ds_ab``) at ``site`` into targets.

        ds_ab: the ContrastiveSet whose clean (A) and corrupted (B) runs give the displacement.
        site: one site (resid_pre/resid_mid/resid_post/attn_out/mlp_out/attn_head; a position
        name is resolved per example in ds_ab and in the targets). targets: a ContrastiveSet whose
        corrupted prompts receive the displacement (default: ds_ab). alpha: its scale (0 gives a
        shift of exactly 0). metric: as in :meth:`patch`. pair: "mean" (default: the mean
        displacement into every target) or "matched" (example b's own displacement into target
        b). confidence: the level of the flip rate's Clopper-Pearson interval ``rate_ci``.
        A feature site (``fieldcheck.sites.feature(sae, i, "END")``) moves the change of the
        latent's activation, ``f_i(A) - f_i(B)``, along its decoder row into the targets (the error
        node: the change of the error term); ``positions="all"`` moves it at every position.

        Returns a :class:`~fieldcheck.experiments.transfer.TransferResult`: ``shift [batch]``
        (metric after - before), ``flipped [batch]`` (the answer now wins), ``gap_closed
        [batch]``, ``rate``; ``fc.assert_transfers(t, rate > 0.5)`` decides it.
        """
        if is_feature_sites(site):
            return _feature_paths.transfer_features(self, ds_ab, site, targets=targets, alpha=alpha, metric=metric,
                                                    pair=pair, confidence=confidence)
        return _transfer.transfer(self, ds_ab, site, targets=targets, alpha=alpha, metric=metric, pair=pair,
                                  confidence=confidence)

    def path_patch(self, ds, senders, receivers, direction: str = "denoise", metric="logit_diff",
                   jointly: bool = True) -> PathResult:
        """Path patching: patch only the paths from ``senders`` into ``receivers``; the rest stays at the target run.

        ds: a ContrastiveSet. senders: attn_head / attn_out / mlp_out sites (positions: ints,
        names or "all"). receivers: "final" (the logits), ``fc.receiver_heads(layer, heads,
        "qkv")``, ``fc.receiver_mlps(layers)``, ``fc.downstream(...)``, or a list of them; they
        read at all positions; labels work too (``"L5.H1.q"``, ``"L5.H1"`` for its q, k and v,
        ``"L6.mlp"``, ``"logits"``). direction: "denoise" (default: the senders' clean values into the
        corrupted run) or "noise". metric: as in :meth:`patch`. jointly: True (default) patches
        all senders together (one row), False one row per sender. Senders may be dictionary
        features (``fieldcheck.sites.features(sae, ...)``): the feature patch's source, sent only
        into the receivers (with ``fc.downstream(senders, n_layers)`` it equals the joint feature
        patch).

        Returns a :class:`~fieldcheck.experiments.paths.PathResult` (a PatchResult with
        ``values [rows, batch]``, both baselines ``[batch]``, ``method="path"``, ``receivers``);
        ``fc.assert_path_effect(r, recovered > 0.5)`` decides it.
        """
        if is_feature_sites(senders):
            return _feature_paths.path_patch_features(self, ds, senders, receivers, direction=direction,
                                                      metric=metric, jointly=jointly)
        return _paths.path_patch(self, ds, senders, receivers, direction=direction, metric=metric, jointly=jointly)

    # --- attention, direct logit attribution, logit lens -----------------------------------------------
    def attention(self, ds, heads="all", query: Any = "END", key: Any = "IO", which: str = "clean",
                  engine: Optional[str] = None) -> AttentionResult:
        """Attention weight of each head from the ``query`` position to the ``key`` position, per example.

        ds: a ContrastiveSet. heads: "all" (default; None too), a head label ``"L8.H1"``, an
        ``attn_head(layers, heads)`` site set (its positions are ignored), or a list mixing labels,
        Sites and ``(layer, head)`` tuples. query, key: position names of ``ds`` or ints (defaults
        "END" and "IO": the IOI sets name "IO"; other data sets need their own ``key``); the key
        may not come after the query.
        which: the run read, "clean" (default) or "corrupt". engine: None (the field's),
        "lightcone" (patterns from the cached run) or "hooks" (TransformerLens's
        ``hook_pattern``).

        Returns an :class:`~fieldcheck.experiments.attention.AttentionResult`: ``weights [head,
        batch]`` (``heads[i]`` is ``(layer, head)``), ``query_pos``/``key_pos [batch]``,
        ``patterns [head, batch, pos, pos]`` when small enough; ``top(k)``, ``select(heads)``,
        ``heatmap()``. ``fc.assert_attends(result, mean > 0.3)`` decides it.
        """
        return _attention.attention(self, ds, heads, query=query, key=key, which=which, engine=engine)

    def head_scores(self, n: int = 8, length: int = 20, seed: int = 0, kinds: Sequence[str] = HEAD_KINDS,
                    normalize: str = "targets", engine: Optional[str] = None) -> HeadScores:
        """Previous-token, duplicate-token and induction scores of every head, on repeated random tokens.

        n: sequences (default 8). length: random tokens repeated once (each sequence is [BOS]
        r r, ``2 * length + 1`` tokens). seed: the tokens' seed. kinds: a subset of
        "previous_token", "duplicate_token", "induction" (default all). normalize: "targets"
        (default: the attention on the pattern's targets summed, divided by the number of
        queries that have a target) or "transformer_lens" (divided by the total attention, as
        TransformerLens's head detector). engine: None,
        "lightcone" or "hooks" (as in :meth:`attention`).

        Returns a :class:`~fieldcheck.experiments.attention.HeadScores`: ``scores {kind: [layer,
        head, batch]}``, ``tokens [batch, pos]``; ``mean(kind)`` ``[layer, head]``,
        ``top(kind, k)``, ``of(kind, heads)`` (an AttentionResult for ``fc.assert_attends``).
        """
        return _attention.head_scores(self, n=n, length=length, seed=seed, kinds=kinds, normalize=normalize,
                                      engine=engine)

    def dla(self, ds, components="all", which: str = "clean", tol: Optional[float] = None) -> DirectAttribution:
        """Direct logit attribution: each component's direct term of the logit difference at END.

        ds: a ContrastiveSet. components: "all" (default: embed, every head, every attention
        bias, every MLP, the constant bias), "heads", "layers" (``L{l}.attn`` = heads + bias,
        ``L{l}.mlp``), a list of labels (``"L20.H3"``, ``"L21.mlp"``, ``"L21.attn"``,
        ``"L21.attn_bias"``, ``"embed"``, ``"bias"``), or attn_head/attn_out/mlp_out sites
        (positions ignored). which: "clean" (default),
        "corrupt" or "diff" (clean - corrupt). tol: the largest relative mismatch allowed
        between the sum of all terms and the run's logit difference (default 1e-3; 5e-2 for
        16-bit models); NumericalError past it.

        Returns a :class:`~fieldcheck.experiments.lens.DirectAttribution`: ``labels``,
        ``values [component, batch]``, ``total [batch]`` (the logit difference all terms add up
        to); ``top(k, by="abs"|"value")``, ``select(labels)``, ``share``. ``fc.assert_direct_effect(d,
        mean > 0.5)`` decides it.
        """
        return _lens.dla(self, ds, components, which=which, tol=tol)

    def logit_lens(self, ds, position: Any = "END", which: str = "clean") -> LogitLens:
        """The logit lens: phi(l, position) of every layer decoded with the final norm and the unembedding.

        ds: a ContrastiveSet. position: a position name of ``ds`` or an int (default "END").
        which: "clean" (default) or "corrupt".

        Returns a :class:`~fieldcheck.experiments.lens.LogitLens`: ``logit_diff``/``prob``/
        ``rank``/``wrong_rank [layer 0..L, batch]`` (rank 0 = top token); ``first_layer(leads)``
        ``[batch]``. ``fc.assert_readable(lens, first_layer <= 20)`` decides it.
        """
        return _lens.logit_lens(self, ds, position, which=which)

    # --- circuits --------------------------------------------------------------------------------------
    def evaluate_circuit(self, ds, circuit: Union[Circuit, Sequence[str]], ablation: Union[str, Source] = "corrupt",
                         metric="logit_diff", seed: int = 0) -> CircuitResult:
        """Run the clean prompts with every edge outside ``circuit`` ablated, and the full and empty circuits.

        ds: a ContrastiveSet. circuit: a ``fc.Circuit(edges=["L0.H1->L2.H3.q", ...])`` /
        ``Circuit(nodes=["L3.H2", "L5.mlp@END", ...])``, or a non-empty list of labels (read as
        edges when they contain ``->``, else as nodes) or attn_head/mlp_out sites. ablation: the
        value an ablated edge carries: "corrupt" (default, the corrupted run's, as MIB), "mean"
        (over the clean run's examples), ``fc.sources.mean(by="template")`` (grouped: over the
        examples of the same template, ``ds.example_meta[i]["template"]``), "zero" or "resample"
        (another example's clean run). metric: as in :meth:`patch`. seed: picks the other example
        of "resample".

        Returns a :class:`~fieldcheck.experiments.circuits.CircuitResult`: ``circuit``/
        ``full``/``empty [batch]`` metrics, ``cpr`` (MIB's circuit performance ratio
        sum(circuit - empty) / sum(full - empty)) and ``cmd`` = |1 - cpr|.
        ``fc.assert_faithful(result, cpr > 0.8)`` decides it.
        """
        return _circuits.evaluate_circuit(self, ds, circuit, ablation=ablation, metric=metric, seed=seed)

    def faithfulness_curve(self, ds, scores: Optional[EdgeScores] = None, sizes=None, level: str = "edge",
                           ablation: Union[str, Source] = "corrupt", metric="logit_diff", method: str = "eap-ig", steps: int = 5,
                           seed: int = 0, eval_ds=None, by: str = "abs") -> FaithfulnessCurve:
        """Faithfulness of the top-k parts of a ranking, for each size k (MIB's CPR and CMD areas).

        ds: a ContrastiveSet: the scores are computed on it when ``scores`` is None, and the
        circuits are evaluated on it unless ``eval_ds`` is given. scores: an
        :class:`~fieldcheck.experiments.discovery.EdgeScores` (default: :meth:`edge_scores` on
        ``ds`` with ``method``, ``steps``, ``ablation``, ``metric``). sizes: counts of parts, or
        fractions in (0, 1] of all parts (default MIB's 0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%,
        50%, 100%). level: "edge" (default) or "node". ablation, metric, seed: as in
        :meth:`evaluate_circuit`. method, steps: as in :meth:`edge_scores` (only when ``scores``
        is None). eval_ds: the data set the circuits are evaluated on (default ``ds``); with
        precomputed ``scores``, ``ds`` is then not used. by: "abs" ranks parts by |score| (MIB's
        CMD ranking), "signed" from the most helpful part on (MIB's CPR ranking; MIB's two scores
        together: :func:`fieldcheck.experiments.mib.mib_scores`).

        Returns a :class:`~fieldcheck.experiments.circuits.FaithfulnessCurve`: ``sizes``/
        ``fractions``/``faithfulness [n_sizes]``, ``circuit [n_sizes, batch]``,
        ``full``/``empty [batch]``, ``area``, ``cmd_area``; ``at(size)`` is one size's
        CircuitResult. ``fc.assert_faithfulness_curve(curve, area > 0.5)`` decides it.
        """
        return _circuits.faithfulness_curve(self, ds, scores=scores, sizes=sizes, level=level, ablation=ablation,
                                            metric=metric, method=method, steps=steps, seed=seed, eval_ds=eval_ds,
                                            by=by)

    def minimality(self, ds, circuit, ablation: Union[str, Source] = "corrupt", metric="logit_diff", seed: int = 0) -> Minimality:
        """What removing each part of a circuit costs: the circuit evaluated without each part in turn.

        ds, circuit, ablation, metric, seed: as in :meth:`evaluate_circuit` (one edge forward per
        part).

        Returns a :class:`~fieldcheck.experiments.circuits.Minimality`: ``without [n_parts,
        batch]``, ``circuit``/``full``/``empty [batch]``, ``cost [n_parts]`` (the share of the
        full model's effect lost without the part). ``fc.assert_minimal(m, min_cost > 0.01)``
        decides it.
        """
        return _circuits.minimality(self, ds, circuit, ablation=ablation, metric=metric, seed=seed)

    def edge_scores(self, ds, method: str = "eap-ig", steps: int = 5, ablation: Union[str, Source] = "corrupt",
                    metric="logit_diff", seed: int = 0) -> EdgeScores:
        """Attribution scores of every edge of the model's edge graph (EAP or EAP-IG), in a few passes.

        ds: a ContrastiveSet. method: "eap-ig" (default: the gradient averaged over ``steps``
        points between the ablation run's and the clean run's embeddings) or "eap" (the gradient
        at the clean run, one pass). steps: integration points of "eap-ig" (default 5). ablation,
        metric, seed: as in :meth:`evaluate_circuit`.

        Returns an :class:`~fieldcheck.experiments.discovery.EdgeScores`: ``scores [n_senders,
        n_receivers]`` (the predicted change of the mean metric when the edge is ablated; 0 where
        there is no edge); ``top(k, level)`` is a Circuit, ``ranking(level)`` the sorted parts.
        """
        return _discovery.edge_scores(self, ds, method=method, steps=steps, ablation=ablation, metric=metric,
                                      seed=seed)

    def discover_circuit(self, ds, k: int, level: str = "edge", method: str = "eap-ig", steps: int = 5,
                         ablation: Union[str, Source] = "corrupt", metric="logit_diff", seed: int = 0) -> Circuit:
        """The circuit of the ``k`` edges (or nodes) with the largest |attribution score|.

        ds: a ContrastiveSet. k: the number of parts. level: "edge" (default) or "node" (a
        node's score sums its outgoing edges'). method, steps, ablation, metric, seed: as in
        :meth:`edge_scores`.

        Returns a :class:`~fieldcheck.experiments.circuit_spec.Circuit` whose ``scores`` hold each
        part's score and ``edge_scores`` the full EdgeScores; evaluate it with
        :meth:`evaluate_circuit`.
        """
        return _discovery.discover_circuit(self, ds, k, level=level, method=method, steps=steps, ablation=ablation,
                                           metric=metric, seed=seed)

    # --- dictionary features ---------------------------------------------------------------------------
    def feature_activations(self, ds, sae, latents="all", which: str = "clean") -> FeatureActivations:
        """The activations of some latents of an SAE or transcoder on every prompt and token of one run.

        ds: a ContrastiveSet. sae: a dictionary from :mod:`fieldcheck.sae` (``fc.sae.load(path)``,
        ``fc.sae.example("smollm2-135m")``). latents: "all" (default), an int or a list of ints.
        which: the run read, "clean" (default) or "corrupt".

        Returns a :class:`~fieldcheck.experiments.features.FeatureActivations`: ``values [batch,
        pos, n_latents]``, the prompts' ``tokens``; ``at(pos)`` ``[batch, n_latents]``, ``max()``,
        ``heatmap(example)``.
        """
        return _features.feature_activations(self, ds, sae, latents=latents, which=which)

    def node_attribution(self, ds, saes, method: str = "gradient", steps: int = 8, ablation: str = "mean",
                         metric="logit_diff") -> NodeScores:
        """Marks et al.'s node scores: the first-order effect of ablating each latent and error term.

        ds: a ContrastiveSet. saes: one dictionary or a list (their latents and error terms are the
        nodes, each over all positions). method: "gradient" (default, one backward pass) or
        "integrated" (``steps`` points between the clean and the corrupted activations; needs
        ``ablation="corrupt"``). steps: integration points (default 8). ablation: the value a node
        is ablated to, "mean" (default: its mean over the examples at each position), "corrupt"
        or "zero". metric: as in :meth:`patch`.

        Returns a :class:`~fieldcheck.experiments.feature_circuits.NodeScores`: ``scores [n_nodes,
        batch]`` on the clean run, ``nodes`` (FeatureSites), ``top(k)``.
        """
        return _feature_circuits.node_attribution(self, ds, saes, method=method, steps=steps, ablation=ablation,
                                                  metric=metric)

    def feature_circuit(self, ds, saes, k: int = 20, method: str = "gradient", steps: int = 8,
                        ablation: str = "mean", metric="logit_diff", edges: bool = True) -> FeatureCircuitResult:
        """The top-``k`` feature circuit (Marks et al.): the nodes with the largest attribution, the rest ablated.

        ds: a ContrastiveSet. saes: one dictionary or a list (from the lowest layer up). k: the
        number of nodes kept (latents and error terms; default 20). method, steps, ablation,
        metric: as in :meth:`node_attribution`. edges: also attribute the edges between the kept
        nodes of consecutive dictionaries (one backward pass per downstream node, at most 16).

        Returns a :class:`~fieldcheck.experiments.feature_circuits.FeatureCircuitResult`:
        ``circuit``/``complement``/``full``/``empty [batch]`` metrics, ``faithfulness`` and
        ``completeness``; ``fc.assert_feature_circuit(c, faithfulness > 0.7)`` decides it.
        """
        return _feature_circuits.feature_circuit(self, ds, saes, k=k, method=method, steps=steps, ablation=ablation,
                                                 metric=metric, edges=edges)

    def evaluate_feature_circuit(self, ds, nodes, saes=None, ablation: str = "mean", metric="logit_diff",
                                 scores: Optional[NodeScores] = None,
                                 edges: Optional[list] = None) -> FeatureCircuitResult:
        """Faithfulness and completeness of a given set of feature nodes, every other node ablated.

        ds: a ContrastiveSet. nodes: FeatureSites over all positions
        (``fieldcheck.sites.features(sae, latents, "all", error=...)`` resolved, or a circuit's
        ``nodes``). saes: the dictionaries whose nodes are ablated (default: the nodes' own).
        ablation, metric: as in :meth:`node_attribution`. scores: a NodeScores to keep with the
        result (for its plot). edges: ``(upstream, downstream, weight)`` triples to keep with it.

        Returns a :class:`~fieldcheck.experiments.feature_circuits.FeatureCircuitResult` (three
        forwards: the circuit, its complement and the empty circuit).
        """
        return _feature_circuits.evaluate_feature_circuit(self, ds, nodes, saes, ablation=ablation, metric=metric,
                                                          scores=scores, edges=edges)

    def selectivity(self, sae, latent: int, on, off, position: Any = "max", threshold: float = 0.0) -> Selectivity:
        """One activation of a latent per prompt on an "on" set and an "off" set of prompts.

        sae: a dictionary. latent: the latent's index. on, off: ContrastiveSets (their clean
        prompts) or lists of texts. position: "max" (default: the largest activation over the
        prompt's tokens after BOS), or a position name / int of the data sets. threshold: the
        activation above which the latent counts as firing (default 0).

        Returns a :class:`~fieldcheck.experiments.feature_views.Selectivity`: ``on [n_on]``,
        ``off [n_off]``, ``rate_on``, ``rate_off``, ``auroc``;
        ``fc.assert_selective(sel, rate_on > 0.8, rate_off < 0.2, auroc > 0.9)`` decides it.
        """
        return _feature_views.selectivity(self, sae, latent, on, off, position=position, threshold=threshold)

    def top_examples(self, sae, latents, texts: Sequence[str], k: int = 10, window: int = 8) -> TopExamples:
        """The strongest activations of some latents over a list of texts, with their context.

        sae: a dictionary. latents: an int, a list of ints or "all". texts: the texts (e.g.
        ``fc.sae.texts("pydoc")[:200]``). k: how many examples per latent (default 10). window:
        tokens of context shown before the token (2 after).

        Returns a :class:`~fieldcheck.experiments.feature_views.TopExamples`: per latent
        ``(activation, text index, position, context)`` rows, the token marked ``[[like this]]``.
        """
        return _feature_views.top_examples(self, sae, latents, texts, k=k, window=window)

    def feature_dla(self, ds, sae, latents="all", which: str = "clean", n_tokens: int = 5) -> FeatureDLA:
        """Direct logit attribution of feature decoder rows at the metric position.

        ds: a ContrastiveSet. sae: a dictionary writing the residual stream (not hook_z). latents:
        "all" (default) or a list. which: "clean" (default) or "corrupt". n_tokens: how many
        promoted and suppressed tokens to list per latent.

        Returns a :class:`~fieldcheck.experiments.feature_views.FeatureDLA`: ``values [n_latents,
        batch]`` (a_i(END) times the decoder row's direct effect on the logit difference, with the
        final norm's scale frozen), ``promoted``/``suppressed`` tokens, ``top(k)``.
        """
        return _feature_views.feature_dla(self, ds, sae, latents=latents, which=which, n_tokens=n_tokens)
