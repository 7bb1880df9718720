"""The example SAEs of the built-in models: one TopK SAE per model on the residual stream at a
middle layer, trained by fieldcheck on Python's help topics (the ``pydoc`` corpus, always
installed) the first time it is asked for, and cached in ``$FIELDCHECK_HOME/sae``. Each is sized to
train in a few minutes on two CPU cores (docs/features.md has the measured times and quality)."""
from __future__ import annotations

from fieldcheck.errors import ModelNotAvailable

#: model alias -> training settings (fieldcheck.sae.train keywords)
EXAMPLES = {
    "smollm2-135m": dict(hook="blocks.15.hook_resid_pre", d_sae=2304, k=32, n_tokens=40_000, context=128,
                         corpus="pydoc", epochs=4),
    "gemma3-270m": dict(hook="blocks.9.hook_resid_pre", d_sae=2560, k=32, n_tokens=40_000, context=128,
                        corpus="pydoc", epochs=4),
    "qwen2.5-coder-0.5b": dict(hook="blocks.12.hook_resid_pre", d_sae=3584, k=32, n_tokens=16_000, context=128,
                               corpus="pydoc", epochs=6),
}


def example(model, progress: bool = True, field=None):
    """The example SAE of a built-in model: loaded from the cache, or trained once and cached.

    model: its alias (``"smollm2-135m"``, ``"gemma3-270m"``, ``"qwen2.5-coder-0.5b"``) or the
    model loaded by fieldcheck. Pass the alias to get the same SAE whatever model a claim runs on
    (``--fc-baseline-model``: one SAE, applied to both models). progress: progress bars while
    training. field: a Field of the model, whose functional forward training then reuses."""
    from fieldcheck.sae.saelens import CFG, load
    from fieldcheck.sae.training import TrainConfig, cached_out, train

    spec = model if isinstance(model, str) else str((getattr(model, "fieldcheck_info", {}) or {}).get("spec", ""))
    if spec not in EXAMPLES:
        raise ModelNotAvailable(f"there is no example SAE for {spec or 'this model'}; example SAEs exist for "
                                f"{', '.join(EXAMPLES)}. Train one with fieldcheck.sae.train(model, hook) or "
                                "`fieldcheck sae train MODEL --hook ...`")
    kw = dict(EXAMPLES[spec])
    hook = kw.pop("hook")
    folder = cached_out(spec, TrainConfig(hook=hook, **kw))
    if (folder / CFG).is_file():  # the same SAE whatever model it is applied to (gating a candidate)
        return load(folder)
    if isinstance(model, str):
        from fieldcheck.models.loading import load_model
        model = load_model(model)
    return train(model, hook, progress=progress, field=field, **kw)
