"""Session settings for the statistics behind every claim.

The pytest plugin sets these from its command-line options; a test can change them for a
block with :func:`override`, and the plugin marks which claim is running with
:func:`claim_context` (the claim id seeds every bootstrap and permutation draw, so results do
not depend on the order in which claims run).

Settings (defaults):

- ``alpha`` (0.05): error rate of each claim's decision; one-sided bounds have level 1 - alpha.
- ``decide`` (``"bound"``): ``"bound"`` - the one-sided confidence bound at level 1 - alpha
  must clear the bar; ``"point"`` - the point estimate is compared with the bar.
- ``seed`` (0): session seed, combined with the claim id and the criterion text.
- ``n_boot`` (2000): bootstrap resamples; also the number of random sign flips of the
  permutation tests when the exact enumeration is too large.
- ``method`` (``"bca"``): bootstrap interval, ``"bca"`` or ``"percentile"``.
- ``claim_id`` (None): the running claim (pytest node id); set with :func:`claim_context`.
- ``memory_budget`` (None: 2 GiB): bytes one chunk of a patch sweep, edge scoring or EAP-IG may
  use; a ``Field`` built without its own ``memory_budget`` uses this (``--fc-memory-budget``).
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass, fields, replace
from typing import Iterator, Optional

from fieldcheck.errors import CriterionError, UsageError

DECIDE = ("bound", "point")
#: bytes one chunk of a sweep may use when nothing else is set
DEFAULT_MEMORY_BUDGET = 2 * 2**30
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}
METHODS = ("bca", "percentile")


@dataclass(frozen=True)
class Settings:
    alpha: float = 0.05
    decide: str = "bound"
    seed: int = 0
    n_boot: int = 2000
    method: str = "bca"
    claim_id: Optional[str] = None
    show_progress: Optional[bool] = None  # None: only on a terminal and outside CI
    memory_budget: Optional[int] = None   # bytes; None: the default (DEFAULT_MEMORY_BUDGET)

    @property
    def level(self) -> float:
        """Confidence of the one-sided bound that decides a claim: 1 - alpha."""
        return 1.0 - self.alpha


_current: contextvars.ContextVar[Settings] = contextvars.ContextVar("fieldcheck_settings",
                                                                   default=Settings())


def validate(**kw) -> dict:
    """Check and normalize setting values; raise CriterionError naming the bad one."""
    names = {f.name for f in fields(Settings)}
    out = {}
    for key, value in kw.items():
        if key == "level":
            if value is None:
                continue
            value = _check_prob("level", value)
            if value <= 0.5:
                raise CriterionError(f"level={value} is not a useful confidence level; use a value in (0.5, 1), "
                                     "e.g. level=0.95 (alpha = 1 - level)")
            key, value = "alpha", 1.0 - value
        if key not in names:
            raise CriterionError(f"unknown fieldcheck setting {key!r}; valid settings: "
                                 f"{', '.join(sorted(names | {'level'}))}")
        if value is None and key not in ("claim_id", "show_progress"):
            continue
        if key == "alpha":
            value = _check_prob("alpha", value)
            if value >= 0.5:
                raise CriterionError(f"alpha={value} is not a useful error rate; "
                                     "use a value in (0, 0.5), e.g. alpha=0.05")
        elif key == "decide":
            if value not in DECIDE:
                raise CriterionError(f"decide={value!r} is unknown; use one of {DECIDE}")
        elif key == "method":
            value = str(value).lower()
            if value not in METHODS:
                raise CriterionError(f"method={value!r} is unknown; use one of {METHODS}")
        elif key in ("seed", "n_boot"):
            if isinstance(value, bool) or not isinstance(value, int):
                try:
                    ok = float(value).is_integer()
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    raise CriterionError(f"{key}={value!r} must be an integer")
                value = int(value)
            if key == "n_boot" and value < 100:
                raise CriterionError(f"n_boot={value} is too small for a confidence bound; "
                                     "use at least 100 (default 2000)")
        elif key == "claim_id" and value is not None:
            value = str(value)
        elif key == "memory_budget":
            value = parse_bytes(value)
        out[key] = value
    return out


def parse_bytes(value) -> int:
    """A number of bytes from an int or a text such as ``"512MiB"``, ``"8GB"``, ``"2e9"``."""
    import re

    if isinstance(value, bool):
        value = None
    if isinstance(value, (int, float)):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS:
            raise UsageError(f"memory budget {value!r} is not a size: use bytes or a unit, e.g. "
                                 f"512MiB, 8GB, 2GiB")
        n = float(m.group(1)) * _UNITS[unit]
    if not math.isfinite(n) or n < 1:
        raise UsageError(f"memory budget {value!r} must be at least one byte, e.g. 2GiB")
    return int(n)


def _check_prob(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CriterionError(f"{name}={value!r} must be a number in (0, 1)") from None
    if not math.isfinite(v) or not 0.0 < v < 1.0:
        raise CriterionError(f"{name}={value!r} must be a finite number in (0, 1), "
                             f"e.g. {'alpha=0.05' if name == 'alpha' else 'level=0.95'}")
    return v


def get() -> Settings:
    """The settings in force now."""
    return _current.get()


def set(**kw) -> Settings:  # noqa: A001 - module-level API: fieldcheck.config.set(alpha=...)
    """Change the session settings (the plugin calls this once from its options)."""
    new = replace(_current.get(), **validate(**kw))
    _current.set(new)
    return new


def reset() -> None:
    """Back to the defaults."""
    _current.set(Settings())


def restore(settings: Settings) -> None:
    """Put back ``settings`` (a Settings object saved earlier with :func:`get`), unvalidated."""
    _current.set(settings)


@contextlib.contextmanager
def override(**kw) -> Iterator[Settings]:
    """Change settings inside a ``with`` block: ``with override(alpha=0.01): ...``."""
    token = _current.set(replace(_current.get(), **validate(**kw)))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


@contextlib.contextmanager
def claim_context(claim_id: Optional[str]) -> Iterator[Settings]:
    """Mark the running claim; its id seeds the draws of every assertion inside."""
    with override(claim_id=claim_id) as s:
        yield s


def resolve(**kw) -> Settings:
    """The settings for one call: the session's, with the call's non-None keywords on top."""
    return replace(_current.get(), **validate(**{k: v for k, v in kw.items() if v is not None}))
