"""A functional view of a model's blocks, for the light-cone patching engine.

The TransformerBridge runs the HuggingFace model with hooks on every activation; that is the
reference, and the slow path. The engine needs to run *part* of a forward: blocks l..L-1 on
positions t..T-1 only, with the keys and values of positions < t taken from a cached run. This
module reads the HF module's weights (no copies) and implements exactly the HF eager forward,
split at the points where sources are inserted:

    resid_pre(l) -> [ln1, q/k/v, attention] -> z(l) [pos, head, d_head] -> o_proj -> attn_out(l)
    resid_mid(l) = resid_pre(l) + attn_out(l) -> [ln2, mlp] -> mlp_out(l)
    resid_pre(l+1) = resid_mid(l) + mlp_out(l)

(with a parallel residual, GPT-NeoX/Pythia, the MLP reads resid_pre(l) instead: ``mlp_in``).

Design: one generic decoder (``DecoderFunctional``) driven by a compact per-family description
(``Family``: where the modules are, the q/k/v and gate/up layouts, q/k norms, post-norms,
parallel residual) plus what each HF module already says about itself (the norm class and its
epsilon, biases present or not, the embedding scale buffer, the attention's ``scaling``,
``sliding_window`` and soft-capping, the HF rotary module for cos/sin so every rope scaling
variant and partial rotary come for free). A new family is one table row (~10 lines), not a
new forward. We did not drive HF's own decoder-layer modules with a key/value cache because the
experiments need to stop and resume *inside* a block (per-head z, q/k/v receivers for path
patching, the MLP alone for mlp_out sources), and because HF's ``nn.LayerNorm``-based modules use
``F.layer_norm``, whose forward-over-forward AD is wrong in torch 2.13 (order-2 predictions use
it); here every norm is written out, and softmax/norms upcast like HF's eager path (float64 stays
float64 for gradient checks). GPT-2 keeps its own small class (learned positions, Conv1D).

Every function is differentiable (autograd and torch.func.jvp), which the response objects use.
Unknown architectures raise ``UnsupportedArchitecture``; callers fall back to the hooked path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from fieldcheck.errors import FieldcheckError
from fieldcheck.models.info import LIGHTCONE_FAMILIES


class UnsupportedArchitecture(FieldcheckError):
    """The functional engine does not know this architecture (the hook path still works)."""


@dataclass
class BlockKV:
    """Keys and values of one block for a set of rows: ``[row, kv_head, pos, d_head]`` each."""

    k: torch.Tensor
    v: torch.Tensor


class FunctionalModel:
    """Base class: the pieces of a decoder-only forward pass as plain functions.

    Shapes: ``x`` residual ``[row, pos, d_model]``; ``q`` ``[row, head, pos, d_head]``;
    ``k``/``v`` ``[row, kv_head, pos, d_head]``; ``z`` ``[row, pos, head, d_head]``.
    """

    family: str = "?"
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_vocab: int
    parallel: bool = False          # the MLP reads resid_pre (GPT-NeoX), not resid_mid
    attn_post_norm: bool = False    # attn_out = norm(o_proj(z)) (Gemma 2/3, OLMo-2): heads do not add up
    logit_softcap: Optional[float] = None
    generic = False                 # the hooked fallback (fieldcheck.field.hooked.HookedFunctional) is True
    dispatch = None                 # a model spread over devices: fieldcheck.field.dispatch.Dispatch

    @property
    def linear_unembed(self) -> bool:
        """Logits are x_normed @ W_U.T (+ b_U), so a logit difference needs two columns only (on a
        model whose unembedding is on another device than its embedding, the logits are computed
        on the unembedding's device: ``logit_of``)."""
        d = self.dispatch
        return self.logit_softcap is None and (d is None or d.final_device == d.embed_device)

    def to_layer(self, l: int, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the device block ``l`` runs on (itself on a model on one device)."""
        return x

    # --- to implement per architecture -------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:  # [row, pos] -> [row, pos, d_model]
        raise NotImplementedError

    def qkv(self, l: int, x: torch.Tensor, pos0: int):
        """Queries, keys, values of block ``l`` for residual ``x`` whose first position is ``pos0``."""
        raise NotImplementedError

    def o_proj(self, l: int, z: torch.Tensor) -> torch.Tensor:  # [row,pos,head,d_head] -> [row,pos,d]
        """attn_out: what block ``l``'s attention adds to the residual stream (after any post-norm)."""
        raise NotImplementedError

    def mlp(self, l: int, x_in: torch.Tensor) -> torch.Tensor:
        """mlp_out from the MLP's input residual (``mlp_in``), norms included."""
        raise NotImplementedError

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    #: the HF unembedding module (``lm_head``); each subclass sets it in ``__init__``
    _lm_head: torch.nn.Module

    @property
    def W_U(self) -> torch.Tensor:  # [d_vocab, d_model]
        return self._lm_head.weight

    @property
    def b_U(self) -> Optional[torch.Tensor]:
        return getattr(self._lm_head, "bias", None)

    def W_O_head(self, l: int, h: int) -> torch.Tensor:
        """``[d_head, d_model]``: the slice of the output projection that head ``h`` writes through
        (before the post-norm where ``attn_post_norm``; use ``head_out_delta`` for residual deltas)."""
        raise NotImplementedError

    def o_bias(self, l: int) -> Optional[torch.Tensor]:
        """``[d_model]``: the output projection's bias of block ``l`` (before any post-norm), or None."""
        return None

    def attn_post(self, l: int, y: torch.Tensor) -> torch.Tensor:
        """attn_out from the output projection's result ``y [..., d_model]`` (the sum of the head
        results and the bias): the post-attention norm where ``attn_post_norm``, else ``y``."""
        return y

    def head_results(self, l: int, z: torch.Tensor) -> torch.Tensor:
        """``[head, row, pos, d_model]``: each head's output ``z_h @ W_O[h]`` for ``z [row, pos, head,
        d_head]``, before any post-norm and without the bias. With ``o_bias`` they add up to the
        output projection's result; ``attn_post`` of that is ``o_proj(l, z)``."""
        W = torch.stack([self.W_O_head(l, h) for h in range(self.n_heads)])   # [head, d_head, d_model]
        return torch.einsum("rthe,hed->hrtd", z, W.to(z.dtype))

    def head_shares(self, l: int, z: torch.Tensor) -> torch.Tensor:
        """``[head, row, pos, d_model]``: each head's additive share of ``attn_out``. Without a
        post-norm these are ``head_results``. With one (an RMSNorm ``g * y / s(y)``, linear in ``y``
        once its scale ``s`` is fixed) each head's result goes through the norm with the scale of the
        whole block's ``y`` frozen: the shares add up (with the bias's share) to ``o_proj(l, z)``
        exactly, and a share is not what removing the head would change (that changes ``s``)."""
        r = self.head_results(l, z)
        if not self.attn_post_norm:
            return r
        b = self.o_bias(l)
        y = r.sum(0) + (b.to(r.dtype) if b is not None else 0)
        return self.attn_post_scaled(l, r, y)

    def attn_post_scaled(self, l: int, parts: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``parts [..., row, pos, d_model]`` through block ``l``'s post-attention norm with the
        scale of ``y [row, pos, d_model]`` frozen (the identity without a post-norm)."""
        return parts

    # --- shared -----------------------------------------------------------------------
    def mlp_in(self, x_pre: torch.Tensor, x_mid: torch.Tensor) -> torch.Tensor:
        """The residual the MLP reads: resid_mid, or resid_pre with a parallel residual."""
        return x_pre if self.parallel else x_mid

    def head_out_delta(self, l: int, z_tgt: torch.Tensor, h: int, z_new: torch.Tensor) -> torch.Tensor:
        """Change of attn_out ``[row, d_model]`` when head ``h`` of ``z_tgt [row, head, d_head]``
        becomes ``z_new [row, d_head]`` (a slice of W_O, or a difference through the post-norm)."""
        if not self.attn_post_norm:
            return (z_new - z_tgt[:, h]) @ self.W_O_head(l, h)
        z2 = z_tgt.clone()
        z2[:, h] = z_new
        return self.o_proj(l, z2[:, None])[:, 0] - self.o_proj(l, z_tgt[:, None])[:, 0]

    def window(self, l: int) -> Optional[int]:
        """Sliding-window length of block ``l`` (keys at q_pos - window < k_pos <= q_pos), or None."""
        return None

    def attn_softcap(self, l: int) -> Optional[float]:
        return None

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos0: int,
               l: Optional[int] = None) -> torch.Tensor:
        """Causal attention of queries at positions ``pos0..`` over keys at ``0..``, in block ``l``.

        q: [row, head, Tq, d_head]; k, v: [row, kv_head, Tk, d_head] with Tk = pos0 + Tq.
        Returns z: [row, Tq, head, d_head]. Matches HF eager attention (softmax in float32).
        ``l`` is needed where blocks differ (sliding windows, soft-capping).
        """
        if l is None and self._per_layer_attention:
            raise UnsupportedArchitecture(
                f"{self.family} blocks attend differently (sliding windows or soft-capping): call "
                "attend(q, k, v, pos0, l) with the block index")
        n_rep = self.n_heads // self.n_kv_heads
        if n_rep > 1:
            k = k.repeat_interleave(n_rep, dim=1)
            v = v.repeat_interleave(n_rep, dim=1)
        Tq, Tk = q.shape[2], k.shape[2]
        scores = torch.matmul(q, k.transpose(2, 3)) * self.attn_scale
        cap = None if l is None else self.attn_softcap(l)
        if cap is not None:
            scores = torch.tanh(scores / cap) * cap
        qpos = torch.arange(pos0, pos0 + Tq, device=q.device)[:, None]
        kpos = torch.arange(Tk, device=q.device)[None, :]
        mask = kpos > qpos
        win = None if l is None else self.window(l)
        if win is not None:
            mask = mask | (kpos <= qpos - win)
        scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
        pattern = torch.softmax(scores, dim=-1, dtype=_upcast(q.dtype)).to(q.dtype)
        z = torch.matmul(pattern, v)  # [row, head, Tq, d_head]
        return z.transpose(1, 2)

    _per_layer_attention = False

    @property
    def attn_scale(self) -> float:
        return 1.0 / math.sqrt(self.d_head)

    def unembed(self, x_normed: torch.Tensor, token_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits from normalized final residual ``[..., d_model]``; only ``token_ids`` columns if given
        (final soft-capping included)."""
        W = self.W_U if token_ids is None else self.W_U[token_ids]
        out = x_normed @ W.T
        if self.b_U is not None:
            out = out + (self.b_U if token_ids is None else self.b_U[token_ids])
        if self.logit_softcap is not None:
            out = torch.tanh(out / self.logit_softcap) * self.logit_softcap
        return out

    def logit_of(self, x_normed: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The logit of token ``ids[r]`` for each row of ``x_normed [rows, d_model]``: ``[rows]``."""
        out = (x_normed * self.W_U[ids]).sum(-1)
        if self.b_U is not None:
            out = out + self.b_U[ids]
        if self.logit_softcap is not None:
            out = torch.tanh(out / self.logit_softcap) * self.logit_softcap
        return out

    def block(self, l: int, x: torch.Tensor, pos0: int = 0, kv_prefix: Optional[BlockKV] = None):
        """One whole block without injections; returns (x_post, x_mid, z, BlockKV of all positions)."""
        q, k, v = self.qkv(l, x, pos0)
        if kv_prefix is not None:
            k = torch.cat([kv_prefix.k, k], dim=2)
            v = torch.cat([kv_prefix.v, v], dim=2)
        z = self.attend(q, k, v, pos0, l)
        x_mid = x + self.o_proj(l, z)
        x_post = x_mid + self.mlp(l, self.mlp_in(x, x_mid))
        return x_post, x_mid, z, BlockKV(k, v)


def _raw(module):
    """The HF module under a TransformerBridge wrapper (or the module itself)."""
    while hasattr(module, "original_component") and module.original_component is not None:
        module = module.original_component
    return module


def _upcast(dtype: torch.dtype) -> torch.dtype:
    """HF computes softmax and norms in float32; keep float64 as float64 (for exact gradient checks)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of ``x [..., d_model]`` with ``weight [d_model]`` and ``eps``, computed in float32 for
    16-bit inputs and returned in the input's dtype (as the HF Llama/Qwen norms)."""
    dtype = x.dtype
    xf = x.to(_upcast(dtype))
    var = xf.pow(2).mean(-1, keepdim=True)
    xf = xf * torch.rsqrt(var + eps)
    return weight * xf.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """The rotary embedding's half rotation of ``x [..., d]``: ``cat(-x[d/2:], x[:d/2])``."""
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class _Norm:
    """One HF norm module as a function: RMSNorm (Llama: cast, then gain; Gemma: ``1 + w`` in float32;
    OLMo-2: gain in float32) or LayerNorm written out (never ``F.layer_norm``: wrong forward-over-forward AD)."""

    def __init__(self, module):
        m = _raw(module)
        self.m = m
        name = type(m).__name__
        self.eps = float(getattr(m, "variance_epsilon", None) or getattr(m, "eps", None) or 1e-5)
        self.layer = isinstance(m, torch.nn.LayerNorm)
        self.offset = name.startswith("Gemma")
        self.gain_in_float = self.offset or name.startswith("Olmo2")
        if not self.layer and self.b is not None:
            raise UnsupportedArchitecture(f"norm {name} with a bias")

    # read at each use, never kept: a dispatched model's offloaded weights exist only while their
    # block runs (fieldcheck.field.dispatch)
    @property
    def w(self) -> torch.Tensor:
        return self.m.weight

    @property
    def b(self) -> Optional[torch.Tensor]:
        return getattr(self.m, "bias", None)

    def frozen(self, parts: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``parts [..., *x.shape]`` (which add up to ``x``) through this RMSNorm with the scale of
        ``x`` frozen: linear in the parts, and they add up to ``self(x)``."""
        if self.layer or self.b is not None:
            raise UnsupportedArchitecture("a frozen-scale split of a LayerNorm post-norm (centering and bias)")
        dtype = x.dtype
        inv = torch.rsqrt(x.to(_upcast(dtype)).pow(2).mean(-1, keepdim=True) + self.eps)
        w = self.w.to(inv.dtype)
        gain = (1.0 + w) if self.offset else w
        out = parts.to(inv.dtype) * inv
        return (out * gain if self.gain_in_float else (out.to(dtype) * self.w)).to(dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer:
            mu = x.mean(-1, keepdim=True)
            xc = x - mu
            var = (xc * xc).mean(-1, keepdim=True)
            out = xc * torch.rsqrt(var + self.eps) * self.w
            return out + self.b if self.b is not None else out
        if not self.gain_in_float:
            return rms_norm(x, self.w, self.eps)
        dtype = x.dtype
        xf = x.to(_upcast(dtype))
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        w = self.w.to(xf.dtype)
        return (xf * (1.0 + w) if self.offset else xf * w).to(dtype)


def _lin(x: torch.Tensor, wb) -> torch.Tensor:
    return F.linear(x, wb[0], wb[1])


class _WB:
    """A module's (weight, bias), read at each use (``wb[0]``, ``wb[1]``, ``w, b = wb``)."""

    __slots__ = ("m",)

    def __init__(self, module):
        self.m = _raw(module)

    def __getitem__(self, i: int):
        return (self.m.weight, getattr(self.m, "bias", None))[i]

    def __iter__(self):
        return iter((self.m.weight, getattr(self.m, "bias", None)))

    def __len__(self) -> int:
        return 2


def _wb(module) -> _WB:
    return _WB(module)


@dataclass(frozen=True)
class Family:
    """Where one HF family keeps its modules and how its block is wired (the rest is read from the
    modules). ``qkv``: "split" (q_proj/k_proj/v_proj), "fused" (one [q; k; v] projection, Phi-3) or
    "per_head" (GPT-NeoX: [head, (q, k, v), d_head]); ``mlp``: "gated" (gate/up/down), "gated_fused"
    (gate_up, Phi-3) or "plain" (in, act, out); ``qk_norm``: None, "head" (over d_head: Qwen3,
    Gemma 3) or "flat" (over all heads: OLMo-2); ``ln1``/``ln2`` None where there is no pre-norm;
    ``post_attn``/``post_mlp`` the post-norms; ``global_window``: config.sliding_window applies to
    every block (Mistral, Phi-3) rather than to the blocks whose attention says so."""

    core: str = "model"
    embed: str = "embed_tokens"
    final_norm: str = "norm"
    lm_head: str = "lm_head"
    attn: str = "self_attn"
    ln1: Optional[str] = "input_layernorm"
    ln2: Optional[str] = "post_attention_layernorm"
    post_attn: Optional[str] = None
    post_mlp: Optional[str] = None
    qkv: str = "split"
    qkv_names: tuple = ("q_proj", "k_proj", "v_proj")
    o: str = "o_proj"
    mlp: str = "gated"
    mlp_names: tuple = ("gate_proj", "up_proj", "down_proj")
    act: str = "act_fn"
    qk_norm: Optional[str] = None
    parallel: bool = False
    global_window: bool = False


_GEMMA2 = dict(ln2="pre_feedforward_layernorm", post_attn="post_attention_layernorm",
               post_mlp="post_feedforward_layernorm")
# family name (fieldcheck.models.info.LIGHTCONE_FAMILIES maps HF classes to these) -> description
FAMILY_SPECS: dict[str, Family] = {
    "llama": Family(),
    "mistral": Family(global_window=True),
    "qwen2": Family(),
    "qwen3": Family(qk_norm="head"),
    "gemma": Family(),
    "gemma2": Family(**_GEMMA2),
    "gemma3": Family(**_GEMMA2, qk_norm="head"),
    "gpt_neox": Family(core="gpt_neox", embed="embed_in", final_norm="final_layer_norm", attn="attention",
                       qkv="per_head", qkv_names=("query_key_value",), o="dense", mlp="plain",
                       mlp_names=("dense_h_to_4h", "dense_4h_to_h"), act="act", parallel=True),
    "phi3": Family(qkv="fused", qkv_names=("qkv_proj",), mlp="gated_fused", mlp_names=("gate_up_proj", "down_proj"),
                   act="activation_fn", global_window=True),
    "olmo2": Family(ln1=None, ln2=None, post_attn="post_attention_layernorm", post_mlp="post_feedforward_layernorm",
                    qk_norm="flat"),
}


class DecoderFunctional(FunctionalModel):
    """A rotary decoder-only HF model (Llama, Mistral, Qwen2/3, Gemma 1/2/3, GPT-NeoX, Phi-3, OLMo-2)
    as functions, from its ``Family`` row. Reads the raw weights through the bridge's wrappers and
    computes with ``F.linear``, so no hook fires: the hooked forward is the reference."""

    def __init__(self, hf_model, family: str, spec: Family):
        self.hf, self.family, self.spec = hf_model, family, spec
        cfg = hf_model.config
        core = _raw(getattr(hf_model, spec.core))
        self.n_layers = cfg.num_hidden_layers
        self.d_model = cfg.hidden_size
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.d_head = getattr(cfg, "head_dim", None) or self.d_model // self.n_heads
        self.d_vocab = cfg.vocab_size
        self.d_mlp = cfg.intermediate_size
        self.parallel = spec.parallel or False
        if family == "gpt_neox" and not getattr(cfg, "use_parallel_residual", True):
            self.parallel = False
        if getattr(cfg, "use_bidirectional_attention", False):
            raise UnsupportedArchitecture(f"{family} with bidirectional attention")
        self.attn_post_norm = spec.post_attn is not None
        self.logit_softcap = getattr(cfg, "final_logit_softcapping", None)
        emb = _raw(getattr(core, spec.embed))
        self._emb = emb
        scale = getattr(emb, "embed_scale", None)
        self._embed_scale = scale if torch.is_tensor(scale) else None
        self._lnf = _Norm(getattr(core, spec.final_norm))
        # the final norm's affine form, as GPT2Functional/the former LlamaFunctional exposed it (DLA reads it):
        # LayerNorm: lnf = (weight, bias); RMSNorm: w_norm (Gemma: the effective 1 + w); both: eps
        self.eps = self._lnf.eps
        self.rotary = _raw(core.rotary_emb)
        import inspect
        self._rotary_by_type = "layer_type" in inspect.signature(self.rotary.forward).parameters
        layer_types = getattr(cfg, "layer_types", None) or ["full_attention"] * self.n_layers
        gw = getattr(cfg, "sliding_window", None) if spec.global_window else None
        self.blocks = []
        for i, layer in enumerate(getattr(core, "layers")):
            layer, get = _raw(layer), (lambda m, n: None if n is None else _raw(getattr(m, n)))
            attn = get(layer, spec.attn)
            mlp = get(layer, "mlp")
            w = dict(n1=None if spec.ln1 is None else _Norm(get(layer, spec.ln1)),
                     n2=None if spec.ln2 is None else _Norm(get(layer, spec.ln2)),
                     post_attn=None if spec.post_attn is None else _Norm(get(layer, spec.post_attn)),
                     post_mlp=None if spec.post_mlp is None else _Norm(get(layer, spec.post_mlp)),
                     qkv=[_wb(get(attn, n)) for n in spec.qkv_names], o=_wb(get(attn, spec.o)),
                     mlp=[_wb(get(mlp, n)) for n in spec.mlp_names], act=get(mlp, spec.act),
                     q_norm=_Norm(attn.q_norm) if spec.qk_norm else None,
                     k_norm=_Norm(attn.k_norm) if spec.qk_norm else None,
                     window=gw if spec.global_window else getattr(attn, "sliding_window", None),
                     softcap=getattr(attn, "attn_logit_softcapping", None),
                     scaling=float(getattr(attn, "scaling", self.d_head ** -0.5)),
                     rope_type=layer_types[i])
            # the plain tensors earlier versions kept (fieldcheck.experiments.edges reads them for Llama)
            if spec.qkv == "split":
                w.update(q=w["qkv"][0][0], k=w["qkv"][1][0], v=w["qkv"][2][0])
            for key, norm in (("1", w["n1"]), ("2", w["n2"])):
                if norm is not None and not norm.layer and not norm.offset:
                    w["ln" + key], w["eps" + key] = norm.w, norm.eps
            self.blocks.append(w)
        if len({b["scaling"] for b in self.blocks}) != 1:
            raise UnsupportedArchitecture(f"{family} with different attention scales per block")
        self._scale = self.blocks[0]["scaling"]
        self._per_layer_attention = any(b["window"] is not None or b["softcap"] is not None for b in self.blocks)
        self._lm_head = _raw(getattr(hf_model, spec.lm_head))
        self._rope_cache: dict = {}
        self.layer_modules = [_raw(x) for x in getattr(core, "layers")]
        self.embed_modules, self.final_modules = [emb], [self._lnf.m, self._lm_head]

    @property
    def W_E(self) -> torch.Tensor:
        return self._emb.weight

    @property
    def lnf(self):
        """LayerNorm final norm: (weight, bias) (an AttributeError for RMSNorm: see ``w_norm``)."""
        if not self._lnf.layer:
            raise AttributeError("lnf: this model's final norm is an RMSNorm (w_norm)")
        return (self._lnf.w, self._lnf.b)

    @property
    def w_norm(self):
        """RMSNorm final norm's effective gain (Gemma: 1 + w); an AttributeError for LayerNorm."""
        if self._lnf.layer:
            raise AttributeError("w_norm: this model's final norm is a LayerNorm (lnf)")
        return (1.0 + self._lnf.w) if self._lnf.offset else self._lnf.w

    @property
    def attn_scale(self):
        return self._scale

    def window(self, l):
        return self.blocks[l]["window"]

    def attn_softcap(self, l):
        return self.blocks[l]["softcap"]

    def embed(self, tokens):
        x = F.embedding(tokens, self.W_E)
        return x if self._embed_scale is None else x * self._embed_scale.to(x.dtype)

    def _cos_sin(self, pos0: int, T: int, like: torch.Tensor):
        """cos, sin ``[1, 1, T, rot]`` of block 0's rope (the one table of single-rope families)."""
        return self._rope(0, pos0, T, like)

    def _rope(self, l: int, pos0: int, T: int, like: torch.Tensor):
        # built from positions, dtype and device alone (never from a tensor inside a torch.func
        # transform, which would cache a wrapped tensor); every block's table at once (Gemma 3's
        # sliding blocks have their own rope base)
        key = (pos0, T, like.dtype, like.device)
        if key not in self._rope_cache:
            position_ids = torch.arange(pos0, pos0 + T, device=like.device)[None, :]
            probe = torch.zeros(1, T, 1, dtype=like.dtype, device=like.device)
            tables = {}
            with torch.no_grad():
                for t in {b["rope_type"] for b in self.blocks}:
                    cos, sin = (self.rotary(probe, position_ids, t) if self._rotary_by_type
                                else self.rotary(probe, position_ids))
                    tables[t] = (cos[:, None].detach(), sin[:, None].detach())  # [1, 1, T, rot]
            self._rope_cache[key] = tables
        return self._rope_cache[key][self.blocks[l]["rope_type"]]

    def qkv(self, l, x, pos0):
        w = self.blocks[l]
        h = x if w["n1"] is None else w["n1"](x)
        R, T, _ = x.shape
        H, K, dh = self.n_heads, self.n_kv_heads, self.d_head
        if self.spec.qkv == "split":
            q, k, v = (_lin(h, wb) for wb in w["qkv"])
        elif self.spec.qkv == "fused":
            q, k, v = _lin(h, w["qkv"][0]).split([H * dh, K * dh, K * dh], dim=-1)
        else:  # per_head: [row, pos, head, 3 * d_head]
            q, k, v = _lin(h, w["qkv"][0]).view(R, T, H, 3 * dh).chunk(3, dim=-1)
        if self.spec.qk_norm == "flat":
            q, k = w["q_norm"](q), w["k_norm"](k)
        q, k, v = q.reshape(R, T, H, dh), k.reshape(R, T, K, dh), v.reshape(R, T, K, dh)
        if self.spec.qk_norm == "head":
            q, k = w["q_norm"](q), w["k_norm"](k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cos, sin = self._rope(l, pos0, T, x)
        rot = cos.shape[-1]
        if rot == dh:
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        else:  # partial rotary (GPT-NeoX, Phi-3): the first ``rot`` dims turn, the rest pass
            q = torch.cat([q[..., :rot] * cos + rotate_half(q[..., :rot]) * sin, q[..., rot:]], dim=-1)
            k = torch.cat([k[..., :rot] * cos + rotate_half(k[..., :rot]) * sin, k[..., rot:]], dim=-1)
        return q, k, v

    def o_proj(self, l, z):
        R, T = z.shape[:2]
        w = self.blocks[l]
        out = _lin(z.reshape(R, T, self.n_heads * self.d_head), w["o"])
        return out if w["post_attn"] is None else w["post_attn"](out)

    def W_O_head(self, l, h):
        W = self.blocks[l]["o"][0]  # [d_model, n_heads*d_head]
        return W[:, h * self.d_head:(h + 1) * self.d_head].T

    def o_bias(self, l):
        return self.blocks[l]["o"][1]

    def attn_post(self, l, y):
        post = self.blocks[l]["post_attn"]
        return y if post is None else post(y)

    def attn_post_scaled(self, l, parts, y):
        post = self.blocks[l]["post_attn"]
        return parts if post is None else post.frozen(parts, y)

    def mlp(self, l, x_in):
        w = self.blocks[l]
        h = x_in if w["n2"] is None else w["n2"](x_in)
        if self.spec.mlp == "gated":
            (g, u, d) = w["mlp"]
            out = _lin(w["act"](_lin(h, g)) * _lin(h, u), d)
        elif self.spec.mlp == "gated_fused":
            gate, up = _lin(h, w["mlp"][0]).chunk(2, dim=-1)
            out = _lin(up * w["act"](gate), w["mlp"][1])
        else:
            out = _lin(w["act"](_lin(h, w["mlp"][0])), w["mlp"][1])
        return out if w["post_mlp"] is None else w["post_mlp"](out)

    def final_norm(self, x):
        return self._lnf(x)


class LlamaFunctional(DecoderFunctional):
    """Llama without biases (SmolLM2, Llama 2/3): the generic decoder under the class name that
    ``fieldcheck.experiments.edges`` recognises for its per-head projection shortcut."""


class GPT2Functional(FunctionalModel):
    """HF ``GPT2LMHeadModel``: LayerNorm, fused qkv (Conv1D weights ``[in, out]``), gelu_new MLP."""

    family = "gpt2"

    def __init__(self, hf_model):
        self.hf = hf_model
        cfg = hf_model.config
        if getattr(cfg, "scale_attn_by_inverse_layer_idx", False) or getattr(cfg, "reorder_and_upcast_attn", False):
            raise UnsupportedArchitecture("GPT-2 variants with scale_attn_by_inverse_layer_idx/reorder_and_upcast_attn")
        act = getattr(cfg, "activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
            raise UnsupportedArchitecture(f"GPT-2 with activation {act!r}")
        self._gelu_approx = "none" if act == "gelu" else "tanh"
        core = _raw(hf_model.transformer)
        self.n_layers = cfg.n_layer
        self.d_model = cfg.n_embd
        self.n_heads = cfg.n_head
        self.n_kv_heads = self.n_heads
        self.d_head = self.d_model // self.n_heads
        self.d_vocab = cfg.vocab_size
        self.d_mlp = getattr(cfg, "n_inner", None) or 4 * self.d_model
        self.eps = cfg.layer_norm_epsilon
        self._scale = 1.0 / math.sqrt(self.d_head) if getattr(cfg, "scale_attn_weights", True) else 1.0
        self._wte, self._wpe = _raw(core.wte), _raw(core.wpe)
        self.lnf = _WB(core.ln_f)
        self.blocks = []
        for block in core.h:
            block = _raw(block)
            attn, mlp = _raw(block.attn), _raw(block.mlp)
            self.blocks.append(dict(ln1=_WB(block.ln_1), ln2=_WB(block.ln_2), qkv=_WB(attn.c_attn),
                                    o=_WB(attn.c_proj), fc=_WB(mlp.c_fc), proj=_WB(mlp.c_proj)))
        self._lm_head = _raw(hf_model.lm_head)
        self.layer_modules = [_raw(b) for b in core.h]
        self.embed_modules, self.final_modules = [self._wte, self._wpe], [_raw(core.ln_f), self._lm_head]

    @property
    def W_E(self) -> torch.Tensor:
        return self._wte.weight

    @property
    def W_pos(self) -> torch.Tensor:
        return self._wpe.weight

    @property
    def attn_scale(self):
        return self._scale

    def embed(self, tokens):
        T = tokens.shape[1]
        return F.embedding(tokens, self.W_E) + self.W_pos[:T][None]

    def _ln(self, x, wb):
        # Written out rather than F.layer_norm: torch's forward-over-forward AD of layer_norm gives
        # wrong second derivatives (seen with torch 2.13), and order-2 predictions use exactly that.
        mu = x.mean(-1, keepdim=True)
        xc = x - mu
        var = (xc * xc).mean(-1, keepdim=True)
        return xc * torch.rsqrt(var + self.eps) * wb[0] + wb[1]

    @staticmethod
    def _conv1d(x, wb):
        return torch.addmm(wb[1], x.reshape(-1, x.shape[-1]), wb[0]).view(*x.shape[:-1], wb[0].shape[1])

    def qkv(self, l, x, pos0):
        w = self.blocks[l]
        h = self._ln(x, w["ln1"])
        R, T, _ = x.shape
        q, k, v = self._conv1d(h, w["qkv"]).split(self.d_model, dim=2)
        shape = (R, T, self.n_heads, self.d_head)
        return (q.view(shape).transpose(1, 2), k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2))

    def o_proj(self, l, z):
        R, T = z.shape[:2]
        return self._conv1d(z.reshape(R, T, self.d_model), self.blocks[l]["o"])

    def W_O_head(self, l, h):
        W = self.blocks[l]["o"][0]  # Conv1D: [in = n_heads*d_head, out = d_model]
        return W[h * self.d_head:(h + 1) * self.d_head, :]

    def o_bias(self, l):
        return self.blocks[l]["o"][1]

    def mlp(self, l, x_mid):
        w = self.blocks[l]
        h = F.gelu(self._conv1d(self._ln(x_mid, w["ln2"]), w["fc"]), approximate=self._gelu_approx)
        return self._conv1d(h, w["proj"])

    def final_norm(self, x):
        return self._ln(x, self.lnf)


def functional_model(bridge) -> FunctionalModel:
    """The functional view of a TransformerBridge's HF model, or raise UnsupportedArchitecture."""
    hf = _raw(getattr(bridge, "original_model", bridge))
    name = type(hf).__name__
    family = LIGHTCONE_FAMILIES.get(name)
    from fieldcheck.field import dispatch

    if family == "gpt2":
        return dispatch.enable(GPT2Functional(hf), hf)
    if family in FAMILY_SPECS:
        fm = DecoderFunctional(hf, family, FAMILY_SPECS[family])
        plain = all(b is None for blk in fm.blocks for b in [wb[1] for wb in blk["qkv"]] + [blk["o"][1]])
        if family == "llama" and plain and not dispatch.is_dispatched(hf):
            fm.__class__ = LlamaFunctional
        return dispatch.enable(fm, hf)
    raise UnsupportedArchitecture(
        f"the light-cone engine does not support {name}; fieldcheck runs it through the TransformerBridge's "
        "hooks instead (slower, same experiments)"
    )
