"""The example SAEs of the built-in models: one TopK SAE per model on the residual stream at a
middle layer, trained by fieldcheck on the ``fortunes`` corpus the first time it is asked for
(minutes on a laptop CPU) and cached in ``$FIELDCHECK_HOME/sae``."""
from __future__ import annotations

from fieldcheck.errors import ModelNotAvailable

#: model alias -> training settings (fieldcheck.sae.train keywords)
EXAMPLES = {
    "smollm2-135m": dict(hook="blocks.15.hook_resid_pre", d_sae=4608, k=32, n_tokens=100_000, context=128,
                         corpus="fortunes", epochs=4),
    "gemma3-270m": dict(hook="blocks.9.hook_resid_pre", d_sae=5120, k=32, n_tokens=100_000, context=128,
                        corpus="fortunes", epochs=4),
    "qwen2.5-coder-0.5b": dict(hook="blocks.12.hook_resid_pre", d_sae=7168, k=32, n_tokens=60_000, context=128,
                               corpus="fortunes", epochs=4),
}


def example(model, progress: bool = True, field=None):
    """The example SAE of a built-in model (``model`` loaded by fieldcheck, or its alias's Field):
    loaded from the cache, or trained once and cached."""
    from fieldcheck.sae.train import train

    spec = str((getattr(model, "fieldcheck_info", {}) or {}).get("spec", ""))
    if spec not in EXAMPLES:
        raise ModelNotAvailable(f"there is no example SAE for {spec or 'this model'}; example SAEs exist for "
                                f"{', '.join(EXAMPLES)}. Train one with fieldcheck.sae.train(model, hook) or "
                                "`fieldcheck sae train MODEL --hook ...`")
    kw = dict(EXAMPLES[spec])
    return train(model, kw.pop("hook"), progress=progress, field=field, **kw)
