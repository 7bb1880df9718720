"""Named positions of a contrastive set given by token text or by a marker in the prompt, instead of
counted token indices (:meth:`fieldcheck.ContrastiveSet.from_pairs`).

- **Token text**: ``positions={"IO": " Mary"}`` names the token ``" Mary"`` of each clean prompt
  (the text is tokenized on its own, without BOS, and found as a run of tokens in the prompt; a
  text of several tokens names the last of them). A list gives one text per example
  (``{"IO": [" Mary", " Anna", ...]}``); a text that occurs more than once needs its occurrence,
  ``(" John", 1)`` (0 = the first, -1 = the last), else the error lists where it occurs.
- **Markers** (``markers=True``): ``[[NAME]]`` written right after a token in the clean prompt
  names that token, ``"When Mary[[IO]] and John[[S1]] went to the store, John[[S2]] gave a drink
  to"``; the markers are removed before tokenizing (also from the corrupted prompt, where they
  are ignored). A marker after a word of several tokens names its last token (the convention of
  "the last subject token" in factual recall).

Ints keep working (they count tokens, BOS included where the model prepends one).
"""
from __future__ import annotations

import re
from typing import Any, Optional

from fieldcheck.errors import DatasetError

__all__ = ["MARKER", "strip_markers", "strip_all_markers", "is_text_spec", "text_position", "marker_position"]

#: the marker syntax: ``[[NAME]]`` right after the token it names
MARKER = re.compile(r"\[\[([A-Za-z_][A-Za-z0-9_]*)\]\]")


def _short(s: str, k: int = 60) -> str:
    return s if len(s) <= k else s[: k - 3] + "..."


def strip_markers(prompt: str) -> tuple[str, dict[str, int]]:
    """``(prompt without markers, {name: character offset where the marker stood})``; DatasetError
    for a name marked twice."""
    out, marks, last = [], {}, 0
    length = 0
    for m in MARKER.finditer(prompt):
        out.append(prompt[last:m.start()])
        length += m.start() - last
        name = m.group(1)
        if name in marks:
            raise DatasetError(f"marker [[{name}]] appears twice in {_short(prompt)!r}: mark each name once")
        marks[name] = length
        last = m.end()
    out.append(prompt[last:])
    return "".join(out), marks


def _occurrences(ids: list[int], piece: list[int]) -> list[int]:
    """Positions of the last token of every occurrence of ``piece`` in ``ids``."""
    k = len(piece)
    return [s + k - 1 for s in range(len(ids) - k + 1) if ids[s:s + k] == piece]


def text_position(tok: Any, prompt: str, ids: list[int], spec: Any, name: str, i: int) -> int:
    """The position of the token text ``spec`` (a string, or ``(text, occurrence)``) in the prompt's
    tokens ``ids`` (BOS included): the last token of the text's run of tokens."""
    occurrence: Optional[int] = None
    text = spec
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[0], str) or isinstance(spec[1], bool) or not isinstance(spec[1], int):
            raise DatasetError(f"named position {name!r} of example {i} is {spec!r}: give a token text, "
                               "(text, occurrence) or an int")
        text, occurrence = spec
    piece = tok.piece_tokens(text)
    if not piece:
        raise DatasetError(f"named position {name!r} of example {i}: the text {text!r} has no tokens")
    found = _occurrences(ids, piece)
    where = f"named position {name!r} = {text!r} of example {i} ({_short(prompt)!r})"
    if not found:
        hint = ""
        for alt in ((" " + text) if not text.startswith(" ") else text.lstrip(),):
            alt_found = _occurrences(ids, tok.piece_tokens(alt)) if alt else []
            if alt_found:
                hint = f"; {alt!r} is at position {alt_found[0]}"
        raise DatasetError(f"{where}: the text's tokens {tok.str_tokens(piece)} do not occur in the prompt's "
                           f"tokens {tok.str_tokens(ids)}{hint}")
    if occurrence is None:
        if len(found) > 1:
            raise DatasetError(f"{where}: the text occurs {len(found)} times (positions {found}); name one with "
                               f"({text!r}, 0) for the first, ({text!r}, -1) for the last")
        return found[0]
    if not -len(found) <= occurrence < len(found):
        raise DatasetError(f"{where}: occurrence {occurrence} out of range, the text occurs {len(found)} time(s) "
                           f"(positions {found})")
    return found[occurrence]


def _char_ends(tok: Any, prompt: str, ids: list[int], skip: int) -> Optional[list[tuple[int, int]]]:
    """(start, end) character span of each token after the first ``skip`` (BOS) in ``prompt``, from the
    tokenizer's offset mapping, or None when it gives none for these ids."""
    try:
        enc = tok.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    except Exception:  # slow tokenizers have no offset mapping
        return None
    if list(enc["input_ids"]) != list(ids[skip:]):
        return None
    return [tuple(int(v) for v in o) for o in enc["offset_mapping"]]


def marker_position(tok: Any, prompt: str, ids: list[int], offset: int, name: str, i: int) -> int:
    """The position of the token that ends at the character ``offset`` of ``prompt`` (the marker's place,
    markers removed): the token containing character ``offset - 1``."""
    skip = len(ids) - len(tok.piece_tokens(prompt))
    if offset <= 0 or not prompt[:offset].strip():
        raise DatasetError(f"marker [[{name}]] of example {i} stands at the start of the prompt "
                           f"{_short(prompt)!r}: write it right after the token it names")
    spans = _char_ends(tok, prompt, ids, skip)
    if spans is None:  # decode growing prefixes: the first prefix whose text reaches the offset
        target = len(prompt[:offset].rstrip())
        for k in range(skip, len(ids)):
            if len(tok.tokenizer.decode(ids[skip:k + 1]).rstrip()) >= target:
                return k
        raise DatasetError(f"marker [[{name}]] of example {i}: no token ends at character {offset} of "
                           f"{_short(prompt)!r}")
    c = len(prompt[:offset].rstrip()) - 1  # the last non-space character before the marker
    for k, (start, end) in enumerate(spans):
        if start <= c < end:
            return skip + k
    before = [k for k, (start, end) in enumerate(spans) if end <= c + 1]
    if not before:
        raise DatasetError(f"marker [[{name}]] of example {i}: no token ends at character {offset} of "
                           f"{_short(prompt)!r}")
    return skip + before[-1]


def is_text_spec(v: Any) -> bool:
    """``(text, occurrence)``: a token text and which of its occurrences."""
    return (isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)
            and not isinstance(v[1], bool))


def strip_all_markers(clean: list, corrupt: list, given: set) -> tuple[list, list, list[dict]]:
    """The prompts without ``[[NAME]]`` markers and each clean prompt's marker offsets; DatasetError when
    the examples mark different names or a name is also given in ``positions``."""
    marks, c_out, r_out = [], [], []
    for i, (c, r) in enumerate(zip(clean, corrupt)):
        if not isinstance(c, str) or not isinstance(r, str):
            c_out.append(c)
            r_out.append(r)
            marks.append({})
            continue
        c2, m = strip_markers(c)
        c_out.append(c2)
        r_out.append(strip_markers(r)[0])
        marks.append(m)
    names = set(marks[0])
    for i, m in enumerate(marks):
        if set(m) != names:
            diff = sorted(names ^ set(m))
            raise DatasetError(f"markers: example {i} ({_short(clean[i], 60)!r}) marks {sorted(m)}, example 0 "
                               f"marks {sorted(names)} (differ in {diff}); mark the same names in every clean prompt")
    both = sorted(names & given)
    if both:
        raise DatasetError(f"position {both[0]!r} is both marked in the prompts and given in positions=: keep one")
    if not names:
        raise DatasetError("markers=True but no clean prompt has a marker; write [[NAME]] right after the token "
                           "it names, e.g. 'When Mary[[IO]] and John[[S1]] went ...'")
    return c_out, r_out, marks
