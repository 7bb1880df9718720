"""Run reports: the JSON schema, atomic writes, the session-level multiple-comparison
correction, the terminal table and the self-contained HTML renderer.

Everything here works on plain JSON-able dicts (``ClaimResult.to_dict()``), so it is usable
without pytest: the pytest plugin builds a report with :func:`build_report`, and anyone can
reload one with :func:`load_report` and render it with :func:`render_html`.

The schema is documented in ``docs/report-schema.md``. Two runs of the same claims with the
same seed and model give equal reports once the volatile ``"timing"`` member is dropped
(:func:`strip_volatile`): every date and duration lives there and nowhere else.
"""
from __future__ import annotations

import base64
import html
import io
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
CORRECTIONS = ("holm", "bh", "none")


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


def write_html(path: str | os.PathLike, report: dict) -> Path:
    return atomic_write_text(path, render_html(report))


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
    import fieldcheck

    meta = {
        "fieldcheck": getattr(fieldcheck, "__version__", None),
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


def adjust_pvalues(pvals: list[float], method: str = "holm") -> list[float]:
    """Use :func:`fieldcheck.stats.adjust_pvalues` when present, else the same formulas here."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}: use one of {', '.join(CORRECTIONS)}")
    try:
        from fieldcheck.stats import adjust_pvalues as _adj  # helper-owned, may not exist yet
    except Exception:
        _adj = None
    if _adj is not None:
        try:
            return [float(x) for x in _adj(list(pvals), method=method)]
        except Exception:
            pass
    return _adjust_fallback(list(pvals), method)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def apply_correction(claims: list[dict], method: str = "holm", alpha: float = 0.05) -> list[str]:
    """Fill ``p_adjusted`` and ``passed_corrected`` on every result of ``claims`` (in place).

    All results that carry a finite p-value are corrected together. A result decided by its
    confidence bound (``decide == "bound"``) that passed on its own but whose adjusted p-value
    exceeds ``alpha`` gets ``passed_corrected = False``. Results decided by their point
    estimate keep their decision (the adjusted p is reported only). Returns the ids of
    claims that passed but fail after correction.
    """
    slots = []
    for c in claims:
        for r in c.get("results", []):
            if _finite(r.get("p_value")):
                slots.append(r)
    adj = adjust_pvalues([float(r["p_value"]) for r in slots], method)
    for r, a in zip(slots, adj):
        r["p_adjusted"] = a
    newly_failed = []
    for c in claims:
        flipped = False
        for r in c.get("results", []):
            ok = bool(r.get("passed"))
            a = r.get("alpha") if _finite(r.get("alpha")) else alpha
            if (ok and method != "none" and r.get("decide", "bound") == "bound"
                    and _finite(r.get("p_adjusted")) and r["p_adjusted"] > a):
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
                 correction: str = "holm", alpha: float = 0.05,
                 comparison: Optional[dict] = None) -> dict:
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
    after = apply_correction(cl, correction, alpha)
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


# --- formatting -----------------------------------------------------------------------------
def fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        ax = abs(x)
        if ax != 0 and (ax < 1e-3 or ax >= 1e5):
            return f"{x:.{digits - 1}g}"
        return f"{x:.{digits}g}"
    return str(x)


def fmt_interval(iv: Any) -> str:
    if not iv:
        return "-"
    return f"[{fmt(iv[0])}, {fmt(iv[1])}]"


def verdict(claim: dict, result: Optional[dict]) -> str:
    if result is None:
        return claim["outcome"].upper()
    if result.get("passed") and not result.get("passed_corrected", True):
        return "FAIL(adj)"
    return "PASS" if result.get("passed") else "FAIL"


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table: one row per result (one per claim without
    results, showing its outcome)."""
    comp = report.get("comparison") or {}
    by_key = {(row["claim_id"], row["key"]): row for row in comp.get("rows", [])}
    header = ["claim", "statistic", "estimate", "interval", "bar", "p", "p_adj", "n", "verdict"]
    if comp:
        header += ["baseline", "delta"]
    rows = []
    for c in report["claims"]:
        keyed = list(iter_keyed_results(c))
        if not keyed:
            row = [c["id"], "-", "-", "-", "-", "-", "-", "-", verdict(c, None)]
            if comp:
                row += ["-", "-"]
            rows.append(row)
            continue
        for key, r in keyed:
            row = [c["id"], str(r.get("statistic", "")), fmt(r.get("estimate")),
                   fmt_interval(r.get("interval")), f"{r.get('op', '')} {fmt(r.get('bar'))}",
                   fmt(r.get("p_value")), fmt(r.get("p_adjusted")), fmt(r.get("n")),
                   verdict(c, r)]
            if comp:
                cr = by_key.get((c["id"], key))
                if cr is None:
                    row += ["(new)", "-"]
                else:
                    d = cr.get("delta")
                    row += [fmt(cr.get("baseline_estimate")),
                            ("+" if _finite(d) and d > 0 else "") + fmt(d)]
            rows.append(row)
    return header, rows


def short_id(cid: str, width: int) -> str:
    """A claim id shortened to ``width`` by dropping folders, then the file; the test name
    itself is never cut."""
    if len(cid) <= width:
        return cid
    path, sep, name = cid.partition("::")
    short = path.rsplit("/", 1)[-1] + sep + name
    if len(short) <= width or not sep:
        return short
    return "..." + sep + name if len(sep + name) + 3 <= width else name


def format_table(report: dict, width: Optional[int] = None) -> str:
    header, rows = table_rows(report)
    if width and rows:  # shorten claim ids to fit the terminal
        others = [max(len(str(r[i])) for r in [header] + rows) for i in range(1, len(header))]
        room = max(20, width - sum(others) - 2 * (len(header) - 1))
        rows = [[short_id(r[0], room)] + r[1:] for r in rows]
    cols = list(zip(*([header] + rows))) if rows else [[h] for h in header]
    widths = [max(len(str(x)) for x in col) for col in cols]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


# --- HTML -----------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1a1a1a;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 6px;word-break:break-all}
.meta{color:#555;font-size:13px;margin-bottom:14px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0} td.num{text-align:right;font-variant-numeric:tabular-nums}
.PASS,.passed{background:#d9f2d9} .FAIL,.failed,.error{background:#f8d4d4}
.adj{background:#fde8c8} .skipped,.xfailed,.xpassed{background:#eee}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600;font-size:13px}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px;white-space:pre-wrap}
img{max-width:100%;border:1px solid #ddd;margin:6px 0}
.ok{background:#d9f2d9} .bad{background:#f8d4d4}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any) -> Optional[float]:
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return None
    return None


def _arr(x: Any, ndim: int):
    """x as a float numpy array of the given ndim, else None."""
    import numpy as np

    if x is None or isinstance(x, (str, bytes, dict)):
        return None
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        try:
            a = np.asarray([[(_num(v) if _num(v) is not None else np.nan) for v in row] for row in x]
                           if ndim == 2 else [(_num(v) if _num(v) is not None else np.nan) for v in x],
                           dtype=float)
        except Exception:
            return None
    return a if a.ndim == ndim and a.size > 0 else None


def _first(plot: dict, names: tuple[str, ...], ndim: int):
    for n in names:
        if n in plot:
            a = _arr(plot[n], ndim)
            if a is not None:
                return n, a
    return None, None


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _labels(plot: dict, *names: str):
    for n in names:
        v = plot.get(n)
        if isinstance(v, (list, tuple)) and v:
            return [str(x) for x in v]
    return None


def _draw(plot: dict) -> Optional[str]:
    """A base64 PNG of one plot dict, or None when its data cannot be drawn."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    kind = str(plot.get("kind", ""))
    title = plot.get("title") or kind
    if kind in ("heatmap", "cone"):
        name, z = _first(plot, ("values", "data", "z", "matrix", "effect", "effects", "response",
                                 "norms", "grid"), 2)
        if z is None:
            z = next((a for a in (_arr(v, 2) for k, v in plot.items() if k != "kind") if a is not None),
                     None)
        if z is None:
            return None
        fig, ax = plt.subplots(figsize=(min(12, 2 + 0.5 * z.shape[1]), min(9, 1.5 + 0.35 * z.shape[0])))
        cmap = "RdBu_r" if kind == "heatmap" and (z[~__import__("numpy").isnan(z)] < 0).any() else "viridis"
        im = ax.imshow(z, aspect="auto", origin="lower" if kind == "cone" else "upper", cmap=cmap,
                       interpolation="nearest")
        fig.colorbar(im, ax=ax)
        xl = _labels(plot, "x_labels", "positions", "tokens", "xlabels")
        yl = _labels(plot, "y_labels", "layers", "ylabels")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if xl and len(xl) == z.shape[1]:
            ax.set_xticks(range(len(xl)), xl, rotation=60, fontsize=7)
        if yl and len(yl) == z.shape[0]:
            ax.set_yticks(range(len(yl)), yl, fontsize=7)
        ax.set_xlabel(plot.get("xlabel", "position"))
        ax.set_ylabel(plot.get("ylabel", "layer"))
        ax.set_title(str(title))
        return _png(fig)
    if kind == "scatter":
        _, x = _first(plot, ("predicted", "x", "pred", "prediction"), 1)
        _, y = _first(plot, ("real", "y", "actual", "observed", "measured"), 1)
        if x is None or y is None or x.shape != y.shape:
            return None
        fig, ax = plt.subplots(figsize=(5, 4.5))
        ax.scatter(x, y, s=14, alpha=0.7)
        import numpy as np

        both = np.concatenate([x, y])
        both = both[np.isfinite(both)]
        if both.size:
            lo, hi = both.min(), both.max()
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
            ax.legend(fontsize=8)
        ax.set_xlabel(plot.get("xlabel", "predicted"))
        ax.set_ylabel(plot.get("ylabel", "real"))
        ax.set_title(str(title))
        return _png(fig)
    if kind == "alpha_curve":
        _, a = _first(plot, ("alphas", "alpha", "x"), 1)
        if a is None:
            return None
        fig, ax = plt.subplots(figsize=(6, 4))
        curves = plot.get("curves")
        drawn = 0
        if isinstance(curves, dict):
            for lab, ys in curves.items():
                y = _arr(ys, 1)
                if y is not None and y.shape == a.shape:
                    ax.plot(a, y, marker=".", label=str(lab))
                    drawn += 1
        else:
            for name in ("values", "y", "effects", "response", "curves", "real", "linear", "predicted"):
                if name not in plot:
                    continue
                y1, y2 = _arr(plot[name], 1), _arr(plot[name], 2)
                if y1 is not None and y1.shape == a.shape:
                    ax.plot(a, y1, marker=".", label=name)
                    drawn += 1
                elif y2 is not None and y2.shape[-1] == a.shape[0]:
                    for i, row in enumerate(y2):
                        ax.plot(a, row, marker=".", lw=1, label=f"{name}[{i}]" if i < 8 else None)
                    drawn += 1
        if not drawn:
            plt.close(fig)
            return None
        if "alpha_star" in plot and _num(plot["alpha_star"]) is not None:
            ax.axvline(_num(plot["alpha_star"]), color="k", ls="--", lw=1, label="alpha*")
        ax.set_xlabel("alpha")
        ax.set_ylabel(plot.get("ylabel", "metric change"))
        ax.legend(fontsize=7)
        ax.set_title(str(title))
        return _png(fig)
    if kind == "hist":
        _, v = _first(plot, ("values", "x"), 1)
        if v is None or v.size == 0:
            return None
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(v[__import__("numpy").isfinite(v)], bins=min(30, max(5, v.size // 2)), color="#4a7ab0")
        if _num(plot.get("bar")) is not None:
            ax.axvline(_num(plot["bar"]), color="k", ls="--", lw=1, label="bar")
            ax.legend(fontsize=8)
        ax.set_xlabel(plot.get("xlabel", "per-example value"))
        ax.set_ylabel("examples")
        ax.set_title(str(title))
        return _png(fig)
    return None


def _numbers_table(plot: dict) -> str:
    rows = []
    for k, v in plot.items():
        if isinstance(v, (list, tuple)):
            flat = json.dumps(_jsonable(v))
            if len(flat) > 400:
                flat = flat[:400] + " ..."
            rows.append((k, flat))
        elif isinstance(v, dict):
            rows.append((k, json.dumps(_jsonable(v))[:400]))
        else:
            rows.append((k, fmt(v)))
    return "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows) + "</table>"


def _plot_html(plot: Any) -> str:
    plots = plot if isinstance(plot, list) else [plot]
    out = []
    for p in plots:
        if not isinstance(p, dict):
            continue
        try:
            png = _draw(p)
        except Exception as e:  # a picture must never break the report
            png = None
            out.append(f"<p>(could not draw: {_esc(type(e).__name__)}: {_esc(e)})</p>")
        if png:
            out.append(f'<img alt="{_esc(p.get("kind", "plot"))}" src="data:image/png;base64,{png}">')
        else:
            out.append(_numbers_table(p))
    return "\n".join(out)


def render_html(report: dict) -> str:
    """One self-contained HTML page: inline CSS, PNG pictures inlined as base64, no script,
    nothing fetched from the network."""
    run = report.get("run", {})
    summ = report.get("summary", {})
    timing = report.get("timing", {})
    model = run.get("model") or {}
    model_desc = model.get("spec") if isinstance(model, dict) else model
    head = (f"fieldcheck {_esc(run.get('fieldcheck', ''))} &middot; model {_esc(model_desc)} &middot; "
            f"device {_esc(run.get('device'))} &middot; dtype {_esc(run.get('dtype') or 'float32 (default)')} &middot; "
            f"seed {_esc(run.get('seed'))} &middot; alpha {_esc(run.get('alpha'))} &middot; "
            f"correction {_esc(run.get('correction'))} &middot; decide {_esc(run.get('decide'))}"
            f" &middot; git {_esc((run.get('git_commit') or '-')[:12])}"
            f" &middot; {_esc(timing.get('started', ''))}")
    ok = summ.get("ok", False)
    counts = summ.get("outcomes", {})
    badge = (f'<span class="badge {"ok" if ok else "bad"}">{"OK" if ok else "FAILED"}</span> '
             + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    after = summ.get("failed_after_correction") or []
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>fieldcheck report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>fieldcheck report</h1>", f'<div class="meta">{head}</div>', f"<p>{badge}</p>"]
    if after:
        parts.append("<p><b>Failed after the multiple-comparison correction:</b> "
                     + ", ".join(_esc(a) for a in after) + "</p>")
    comp = report.get("comparison")
    if comp and comp.get("regressions"):
        parts.append("<p><b>Regressions against the baseline:</b></p><ul>"
                     + "".join(f"<li>{_esc(r)}</li>" for r in comp["regressions"]) + "</ul>")
    header, rows = table_rows(report)
    parts.append("<table><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for h, v in zip(header, row):
            cls = ""
            if h == "verdict":
                cls = "adj" if v == "FAIL(adj)" else ("PASS" if v in ("PASS", "PASSED") else
                                                      "FAIL" if v in ("FAIL", "FAILED", "ERROR") else "skipped")
            elif h not in ("claim", "statistic", "interval", "bar"):
                cls = "num"
            if h == "claim":
                v = f'<a href="#c-{_esc(_anchor(v))}">{_esc(v)}</a>'
            else:
                v = _esc(v)
            cells.append(f'<td class="{cls}">{v}</td>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    for c in report.get("claims", []):
        parts.append(f'<h2 id="c-{_esc(_anchor(c["id"]))}">{_esc(c["id"])} '
                     f'<span class="badge {_esc(c["outcome"])}">{_esc(c["outcome"])}</span>'
                     + (' <span class="badge adj">fails after correction</span>'
                        if c.get("failed_after_correction") else "") + "</h2>")
        for r in c.get("results", []):
            line = (f"{r.get('assertion', '')} &middot; {_esc(r.get('statistic'))} = {_esc(fmt(r.get('estimate')))} "
                    f"{_esc(fmt_interval(r.get('interval')))}, needs {_esc(r.get('op'))} {_esc(fmt(r.get('bar')))}"
                    f" &middot; p = {_esc(fmt(r.get('p_value')))}, adjusted {_esc(fmt(r.get('p_adjusted')))}"
                    f" &middot; n = {_esc(r.get('n'))}")
            parts.append(f"<p>{line}</p>")
            if r.get("message"):
                parts.append(f"<pre>{_esc(r['message'])}</pre>")
            if r.get("plot"):
                parts.append(_plot_html(r["plot"]))
        if c.get("error"):
            parts.append(f"<pre>{_esc(c['error'])}</pre>")
        if c.get("falsifying_example"):
            parts.append(f"<p><b>Falsifying example</b></p><pre>{_esc(c['falsifying_example'])}</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _anchor(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s)


def _jsonable(x: Any) -> Any:
    from fieldcheck.claim_result import _jsonable as j

    return j(x)
