"""Observables: metrics of the output at the metric position (``END`` by default).

A metric maps the final residual of some rows to one number per row. Built-ins:

- ``"logit_diff"``: logit(answer) - logit(wrong). Needs only two columns of the unembedding.
- ``"logprob"``: log-probability of the answer; ``"prob"``: its probability.
- ``"kl"``: KL(clean || patched) of the next-token distributions.
- a callable ``fn(logits, ds) -> [rows]``: ``logits`` is ``[rows, d_vocab]`` at the metric position
  and ``ds`` the examples of those rows (a ContrastiveSet). It must return one finite number per row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

from fieldcheck.errors import MetricError

BUILTIN = ("logit_diff", "logprob", "prob", "kl")


@dataclass
class Metric:
    name: str
    fn: Optional[Callable] = None

    @property
    def needs_full_logits(self) -> bool:
        return self.name != "logit_diff"

    def checked(self, raw, logits: torch.Tensor) -> torch.Tensor:
        """A metric function's output for logits ``[rows, d_vocab]`` as ``[rows]`` numbers (MetricError
        for anything else: not numbers, another shape, NaN or inf)."""
        rows = logits.shape[0]
        try:
            out = torch.as_tensor(raw, dtype=logits.dtype, device=logits.device)
        except (TypeError, ValueError, RuntimeError):
            raise MetricError(f"metric {self.name!r} returned a {type(raw).__name__}, not numbers; it must "
                              f"return one number per example, shape ({rows},)") from None
        if out.shape != (rows,):
            raise MetricError(f"metric {self.name!r} returned shape {tuple(out.shape)}; it must return one "
                              f"number per example, shape ({rows},), from logits [rows, d_vocab]")
        if not torch.isfinite(out).all():
            raise MetricError(f"metric {self.name!r} returned NaN or inf for "
                              f"{int((~torch.isfinite(out)).sum())} of {rows} examples")
        return out

    def __call__(self, fm, x_final: torch.Tensor, ex: torch.Tensor, ds, clean_logprobs=None) -> torch.Tensor:
        """x_final: ``[rows, d_model]`` final residual (before the final norm) at the metric position;
        ex: ``[rows]`` example index of each row. Returns ``[rows]``."""
        xn = fm.final_norm(x_final)
        if self.name == "logit_diff":
            a, w = ds.answers.to(xn.device)[ex], ds.wrong.to(xn.device)[ex]
            if not getattr(fm, "linear_unembed", True):  # soft-capped or generic logits: column by column
                return fm.logit_of(xn, a) - fm.logit_of(xn, w)
            W = fm.W_U
            out = (xn * (W[a] - W[w])).sum(-1)
            if fm.b_U is not None:
                out = out + fm.b_U[a] - fm.b_U[w]
            return out
        logits = fm.unembed(xn)
        if self.fn is not None:
            sub = ds.subset(ex.tolist()) if hasattr(ds, "subset") else ds
            return self.checked(self.fn(logits, sub), logits)
        lp = torch.log_softmax(logits.float(), dim=-1)
        a = ds.answers.to(lp.device)[ex]
        if self.name == "logprob":
            return lp.gather(1, a[:, None])[:, 0]
        if self.name == "prob":
            return lp.gather(1, a[:, None])[:, 0].exp()
        if self.name == "kl":
            ref = clean_logprobs[ex]
            return (ref.exp() * (ref - lp)).sum(-1)
        raise MetricError(f"unknown metric {self.name!r}")


def as_metric(m: Union[str, Callable, Metric]) -> Metric:
    """A Metric from ``m``: a Metric, a built-in name ("logit_diff", "logprob", "prob", "kl") or a
    callable ``(logits [rows, d_vocab], ds) -> [rows]`` (named by its ``__name__``); MetricError otherwise."""
    if isinstance(m, Metric):
        return m
    if isinstance(m, str):
        if m not in BUILTIN:
            raise MetricError(f"unknown metric {m!r}; built-in metrics are {', '.join(BUILTIN)}, "
                              "or pass a callable (logits [rows, d_vocab], ds) -> [rows]")
        return Metric(m)
    if callable(m):
        return Metric(getattr(m, "__name__", "custom"), fn=m)
    raise MetricError(f"metric {m!r} is neither a name ({', '.join(BUILTIN)}) nor a callable")
