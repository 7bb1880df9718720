"""What every layer shares to turn results into plain data: ``jsonable`` (JSON-safe values) and
``to_numpy`` (a float64 numpy array from a tensor, an array, a list or a scalar). Neither imports
torch: tensors are recognised by their ``detach``/``cpu`` methods."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only
    import numpy as np


def to_numpy(x: Any, dtype: Any = "float64") -> "np.ndarray":
    """A numpy array from a numpy array, torch tensor, list or scalar (copied to the CPU).

    dtype: the array's dtype (default float64; None keeps the input's). Returns an ndarray of
    the input's shape."""
    import numpy as np

    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor
        x = x.detach().cpu()
        if dtype is not None and hasattr(x, "double") and not str(x.dtype).endswith("bool"):
            x = x.double()
        x = x.numpy()
    arr = np.asarray(x)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return arr


def jsonable(x: Any) -> Any:
    """Make values JSON-safe: tensors and numpy arrays to lists, numpy scalars to Python,
    NaN/inf to strings, dict keys to strings (recursively through dicts, lists and tuples).
    numpy is imported only here (``import fieldcheck`` and the plugin's start-up stay light)."""
    import numpy as np

    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor: floats as float64
        x = x.detach().cpu()
        x = x.double().numpy() if x.is_floating_point() else x.numpy()
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    return x
