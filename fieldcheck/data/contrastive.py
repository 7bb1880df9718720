"""Contrastive data sets: clean and corrupted prompts, answer and wrong-answer tokens, and named
positions per example.

A :class:`ContrastiveSet` holds tensors only (no reference to the model), so it can be hashed,
pickled, subset and sent to any device. Build one with :meth:`ContrastiveSet.from_pairs`,
:meth:`ContrastiveSet.from_records`, :meth:`ContrastiveSet.from_jsonl`, or the built-ins in
:mod:`fieldcheck.datasets`.

Prompts are tokenized exactly as ``model.to_tokens(prompt)`` does (BOS prepended when
``model.cfg.default_prepend_bos`` is true). Answers are strings such as ``" Mary"`` that must
tokenize (without BOS) to exactly one token, or integer token ids.

Every example of a set has the same token length (the patching engine stacks them); a set whose
prompts have different lengths raises a :class:`~fieldcheck.errors.DatasetError` that suggests
:meth:`ContrastiveSet.split_by_length`.
"""
from __future__ import annotations

import hashlib
import json
import numbers
import os
import random
import warnings
import weakref
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import torch

from fieldcheck.data.positions import is_text_spec, marker_position, strip_all_markers, text_position
from fieldcheck.errors import DatasetError, InsufficientData, check_int

__all__ = ["ContrastiveSet", "DatasetError", "NotEnoughExamples"]


class NotEnoughExamples(DatasetError, InsufficientData):
    """More examples were requested than a data set (or built-in generator) can produce."""


# --------------------------------------------------------------------------------------------
# tokenizer access
# --------------------------------------------------------------------------------------------

def _short(s: str, k: int = 80) -> str:
    return s if len(s) <= k else s[: k - 3] + "..."


class _Tok:
    """What the data sets need from a model: its tokenizer, BOS convention, context, vocab."""

    def __init__(self, model: Any):
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise DatasetError(
                f"the model {type(model).__name__} has no tokenizer (model.tokenizer is None); "
                "a contrastive data set needs one to tokenize its prompts: load the model with its "
                "tokenizer (fieldcheck.load_model(...) does)")
        # weakly: this object is the value of a WeakKeyDictionary keyed by the model, and a
        # strong reference back to the key would keep every model alive for good
        try:
            self._model_ref = weakref.ref(model)
        except TypeError:  # not weak-referenceable (a stub)
            self._model_ref = lambda m=model: m
        self.tokenizer = tokenizer
        cfg = getattr(model, "cfg", None)
        self.prepend_bos = bool(getattr(cfg, "default_prepend_bos", True))
        self.n_ctx = getattr(cfg, "n_ctx", None)
        d_vocab = getattr(cfg, "d_vocab", None)
        try:
            n_tok = len(tokenizer)
        except TypeError:
            n_tok = None
        self.d_vocab = d_vocab if d_vocab is not None else n_tok
        self.bos_id = getattr(tokenizer, "bos_token_id", None)
        self.unk_id = getattr(tokenizer, "unk_token_id", None)
        self.unk_str = getattr(tokenizer, "unk_token", None)
        self._single: dict[str, int | None] = {}

    # -- checks ---------------------------------------------------------------------------
    def check_bos(self) -> None:
        if self.prepend_bos and (self.bos_id is None
                                 or getattr(self.tokenizer, "bos_token", None) is None):
            raise DatasetError(
                "the model prepends a BOS token (model.cfg.default_prepend_bos=True) but its "
                f"tokenizer {type(self.tokenizer).__name__} has no BOS token "
                "(tokenizer.bos_token is None): set tokenizer.bos_token to a special token of "
                "the vocabulary, or load the model with default_prepend_bos=False")

    @property
    def model(self) -> Any:
        return self._model_ref()

    # -- tokenization ---------------------------------------------------------------------
    def prompt_tokens(self, prompt: str) -> list[int]:
        """Tokens of one prompt, exactly as ``model.to_tokens(prompt)`` (without truncation)."""
        to_tokens = getattr(self.model, "to_tokens", None)
        if to_tokens is not None:
            toks = to_tokens(prompt, truncate=False, move_to_device=False)
            return [int(t) for t in toks[0].tolist()]
        ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return ([self.bos_id] if self.prepend_bos else []) + ids

    def piece_tokens(self, text: str) -> list[int]:
        """Tokens of a piece of text without BOS/EOS (how an answer is tokenized)."""
        return [int(t) for t in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def single_token(self, text: str) -> int | None:
        """The token id if ``text`` is exactly one known token, else None (cached)."""
        if text not in self._single:
            ids = self.piece_tokens(text)
            ok = len(ids) == 1 and not self._is_unk(ids[0], text)
            self._single[text] = ids[0] if ok else None
        return self._single[text]

    def _is_unk(self, tid: int, text: str) -> bool:
        return (self.unk_id is not None and tid == self.unk_id
                and not (self.unk_str and self.unk_str in text))

    def str_tokens(self, ids: Sequence[int]) -> list[str]:
        try:
            return [self.tokenizer.decode([int(i)]) for i in ids]
        except Exception:  # pragma: no cover - exotic tokenizers
            return [str(int(i)) for i in ids]

    def decode1(self, tid: int) -> str:
        return self.tokenizer.decode([int(tid)])

    # -- answers --------------------------------------------------------------------------
    def answer_id(self, value: Any, what: str, i: int) -> tuple[int, str]:
        """Resolve one answer (string or int id) to (token id, string)."""
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise DatasetError(f"{what} of example {i} is a tensor of shape "
                                   f"{tuple(value.shape)}; give one token id or one string")
            value = int(value.item())
        if isinstance(value, bool) or value is None:
            raise DatasetError(f"{what} of example {i} is {value!r}; give a string such as "
                               "' Mary' (one token) or an integer token id")
        if isinstance(value, int):
            if value < 0 or (self.d_vocab is not None and value >= self.d_vocab):
                raise DatasetError(
                    f"{what} of example {i} is token id {value}, which is not in the vocabulary "
                    f"(valid ids are 0..{(self.d_vocab or 0) - 1}): give a valid token id or the "
                    "answer as a string")
            return value, self.decode1(value)
        if not isinstance(value, str):
            raise DatasetError(f"{what} of example {i} is {value!r} of type "
                               f"{type(value).__name__}; give a string or an integer token id")
        ids = self.piece_tokens(value)
        if len(ids) != 1:
            hint = ""
            if value and not value.startswith(" ") and self.single_token(" " + value) is not None:
                hint = f" ({' ' + value!r} with a leading space is a single token)"
            raise DatasetError(
                f"{what} {value!r} of example {i} is not a single token: it tokenizes to "
                f"{len(ids)} tokens {self.str_tokens(ids)} (ids {ids}); give an answer that is "
                f"one token{hint}, or its integer token id")
        if self._is_unk(ids[0], value):
            raise DatasetError(
                f"{what} {value!r} of example {i} is unknown to the tokenizer (it becomes the "
                f"unknown token {self.unk_str!r}, id {ids[0]}): use a word in the model's "
                "vocabulary")
        return ids[0], value


_TOK_CACHE: "weakref.WeakKeyDictionary[Any, _Tok]" = weakref.WeakKeyDictionary()


def weak_cached(cache: "weakref.WeakKeyDictionary", model: Any, build: Any) -> Any:
    """``build(model)``, cached per model object (weakly: the cache never keeps a model alive;
    objects that cannot be weakly referenced are not cached)."""
    try:
        hit = cache.get(model)
    except TypeError:  # not weak-referenceable (a stub): no caching
        return build(model)
    if hit is None:
        hit = build(model)
        cache[model] = hit
    return hit


def tok_info(model: Any) -> _Tok:
    """A :class:`_Tok` for ``model``, cached per model object."""
    return weak_cached(_TOK_CACHE, model, _Tok)


# --------------------------------------------------------------------------------------------
# the set
# --------------------------------------------------------------------------------------------

def _as_index(idx: Any, n: int) -> list[int]:
    if isinstance(idx, torch.Tensor):
        if idx.dtype == torch.bool:
            if idx.numel() != n:
                raise DatasetError(f"boolean mask has {idx.numel()} entries for {n} examples")
            return [int(i) for i in torch.nonzero(idx).flatten().tolist()]
        idx = idx.flatten().tolist()
    elif isinstance(idx, numbers.Integral) and not isinstance(idx, bool):
        idx = [idx]
    elif isinstance(idx, slice):
        idx = list(range(n))[idx]
    elif isinstance(idx, (str, bytes, dict)) or not hasattr(idx, "__iter__"):
        raise DatasetError(f"example index {idx!r}: give an int, a list/range/slice of ints, or a boolean mask")
    out = []
    for i in idx:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise DatasetError(f"example index {i!r} is not an int; give ints 0..{n - 1} (or negative from the end)")
        i = int(i)
        if not -n <= i < n:
            raise DatasetError(f"example index {i} is out of range for a set of {n} examples "
                               f"(valid: 0..{n - 1} or negative from the end)")
        out.append(i % n)
    return out


class ContrastiveSet:
    """Clean and corrupted prompts (tokenized, uniform length), answer and wrong-answer token ids,
    and named positions per example.

    Attributes:
        clean_tokens, corrupt_tokens: ``LongTensor [n, seq_len]``.
        answers, wrong: ``LongTensor [n]`` token ids of the correct (for the clean prompt) and the
            wrong answer.
        positions: ``dict name -> LongTensor [n]``; always has ``"END"`` (= seq_len - 1).
        first_diff: ``LongTensor [n]``, the first position where clean and corrupt tokens differ
            (``seq_len`` when they are identical).
        clean_prompts, corrupt_prompts, answer_strs, wrong_strs: the strings.
        name, meta: a name and a JSON-able dict describing how the set was made.
        example_meta: a list of per-example dicts (template id, names, ...), may be empty dicts.
    """

    def __init__(self, *, clean_tokens: torch.Tensor, corrupt_tokens: torch.Tensor,
                 answers: torch.Tensor, wrong: torch.Tensor,
                 positions: Mapping[str, torch.Tensor], clean_prompts: Sequence[str],
                 corrupt_prompts: Sequence[str], answer_strs: Sequence[str],
                 wrong_strs: Sequence[str], name: str = "custom",
                 meta: Mapping[str, Any] | None = None,
                 example_meta: Sequence[Mapping[str, Any]] | None = None):
        clean_tokens = torch.as_tensor(clean_tokens, dtype=torch.long).cpu()
        corrupt_tokens = torch.as_tensor(corrupt_tokens, dtype=torch.long).cpu()
        if clean_tokens.ndim != 2 or clean_tokens.shape != corrupt_tokens.shape:
            raise DatasetError(f"clean_tokens {tuple(clean_tokens.shape)} and corrupt_tokens "
                               f"{tuple(corrupt_tokens.shape)} must both be [batch, pos]")
        n, T = clean_tokens.shape
        if n == 0:
            raise DatasetError("empty data set: a contrastive set needs at least one example")
        self.clean_tokens = clean_tokens
        self.corrupt_tokens = corrupt_tokens
        self.answers = torch.as_tensor(answers, dtype=torch.long).cpu().reshape(-1)
        self.wrong = torch.as_tensor(wrong, dtype=torch.long).cpu().reshape(-1)
        self.clean_prompts = list(clean_prompts)
        self.corrupt_prompts = list(corrupt_prompts)
        self.answer_strs = list(answer_strs)
        self.wrong_strs = list(wrong_strs)
        for what, v in (("answers", self.answers), ("wrong", self.wrong),
                        ("clean_prompts", self.clean_prompts),
                        ("corrupt_prompts", self.corrupt_prompts),
                        ("answer_strs", self.answer_strs), ("wrong_strs", self.wrong_strs)):
            if len(v) != n:
                raise DatasetError(f"{what} has {len(v)} entries for {n} examples")
        pos = {}
        for k, v in positions.items():
            v = torch.as_tensor(v, dtype=torch.long).cpu().reshape(-1)
            if v.numel() != n:
                raise DatasetError(f"position {k!r} has {v.numel()} entries for {n} examples")
            if ((v < 0) | (v >= T)).any():
                bad = int(torch.nonzero((v < 0) | (v >= T))[0])
                raise DatasetError(f"position {k!r} of example {bad} is {int(v[bad])}, out of "
                                   f"range for {T} tokens (valid: 0..{T - 1})")
            pos[str(k)] = v
        pos["END"] = torch.full((n,), T - 1, dtype=torch.long)
        self.positions: dict[str, torch.Tensor] = pos
        self.name = str(name)
        self.meta: dict[str, Any] = dict(meta or {})
        em = list(example_meta) if example_meta is not None else [{} for _ in range(n)]
        if len(em) != n:
            raise DatasetError(f"example_meta has {len(em)} entries for {n} examples")
        self.example_meta: list[dict[str, Any]] = [dict(e) for e in em]
        diff = clean_tokens != corrupt_tokens
        any_diff = diff.any(dim=1)
        _check_corrupted(any_diff, self.clean_prompts)
        self.first_diff = torch.where(any_diff, diff.int().argmax(dim=1),
                                      torch.full((n,), T)).long()

    # -- basic properties -----------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of examples (the ``batch`` axis of ``clean_tokens [batch, pos]``)."""
        return int(self.clean_tokens.shape[0])

    @property
    def seq_len(self) -> int:
        """Number of tokens per prompt (the ``pos`` axis; clean and corrupted prompts have the same length)."""
        return int(self.clean_tokens.shape[1])

    def __len__(self) -> int:
        return self.n

    @property
    def position_names(self) -> list[str]:
        """The named positions of the set (``"END"`` always; ``"IO"``, ``"S1"``, ``"S2"`` for IOI, ...), usable
        wherever a site or experiment takes a position."""
        return list(self.positions)

    def position(self, name: str | int) -> torch.Tensor:
        """The ``[n]`` positions for a name (or an int, negative from the end)."""
        if isinstance(name, numbers.Integral) and not isinstance(name, bool):
            name = int(name)
            p = name + self.seq_len if name < 0 else name
            if not 0 <= p < self.seq_len:
                raise DatasetError(f"position {name} is out of range for {self.seq_len} tokens "
                                   f"(valid: 0..{self.seq_len - 1} or -{self.seq_len}..-1)")
            return torch.full((self.n,), p, dtype=torch.long)
        if not isinstance(name, str) or name not in self.positions:
            raise DatasetError(f"unknown position name {name!r}; this set {self.name!r} has "
                               f"{sorted(self.positions)}")
        return self.positions[name]

    # -- derived sets ---------------------------------------------------------------------
    def _replace(self, **kw) -> "ContrastiveSet":
        args = dict(clean_tokens=self.clean_tokens, corrupt_tokens=self.corrupt_tokens,
                    answers=self.answers, wrong=self.wrong,
                    positions={k: v for k, v in self.positions.items() if k != "END"},
                    clean_prompts=self.clean_prompts, corrupt_prompts=self.corrupt_prompts,
                    answer_strs=self.answer_strs, wrong_strs=self.wrong_strs, name=self.name,
                    meta=self.meta, example_meta=self.example_meta)
        args.update(kw)
        return ContrastiveSet(**args)

    def subset(self, idx: Any) -> "ContrastiveSet":
        """The examples at ``idx`` (a list, range, slice, int, index or boolean tensor)."""
        ii = _as_index(idx, self.n)
        if not ii:
            raise DatasetError(f"empty subset of {self.name!r}: give at least one index")
        t = torch.tensor(ii, dtype=torch.long)
        meta = dict(self.meta)
        meta["subset_of"] = meta.get("subset_of", self.content_hash()[:16])
        return self._replace(
            clean_tokens=self.clean_tokens[t], corrupt_tokens=self.corrupt_tokens[t],
            answers=self.answers[t], wrong=self.wrong[t],
            positions={k: v[t] for k, v in self.positions.items() if k != "END"},
            clean_prompts=[self.clean_prompts[i] for i in ii],
            corrupt_prompts=[self.corrupt_prompts[i] for i in ii],
            answer_strs=[self.answer_strs[i] for i in ii],
            wrong_strs=[self.wrong_strs[i] for i in ii], meta=meta,
            example_meta=[self.example_meta[i] for i in ii])

    def take(self, k: int) -> "ContrastiveSet":
        """The first ``k`` examples; NotEnoughExamples if the set has fewer."""
        self._check_k(k, "take")
        return self.subset(range(k))

    def sample(self, k: int, seed: int = 0) -> "ContrastiveSet":
        """``k`` examples drawn without replacement (deterministic for a seed: an int >= 0)."""
        self._check_k(k, "sample")
        check_int("seed", seed, low=0, error=DatasetError, hint="sample(k, seed) draws its examples with it")
        return self.subset(sorted(random.Random(f"sample/{seed}").sample(range(self.n), k)))

    def _check_k(self, k: int, what: str) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise DatasetError(f"{what}({k!r}): give a positive number of examples")
        if k > self.n:
            raise NotEnoughExamples(
                f"{what}({k}): the data set {self.name!r} has only {self.n} examples; ask for "
                f"at most {self.n}, or build a larger set (e.g. fieldcheck.datasets.ioi(model, "
                f"n={k}))")

    def __getitem__(self, idx: Any) -> "ContrastiveSet":
        return self.subset(idx)

    def swapped(self) -> "ContrastiveSet":
        """Clean and corrupt exchanged, and answers and wrong answers exchanged."""
        meta = dict(self.meta)
        meta["swapped"] = not meta.get("swapped", False)
        return self._replace(clean_tokens=self.corrupt_tokens, corrupt_tokens=self.clean_tokens,
                             answers=self.wrong, wrong=self.answers,
                             clean_prompts=self.corrupt_prompts,
                             corrupt_prompts=self.clean_prompts,
                             answer_strs=self.wrong_strs, wrong_strs=self.answer_strs, meta=meta)

    @staticmethod
    def concat(sets: Sequence["ContrastiveSet"], name: str | None = None) -> "ContrastiveSet":
        """Concatenate sets of the same token length (positions: the names common to all)."""
        if isinstance(sets, (str, bytes)) or not hasattr(sets, "__iter__"):
            raise DatasetError(f"concat takes a list of ContrastiveSets, got {type(sets).__name__}")
        sets = list(sets)
        if not sets:
            raise DatasetError("concat of no sets: give at least one ContrastiveSet")
        for s in sets:
            if not isinstance(s, ContrastiveSet):
                raise DatasetError(f"concat takes ContrastiveSets, got a {type(s).__name__} in the list")
        lens = sorted({s.seq_len for s in sets})
        if len(lens) > 1:
            raise DatasetError(f"cannot concatenate sets of token lengths {lens}: a contrastive "
                               "set needs one length; keep them separate")
        names = [k for k in sets[0].positions if all(k in s.positions for s in sets)]
        return ContrastiveSet(
            clean_tokens=torch.cat([s.clean_tokens for s in sets]),
            corrupt_tokens=torch.cat([s.corrupt_tokens for s in sets]),
            answers=torch.cat([s.answers for s in sets]), wrong=torch.cat([s.wrong for s in sets]),
            positions={k: torch.cat([s.positions[k] for s in sets]) for k in names if k != "END"},
            clean_prompts=sum((s.clean_prompts for s in sets), []),
            corrupt_prompts=sum((s.corrupt_prompts for s in sets), []),
            answer_strs=sum((s.answer_strs for s in sets), []),
            wrong_strs=sum((s.wrong_strs for s in sets), []),
            name=name or sets[0].name, meta=dict(sets[0].meta),
            example_meta=sum((s.example_meta for s in sets), []))

    def to(self, device: Any) -> "ContrastiveSet":
        """A copy whose tensors live on ``device`` (the set itself stays on the CPU); DeviceError for a
        device that is not a torch device or does not exist here."""
        from fieldcheck.errors import DeviceError

        try:
            torch.empty(0).to(device)
        except (RuntimeError, TypeError, AssertionError, ValueError) as e:
            raise DeviceError(f"device {device!r} cannot hold the data set here: {e}") from None
        out = self._replace()
        for attr in ("clean_tokens", "corrupt_tokens", "answers", "wrong", "first_diff"):
            setattr(out, attr, getattr(out, attr).to(device))
        out.positions = {k: v.to(device) for k, v in out.positions.items()}
        return out

    # -- identity ---------------------------------------------------------------------------
    def content_hash(self) -> str:
        """sha256 over the tokens, answers, wrong answers and positions (not names or meta). Kept once
        computed (for the same tensor objects): a metric callable reads a subset of the set inside
        torch.func transforms (order-2 predictions), where tensors cannot be read as bytes."""
        key = (id(self.clean_tokens), id(self.corrupt_tokens), id(self.answers), id(self.wrong),
               tuple((k, id(v)) for k, v in sorted(self.positions.items())))
        cached = self.__dict__.get("_content_hash")
        if cached is not None and cached[0] == key:
            return cached[1]
        h = hashlib.sha256()
        h.update(f"contrastive-set/v1 n={self.n} T={self.seq_len}".encode())
        for t in (self.clean_tokens, self.corrupt_tokens, self.answers, self.wrong):
            h.update(t.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
        for k in sorted(self.positions):
            h.update(b"\0pos:" + k.encode() + b"\0")
            h.update(self.positions[k].detach().cpu().to(torch.int64).contiguous()
                     .numpy().tobytes())
        self.__dict__["_content_hash"] = (key, h.hexdigest())
        return h.hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContrastiveSet):
            return NotImplemented
        return self.content_hash() == other.content_hash()

    def __hash__(self) -> int:
        return hash(self.content_hash())

    # -- export ------------------------------------------------------------------------------
    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per example: clean, corrupt, answer, wrong, their ids, positions
        (without END) and the per-example meta. ``from_records`` reads these back."""
        out = []
        for i in range(self.n):
            rec: dict[str, Any] = {
                "clean": self.clean_prompts[i], "corrupt": self.corrupt_prompts[i],
                "answer": self.answer_strs[i], "wrong": self.wrong_strs[i],
                "answer_id": int(self.answers[i]), "wrong_id": int(self.wrong[i]),
                "positions": {k: int(v[i]) for k, v in self.positions.items() if k != "END"},
            }
            if self.example_meta[i]:
                rec["meta"] = self.example_meta[i]
            out.append(rec)
        return out

    def to_jsonl(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_records` as JSON lines (atomically: temp file + rename)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in self.to_records():
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        os.replace(tmp, path)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: name, meta, n, seq_len, content hash, positions ``{name: [batch]}``, clean and
        corrupted tokens ``[batch, pos]``, answers and wrong tokens ``[batch]`` and the records."""
        return {"name": self.name, "meta": self.meta, "n": self.n, "seq_len": self.seq_len,
                "content_hash": self.content_hash(),
                "positions": {k: v.tolist() for k, v in self.positions.items()},
                "clean_tokens": self.clean_tokens.tolist(),
                "corrupt_tokens": self.corrupt_tokens.tolist(),
                "answers": self.answers.tolist(), "wrong": self.wrong.tolist(),
                "records": self.to_records()}

    def summary(self) -> str:
        """A readable summary: size, positions, hash, meta and the first three examples (clean and corrupted
        prompt, answer, wrong token, first differing position)."""
        lines = [f"ContrastiveSet {self.name!r}: {self.n} examples x {self.seq_len} tokens, "
                 f"positions {sorted(self.positions)}, hash {self.content_hash()[:12]}"]
        if self.meta:
            lines.append("  meta: " + ", ".join(f"{k}={v!r}" for k, v in self.meta.items()
                                                 if k != "example_meta"))
        for i in range(min(self.n, 3)):
            lines.append(f"  [{i}] clean:   {_short(self.clean_prompts[i])!r} -> "
                         f"{self.answer_strs[i]!r}")
            lines.append(f"      corrupt: {_short(self.corrupt_prompts[i])!r}   "
                         f"(wrong {self.wrong_strs[i]!r}, first diff at "
                         f"{int(self.first_diff[i])})")
        if self.n > 3:
            lines.append(f"  ... {self.n - 3} more")
        return "\n".join(lines)

    def __repr__(self) -> str:
        ex = ""
        if self.n:
            ex = (f", e.g. {_short(self.clean_prompts[0], 60)!r} -> {self.answer_strs[0]!r} / "
                  f"{self.wrong_strs[0]!r}")
        return (f"ContrastiveSet(name={self.name!r}, n={self.n}, seq_len={self.seq_len}, "
                f"positions={sorted(self.positions)}{ex})")

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_pairs(cls, model: Any, clean: Sequence[str], corrupt: Sequence[str],
                   answers: Sequence[str | int], wrong: Sequence[str | int],
                   positions: Mapping[str, Any] | None = None,
                   name: str = "custom", meta: Mapping[str, Any] | None = None,
                   example_meta: Sequence[Mapping[str, Any]] | None = None,
                   markers: bool = False) -> "ContrastiveSet":
        """Build a set from parallel lists of prompts and answers.

        ``model``: the model whose tokenizer builds the tokens. ``clean``, ``corrupt``: the
        prompts (one token length for all: see :meth:`split_by_length`). ``answers``, ``wrong``:
        one-token strings (with their leading space, ``" Mary"``: an answer without it after a
        word warns) or token ids. ``positions`` names positions, each by one value for every
        example or a list with one per example: a token text (``{"IO": " Mary"}``: the token
        ``" Mary"`` of the clean prompt; a text of several tokens names its last token; one that
        occurs several times needs ``(" John", 1)``, its occurrence, 0 the first, -1 the last),
        or an int, which indexes the *tokens*: they start with the BOS token where the model
        prepends one (``model.cfg.default_prepend_bos``), so the first word is usually position
        1; negative ints count from the end. ``markers=True``: the clean prompts mark positions
        themselves, ``"When Mary[[IO]] and John[[S1]] went ..."`` (``[[NAME]]`` right after the
        token it names; removed before tokenizing, from the corrupted prompts too).
        ``"END"`` (the last token, where the metric is read) is always added. ``name``,
        ``meta``: shown in reports; ``example_meta``: one dict per example (``{"template": 3}``
        for grouped mean ablation, ``fieldcheck.sources.mean(by="template")``).
        Returns a ContrastiveSet; DatasetError names the bad prompt, answer or position.
        """
        ex = _prepare(model, clean, corrupt, answers, wrong, positions, example_meta, markers)
        lens = sorted({len(e["clean_ids"]) for e in ex})
        if len(lens) > 1:
            counts = Counter(len(e["clean_ids"]) for e in ex)
            first = {L: next(i for i, e in enumerate(ex) if len(e["clean_ids"]) == L)
                     for L in lens}
            detail = ", ".join(f"{L} tokens: {counts[L]} example(s) (e.g. example {first[L]}: "
                               f"{_short(ex[first[L]]['clean'], 50)!r})" for L in lens)
            raise DatasetError(
                f"the prompts of data set {name!r} have different token lengths {lens} "
                f"({detail}); a contrastive set needs one length so that examples can be "
                "batched and patched position by position: split it with "
                "ContrastiveSet.split_by_length(model, clean, corrupt, answers, wrong, ...) "
                "(which returns a dict length -> set), or rephrase prompts to one length")
        return cls._from_prepared(ex, name, meta)

    @classmethod
    def split_by_length(cls, model: Any, clean: Sequence[str] | None = None,
                        corrupt: Sequence[str] | None = None,
                        answers: Sequence[str | int] | None = None,
                        wrong: Sequence[str | int] | None = None,
                        positions: Mapping[str, Any] | None = None,
                        name: str = "custom", records: Sequence[Mapping[str, Any]] | None = None,
                        meta: Mapping[str, Any] | None = None, markers: bool = False,
                        ) -> dict[int, "ContrastiveSet"]:
        """Like :meth:`from_pairs` (or :meth:`from_records` with ``records=``; positions and
        ``markers`` as there), but returns one set per token length: ``{length: ContrastiveSet}``
        (sorted by length). Each set's ``meta["example_index"]`` lists the original indices of
        its examples."""
        if records is not None:
            clean, corrupt, answers, wrong, positions, em = _unpack_records(records)
        else:
            em = None
            if clean is None or corrupt is None or answers is None or wrong is None:
                raise DatasetError("split_by_length needs clean, corrupt, answers and wrong "
                                   "lists (or records=...)")
        ex = _prepare(model, clean, corrupt, answers, wrong, positions, em, markers)
        groups: dict[int, list[int]] = {}
        for i, e in enumerate(ex):
            groups.setdefault(len(e["clean_ids"]), []).append(i)
        out = {}
        for L in sorted(groups):
            m = dict(meta or {})
            m["example_index"] = groups[L]
            out[L] = cls._from_prepared([ex[i] for i in groups[L]], f"{name}[len={L}]", m)
        return out

    @classmethod
    def from_records(cls, model: Any, records: Iterable[Mapping[str, Any]],
                     name: str = "custom", meta: Mapping[str, Any] | None = None,
                     markers: bool = False) -> "ContrastiveSet":
        """Build a set from dicts with keys ``clean``, ``corrupt``, ``answer``, ``wrong`` and
        optionally ``positions`` (``{name: int or token text}``, as in :meth:`from_pairs`) and
        ``meta``. ``answer_id``/``wrong_id`` may replace ``answer``/``wrong``. ``markers``: as in
        :meth:`from_pairs`."""
        clean, corrupt, answers, wrong, positions, em = _unpack_records(list(records))
        return cls.from_pairs(model, clean, corrupt, answers, wrong, positions, name=name,
                              meta=meta, example_meta=em, markers=markers)

    @classmethod
    def from_jsonl(cls, model: Any, path: str | os.PathLike, name: str | None = None,
                   markers: bool = False) -> "ContrastiveSet":
        """Read a JSON-lines file of records (see :meth:`from_records`; ``markers`` as in
        :meth:`from_pairs`); blank lines are skipped. Bad JSON or missing fields raise a
        DatasetError naming the line."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            raise DatasetError(f"data set file {path!r} does not exist: check the path") from None
        except UnicodeDecodeError as e:
            raise DatasetError(f"data set file {path!r} is not UTF-8 text ({e}): save it as "
                               "UTF-8 JSON lines") from None
        records = []
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{lineno}: bad JSON ({e.msg} at column {e.colno}): "
                                   f"{_short(line.strip(), 60)!r}; each line must be one JSON "
                                   "object such as {\"clean\": ..., \"corrupt\": ..., "
                                   "\"answer\": ..., \"wrong\": ...}") from None
            if not isinstance(rec, dict):
                raise DatasetError(f"{path}:{lineno}: expected a JSON object, got "
                                   f"{type(rec).__name__} {_short(line.strip(), 40)!r}")
            try:
                _check_record_fields(rec, f"line {lineno}")
            except DatasetError as e:
                raise DatasetError(f"{path}:{lineno}: {e}") from None
            records.append((lineno, rec))
        if not records:
            raise DatasetError(f"empty data set: {path!r} has no records (one JSON object per "
                               "line with clean, corrupt, answer, wrong)")
        try:
            return cls.from_records(model, [r for _, r in records],
                                    name=name or os.path.splitext(os.path.basename(path))[0],
                                    meta={"source": path}, markers=markers)
        except DatasetError as e:
            # map "example i" to the file's line number where we can
            msg = str(e)
            import re

            def _line(m):
                i = int(m.group(1))
                return (f"example {i} (line {records[i][0]})" if 0 <= i < len(records)
                        else m.group(0))
            raise DatasetError(f"{path}: " + re.sub(r"example (\d+)", _line, msg)) from None

    @classmethod
    def _from_prepared(cls, ex: list[dict], name: str, meta: Mapping[str, Any] | None
                       ) -> "ContrastiveSet":
        names = list(ex[0]["pos"])
        return cls(
            clean_tokens=torch.tensor([e["clean_ids"] for e in ex], dtype=torch.long),
            corrupt_tokens=torch.tensor([e["corrupt_ids"] for e in ex], dtype=torch.long),
            answers=torch.tensor([e["answer_id"] for e in ex], dtype=torch.long),
            wrong=torch.tensor([e["wrong_id"] for e in ex], dtype=torch.long),
            positions={k: torch.tensor([e["pos"][k] for e in ex], dtype=torch.long)
                       for k in names},
            clean_prompts=[e["clean"] for e in ex], corrupt_prompts=[e["corrupt"] for e in ex],
            answer_strs=[e["answer_str"] for e in ex], wrong_strs=[e["wrong_str"] for e in ex],
            name=name, meta=meta, example_meta=[e["meta"] for e in ex])


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------

def _check_corrupted(any_diff: torch.Tensor, clean_prompts: Sequence[str]) -> None:
    """A corrupted prompt identical to its clean prompt measures nothing (every patch effect
    and the clean-corrupt gap are exactly 0): a DatasetError when every example is, a warning
    naming the examples when some are."""
    same = [int(i) for i in torch.nonzero(~any_diff).reshape(-1)]
    if not same:
        return
    n = any_diff.numel()
    shown = ", ".join(f"{i} ({_short(clean_prompts[i], 40)!r})" for i in same[:3])
    more = f" and {len(same) - 3} more" if len(same) > 3 else ""
    if len(same) == n:
        raise DatasetError(f"every example's corrupted prompt is identical to its clean prompt "
                           f"(e.g. example {shown}): the corruption changes nothing, so no patch "
                           f"can have an effect; corrupt the key feature (e.g. swap the subject "
                           f"or a name) in each corrupted prompt")
    warnings.warn(f"{len(same)} of {n} examples have a corrupted prompt identical to the clean "
                  f"one: example {shown}{more}; they add nothing but noise to every claim "
                  f"(their clean-corrupt gap is 0): fix or drop them "
                  f"(set.subset(...) keeps the others)", UserWarning, stacklevel=3)


_REQUIRED = ("clean", "corrupt", "answer", "wrong")


def _check_record_fields(rec: Mapping[str, Any], where: str) -> None:
    missing = []
    for f in _REQUIRED:
        if f not in rec and not (f in ("answer", "wrong") and f"{f}_id" in rec):
            missing.append(f)
    if missing:
        raise DatasetError(
            f"{where} is missing the field{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)} (it has {sorted(rec)}); every record needs "
            "'clean', 'corrupt', 'answer' and 'wrong' (optional: 'positions', 'meta')")
    if "positions" in rec and rec["positions"] is not None and not isinstance(rec["positions"],
                                                                              dict):
        raise DatasetError(f"{where}: 'positions' must be an object {{name: index}}, got "
                           f"{rec['positions']!r}")


def _unpack_records(records: Sequence[Mapping[str, Any]]):
    records = list(records)
    if not records:
        raise DatasetError("empty data set: from_records got no records")
    clean, corrupt, answers, wrong, em = [], [], [], [], []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise DatasetError(f"record {i} is {type(rec).__name__}, not a dict")
        _check_record_fields(rec, f"record {i}")
        clean.append(rec["clean"])
        corrupt.append(rec["corrupt"])
        answers.append(rec["answer"] if "answer" in rec else rec["answer_id"])
        wrong.append(rec["wrong"] if "wrong" in rec else rec["wrong_id"])
        em.append(dict(rec.get("meta") or {}))
    names: list[str] = []
    for rec in records:
        for k in (rec.get("positions") or {}):
            if k not in names and k != "END":
                names.append(k)
    positions = None
    if names:
        positions = {k: [(rec.get("positions") or {}).get(k) for rec in records] for k in names}
    return clean, corrupt, answers, wrong, positions, em


def _prepare(model, clean, corrupt, answers, wrong, positions, example_meta, markers: bool = False) -> list[dict]:
    """Validate and tokenize; return one dict per example (all checks except uniform length)."""
    tok = tok_info(model)
    tok.check_bos()
    for what, v in (("clean", clean), ("corrupt", corrupt), ("answers", answers),
                    ("wrong", wrong)):
        if isinstance(v, (str, bytes)):
            raise DatasetError(f"{what} must be a list (one entry per example), got a single "
                               f"string {_short(str(v), 40)!r}: wrap it in a list")
        if v is None:
            raise DatasetError(f"{what} is None: give a list with one entry per example")
    clean, corrupt = list(clean), list(corrupt)
    answers = answers.tolist() if isinstance(answers, torch.Tensor) else list(answers)
    wrong = wrong.tolist() if isinstance(wrong, torch.Tensor) else list(wrong)
    n = len(clean)
    lens = {"clean": n, "corrupt": len(corrupt), "answers": len(answers), "wrong": len(wrong)}
    if example_meta is not None:
        example_meta = list(example_meta)
    if len(set(lens.values())) > 1:
        raise DatasetError(
            "the lists have different lengths ("
            + ", ".join(f"{k}: {v}" for k, v in lens.items())
            + "); give one clean prompt, one corrupt prompt, one answer and one wrong answer "
              "per example")
    if n == 0:
        raise DatasetError("empty data set: no examples were given (clean, corrupt, answers and "
                           "wrong are empty lists); give at least one example")
    # positions given by the user: ints, token texts (str or (text, occurrence)), one or one per example
    pos_spec: dict[str, list] = {}
    if positions is not None and not isinstance(positions, dict):
        raise DatasetError(f"positions must be a dict {{name: index, token text or one of them per example}}, "
                           f"got {type(positions).__name__} {positions!r}")
    for k, v in (positions or {}).items():
        if not isinstance(k, str):
            raise DatasetError(f"position names must be strings, got {k!r}")
        if k == "END":
            continue
        if isinstance(v, torch.Tensor):
            v = v.tolist()
        if (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, str) or is_text_spec(v):
            v = [v] * n
        elif isinstance(v, (list, tuple)):
            v = list(v)
            if len(v) != n:
                raise DatasetError(f"position {k!r} has {len(v)} entries for {n} examples: "
                                   "give one per example (a list), or a single int or token text for all")
        else:
            raise DatasetError(f"position {k!r} is {v!r}: give an int, a token text such as ' Mary', "
                               "(text, occurrence), or a list of them (one per example)")
        pos_spec[k] = v
    marks: list[dict] = [{} for _ in range(n)]
    if markers:
        clean, corrupt, marks = strip_all_markers(clean, corrupt, set(pos_spec))
    out: list[dict] = []
    no_space: list[tuple] = []
    for i in range(n):
        c, r = clean[i], corrupt[i]
        for what, p in (("clean", c), ("corrupt", r)):
            if not isinstance(p, str):
                raise DatasetError(f"{what} prompt of example {i} is {p!r} of type "
                                   f"{type(p).__name__}; prompts must be strings")
            if not p.strip():
                raise DatasetError(f"{what} prompt of example {i} is empty: give a non-empty "
                                   "prompt")
        cid = tok.prompt_tokens(c)
        rid = tok.prompt_tokens(r)
        for what, p, ids in (("clean", c, cid), ("corrupt", r, rid)):
            if tok.n_ctx is not None and len(ids) > tok.n_ctx:
                raise DatasetError(
                    f"{what} prompt of example {i} has {len(ids)} tokens, more than the model's "
                    f"context of {tok.n_ctx} (model.cfg.n_ctx): shorten it "
                    f"({_short(p, 60)!r})")
            unk = [j for j, t in enumerate(ids) if tok._is_unk(t, p)]
            if unk:
                raise DatasetError(
                    f"{what} prompt of example {i} {_short(p, 60)!r} has tokens unknown to the "
                    f"tokenizer (at positions {unk}, shown as {tok.unk_str!r}): use words in "
                    "the model's vocabulary")
        if len(cid) != len(rid):
            raise DatasetError(
                f"clean and corrupt prompts of example {i} have different token lengths: "
                f"clean {c!r} has {len(cid)} tokens {tok.str_tokens(cid)}, corrupt {r!r} has "
                f"{len(rid)} tokens {tok.str_tokens(rid)}; rephrase them so that they have the "
                "same number of tokens (e.g. swap in a name or word of the same token length)")
        aid, astr = tok.answer_id(answers[i], "answer", i)
        wid, wstr = tok.answer_id(wrong[i], "wrong answer", i)
        for what, v in (("answer", answers[i]), ("wrong answer", wrong[i])):
            if _misses_space(tok, c, v):
                no_space.append((i, what, v))
        if aid == wid:
            raise DatasetError(
                f"answer and wrong answer of example {i} are the same token "
                f"({astr!r} / {wstr!r}, id {aid}): the logit difference would always be 0; "
                "give a different wrong answer")
        T = len(cid)
        pos = {k: marker_position(tok, c, cid, off, k, i) for k, off in marks[i].items()}
        for k, v in pos_spec.items():
            p = tuple(v[i]) if isinstance(v[i], list) and is_text_spec(tuple(v[i])) else v[i]  # JSON pairs
            if isinstance(p, str) or is_text_spec(p):
                pos[k] = text_position(tok, c, cid, p, k, i)
                continue
            if p is None:
                raise DatasetError(f"named position {k!r} is missing in example {i} "
                                   f"({_short(c, 60)!r}): give it for every example, or drop it")
            if isinstance(p, bool) or not isinstance(p, int):
                try:
                    if isinstance(p, float) and p.is_integer():
                        p = int(p)
                    else:
                        raise TypeError
                except TypeError:
                    raise DatasetError(f"named position {k!r} of example {i} is {p!r}: give an "
                                       "integer token position") from None
            if not -T <= p < T:
                raise DatasetError(
                    f"named position {k!r} = {p} of example {i} is out of range: the prompt "
                    f"{_short(c, 60)!r} has {T} tokens (valid: 0..{T - 1}, or -{T}..-1 from "
                    "the end)")
            pos[k] = p + T if p < 0 else p
        em = dict(example_meta[i]) if example_meta is not None and i < len(example_meta) else {}
        out.append({"clean": c, "corrupt": r, "clean_ids": cid, "corrupt_ids": rid,
                    "answer_id": aid, "wrong_id": wid, "answer_str": astr, "wrong_str": wstr,
                    "pos": pos, "meta": em})
    if no_space:
        i, what, v = no_space[0]
        more = f" (and {len(no_space) - 1} more)" if len(no_space) > 1 else ""
        warnings.warn(f"{what} {v!r} of example {i}{more} has no leading space, but its prompt "
                      f"{_short(clean[i], 50)!r} ends in a word, so the model's next token is the spaced "
                      f"{' ' + v!r} (also one token): the metric would compare tokens the model rarely "
                      f"predicts here; write {' ' + v!r}, or pass the token id to keep {v!r}",
                      UserWarning, stacklevel=3)
    return out


#: characters after which the next word's token carries no leading space
_NO_SPACE_AFTER = "\"'([{<\n\t /-"


def _misses_space(tok: _Tok, prompt: str, answer: Any) -> bool:
    """Whether a string answer without a leading space follows a prompt that ends in a word, while the
    same answer with a space is another single token: the model's next token is almost surely the
    spaced one."""
    if not (isinstance(answer, str) and answer and answer[0].isalnum() and prompt
            and prompt[-1] not in _NO_SPACE_AFTER):
        return False
    spaced = tok.single_token(" " + answer)
    return spaced is not None and spaced != tok.single_token(answer)
