"""Offline text for training dictionaries.

- ``"pydoc"`` (the default): the topics of Python's own help system (``pydoc_data.topics``, part
  of CPython's standard library, so present wherever fieldcheck runs, with nothing to install;
  Python Software Foundation License), about 470 KB of technical English: 79 topics, split into
  paragraphs (about 110k SmolLM2 tokens).
- ``"fortunes"``: the Debian package ``fortunes`` (fortune-mod's data files: quotations, jokes,
  poems, definitions; BSD licence, see ``/usr/share/doc/fortunes/copyright``), about 2.6 MB of
  English in ``/usr/share/games/fortunes``, for more varied prose where it is installed
  (``apt-get install fortunes``, as root). The ASCII-art files and the ``ethnic`` and
  ``men-women`` files are left out.
- a path: a ``.txt`` file (documents separated by blank lines) or a folder of them.

:func:`texts` returns the documents in a fixed order (shuffled by ``seed``), so a corpus and a seed
name the same training data on every machine that has the package.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

from fieldcheck.sae.dictionary import DictionaryError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
_SKIP = {"art", "ascii-art", "ethnic", "men-women", "translate-me", "debian"}
LICENCES = {"pydoc": "Python's pydoc_data.topics (CPython standard library), PSF licence",
            "fortunes": "Debian package fortunes (fortune-mod data files), BSD licence"}


def _fortunes() -> list[str]:
    if not FORTUNES_DIR.is_dir():
        raise DictionaryError(f"the corpus 'fortunes' needs the Debian package fortunes ({FORTUNES_DIR} is missing): "
                              "install it with `apt-get install fortunes`, or train on corpus='pydoc' or a text file")
    docs = []
    for f in sorted(FORTUNES_DIR.iterdir()):
        if f.suffix or f.name in _SKIP or f.is_symlink() or not f.is_file():
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        docs += [re.sub(r"[ \t]+", " ", d).strip() for d in re.split(r"^%\s*$", text, flags=re.M)]
    return [d for d in docs if len(d) > 20]


def _pydoc() -> list[str]:
    try:
        import pydoc_data.topics as t
    except ImportError:  # a stripped Python (some minimal distribution builds drop it)
        raise DictionaryError("the corpus 'pydoc' needs Python's pydoc_data package, which this Python lacks; "
                              "train on a .txt file or folder (corpus='path/to/texts')") from None

    docs = []
    for key in sorted(t.topics):
        docs += [p.strip() for p in re.split(r"\n\s*\n", t.topics[key]) if len(p.strip()) > 40]
    return docs


def texts(corpus: str = "pydoc", seed: int = 0) -> list[str]:
    """The documents of ``corpus`` ("pydoc", "fortunes" or a path to a .txt file or folder; see the
    module doc for what each is and its licence), shuffled by ``seed``."""
    if corpus == "fortunes":
        docs = _fortunes()
    elif corpus == "pydoc":
        docs = _pydoc()
    else:
        if not isinstance(corpus, (str, os.PathLike)):
            raise DictionaryError(f"corpus {corpus!r} is neither 'fortunes', 'pydoc' nor a path to a .txt file or folder")
        p = Path(corpus)
        files = sorted(p.rglob("*.txt")) if p.is_dir() else [p] if p.is_file() else []
        if not files:
            raise DictionaryError(f"corpus {corpus!r} is neither 'fortunes', 'pydoc', a .txt file nor a folder of them")
        docs = [d.strip() for f in files for d in re.split(r"\n\s*\n", f.read_text(encoding="utf-8", errors="replace"))
                if d.strip()]
    random.Random(seed).shuffle(docs)
    return docs


def describe(corpus: str) -> str:
    return LICENCES.get(corpus, f"text files at {corpus}")
