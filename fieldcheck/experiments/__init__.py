"""Experiments built on the field, each returning a plain result object with a summary,
``to_dict()`` and a plot: first/second-order and integrated predictions, scale sweeps and site
selection (``response``), Green functions (``green``), displacement transfer (``transfer``) and
path patching (``paths``). ``Field`` delegates to them; they never import ``Field``."""
