"""The reference patching path: one hooked TransformerLens forward per site.

Slow (a full forward per site) but independent of the functional engine: it runs the
TransformerBridge itself with a forward hook at the site's hook name. It is the fallback for
architectures the light-cone engine does not know, and the reference the engine is tested against.
Every hook counts its calls and checks that it changed the activation where the source is
non-zero; a patch that silently did nothing raises PatchError.
"""
from __future__ import annotations

import numpy as np
import torch

from fieldcheck.errors import PatchError


def _logits_metric(field, m, logits_end: torch.Tensor, ds, ref):
    """Metric from logits at the metric position ``[batch, d_vocab]``."""
    ex = torch.arange(ds.n, device=logits_end.device)
    if m.name == "logit_diff":
        return logits_end[ex, ds.answers.to(logits_end.device)] - logits_end[ex, ds.wrong.to(logits_end.device)]
    if m.fn is not None:
        return torch.as_tensor(m.fn(logits_end, ds), dtype=logits_end.dtype)
    lp = torch.log_softmax(logits_end.float(), -1)
    a = ds.answers.to(lp.device)
    if m.name == "logprob":
        return lp[ex, a]
    if m.name == "prob":
        return lp[ex, a].exp()
    if m.name == "kl":
        return (ref.exp() * (ref - lp)).sum(-1)
    raise PatchError(f"metric {m.name} not supported by the hooked path")


@torch.no_grad()
def patch_hooked(field, ds, site_list, direction, src, alpha, jointly, metrics):
    model = field.model
    dev = field.device
    from fieldcheck.errors import SiteError
    bad = [s.label for s in site_list if s.kind == "resid_mid"]
    if bad:
        raise SiteError(f"the hooked path cannot patch resid_mid sites ({bad[0]}): the TransformerBridge's "
                        "hook_resid_mid feeds only the second norm, not the residual skip connection; "
                        "use the light-cone engine (engine='lightcone')")
    B = ds.n
    metric_pos = ds.positions["END"].to(dev)
    clean_tok, corrupt_tok = ds.clean_tokens.to(dev), ds.corrupt_tokens.to(dev)
    names = sorted({s.hook_name for s in site_list})
    caches = {}
    logits = {}
    for which, toks in (("clean", clean_tok), ("corrupt", corrupt_tok)):
        lg, cache = model.run_with_cache(toks, names_filter=lambda n: n in names)
        caches[which] = cache
        logits[which] = lg[torch.arange(B, device=dev), metric_pos]
    ref = torch.log_softmax(logits["clean"].float(), -1)
    base = {m.name: (_logits_metric(field, m, logits["clean"], ds, ref), _logits_metric(field, m, logits["corrupt"], ds, ref))
            for m in metrics}
    tgt_name = "corrupt" if direction == "denoise" else "clean"
    src_name = "clean" if direction == "denoise" else "corrupt"
    target_tokens = corrupt_tok if direction == "denoise" else clean_tok

    def make_hook(site, state):
        pos = ds.position(site.pos).to(dev) if isinstance(site.pos, str) else torch.full((B,), int(site.pos), device=dev)
        b = torch.arange(B, device=dev)

        def hook(act, hook=None):
            state["calls"] += 1
            idx = (b, pos, site.head) if site.head is not None else (b, pos)
            cur = act[idx].clone()
            if src.kind == "other":
                new = cur + alpha * (caches[src_name][site.hook_name][idx] - cur)
            elif src.kind == "zero":
                new = cur * (1 - alpha)
            elif src.kind == "mean":
                new = cur + alpha * (caches[tgt_name][site.hook_name][idx].mean(0, keepdim=True) - cur)
            elif src.kind == "gaussian":
                from fieldcheck.field.sources import noise_for
                new = cur + alpha * noise_for(src, site.label, cur.shape, cur.dtype, cur.device)
            else:
                new = cur + alpha * src.vector.to(cur.device, cur.dtype).expand_as(cur)
            act = act.clone()
            act[idx] = new
            state["changed"] = state["changed"] or bool((act[idx] != cur).any()) or bool((new == cur).all())
            return act

        return hook

    n_out = 1 if jointly else len(site_list)
    groups = [site_list] if jointly else [[s] for s in site_list]
    values = {m.name: torch.zeros(n_out, B) for m in metrics}
    for i, group in enumerate(groups):
        states = [{"calls": 0, "changed": False} for _ in group]
        hooks = [(s.hook_name, make_hook(s, st)) for s, st in zip(group, states)]
        lg = model.run_with_hooks(target_tokens, fwd_hooks=hooks)
        for s, st in zip(group, states):
            if st["calls"] != 1:
                raise PatchError(f"the hook for {s.label} ({s.hook_name}) fired {st['calls']} times instead of once")
            if not st["changed"]:
                raise PatchError(f"patching {s.label} did not change the activation although its source is non-zero")
        end = lg[torch.arange(B, device=dev), metric_pos]
        for m in metrics:
            values[m.name][i] = _logits_metric(field, m, end, ds, ref).float().cpu()
    skipped = np.zeros((n_out, B), dtype=bool)
    cost = {"engine": "hooks", "forwards": len(groups) + 2}
    return values, skipped, base, cost
