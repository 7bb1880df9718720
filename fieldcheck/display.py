"""Pictures as inline HTML, shared by the HTML report (``fieldcheck.reports.html``) and the
notebook displays of result objects (``_repr_html_``).

``draw_plot`` draws a plot dict of a ClaimResult (kinds heatmap, cone, scatter, alpha_curve,
hist) on a matplotlib ``Figure`` that pyplot does not manage, so that it changes no global
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
