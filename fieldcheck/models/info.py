"""What a loaded model is, as a JSON-able dict for reports (``model_info``); shared by the
loaders (``loading``) and the tiny test models (``tiny``), so that neither imports the other's
internals."""
from __future__ import annotations

import json


def describe(model) -> dict:
    """Architecture, shape, dtype and device of a loaded TransformerBridge (no spec/source)."""
    cfg = model.cfg
    arch = getattr(cfg, "architecture", None)
    if arch is None:
        hf = getattr(model, "original_model", None)
        archs = getattr(getattr(hf, "config", None), "architectures", None)
        arch = archs[0] if archs else type(hf).__name__ if hf is not None else type(model).__name__
    try:
        p = next(model.parameters())
        device, dtype = str(p.device), str(p.dtype)
    except StopIteration:  # pragma: no cover
        device, dtype = str(getattr(cfg, "device", "?")), str(getattr(cfg, "dtype", "?"))
    return {
        "architecture": str(arch),
        "n_layers": int(cfg.n_layers),
        "d_model": int(cfg.d_model),
        "n_heads": int(cfg.n_heads),
        "d_vocab": int(getattr(cfg, "d_vocab", 0) or 0),
        "n_ctx": int(getattr(cfg, "n_ctx", 0) or 0),
        "dtype": dtype.removeprefix("torch."),
        "device": device,
        "weights_sha256": None,
    }


def model_info(model) -> dict:
    """A JSON-able description of a loaded model for reports: spec, source (path or hub
    name), architecture, n_layers, d_model, n_heads, d_vocab, n_ctx, dtype, device,
    weights_sha256 (when known) and notes (e.g. Q4_1 dequantization)."""
    info = getattr(model, "fieldcheck_info", None)
    if info is None:
        info = describe(model)
        info.update(spec=getattr(model.cfg, "model_name", "<model>"), source="<unknown>")
    return json.loads(json.dumps(info, default=str))
