"""Comparing a run with a baseline: the ``--fc-compare-fail`` rules and the comparison member of a
report (per-result rows, the paired test of each change, missing and new claims, regressions).

A pure function of two report dicts (see ``docs/report-schema.md``), so that the pytest plugin
(``--fc-compare``, ``--fc-baseline-model``) and ``fieldcheck report merge`` give the same
comparison. Claims are matched by id; inside a claim, results are matched by assertion,
statistic and criterion (and their order among equal ones). Results that store per-example values
over the same data set (equal content hashes) get a *paired* test of their change
(:mod:`fieldcheck.claim.comparison`); the rule ``significant`` flags a change against the claim's
direction whose paired p-value, corrected across all paired results, is below alpha, or an
estimate that cleared the bar in the baseline and does not now (a crossing of the bar).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

from fieldcheck.errors import BaselineError
from fieldcheck.reports.schema import iter_keyed_results

HIGHER_IS_BETTER = (">", ">=")
LOWER_IS_BETTER = ("<", "<=")


@dataclass(frozen=True)
class FailRule:
    expr: str
    field: str                    # "estimate" or "passed"
    threshold: float = 0.0
    relative: bool = False        # threshold is a fraction of the baseline value

    def describe(self) -> str:
        if self.field == "significant":
            return ("a change against the claim's direction that is significant after the "
                    "correction across results (paired test), or a crossing of the bar")
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
    if e.lower() == "significant":
        return FailRule(expr=expr, field="significant")
    m = re.fullmatch(r"([A-Za-z_]+)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)", e)
    if not m or m.group(1).lower() not in _FIELDS:
        raise BaselineError(
            f"--fc-compare-fail {expr!r} is not a valid expression: use 'significant' (paired "
            f"test), 'passed', 'estimate:10%' (relative to the baseline) or 'estimate:0.05' "
            f"(absolute)")
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


def compare(current: dict, baseline: dict, rules: list[FailRule], *, path: str = "",
            alpha: float = 0.05, correction: str = "holm", seed: int = 0,
            n_boot: Optional[int] = None, baseline_model: Optional[str] = None) -> dict:
    """The comparison member of a report: per-result rows with baseline value and delta (and a
    paired test of the change where both store per-example values of the same examples),
    missing and new claims, and the regressions the rules find.

    ``alpha``, ``correction``: the level and the correction across the paired results of the
    ``significant`` rule; ``seed``, ``n_boot``: the paired bootstrap's draws."""
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
            _pair(row, r, br, alpha=alpha, seed=seed, n_boot=n_boot)
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
            rows.append(row)
        if b is not None and any(rule.field == "passed" for rule in rules):
            if _claim_passed(b) and c.get("outcome") in ("failed", "error") or (
                    _claim_passed(b) and c.get("failed_after_correction")):
                why = "failed after correction" if c.get("failed_after_correction") else c.get("outcome")
                regressions.append(f"{cid}: passed in the baseline, now {why} (passed)")
    if any(rule.field == "significant" for rule in rules):
        _significant(rows, [r.expr for r in rules if r.field == "significant"][0], alpha, correction)
    for row in rows:
        if row["regressed"]:
            why = ", ".join(row["regressed"])
            pc = row.get("paired")
            if pc:
                why += (f"; paired change {_f(pc['estimate'])} [{_f(pc['low'])}, {_f(pc['high'])}], "
                        f"p_adj={_f(row.get('p_change_adjusted'))}")
            regressions.append(
                f"{row['claim_id']}: {row['statistic']} {_f(row['baseline_estimate'])} -> "
                f"{_f(row['estimate'])} (needs {row['op']} {_f(row['bar'])}; {why})")
    sig = [rule.expr for rule in rules if rule.field == "significant"]
    for cid in sorted(cur_claims):   # a claim that errors now has no result to pair
        b = base_claims.get(cid)
        if sig and b is not None and _claim_passed(b) and cur_claims[cid].get("outcome") == "error":
            regressions.append(f"{cid}: passed in the baseline, now error ({sig[0]})")
    missing = sorted(set(base_claims) - set(cur_claims))
    new = sorted(set(cur_claims) - set(base_claims))
    brun = baseline.get("run", {}) or {}
    bmodel = brun.get("model")
    unpaired: dict[str, int] = {}
    for row in rows:
        if row.get("unpaired_reason"):
            unpaired[row["unpaired_reason"]] = unpaired.get(row["unpaired_reason"], 0) + 1
    return {
        "baseline": {"path": path or None, "git_commit": brun.get("git_commit"),
                     "model": baseline_model or (bmodel.get("spec") if isinstance(bmodel, dict) else bmodel)},
        "rules": [r.expr for r in rules],
        "paired": {"alpha": alpha, "correction": correction,
                   "n_paired": sum(1 for row in rows if row.get("paired")),
                   "n_unpaired": sum(unpaired.values()), "unpaired": unpaired},
        "rows": rows,
        "missing": missing,
        "new": new,
        "regressions": regressions,
    }


def _pair(row: dict, cur: dict, base: dict, *, alpha: float, seed: int,
          n_boot: Optional[int]) -> None:
    """Fill ``row["paired"]`` (the paired change, or None) and ``row["unpaired_reason"]``."""
    from fieldcheck.claim.comparison import pairing_problem, paired_change
    from fieldcheck.claim.statistics import make_rng

    row["paired"], row["unpaired_reason"] = None, None
    why = pairing_problem(cur.get("examples"), base.get("examples"))
    if why is None and row["op"] not in HIGHER_IS_BETTER + LOWER_IS_BETTER:
        why = f"the criterion has no direction (op {row['op']!r})"
    if why is not None:
        row["unpaired_reason"] = why
        return
    if n_boot is None:
        from fieldcheck import config as fc_config

        n_boot = fc_config.get().n_boot
    try:
        pc = paired_change(cur["examples"], base["examples"], op=row["op"], alpha=alpha,
                           n_boot=n_boot, rng=make_rng(seed, row["claim_id"], row["key"], "paired"),
                           statistic=str(row.get("statistic") or ""))
    except ValueError as e:
        row["unpaired_reason"] = str(e)
        return
    row["paired"] = pc.to_dict()


def _significant(rows: list[dict], expr: str, alpha: float, correction: str) -> None:
    """The ``significant`` rule: paired p-values of a change against the direction, corrected
    together (:func:`fieldcheck.claim.statistics.adjust_pvalues`), below alpha; or an estimate
    that cleared the bar in the baseline and does not now (a crossing of the bar). A verdict
    that flips while the estimate stays on the same side of the bar (its confidence bound, or
    the correction, moved) is not a regression by itself: the ``passed`` rule catches those."""
    from fieldcheck.claim.statistics import adjust_pvalues

    slots = [row for row in rows if row.get("paired") and _num(row["paired"].get("p_value")) is not None]
    adj = adjust_pvalues([float(row["paired"]["p_value"]) for row in slots], correction)
    for row, a in zip(slots, adj):
        row["p_change_adjusted"] = a
        row["changed"] = "worse" if a is not None and a < alpha else "no significant change"
        if row["changed"] == "worse":
            row["regressed"].append(expr)
    from fieldcheck.claim.statistics import clears

    for row in rows:   # the estimate itself crossed the bar (not a verdict that flipped with noise)
        best, est, bar = _num(row["baseline_estimate"]), _num(row["estimate"]), _num(row["bar"])
        if best is None or bar is None or row["op"] not in HIGHER_IS_BETTER + LOWER_IS_BETTER:
            continue
        if clears(best, row["op"], bar) and not clears(est if est is not None else math.nan,
                                                       row["op"], bar) and expr not in row["regressed"]:
            row["regressed"].append(f"{expr}: crossed the bar")


def _f(x) -> str:
    from fieldcheck.reports.table import fmt

    return fmt(x)
