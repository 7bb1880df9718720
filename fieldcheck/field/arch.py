"""A functional view of a model's blocks, for the light-cone patching engine.

The TransformerBridge runs the HuggingFace model with hooks on every activation; that is the
reference, and the slow path. The engine needs to run *part* of a forward: blocks l..L-1 on
positions t..T-1 only, with the keys and values of positions < t taken from a cached run. This
module reads the HF module's weights (no copies) and implements exactly the HF eager forward
for the architectures it knows (GPT-2 and Llama), split at the points where sources are inserted:

    resid_pre(l) -> [ln1, q/k/v, attention] -> z(l) [pos, head, d_head] -> o_proj -> attn_out(l)
    resid_mid(l) = resid_pre(l) + attn_out(l) -> [ln2, mlp] -> mlp_out(l)
    resid_pre(l+1) = resid_mid(l) + mlp_out(l)

Every function is differentiable (autograd and torch.func.jvp), which the response objects use.
Unknown architectures raise ``UnsupportedArchitecture``; callers fall back to hook-based patching.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from fieldcheck.errors import FieldcheckError


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

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_vocab: int

    # --- to implement per architecture -------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:  # [row, pos] -> [row, pos, d_model]
        raise NotImplementedError

    def qkv(self, l: int, x: torch.Tensor, pos0: int):
        """Queries, keys, values of block ``l`` for residual ``x`` whose first position is ``pos0``."""
        raise NotImplementedError

    def o_proj(self, l: int, z: torch.Tensor) -> torch.Tensor:  # [row,pos,head,d_head] -> [row,pos,d]
        raise NotImplementedError

    def mlp(self, l: int, x_mid: torch.Tensor) -> torch.Tensor:  # includes ln2
        raise NotImplementedError

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def W_U(self) -> torch.Tensor:  # [d_vocab, d_model]
        raise NotImplementedError

    @property
    def b_U(self) -> Optional[torch.Tensor]:
        return None

    def W_O_head(self, l: int, h: int) -> torch.Tensor:
        """``[d_head, d_model]``: the slice of the output projection that head ``h`` writes through."""
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos0: int) -> torch.Tensor:
        """Causal attention of queries at positions ``pos0..`` over keys at ``0..``.

        q: [row, head, Tq, d_head]; k, v: [row, kv_head, Tk, d_head] with Tk = pos0 + Tq.
        Returns z: [row, Tq, head, d_head]. Matches HF eager attention (softmax in float32).
        """
        n_rep = self.n_heads // self.n_kv_heads
        if n_rep > 1:
            k = k.repeat_interleave(n_rep, dim=1)
            v = v.repeat_interleave(n_rep, dim=1)
        Tq, Tk = q.shape[2], k.shape[2]
        scores = torch.matmul(q, k.transpose(2, 3)) * self.attn_scale
        qpos = torch.arange(pos0, pos0 + Tq, device=q.device)[:, None]
        kpos = torch.arange(Tk, device=q.device)[None, :]
        mask = kpos > qpos
        scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
        pattern = torch.softmax(scores, dim=-1, dtype=_upcast(q.dtype)).to(q.dtype)
        z = torch.matmul(pattern, v)  # [row, head, Tq, d_head]
        return z.transpose(1, 2)

    @property
    def attn_scale(self) -> float:
        return 1.0 / math.sqrt(self.d_head)

    def unembed(self, x_normed: torch.Tensor, token_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits from normalized final residual ``[..., d_model]``; only ``token_ids`` columns if given."""
        W = self.W_U if token_ids is None else self.W_U[token_ids]
        out = x_normed @ W.T
        if self.b_U is not None:
            out = out + (self.b_U if token_ids is None else self.b_U[token_ids])
        return out

    def block(self, l: int, x: torch.Tensor, pos0: int = 0, kv_prefix: Optional[BlockKV] = None):
        """One whole block without injections; returns (x_post, x_mid, z, BlockKV of all positions)."""
        q, k, v = self.qkv(l, x, pos0)
        if kv_prefix is not None:
            k = torch.cat([kv_prefix.k, k], dim=2)
            v = torch.cat([kv_prefix.v, v], dim=2)
        z = self.attend(q, k, v, pos0)
        x_mid = x + self.o_proj(l, z)
        x_post = x_mid + self.mlp(l, x_mid)
        return x_post, x_mid, z, BlockKV(k, v)


def _raw(module):
    """The HF module under a TransformerBridge wrapper (or the module itself)."""
    while hasattr(module, "original_component") and module.original_component is not None:
        module = module.original_component
    return module


def _upcast(dtype: torch.dtype) -> torch.dtype:
    """HF computes softmax and norms in float32; keep float64 as float64 (for exact gradient checks)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    xf = x.to(_upcast(dtype))
    var = xf.pow(2).mean(-1, keepdim=True)
    xf = xf * torch.rsqrt(var + eps)
    return weight * xf.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class LlamaFunctional(FunctionalModel):
    """HF ``LlamaForCausalLM`` (and Mistral): RMSNorm, rotary, grouped-query attention, SiLU-gated MLP.

    Reads the raw weights (through the bridge's wrappers) and computes with ``F.linear``, so no
    hook fires: the hooked forward is the reference, this is the fast path.
    """

    def __init__(self, hf_model):
        self.hf = hf_model
        cfg = hf_model.config
        core = _raw(hf_model.model)
        self.n_layers = cfg.num_hidden_layers
        self.d_model = cfg.hidden_size
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.d_head = getattr(cfg, "head_dim", None) or self.d_model // self.n_heads
        self.d_vocab = cfg.vocab_size
        self.d_mlp = cfg.intermediate_size
        act = getattr(cfg, "hidden_act", "silu")
        if act != "silu" or getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
            raise UnsupportedArchitecture(f"Llama variant with hidden_act={act!r} or biases")
        self.rotary = _raw(core.rotary_emb)
        self.W_E = _raw(core.embed_tokens).weight
        self.eps = _raw(core.norm).variance_epsilon
        self.w_norm = _raw(core.norm).weight
        self.blocks = []
        for layer in core.layers:
            layer = _raw(layer)
            attn, mlp = _raw(layer.self_attn), _raw(layer.mlp)
            self.blocks.append(dict(
                ln1=_raw(layer.input_layernorm).weight, ln2=_raw(layer.post_attention_layernorm).weight,
                eps1=_raw(layer.input_layernorm).variance_epsilon, eps2=_raw(layer.post_attention_layernorm).variance_epsilon,
                q=_raw(attn.q_proj).weight, k=_raw(attn.k_proj).weight, v=_raw(attn.v_proj).weight,
                o=_raw(attn.o_proj).weight, gate=_raw(mlp.gate_proj).weight, up=_raw(mlp.up_proj).weight,
                down=_raw(mlp.down_proj).weight, scaling=attn.scaling))
        self._scale = self.blocks[0]["scaling"]
        self._lm_head = _raw(hf_model.lm_head)
        self._rope_cache: dict = {}

    @property
    def attn_scale(self):
        return self._scale

    def embed(self, tokens):
        return F.embedding(tokens, self.W_E)

    def _cos_sin(self, pos0: int, T: int, like: torch.Tensor):
        # built from positions, dtype and device alone (never from a tensor inside a torch.func
        # transform, which would cache a wrapped tensor)
        key = (pos0, T, like.dtype, like.device)
        if key not in self._rope_cache:
            position_ids = torch.arange(pos0, pos0 + T, device=like.device)[None, :]
            probe = torch.zeros(1, T, 1, dtype=like.dtype, device=like.device)
            with torch.no_grad():
                cos, sin = self.rotary(probe, position_ids)
            self._rope_cache[key] = (cos[:, None].detach(), sin[:, None].detach())  # [1, 1, T, d_head]
        return self._rope_cache[key]

    def qkv(self, l, x, pos0):
        w = self.blocks[l]
        h = _rms_norm(x, w["ln1"], w["eps1"])
        R, T, _ = x.shape
        q = F.linear(h, w["q"]).view(R, T, self.n_heads, self.d_head).transpose(1, 2)
        k = F.linear(h, w["k"]).view(R, T, self.n_kv_heads, self.d_head).transpose(1, 2)
        v = F.linear(h, w["v"]).view(R, T, self.n_kv_heads, self.d_head).transpose(1, 2)
        cos, sin = self._cos_sin(pos0, T, x)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        return q, k, v

    def o_proj(self, l, z):
        R, T = z.shape[:2]
        return F.linear(z.reshape(R, T, self.n_heads * self.d_head), self.blocks[l]["o"])

    def W_O_head(self, l, h):
        W = self.blocks[l]["o"]  # [d_model, n_heads*d_head]
        return W[:, h * self.d_head:(h + 1) * self.d_head].T

    def mlp(self, l, x_mid):
        w = self.blocks[l]
        h = _rms_norm(x_mid, w["ln2"], w["eps2"])
        return F.linear(F.silu(F.linear(h, w["gate"])) * F.linear(h, w["up"]), w["down"])

    def final_norm(self, x):
        return _rms_norm(x, self.w_norm, self.eps)

    @property
    def W_U(self):
        return self._lm_head.weight

    @property
    def b_U(self):
        return self._lm_head.bias


class GPT2Functional(FunctionalModel):
    """HF ``GPT2LMHeadModel``: LayerNorm, fused qkv (Conv1D weights ``[in, out]``), gelu_new MLP."""

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
        self.W_E, self.W_pos = _raw(core.wte).weight, _raw(core.wpe).weight
        lnf = _raw(core.ln_f)
        self.lnf = (lnf.weight, lnf.bias)
        self.blocks = []
        for block in core.h:
            block = _raw(block)
            attn, mlp = _raw(block.attn), _raw(block.mlp)
            ln1, ln2 = _raw(block.ln_1), _raw(block.ln_2)
            c_attn, c_proj = _raw(attn.c_attn), _raw(attn.c_proj)
            c_fc, m_proj = _raw(mlp.c_fc), _raw(mlp.c_proj)
            self.blocks.append(dict(ln1=(ln1.weight, ln1.bias), ln2=(ln2.weight, ln2.bias),
                                    qkv=(c_attn.weight, c_attn.bias), o=(c_proj.weight, c_proj.bias),
                                    fc=(c_fc.weight, c_fc.bias), proj=(m_proj.weight, m_proj.bias)))
        self._lm_head = _raw(hf_model.lm_head)

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

    def mlp(self, l, x_mid):
        w = self.blocks[l]
        h = F.gelu(self._conv1d(self._ln(x_mid, w["ln2"]), w["fc"]), approximate=self._gelu_approx)
        return self._conv1d(h, w["proj"])

    def final_norm(self, x):
        return self._ln(x, self.lnf)

    @property
    def W_U(self):
        return self._lm_head.weight

    @property
    def b_U(self):
        return getattr(self._lm_head, "bias", None)


def functional_model(bridge) -> FunctionalModel:
    """The functional view of a TransformerBridge's HF model, or raise UnsupportedArchitecture."""
    hf = _raw(getattr(bridge, "original_model", bridge))
    name = type(hf).__name__
    if name == "GPT2LMHeadModel":
        return GPT2Functional(hf)
    if name in ("LlamaForCausalLM", "MistralForCausalLM"):
        return LlamaFunctional(hf)
    raise UnsupportedArchitecture(
        f"the light-cone engine does not support {name}; fieldcheck falls back to one hooked forward per site"
    )
