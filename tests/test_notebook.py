"""Results display themselves in Jupyter (``_repr_html_``), and docs/example.ipynb runs."""
from __future__ import annotations

import base64
import pathlib

import pytest

import fieldcheck as fc
from fieldcheck.sites import resid_pre
from fieldcheck.testing import tiny_model

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "docs" / "example.ipynb"


def _pngs(html: str) -> list[bytes]:
    out = []
    for part in html.split('src="data:image/png;base64,')[1:]:
        out.append(base64.b64decode(part.split('"', 1)[0]))
    return out


@pytest.fixture(scope="module")
def setup():
    m = tiny_model("gpt2", n_layers=2, seed=0)
    ds = fc.datasets.ioi(m, n=8, seed=0)
    return m, ds, fc.Field(m)


def test_every_result_object_displays_its_summary_and_picture(setup):
    m, ds, f = setup
    sites = resid_pre("all", "all")
    objects = {
        "PatchResult": f.patch(ds, sites),
        "Sensitivity": f.sensitivity(ds),
        "Sweep": f.scale_sweep(ds, resid_pre(1, "S2"), alphas=[0, 0.5, 1.0]),
        "Selection": f.select_sites(ds, k=2, method="gradient", verify_recall=False),
        "GreenResult": f.green(ds.subset([0]), resid_pre(0, "S2")),
    }
    # a tiny random model's clean-corrupt gap is not clearly away from 0, so `recovered` would
    # be refused there: the display needs any real ClaimResult with its plot
    objects["ClaimResult"] = fc.assert_effect(f.patch(ds, resid_pre("all", "all"), jointly=True),
                                              fc.effect > -1e6)[0]
    for name, obj in objects.items():
        html = obj._repr_html_()
        assert html.startswith('<div class="fieldcheck"><b>' + name), (name, html[:80])
        text = obj.summary() if hasattr(obj, "summary") else repr(obj)
        assert text.splitlines()[0][:40].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in html
        pngs = _pngs(html)
        assert len(pngs) == 1 and pngs[0].startswith(b"\x89PNG"), name


def test_joint_patch_displays_without_a_picture_and_never_raises(setup):
    m, ds, f = setup
    joint = f.patch(ds, resid_pre("all", "all"), jointly=True)
    assert _pngs(joint._repr_html_()) == [] and "PatchResult" in joint._repr_html_()

    class Broken:
        def summary(self):
            return "a <summary>"

    from fieldcheck.display import rich_html

    html = rich_html(Broken(), draw=lambda: 1 / 0)
    assert "a &lt;summary&gt;" in html and "no picture: ZeroDivisionError" in html


@pytest.mark.pretrained
@pytest.mark.slow
def test_example_notebook_executes(smollm2, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not any(o.output_type == "error" for o in c.outputs) for c in code)
    html = [o for c in code for o in c.outputs if "text/html" in o.get("data", {})]
    # every experiment cell displays as HTML with its picture (the data set cell is text)
    assert len(html) == len(code) - 1
    assert all("data:image/png;base64," in o["data"]["text/html"] for o in html)
