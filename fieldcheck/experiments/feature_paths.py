"""Dictionary features in displacement transfer and path patching.

**Transfer** (``transfer_features``): the displacement of a feature site between the two runs of
``ds_ab`` is the change of its activation, ``a(b) = f_i(A_b) - f_i(B_b)`` at the site's position
(or at every position, ``positions="all"``). It is added to the target prompts' corrupted run as
a steering source along the decoder row: ``alpha * a * W_dec[i] * s`` at the dictionary's output
hook (``s``: the target's own input-norm factor, 1 for the SAEs fieldcheck trains), the mean of
``a`` over ``ds_ab`` into every target (``pair="mean"``) or example b's own into target b
(``"matched"``). The error node's displacement is the difference of the two runs' error terms (a
vector of the model's space). The result is a :class:`~fieldcheck.experiments.transfer.TransferResult`
as for any other site.

**Path patching** (``path_patch_features``): a feature sender is the additive source that
``patch`` on it inserts (``(f_i(source) - f_i(target)) * W_dec[i] * s`` at its hook and positions,
or the difference of the error terms), sent only into the receivers'
inputs (:func:`fieldcheck.experiments.paths.path_run`): receivers read ``resid + delta``, every
other component reads the target run. A feature on ``resid_pre(l)`` reaches the heads and the MLP
of block l, one on ``attn_out``/``resid_mid``/``hook_z`` of block l its MLP and later blocks, one
on ``mlp_out``/``resid_post`` later blocks. With the receivers ``downstream(senders)`` (every
later head's q/k/v, every later MLP and the final residual) it equals the joint feature patch;
with ``"final"`` it is the senders' direct effect on the logits.
"""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Optional

import torch

from fieldcheck.errors import SiteError, UsageError
from fieldcheck.experiments.features import feature_run, group_delta, resolve_features, run_sources, sae_report
from fieldcheck.experiments.paths import PathResult, run_path_patch
from fieldcheck.experiments.transfer import TransferResult, pair_hash
from fieldcheck.field.metrics import as_metric
from fieldcheck.field.sites import FeatureSite, site_of_hook
from fieldcheck.field.sources import check_alpha
from fieldcheck.jsonable import to_numpy

__all__ = ["transfer_features", "path_patch_features"]


# --- transfer -------------------------------------------------------------------------------------
def _positions(ds, site: FeatureSite, device) -> Optional[torch.Tensor]:
    """``[batch]`` positions of the site in ``ds`` (None for "all")."""
    if site.pos == "all":
        return None
    if isinstance(site.pos, str):
        return ds.position(site.pos).to(device)
    return torch.full((ds.n,), int(site.pos), device=device)


def _amounts(run, site: FeatureSite, pos: Optional[torch.Tensor]) -> torch.Tensor:
    """The displacement per example: ``[batch]`` (a latent at a position), ``[batch, pos]``
    (a latent everywhere), ``[batch, d]`` / ``[batch, pos, d]`` (the error node)."""
    vals = run.err if site.latent is None else {k: v[..., site.latent] for k, v in run.f.items()}
    disp = vals["clean"] - vals["corrupt"]
    if pos is None:
        return disp
    return disp[torch.arange(disp.shape[0], device=disp.device), pos]


def transfer_features(field, ds_ab, site, targets=None, alpha: float = 1.0, metric="logit_diff",
                      pair: str = "mean", confidence: float = 0.95) -> TransferResult:
    """Add the displacement of one feature site between the clean (A) and corrupted (B) runs of
    ``ds_ab`` into the corrupted runs of ``targets`` (default ``ds_ab``), along its decoder row (see
    the module doc). Returns a TransferResult (``shift``, ``flipped``, ``gap_closed [batch]``)."""
    if pair not in ("mean", "matched"):
        raise UsageError(f"pair must be 'mean' (the mean displacement into every target) or 'matched' "
                         f"(example b's displacement into target b), got {pair!r}")
    alpha = check_alpha(alpha)
    targets = ds_ab if targets is None else targets
    sites = resolve_features(field, ds_ab, site)
    if len(sites) != 1:
        raise SiteError(f"transfer takes one feature site, got {len(sites)}; loop over the latents for a sweep")
    s = sites[0]
    d = s.dictionary
    if s.pos == "all" and targets.seq_len != ds_ab.seq_len:
        raise SiteError(f"a feature over all positions moves a whole prompt's displacement: the targets have "
                        f"{targets.seq_len} tokens, ds_ab {ds_ab.seq_len}; name a position (e.g. 'END')")
    if pair == "matched" and targets.n != ds_ab.n:
        raise UsageError(f"pair='matched' needs as many targets as ds_ab examples ({ds_ab.n}), got {targets.n}; "
                         "use pair='mean'")
    dev = field.device
    run_ab = feature_run(field, ds_ab, d)
    disp = _amounts(run_ab, s, _positions(ds_ab, s, dev)).detach()
    amount = disp.mean(0, keepdim=True).expand(targets.n, *disp.shape[1:]) if pair == "mean" else disp
    run_t = feature_run(field, targets, d)
    T = targets.seq_len
    pos_t = _positions(targets, s, dev)
    b = torch.arange(targets.n, device=dev)
    if s.latent is None:                                    # error node: vectors of the model's space
        full = torch.zeros_like(run_t.err["corrupt"])
        if pos_t is None:
            full += amount
        else:
            full[b, pos_t] = amount.to(full.dtype)
        source = alpha * full
        norm = disp.reshape(disp.shape[0], -1).norm(dim=-1)
    else:
        a = torch.zeros(targets.n, T, dtype=d.dtype, device=dev)
        if pos_t is None:
            a += amount
        else:
            a[b, pos_t] = amount.to(a.dtype)
        source = alpha * a[..., None] * d.decoder[s.latent] * run_t.scale["corrupt"]
        row = float(d.decoder[s.latent].norm())
        norm = (disp.reshape(disp.shape[0], -1).norm(dim=-1) * row)
    m = as_metric(metric)
    metrics = [m, as_metric("logit_diff")] if m.name != "logit_diff" else [m]
    t0 = time.perf_counter()
    values, _, cost = run_sources(field, targets, "denoise", 1, lambda i: {d.out_hook: source}, metrics,
                                  progress=False)
    cost["seconds"] = time.perf_counter() - t0
    cost["sae"] = sae_report(field, [run_ab] + ([run_t] if targets is not ds_ab else []))
    clean, corrupt = field.baselines(targets, m)
    ld_clean, ld_corrupt = field.baselines(targets, "logit_diff")
    return TransferResult(
        site=s, alpha=alpha, pair=pair, metric=m.name, before=to_numpy(corrupt).astype(float),
        after=values[m.name][0].numpy(), clean=to_numpy(clean).astype(float),
        ld_before=to_numpy(ld_corrupt).astype(float), ld_after=values["logit_diff"][0].numpy(),
        displacement_norm=to_numpy(norm), dataset=getattr(ds_ab, "name", ""),
        targets=getattr(targets, "name", ""), confidence=confidence, cost=cost,
        dataset_hash=pair_hash(ds_ab, targets, pair))


# --- path patching --------------------------------------------------------------------------------
class _FeatureSender:
    """The summed source of feature sites at one hook, as a residual delta ``[batch, pos, d_model]``."""

    def __init__(self, fm, tgt, hook: str, delta: torch.Tensor, stage: int):
        kind, l = site_of_hook(hook)
        if kind == "attn_head":  # a dictionary on hook_z: through the output projection
            z = tgt.z[l]
            dz = delta.to(z.dtype).reshape(z.shape)
            delta = fm.o_proj(l, z + dz) - fm.o_proj(l, z)
        self.delta = delta
        self.layer = stage // 4
        self.stage = ("pre", "attn", "attn", "mlp")[stage % 4]
        self.site = SimpleNamespace(kind="feature")  # not a component: never held at its target value

    def add_to(self, D: torch.Tensor) -> None:
        D += self.delta.to(D.dtype)


def path_patch_features(field, ds, senders, receivers, direction: str = "denoise", metric="logit_diff",
                        jointly: bool = True) -> PathResult:
    """Path patching with dictionary features (and error nodes) as senders (see the module doc).

    Returns a PathResult with ``values [rows, batch]`` (one row for all senders jointly, or one per
    feature site), both baselines ``[batch]``, ``method="path"`` and ``cost["sae"]``."""
    if direction not in ("denoise", "noise"):
        raise UsageError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    site_list = resolve_features(field, ds, senders)
    runs = {id(d): feature_run(field, ds, d) for d in dict.fromkeys(s.dictionary for s in site_list)}
    deltas = {key: (run.delta_f(direction, "other", 1.0),
                    run.delta_err(direction, "other", 1.0) if any(s.latent is None for s in site_list) else None)
              for key, run in runs.items()}
    stage_of = {s.dictionary.out_hook: s.stage for s in site_list}

    def make_senders(r, group):
        by_hook = group_delta(group, runs, deltas, ds, ds.seq_len, field.device, direction)
        return [_FeatureSender(field.fm, r.target(direction), h, dl, stage_of[h]) for h, dl in by_hook.items()]

    res = run_path_patch(field, ds, site_list, make_senders, receivers, direction, metric, jointly,
                         source="feature:other")
    res.cost["sae"] = sae_report(field, runs.values())
    return res
