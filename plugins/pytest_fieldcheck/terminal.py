"""What the plugin prints at the end of a run: the claims table, corrections, regressions and
the files written."""
from __future__ import annotations

from .session import FieldcheckPlugin

def write_summary(terminalreporter, state: FieldcheckPlugin) -> None:
    from fieldcheck import reports

    tr = terminalreporter
    rep = state.report
    if rep["claims"]:
        tr.write_sep("=", "fieldcheck claims")
        tr.write_line(reports.format_table(rep, width=getattr(tr, "_tw", None) and tr._tw.fullwidth))
        o = state.opts
        tr.write_line(f"alpha={o.alpha} correction={o.correction} decide={o.decide} seed={o.seed} "
                      f"model={o.model}")
        for line in sae_lines(rep):
            tr.write_line(line, yellow=True)
    after = rep["summary"]["failed_after_correction"]
    if after:
        fam = getattr(state.opts, "correction_family", "file")
        tr.write_line(f"fieldcheck: {len(after)} claim(s) passed on their own but FAIL after the "
                      f"{state.opts.correction} correction {correction_scope(rep, fam)} "
                      f"(alpha={state.opts.alpha}):", red=True, bold=True)
        for cid in after:
            tr.write_line(f"  {cid}", red=True)
        _recount(tr, after)
    if rep.get("models"):
        tr.write_sep("=", "fieldcheck claims x models")
        tr.write_line(reports.format_grid(rep, width=getattr(tr, "_tw", None) and tr._tw.fullwidth))
        rel = len(state.released)
        tr.write_line(f"models run one after another, each freed before the next ({rel} "
                      f"load(s) freed); reference: {rep['models']['labels'][0]}; in brackets: "
                      f"the paired change against it [{round((1 - 2 * state.opts.alpha) * 100)}% CI]")
    comp = rep.get("comparison")
    if comp:
        where = (f"baseline model {comp['baseline']['model']}" if comp["baseline"].get("path") is None
                 else f"baseline {comp['baseline']['path']}")
        pinfo = comp.get("paired") or {}
        tr.write_line(f"compared with {where}: {pinfo.get('n_paired', 0)} result(s) paired over the "
                      f"same examples" + (f" (missing now: {', '.join(comp['missing'])})"
                                          if comp["missing"] else ""))
        for why, k in sorted((pinfo.get("unpaired") or {}).items()):
            tr.write_line(f"  not paired ({k} result(s)): {why}", yellow=True)
        if comp["regressions"]:
            tr.write_line(f"fieldcheck: {len(comp['regressions'])} regression(s) against the "
                          f"baseline ({', '.join(comp['rules'])}):", red=True, bold=True)
            for r in comp["regressions"]:
                tr.write_line(f"  {r}", red=True)
    from .timing import summary_lines

    for line in summary_lines(rep.get("timing") or {}):
        tr.write_line(line)
    for w in state.written:
        tr.write_line(f"fieldcheck {w}")
    for e in state.write_errors:
        tr.write_line(f"fieldcheck: {e}", red=True, bold=True)


AFTER_CORRECTION = "failed after correction"


def _recount(tr, after: list) -> None:
    """Move the call reports of claims that fail after the correction from "passed" to
    "failed after correction" in the terminal's counts, so that pytest's last line reads
    e.g. ``26 passed, 6 failed after correction`` (the exit code is already 1)."""
    ids = set(after)
    passed = tr.stats.get("passed", [])
    moved = [r for r in passed if getattr(r, "nodeid", None) in ids and
             getattr(r, "when", "call") == "call"]
    if not moved:
        return
    tr.stats["passed"] = [r for r in passed if r not in moved]
    if not tr.stats["passed"]:
        del tr.stats["passed"]
    tr.stats.setdefault(AFTER_CORRECTION, []).extend(moved)


_FAMILY_WORDS = {"file": "the claims of one test file", "session": "every claim of the run",
                 "claim": "each claim alone"}


def correction_scope(rep: dict, family: str) -> str:
    """What the correction counted, in the words of docs/statistics.md: ``over 7 claims in 3
    families (family = file: the claims of one test file; m = 2-3 claims per family)``. A claim
    counts once (its p-value is its largest result's), however many criteria it has."""
    from fieldcheck.reports.schema import NOT_ASSERTED, family_of, finite_number

    counted = [c["id"] for c in rep["claims"] if c.get("outcome") not in NOT_ASSERTED
               and any(finite_number(r.get("p_value")) for r in c.get("results", []))]
    groups = {(c.get("model"), family_of(c["id"], family)) for c in rep["claims"] if c["id"] in set(counted)}
    sizes = sorted({r["family_size"] for c in rep["claims"] for r in c["results"]
                    if isinstance(r.get("family_size"), int)})
    m = "m = 0" if not sizes else f"m = {sizes[0]}" if len(sizes) == 1 else f"m = {sizes[0]}-{sizes[-1]}"
    return (f"over {len(counted)} claim(s) in {len(groups)} famil{'y' if len(groups) == 1 else 'ies'} "
            f"(family = {family}: {_FAMILY_WORDS.get(family, family)}; {m} claims per family)")


def sae_lines(rep: dict) -> list[str]:
    """One line per dictionary applied to a model other than the one it was trained on, with its
    explained variance there (the lowest and highest over the data sets it was applied to) and on
    its own model (from the ClaimResults' ``details["sae"]``)."""
    seen: dict = {}
    for c in rep.get("claims", []):
        for i, r in enumerate(c.get("results", [])):
            for s in (r.get("details") or {}).get("sae") or []:
                if s.get("other_model"):
                    key = (s.get("sae"), s.get("trained_on"), s.get("applied_to"))
                    seen.setdefault(key, {"rows": [], "results": set()})
                    seen[key]["rows"].append(s)
                    seen[key]["results"].add((c.get("id"), i))
    out = []
    for (name, trained, applied), got in sorted(seen.items(), key=lambda kv: tuple(map(str, kv[0]))):
        rows = got["rows"]
        ev = [x["explained_variance"] for x in rows if isinstance(x.get("explained_variance"), (int, float))]
        own = rows[0].get("explained_variance_trained")
        there = ("explained variance unknown" if not ev else f"explained variance {min(ev):.3f}" if max(ev) == min(ev)
                 else f"explained variance {min(ev):.3f} to {max(ev):.3f}")
        out.append(f"fieldcheck: SAE {name} was trained on {trained} and is applied to {applied}: {there} there"
                   + (f" ({own:.3f} on {trained})" if isinstance(own, (int, float)) else "")
                   + f"; {len(got['results'])} result(s) use it")
    return out
