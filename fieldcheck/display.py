"""Pictures as inline HTML, shared by the HTML report (``fieldcheck.reports.html``) and the
notebook displays of result objects (``_repr_html_``).

``draw_plot`` draws a plot dict of a ClaimResult (kinds heatmap, cone, scatter, alpha_curve,
hist, line, bar, circuit) on a matplotlib ``Figure`` that pyplot does not manage, so that it changes no global
backend; ``rich_html`` gives an object's summary followed by its picture.
"""
from __future__ import annotations

import base64
import html
import io
import os
import sys
from typing import Any, Callable, Optional


def pyplot():
    """matplotlib.pyplot, switching to the Agg backend only where a GUI backend was chosen on a
    machine without a display; a notebook's inline or widget backend is left alone."""
    import matplotlib

    backend = matplotlib.get_backend().lower()
    headless = sys.platform.startswith("linux") and not os.environ.get("DISPLAY")
    if headless and not (backend in ("agg", "pdf", "svg", "ps", "cairo", "nbagg", "webagg")
                         or backend.startswith("module://")):
        try:
            matplotlib.use("Agg")
        except Exception:  # pragma: no cover
            pass
    import matplotlib.pyplot as plt

    return plt


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


def png_base64(fig) -> str:
    """A figure as base64 PNG text; a pyplot-managed figure is closed afterwards (so that a
    notebook does not show it a second time)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as pyplot

        pyplot.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _labels(plot: dict, *names: str):
    for n in names:
        v = plot.get(n)
        if isinstance(v, (list, tuple)) and v:
            return [str(x) for x in v]
    return None


def draw_plot(plot: dict) -> Optional[str]:
    """A base64 PNG of one plot dict, or None when its data cannot be drawn."""
    from matplotlib.figure import Figure

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
        fig = Figure(figsize=(min(12, 2 + 0.5 * z.shape[1]), min(9, 1.5 + 0.35 * z.shape[0])))
        ax = fig.subplots()
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
        return png_base64(fig)
    if kind == "scatter":
        _, x = _first(plot, ("predicted", "x", "pred", "prediction"), 1)
        _, y = _first(plot, ("real", "y", "actual", "observed", "measured"), 1)
        if x is None or y is None or x.shape != y.shape:
            return None
        fig = Figure(figsize=(5, 4.5))
        ax = fig.subplots()
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
        return png_base64(fig)
    if kind == "alpha_curve":
        _, a = _first(plot, ("alphas", "alpha", "x"), 1)
        if a is None:
            return None
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
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
            return None
        if "alpha_star" in plot and _num(plot["alpha_star"]) is not None:
            ax.axvline(_num(plot["alpha_star"]), color="k", ls="--", lw=1, label="alpha*")
        ax.set_xlabel("alpha")
        ax.set_ylabel(plot.get("ylabel", "metric change"))
        ax.legend(fontsize=7)
        ax.set_title(str(title))
        return png_base64(fig)
    if kind == "line":
        return _line(plot, str(title))
    if kind in ("bar", "bars"):
        return _bars(plot, str(title))
    if kind == "circuit":
        return _circuit(plot, str(title))
    if kind == "hist":
        _, v = _first(plot, ("values", "x"), 1)
        if v is None or v.size == 0:
            return None
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        ax.hist(v[__import__("numpy").isfinite(v)], bins=min(30, max(5, v.size // 2)), color="#4a7ab0")
        if _num(plot.get("bar")) is not None:
            ax.axvline(_num(plot["bar"]), color="k", ls="--", lw=1, label="bar")
            ax.legend(fontsize=8)
        ax.set_xlabel(plot.get("xlabel", "per-example value"))
        ax.set_ylabel("examples")
        ax.set_title(str(title))
        return png_base64(fig)
    return None


def _line(plot: dict, title: str) -> Optional[str]:
    """``x``, ``y`` (one curve, or ``curves {label: y}``), optional ``xscale`` ("log"), ``hline`` and labels."""
    from matplotlib.figure import Figure

    _, x = _first(plot, ("x", "fractions", "sizes"), 1)
    if x is None:
        return None
    curves = plot.get("curves") if isinstance(plot.get("curves"), dict) else {plot.get("ylabel", "y"): plot.get("y")}
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    drawn = 0
    for lab, ys in curves.items():
        y = _arr(ys, 1)
        if y is not None and y.shape == x.shape:
            ax.plot(x, y, marker="o", ms=3, label=str(lab))
            drawn += 1
    if not drawn:
        return None
    if plot.get("xscale") == "log" and (x > 0).all():
        ax.set_xscale("log")
    if _num(plot.get("hline")) is not None:
        ax.axhline(_num(plot["hline"]), color="gray", lw=0.8, ls="--")
    ax.set_xlabel(str(plot.get("xlabel", "x")))
    ax.set_ylabel(str(plot.get("ylabel", "y")))
    if len(curves) > 1:
        ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return png_base64(fig)


def _bars(plot: dict, title: str) -> Optional[str]:
    """``labels`` and ``y`` (with optional ``low``/``high`` interval ends and a ``bar`` line)."""
    import numpy as np
    from matplotlib.figure import Figure

    labels = _labels(plot, "labels")
    y = _arr(plot.get("y"), 1)
    if not labels or y is None or len(labels) != y.size:
        return None
    fig = Figure(figsize=(max(4.0, 0.35 * y.size + 2), 3.6))
    ax = fig.subplots()
    lo, hi = _arr(plot.get("low"), 1), _arr(plot.get("high"), 1)
    err = None
    if lo is not None and hi is not None and lo.shape == hi.shape == y.shape:
        err = np.abs(np.stack([y - lo, hi - y]))
        err[~np.isfinite(err)] = 0
    ax.bar(range(y.size), y, yerr=err, color="#4a7ab0", capsize=3)
    ax.set_xticks(range(y.size), labels, rotation=60 if y.size > 4 else 0, fontsize=7, ha="right" if y.size > 4 else "center")
    if _num(plot.get("bar")) is not None:
        ax.axhline(_num(plot["bar"]), color="k", ls="--", lw=1, label="bar")
        ax.legend(fontsize=7)
    ax.set_ylabel(str(plot.get("ylabel", "")))
    ax.set_title(title, fontsize=9)
    return png_base64(fig)


_PORT_COLOURS = {"q": "#d62728", "k": "#2ca02c", "v": "#1f77b4", "": "#555555"}


def _circuit(plot: dict, title: str) -> Optional[str]:
    """A circuit over the model's layers: ``nodes [[label, x, y], ...]`` (x: head index, y: layer) and
    ``edges [[i, j, port], ...]`` (indices into nodes; port "q", "k", "v" or "" colours the line)."""
    from matplotlib.figure import Figure

    nodes = plot.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        return None
    xs = [float(n[1]) for n in nodes]
    ys = [float(n[2]) for n in nodes]
    span_x, span_y = max(xs) - min(xs) + 1, max(ys) - min(ys) + 1
    fig = Figure(figsize=(min(12, 3 + 0.45 * span_x), min(12, 2.5 + 0.4 * span_y)))
    ax = fig.subplots()
    for e in plot.get("edges") or []:
        i, j = int(e[0]), int(e[1])
        port = str(e[2]) if len(e) > 2 else ""
        ax.annotate("", xy=(xs[j], ys[j]), xytext=(xs[i], ys[i]),
                    arrowprops={"arrowstyle": "-|>", "color": _PORT_COLOURS.get(port, "#555555"), "lw": 0.7,
                                "alpha": 0.6, "shrinkA": 4, "shrinkB": 4})
    ax.scatter(xs, ys, s=40, color="#f2c14e", edgecolor="k", zorder=3)
    for (lab, x, y) in ((n[0], xs[k], ys[k]) for k, n in enumerate(nodes)):
        ax.annotate(str(lab), (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=6)
    ax.set_xlabel("head (MLPs and embed/logits in the middle)")
    ax.set_ylabel("layer")
    ax.margins(0.12)
    if plot.get("edges"):
        for port, colour in _PORT_COLOURS.items():
            ax.plot([], [], color=colour, label=f"into {port}" if port else "into MLP / logits")
        ax.legend(fontsize=6, loc="upper left")
    ax.set_title(title, fontsize=9)
    return png_base64(fig)


def rich_html(obj: Any, draw: Optional[Callable[[], Any]] = None, title: Optional[str] = None,
              plot: Any = None) -> str:
    """HTML for a notebook: ``title`` (default the class name), the object's summary as
    preformatted text, then the figure that ``draw()`` returns (or the plot dicts ``plot`` of a
    ClaimResult) as an inline PNG. A picture that cannot be drawn leaves a note instead of an
    exception (a repr must never raise)."""
    text = obj.summary() if hasattr(obj, "summary") else repr(obj)
    parts = [f"<div class=\"fieldcheck\"><b>{html.escape(title or type(obj).__name__)}</b>",
             f"<pre style=\"white-space:pre-wrap\">{html.escape(str(text))}</pre>"]
    if draw is not None:
        try:
            fig = draw()
            fig = getattr(fig, "figure", fig)      # an Axes gives its Figure
            parts.append(f'<img alt="{html.escape(type(obj).__name__)}" '
                         f'src="data:image/png;base64,{png_base64(fig)}">')
        except Exception as e:  # noqa: BLE001
            parts.append(f"<p>(no picture: {html.escape(type(e).__name__)}: {html.escape(str(e))})</p>")
    for p in (plot if isinstance(plot, list) else [plot] if isinstance(plot, dict) else []):
        try:
            png = draw_plot(p)
        except Exception:  # noqa: BLE001
            png = None
        if png:
            parts.append(f'<img alt="{html.escape(str(p.get("kind", "plot")))}" '
                         f'src="data:image/png;base64,{png}">')
    parts.append("</div>")
    return "\n".join(parts)
