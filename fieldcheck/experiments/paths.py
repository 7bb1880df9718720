"""Path patching: patch only the effect that flows from sender components into receiver inputs.

Senders are components at given positions: ``attn_head(l, h, pos)`` (one head's output),
``attn_out(l, pos)`` (all heads of a block), ``mlp_out(l, pos)``; positions are ints, names (resolved
per example) or "all" (one sender per position). A sender's *delta* is its source-run value minus
its target-run value, written into the residual stream at its position (a head through its slice
of W_O; the output bias is shared and cancels).

Receivers read the residual stream at **all** positions:

- ``receiver_heads(layer, heads, inputs="qkv")``: the query/key/value inputs of attention heads
  (any subset of "qkv");
- ``receiver_mlps(layers)``: MLP inputs;
- ``"final"``: the final residual (the logits).

Semantics (the direct edges sender -> receiver of the computational graph, everything else at the
target run): the senders' deltas are added to the inputs of the receivers *only*. One forward of
the target run is recomputed from the earliest sender's block, in which

1. every receiver head's q/k/v (as chosen) is computed from ``resid + sum of upstream sender
   deltas`` and its output z is recomputed with them (other heads use the plain residual);
2. every receiver MLP reads ``resid_mid + sum of upstream sender deltas``;
3. the senders themselves stay frozen at their target-run values at their positions (so what
   reaches non-receivers from a sender is the target value, what reaches receivers is the source
   value);
4. everything else is recomputed normally (so a receiver's change reaches all later components);
5. with ``"final"``: the metric reads ``final residual + sum of sender deltas``.

With receivers = "final" only this is the senders' direct effect on the logits (only senders at
the metric position contribute). With receivers = every component downstream of the senders
(:func:`downstream`: all later heads' q/k/v, all MLPs at and after the senders, and "final") it
equals ordinary joint patching of the senders. With receivers at a single layer it is the
two-step path patching of Wang et al. (2022) without freezing other components' downstream
reactions (step 1's receiver inputs are target inputs + direct sender deltas; step 2 runs the
model from the receivers with their recomputed outputs).

Families with a norm on the attention output (Gemma 2/3, OLMo-2: attn_out = norm(o_proj(z))): the
heads of one block do not add up, so the head senders of a block are sent together as one delta,
computed in the path run itself: the block's output with the senders at their source values minus
its output there (other heads of the block may be receivers that changed). Path patching into
every downstream receiver then equals joint patching exactly, as in the other families.
"""
from __future__ import annotations

import builtins
import numbers
from dataclasses import dataclass, field as dc_field
from typing import Optional, Union

import numpy as np
import torch

from fieldcheck.errors import SiteError, check_choice, check_int
from fieldcheck.field.core import DIRECTIONS, check_dataset
from fieldcheck.field.labels import parse
from fieldcheck.field.metrics import as_metric
from fieldcheck.field.results import PatchResult, dataset_hash_of
from fieldcheck.field.sites import FeatureSite, Site, as_site_set

__all__ = ["path_patch", "receiver_heads", "receiver_mlps", "downstream", "Receivers", "PathResult", "FINAL", "path_run",
           "run_path_patch", "as_receivers"]

FINAL = "final"
_SENDER_KINDS = ("attn_head", "attn_out", "mlp_out")


@dataclass(frozen=True)
class Receivers:
    """A set of receiver inputs: ``heads`` maps (layer, head) -> inputs ("q", "k", "v" subset),
    ``mlps`` a set of layers, ``final`` whether the final residual receives. Unresolved "all" heads or
    layers are kept as specs until :meth:`resolve`. Combine with ``+`` (or pass a list)."""

    head_specs: tuple = ()   # (layers, heads, inputs) with "all" allowed
    mlp_specs: tuple = ()    # layers (or "all")
    final: bool = False

    def __add__(self, other) -> "Receivers":
        o = as_receivers(other)
        return Receivers(self.head_specs + o.head_specs, self.mlp_specs + o.mlp_specs, self.final or o.final)

    __radd__ = __add__

    def resolve(self, n_layers: int, n_heads: int) -> tuple[dict, set, bool]:
        heads: dict[tuple[int, int], set] = {}
        for layers, hs, inputs in self.head_specs:
            for l in _layers(layers, n_layers):
                for h in (range(n_heads) if _is_all(hs) else hs):
                    if not isinstance(h, int) or not -n_heads <= h < n_heads:
                        raise SiteError(f"receiver head {h!r} out of range: the model has heads 0..{n_heads - 1}")
                    heads.setdefault((l, h % n_heads), set()).update(inputs)
        mlps: set[int] = set()
        for layers in self.mlp_specs:
            mlps.update(_layers(layers, n_layers))
        return heads, mlps, self.final

    def describe(self, n_layers: int, n_heads: int) -> str:
        heads, mlps, final = self.resolve(n_layers, n_heads)
        parts = []
        if heads:
            by_in: dict[str, list] = {}
            for (l, h), ins in sorted(heads.items()):
                by_in.setdefault("".join(c for c in "qkv" if c in ins), []).append(f"L{l}.H{h}")
            for ins, hs in by_in.items():
                parts.append(f"{ins} of {len(hs)} heads (" + ", ".join(hs[:6]) + (", ..." if len(hs) > 6 else "") + ")")
        if mlps:
            parts.append("MLPs at layers " + ",".join(str(l) for l in sorted(mlps)))
        if final:
            parts.append("final residual")
        return "; ".join(parts) or "nothing"


def _is_all(x) -> bool:
    return x is builtins.all or (isinstance(x, str) and x == "all")


def _layers(layers, n_layers: int) -> list[int]:
    if _is_all(layers):
        return list(range(n_layers))
    out = []
    for l in ([layers] if isinstance(layers, int) else list(layers)):
        if not isinstance(l, int) or isinstance(l, bool) or not -n_layers <= l < n_layers:
            raise SiteError(f"receiver layer {l!r} out of range: the model has layers 0..{n_layers - 1}")
        out.append(l % n_layers)
    return out


def _int_list(x, what: str):
    """"all", or a list of ints from an int, a list, a tuple or a range; SiteError naming ``what`` else."""
    if _is_all(x):
        return "all"
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return [int(x)]
    if isinstance(x, (list, tuple, range)) and all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                                   for v in x):
        return [int(v) for v in x]
    raise SiteError(f"receiver {what}={x!r}: give an int, a list or range of ints, or 'all'")


def receiver_heads(layer, heads="all", inputs: str = "qkv") -> Receivers:
    """The ``inputs`` ("qkv", "q", "k", "v", or any combination) of attention heads at ``layer``
    (an int, a list/range or "all") and ``heads`` (an int, a list or "all")."""
    ins = set(inputs) if isinstance(inputs, str) else set()
    if not ins or not ins <= set("qkv"):
        raise SiteError(f"receiver inputs {inputs!r}: use 'q', 'k', 'v' or a combination such as 'qkv'")
    hs = _int_list(heads, "heads")
    ls = _int_list(layer, "layer")
    return Receivers(head_specs=((tuple(ls) if isinstance(ls, list) else ls,
                                  tuple(hs) if isinstance(hs, list) else hs, frozenset(ins)),))


def receiver_mlps(layers="all") -> Receivers:
    """The MLP inputs (resid_mid) of blocks ``layers``."""
    ls = _int_list(layers, "layers")
    return Receivers(mlp_specs=(tuple(ls) if isinstance(ls, list) else ls,))


def as_receivers(x) -> Receivers:
    """Receivers from ``"final"`` / ``"logits"``, a label (``"L3.H2.q"``, ``"L3.H2"`` for its q, k and v,
    ``"L3.mlp"``), receiver_heads/receiver_mlps objects, or a list of them."""
    if isinstance(x, Receivers):
        return x
    if isinstance(x, str):
        if x == FINAL:
            return Receivers(final=True)
        lab = parse(x, "receiver")
        if lab.kind == "logits":
            return Receivers(final=True)
        if lab.kind == "head":
            return receiver_heads(lab.layer, lab.head, lab.port or "qkv")
        if lab.kind == "mlp":
            return receiver_mlps(lab.layer)
        raise SiteError(f"unknown receiver {x!r}: receivers are head inputs 'L3.H2.q' (.k, .v; 'L3.H2' for all "
                        "three), MLP inputs 'L3.mlp' and 'logits' (or 'final'), receiver_heads(...), "
                        "receiver_mlps(...) or a list of them")
    if isinstance(x, (list, tuple)):
        out = Receivers()
        for r in x:
            out = out + as_receivers(r)
        return out
    raise SiteError(f"{x!r} is not a receiver: use 'final', fieldcheck.experiments.paths.receiver_heads(layer, heads, "
                    "inputs='qkv'), receiver_mlps(layers) or a list of them")


def downstream(senders, n_layers: int) -> Receivers:
    """Every receiver input downstream of the senders: the q/k/v of all heads at layers after the
    earliest sender, all MLPs at and after it (after it for an MLP sender), and the final residual.
    ``senders`` is a list of resolved Sites (or a SiteSet resolved with n_layers), or dictionary
    feature sites (``fieldcheck.sites.features(sae, ...)``: a feature on ``resid_pre(l)`` reaches
    the heads and the MLP of block l, one on ``attn_out``/``resid_mid`` the MLP of its block)."""
    n_layers = check_int("n_layers", n_layers, low=1, error=SiteError, hint="the model's number of blocks")
    if hasattr(senders, "dictionaries"):  # a FeatureSiteSet: where its dictionaries write
        stages = [FeatureSite(d, None, "all").stage for d in senders.dictionaries]
    else:
        if isinstance(senders, (str, bytes)) or not hasattr(senders, "__iter__"):
            raise SiteError(f"downstream(senders, ...): senders must be Sites (attn_head/attn_out/mlp_out), got "
                            f"{senders!r}")
        sites = list(senders)
        if not sites or not all(isinstance(s, (Site, FeatureSite)) for s in sites):
            raise SiteError(f"downstream(senders, ...): senders must be a non-empty list of resolved Sites "
                            f"(attn_head/attn_out/mlp_out) or feature sites, got {senders!r}")
        stages = [s.stage for s in sites]
    first = min(stages, default=4 * n_layers)
    head_from = (first + 3) // 4      # stage 4l (before block l): block l's heads; later: block l+1's
    mlp_from = (first + 1) // 4       # before or in block l's attention: block l's MLP
    rec = Receivers(final=True)
    if head_from < n_layers:
        rec = rec + receiver_heads(list(range(head_from, n_layers)), "all", "qkv")
    if mlp_from < n_layers:
        rec = rec + receiver_mlps(list(range(mlp_from, n_layers)))
    return rec


@dataclass
class PathResult(PatchResult):
    """A :class:`~fieldcheck.field.results.PatchResult` of a path patch (``method="path"``): ``values`` is the
    metric with the sender -> receiver paths patched (one row for all senders jointly, or one per sender),
    ``receivers`` says which inputs received."""

    receivers: str = ""

    def summary(self) -> str:
        """The PatchResult summary of the path patch, plus the receivers."""
        return super().summary().replace("PatchResult(", "PathResult(", 1) + f"\n  receivers: {self.receivers}"

    __repr__ = summary

    def to_dict(self) -> dict:
        """The PatchResult dict (``values [rows, batch]``, baselines, ...) plus ``receivers``."""
        d = super().to_dict()
        d["receivers"] = self.receivers
        return d


def _resolve_senders(field, ds, senders) -> list[Site]:
    sites = list(dict.fromkeys(as_site_set(senders).resolve(field.n_layers, field.n_heads, ds.seq_len,
                                                            ds.position_names)))
    for s in sites:
        if s.kind not in _SENDER_KINDS:
            raise SiteError(f"sender {s.label} is a {s.kind} site; senders are components: attn_head(l, h, pos), "
                            "attn_out(l, pos) or mlp_out(l, pos)")
    return sites


class _Sender:
    """One sender resolved per example: positions ``[B]``, residual delta ``[B, d]``, target values."""

    def __init__(self, field, r, site: Site, direction: str, heads: Optional[list] = None):
        fm = field.fm
        ds = r.ds
        self.site = site
        tgt, src = r.target(direction), r.source(direction)
        dev = r.metric_pos.device
        self.pos = ds.position(site.pos).to(dev)
        b = torch.arange(ds.n, device=dev)
        l = site.layer
        # heads: several heads of one block at one position, sent together (with a post-norm on the
        # attention output, Gemma 2/3 and OLMo-2, head outputs do not add up, so they cannot be summed)
        self.heads = heads if heads is not None else [site.head]
        if site.kind == "attn_head" and len(self.heads) == 1:
            self.z_tgt = tgt.z[l][b, self.pos, site.head]             # [B, d_head]
            self.z_src = src.z[l][b, self.pos, site.head]
            self.delta = fm.head_out_delta(l, tgt.z[l][b, self.pos], site.head, self.z_src)
        elif site.kind == "attn_head":
            full = tgt.z[l][b, self.pos]                               # [B, heads, d_head]
            self.z_tgt = full[:, self.heads]                           # [B, k, d_head]
            self.z_src = src.z[l][b, self.pos][:, self.heads]
            new = full.clone()
            new[:, self.heads] = self.z_src
            self.delta = fm.o_proj(l, new[:, None])[:, 0] - fm.o_proj(l, full[:, None])[:, 0]
        elif getattr(fm, "generic", False) and site.kind in ("attn_out", "mlp_out"):  # the hooked fallback
            self.z_tgt = tgt.z[l][b, self.pos]
            self.m_tgt = fm.site_value(tgt, site.kind, l, b, self.pos)
            self.delta = fm.site_value(src, site.kind, l, b, self.pos) - self.m_tgt
        elif site.kind == "attn_out":
            self.z_tgt = tgt.z[l][b, self.pos]                         # [B, heads, d_head]
            self.z_src = zs = src.z[l][b, self.pos]
            self.delta = fm.o_proj(l, zs[:, None])[:, 0] - fm.o_proj(l, self.z_tgt[:, None])[:, 0]
        else:  # mlp_out
            mlp_in = lambda c: fm.mlp_in(c.resid[l][b, self.pos], c.mid[l][b, self.pos])[:, None]
            self.m_tgt = fm.mlp(l, mlp_in(tgt))[:, 0]
            self.delta = fm.mlp(l, mlp_in(src))[:, 0] - self.m_tgt

    @property
    def layer(self) -> int:
        return self.site.layer

    @property
    def stage(self) -> str:
        """Where the delta enters the stream in its block: "attn" (after attention) or "mlp"."""
        return "mlp" if self.site.kind == "mlp_out" else "attn"

    def add_to(self, D: torch.Tensor) -> None:
        D[torch.arange(D.shape[0], device=D.device), self.pos] += self.delta.to(D.dtype)


def _senders(field, r, sites: list[Site], direction: str) -> list[_Sender]:
    """One _Sender per site; with a post-norm on attn_out, heads of one block at one position as one."""
    if not getattr(field.fm, "attn_post_norm", False):
        return [_Sender(field, r, s, direction) for s in sites]
    out, groups = [], {}
    for s in sites:
        if s.kind == "attn_head":
            groups.setdefault((s.layer, s.pos), []).append(s)
        else:
            out.append(_Sender(field, r, s, direction))
    for g in groups.values():
        out.append(_Sender(field, r, g[0], direction, heads=[s.head for s in g]))
    return out


def path_run(fm, tgt, senders: list, heads: dict, mlps: set, final: bool) -> torch.Tensor:
    """The final residual ``[B, T, d]`` of the path-patched run of the target run ``tgt`` (a RunCache).

    A sender has ``layer``, ``stage`` ("pre": its delta enters before block ``layer``, "attn": after
    its attention, "mlp": after its MLP), ``site`` (component senders, whose values are held at the
    target run: ``site.kind`` attn_head/attn_out/mlp_out) and ``add_to(D)``, which adds its
    residual delta to ``D [B, T, d]``. ``heads``: (layer, head) -> receiving inputs ("q", "k", "v");
    ``mlps``: receiving MLP layers; ``final``: the final residual receives."""
    L = fm.n_layers
    B, T = tgt.tokens.shape
    if not heads and not mlps:  # only the final residual receives: nothing upstream changes
        x = tgt.resid[L].clone()
        if final:
            D = torch.zeros_like(x)
            for s in senders:
                s.add_to(D)
            x = x + D
        return x
    l0 = min(s.layer for s in senders)
    x = tgt.resid[l0]
    D = torch.zeros_like(x)  # sender deltas visible at the current point of the stream
    bidx = torch.arange(B, device=x.device)
    for l in range(l0, L):
        for s in senders:  # deltas that enter before the block (a feature on resid_pre)
            if s.layer == l and s.stage == "pre":
                s.add_to(D)
        q, k, v = fm.qkv(l, x, 0)
        z = fm.attend(q, k, v, 0, l)
        recv = {h: ins for (ll, h), ins in heads.items() if ll == l}
        if recv and bool((D != 0).any()):
            q2, k2, v2 = fm.qkv(l, x + D, 0)
            combos: dict[frozenset, list[int]] = {}
            for h, ins in recv.items():
                combos.setdefault(frozenset(ins), []).append(h)
            z = z.clone()
            for ins, hs in combos.items():
                zz = fm.attend(q2 if "q" in ins else q, k2 if "k" in ins else k, v2 if "v" in ins else v, 0, l)
                z[:, :, hs] = zz[:, :, hs]
        for s in senders:  # senders stay at their target values
            if s.layer == l and s.site.kind == "attn_head" and len(s.heads) == 1:
                z[bidx, s.pos, s.site.head] = s.z_tgt.to(z.dtype)
            elif s.layer == l and s.site.kind == "attn_head":
                hh = torch.tensor(s.heads, device=z.device)
                z[bidx[:, None], s.pos[:, None], hh[None, :]] = s.z_tgt.to(z.dtype)
            elif s.layer == l and s.site.kind == "attn_out":
                z[bidx, s.pos] = s.z_tgt.to(z.dtype)
        attn = fm.o_proj(l, z)
        x_mid = x + attn
        D_pre = D.clone() if fm.parallel else D  # a parallel MLP reads resid_pre: not this block's senders
        here = [s for s in senders if s.layer == l and s.stage == "attn"]
        heads_here = [s for s in here if s.site.kind in ("attn_head", "attn_out")]
        if heads_here and fm.attn_post_norm:
            # the block's heads do not add up (attn_out = norm(sum)): the senders' delta is the block's
            # output with their source values minus its output here, where other heads may have
            # changed as receivers (exact: path patching into everything downstream = joint patching)
            zs = z.clone()
            for s in heads_here:
                hh = (torch.tensor(s.heads, device=z.device) if s.site.kind == "attn_head"
                      else torch.arange(fm.n_heads, device=z.device))
                zs[bidx[:, None], s.pos[:, None], hh[None, :]] = s.z_src.reshape(B, len(hh), -1).to(z.dtype)
            D = D + (fm.o_proj(l, zs) - attn)
            here = [s for s in here if s not in heads_here]
        for s in here:
            s.add_to(D)
        D_mlp = fm.mlp_in(D_pre, D)
        if l in mlps and bool((D_mlp != 0).any()):
            m = fm.mlp(l, fm.mlp_in(x, x_mid) + D_mlp)
        else:
            m = fm.mlp(l, fm.mlp_in(x, x_mid))
        for s in senders:
            if s.layer == l and s.site.kind == "mlp_out":
                m[bidx, s.pos] = s.m_tgt.to(m.dtype)
        x = x_mid + m
        for s in senders:
            if s.layer == l and s.stage == "mlp":
                s.add_to(D)
    for s in senders:  # a delta entering the final residual (a feature on the last resid_post)
        if s.layer >= L and s.stage == "pre":
            s.add_to(D)
    return x + D if final else x


def path_patch(field, ds, senders, receivers, direction: str = "denoise", metric="logit_diff",
               jointly: bool = True) -> PathResult:
    """Patch the paths from ``senders`` into ``receivers`` only; other paths stay at the target run.

    senders: attn_head / attn_out / mlp_out sites (positions: ints, names or "all").
    receivers: "final", receiver_heads(...), receiver_mlps(...), downstream(...), or a list of them;
    receivers read at all positions.
    direction: "denoise" (senders' clean values into the corrupted run) or "noise".
    jointly: True (default) patches all senders together (one row); False one row per sender.
    Returns a :class:`PathResult` (``values [rows, batch]``, both baselines, ``method="path"``).
    """
    check_choice("direction", direction, DIRECTIONS)
    field.require_functional()
    check_dataset(ds, field.model)
    sites = _resolve_senders(field, ds, senders)
    return run_path_patch(field, ds, sites, lambda r, group: _senders(field, r, group, direction), receivers,
                          direction, metric, jointly)


def run_path_patch(field, ds, sites: list, make_senders, receivers, direction: str, metric, jointly: bool,
                   source: str = "other") -> PathResult:
    """The path-patching loop: one :func:`path_run` of the target run per group of ``sites`` (all
    together, or one each), whose senders ``make_senders(run, group)`` builds (see
    :func:`path_run` for what a sender is); the metric read at the metric position."""
    import time
    t_start = time.perf_counter()
    fm = field.require_functional()
    m = as_metric(metric)
    rec = as_receivers(receivers)
    heads, mlps, final = rec.resolve(field.n_layers, field.n_heads)
    if not (heads or mlps or final):
        raise SiteError("the receiver set is empty: give 'final', receiver_heads(...) or receiver_mlps(...)")
    r = field.run(ds)
    tgt = r.target(direction)
    groups = [sites] if jointly else [[s] for s in sites]
    b = torch.arange(ds.n, device=r.metric_pos.device)
    rows, first = [], field.n_layers
    with torch.no_grad():
        for g in groups:
            snd = make_senders(r, g)
            first = min([first] + [s.layer for s in snd])
            x = path_run(fm, tgt, snd, heads, mlps, final)
            rows.append(field.metric_on(m, r, x[b, r.metric_pos], b))
    clean, corrupt = field.baselines(ds, m)
    cost = {"engine": "path", "forwards": len(groups), "layers_per_forward": field.n_layers - first if (heads or mlps) else 0,
            "seconds": time.perf_counter() - t_start}
    return PathResult(sites=sites, values=torch.stack(rows), baseline_clean=clean, baseline_corrupt=corrupt,
                      direction=direction, metric=m.name, jointly=jointly, alpha=1.0, source=source,
                      dataset=getattr(ds, "name", ""), method="path", cost=cost, dataset_hash=dataset_hash_of(ds),
                      skipped=np.zeros((len(groups), ds.n), dtype=bool),
                      receivers=rec.describe(field.n_layers, field.n_heads))
