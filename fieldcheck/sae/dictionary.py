"""Dictionaries: sparse autoencoders (SAEs) and transcoders as plain tensors, with the forward of
each architecture that SAELens saves.

Shapes (SAELens's convention): ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_out]``,
``b_dec [d_out]`` (``d_out = d_in`` for an SAE), ``threshold [d_sae]`` (JumpReLU), ``W_skip
[d_out, d_in]`` (skip transcoders). Activations ``x`` are ``[..., d_in]``; a ``hook_z`` SAE reads
the attention's z ``[..., n_heads, d_head]`` flattened to ``[..., n_heads * d_head]``.

The forward (what :meth:`Dictionary.encode` and :meth:`Dictionary.decode` compute):

    x_n   = normalize(x)                        "none", "constant_norm_rescale" (x * sqrt(d_in) / |x|),
                                                "layer_norm" ((x - mean) / (std + 1e-5)),
                                                "expected_average_only_in" (x * norm_scaling_factor)
    pre   = (x_n - b_dec * apply_b_dec_to_input) @ W_enc + b_enc
    (rescale_acts_by_decoder_norm: pre *= |W_dec[i]|)
    f     = relu(pre)                           "standard", "transcoder"
          = relu(pre) * (pre > relu(threshold)) "jumprelu", "jumprelu_transcoder"
          = relu(top-k of pre), 0 elsewhere     "topk"
    x_hat = denormalize(f @ W_dec' + b_dec)     (W_dec' = W_dec / |W_dec[i]| under the rescale)
          (+ x @ W_skip.T for skip transcoders)

and the error term ``x - x_hat`` (SAE) or ``y - x_hat`` (transcoder, ``y`` its output site) is
kept when a dictionary is spliced into a model, so that nothing changes when nothing is patched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from fieldcheck.errors import FieldcheckError
from fieldcheck.field.sites import site_of_hook

ARCHITECTURES = ("standard", "jumprelu", "topk", "transcoder", "jumprelu_transcoder", "skip_transcoder")
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm", "expected_average_only_in")
_LN_EPS = 1e-5


class DictionaryError(FieldcheckError, ValueError):
    """A dictionary's config or weights are malformed, or it does not fit a model or an activation."""


@dataclass
class Norm:
    """Per-token normalisation statistics of an input ``[..., 1]`` each: ``x_n = (x - shift) * gain``."""

    gain: torch.Tensor
    shift: Optional[torch.Tensor] = None
    out: Optional[torch.Tensor] = None  # what the reconstruction is multiplied by (default 1 / gain)

    @property
    def out_scale(self) -> torch.Tensor:
        """What a change of the normalised reconstruction is multiplied by in model space."""
        return 1.0 / self.gain if self.out is None else self.out


@dataclass(eq=False)
class Dictionary:
    """An SAE (``hook_name`` in, the same hook out) or a transcoder (``hook_name`` in,
    ``hook_name_out`` out), on the CPU or a device, in float32 or float64.

    ``name`` labels its feature sites (``"L15.resid_pre:F3120@END"``); ``model_name`` is the model
    it was trained on; ``cfg`` keeps every key of the SAELens config (written back on save)."""

    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    architecture: str
    hook_name: str
    hook_name_out: Optional[str] = None
    threshold: Optional[torch.Tensor] = None
    W_skip: Optional[torch.Tensor] = None
    k: Optional[int] = None
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    norm_scaling_factor: Optional[float] = None
    rescale_acts_by_decoder_norm: bool = False
    model_name: str = ""
    name: str = ""
    cfg: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.check()
        if not self.name:
            kind, layer = site_of_hook(self.hook_name)
            tag = {"transcoder": "TC", "jumprelu_transcoder": "TC", "skip_transcoder": "TC"}.get(self.architecture, "")
            self.name = f"L{layer}.{kind}{'.' + tag if tag else ''}"

    # --- shape ------------------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.W_dec.shape[1])

    @property
    def is_transcoder(self) -> bool:
        return self.architecture.endswith("transcoder")

    @property
    def out_hook(self) -> str:
        return self.hook_name_out or self.hook_name

    @property
    def layer(self) -> int:
        return site_of_hook(self.out_hook)[1]

    @property
    def reads_z(self) -> bool:
        return self.hook_name.endswith("attn.hook_z")

    def check(self) -> None:
        """Raise DictionaryError when the weights or the config do not fit together."""
        if self.architecture not in ARCHITECTURES:
            raise DictionaryError(f"architecture {self.architecture!r} is not supported; fieldcheck reads "
                                  f"{', '.join(ARCHITECTURES)}")
        if self.normalize_activations not in NORMALIZATIONS:
            raise DictionaryError(f"normalize_activations={self.normalize_activations!r} is not supported; "
                                  f"use one of {', '.join(NORMALIZATIONS)}")
        site_of_hook(self.hook_name)  # SiteError for an unknown hook
        if self.is_transcoder:
            if not self.hook_name_out:
                raise DictionaryError(f"a {self.architecture} needs hook_name_out (its output hook)")
            site_of_hook(self.hook_name_out)
            if self.apply_b_dec_to_input:
                raise DictionaryError("apply_b_dec_to_input must be false for a transcoder (b_dec has d_out entries)")
        elif self.hook_name_out not in (None, self.hook_name):
            raise DictionaryError(f"an SAE reads and writes one hook, got hook_name={self.hook_name!r} and "
                                  f"hook_name_out={self.hook_name_out!r}")
        if self.W_enc.ndim != 2 or self.W_dec.ndim != 2:
            raise DictionaryError(f"W_enc must be [d_in, d_sae] and W_dec [d_sae, d_out]; got "
                                  f"{tuple(self.W_enc.shape)} and {tuple(self.W_dec.shape)}")
        d_in, d_sae = self.W_enc.shape
        want = {"b_enc": (self.b_enc, (d_sae,)), "W_dec": (self.W_dec, (d_sae, self.W_dec.shape[1])),
                "b_dec": (self.b_dec, (self.W_dec.shape[1],))}
        if self.threshold is not None:
            want["threshold"] = (self.threshold, (d_sae,))
        if self.W_skip is not None:
            want["W_skip"] = (self.W_skip, (self.W_dec.shape[1], d_in))
        for key, (t, shape) in want.items():
            if tuple(t.shape) != tuple(shape):
                raise DictionaryError(f"{key} has shape {tuple(t.shape)}, expected {tuple(shape)} for d_in={d_in}, "
                                      f"d_sae={d_sae}")
        if not self.is_transcoder and self.W_dec.shape[1] != d_in:
            raise DictionaryError(f"an SAE's W_dec must be [d_sae, d_in] = [{d_sae}, {d_in}], got "
                                  f"{tuple(self.W_dec.shape)}")
        if "jumprelu" in self.architecture and self.threshold is None:
            raise DictionaryError(f"a {self.architecture} dictionary needs a threshold [d_sae]")
        if self.architecture == "skip_transcoder" and self.W_skip is None:
            raise DictionaryError("a skip_transcoder needs W_skip [d_out, d_in]")
        if self.architecture == "topk":
            if not isinstance(self.k, int) or isinstance(self.k, bool) or not 1 <= self.k <= d_sae:
                raise DictionaryError(f"a topk SAE needs k in 1..{d_sae}, got {self.k!r}")
        if self.normalize_activations == "expected_average_only_in" and self.norm_scaling_factor is not None:
            if not (math.isfinite(self.norm_scaling_factor) and self.norm_scaling_factor > 0):
                raise DictionaryError(f"norm_scaling_factor must be a positive number, got {self.norm_scaling_factor!r}")
        for key in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip"):
            t = getattr(self, key)
            if t is not None and not torch.isfinite(t).all():
                raise DictionaryError(f"{key} contains NaN or inf")

    def to(self, device=None, dtype=None) -> "Dictionary":
        """Move the weights (in place); returns self."""
        for key in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip"):
            t = getattr(self, key)
            if t is not None:
                setattr(self, key, t.to(device=device, dtype=dtype))
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    # --- forward ---------------------------------------------------------------------------
    def flatten_input(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., n_heads, d_head]`` -> ``[..., d_in]`` for a hook_z SAE; others unchanged."""
        if self.reads_z and x.shape[-1] != self.d_in and x.ndim >= 2:
            x = x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])
        if x.shape[-1] != self.d_in:
            raise DictionaryError(f"{self.name} reads activations of size {self.d_in} at {self.hook_name}, got "
                                  f"shape {tuple(x.shape)}: the dictionary does not belong to this model or hook")
        return x

    def norm(self, x: torch.Tensor) -> Norm:
        """The input normalisation of ``x [..., d_in]``."""
        one = torch.ones_like(x[..., :1])
        how = self.normalize_activations
        if how == "constant_norm_rescale":
            return Norm(math.sqrt(self.d_in) / x.norm(dim=-1, keepdim=True))
        if how == "layer_norm":
            mu = x.mean(-1, keepdim=True)
            std = (x - mu).std(-1, keepdim=True)
            return Norm(1.0 / (std + _LN_EPS), mu, std)
        if how == "expected_average_only_in" and self.norm_scaling_factor is not None:
            return Norm(one * self.norm_scaling_factor)
        return Norm(one)

    def pre_activations(self, x: torch.Tensor, norm: Optional[Norm] = None) -> torch.Tensor:
        """``[..., d_sae]`` before the activation function."""
        x = self.flatten_input(x).to(self.dtype)
        norm = self.norm(x) if norm is None else norm
        xn = (x - norm.shift) * norm.gain if norm.shift is not None else x * norm.gain
        if self.apply_b_dec_to_input:
            xn = xn - self.b_dec
        pre = xn @ self.W_enc + self.b_enc
        if self.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        return pre

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The activation function of the architecture on pre-activations ``[..., d_sae]``."""
        if self.architecture == "topk":
            vals, idx = torch.topk(pre, self.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        f = pre.relu()
        if "jumprelu" in self.architecture:
            thr = self.threshold.relu() if self.architecture == "jumprelu" else self.threshold
            f = f * (pre > thr).to(f.dtype)
        return f

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` of activations ``x [..., d_in]``."""
        return self.activate(self.pre_activations(x))

    @property
    def decoder(self) -> torch.Tensor:
        """The decoder rows as they act on activations, ``[d_sae, d_out]`` (in normalised space)."""
        if self.rescale_acts_by_decoder_norm:
            return self.W_dec / self.W_dec.norm(dim=-1, keepdim=True)
        return self.W_dec

    def decode(self, f: torch.Tensor, norm: Optional[Norm] = None, x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Reconstruction ``[..., d_out]`` in model space from ``f [..., d_sae]``; ``norm`` (or the input
        ``x`` it came from) undoes a per-token normalisation; ``x`` also feeds a skip connection."""
        if norm is None:
            norm = self.norm(self.flatten_input(x).to(self.dtype)) if x is not None else Norm(torch.ones_like(f[..., :1]))
        out = f.to(self.dtype) @ self.decoder + self.b_dec
        if not self.is_transcoder:
            out = out * norm.out_scale + (norm.shift if norm.shift is not None else 0.0)
        if self.W_skip is not None:
            if x is None:
                raise DictionaryError("a skip transcoder's reconstruction needs its input x")
            out = out + self.flatten_input(x).to(self.dtype) @ self.W_skip.T
        return out

    def delta(self, df: torch.Tensor, norm: Optional[Norm] = None) -> torch.Tensor:
        """The change ``[..., d_out]`` in model space of a change ``df [..., d_sae]`` of the activations
        (linear: the decoder rows, scaled back by the input's normalisation for an SAE)."""
        out = df.to(self.dtype) @ self.decoder
        if norm is not None and not self.is_transcoder:
            out = out * norm.out_scale
        return out

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)) in model space, ``[..., d_out]``."""
        x = self.flatten_input(x).to(self.dtype)
        norm = self.norm(x)
        return self.decode(self.activate(self.pre_activations(x, norm)), norm, x)

    def error(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """What the reconstruction misses: ``x - reconstruct(x)`` (SAE) or ``y - reconstruct(x)`` (transcoder)."""
        if self.is_transcoder and y is None:
            raise DictionaryError(f"{self.name} is a transcoder: its error needs the output activation y at "
                                  f"{self.hook_name_out}")
        target = self.flatten_input(x) if y is None else y
        return target.to(self.dtype) - self.reconstruct(x)

    def __repr__(self) -> str:
        how = f", k={self.k}" if self.k else ""
        out = f" -> {self.hook_name_out}" if self.is_transcoder else ""
        q = self.quality
        qual = (f"; explained variance {q['explained_variance']:.3f}, L0 {q['l0']:.1f}, dead {q['dead_fraction']:.1%}"
                if {"explained_variance", "l0", "dead_fraction"} <= set(q) else "")
        return (f"Dictionary({self.name}: {self.architecture}{how}, {self.hook_name}{out}, d_in={self.d_in}, "
                f"d_sae={self.d_sae}, trained on {self.model_name or '?'}{qual})")

    def summary(self) -> str:
        return repr(self)

    def to_dict(self) -> dict:
        return {"name": self.name, "architecture": self.architecture, "hook_name": self.hook_name,
                "hook_name_out": self.hook_name_out, "d_in": self.d_in, "d_sae": self.d_sae, "d_out": self.d_out,
                "k": self.k, "normalize_activations": self.normalize_activations, "model_name": self.model_name,
                "quality": dict(self.quality)}
