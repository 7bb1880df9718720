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
                      f"{state.opts.correction} correction over {_n_p(rep)} p-values "
                      f"(alpha={state.opts.alpha}, family: {fam}, {_families(rep)}):",
                      red=True, bold=True)
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


def _families(rep: dict) -> str:
    """``m = 3`` or ``m = 3-7``: the family sizes (claims per family) of the run."""
    sizes = sorted({r["family_size"] for c in rep["claims"] for r in c["results"]
                    if isinstance(r.get("family_size"), int)})
    if not sizes:
        return "m = 0"
    return f"m = {sizes[0]}" if len(sizes) == 1 else f"m = {sizes[0]}-{sizes[-1]}"


def _n_p(rep: dict) -> int:
    return sum(1 for c in rep["claims"] for r in c["results"]
               if isinstance(r.get("p_value"), (int, float)) and not isinstance(r.get("p_value"), bool))


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
