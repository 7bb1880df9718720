"""Attention weights and head scores.

- ``attention(field, ds, heads, query="END", key="IO")``: for each head, the weight that the
  query position puts on the key position in every example (``AttentionResult.weights``
  ``[head, batch]``). On the light-cone engine the patterns come from the cached runs: the
  queries are recomputed per layer from the cached residual (``fm.qkv``, one projection, no
  forward through the blocks) and scored against the cached keys; the softmax is the engine's
  own (``fm.attend`` applied to one-hot values returns exactly its attention weights, so any
  family-specific masking or scaling the engine implements is included). Without the engine,
  one hooked forward reads ``blocks.{l}.attn.hook_pattern``.
- ``head_scores(field, n, length, seed)``: previous-token, duplicate-token and induction scores
  of every head on sequences of repeated random tokens ``[BOS] r r`` with TransformerLens's
  detection patterns (``transformer_lens.head_detector``). ``normalize="targets"`` (default)
  averages, over the query positions that have a target, the attention paid to the targets
  (1 = a perfect head of that kind); ``normalize="transformer_lens"`` gives TL's ``"mul"``
  score, sum(A * D) / sum(A), which for the repeated half is at most about one half.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field as dc_field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from fieldcheck.errors import DatasetError, SiteError, UsageError, check_choice, check_int
from fieldcheck.field.labels import parse, unknown
from fieldcheck.field.core import check_dataset
from fieldcheck.display import pyplot
from fieldcheck.jsonable import jsonable as _jsonable

HEAD_KINDS = ("previous_token", "duplicate_token", "induction")
_MAX_PATTERN_ELEMENTS = 1 << 25  # keep full patterns [head, batch, q, k] only below this size


# --- heads ---------------------------------------------------------------------------------------
def as_heads(heads: Any, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """(layer, head) pairs from ``"all"``, a head label (``"L8.H1"``), an ``attn_head(...)`` site set
    (positions ignored), or a list mixing labels, Sites and ``(layer, head)`` tuples."""
    from fieldcheck.field.sites import Site, SiteSet, as_site_set
    import builtins

    if heads is None or heads is builtins.all or (isinstance(heads, str) and heads == "all"):
        return [(l, h) for l in range(n_layers) for h in range(n_heads)]
    one_pair = isinstance(heads, tuple) and len(heads) == 2 and all(_is_index(v) for v in heads)
    items = [heads] if isinstance(heads, (str, Site, SiteSet)) or one_pair else heads
    if not isinstance(items, (list, tuple)) or not items:
        raise SiteError(f"{heads!r} names no heads; use 'all', head labels ('L8.H1'), "
                        "fieldcheck.sites.attn_head(layers, heads) or a list of (layer, head) pairs")
    out = []
    for x in items:
        if isinstance(x, (tuple, list)) and len(x) == 2 and all(_is_index(v) for v in x):
            out.append((int(x[0]), int(x[1])))
            continue
        if isinstance(x, (Site, SiteSet)):
            texts = as_site_set(x).component_labels(n_layers, n_heads)
        elif isinstance(x, str):
            texts = [x]
        else:
            raise SiteError(f"{x!r} names no head; use head labels ('L8.H1'), attn_head sites or (layer, head) pairs")
        for t in texts:
            lab = parse(t, "head")
            if lab.kind != "head" or lab.port is not None:
                raise SiteError(f"attention needs attention heads, got {str(lab)!r}; name heads 'L8.H1' or use "
                                "fieldcheck.sites.attn_head(layers, heads)")
            out.append((lab.layer, lab.head))
    for l, h in out:
        if not (0 <= l < n_layers and 0 <= h < n_heads):
            valid = [head_label(a, b) for a in range(min(n_layers, 1 << 12)) for b in range(min(n_heads, 1 << 12))] \
                if n_layers * n_heads < 1 << 16 else []
            raise unknown(head_label(l, h), valid, "head", f"a model of {n_layers} layers x {n_heads} heads")
    return list(dict.fromkeys(out))


def _is_index(v) -> bool:
    """An int or numpy integer, not a bool (True is not head 1)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def head_label(l: int, h: int) -> str:
    return f"L{l}.H{h}"


# --- patterns ----------------------------------------------------------------------------------
@torch.no_grad()
def patterns_from_cache(fm, resid_l: torch.Tensor, k_l: torch.Tensor, l: int) -> torch.Tensor:
    """Attention weights ``[batch, head, q_pos, k_pos]`` of block ``l`` from the cached residual
    entering it ``[batch, T, d_model]`` and its cached keys ``[batch, kv_head, T, d_head]``."""
    q, _, _ = fm.qkv(l, resid_l, 0)
    B, _, T, _ = k_l.shape
    eye = torch.eye(T, dtype=q.dtype, device=q.device).expand(B, k_l.shape[1], T, T)
    z = fm.attend(q, k_l, eye, 0, l)  # [batch, q_pos, head, k_pos]: the weights applied to one-hot values
    return z.transpose(1, 2)


@torch.no_grad()
def patterns_hooked(model, tokens: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """One hooked forward: ``{layer: [batch, head, q_pos, k_pos]}`` from ``blocks.{l}.attn.hook_pattern``."""
    names = {f"blocks.{l}.attn.hook_pattern": l for l in layers}
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return {l: cache[name] for name, l in names.items()}


def _engine(field, engine: Optional[str]) -> str:
    """The engine that reads the patterns: ``engine`` ("lightcone" or "hooks"), or for None the field's."""
    if engine is None:
        return "lightcone" if field.fm is not None and not getattr(field.fm, "generic", False) else "hooks"
    return check_choice("engine", engine, (None, "lightcone", "hooks"))


def _layer_patterns(field, ds, layers, which: str, engine: Optional[str]):
    """(iterator of (layer, patterns ``[batch, head, q_pos, k_pos]``), how). On the light-cone
    engine the patterns are computed one layer at a time, so only one layer's are held."""
    engine = _engine(field, engine)
    if engine == "lightcone":
        r = field.run(ds)
        cache = r.clean if which == "clean" else r.corrupt
        return ((l, patterns_from_cache(field.fm, cache.resid[l], cache.k[l], l)) for l in layers), \
            "cached runs (queries from the cached residual, cached keys)"
    toks = (ds.clean_tokens if which == "clean" else ds.corrupt_tokens).to(field.device)
    return iter(patterns_hooked(field.model, toks, layers).items()), "one hooked forward (hook_pattern)"


# --- results -----------------------------------------------------------------------------------
@dataclass
class AttentionResult:
    """Attention of each head from a query position to a key position, per example.

    weights: ``[head, batch]`` (``heads[i]`` is ``(layer, head)``); query_pos/key_pos: ``[batch]``
    (None for head scores, whose weights are already averaged over positions).
    patterns: ``[head, batch, q_pos, k_pos]`` when small enough to keep, else None.
    """

    heads: list[tuple[int, int]]
    weights: np.ndarray
    query: str
    key: str
    which: str = "clean"
    dataset: str = ""
    query_pos: Optional[np.ndarray] = None
    key_pos: Optional[np.ndarray] = None
    patterns: Optional[np.ndarray] = None
    n_layers: int = 0
    n_heads: int = 0
    method: str = ""
    cost: dict = dc_field(default_factory=dict)

    def __post_init__(self):
        self.weights = np.asarray(self.weights, dtype=float)

    @property
    def labels(self) -> list[str]:
        """Head labels ``"L{layer}.H{head}"``, one per row of ``weights``."""
        return [head_label(l, h) for l, h in self.heads]

    @property
    def n(self) -> int:
        """Number of examples (the ``batch`` axis of ``weights``)."""
        return self.weights.shape[1]

    @property
    def mean(self) -> np.ndarray:
        """``[head]`` mean weight over examples."""
        return self.weights.mean(1)

    def top(self, k: int = 5) -> list[tuple[int, int]]:
        """The k heads with the largest mean weight (fewer when the result has fewer heads)."""
        k = check_int("k", k, low=0)
        order = np.argsort(-self.mean, kind="stable")[:k]
        return [self.heads[i] for i in order]

    def select(self, heads) -> "AttentionResult":
        """The rows of the given heads (same forms as ``field.attention``'s ``heads``)."""
        want = as_heads(heads, self.n_layers or 1 << 30, self.n_heads or 1 << 30)
        index = {hd: i for i, hd in enumerate(self.heads)}
        missing = [head_label(*h) for h in want if h not in index]
        if missing:
            raise unknown(missing[0], self.labels, "head", "this result")
        idx = [index[h] for h in want]
        return AttentionResult(want, self.weights[idx], self.query, self.key, self.which, self.dataset,
                               self.query_pos, self.key_pos,
                               None if self.patterns is None else self.patterns[idx],
                               self.n_layers, self.n_heads, self.method, dict(self.cost))

    def grid(self) -> np.ndarray:
        """``[layer, head]`` mean weight, NaN for heads not measured."""
        L = self.n_layers or (max(l for l, _ in self.heads) + 1)
        H = self.n_heads or (max(h for _, h in self.heads) + 1)
        g = np.full((L, H), np.nan)
        for (l, h), m in zip(self.heads, self.mean):
            g[l, h] = m
        return g

    def plot_data(self) -> dict:
        """A JSON-able heatmap dict for the HTML report (layer x head mean weight)."""
        g = self.grid()
        return {"kind": "heatmap", "z": np.where(np.isfinite(g), g, np.nan).tolist(),
                "xlabel": "head", "ylabel": "layer",
                "title": (f"mean attention {self.query} -> {self.key} ({self.which})" if self.key_pos is not None
                          else f"mean {self.query} ({self.which})")}

    def heatmap(self, ax=None):
        """Layer x head heatmap of the mean weight; returns the matplotlib Figure."""
        plt = pyplot()
        g = self.grid()
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4, 0.35 * g.shape[1] + 2), max(3, 0.25 * g.shape[0] + 1)))
        else:
            fig = ax.figure
        im = ax.imshow(g, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=max(1e-9, np.nanmax(g)))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, label="mean attention weight")
        ax.set_title(f"attention {self.query} -> {self.key} ({self.which} run)", fontsize=9)
        fig.tight_layout()
        return fig

    def plot(self, head: Any = None, example: int = 0, ax=None, tokens=None):
        """The full pattern ``[q_pos, k_pos]`` of one head (a label ``"L8.H1"`` or a ``(layer, head)`` pair;
        default: the top head) on one example."""
        plt = pyplot()
        if self.patterns is None:
            raise UsageError("this result kept no full patterns (too large); measure fewer heads or examples")
        head = as_heads(head, self.n_layers or 1 << 30, self.n_heads or 1 << 30)[0] if head is not None \
            else self.top(1)[0]
        if head not in self.heads:
            raise unknown(head_label(*head), self.labels, "head", "this result")
        i = self.heads.index(head)
        p = self.patterns[i, example]
        if ax is None:
            fig, ax = plt.subplots(figsize=(5, 4.5))
        else:
            fig = ax.figure
        im = ax.imshow(p, origin="upper", cmap="viridis", vmin=0, vmax=1)
        if tokens is not None:
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
            ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
        fig.colorbar(im, ax=ax)
        ax.set_title(f"{head_label(*head)} pattern, example {example}", fontsize=9)
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        """A JSON-safe dict: heads, labels, ``weights [head, batch]``, mean, query, key, their positions
        ``[batch]``, which run, data set, method and cost (without the full patterns)."""
        return _jsonable({"heads": [list(h) for h in self.heads], "labels": self.labels,
                          "weights": self.weights, "mean": self.mean, "query": self.query, "key": self.key,
                          "which": self.which, "dataset": self.dataset, "method": self.method,
                          "query_pos": self.query_pos, "key_pos": self.key_pos, "cost": self.cost})

    def __str__(self) -> str:
        m = self.mean
        order = np.argsort(-m, kind="stable")[:5]
        top = ", ".join(f"{self.labels[i]} {m[i]:.3f}" for i in order)
        return (f"AttentionResult({self.query} -> {self.key}, {self.which} run, {len(self.heads)} heads x "
                f"{self.n} examples; highest mean weight: {top})")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html

        return rich_html(self, self.heatmap)


@dataclass
class HeadScores:
    """Head detector scores on repeated random tokens.

    scores: ``{kind: [layer, head, batch]}`` per-sequence scores; tokens: ``[batch, T]``.
    ``of(kind, heads)`` gives an :class:`AttentionResult` (``weights [head, batch]``) that
    ``fc.assert_attends`` decides.
    """

    scores: dict[str, np.ndarray]
    tokens: np.ndarray
    length: int
    normalize: str
    method: str = ""
    cost: dict = dc_field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        """Number of layers scored (the first axis of each ``scores[kind]``)."""
        return next(iter(self.scores.values())).shape[0]

    @property
    def n_heads(self) -> int:
        """Number of heads per layer (the second axis of each ``scores[kind]``)."""
        return next(iter(self.scores.values())).shape[1]

    def mean(self, kind: str) -> np.ndarray:
        """``[layer, head]`` mean score over sequences."""
        return self._get(kind).mean(-1)

    def _get(self, kind: str) -> np.ndarray:
        if not isinstance(kind, str) or kind not in self.scores:
            raise UsageError(f"no {kind!r} scores: measured kinds: {', '.join(self.scores)} (head_scores(kinds=...) "
                             f"chooses them among {', '.join(HEAD_KINDS)})")
        return self.scores[kind]

    def top(self, kind: str, k: int = 5) -> list[tuple[int, int]]:
        """The ``k`` heads (default 5) with the largest mean ``kind`` score ("previous_token", "duplicate_token"
        or "induction"), as ``(layer, head)`` tuples, best first."""
        k = check_int("k", k, low=0)
        m = self.mean(kind)
        flat = np.argsort(-m.ravel(), kind="stable")[:k]
        return [tuple(int(x) for x in np.unravel_index(i, m.shape)) for i in flat]

    def of(self, kind: str, heads="all") -> AttentionResult:
        """The ``kind`` scores of ``heads`` ("all", an attn_head site set, Sites or (layer, head) pairs) as an
        :class:`AttentionResult` with ``weights [head, batch]``, for
        ``fc.assert_attends(scores.of("induction", [(5, 1)]), mean > 0.5)``."""
        s = self._get(kind)
        hs = as_heads(heads, self.n_layers, self.n_heads)
        w = np.stack([s[l, h] for l, h in hs])
        what = {"previous_token": "previous token", "duplicate_token": "earlier copies of the token",
                "induction": "token after the earlier copy"}[kind]
        return AttentionResult(hs, w, query=f"{kind} score", key=what, which="repeated random tokens",
                               dataset=f"repeated random tokens (n={s.shape[-1]}, length {self.length})",
                               n_layers=self.n_layers, n_heads=self.n_heads,
                               method=f"{self.method}; normalize={self.normalize}", cost=dict(self.cost))

    def plot_data(self, kind: str) -> dict:
        """A JSON-able heatmap dict (layer x head mean ``kind`` score) for the HTML report."""
        return {"kind": "heatmap", "z": self.mean(kind).tolist(), "xlabel": "head", "ylabel": "layer",
                "title": f"{kind} score"}

    def heatmap(self, kind: str = "induction", ax=None):
        """Layer x head heatmap of the mean ``kind`` score (default "induction") on ``ax`` (a new figure when
        None); returns the matplotlib Figure."""
        plt = pyplot()
        g = self.mean(kind)
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4, 0.35 * g.shape[1] + 2), max(3, 0.25 * g.shape[0] + 1)))
        else:
            fig = ax.figure
        im = ax.imshow(g, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, label=f"{kind} score")
        ax.set_title(f"{kind} scores, repeated random tokens (length {self.length})", fontsize=9)
        fig.tight_layout()
        return fig

    plot = heatmap

    def to_dict(self) -> dict:
        """A JSON-safe dict: sequence length, normalization, method, number of sequences, the mean ``[layer,
        head]`` score of each kind, and cost."""
        return _jsonable({"length": self.length, "normalize": self.normalize, "method": self.method,
                          "n": int(self.tokens.shape[0]),
                          "mean": {k: self.mean(k) for k in self.scores}, "cost": self.cost})

    def __str__(self) -> str:
        parts = []
        for k in self.scores:
            (l, h), = self.top(k, 1)
            parts.append(f"{k}: best {head_label(l, h)} {self.mean(k)[l, h]:.3f}")
        return (f"HeadScores({self.n_layers}x{self.n_heads} heads, {self.tokens.shape[0]} sequences of "
                f"[BOS] + 2x{self.length} random tokens; " + "; ".join(parts) + ")")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from fieldcheck.display import rich_html

        return rich_html(self, self.heatmap)


# --- experiments ---------------------------------------------------------------------------------
def attention(field, ds, heads="all", query: Any = "END", key: Any = "IO", which: str = "clean",
              engine: Optional[str] = None) -> AttentionResult:
    """Attention weight from ``query`` to ``key`` (position names of ``ds`` or ints) for each head."""
    if which not in ("clean", "corrupt"):
        raise UsageError(f"which must be 'clean' or 'corrupt', got {which!r}")
    check_dataset(ds, field.model)
    t0 = time.perf_counter()
    hs = as_heads(heads, field.n_layers, field.n_heads)
    qpos = _position(ds, query, "query", "END").to(field.device)
    kpos = _position(ds, key, "key", "IO").to(field.device)
    bad = (kpos > qpos).nonzero()
    if len(bad):
        b = int(bad[0])
        raise DatasetError(f"key {key!r} (position {int(kpos[b])}) comes after query {query!r} (position "
                           f"{int(qpos[b])}) in example {b}: a causal model cannot attend forward; swap them")
    layers = sorted({l for l, _ in hs})
    pats, how = _layer_patterns(field, ds, layers, which, engine)
    b = torch.arange(ds.n, device=field.device)
    T = ds.seq_len
    keep_patterns = len(hs) * ds.n * T * T <= _MAX_PATTERN_ELEMENTS
    rows: dict[tuple[int, int], torch.Tensor] = {}
    full: dict[tuple[int, int], torch.Tensor] = {}
    for l, pat in pats:
        for h in (h for ll, h in hs if ll == l):
            rows[(l, h)] = pat[b, h, qpos, kpos].float().cpu()
            if keep_patterns:
                full[(l, h)] = pat[:, h].float().cpu()
    w = torch.stack([rows[hd] for hd in hs]).numpy()
    keep = torch.stack([full[hd] for hd in hs]).numpy() if keep_patterns else None
    return AttentionResult(hs, w, query=str(query), key=str(key), which=which, dataset=getattr(ds, "name", ""),
                           query_pos=qpos.cpu().numpy(), key_pos=kpos.cpu().numpy(), patterns=keep,
                           n_layers=field.n_layers, n_heads=field.n_heads, method=how,
                           cost={"seconds": time.perf_counter() - t0, "layers": len(layers)})


def _position(ds, name, arg: str, default) -> torch.Tensor:
    """``ds.position(name)``, with a message that says where a default position name came from."""
    try:
        return ds.position(name)
    except DatasetError as e:
        if name != default or not isinstance(name, str):
            raise DatasetError(f"{arg}={name!r}: {e}") from None
        raise DatasetError(f"position {name!r} is the default {arg}= of field.attention (made for the IOI sets, "
                           f"which name the indirect object 'IO'); the data set {getattr(ds, 'name', '')!r} has "
                           f"the positions {sorted(ds.position_names)}: pass {arg}= one of them or an int, e.g. "
                           f"field.attention(ds, heads, {arg}={sorted(ds.position_names)[0]!r})") from None


def repeated_random_tokens(model, n: int, length: int, seed: int = 0) -> torch.Tensor:
    """``[n, 1 + 2*length]``: [BOS] r r, r random ids; ``[n, 2*length]`` (no BOS) for a model whose
    prompts start without one (``model.cfg.default_prepend_bos`` False, Qwen2.5) or whose tokenizer
    has none: each model is fed what it was trained with."""
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    if not getattr(model.cfg, "default_prepend_bos", True):
        bos = None
    d_vocab = model.cfg.d_vocab
    special = set(getattr(tok, "all_special_ids", []) or []) if tok is not None else set()
    g = torch.Generator().manual_seed(int(seed))
    pool = torch.tensor([i for i in range(d_vocab) if i not in special]) if len(special) < d_vocab else \
        torch.arange(d_vocab)
    r = pool[torch.randint(len(pool), (n, length), generator=g)]
    seq = torch.cat([r, r], 1)
    if bos is not None:
        seq = torch.cat([torch.full((n, 1), int(bos)), seq], 1)
    return seq


def detection_patterns(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """TransformerLens's detection patterns for one sequence ``[T]``: ``{kind: [T, T]}`` (0/1).

    previous_token: key = query - 1; duplicate_token: earlier positions with the same token;
    induction: the positions right after those earlier copies (keys strictly before the query)."""
    T = tokens.shape[0]
    prev = torch.diag(torch.ones(T - 1), -1)
    same = (tokens[:, None] == tokens[None, :]).float()
    dup = torch.tril(same, -1)
    ind = torch.zeros(T, T)
    ind[:, 1:] = dup[:, :-1]
    ind = torch.tril(ind)
    return {"previous_token": prev, "duplicate_token": dup, "induction": ind}


def head_scores(field, n: int = 8, length: int = 20, seed: int = 0, kinds: Sequence[str] = HEAD_KINDS,
                normalize: str = "targets", engine: Optional[str] = None) -> HeadScores:
    """Previous-token, duplicate-token and induction scores of every head (``[layer, head, batch]``)."""
    from fieldcheck.field.engine import run_cache

    if isinstance(kinds, str) or not isinstance(kinds, (list, tuple)) or not kinds:
        raise UsageError(f"kinds must be a non-empty list of head kinds ({', '.join(HEAD_KINDS)}), got {kinds!r}")
    kinds = tuple(kinds)
    bad = [k for k in kinds if not isinstance(k, str) or k not in HEAD_KINDS]
    if bad:
        raise UsageError(f"unknown head kind {bad[0]!r}; valid: {', '.join(HEAD_KINDS)}")
    check_choice("normalize", normalize, ("targets", "transformer_lens"))
    n = check_int("n", n, low=1, hint="the number of random sequences")
    length = check_int("length", length, low=2, hint="random tokens repeated once")
    seed = check_int("seed", seed, low=0)
    t0 = time.perf_counter()
    n_ctx = getattr(field.model.cfg, "n_ctx", None)
    if n_ctx and 2 * length + 1 > n_ctx:
        raise UsageError(f"length={length}: 2*length+1 = {2 * length + 1} tokens exceed the model's context of "
                         f"{n_ctx}; use length <= {(n_ctx - 1) // 2}")
    toks = repeated_random_tokens(field.model, n, length, seed)
    if n_ctx and toks.shape[1] > n_ctx:
        raise UsageError(f"2*length+1 = {toks.shape[1]} tokens exceed the model's context of {n_ctx}; use a "
                         "smaller length")
    L, H = field.n_layers, field.n_heads
    engine = _engine(field, engine)
    dev_toks = toks.to(field.device)
    if engine == "lightcone":
        cache = run_cache(field.require_functional(), dev_toks)
        pats = ((l, patterns_from_cache(field.fm, cache.resid[l], cache.k[l], l)) for l in range(L))
        how = "one functional forward"
    else:
        pats = iter(patterns_hooked(field.model, dev_toks, range(L)).items())
        how = "one hooked forward (hook_pattern)"
    D = {k: torch.stack([detection_patterns(toks[b])[k] for b in range(n)]) for k in kinds}  # [batch, q, k]
    out = {k: np.zeros((L, H, n)) for k in kinds}
    for l, pat in pats:  # one layer at a time: [batch, head, q, k]
        A = pat.float().cpu()
        for k in kinds:
            hit = (A * D[k][:, None]).sum((-1, -2))  # [batch, head]
            if normalize == "targets":
                den = (D[k].sum(-1) > 0).sum(-1).clamp(min=1).float()[:, None]
            else:
                den = A.sum((-1, -2))
            out[k][l] = (hit / den).double().numpy().T
    return HeadScores({k: out[k] for k in kinds}, toks.numpy(), length, normalize,
                      method=how, cost={"seconds": time.perf_counter() - t0, "tokens": int(toks.numel())})
