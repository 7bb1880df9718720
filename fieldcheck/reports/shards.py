"""Splitting a claim suite into shards, and what identifies the suite a shard came from.

A shard is a set of whole claim files: a file is never split, so a correction family of
``file`` or ``claim`` lies inside one shard. The ``session`` family spans the shards by
definition: each shard then reports a provisional correction over its own claims, and
``fieldcheck report merge`` applies the real one over the merged session.

:func:`plan` is deterministic: every shard job of a CI matrix computes the same split from the
same collected suite (and the same durations report), without talking to the others.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable, Optional

from fieldcheck.errors import UsageError

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 1 <= K <= N."""
    m = _SHARD_RE.match(str(text))
    if not m or not (1 <= int(m.group(1)) <= int(m.group(2))):
        raise UsageError(f"--fc-shard {text!r} is not K/N with 1 <= K <= N: use e.g. --fc-shard 2/4 "
                         f"(the second of four shards)")
    return int(m.group(1)), int(m.group(2))


def file_of(claim_id: str) -> str:
    """The claim file of a node id (``claims/test_ioi.py::test_x[baseline]`` -> ``claims/test_ioi.py``)."""
    return claim_id.split("::", 1)[0]


def durations_by_file(report: dict) -> dict[str, float]:
    """Seconds per claim file in a previous run's report (its ``timing.claims``)."""
    out: dict[str, float] = {}
    for cid, sec in ((report.get("timing") or {}).get("claims") or {}).items():
        if isinstance(sec, (int, float)) and not isinstance(sec, bool) and sec >= 0:
            out[file_of(cid)] = out.get(file_of(cid), 0.0) + float(sec)
    return out


def weights(counts: dict[str, int], durations: Optional[dict[str, float]] = None) -> dict[str, float]:
    """The expected cost of each file: its measured seconds where the durations know it, else its
    number of claims times the mean seconds per claim of the known files (the number of claims
    when nothing is known)."""
    durations = durations or {}
    known = [f for f in counts if f in durations]
    per_claim = (sum(durations[f] for f in known) / max(1, sum(counts[f] for f in known))) if known else 1.0
    return {f: float(durations[f]) if f in durations else counts[f] * per_claim for f in counts}


def plan(w: dict[str, float], n: int) -> list[list[str]]:
    """``n`` shards of the files weighted ``w``, balanced greedily (longest first, each to the
    lightest shard so far; ties: by name, then the lowest shard). Deterministic."""
    if n < 1:
        raise UsageError(f"a suite splits into at least one shard, not {n}")
    shards: list[list[str]] = [[] for _ in range(n)]
    load = [0.0] * n
    for f in sorted(w, key=lambda f: (-w[f], f)):
        k = min(range(n), key=lambda i: (load[i], i))
        shards[k].append(f)
        load[k] += w[f]
    return [sorted(s) for s in shards]


def _sha(parts: Iterable[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, data in parts:
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def files_sha256(paths: Iterable[Path], root: Path) -> str:
    """One hash of the files' names (relative to ``root``) and contents."""
    parts = []
    for p in sorted({Path(p) for p in paths}):
        try:
            rel = p.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            rel = p.as_posix()
        parts.append((rel, p.read_bytes() if p.is_file() else b""))
    return _sha(parts)


def code_identity(claim_files: Iterable[Path], root: Path, sources: Iterable[Path] = ()) -> dict:
    """What must be equal for two runs' claims to belong to one run: the claim files and the
    ``conftest.py`` files above them (contents), and the code that ran them: fieldcheck's own
    source and ``sources`` (the pytest plugin passes its own files)."""
    root = Path(root)
    claim_files = [Path(p) for p in claim_files]
    confs = set()
    for p in claim_files:
        for d in [p.parent, *p.parent.parents]:
            c = d / "conftest.py"
            if c.is_file():
                confs.add(c)
            if d == root or root not in d.parents:
                break
    pkg = Path(__file__).resolve().parents[1]          # fieldcheck/
    src = sorted(pkg.rglob("*.py")) + sorted(Path(p) for p in sources)
    return {"claims_sha256": files_sha256(claim_files + sorted(confs), root),
            "fieldcheck_sha256": _sha((f"{p.parent.name}/{p.name}", p.read_bytes()) for p in src)}
