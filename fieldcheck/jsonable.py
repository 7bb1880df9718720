"""One helper every layer shares: make results JSON-safe (numpy to Python, NaN/inf to strings)."""
from __future__ import annotations

import math
from typing import Any


def jsonable(x: Any) -> Any:
    """Make numbers JSON-safe: numpy scalars to Python, NaN/inf to strings."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if np is not None and isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if np is not None and isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    return x
