"""The error hierarchy. Every error a user can cause is a ``FieldcheckError`` whose
message names the bad input and the fix; it is never a deep torch traceback."""

__all__ = ["FieldcheckError", "BaselineError", "CriterionError", "DatasetError", "DeviceError", "InsufficientData",
           "MemoryBudgetError", "MetricError", "ModelNotAvailable", "NumericalError", "PatchError", "SiteError",
           "SourceError", "UsageError"]


class FieldcheckError(Exception):
    """Base class of every error fieldcheck raises on purpose."""


class ModelNotAvailable(FieldcheckError):
    """A model spec could not be resolved or loaded (offline hub, missing file, bad cache)."""


class DatasetError(FieldcheckError, ValueError):
    """A contrastive data set is malformed (lengths, answers, positions, files)."""


class SiteError(FieldcheckError, ValueError):
    """A site names an unknown kind, or a layer/head/position out of range."""


class SourceError(FieldcheckError, ValueError):
    """A source or alpha is invalid (NaN/inf alpha, wrong shape of a steering vector)."""


class MetricError(FieldcheckError, ValueError):
    """A metric is unknown, returns the wrong shape, or returns NaN/inf."""


class PatchError(FieldcheckError):
    """A patch did not take effect (its hook did not fire or did not change the activation)."""


class CriterionError(FieldcheckError, ValueError):
    """A criterion names an unknown statistic or is malformed."""


class InsufficientData(FieldcheckError, ValueError):
    """Too few examples for the requested confidence, or more requested than available."""


class BaselineError(FieldcheckError):
    """A stored baseline is missing or malformed, or a compare-fail expression is bad."""


class MemoryBudgetError(FieldcheckError):
    """A request does not fit the memory budget even at the smallest chunk."""


class NumericalError(FieldcheckError):
    """A model produced NaN or inf where a finite number was needed."""


class DeviceError(FieldcheckError, ValueError):
    """A device or dtype that does not exist or that the model cannot run in."""


class UsageError(FieldcheckError, ValueError):
    """An argument has a value outside its documented choices (engine, direction, which, ...)."""


class MergeError(FieldcheckError):
    """Partial reports (CI shards, distributed tasks) that do not belong to one run: different
    models, seeds, settings or code, a shard missing or given twice, a claim in two of them."""


# --- argument checks shared by every layer: each raises ``error`` naming the argument, the value
# given and what is accepted (issue 23: bad input never reaches torch or numpy) --------------------

def _alternatives(choices) -> str:
    shown = [repr(c) for c in choices]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def check_choice(name: str, value, choices, error: type = UsageError, hint: str = ""):
    """``value`` if it is one of ``choices`` (same type and equal: True is not 1), else ``error``
    saying ``"{name} must be 'a', 'b' or 'c', got ..."`` (plus ``hint``)."""
    try:
        ok = any(value is c or (type(value) is type(c) and value == c) for c in choices)
    except Exception:  # noqa: BLE001 - an array or an odd object: not a choice
        ok = False
    if not ok:
        raise error(f"{name} must be {_alternatives(choices)}, got {value!r}" + (f"; {hint}" if hint else ""))
    return value


def _bounds(low, high) -> str:
    if low is not None and high is not None:
        return f" in {low}..{high}"
    if low is not None:
        return f" >= {low}"
    return f" <= {high}" if high is not None else ""


def check_int(name: str, value, low=None, high=None, error: type = UsageError, hint: str = "") -> int:
    """``int(value)`` for an integer (a Python or numpy int, not a bool) in ``low..high`` (either
    may be None), else ``error`` naming the argument and the range."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"{name} must be an integer{_bounds(low, high)}, got {value!r}" + (f"; {hint}" if hint else ""))
    if (low is not None and value < low) or (high is not None and value > high):
        raise error(f"{name}={int(value)} is out of range: use an integer{_bounds(low, high)}"
                    + (f"; {hint}" if hint else ""))
    return int(value)


def check_number(name: str, value, low=None, high=None, low_open: bool = False, high_open: bool = False,
                 error: type = UsageError, hint: str = "") -> float:
    """``float(value)`` for a finite real number within the bounds (``low_open``/``high_open``:
    the bound itself excluded), else ``error`` naming the argument, the value and the range."""
    import math
    import numbers

    rng = ""
    if low is not None or high is not None:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        rng = f" in {'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise error(f"{name} must be a finite number{rng}, got {value!r}" + (f"; {hint}" if hint else ""))
    v = float(value)
    if (low is not None and (v < low or (low_open and v == low))) or \
            (high is not None and (v > high or (high_open and v == high))):
        raise error(f"{name}={value!r} is out of range: use a number{rng}" + (f"; {hint}" if hint else ""))
    return v
