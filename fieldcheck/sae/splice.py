"""Where a dictionary meets a model: reading its hook's activations and running forwards with
edits at hook sites (a dictionary spliced in, features ablated).

- :func:`hook_values`: the activation at a hook for every example and position, ``[batch, pos, d]``,
  from a field's cached run (``fieldcheck.field.engine.RunCache``).
- :func:`collect`: activations at hooks for raw token batches (training data).
- :func:`forward_with`: a full differentiable forward from layer ``start`` with ``edits`` (hook
  name -> function of the activation) at any of ``resid_pre``, ``attn.hook_z``, ``hook_attn_out``,
  ``hook_resid_mid``, ``hook_mlp_out``, ``hook_resid_post``; the functional blocks of
  ``fieldcheck.field.arch`` where the family has them, else the TransformerBridge's own forward
  driven through its hooks (where ``hook_resid_mid`` cannot be edited).
- :func:`check_fits`: a clear error when a dictionary does not belong to a model.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from fieldcheck.errors import SiteError
from fieldcheck.field.sites import site_of_hook
from fieldcheck.sae.dictionary import Dictionary, DictionaryError

Edit = Callable[..., torch.Tensor]


def site_width(fm, hook: str) -> int:
    """Size of the activation at ``hook`` in a model (n_heads * d_head for hook_z); SiteError for a hook
    the model does not have (a layer beyond its last)."""
    kind, layer = site_of_hook(hook)
    if layer >= fm.n_layers:
        raise SiteError(f"hook {hook!r} is at layer {layer}, but the model has layers 0..{fm.n_layers - 1}")
    return fm.n_heads * fm.d_head if kind == "attn_head" else fm.d_model


def check_fits(d: Dictionary, fm, model_name: str = "") -> None:
    """DictionaryError unless ``d`` is a Dictionary whose hooks exist in the model and have its sizes."""
    if not isinstance(d, Dictionary):
        raise DictionaryError(f"sae={d!r} is not a dictionary: load one with fieldcheck.sae.load(path), train one "
                              "with fieldcheck.sae.train(model, hook) or take fieldcheck.sae.example(model)")
    for hook, size, what in ((d.hook_name, d.d_in, "d_in"), (d.out_hook, d.d_out, "d_out")):
        kind, layer = site_of_hook(hook)
        if layer >= fm.n_layers:
            raise DictionaryError(f"{d.name} reads {hook}, but the model{' ' + model_name if model_name else ''} has "
                                  f"layers 0..{fm.n_layers - 1}: the dictionary belongs to another model")
        want = site_width(fm, hook)
        if size != want:
            raise DictionaryError(f"{d.name} has {what}={size} at {hook}, but the model{' ' + model_name if model_name else ''} "
                                  f"has activations of size {want} there: the dictionary belongs to another model "
                                  f"(trained on {d.model_name or 'an unknown model'})")
    if d.is_transcoder:
        kin, lin = site_of_hook(d.hook_name)
        kout, lout = site_of_hook(d.out_hook)
        if kin not in ("resid_mid", "mlp_in") or kout != "mlp_out" or lin != lout:
            raise DictionaryError(f"fieldcheck's transcoders read an MLP's input (blocks.{{l}}.hook_resid_mid or "
                                  f"hook_mlp_in) and write its output (blocks.{{l}}.hook_mlp_out) of the same block; "
                                  f"got {d.hook_name} -> {d.out_hook}")


def hook_values(fm, cache, hook: str) -> torch.Tensor:
    """The activation at ``hook`` for every example and position of a cached run, ``[batch, pos, d]``
    (hook_z flattened to ``[batch, pos, n_heads * d_head]``)."""
    kind, l = site_of_hook(hook)
    if kind == "resid_pre":
        return cache.resid[l]
    if kind == "resid_post":
        return cache.resid[l + 1]
    if kind == "resid_mid":
        return cache.mid[l]
    if kind == "attn_out":
        return cache.mid[l] - cache.resid[l]
    if kind == "mlp_out":
        return cache.resid[l + 1] - cache.mid[l]
    if kind == "mlp_in":
        return fm.mlp_in(cache.resid[l], cache.mid[l])
    z = cache.z[l]
    return z.reshape(*z.shape[:2], -1)


@torch.no_grad()
def collect(fm, tokens: torch.Tensor, hooks: list[str]) -> dict[str, torch.Tensor]:
    """Activations ``[batch, pos, d]`` at ``hooks`` for ``tokens [batch, pos]`` (one forward, stopped
    after the last block the hooks need)."""
    if getattr(fm, "generic", False):
        cache = fm.run_cache(tokens)
        return {h: hook_values(fm, cache, h) for h in hooks}
    last = max(site_of_hook(h)[1] for h in hooks)
    out: dict[str, torch.Tensor] = {}
    x = fm.embed(tokens)
    for l in range(last + 1):
        x_pre = x
        x, x_mid, z, _ = fm.block(l, x)
        for h in hooks:
            kind, hl = site_of_hook(h)
            if hl != l:
                continue
            out[h] = {"resid_pre": lambda: x_pre, "resid_post": lambda: x, "resid_mid": lambda: x_mid,
                      "attn_out": lambda: x_mid - x_pre, "mlp_out": lambda: x - x_mid,
                      "mlp_in": lambda: fm.mlp_in(x_pre, x_mid),
                      "attn_head": lambda: z.reshape(*z.shape[:2], -1)}[kind]()
    return out


def forward_with(fm, x: torch.Tensor, edits: dict[str, Edit], start: int = 0, bridge=None) -> torch.Tensor:
    """The final residual ``[batch, pos, d_model]`` of a forward from ``x`` = phi(start) with ``edits``.

    An edit is ``fn(act) -> act`` (``act`` as :func:`hook_values` shapes it); an edit at
    ``hook_mlp_out`` is called ``fn(act, mlp_input)``, the residual the MLP read (transcoders).
    Differentiable (autograd) on the functional path."""
    if getattr(fm, "generic", False):
        return _forward_with_bridge(fm, x, edits, start)
    by_layer: dict[int, dict[str, Edit]] = {}
    for hook, fn in edits.items():
        kind, l = site_of_hook(hook)
        if kind == "resid_post":
            kind, l = "resid_pre", l + 1
        if kind == "mlp_in":
            raise DictionaryError("edit hook_mlp_out (it receives the MLP's input) rather than hook_mlp_in")
        by_layer.setdefault(l, {})[kind] = fn
    for l in range(start, fm.n_layers):
        ed = by_layer.get(l, {})
        if "resid_pre" in ed:
            x = ed["resid_pre"](x)
        if not ({"attn_head", "attn_out", "resid_mid", "mlp_out"} & set(ed)):
            x = fm.block(l, x)[0]
            continue
        q, k, v = fm.qkv(l, x, 0)
        z = fm.attend(q, k, v, 0, l)
        if "attn_head" in ed:
            z = ed["attn_head"](z.reshape(*z.shape[:2], -1)).reshape(z.shape)
        a = fm.o_proj(l, z)
        if "attn_out" in ed:
            a = ed["attn_out"](a)
        x_mid = x + a
        if "resid_mid" in ed:
            x_mid = ed["resid_mid"](x_mid)
        m_in = fm.mlp_in(x, x_mid)
        m = fm.mlp(l, m_in)
        if "mlp_out" in ed:
            m = ed["mlp_out"](m, m_in)
        x = x_mid + m
    if fm.n_layers in by_layer and "resid_pre" in by_layer[fm.n_layers]:
        x = by_layer[fm.n_layers]["resid_pre"](x)
    return x


def _forward_with_bridge(fm, x: torch.Tensor, edits: dict[str, Edit], start: int) -> torch.Tensor:
    """The generic path: the bridge's forward with phi(start) replaced by ``x`` and the edits as hooks."""
    L = fm.n_layers
    inputs: dict[int, torch.Tensor] = {}
    hooks = []
    for hook, fn in edits.items():
        kind, l = site_of_hook(hook)
        if kind == "resid_mid":
            raise DictionaryError(f"{hook}: the TransformerBridge's hook_resid_mid feeds only the second norm, so the "
                                  "generic (hooked) path cannot edit it; use a dictionary at another hook")
        if kind == "mlp_out":
            def keep(act, hook=None, _l=l):
                inputs[_l] = act
                return act
            hooks.append((f"blocks.{l}.hook_resid_mid", keep))

            def edit(act, hook=None, _fn=fn, _l=l):
                return _fn(act, inputs[_l])
        elif kind == "attn_head":
            def edit(act, hook=None, _fn=fn):
                return _fn(act.reshape(*act.shape[:2], -1)).reshape(act.shape)
        else:
            def edit(act, hook=None, _fn=fn):
                return _fn(act)
        hooks.append((hook if kind != "resid_pre" or l < L else f"blocks.{L - 1}.hook_resid_post", edit))
    final: dict[str, torch.Tensor] = {}

    def replace(act, hook=None):
        return x.to(act.dtype)

    def keep_final(act, hook=None):
        final["x"] = act
        return act
    toks = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)  # replaced at phi(start)
    all_hooks = [(f"blocks.{start}.hook_resid_pre", replace)] + hooks + [(f"blocks.{L - 1}.hook_resid_post", keep_final)]
    fm.bridge.run_with_hooks(toks, fwd_hooks=all_hooks)
    return final["x"]


def splice(d: Dictionary, keep_error: bool = True, f_edit: Optional[Callable] = None) -> tuple[str, Edit]:
    """The edit that replaces the activation at ``d``'s output hook by ``d``'s reconstruction
    (+ its error term when ``keep_error``), with ``f_edit(f) -> f`` applied to the feature
    activations ``[batch, pos, d_sae]`` first. Returns ``(hook name, edit)``."""
    def run(x_in, y):
        x_in = d.flatten_input(x_in).to(d.dtype)
        norm = d.norm(x_in)
        f = d.activate(d.pre_activations(x_in, norm))
        rec = d.decode(f, norm, x_in)
        f2 = f if f_edit is None else f_edit(f)
        out = rec if f2 is f else rec + d.delta(f2 - f, norm)
        if keep_error:
            out = out + (y.reshape(out.shape).to(d.dtype) - rec)
        return out.to(y.dtype).reshape(y.shape)

    if d.is_transcoder:
        return d.out_hook, lambda y, m_in: run(m_in, y)
    return d.out_hook, lambda y, *rest: run(y, y)
