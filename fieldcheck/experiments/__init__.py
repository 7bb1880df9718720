"""Experiments built on the field core, each returning a plain result object with a summary,
``to_dict()`` and a plot: first/second-order and integrated predictions, scale sweeps and site
selection (``response``), Green functions (``green``), displacement transfer (``transfer``), path
patching (``paths``), attention and head scores (``attention``), direct logit attribution and the
logit lens (``lens``), and circuits: the edge graph (``edges``), what a circuit is
(``circuit_spec``), discovery by edge attribution (``discovery``) and evaluation (``circuits``).

Each experiment is a function whose first argument is a :class:`fieldcheck.field.core.FieldCore`;
``fieldcheck.Field`` (:mod:`fieldcheck.lab`, the layer above) offers each as a method. Nothing here
imports ``fieldcheck.lab``."""
