"""Looking at single features: selectivity between two sets of prompts, the top activating
examples in a corpus, and the direct logit effect of each decoder row.

- ``selectivity(field, sae, latent, on, off, position=...)``: one activation per prompt (at a
  named position or the largest over the prompt's tokens after BOS) on an "on" set and an "off"
  set; ``fc.assert_selective`` decides rates, the difference of means and the AUROC.
- ``top_examples(field, sae, latents, texts, k)``: the k strongest activations of each latent over
  a list of texts (a corpus of :mod:`fieldcheck.sae.corpus` or your own), with their context.
- ``feature_dla(field, ds, sae, latents)``: per example, a_i(END) times the decoder row's direct
  effect on the logit difference through the final norm with its scale frozen at the run's own
  value (``fieldcheck.experiments.lens``), and per latent the tokens its decoder row promotes and
  suppresses most (``W_dec[i] @ W_U^T`` through the final norm's gain).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field as dc_field
from typing import Optional, Sequence

import numpy as np
import torch

from fieldcheck.errors import DatasetError, SiteError, UsageError, check_int, check_number
from fieldcheck.experiments.features import feature_run, latent_list, sae_report
from fieldcheck.experiments.lens import final_norm_affine
from fieldcheck.field.results import dataset_hash_of
from fieldcheck.field.sites import site_of_hook
from fieldcheck.jsonable import jsonable
from fieldcheck.sae.dictionary import Dictionary
from fieldcheck.sae.splice import check_fits, collect

__all__ = ["Selectivity", "selectivity", "TopExamples", "top_examples", "FeatureDLA", "feature_dla"]


_latents = latent_list


def _texts(texts, what: str) -> list[str]:
    """``texts`` as a list of non-empty strings; DatasetError naming ``what`` otherwise (a single string
    would be read as its characters, an empty text has no token after BOS to read)."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
        raise DatasetError(f"{what}={texts!r}: give a non-empty list of texts (or a ContrastiveSet)")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise DatasetError(f"{what}: text {bad[0]} is {texts[bad[0]]!r}; every text must be a non-empty string")
    return list(texts)


def _encode_texts(field, d: Dictionary, texts: Sequence[str], batch: int = 16):
    """Per text: token strings and feature activations ``[pos, d_sae]`` (BOS first, as the model tokenizes)."""
    model = field.model
    out = []
    for s in range(0, len(texts), batch):
        chunk = list(texts[s:s + batch])
        for t in chunk:
            toks = model.to_tokens(t).to(field.device)
            acts = collect(field.fm, toks, [d.hook_name])[d.hook_name]
            f = d.encode(acts)[0].detach()
            strs = [model.tokenizer.decode([int(i)]) for i in toks[0].tolist()]
            out.append((strs, f))
    return out


# --- selectivity ------------------------------------------------------------------------------
@dataclass
class Selectivity:
    """Activation of one latent per prompt on the ``on`` and the ``off`` prompts ``[n_on]``, ``[n_off]``."""

    dictionary: str
    latent: int
    on: np.ndarray
    off: np.ndarray
    threshold: float = 0.0
    position: str = "max"
    cost: dict = dc_field(default_factory=dict)
    on_hash: str = ""
    off_hash: str = ""

    @property
    def rate_on(self) -> float:
        """Share of the "on" prompts on which the latent fires (activation above ``threshold``)."""
        return float((self.on > self.threshold).mean())

    @property
    def rate_off(self) -> float:
        """Share of the "off" prompts on which the latent fires (activation above ``threshold``)."""
        return float((self.off > self.threshold).mean())

    @property
    def auroc(self) -> float:
        """Probability that an "on" prompt's activation exceeds an "off" prompt's (ties count 1/2)."""
        cmp = (self.on[:, None] > self.off[None]).astype(float) + 0.5 * (self.on[:, None] == self.off[None])
        return float(cmp.mean())

    @property
    def dataset_hash(self) -> str:
        """The identity of both prompt sets together ("" when either is unknown), by which a gating
        run pairs the two models' values prompt by prompt."""
        if not self.on_hash or not self.off_hash:
            return ""
        return hashlib.sha256(f"selectivity/{self.position}/{self.on_hash}/{self.off_hash}".encode()).hexdigest()

    def summary(self) -> str:
        """One line: the latent, where it was read, its firing rates, means and AUROC."""
        return (f"Selectivity({self.dictionary} F{self.latent} at {self.position}: fires on {self.rate_on:.0%} of "
                f"{self.on.size} 'on' and {self.rate_off:.0%} of {self.off.size} 'off' prompts; mean "
                f"{self.on.mean():.3g} vs {self.off.mean():.3g}; AUROC {self.auroc:.3f})")

    __repr__ = summary

    def plot(self, ax=None):
        """Histograms of the activations on the "on" and the "off" prompts; returns the Figure."""
        from fieldcheck.display import pyplot

        plt = pyplot()
        fig, ax = (plt.subplots(figsize=(5, 3)) if ax is None else (ax.figure, ax))
        bins = np.linspace(min(self.on.min(), self.off.min()), max(self.on.max(), self.off.max()) + 1e-9, 20)
        ax.hist(self.off, bins=bins, alpha=0.6, label="off")
        ax.hist(self.on, bins=bins, alpha=0.6, label="on")
        ax.set_xlabel(f"F{self.latent} activation ({self.position})")
        ax.legend(fontsize=8)
        ax.set_title(self.summary().split(":", 1)[0] + ")", fontsize=9)
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html
        return rich_html(self, self.plot)

    def to_dict(self) -> dict:
        """A JSON-safe dict: per-prompt ``on``/``off`` activations, rates, AUROC, the prompt sets' hashes."""
        return jsonable({"dictionary": self.dictionary, "latent": self.latent, "on": self.on, "off": self.off,
                         "threshold": self.threshold, "position": self.position, "rate_on": self.rate_on,
                         "rate_off": self.rate_off, "auroc": self.auroc, "cost": self.cost,
                         "on_hash": self.on_hash, "off_hash": self.off_hash})


def _per_prompt(field, d, latent, prompts, position, what: str):
    if hasattr(prompts, "clean_tokens"):  # a ContrastiveSet: its clean prompts
        if position != "max" and not isinstance(position, str):
            check_int("position", position, low=-prompts.seq_len, high=prompts.seq_len - 1, error=SiteError,
                      hint=f"{what}'s prompts have {prompts.seq_len} tokens; or a position name, or 'max'")
        f = feature_run(field, prompts, d).f["clean"][..., latent]
        if position == "max":
            return f[:, 1:].max(1).values.double().cpu().numpy()
        p = prompts.position(position).to(f.device) if isinstance(position, str) else torch.full(
            (prompts.n,), int(position), device=f.device)
        return f[torch.arange(prompts.n, device=f.device), p].double().cpu().numpy()
    if position != "max":
        raise UsageError("a named position needs a data set (ContrastiveSet); for lists of texts use position='max'")
    return np.array([float(f[1:, latent].max()) if f.shape[0] > 1 else 0.0
                     for _, f in _encode_texts(field, d, _texts(prompts, what))])


def selectivity(field, dictionary: Dictionary, latent: int, on, off, position="max",
                threshold: float = 0.0) -> Selectivity:
    """One activation of ``latent`` per prompt of ``on`` and ``off`` (ContrastiveSets -- their clean
    prompts -- or lists of texts): at ``position`` (a name or an int of the data set) or the
    largest over the prompt's tokens after BOS (``"max"``)."""
    check_fits(dictionary, field.fm)
    (lat,) = _latents(dictionary, [latent])
    threshold = check_number("threshold", threshold, hint="the activation above which the latent fires")
    a_on = _per_prompt(field, dictionary, lat, on, position, "on")
    a_off = _per_prompt(field, dictionary, lat, off, position, "off")
    runs = [feature_run(field, x, dictionary) for x in (on, off) if hasattr(x, "clean_tokens")]
    return Selectivity(dictionary.name, lat, a_on, a_off, float(threshold), str(position),
                       {"sae": sae_report(field, runs)} if runs else {}, _prompts_hash(on), _prompts_hash(off))


def _prompts_hash(prompts) -> str:
    """A ContrastiveSet's content hash, or the hash of a list of texts."""
    if hasattr(prompts, "content_hash"):
        return dataset_hash_of(prompts)
    return hashlib.sha256("\x00".join(map(str, prompts)).encode()).hexdigest()


# --- top activating examples ---------------------------------------------------------------------
@dataclass
class TopExamples:
    """Per latent, the ``k`` strongest activations over a list of texts: ``(activation, text index,
    position, context)`` with the token marked ``[[like this]]`` in its context."""

    dictionary: str
    examples: dict
    n_texts: int

    def summary(self) -> str:
        """Per latent (the first eight), its three strongest activations with their context."""
        lines = [f"TopExamples({self.dictionary}, {len(self.examples)} latents over {self.n_texts} texts)"]
        for lat, rows in list(self.examples.items())[:8]:
            shown = "; ".join(f"{a:.2f} {ctx!r}" for a, _, _, ctx in rows[:3])
            lines.append(f"  F{lat}: {shown}")
        return "\n".join(lines)

    __repr__ = summary

    def plot(self, latent: Optional[int] = None, ax=None):
        """The top activations of one latent as bars labelled by their context."""
        from fieldcheck.display import pyplot

        plt = pyplot()
        lat = next(iter(self.examples)) if latent is None else latent
        rows = self.examples[lat]
        fig, ax = (plt.subplots(figsize=(7, 0.35 * len(rows) + 1)) if ax is None else (ax.figure, ax))
        ax.barh(range(len(rows)), [r[0] for r in rows], color="tab:orange")
        ax.set_yticks(range(len(rows)), [r[3][-60:] for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("activation")
        ax.set_title(f"{self.dictionary} F{lat}: top activating examples", fontsize=9)
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        import html
        parts = [f"<b>{html.escape(self.dictionary)}</b>: top activating examples"]
        for lat, rows in self.examples.items():
            items = "".join(f"<li>{a:.2f}: {html.escape(c).replace('[[', '<mark>').replace(']]', '</mark>')}</li>"
                            for a, _, _, c in rows)
            parts.append(f"<div>F{lat}<ul>{items}</ul></div>")
        return "".join(parts)

    def to_dict(self) -> dict:
        """A JSON-safe dict: per latent the ``[activation, text, position, context]`` rows."""
        return jsonable({"dictionary": self.dictionary, "n_texts": self.n_texts,
                         "examples": {str(k): [list(r) for r in v] for k, v in self.examples.items()}})


def top_examples(field, dictionary: Dictionary, latents, texts: Sequence[str], k: int = 10,
                 window: int = 8) -> TopExamples:
    """The ``k`` strongest activations of each latent over ``texts`` (BOS excluded), with ``window``
    tokens of context before the token and 2 after."""
    check_fits(dictionary, field.fm)
    lat = _latents(dictionary, latents)
    k = check_int("k", k, low=1, hint="the number of examples per latent")
    window = check_int("window", window, low=0, hint="tokens of context before the token")
    enc = _encode_texts(field, dictionary, _texts(texts, "texts"))
    best: dict = {i: [] for i in lat}
    for ti, (strs, f) in enumerate(enc):
        sub = f[1:, lat]
        for j, i in enumerate(lat):
            vals, pos = torch.topk(sub[:, j], min(k, sub.shape[0]))
            for a, p in zip(vals.tolist(), pos.tolist()):
                if a > 0:
                    t = p + 1
                    ctx = "".join(strs[max(1, t - window):t]) + "[[" + strs[t] + "]]" + "".join(strs[t + 1:t + 3])
                    best[i].append((float(a), ti, t, ctx))
    ex = {i: sorted(v, key=lambda r: -r[0])[:k] for i, v in best.items()}
    return TopExamples(dictionary.name, ex, len(enc))


# --- direct logit effect of decoder rows --------------------------------------------------------
@dataclass
class FeatureDLA:
    """``values [n_latents, batch]``: a_i(END) x the decoder row's direct effect on the logit
    difference (final-norm scale frozen at the run's own value); ``promoted``/``suppressed``: per
    latent the tokens whose logits its decoder row raises / lowers most."""

    dictionary: str
    latents: list
    values: np.ndarray
    promoted: dict
    suppressed: dict
    which: str = "clean"
    dataset: str = ""

    @property
    def mean(self) -> np.ndarray:
        """``[n_latents]``: each latent's direct effect averaged over the examples."""
        return self.values.mean(1)

    def top(self, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` latents with the largest mean |direct effect|, as ``(latent, mean)`` pairs."""
        k = check_int("k", k, low=0)
        order = np.argsort(-np.abs(self.mean))[:k]
        return [(self.latents[i], float(self.mean[i])) for i in order]

    def summary(self) -> str:
        """The five latents with the largest mean direct effect and the tokens they promote."""
        rows = ", ".join(f"F{i} {v:+.3g} (promotes {self.promoted.get(i, [])[:3]})" for i, v in self.top(5))
        return f"FeatureDLA({self.dictionary}, {len(self.latents)} latents, {self.which} run, n={self.values.shape[1]})\n  {rows}"

    __repr__ = summary

    def plot(self, k: int = 15, ax=None):
        """Bars of the ``k`` largest mean direct effects, labelled by promoted tokens; the Figure."""
        from fieldcheck.display import pyplot

        plt = pyplot()
        rows = self.top(k)
        fig, ax = (plt.subplots(figsize=(5, 0.3 * len(rows) + 1)) if ax is None else (ax.figure, ax))
        ax.barh(range(len(rows)), [v for _, v in rows], color=["tab:red" if v > 0 else "tab:blue" for _, v in rows])
        ax.set_yticks(range(len(rows)), [f"F{i} {''.join(self.promoted.get(i, [])[:2])!r}" for i, _ in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("mean direct effect on the logit difference")
        ax.set_title(f"{self.dictionary}: feature DLA ({self.which})", fontsize=9)
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html
        return rich_html(self, self.plot)

    def to_dict(self) -> dict:
        """A JSON-safe dict: ``values [n_latents, batch]``, means, promoted and suppressed tokens."""
        return jsonable({"dictionary": self.dictionary, "latents": self.latents, "values": self.values,
                         "mean": self.mean, "promoted": {str(k): v for k, v in self.promoted.items()},
                         "suppressed": {str(k): v for k, v in self.suppressed.items()}, "which": self.which,
                         "dataset": self.dataset})


def feature_dla(field, ds, dictionary: Dictionary, latents="all", which: str = "clean", n_tokens: int = 5) -> FeatureDLA:
    """Direct logit attribution of each latent's decoder row at the metric position (see the module doc)."""
    if which not in ("clean", "corrupt"):
        raise UsageError(f"which must be 'clean' or 'corrupt', got {which!r}")
    check_fits(dictionary, field.fm)
    kind, _ = site_of_hook(dictionary.out_hook)
    if kind == "attn_head":
        raise UsageError(f"{dictionary.name} writes attention z, not the residual stream: its decoder rows have no "
                         "direct logit effect without W_O")
    fm = field.fm
    if not getattr(fm, "linear_unembed", False):
        raise UsageError("feature DLA needs a linear unembedding (no logit soft-capping, not the generic path)")
    lat = _latents(dictionary, latents)
    n_tokens = check_int("n_tokens", n_tokens, low=1, hint="promoted and suppressed tokens listed per latent")
    run = feature_run(field, ds, dictionary)
    r = field.run(ds)
    cache = r.clean if which == "clean" else r.corrupt
    b = torch.arange(ds.n, device=field.device)
    pos = r.metric_pos
    x_final = cache.resid[-1][b, pos]
    scale, weight, bias, center = final_norm_affine(fm, x_final)
    rows = dictionary.decoder[lat].double()                                         # [n_lat, d]
    if center:
        rows = rows - rows.mean(-1, keepdim=True)
    W = fm.W_U.double()
    dirs = (W[ds.answers.to(W.device)] - W[ds.wrong.to(W.device)]) * weight.double()  # [batch, d]
    a = run.f[which][b, pos][:, lat].double() * run.scale[which][b, pos].double()    # [batch, n_lat]
    vals = (a * (dirs @ rows.T) / scale.double()[:, None]).T                        # [n_lat, batch]
    logit_w = (rows * weight.double()) @ W.T                                         # [n_lat, vocab]
    tok = field.model.tokenizer
    k = min(n_tokens, logit_w.shape[1])
    up, down = logit_w.topk(k, dim=-1).indices.tolist(), (-logit_w).topk(k, dim=-1).indices.tolist()
    promoted = {i: [tok.decode([t]) for t in u] for i, u in zip(lat, up)}
    suppressed = {i: [tok.decode([t]) for t in dn] for i, dn in zip(lat, down)}
    return FeatureDLA(dictionary.name, lat, vals.cpu().numpy(), promoted, suppressed, which, getattr(ds, "name", ""))
