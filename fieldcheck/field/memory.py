"""Memory: the budget a chunked computation may use, and out-of-memory errors that name the option
to lower.

``Field(model, memory_budget=...)`` (default: the session setting ``fieldcheck.config``
``memory_budget``, set by ``--fc-memory-budget``, else 2 GiB) bounds one chunk of a patch sweep
(rows of the light-cone engine), of edge scoring and EAP-IG (examples per backward), of circuit
evaluation and of sensitivities and integrated predictions (examples per backward). What does not
split into chunks (the model's weights, a data set's two cached runs) is sized by the model and
the data set: an out-of-memory error there names those instead.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from fieldcheck.errors import MemoryBudgetError


def resolve_budget(memory_budget: Optional[int]) -> int:
    """``memory_budget`` if given, else the session's ``fieldcheck.config`` setting, else 2 GiB."""
    from fieldcheck import config

    if memory_budget is not None:
        return config.parse_bytes(memory_budget)
    return int(config.get().memory_budget or config.DEFAULT_MEMORY_BUDGET)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def is_oom(exc: BaseException) -> bool:
    """An allocation failure of torch (CUDA, MPS or the CPU allocator) or of Python."""
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    text = str(exc).lower()
    return name == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text))


@contextlib.contextmanager
def oom_hint(what: str, budget: Optional[int] = None, chunked: bool = True) -> Iterator[None]:
    """Turn an out-of-memory error inside the block into a :class:`MemoryBudgetError` that says
    which option to lower: the memory budget for chunked work, else the data set or the dtype."""
    try:
        yield
    except Exception as e:
        if not is_oom(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if chunked and budget is not None:
            fix = (f"lower the memory budget (now {human(budget)}): --fc-memory-budget, or "
                   f"Field(model, memory_budget=...), e.g. {human(max(budget // 4, 2**20))}")
        else:
            fix = ("this part is not chunked: use fewer examples per data set (n=...), shorter prompts, "
                   "or a half-precision dtype (--fc-dtype bfloat16); a model that does not fit one "
                   "device can be spread over several (load_model(spec, device_map='auto'))")
        raise MemoryBudgetError(f"out of memory while {what} ({type(e).__name__}: {first}): {fix}") from None
