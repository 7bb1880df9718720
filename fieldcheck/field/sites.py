"""Sites: points of the depth x token lattice (or a component at one), named the TransformerLens way.

A site is ``(kind, layer, pos[, head])``. ``pos`` is an int (negative counts from the end) or a
position name of the data set (``"END"``, ``"S2"``), resolved per example when the site is used.
A site prints as its label (:mod:`fieldcheck.field.labels`: ``L20.resid_pre@END``, ``L3.H2@IO``,
``L5.mlp@7``), and every function that takes sites also takes these labels as strings.

    resid_pre(layers, positions)      blocks.{l}.hook_resid_pre     phi(l, t)
    resid_mid(layers, positions)      blocks.{l}.hook_resid_mid     after attention, before the MLP
    resid_post(layers, positions)     blocks.{l}.hook_resid_post    phi(l+1, t)
    attn_head(layers, heads, positions)  blocks.{l}.attn.hook_z     one head's output (by position)
    attn_out(layers, positions)       blocks.{l}.hook_attn_out
    mlp_out(layers, positions)        blocks.{l}.hook_mlp_out

``layers``/``heads``/``positions`` take an int, a range or list, ``"all"`` (or the builtin ``all``),
and positions also a name. Layers can also be relative to the model's depth, resolved with the
model: ``depth(0.85, 1)`` (the last 15%), ``depth(0.5)`` (the middle layer), ``last(3)``,
``first(2)``, so that one claim runs on models of different depths. The constructors return a :class:`SiteSet`, resolved against a model
and a data set by :meth:`SiteSet.resolve`, which raises :class:`SiteError` naming the valid range.
"""
from __future__ import annotations

import builtins
import math
from dataclasses import dataclass, replace
from typing import Iterable, Optional, Union

from fieldcheck.errors import SiteError
from fieldcheck.field.labels import format_label, parse

KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_head", "attn_out", "mlp_out")
_HOOKS = {
    "resid_pre": "blocks.{l}.hook_resid_pre",
    "resid_mid": "blocks.{l}.hook_resid_mid",
    "resid_post": "blocks.{l}.hook_resid_post",
    "attn_head": "blocks.{l}.attn.hook_z",
    "attn_out": "blocks.{l}.hook_attn_out",
    "mlp_out": "blocks.{l}.hook_mlp_out",
}

Pos = Union[int, str]


@dataclass(frozen=True)
class Site:
    """One site. ``pos`` is an int or a position name; ``head`` only for ``attn_head``."""

    kind: str
    layer: int
    pos: Pos
    head: Optional[int] = None

    @property
    def hook_name(self) -> str:
        """The TransformerLens hook this site reads (``blocks.{l}.hook_resid_pre``, ...)."""
        return _HOOKS[self.kind].format(l=self.layer)

    @property
    def label(self) -> str:
        """The site's label: ``L20.resid_pre@END``, ``L3.H2@IO``, ``L5.mlp@7`` (docs/writing-claims.md)."""
        return format_label(self.kind, self.layer, self.head, pos=self.pos)

    @property
    def component(self) -> str:
        """The label without the position: ``L3.H2``, ``L5.mlp``, ``L20.resid_pre``."""
        return format_label(self.kind, self.layer, self.head)

    def __str__(self) -> str:
        return self.label

    def to_dict(self) -> dict:
        return {"kind": self.kind, "layer": self.layer, "pos": self.pos, "head": self.head,
                "label": self.label, "hook": self.hook_name}

    # --- where the engine inserts a source ---------------------------------------------
    @property
    def stage(self) -> int:
        """Global stage index: 4*l + (0 resid_pre, 1 z, 2 resid_mid / attn_out, 3 mlp_out)."""
        if self.kind == "resid_pre":
            return 4 * self.layer
        if self.kind == "resid_post":
            return 4 * (self.layer + 1)
        if self.kind == "attn_head":
            return 4 * self.layer + 1
        if self.kind in ("resid_mid", "attn_out"):
            return 4 * self.layer + 2
        return 4 * self.layer + 3  # mlp_out


@dataclass(frozen=True)
class Depth:
    """Layers given relative to the model's depth, resolved when the model is known, so that one
    claim file runs on models of different depths (an out-of-range layer is impossible).

    ``depth(lo, hi)``: the layers ``l`` with ``lo <= l / n_layers < hi`` (``hi = 1`` includes
    the last layer); ``depth(f)``: the one layer nearest to ``f * n_layers``; ``last(k)``: the
    last ``k`` layers; ``first(k)``: the first ``k``. ``.of(n)`` gives the list of layer indices
    for a model of ``n`` layers (or anything with ``n_layers``: a Field, ``model.cfg``)."""

    lo: float
    hi: Optional[float] = None
    count: Optional[int] = None     # last(k) / first(k): k layers from the end (-k) or the start (+k)

    def of(self, n_layers) -> list[int]:
        L = _n_layers(n_layers)
        if self.count is not None:
            k = min(abs(self.count), L)
            return list(range(L - k, L)) if self.count < 0 else list(range(k))
        if self.hi is None:
            return [min(L - 1, max(0, int(math.floor(self.lo * L + 0.5))))]
        hi = math.inf if self.hi >= 1 else self.hi
        return [l for l in range(L) if self.lo <= l / L < hi]

    def __iter__(self):
        raise SiteError(f"{self!r} is relative to the model's depth: resolve it with .of(n_layers) "
                        "(or .of(field)) before iterating")

    def __repr__(self) -> str:
        if self.count is not None:
            return f"last({-self.count})" if self.count < 0 else f"first({self.count})"
        return f"depth({self.lo:g})" if self.hi is None else f"depth({self.lo:g}, {self.hi:g})"


def _n_layers(x) -> int:
    n = x if isinstance(x, int) and not isinstance(x, bool) else getattr(x, "n_layers", None)
    if n is None:
        n = getattr(getattr(x, "cfg", None), "n_layers", None)
    if not isinstance(n, int) or n < 1:
        raise SiteError(f"cannot read a number of layers from {type(x).__name__}: give an int, a Field or a model")
    return n


def depth(lo: float, hi: Optional[float] = None) -> Depth:
    """Layers at a fraction of the model's depth: ``depth(0.85, 1)`` the last 15% of the layers,
    ``depth(0.5)`` the middle layer (see :class:`Depth`)."""
    for name, v in (("lo", lo), ("hi", hi)):
        if (v is not None or name == "lo") and (isinstance(v, bool) or not isinstance(v, (int, float))
                                                or not 0 <= v <= 1):
            raise SiteError(f"depth({lo!r}, {hi!r}): {name} must be a fraction of the depth in [0, 1]")
    if hi is not None and hi <= lo:
        raise SiteError(f"depth({lo!r}, {hi!r}): hi must be above lo")
    return Depth(float(lo), None if hi is None else float(hi))


def last(k: int) -> Depth:
    """The last ``k`` layers of the model (all of them when it has fewer)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SiteError(f"last({k!r}): k must be a positive number of layers")
    return Depth(0.0, None, -k)


def first(k: int) -> Depth:
    """The first ``k`` layers of the model (all of them when it has fewer)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SiteError(f"first({k!r}): k must be a positive number of layers")
    return Depth(0.0, None, k)


def _is_all(x) -> bool:
    return x is builtins.all or (isinstance(x, str) and x == "all")


def _as_list(x, what: str) -> Union[list, str, Depth]:
    if _is_all(x):
        return "all"
    if isinstance(x, Depth):
        if what != "layers":
            raise SiteError(f"{what}={x!r}: depth(...), last(...) and first(...) give layers, not {what}")
        return x
    if isinstance(x, (int, str)) and not isinstance(x, bool):
        return [x]
    if isinstance(x, (range, list, tuple)):
        return list(x)
    import numbers

    try:  # numpy / torch
        vals = list(x) if not isinstance(x, (dict, set, bytes)) else None
    except TypeError:
        vals = None
    if vals is None or not all(isinstance(v, numbers.Integral) or (hasattr(v, "item") and float(v) == int(v))
                               for v in vals):
        raise SiteError(f"{what}={x!r} is not an int, a range/list, a name or 'all'")
    return [int(v) for v in vals]


class SiteSet:
    """A set of sites, possibly unresolved (``"all"`` layers) until a model is known.

    ``SiteSet + SiteSet`` concatenates. Iterating an unresolved set raises; call ``resolve``.
    """

    def __init__(self, specs: list[tuple], sites: Optional[list[Site]] = None):
        self._specs = specs
        self._sites = sites

    @classmethod
    def of(cls, sites: Iterable[Site]) -> "SiteSet":
        sites = list(sites)
        return cls([], sites)

    def __add__(self, other: "SiteSet") -> "SiteSet":
        other = as_site_set(other)
        if self._sites is not None and other._sites is not None:
            return SiteSet([], self._sites + other._sites)
        return SiteSet(self._specs + [("sites", self._sites)] * (self._sites is not None)
                       + other._specs + [("sites", other._sites)] * (other._sites is not None))

    def position_hints(self) -> tuple[list[str], int]:
        """The position names and the largest int position this set mentions, to resolve it where
        the positions do not matter (attention reads its own query and key, DLA all positions):
        ``(sorted names including "END", largest position)``; ``"all"`` positions count as one
        token. A negative position -k counts as k - 1."""
        names, max_pos = {"END"}, 0
        specs = list(self._specs)
        if self._sites is not None:
            specs.append(("sites", self._sites))
        for spec in specs:
            pos = [s.pos for s in spec[1]] if spec[0] == "sites" else (spec[2] if isinstance(spec[2], list) else [])
            for p in pos:
                if isinstance(p, str):
                    names.add(p)
                else:
                    max_pos = max(max_pos, int(p) if int(p) >= 0 else -int(p) - 1)
        return sorted(names), max_pos

    def component_labels(self, n_layers: Optional[int] = None, n_heads: Optional[int] = None) -> list[str]:
        """The labels of the components this set names, each at its positions (``"L3.H2@END"``), or without a
        position where the set takes every position (``attn_head(3, 2)`` gives ``"L3.H2"``): how
        circuits, attention and DLA read site objects. ``"all"`` layers or heads need ``n_layers`` /
        ``n_heads`` (SiteError without them)."""
        out: list[str] = []
        specs = list(self._specs) + ([("sites", self._sites)] if self._sites is not None else [])
        for spec in specs:
            if spec[0] == "sites":
                out.extend(s.label for s in spec[1])
                continue
            kind, layers, positions, heads = spec
            if layers == "all" or (kind == "attn_head" and heads == "all"):
                n = n_layers if layers == "all" else n_heads
                if n is None:
                    raise SiteError(f"{kind}(layers={_fmt(layers)}, heads={_fmt(heads)}) names 'all' of them, which "
                                    "needs a model; give the layers and heads explicitly")
            layers_ = list(range(n_layers)) if layers == "all" else layers
            heads_ = (list(range(n_heads)) if heads == "all" else heads) if kind == "attn_head" else [None]
            poss = [None] if positions == "all" else positions
            out.extend(format_label(kind, l, h, pos=p) for l in layers_ for h in heads_ for p in poss)
        return list(dict.fromkeys(out))

    def resolve(self, n_layers: int, n_heads: int, seq_len: int, position_names: Iterable[str] = ("END",)) -> list[Site]:
        """The concrete sites for a model with ``n_layers``/``n_heads`` and prompts of ``seq_len`` tokens."""
        names = set(position_names)
        out: list[Site] = []
        specs = list(self._specs) + ([("sites", self._sites)] if self._sites is not None and not self._specs else [])
        for spec in specs:
            if spec[0] == "sites":
                out.extend(_check_site(s, n_layers, n_heads, seq_len, names) for s in spec[1])
                continue
            kind, layers, positions, heads = spec
            if kind not in KINDS:
                raise SiteError(f"unknown site kind {kind!r}; valid kinds: {', '.join(KINDS)}")
            layers_ = list(range(n_layers)) if layers == "all" else layers.of(n_layers) \
                if isinstance(layers, Depth) else layers
            layers_ = [_layer_index(l, kind, n_layers) for l in layers_]
            positions_ = [_position(p, seq_len, names) for p in (range(seq_len) if positions == "all" else positions)]
            if kind == "attn_head":
                heads_ = [_head_index(h, n_heads) for h in (range(n_heads) if heads == "all" else heads)]
                out.extend(Site(kind, l, p, h) for l in layers_ for p in positions_ for h in heads_)
            else:
                out.extend(Site(kind, l, p) for l in layers_ for p in positions_)
        if not out:
            raise SiteError("the site set is empty; give at least one layer and position")
        return out

    def __repr__(self) -> str:
        if self._sites is not None and not self._specs:
            return f"SiteSet({len(self._sites)} sites: {', '.join(s.label for s in self._sites[:6])}{'...' if len(self._sites) > 6 else ''})"
        parts = [f"{k}(layers={_fmt(l)}, positions={_fmt(p)}{', heads=' + _fmt(h) if k == 'attn_head' else ''})"
                 for k, l, p, h in [s for s in self._specs if s[0] != "sites"]]
        return " + ".join(parts) or "SiteSet()"


def _check_site(s: Site, n_layers: int, n_heads: int, seq_len: int, names: set) -> Site:
    """Validate a Site built directly (the constructors validate their own); a negative layer or
    position or head counts from the end, as in the constructors (``Site("resid_pre", -1, -1)`` is
    ``resid_pre(-1, -1)``)."""
    if not isinstance(s, Site) or s.kind not in KINDS:
        raise SiteError(f"unknown site kind {getattr(s, 'kind', s)!r}; valid kinds: {', '.join(KINDS)}")
    layer, pos = _layer_index(s.layer, s.kind, n_layers), _position(s.pos, seq_len, names)
    if s.kind == "attn_head":
        if s.head is None:
            raise SiteError(f"an attn_head site needs a head: the model has heads 0..{n_heads - 1}")
        head = _head_index(s.head, n_heads)
    elif s.head is not None:
        raise SiteError(f"{s.kind} sites have no head (got head={s.head!r})")
    else:
        head = None
    return s if (layer, pos, head) == (s.layer, s.pos, s.head) else replace(s, layer=layer, pos=pos, head=head)


def _layer_index(l, kind: str, n_layers: int) -> int:
    """Layer ``l`` of a ``kind`` site as 0..n (negative counts from the end; resid_pre also has
    layer n_layers, the final residual); SiteError naming the valid range otherwise."""
    if not isinstance(l, int) or isinstance(l, bool):
        raise SiteError(f"layer {l!r} is not an int; layers are 0..{n_layers - 1}")
    max_layer = n_layers + 1 if kind == "resid_pre" else n_layers  # resid_pre(n_layers) = final residual
    i = l + n_layers if l < 0 else l
    if not 0 <= i < max_layer:
        raise SiteError(f"layer {l} out of range for {kind}: the model has layers 0..{max_layer - 1} "
                        f"(or -{n_layers}..-1)")
    return i


def _position(p, seq_len: int, names: set) -> Pos:
    """Position ``p``: a name of the data set, or an int in -seq_len..seq_len-1 as 0..seq_len-1."""
    if isinstance(p, str):
        if p not in names:
            raise SiteError(f"position name {p!r} is not in the data set; its named positions are {sorted(names)}")
        return p
    if not isinstance(p, int) or isinstance(p, bool):
        raise SiteError(f"position {p!r} is not an int or a position name")
    if not -seq_len <= p < seq_len:
        raise SiteError(f"position {p} out of range: prompts have {seq_len} tokens (positions 0..{seq_len - 1}, "
                        f"or -{seq_len}..-1)")
    return p + seq_len if p < 0 else p


def _head_index(h, n_heads: int) -> int:
    """Head ``h`` in -n_heads..n_heads-1 as 0..n_heads-1; SiteError naming the valid range otherwise."""
    if not isinstance(h, int) or isinstance(h, bool) or not -n_heads <= h < n_heads:
        raise SiteError(f"head {h!r} out of range: the model has heads 0..{n_heads - 1} (or -{n_heads}..-1)")
    return h % n_heads


def _fmt(x) -> str:
    if x == "all":
        return "all"
    if isinstance(x, list) and len(x) > 4 and all(isinstance(v, int) for v in x) and x == list(range(x[0], x[-1] + 1)):
        return f"{x[0]}..{x[-1]}"
    return repr(x)


def from_label(label) -> SiteSet:
    """The site set a label names (:mod:`fieldcheck.field.labels`): ``"L20.resid_pre@END"`` is
    ``resid_pre(20, "END")``, ``"L3.H2@IO"`` is ``attn_head(3, 2, "IO")``; a label without a position
    (``"L3.H2"``) means every position. SiteError for a label that is not a site (``embed``,
    ``logits``, a head's q/k/v input) or not a label."""
    lab = parse(label, "site")
    kind = lab.site_kind
    if kind is None:
        raise SiteError(f"{str(lab)!r} is a component but not a site; sites are heads 'L3.H2', 'L3.attn', 'L3.mlp' "
                        "and 'L3.resid_pre' (.resid_mid, .resid_post), each optionally '@position'")
    pos = "all" if lab.pos is None else lab.pos
    return _make(kind, lab.layer, pos, lab.head if kind == "attn_head" else None)


def as_site_set(x) -> SiteSet:
    """Accept a SiteSet, one Site, a label (``"L20.resid_pre@END"``, ``"L3.H2@IO"``), or a list mixing
    Sites, labels and site sets."""
    if isinstance(x, SiteSet):
        return x
    if isinstance(x, Site):
        return SiteSet.of([x])
    if isinstance(x, str):
        return from_label(x)
    if isinstance(x, (list, tuple)) and x and all(isinstance(s, Site) for s in x):
        return SiteSet.of(x)
    if isinstance(x, (list, tuple)) and x and all(isinstance(s, (Site, SiteSet, str)) for s in x):
        out = as_site_set(x[0])
        for s in x[1:]:
            out = out + as_site_set(s)
        return out
    raise SiteError(f"{x!r} is not a site set; build one with fieldcheck.sites.resid_pre(...), attn_head(...), ... "
                    "or name sites by label ('L20.resid_pre@END', 'L3.H2@IO')")


def _make(kind: str, layers, positions, heads=None) -> SiteSet:
    return SiteSet([(kind, _as_list(layers, "layers"), _as_list(positions, "positions"),
                     _as_list(heads, "heads") if heads is not None else None)])


def resid_pre(layers="all", positions="all") -> SiteSet:
    """phi(l, t): the residual entering block l (``blocks.{l}.hook_resid_pre``)."""
    return _make("resid_pre", layers, positions)


def resid_mid(layers="all", positions="all") -> SiteSet:
    """The residual after block l's attention, before its MLP (``blocks.{l}.hook_resid_mid``)."""
    return _make("resid_mid", layers, positions)


def resid_post(layers="all", positions="all") -> SiteSet:
    """The residual leaving block l (``blocks.{l}.hook_resid_post``) = phi(l+1, t)."""
    return _make("resid_post", layers, positions)


def attn_head(layers="all", heads="all", positions="all") -> SiteSet:
    """One attention head's output z at a position (``blocks.{l}.attn.hook_z[:, pos, head]``);
    ``heads=None`` is "all"."""
    return _make("attn_head", layers, positions, heads if heads is not None else "all")


def attn_out(layers="all", positions="all") -> SiteSet:
    """Block l's attention output (``blocks.{l}.hook_attn_out``)."""
    return _make("attn_out", layers, positions)


def mlp_out(layers="all", positions="all") -> SiteSet:
    """Block l's MLP output (``blocks.{l}.hook_mlp_out``)."""
    return _make("mlp_out", layers, positions)


def site(kind: str, layer: int, pos: Pos, head: Optional[int] = None) -> SiteSet:
    """One site by kind name; unknown kinds raise SiteError listing the valid ones."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise SiteError(f"unknown site kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if kind != "attn_head" and head is not None:
        raise SiteError(f"{kind} sites have no head (got head={head!r}); heads are for attn_head sites")
    return _make(kind, layer, pos, head if kind == "attn_head" else None)


def layer_index(layer, n_rows: int, what: str) -> int:
    """The row of ``layer`` in a result indexed by layer with rows 0..n_rows-1 (negative counts from
    the end: -1 is the last), for the lookups by layer of results (``LogitLens.at``,
    ``GreenResult.at``). SiteError naming the layers that exist otherwise, e.g. ``layer 24 is not
    in the logit lens: it has layers 0..18 (or -19..-1)``; a model of another depth than the one a
    claim was written for meets exactly this."""
    import numbers

    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise SiteError(f"layer {layer!r} is not an int; {what} has layers 0..{n_rows - 1}")
    if not -n_rows <= layer < n_rows:
        raise SiteError(f"layer {int(layer)} is not in {what}: it has layers 0..{n_rows - 1} (or -{n_rows}..-1, "
                        "-1 the last)")
    return int(layer) % n_rows


# --- dictionary features (SAEs, transcoders) -------------------------------------------------
# A feature site names latent i of a dictionary (an SAE or a transcoder, fieldcheck.sae) at a
# position. The dictionary is any object with ``hook_name``/``hook_name_out``, ``d_sae`` and
# ``name`` (duck-typed here: this module sits below fieldcheck.sae). Patching it inserts
# (a_i(src) - a_i(tgt)) * W_dec[i] into the dictionary's output site; the error term is its own
# node (``latent=None``).
_HOOK_KINDS = {v.split(".", 2)[2]: k for k, v in _HOOKS.items()}
_HOOK_KINDS["hook_mlp_in"] = "mlp_in"  # a transcoder's input: the residual the MLP reads


def site_of_hook(hook_name: str) -> tuple[str, int]:
    """``(kind, layer)`` of a TransformerLens hook name (``blocks.3.hook_resid_pre`` ->
    ``("resid_pre", 3)``); SiteError for a hook fieldcheck cannot place on the lattice."""
    parts = str(hook_name).split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] in _HOOK_KINDS:
        return _HOOK_KINDS[parts[2]], int(parts[1])
    raise SiteError(f"hook {hook_name!r} is not a site fieldcheck knows; dictionaries may read "
                    f"blocks.{{layer}}.{{{', '.join(sorted(_HOOK_KINDS))}}}")


@dataclass(frozen=True, eq=False)
class FeatureSite:
    """Latent ``latent`` of ``dictionary`` at position ``pos`` (``latent=None``: its error term).

    ``pos`` is an int, a position name, or ``"all"`` (every position of the prompt at once)."""

    dictionary: object
    latent: Optional[int]
    pos: Pos

    kind = "feature"
    head = None

    @property
    def is_error(self) -> bool:
        return self.latent is None

    @property
    def layer(self) -> int:
        return site_of_hook(self.hook_name)[1]

    @property
    def hook_name(self) -> str:
        """The hook the feature writes to (a transcoder's output hook)."""
        return getattr(self.dictionary, "hook_name_out", None) or self.dictionary.hook_name

    @property
    def stage(self) -> int:
        """Where the feature's decoder row enters the residual stream, as :attr:`Site.stage`
        (``4*l`` + 0 before block l, 1 head outputs, 2 after attention, 3 after the MLP)."""
        kind, layer = site_of_hook(self.hook_name)
        return Site("mlp_out" if kind == "mlp_in" else kind, layer, 0).stage

    @property
    def label(self) -> str:
        p = self.pos if isinstance(self.pos, str) else f"P{self.pos}"
        what = "ERR" if self.latent is None else f"F{self.latent}"
        return f"{self.dictionary.name}:{what}@{p}"

    def _key(self):
        return (id(self.dictionary), self.latent, self.pos)

    def __eq__(self, other) -> bool:
        return isinstance(other, FeatureSite) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return self.label

    def to_dict(self) -> dict:
        return {"kind": "feature_error" if self.latent is None else "feature", "dictionary": self.dictionary.name,
                "latent": self.latent, "layer": self.layer, "pos": self.pos, "head": None, "label": self.label,
                "hook": self.hook_name}


class FeatureSiteSet:
    """Feature sites of one or more dictionaries, resolved against a data set by ``resolve``.

    ``+`` concatenates feature site sets; mixing them with residual sites is refused (patch
    them in separate calls)."""

    def __init__(self, specs: list[tuple]):
        self._specs = specs  # (dictionary, latents or "all" or "active", positions, with_error)

    def __add__(self, other):
        if not isinstance(other, FeatureSiteSet):
            raise SiteError("feature sites cannot be combined with residual/head sites in one set; "
                            "patch them in separate calls")
        return FeatureSiteSet(self._specs + other._specs)

    @property
    def dictionaries(self) -> list:
        return list(dict.fromkeys(s[0] for s in self._specs))

    def resolve(self, n_layers: int, n_heads: int, seq_len: int,
                position_names: Iterable[str] = ("END",)) -> list[FeatureSite]:
        names = set(position_names)
        out: list[FeatureSite] = []
        for d, latents, positions, with_error in self._specs:
            d_sae = int(d.d_sae)
            lat = list(range(d_sae)) if latents == "all" else latents
            for i in lat:
                if i is None:
                    continue
                if isinstance(i, bool) or not isinstance(i, int) or not -d_sae <= i < d_sae:
                    raise SiteError(f"latent {i!r} out of range: {d.name} has latents 0..{d_sae - 1}")
            lat = [i % d_sae for i in lat if i is not None]
            poss = ["all"] if positions == "all" else positions
            for p in poss:
                if p == "all":
                    continue
                if isinstance(p, str):
                    if p not in names:
                        raise SiteError(f"position name {p!r} is not in the data set; its named positions are "
                                        f"{sorted(names)}")
                elif isinstance(p, bool) or not isinstance(p, int) or not -seq_len <= p < seq_len:
                    raise SiteError(f"position {p!r} out of range: prompts have {seq_len} tokens")
            poss = [p + seq_len if isinstance(p, int) and p < 0 else p for p in poss]
            layer = site_of_hook(getattr(d, "hook_name_out", None) or d.hook_name)[1]
            if layer >= n_layers:
                raise SiteError(f"{d.name} reads {d.hook_name}, but the model has layers 0..{n_layers - 1}")
            out.extend(FeatureSite(d, i, p) for p in poss for i in lat)
            if with_error:
                out.extend(FeatureSite(d, None, p) for p in poss)
        if not out:
            raise SiteError("the feature site set is empty; give at least one latent (or error=True)")
        return list(dict.fromkeys(out))

    def __repr__(self) -> str:
        parts = [f"features({d.name}, latents={_fmt(l)}, positions={_fmt(p)}{', error=True' if e else ''})"
                 for d, l, p, e in self._specs]
        return " + ".join(parts)


def is_feature_sites(sites) -> bool:
    """True for dictionary feature sites (a FeatureSiteSet, a FeatureSite or a non-empty list of
    them): the experiments that take them route them to :mod:`fieldcheck.experiments.features`."""
    if isinstance(sites, (FeatureSiteSet, FeatureSite)):
        return True
    return isinstance(sites, (list, tuple)) and bool(sites) and all(isinstance(s, FeatureSite) for s in sites)


def features(dictionary, latents="all", positions="all", error: bool = False) -> FeatureSiteSet:
    """Latents of an SAE or transcoder (``fieldcheck.sae``) at positions.

    ``latents``: an int, a list/range, or ``"all"``; ``positions``: an int, a name, a list, or
    ``"all"`` -- every position of the prompt *together* (one node per latent, as a feature
    patched or ablated everywhere). ``error=True`` adds the dictionary's error term as a node."""
    if not hasattr(dictionary, "d_sae") or not hasattr(dictionary, "hook_name"):
        raise SiteError(f"{dictionary!r} is not a dictionary; load one with fieldcheck.sae.load(path) or "
                        "train one with fieldcheck.sae.train(...)")
    lat = _as_list(latents, "latents")
    pos = "all" if _is_all(positions) else _as_list(positions, "positions")
    return FeatureSiteSet([(dictionary, lat, pos, bool(error))])


def feature(dictionary, latent: int, positions="all") -> FeatureSiteSet:
    """One latent of a dictionary (see :func:`features`)."""
    return features(dictionary, [latent], positions)


def sae_error(dictionary, positions="all") -> FeatureSiteSet:
    """The error term of a dictionary (what its reconstruction misses) as a node of its own."""
    s = features(dictionary, [], positions, error=True)
    return s
