"""Baselines that gate releases: ``--fc-save``, ``--fc-compare`` and ``--fc-compare-fail``.

A baseline is a JSON report (see ``docs/report-schema.md``) stored as
``<rootdir>/.fieldcheck/baselines/NAME.json``; ``LATEST`` beside it names the newest one.
Both are written atomically. Claims are matched by id; inside a claim, results are matched by
assertion, statistic and criterion (and their order among equal ones).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fieldcheck.errors import BaselineError
from fieldcheck.reports.schema import atomic_write_text, iter_keyed_results, load_report, write_json

LATEST = "LATEST"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

HIGHER_IS_BETTER = (">", ">=")
LOWER_IS_BETTER = ("<", "<=")


def baseline_dir(root: Path) -> Path:
    return Path(root) / ".fieldcheck" / "baselines"


def check_name(name: str) -> str:
    if not name or not _NAME_RE.match(name) or name.endswith(".json") or name.upper() == LATEST:
        raise BaselineError(
            f"--fc-save {name!r} is not a usable baseline name: use letters, digits, '.', '_' "
            f"or '-' (not 'latest', no '/', no '.json'), e.g. --fc-save v1.2")
    return name


def save(report: dict, name: str, root: Path) -> Path:
    """Write the report as baseline NAME and point LATEST at it (both atomically)."""
    check_name(name)
    d = baseline_dir(root)
    path = write_json(d / f"{name}.json", report)
    atomic_write_text(d / LATEST, name + "\n")
    return path


def resolve(value: Optional[str], root: Path) -> Path:
    """The file a ``--fc-compare`` value names: ``latest`` (or no value), a saved NAME, or a
    path to a JSON report."""
    d = baseline_dir(root)
    if value is None or value == "" or value.lower() == "latest":
        ptr = d / LATEST
        if not ptr.is_file():
            raise BaselineError(
                f"--fc-compare: no baseline saved yet ({ptr} is missing): run once with "
                f"--fc-save NAME first, or pass --fc-compare=PATH to a JSON report")
        name = ptr.read_text(encoding="utf-8").strip()
        if not name or not _NAME_RE.match(name):
            raise BaselineError(f"--fc-compare: {ptr} is malformed ({name!r}): save a baseline "
                                f"again with --fc-save NAME")
        return d / f"{name}.json"
    p = Path(value)
    if p.suffix == ".json" or "/" in value or "\\" in value or p.is_file():
        if not p.is_absolute():
            p = (Path.cwd() / p) if (Path.cwd() / p).exists() else (Path(root) / p)
        return p
    named = d / f"{value}.json"
    if not named.is_file():
        have = sorted(x.stem for x in d.glob("*.json")) if d.is_dir() else []
        hint = f"saved baselines: {', '.join(have)}" if have else "no baseline is saved yet"
        raise BaselineError(
            f"--fc-compare {value!r}: no baseline of that name in {d} ({hint}); save one with "
            f"--fc-save {value}, or pass the path of a JSON report. (A test path right after "
            f"--fc-compare is read as its value: write --fc-compare=NAME.)")
    return named


def load(value: Optional[str], root: Path) -> tuple[Path, dict]:
    p = resolve(value, root)
    return p, load_report(p)


# --- compare-fail expressions ---------------------------------------------------------------
@dataclass(frozen=True)
class FailRule:
    expr: str
    field: str                    # "estimate" or "passed"
    threshold: float = 0.0
    relative: bool = False        # threshold is a fraction of the baseline value

    def describe(self) -> str:
        if self.field == "passed":
            return "a claim that passed in the baseline now fails"
        t = f"{self.threshold * 100:g}% of the baseline value" if self.relative else f"{self.threshold:g}"
        return f"{self.field} moves against its bar by more than {t}"


_FIELDS = {"estimate": "estimate", "value": "estimate", "est": "estimate"}


def parse_rule(expr: str) -> FailRule:
    """``passed``, ``estimate:10%`` (relative to the baseline) or ``estimate:0.05`` (absolute)."""
    e = (expr or "").strip()
    if e.lower() == "passed":
        return FailRule(expr=expr, field="passed")
    m = re.fullmatch(r"([A-Za-z_]+)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)", e)
    if not m or m.group(1).lower() not in _FIELDS:
        raise BaselineError(
            f"--fc-compare-fail {expr!r} is not a valid expression: use 'passed', "
            f"'estimate:10%' (relative to the baseline) or 'estimate:0.05' (absolute)")
    thr = float(m.group(2))
    rel = m.group(3) == "%"
    if rel:
        thr /= 100.0
    if not math.isfinite(thr):
        raise BaselineError(f"--fc-compare-fail {expr!r}: the threshold must be finite")
    return FailRule(expr=expr, field=_FIELDS[m.group(1).lower()], threshold=thr, relative=rel)


def _num(x) -> Optional[float]:
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _claim_passed(c: dict) -> bool:
    return c.get("outcome") in ("passed", "xpassed") and not c.get("failed_after_correction")


def compare(current: dict, baseline: dict, rules: list[FailRule], *, path: str = "") -> dict:
    """The comparison member of a report: per-result rows with baseline value and delta,
    missing and new claims, and the regressions the rules find."""
    base_claims = {c["id"]: c for c in baseline.get("claims", [])}
    cur_claims = {c["id"]: c for c in current.get("claims", [])}
    rows, regressions = [], []
    for cid in sorted(cur_claims):
        c = cur_claims[cid]
        b = base_claims.get(cid)
        bres = dict(iter_keyed_results(b)) if b else {}
        for key, r in iter_keyed_results(c):
            br = bres.get(key)
            if br is None:
                continue
            est, best = _num(r.get("estimate")), _num(br.get("estimate"))
            delta = None if est is None or best is None else est - best
            op = r.get("op", "")
            against = None
            if delta is not None:
                against = -delta if op in HIGHER_IS_BETTER else delta if op in LOWER_IS_BETTER else abs(delta)
            row = {"claim_id": cid, "key": key, "statistic": r.get("statistic"), "op": op,
                   "bar": r.get("bar"), "estimate": r.get("estimate"),
                   "baseline_estimate": br.get("estimate"), "delta": delta, "against": against,
                   "passed": r.get("passed_corrected", r.get("passed")),
                   "baseline_passed": br.get("passed_corrected", br.get("passed")),
                   "regressed": []}
            for rule in rules:
                if rule.field != "estimate":
                    continue
                if against is None:
                    if est is None and best is not None:  # a number became NaN: never hide it
                        row["regressed"].append(rule.expr)
                    continue
                limit = rule.threshold * abs(best) if rule.relative else rule.threshold
                if against > limit + 1e-12:
                    row["regressed"].append(rule.expr)
            if row["regressed"]:
                regressions.append(
                    f"{cid}: {r.get('statistic')} {_f(best)} -> {_f(est)} (needs {op} {_f(r.get('bar'))}; "
                    f"{', '.join(row['regressed'])})")
            rows.append(row)
        if b is not None and any(rule.field == "passed" for rule in rules):
            if _claim_passed(b) and c.get("outcome") in ("failed", "error") or (
                    _claim_passed(b) and c.get("failed_after_correction")):
                why = "failed after correction" if c.get("failed_after_correction") else c.get("outcome")
                regressions.append(f"{cid}: passed in the baseline, now {why} (passed)")
    missing = sorted(set(base_claims) - set(cur_claims))
    new = sorted(set(cur_claims) - set(base_claims))
    brun = baseline.get("run", {}) or {}
    bmodel = brun.get("model")
    return {
        "baseline": {"path": path, "git_commit": brun.get("git_commit"),
                     "model": bmodel.get("spec") if isinstance(bmodel, dict) else bmodel},
        "rules": [r.expr for r in rules],
        "rows": rows,
        "missing": missing,
        "new": new,
        "regressions": regressions,
    }


def _f(x) -> str:
    from fieldcheck.reports.table import fmt

    return fmt(x)
