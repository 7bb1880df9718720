"""The reference and generic path: the TransformerBridge's own forward, driven through its hooks.

``patch_hooked``: one hooked TransformerLens forward per site. Slow (a full forward per site) but
independent of the functional engine: it runs the TransformerBridge itself with a forward hook at
the site's hook name. ``HookedFunctional``: the residual stream, forwards from a layer, gradients and
JVPs through the bridge's forward, for the response objects. Together they are the fallback for
families the light-cone engine does not know (``Field(model)`` picks them; ``engine == "hooks"``),
and the reference the engine is tested against.
Every hook counts its calls and checks that it changed the activation where the source is
non-zero; a patch that silently did nothing raises PatchError.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from fieldcheck.errors import PatchError


def _logits_metric(field, m, logits_end: torch.Tensor, ds, ref):
    """Metric from logits at the metric position ``[batch, d_vocab]``."""
    ex = torch.arange(ds.n, device=logits_end.device)
    if m.name == "logit_diff":
        return logits_end[ex, ds.answers.to(logits_end.device)] - logits_end[ex, ds.wrong.to(logits_end.device)]
    if m.fn is not None:
        return m.checked(m.fn(logits_end, ds), logits_end)
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


# --- the generic fallback for families the light-cone engine does not know ---------------------------
class HookedFunctional:
    """Every experiment on any model the TransformerBridge wraps: the generic, slower path.

    Where ``fieldcheck.field.arch`` has no family row, the response objects still need the field
    (phi(l) for every l), forwards from a layer, and gradients/JVPs through them. This class gets them
    from the bridge's own forward, driven through its hook points: the residual at
    ``blocks.{l}.hook_resid_pre`` is *replaced* by the given tensor (so autograd and torch.func see
    the HF model's real computation from there on) and the activations downstream are read at
    ``hook_resid_pre``/``hook_z``/``hook_attn_out``/``hook_mlp_out``/``hook_resid_post``. Every call is
    a whole forward (the blocks before the replaced one run on placeholder tokens and are discarded),
    so it costs up to a forward per call where the light-cone engine runs only the light cone;
    patching goes through :func:`patch_hooked` (one hooked forward per site). The numbers are the
    model's own: a model whose logits ``ln_final`` + ``unembed`` do not reproduce (a soft-cap in the
    HF head, say) is refused with UnsupportedArchitecture rather than given wrong metrics.

    Not available here: the per-head pieces (``qkv``/``attend``/``W_O_head``), so path patching takes
    only attn_out/mlp_out senders into the "final" receiver, and order-2 predictions run one forward
    per block and site.
    """

    generic = True
    parallel = False
    attn_post_norm = False
    logit_softcap = None
    linear_unembed = False

    def __init__(self, bridge):
        self.bridge = bridge
        cfg = bridge.cfg
        self.n_layers, self.d_model, self.n_heads = int(cfg.n_layers), int(cfg.d_model), int(cfg.n_heads)
        self.n_kv_heads = int(getattr(cfg, "n_key_value_heads", None) or self.n_heads)
        self.d_head = int(cfg.d_head)
        self.d_vocab = int(cfg.d_vocab)
        hf = getattr(bridge, "original_model", None)
        self.family = str(getattr(getattr(hf, "config", None), "model_type", None) or type(hf).__name__)
        tok = getattr(bridge, "tokenizer", None)
        special = {getattr(tok, a, None) for a in ("pad_token_id", "bos_token_id", "eos_token_id")}
        self._filler = next(i for i in range(self.d_vocab) if i not in special)
        from fieldcheck.field.arch import UnsupportedArchitecture
        try:
            self._check_head()
        except UnsupportedArchitecture:
            raise
        except (AttributeError, KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise UnsupportedArchitecture(
                f"{self.family}: the bridge does not expose what the generic path needs (blocks.*.hook_resid_pre/"
                f"post, ln_final, unembed): {exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            ) from None

    def _check_head(self) -> None:
        from fieldcheck.field.arch import UnsupportedArchitecture

        p = next(iter(self.bridge.parameters()))
        toks = torch.full((1, 4), self._filler, dtype=torch.long, device=p.device)
        with torch.no_grad():
            logits, cache = self.bridge.run_with_cache(toks, names_filter=lambda n: n == self._post(self.n_layers - 1))
            ours = self.unembed(self.final_norm(cache[self._post(self.n_layers - 1)]))
        if not torch.allclose(ours, logits, rtol=1e-4, atol=1e-4 * float(logits.abs().max())):
            raise UnsupportedArchitecture(
                f"{self.family}: the bridge's ln_final + unembed do not reproduce the model's logits (a soft-cap "
                "or scale in the HF head?), so fieldcheck cannot read metrics from the residual stream of this "
                "model; only Field(model, engine='hooks').patch(...) is available")

    # hook names
    @staticmethod
    def _pre(l):
        return f"blocks.{l}.hook_resid_pre"

    @staticmethod
    def _post(l):
        return f"blocks.{l}.hook_resid_post"

    def _forward(self, l: int, x: torch.Tensor, names: list[str]) -> dict:
        """One bridge forward with phi(l) := ``x [rows, T, d]``; the activations ``names`` (in the graph)."""
        R, T = x.shape[:2]
        toks = torch.full((R, T), self._filler, dtype=torch.long, device=x.device)
        got: dict = {}

        def replace(act, hook=None):
            if act.shape != x.shape:
                from fieldcheck.field.arch import UnsupportedArchitecture
                raise UnsupportedArchitecture(
                    f"{self.family}: the bridge's {self._pre(l)} has shape {tuple(act.shape)}, not the residual "
                    f"stream's {tuple(x.shape)}; the generic path cannot drive this model")
            return x if x.dtype == act.dtype else x.to(act.dtype)

        def keeper(name):
            def keep(act, hook=None):
                got[name] = act
                return act
            return keep

        hooks = [(self._pre(l), replace)] + [(n, keeper(n)) for n in names]
        self.bridge.run_with_hooks(toks, fwd_hooks=hooks)
        missing = [n for n in names if n not in got]
        if missing:
            from fieldcheck.errors import PatchError
            raise PatchError(f"the bridge's hooks {missing[:3]} did not fire; this model cannot run the generic path")
        return got

    def forward_from(self, l: int, x: torch.Tensor, stop: Optional[int] = None) -> list:
        """[phi(l) = x, phi(l+1), ..., phi(stop)] (``stop`` defaults to L), one forward."""
        stop = self.n_layers if stop is None else stop
        names = [self._post(j) for j in range(l, stop)]
        got = self._forward(l, x, names) if names else {}
        return [x] + [got[n] for n in names]

    def block(self, l: int, x: torch.Tensor, pos0: int = 0, kv_prefix=None):
        if pos0 or kv_prefix is not None:
            from fieldcheck.field.arch import UnsupportedArchitecture
            raise UnsupportedArchitecture(f"{self.family}: the generic path runs whole sequences only")
        names = [self._post(l), f"blocks.{l}.hook_attn_out", f"blocks.{l}.attn.hook_z"]
        got = self._forward(l, x, names)
        return got[names[0]], x + got[names[1]], got[names[2]], None

    def forward_collect(self, x0: torch.Tensor) -> dict:
        """Like ``response._forward_collect``: every site activation from the embeddings ``x0``, in the graph.
        resid_mid is not a node of the bridge's graph; its entries are the attn_out tensors (the same
        gradient: resid_mid = resid_pre + attn_out and attn_out feeds nothing else)."""
        L = self.n_layers
        names = ([self._pre(l) for l in range(1, L)] + [self._post(L - 1)]
                 + [f"blocks.{l}.attn.hook_z" for l in range(L)] + [f"blocks.{l}.hook_attn_out" for l in range(L)]
                 + [f"blocks.{l}.hook_mlp_out" for l in range(L)])
        got = self._forward(0, x0, names)
        z = [self._z(got[f"blocks.{l}.attn.hook_z"]) for l in range(L)]
        attn = [got[f"blocks.{l}.hook_attn_out"] for l in range(L)]
        return {"resid": [x0] + [got[self._pre(l)] for l in range(1, L)] + [got[self._post(L - 1)]],
                "z": z, "attn_out": attn, "mid": attn, "mlp_out": [got[f"blocks.{l}.hook_mlp_out"] for l in range(L)]}

    def _z(self, z: torch.Tensor) -> torch.Tensor:
        return z if z.dim() == 4 else z.view(*z.shape[:2], self.n_heads, self.d_head)

    @torch.no_grad()
    def run_cache(self, tokens: torch.Tensor):
        """A RunCache from one hooked forward (no keys/values: the hooked path never needs them)."""
        from fieldcheck.field.engine import RunCache

        L = self.n_layers
        names = set([self._pre(l) for l in range(L)] + [self._post(L - 1)]
                    + [f"blocks.{l}.hook_attn_out" for l in range(L)] + [f"blocks.{l}.attn.hook_z" for l in range(L)])
        _, cache = self.bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
        resid = torch.stack([cache[self._pre(l)] for l in range(L)] + [cache[self._post(L - 1)]])
        mid = torch.stack([cache[self._pre(l)] + cache[f"blocks.{l}.hook_attn_out"] for l in range(L)])
        z = torch.stack([self._z(cache[f"blocks.{l}.attn.hook_z"]) for l in range(L)])
        empty = resid.new_zeros(L, tokens.shape[0], self.n_kv_heads, 0, self.d_head)
        return RunCache(tokens, resid, mid, z, empty, empty)

    # the pieces a cache-based source needs
    def site_value(self, cache, kind: str, l: int, b: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if kind == "attn_out":
            return cache.mid[l][b, pos] - cache.resid[l][b, pos]
        return cache.resid[l + 1][b, pos] - cache.mid[l][b, pos]  # mlp_out

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.bridge.ln_final(x)

    def unembed(self, x_normed: torch.Tensor, token_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.bridge.unembed(x_normed)
        return out if token_ids is None else out[..., token_ids]

    def logit_of(self, x_normed: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.unembed(x_normed).gather(-1, ids[:, None])[:, 0]

    def mlp_in(self, x_pre, x_mid):
        return x_mid

    def __getattr__(self, name):
        if name in ("qkv", "attend", "o_proj", "mlp", "W_O_head", "head_out_delta", "embed", "W_U", "b_U"):
            from fieldcheck.field.arch import UnsupportedArchitecture
            raise UnsupportedArchitecture(
                f"{name} needs the light-cone engine's per-block functions, which {self.family} does not have "
                "(the generic hooked path runs whole forwards only)")
        raise AttributeError(name)
