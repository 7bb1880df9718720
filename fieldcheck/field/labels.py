"""One label grammar for the components and sites of a model, used by every feature.

A label names a component of the model, optionally at a position::

    L{l}.H{h}            attention head h of block l (its output; ``attn_head`` sites)
    L{l}.H{h}.q|k|v      that head's query, key or value input (a receiver of circuit edges)
    L{l}.attn            block l's attention output: its heads and the output bias (``attn_out``)
    L{l}.attn_bias       block l's attention output bias alone (direct logit attribution)
    L{l}.mlp             block l's MLP (its output; as a circuit receiver, its input) (``mlp_out``)
    L{l}.resid_pre       phi(l, t), the residual entering block l (``resid_pre``; ``L{l}`` for short)
    L{l}.resid_mid       the residual after block l's attention (``resid_mid``)
    L{l}.resid_post      the residual leaving block l = phi(l + 1, t) (``resid_post``)
    embed                the embeddings (with position embeddings where the model has them)
    bias                 the constant term of direct logit attribution (final-norm and unembedding biases)
    logits               the final residual read by the unembedding (a circuit receiver)

    label@pos            at one position: a position name of the data set (``@END``, ``@IO``) or
                         an int (``@7``; negative counts from the end)

Every feature accepts these strings and the site objects of :mod:`fieldcheck.sites` (attention,
DLA, circuits, ``select``, ``patch``, ...) and prints them the same way in results, reports and
errors; an unknown label's error lists the nearest valid ones (:func:`unknown`). The spellings of
0.1 still parse with a DeprecationWarning: ``MLP{l}`` (circuits) is ``L{l}.mlp`` and ``input``
is ``embed``.
"""
from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass
from typing import Iterable, Optional, Union

from fieldcheck.errors import SiteError

__all__ = ["Label", "parse", "canonical", "format_label", "unknown", "nearest", "from_0_1", "SITE_KINDS", "GRAMMAR"]

Pos = Union[int, str]

#: the component part of a label -> the site kind it is (components without a site kind map to None)
SITE_KINDS = {"head": "attn_head", "attn": "attn_out", "mlp": "mlp_out", "resid_pre": "resid_pre",
              "resid_mid": "resid_mid", "resid_post": "resid_post"}
_KIND_OF_SITE = {v: k for k, v in SITE_KINDS.items()}
_LAYER_PARTS = ("attn", "attn_bias", "mlp", "resid_pre", "resid_mid", "resid_post")
_GLOBAL = ("embed", "bias", "logits")

#: one line that the errors print
GRAMMAR = ("labels are 'L{layer}.H{head}', 'L{layer}.H{head}.q' (.k, .v), 'L{layer}.attn', 'L{layer}.mlp', "
           "'L{layer}.resid_pre' (.resid_mid, .resid_post), 'embed', 'bias', 'logits', each optionally "
           "'@position' (a name such as END or an int)")

_RE = re.compile(r"^L(?P<layer>-?\d+)(?:\.(?:H(?P<head>\d+)(?:\.(?P<port>[qkv]))?|(?P<part>[a-z_]+)))?$")
_OLD_MLP = re.compile(r"^MLP(\d+)$")


@dataclass(frozen=True)
class Label:
    """A parsed label: ``kind`` is "head", "attn", "attn_bias", "mlp", "resid_pre", "resid_mid",
    "resid_post", "embed", "bias" or "logits"; ``layer``/``head`` ints where the kind has them;
    ``port`` "q", "k" or "v" for a head's input; ``pos`` a position name, an int or None."""

    kind: str
    layer: Optional[int] = None
    head: Optional[int] = None
    port: Optional[str] = None
    pos: Optional[Pos] = None

    @property
    def component(self) -> str:
        """The label without its position (``"L3.H2"`` for ``L3.H2@END``)."""
        return format_label(self.kind, self.layer, self.head, self.port)

    @property
    def site_kind(self) -> Optional[str]:
        """The :mod:`fieldcheck.sites` kind of this component (``"attn_head"``, ``"mlp_out"``, ...), or
        None for components that are not sites (``embed``, ``bias``, ``logits``, head inputs, ``attn_bias``)."""
        return None if self.port is not None else SITE_KINDS.get(self.kind)

    def __str__(self) -> str:
        return format_label(self.kind, self.layer, self.head, self.port, self.pos)


def format_label(kind: str, layer: Optional[int] = None, head: Optional[int] = None, port: Optional[str] = None,
                 pos: Optional[Pos] = None) -> str:
    """The canonical text of a component (``kind`` as in :class:`Label`, or a site kind such as
    ``"attn_head"``/``"mlp_out"``) at ``pos`` (None: no position): ``format_label("attn_head", 3, 2,
    pos="END")`` is ``"L3.H2@END"``."""
    kind = _KIND_OF_SITE.get(kind, kind)
    if kind in _GLOBAL:
        text = kind
    elif kind == "head":
        text = f"L{layer}.H{head}" + (f".{port}" if port else "")
    elif kind in _LAYER_PARTS:
        text = f"L{layer}.{kind}"
    else:
        raise SiteError(f"unknown component kind {kind!r}; {GRAMMAR}")
    return text if pos is None else f"{text}@{pos}"


def _pos(text: str) -> Pos:
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def parse(label, what: str = "label") -> Label:
    """A :class:`Label` from its text (see the module doc). The spellings of 0.1 parse with a
    DeprecationWarning (``MLP3`` -> ``L3.mlp``, ``input`` -> ``embed``); anything else that is not
    in the grammar raises SiteError naming ``what`` and the grammar."""
    if isinstance(label, Label):
        return label
    if not isinstance(label, str):
        raise SiteError(f"{what} {label!r} is not a label; {GRAMMAR}")
    text = label.replace(" ", "")
    body, at, pos_text = text.partition("@")
    if at and not pos_text:
        raise SiteError(f"{what} {label!r} has an empty position after '@'; write e.g. '{body}@END'")
    pos = _pos(pos_text) if at else None
    old = _OLD_MLP.match(body)
    if old or body == "input":
        new = f"L{old.group(1)}.mlp" if old else "embed"
        warnings.warn(f"the label {body!r} is the spelling of fieldcheck 0.1; write {new!r} (one label grammar "
                      "for every feature: docs/writing-claims.md)", DeprecationWarning, stacklevel=3)
        body = new
    if body in _GLOBAL:
        return Label(body, pos=pos)
    m = _RE.match(body)
    if m is None:
        raise SiteError(f"{what} {label!r} is not a label: {GRAMMAR}")
    layer = int(m.group("layer"))
    if m.group("head") is not None:
        return Label("head", layer, int(m.group("head")), m.group("port"), pos)
    part = m.group("part") or "resid_pre"
    if part not in _LAYER_PARTS:
        near = difflib.get_close_matches(part, _LAYER_PARTS, n=2, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(f'L{layer}.{p}') for p in near)}?)" if near else ""
        raise SiteError(f"{what} {label!r}: unknown component {part!r}{hint}; {GRAMMAR}")
    return Label(part, layer, pos=pos)


def canonical(label, what: str = "label") -> str:
    """The canonical text of a label given as text or a :class:`Label` (``"MLP3@END"`` -> ``"L3.mlp@END"``
    with a DeprecationWarning; ``"L3"`` -> ``"L3.resid_pre"``)."""
    return str(parse(label, what))


def nearest(label: str, valid: Iterable[str], n: int = 5) -> list[str]:
    """Up to ``n`` labels of ``valid`` closest to ``label`` (difflib), closest first; same-layer labels
    are preferred when the layer part parses."""
    valid = list(dict.fromkeys(str(v) for v in valid))
    out = difflib.get_close_matches(str(label), valid, n=n, cutoff=0.4)
    m = re.match(r"^L(\d+)\b", str(label))
    if m:
        same = [v for v in valid if v.startswith(f"L{m.group(1)}.") and v not in out]
        out = [v for v in out if v.startswith(f"L{m.group(1)}.")] + same + [v for v in out if not v.startswith(
            f"L{m.group(1)}.")]
    return out[:n]


def unknown(label, valid: Iterable[str], what: str = "component", where: str = "") -> SiteError:
    """The SiteError for a label that is not among ``valid``: it names the label, the nearest valid ones
    and how many there are (``where`` says what holds them, e.g. "this attribution")."""
    valid = list(valid)
    near = nearest(str(label), valid)
    src = f" in {where}" if where else ""
    if near:
        return SiteError(f"unknown {what} {str(label)!r}{src}; nearest valid: {', '.join(near)}")
    shown = ", ".join(valid[:6]) + (", ..." if len(valid) > 6 else "")
    return SiteError(f"unknown {what} {str(label)!r}{src} (it has {len(valid)}: {shown}); {GRAMMAR}")


_OLD_SITE = re.compile(r"^(?:(mid|post|attn|mlp):)?L(\d+)(\.H\d+)?@(P(-?\d+)|.+)$")
_OLD_PREFIX = {None: "resid_pre", "mid": "resid_mid", "post": "resid_post", "attn": "attn", "mlp": "mlp"}


def from_0_1(text: str) -> str:
    """A site label as fieldcheck 0.1 printed it (``L20@END``, ``mlp:L5@P3``, ``L3.H2@P7``) in this grammar
    (``L20.resid_pre@END``, ``L5.mlp@3``, ``L3.H2@7``), so that reports saved by 0.1 pair with new ones;
    any other text is returned as it is."""
    m = _OLD_SITE.match(str(text))
    if m is None:
        return str(text)
    prefix, layer, head, pos, int_pos = m.groups()
    p = int_pos if int_pos is not None else pos
    if head:
        return f"L{layer}{head}@{p}"
    return f"L{layer}.{_OLD_PREFIX[prefix]}@{p}"

