"""Reading and writing dictionaries in SAELens's on-disk format.

A folder with ``cfg.json`` and ``sae_weights.safetensors`` (what ``SAE.save_model`` writes and
``SAE.load_from_disk`` reads). The config may be SAELens 6's layout (``architecture``, ``d_in``,
``d_sae``, ``apply_b_dec_to_input``, ``normalize_activations``, ``k`` and
``rescale_acts_by_decoder_norm`` for TopK, ``d_out`` for transcoders, and a ``metadata`` object
with ``model_name``, ``hook_name``, ``hook_name_out``, ``hook_head_index``, ...) or the older flat
one (``hook_name``/``model_name`` at top level, ``activation_fn_str="topk"`` with
``activation_fn_kwargs={"k": ...}``). Weights: ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``, and
``threshold`` (or ``log_threshold``) for JumpReLU, ``W_skip`` for skip transcoders.

``save`` writes SAELens 6's layout; every key of a loaded config that fieldcheck does not use is
written back unchanged, and fieldcheck's own numbers (quality, corpus, training) go under
``metadata.fieldcheck``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

import torch

from fieldcheck.errors import SiteError
from fieldcheck.sae.dictionary import ARCHITECTURES, Dictionary, DictionaryError

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
SAELENS_VERSION = "6.0.0"  # the layout written (SAELens reads it back with SAE.load_from_disk)

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "torch.float32": torch.float32, "torch.float64": torch.float64, "torch.float16": torch.float16,
           "torch.bfloat16": torch.bfloat16}


def _architecture(cfg: dict) -> str:
    arch = cfg.get("architecture")
    if arch is None or arch == "standard":
        fn = str(cfg.get("activation_fn_str") or cfg.get("activation_fn") or "relu")
        return "topk" if fn == "topk" else (arch or "standard")
    return str(arch)


def load(path: Union[str, os.PathLike], device="cpu", dtype: Optional[torch.dtype] = torch.float32,
         name: str = "") -> Dictionary:
    """A :class:`Dictionary` from a SAELens folder. ``dtype`` None keeps the saved dtype.

    Raises DictionaryError for a missing or malformed file, an unknown architecture, or weights
    that do not fit the config (shapes, hook names)."""
    from safetensors.torch import load_file

    folder = Path(path)
    if not (folder / CFG).is_file() or not (folder / WEIGHTS).is_file():
        have = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None
        raise DictionaryError(f"{folder} is not a SAELens SAE folder: it needs {CFG} and {WEIGHTS} "
                              f"({'it has ' + ', '.join(have) if have else 'the folder does not exist'})")
    try:
        cfg = json.loads((folder / CFG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DictionaryError(f"{folder / CFG} is not readable JSON: {e}") from None
    try:
        w = load_file(str(folder / WEIGHTS), device="cpu")
    except Exception as e:  # safetensors raises its own error types
        raise DictionaryError(f"{folder / WEIGHTS} is not a readable safetensors file: {e}") from None
    return from_config(cfg, w, device=device, dtype=dtype, name=name or "")


def from_config(cfg: dict, weights: dict, device="cpu", dtype: Optional[torch.dtype] = torch.float32,
                name: str = "") -> Dictionary:
    """A :class:`Dictionary` from a SAELens config dict and its state dict."""
    meta = dict(cfg.get("metadata") or {})
    arch = _architecture(cfg)
    if arch not in ARCHITECTURES:
        raise DictionaryError(f"architecture {arch!r} is not supported; fieldcheck reads {', '.join(ARCHITECTURES)}")
    hook = meta.get("hook_name") or cfg.get("hook_name")
    if not hook:
        raise DictionaryError("the config names no hook (metadata.hook_name or hook_name)")
    if (meta.get("hook_head_index") if "hook_head_index" in meta else cfg.get("hook_head_index")) is not None:
        raise DictionaryError("SAEs on a single head (hook_head_index) are not supported; use a hook_z SAE over all heads")
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in weights]
    if missing:
        raise DictionaryError(f"the weights lack {', '.join(missing)} (have {', '.join(sorted(weights))})")
    if "log_threshold" in weights and "threshold" not in weights:
        weights = dict(weights, threshold=weights["log_threshold"].exp())
    k = cfg.get("k")
    if k is None and arch == "topk":
        k = (cfg.get("activation_fn_kwargs") or {}).get("k")
    saved = _DTYPES.get(str(cfg.get("dtype", "float32")), torch.float32)
    dt = saved if dtype is None else dtype
    t = {key: (weights[key].to(device=device, dtype=dt) if key in weights else None)
         for key in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip")}
    for key, want in (("d_in", t["W_enc"].shape[0]), ("d_sae", t["W_enc"].shape[1])):
        if key in cfg and int(cfg[key]) != int(want):
            raise DictionaryError(f"the config says {key}={cfg[key]} but W_enc has shape {tuple(t['W_enc'].shape)}")
    fc = dict(meta.get("fieldcheck") or {})
    try:
        d = Dictionary(W_enc=t["W_enc"], b_enc=t["b_enc"], W_dec=t["W_dec"], b_dec=t["b_dec"], architecture=arch,
                       hook_name=str(hook), hook_name_out=meta.get("hook_name_out") or cfg.get("hook_name_out"),
                       threshold=t["threshold"] if "jumprelu" in arch else None, W_skip=t["W_skip"],
                       k=None if k is None else int(k),
                       apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", not arch.endswith("transcoder"))),
                       normalize_activations=str(cfg.get("normalize_activations") or "none"),
                       norm_scaling_factor=cfg.get("norm_scaling_factor", meta.get("norm_scaling_factor")),
                       rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
                       model_name=str(meta.get("model_name") or cfg.get("model_name") or ""),
                       name=name or str(fc.get("name") or ""), cfg=cfg, quality=dict(fc.get("quality") or {}))
    except SiteError as e:
        raise DictionaryError(f"the config's hook is not usable: {e}") from None
    return d


def to_config(d: Dictionary, extra_metadata: Optional[dict] = None) -> dict:
    """The SAELens 6 ``cfg.json`` of ``d`` (keys of a loaded config that fieldcheck does not use are kept)."""
    cfg = {k: v for k, v in d.cfg.items() if k not in ("hook_name", "model_name", "hook_layer", "hook_head_index",
                                                         "activation_fn_str", "activation_fn_kwargs")}
    meta = dict(d.cfg.get("metadata") or {})
    for key in ("hook_name", "model_name", "hook_head_index", "prepend_bos", "context_size", "dataset_path"):
        if key not in meta and key in d.cfg:
            meta[key] = d.cfg[key]
    meta.update(model_name=d.model_name, hook_name=d.hook_name, hook_head_index=None)
    if d.is_transcoder:
        meta["hook_name_out"] = d.hook_name_out
    meta.setdefault("sae_lens_version", SAELENS_VERSION)
    meta.setdefault("sae_lens_training_version", SAELENS_VERSION)
    fc = dict(meta.get("fieldcheck") or {})
    fc.update({"name": d.name, "quality": dict(d.quality)}, **(extra_metadata or {}))
    meta["fieldcheck"] = fc
    cfg.update(architecture=d.architecture, d_in=d.d_in, d_sae=d.d_sae, dtype=str(d.dtype).replace("torch.", ""),
               device="cpu", apply_b_dec_to_input=d.apply_b_dec_to_input,
               normalize_activations=d.normalize_activations,
               reshape_activations="hook_z" if d.reads_z else "none", metadata=meta)
    if d.norm_scaling_factor is not None:
        cfg["norm_scaling_factor"] = d.norm_scaling_factor
    if d.architecture == "topk":
        cfg.update(k=int(d.k), rescale_acts_by_decoder_norm=d.rescale_acts_by_decoder_norm)
    if d.is_transcoder:
        cfg["d_out"] = d.d_out
    return cfg


def save(d: Dictionary, path: Union[str, os.PathLike], extra_metadata: Optional[dict] = None) -> Path:
    """Write ``d`` as a SAELens folder (``cfg.json``, ``sae_weights.safetensors``); returns the folder.
    The files are written to temporary names and renamed, so a reader never sees half a folder."""
    from safetensors.torch import save_file

    if not isinstance(d, Dictionary):
        raise DictionaryError(f"save(sae, path): sae={d!r} is not a dictionary (fieldcheck.sae.load / train)")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {key: getattr(d, key).detach().cpu().contiguous() for key in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if d.threshold is not None:
        tensors["threshold"] = d.threshold.detach().cpu().contiguous()
    if d.W_skip is not None:
        tensors["W_skip"] = d.W_skip.detach().cpu().contiguous()
    tmp_w, tmp_c = folder / (WEIGHTS + ".tmp"), folder / (CFG + ".tmp")
    save_file(tensors, str(tmp_w))
    tmp_c.write_text(json.dumps(to_config(d, extra_metadata), indent=1, default=_json_default))
    os.replace(tmp_w, folder / WEIGHTS)
    os.replace(tmp_c, folder / CFG)
    return folder


def _json_default(x):
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)
