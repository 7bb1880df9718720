"""What a loaded model is, as a JSON-able dict for reports (``model_info``); shared by the
loaders (``loading``) and the tiny test models (``tiny``), so that neither imports the other's
internals."""
from __future__ import annotations

import json

# HF causal-LM classes that the light-cone engine (fieldcheck.field.arch) runs, by family name;
# every other model runs through the TransformerBridge's hooks (the generic, slower path)
LIGHTCONE_FAMILIES = {
    "GPT2LMHeadModel": "gpt2", "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "GemmaForCausalLM": "gemma",
    "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3", "GPTNeoXForCausalLM": "gpt_neox",
    "Phi3ForCausalLM": "phi3", "Olmo2ForCausalLM": "olmo2",
}


def family_and_engine(architecture: str, model_type: str | None = None) -> tuple[str, str]:
    """(family, engine) for an HF class name: engine "lightcone" for the families above, else
    "hooks" (family then the config's ``model_type``, or the class name)."""
    if architecture in LIGHTCONE_FAMILIES:
        return LIGHTCONE_FAMILIES[architecture], "lightcone"
    return str(model_type or architecture), "hooks"


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
    hf = getattr(model, "original_model", None)
    while getattr(hf, "original_component", None) is not None:
        hf = hf.original_component
    cls = type(hf).__name__ if hf is not None else str(arch)
    family, engine = family_and_engine(cls, getattr(getattr(hf, "config", None), "model_type", None))
    return {
        "architecture": str(arch),
        "family": family,
        "engine": engine,
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
    weights_sha256 (when known), notes (e.g. Q4_1 dequantization), family and engine
    ("lightcone" or "hooks": what ``Field(model)`` runs; each result's cost records the engine
    that actually ran)."""
    info = getattr(model, "fieldcheck_info", None)
    if info is None:
        info = describe(model)
        info.update(spec=getattr(model.cfg, "model_name", "<model>"), source="<unknown>")
    return json.loads(json.dumps(info, default=str))
