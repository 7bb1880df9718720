"""The numbers an SAE is judged by, measured on held-out activations and token sequences.

- ``explained_variance``: 1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2 over tokens (``fvu`` = 1 - it);
- ``l0``: mean number of active latents per token; ``dead_fraction``: share of latents active on
  none of the evaluation tokens;
- ``ce_clean``, ``ce_spliced``, ``ce_zero``: the model's next-token cross-entropy (nats) as is, with
  the reconstruction spliced in at the hook (no error term), and with the hook's activation zeroed;
  ``loss_recovered`` = (ce_zero - ce_spliced) / (ce_zero - ce_clean).

The BOS position (an attention sink with an outsized norm, which the dictionaries are not trained
on) is left out of every number; its activation passes through unchanged when spliced.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch

from fieldcheck.errors import DatasetError
from fieldcheck.jsonable import jsonable
from fieldcheck.sae.dictionary import Dictionary
from fieldcheck.sae.splice import check_fits, collect, forward_with


@dataclass
class Quality:
    explained_variance: float
    l0: float
    dead_fraction: float
    n_tokens: int
    ce_clean: Optional[float] = None
    ce_spliced: Optional[float] = None
    ce_zero: Optional[float] = None
    model: str = ""

    @property
    def fvu(self) -> float:
        return 1.0 - self.explained_variance

    @property
    def loss_recovered(self) -> Optional[float]:
        if None in (self.ce_clean, self.ce_spliced, self.ce_zero) or self.ce_zero == self.ce_clean:
            return None
        return (self.ce_zero - self.ce_spliced) / (self.ce_zero - self.ce_clean)

    def to_dict(self) -> dict:
        return jsonable({**asdict(self), "fvu": self.fvu, "loss_recovered": self.loss_recovered})

    def summary(self) -> str:
        ce = ""
        if self.ce_spliced is not None:
            ce = (f"; CE clean {self.ce_clean:.3f}, spliced {self.ce_spliced:.3f}, zero-ablated {self.ce_zero:.3f} nats "
                  f"(loss recovered {self.loss_recovered:.3f})")
        on = f" on {self.model}" if self.model else ""
        return (f"Quality{on}: explained variance {self.explained_variance:.3f}, L0 {self.l0:.1f}, dead latents "
                f"{self.dead_fraction:.1%} ({self.n_tokens} tokens){ce}")

    __repr__ = summary


@torch.no_grad()
def reconstruction_stats(d: Dictionary, x: torch.Tensor, y: Optional[torch.Tensor] = None,
                         batch: int = 4096) -> dict:
    """Explained variance, L0 and per-latent firing counts of ``d`` on activations ``x [n, d_in]``
    (``y [n, d_out]``: a transcoder's targets)."""
    n = x.shape[0]
    sse, fired, l0 = 0.0, torch.zeros(d.d_sae, dtype=torch.long), 0.0
    tgt_all = x if y is None else y
    mean = tgt_all.double().mean(0)
    sst = float(((tgt_all.double() - mean) ** 2).sum())
    for s in range(0, n, batch):
        xb = x[s:s + batch].to(d.dtype)
        f = d.encode(xb)
        rec = d.decode(f, x=xb)
        tgt = (xb if y is None else y[s:s + batch].to(d.dtype))
        sse += float(((tgt - rec).double() ** 2).sum())
        active = f > 0
        fired += active.sum(0).cpu()
        l0 += float(active.sum())
    return {"explained_variance": 1.0 - sse / max(sst, 1e-30), "l0": l0 / max(n, 1),
            "dead_fraction": float((fired == 0).double().mean()), "n_tokens": int(n), "fired": fired}


@torch.no_grad()
def spliced_ce(fm, d: Dictionary, tokens: torch.Tensor, batch: int = 8) -> tuple[float, float, float]:
    """(clean, spliced, zero-ablated) mean next-token cross-entropy over ``tokens [n, T]`` (positions
    1..T-2 predicting 2..T-1: the BOS position is neither edited nor scored)."""
    def ce(x_final, toks):
        logits = fm.unembed(fm.final_norm(x_final[:, 1:-1])).float()
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), toks[:, 2:].reshape(-1),
                                                 reduction="sum")

    def keep_bos(fn):
        def edit(act, *rest):
            out = fn(act, *rest)
            return torch.cat([act[:, :1], out[:, 1:]], dim=1)
        return edit

    def spliced(y, *rest):
        x_in = rest[0] if d.is_transcoder else y
        return d.reconstruct(x_in).to(y.dtype).reshape(y.shape)

    tot = torch.zeros(3, dtype=torch.float64)
    count = 0
    for s in range(0, tokens.shape[0], batch):
        tb = tokens[s:s + batch]
        x0 = fm.embed(tb)
        for i, edits in enumerate(({}, {d.out_hook: keep_bos(spliced)},
                                   {d.out_hook: keep_bos(lambda y, *r: torch.zeros_like(y))})):
            tot[i] += float(ce(forward_with(fm, x0, edits), tb))
        count += tb.shape[0] * (tb.shape[1] - 2)
    v = (tot / max(count, 1)).tolist()
    return v[0], v[1], v[2]


def measure(d: Dictionary, fm, tokens: torch.Tensor, model: str = "", ce: bool = True) -> Quality:
    """The quality of ``d`` in the model ``fm`` on token sequences ``tokens [n, T]`` (BOS first).
    DictionaryError when ``d`` does not fit ``fm``; DatasetError for ``tokens`` that are not integer ids
    ``[n >= 1, T >= 3]`` of the model's vocabulary."""
    check_fits(d, fm, model)
    V = getattr(fm, "d_vocab", None)
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.is_floating_point() or \
            tokens.dtype == torch.bool or tokens.shape[0] < 1 or tokens.shape[1] < 3 or \
            (V is not None and bool(((tokens < 0) | (tokens >= V)).any())):
        got = f"{tokens.dtype} {tuple(tokens.shape)}" if isinstance(tokens, torch.Tensor) else repr(tokens)
        raise DatasetError(f"measure(sae, fm, tokens): tokens must be integer ids [n >= 1, T >= 3] (BOS first) "
                           f"in 0..{'d_vocab-1' if V is None else V - 1}, got {got}")
    acts = collect(fm, tokens, list(dict.fromkeys([d.hook_name, d.out_hook])))
    x = acts[d.hook_name][:, 1:].reshape(-1, acts[d.hook_name].shape[-1])
    y = acts[d.out_hook][:, 1:].reshape(-1, d.d_out) if d.is_transcoder else None
    st = reconstruction_stats(d, x, y)
    q = Quality(st["explained_variance"], st["l0"], st["dead_fraction"], st["n_tokens"], model=model)
    if ce:
        q.ce_clean, q.ce_spliced, q.ce_zero = spliced_ce(fm, d, tokens)
    return q
