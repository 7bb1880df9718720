"""Run reports: the JSON schema, atomic writes and the session-level multiple-comparison
correction. The terminal table is in ``table``, the HTML renderer in ``html``.

Everything here works on plain JSON-able dicts (``ClaimResult.to_dict()``), so it is usable
without pytest: the pytest plugin builds a report with :func:`build_report`, and anyone can
reload one with :func:`load_report` and render it with :func:`render_html`.

The schema is documented in ``docs/report-schema.md``. Two runs of the same claims with the
same seed and model give equal reports once the volatile ``"timing"`` member is dropped
(:func:`strip_volatile`): every date and duration lives there and nowhere else.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

SCHEMA_VERSION = 1

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
CORRECTIONS = ("bonferroni", "holm", "bh", "none")
#: the default correction and family (docs/statistics.md, "Many claims"): Bonferroni over the
#: claims of each test file, so a claim's verdict depends only on its own p-value and the
#: number of claims in its file
DEFAULT_CORRECTION = "bonferroni"
FAMILIES = ("session", "file", "claim")
DEFAULT_FAMILY = "file"


# --- atomic writes --------------------------------------------------------------------------
def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a temp file in the same folder, fsync, then
    ``os.replace``. A reader never sees a half-written file; a run killed mid-write leaves
    at most a stray ``.tmp`` file that no reader trusts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def dumps(report: dict) -> str:
    """The canonical JSON text of a report (sorted keys, no NaN literals)."""
    return json.dumps(_jsonable(report), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, report: dict) -> Path:
    return atomic_write_text(path, dumps(report))

# --- metadata -------------------------------------------------------------------------------
def _version(mod: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:
        return None


def git_commit(cwd: str | os.PathLike | None = None) -> Optional[str]:
    """The current git commit of ``cwd`` (None when not a repository or git is missing)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=5)
    except Exception:
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def run_metadata(*, cwd: str | os.PathLike | None = None, **settings: Any) -> dict:
    """Versions, platform and git commit, plus the given settings (model, device, seed...)."""
    from fieldcheck import __version__

    meta = {
        "fieldcheck": __version__,
        "torch": _version("torch"),
        "transformer_lens": _version("transformer-lens") or _version("transformer_lens"),
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "git_commit": git_commit(cwd),
    }
    meta.update(settings)
    return meta


# --- multiple comparisons -------------------------------------------------------------------
def _adjust_fallback(pvals: list[float], method: str) -> list[float]:
    m = len(pvals)
    if m == 0 or method == "none":
        return list(pvals)
    order = sorted(range(m), key=lambda i: pvals[i])
    adj = [0.0] * m
    if method == "bonferroni":
        return [min(1.0, m * p) for p in pvals]
    if method == "holm":
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * pvals[i]))
            adj[i] = running
    elif method == "bh":
        running = 1.0
        for rank in range(m - 1, -1, -1):
            i = order[rank]
            running = min(running, min(1.0, pvals[i] * m / (rank + 1)))
            adj[i] = running
    else:
        raise ValueError(f"unknown correction {method!r}: use one of {', '.join(CORRECTIONS)}")
    return adj


def adjust_pvalues(pvals: list[float], method: str = DEFAULT_CORRECTION) -> list[float]:
    """Use :func:`fieldcheck.claim.statistics.adjust_pvalues` when present, else the same formulas here."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}: use one of {', '.join(CORRECTIONS)}")
    try:
        from fieldcheck.claim.statistics import adjust_pvalues as _adj  # helper-owned, may not exist yet
    except Exception:
        _adj = None
    if _adj is not None:
        try:
            return [float(x) for x in _adj(list(pvals), method=method)]
        except Exception:
            pass
    return _adjust_fallback(list(pvals), method)


def finite_number(x: Any) -> bool:
    """Whether ``x`` is a finite int or float (not a bool, None, NaN, inf or a string)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def family_of(claim_id: str, family: str = DEFAULT_FAMILY) -> str:
    """The family a claim's p-values are corrected in: ``"file"`` (the default: the claims of
    one test file, the node id before ``::``), ``"session"`` (all claims of the run) or
    ``"claim"`` (each claim alone: its criteria are already an intersection-union test)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown correction family {family!r}: use one of {', '.join(FAMILIES)}")
    if family == "session":
        return ""
    if family == "file":
        return claim_id.split("::", 1)[0]
    return claim_id


#: outcomes whose claims assert nothing and stay out of the family (an expected failure, a skip)
NOT_ASSERTED = ("xfailed", "skipped")


def apply_correction(claims: list[dict], method: str = DEFAULT_CORRECTION, alpha: float = 0.05,
                     family: str = DEFAULT_FAMILY) -> list[str]:
    """Fill ``p_adjusted``, ``family_size`` and ``passed_corrected`` on every result of
    ``claims`` (in place).

    The hypotheses corrected are *claims* (test functions, each parametrized case apart): a
    claim holds only if every one of its criteria holds (an intersection-union test), so its
    p-value is the largest of its results' and the family counts claims, not results. Claims
    that assert nothing (outcome ``xfailed`` or ``skipped``) are left out of the family. The
    family is the session, a file or a claim (:func:`family_of`). A result's ``p_adjusted`` is
    its p-value adjusted as if it stood for its claim: with ``"bonferroni"`` (the default)
    ``min(1, m p)``, m the number of claims in the family, so a verdict depends on its own
    evidence and m only; ``"holm"`` and ``"bh"`` make it depend on the other claims' p-values
    too. A result decided by its confidence bound (``decide == "bound"``) that passed on its own
    but whose adjusted p-value exceeds ``alpha`` gets ``passed_corrected = False``. Results
    decided by their point estimate keep their decision (the adjusted p is reported only).
    Returns the ids of claims that passed but fail after correction.
    """
    groups: dict[str, list[tuple[dict, list[dict]]]] = {}
    for c in claims:
        with_p = [r for r in c.get("results", []) if finite_number(r.get("p_value"))]
        for r in c.get("results", []):
            r["p_adjusted"] = None
            r["family_size"] = None
        if with_p and c.get("outcome") not in NOT_ASSERTED:
            groups.setdefault(family_of(str(c.get("id", "")), family), []).append((c, with_p))
    for members in groups.values():
        claim_p = [max(float(r["p_value"]) for r in rs) for _, rs in members]
        m = len(members)
        for i, (_, rs) in enumerate(members):
            for r in rs:
                if method == "bonferroni" or method == "none" or m == 1:
                    factor = 1 if method == "none" else m
                    r["p_adjusted"] = min(1.0, factor * float(r["p_value"]))
                else:
                    vals = list(claim_p)
                    vals[i] = float(r["p_value"])
                    r["p_adjusted"] = float(adjust_pvalues(vals, method)[i])
                r["family_size"] = m
    newly_failed = []
    for c in claims:
        flipped = False
        for r in c.get("results", []):
            ok = bool(r.get("passed"))
            a = r.get("alpha") if finite_number(r.get("alpha")) else alpha
            if (ok and method != "none" and r.get("decide", "bound") == "bound"
                    and finite_number(r.get("p_adjusted")) and r["p_adjusted"] > a):
                ok = False
                flipped = True
            r["passed_corrected"] = ok
        if flipped and c.get("outcome") == "passed":
            c["failed_after_correction"] = True
            newly_failed.append(c["id"])
        else:
            c["failed_after_correction"] = False
    return newly_failed


# --- the report -----------------------------------------------------------------------------
def build_report(claims: Iterable[dict], run: dict, *, timing: Optional[dict] = None,
                 correction: str = DEFAULT_CORRECTION, alpha: float = 0.05,
                 comparison: Optional[dict] = None, family: str = DEFAULT_FAMILY) -> dict:
    """Assemble a report. ``claims``: dicts with at least ``id``, ``outcome``, ``results``.

    Claims are sorted by id; the correction is applied; counts are summarized.
    """
    cl = []
    for c in claims:
        c = dict(c)
        c.setdefault("results", [])
        c.setdefault("error", None)
        c.setdefault("falsifying_example", None)
        c.setdefault("marker", {})
        c["results"] = [dict(r) for r in c["results"]]
        for r in c["results"]:
            r["claim_id"] = c["id"]
        cl.append(c)
    cl.sort(key=lambda c: c["id"])
    after = apply_correction(cl, correction, alpha, family)
    counts = {k: 0 for k in OUTCOMES}
    for c in cl:
        counts[c["outcome"]] = counts.get(c["outcome"], 0) + 1
    summary = {
        "claims": len(cl),
        "results": sum(len(c["results"]) for c in cl),
        "outcomes": counts,
        "failed_after_correction": after,
        "ok": not after and counts["failed"] == 0 and counts["error"] == 0,
    }
    report = {
        "schema_version": SCHEMA_VERSION,
        "run": run,
        "summary": summary,
        "claims": cl,
        "comparison": comparison,
        "timing": timing or {},
    }
    return _jsonable(report)


def strip_volatile(report: dict) -> dict:
    """The report without its ``timing`` member: what two equal runs share."""
    return {k: v for k, v in report.items() if k != "timing"}


def load_report(path: str | os.PathLike) -> dict:
    """Read a report written by :func:`write_json`; a missing or malformed file raises
    :class:`fieldcheck.errors.BaselineError` naming the file and what is wrong."""
    from fieldcheck.errors import BaselineError

    p = Path(path)
    if not p.is_file():
        raise BaselineError(f"baseline {str(p)!r} does not exist: save one first with "
                            f"--fc-save NAME, or pass the path of a JSON report")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BaselineError(f"baseline {str(p)!r} is not valid JSON ({e}): delete it and save "
                            f"it again with --fc-save") from None
    if not isinstance(data, dict) or "schema_version" not in data or not isinstance(
            data.get("claims"), list):
        raise BaselineError(f"baseline {str(p)!r} is not a fieldcheck report (no schema_version "
                            f"or claims list): save it again with --fc-save")
    if data["schema_version"] != SCHEMA_VERSION:
        raise BaselineError(f"baseline {str(p)!r} has schema_version {data['schema_version']!r}, "
                            f"this fieldcheck reads {SCHEMA_VERSION}: save it again with --fc-save")
    for c in data["claims"]:
        if not isinstance(c, dict) or not isinstance(c.get("id"), str) or not isinstance(
                c.get("results", []), list):
            raise BaselineError(f"baseline {str(p)!r} has a malformed claim entry {c!r:.80}: "
                                f"save it again with --fc-save")
    return data


def result_key(result: dict) -> str:
    """How a result is matched across runs inside its claim."""
    return f"{result.get('assertion', '')}:{result.get('statistic', '')}:{result.get('criterion', '')}"


def iter_keyed_results(claim: dict):
    """Yield (key, result) with a running index for repeated keys in one claim."""
    seen: dict[str, int] = {}
    for r in claim.get("results", []):
        k = result_key(r)
        i = seen.get(k, 0)
        seen[k] = i + 1
        yield (f"{k}#{i}", r)


def _jsonable(x: Any) -> Any:
    from fieldcheck.jsonable import jsonable as j

    return j(x)
