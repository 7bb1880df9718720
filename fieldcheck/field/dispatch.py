"""A model spread over several devices by accelerate (``load_model(spec, device_map=...)``): the
functional model runs each block on that block's device and moves the activations along, as
the model's own forward does, and materializes a block's offloaded weights (``"cpu"``/``"disk"``
entries of the device map) for the time the block runs, through accelerate's own hooks
(``accelerate.utils.align_module_device``).

:func:`enable` patches one functional model instance: ``qkv``, ``o_proj``, ``mlp`` and
``W_O_head`` of block ``l`` run on its execution device with its weights present (``o_bias`` returns
a copy read while they are); ``embed`` on
the embedding's device; ``final_norm``, ``unembed`` and ``logit_of`` on the unembedding's.
Inputs move to the block's device; outputs come back on the input's device, so that a caller
that keeps its tensors on one (home) device works unchanged, and a caller that moves its
activations along (the light-cone engine: ``to_layer``) never copies them back and forth.
On a model on one device nothing is patched: no cost.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Optional

import torch

from fieldcheck.errors import DeviceError


def is_dispatched(hf) -> bool:
    """Whether accelerate spread ``hf`` over more than one device (or offloaded part of it)."""
    dm = getattr(hf, "hf_device_map", None)
    return bool(dm) and len({str(v) for v in dm.values()}) > 1


def _offloaded(module) -> list:
    """The modules under ``module`` whose own parameters accelerate offloaded (meta until used)."""
    try:
        from accelerate.utils import has_offloaded_params
    except ImportError:  # pragma: no cover - accelerate is installed with transformers' device_map
        return []
    return [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))
            and has_offloaded_params(m)]


def _execution_device(module) -> Optional[torch.device]:
    hook = getattr(module, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return None


class Dispatch:
    """Where each block of a dispatched model runs, and its offloaded modules."""

    def __init__(self, fm):
        self.layer_device = [_execution_device(m) for m in fm.layer_modules]
        self.layer_offloaded = [_offloaded(m) for m in fm.layer_modules]
        self.embed_device = _execution_device(fm.embed_modules[0])
        self.final_device = _execution_device(fm.final_modules[-1])
        bad = [type(m).__name__ for part in (fm.embed_modules, fm.final_modules) for mod in part
               for m in _offloaded(mod)]
        if bad:
            raise DeviceError(
                f"the embedding, final norm and unembedding must stay on a device, but {', '.join(bad)} "
                f"are offloaded (device_map 'cpu'/'disk' entries): offload transformer blocks only, "
                f"e.g. device_map={{'model.embed_tokens': 0, 'model.layers.0': 0, ..., 'model.layers.20': "
                f"'disk', 'model.norm': 0, 'lm_head': 0}}")
        self.offloaded_blocks = [l for l, o in enumerate(self.layer_offloaded) if o]

    @contextlib.contextmanager
    def weights(self, l: int):
        """Block ``l``'s offloaded weights present on its execution device inside the block: what
        ``accelerate.utils.align_module_device`` does (the hook's ``pre_forward``, then its
        ``post_forward``), with the loading itself outside any ``torch.func`` transform (a JVP of
        the block must see the weights as constants, and accelerate's loader cannot run on
        functorch's wrapped tensors)."""
        mods = self.layer_offloaded[l]
        if not mods:
            yield
            return
        with _plain():
            for m in mods:
                m._hf_hook.pre_forward(m)
        try:
            yield
        finally:
            with _plain():
                for m in mods:
                    m._hf_hook.post_forward(m, None)

    def describe(self) -> dict:
        return {"blocks": [str(d) for d in self.layer_device], "embed": str(self.embed_device),
                "unembed": str(self.final_device), "offloaded_blocks": list(self.offloaded_blocks)}


def _plain():
    """No torch.func transform inside (torch's own guard; a no-op where this torch lacks it)."""
    guard = getattr(torch._C, "_DisableFuncTorch", None)
    return guard() if guard is not None else contextlib.nullcontext()


def _back(out, device):
    if isinstance(out, tuple):
        return tuple(_back(o, device) for o in out)
    return out.to(device) if torch.is_tensor(out) and out.device != device else out


def enable(fm, hf):
    """Patch ``fm`` (a FunctionalModel of ``hf``) for a dispatched model; return it (unchanged
    when ``hf`` is on one device)."""
    if not is_dispatched(hf):
        return fm
    d = Dispatch(fm)
    fm.dispatch = d

    def on_block(method):
        @functools.wraps(method)
        def run(l, x, *args, **kw):
            dev, home = d.layer_device[l], x.device
            with d.weights(l):
                out = method(l, x if dev is None else x.to(dev), *args, **kw)
            return _back(out, home)
        return run

    def on(dev_of, method):
        @functools.wraps(method)
        def run(x, *args, **kw):
            dev, home = dev_of(), x.device
            args = tuple(a.to(dev) if torch.is_tensor(a) and dev is not None else a for a in args)
            out = method(x if dev is None else x.to(dev), *args, **kw)
            return _back(out, home)
        return run

    for name in ("qkv", "o_proj", "mlp"):
        setattr(fm, name, on_block(getattr(fm, name)))
    w_o = fm.W_O_head

    def W_O_head(l, h):
        with d.weights(l):
            return w_o(l, h)
    fm.W_O_head = W_O_head
    o_bias = fm.o_bias

    def o_bias_of(l):   # a copy: the offloaded original is gone once the block's weights are released
        with d.weights(l):
            b = o_bias(l)
            return None if b is None else b.detach().clone()
    fm.o_bias = o_bias_of
    fm.embed = on(lambda: d.embed_device, fm.embed)
    for name in ("final_norm", "unembed", "logit_of"):
        setattr(fm, name, on(lambda: d.final_device, getattr(fm, name)))
    fm.to_layer = lambda l, x: x if d.layer_device[l] is None or x.device == d.layer_device[l] else x.to(d.layer_device[l])
    rope = getattr(fm, "_rope", None)
    if rope is not None:   # the rotary tables of the block's device, computed where the rotary module is
        rot_dev = _execution_device(fm.rotary) if hasattr(fm, "rotary") and any(True for _ in fm.rotary.buffers()) else None

        def _rope(l, pos0, T, like):
            if rot_dev is None or like.device == rot_dev:
                return rope(l, pos0, T, like)
            cos, sin = rope(l, pos0, T, torch.empty(0, dtype=like.dtype, device=rot_dev))
            return cos.to(like.device), sin.to(like.device)
        fm._rope = _rope
    return fm
