"""Data: ``contrastive.ContrastiveSet`` (clean/corrupt prompts with answers and named
positions), the built-in generators (``builtin``: IOI, factual recall, induction; public as
``fieldcheck.datasets``), hypothesis strategies (``strategies``) and the word lists they draw
from (``words.json``)."""
