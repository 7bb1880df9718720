"""tools/claims_tables.py: the per-model tables of claims/README.md from a report's claims."""
from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("claims_tables", ROOT / "tools" / "claims_tables.py")
claims_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claims_tables)


def _claim(model, name, outcome, results, fac=False):
    return {"id": f"claims/test_x.py::{name}[{model}]", "base_id": f"claims/test_x.py::{name}", "model": model,
            "outcome": outcome, "failed_after_correction": fac, "falsifying_example": None, "results": results}


def _result(stat, est, lo, hi, op, bar, n, **details):
    return {"statistic": stat, "estimate": est, "interval": [lo, hi], "op": op, "bar": bar, "n": n,
            "details": details, "message": ""}


REPORT = {"claims": [
    _claim("a", "test_late", "passed", [_result("recovered", 0.9016, 0.876, 0.929, ">", 0.75, 16,
                                                site="L26.resid_pre@END", require="all", n_sites=4),
                                        _result("recovered", 0.1122, 0.0859, 0.134, "<", 0.3, 16)]),
    _claim("b", "test_late", "failed", [_result("recovered", 0.926, 0.902, 0.944, ">", 0.9, 16)], fac=True),
    _claim("b", "test_heads", "xfailed", [_result("mean", 0.195, 0.187, 0.204, ">", 0.25, 64, row="L12.H3",
                                                  require="all")]),
]}


def test_one_table_per_model_with_the_deciding_site_and_outcome():
    tabs = claims_tables.tables(REPORT)
    assert set(tabs) == {"a", "b"}
    a = tabs["a"].splitlines()
    assert a[2] == "| `test_x::test_late` | recovered (L26.resid_pre@END) | 0.902 [0.876, 0.929] | > 0.75 | 16 | passed |"
    assert a[3] == "| same | recovered | 0.112 [0.0859, 0.134] | < 0.3 | 16 |  |"
    b = tabs["b"]
    assert "mean (L12.H3) | 0.195 [0.187, 0.204] | > 0.25 | 64 | xfailed" in b
    assert "failed (failed after the correction)" in b


def test_update_rewrites_only_between_the_markers(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text("intro\n<!-- table:a -->\nold\n<!-- /table:a -->\nafter\n<!-- table:c -->\nkeep\n<!-- /table:c -->\n")
    assert claims_tables.update(doc, claims_tables.tables(REPORT)) == ["a"]
    text = doc.read_text()
    assert "old" not in text and "keep" in text and text.startswith("intro\n") and "after" in text
    assert "L26.resid_pre@END" in text.split("<!-- /table:a -->")[0]
