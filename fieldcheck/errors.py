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
