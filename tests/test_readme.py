"""The README's claim file is real: it runs on SmolLM2 and ends as the README says (the three
claims pass, the strict xfail fails as expected), so the first thing a user copies cannot rot."""
from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _claim_file() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    files = [b for b in blocks if b.startswith("# claims/")]
    assert len(files) == 1, "the README should show exactly one complete claim file"
    return files[0]


def test_readme_stays_short_and_links_existing_docs():
    text = README.read_text()
    assert len(text.encode()) <= 10_500
    for link in re.findall(r"\]\(((?:docs|claims|benchmarks)/[^)#]+)", text):
        assert (README.parent / link).exists(), link


@pytest.mark.pretrained
@pytest.mark.slow
def test_readme_claim_file_runs_as_documented(smollm2, pytester):
    pytester.makepyfile(test_ioi=_claim_file())
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist",
                                        "--fc-model", "smollm2-135m", "--fc-report-json", "r.json")
    res.assert_outcomes(passed=3, xfailed=1)
    assert res.ret == 0
