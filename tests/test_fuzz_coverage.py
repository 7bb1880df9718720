"""Every public entry point is fuzzed (issue 23).

The public API is the walk of tests/_api_walk.py (the one tests/test_api_docs.py documents). An
entry point is covered when a fuzz test declares it (``@fuzz(n, "Field.patch", ...)`` in
tests/test_fuzz_*.py) or, for a method or property of a result class, when that class's checker in
tests/_invariants.py calls it (results are fuzzed through the calls that make them). A new public
function, method or result class fails here until it is fuzzed; exception classes have nothing to
fuzz. The plugin's ``--fc-*`` options and the ``fieldcheck`` command's words are covered the same
way (tests/test_fuzz_inputs.py).
"""
from __future__ import annotations

import inspect
import re

import _fuzz
import test_fuzz_claims  # noqa: F401 - each module registers what it covers in _fuzz.BUDGET
import test_fuzz_features  # noqa: F401
import test_fuzz_field  # noqa: F401
import test_fuzz_inputs
import test_fuzz_pretrained  # noqa: F401
from _api_walk import API, RESULTS
from _invariants import INVARIANTS


def _checker(cls):
    return next((INVARIANTS[k] for k in cls.__mro__ if k in INVARIANTS), None)


def _exercised(name: str) -> bool:
    """``Class.member``: the class's checker calls or reads the member."""
    cls_name, _, member = name.partition(".")
    cls = next((c for c in RESULTS if c.__name__ == cls_name), None)
    fn = _checker(cls) if cls is not None else None
    if fn is None:
        return False
    src = inspect.getsource(fn)
    helpers = re.findall(r"\b(_\w+)\(", src)  # module helpers the checker uses (e.g. _keeps)
    import _invariants

    for h in helpers:
        obj = getattr(_invariants, h, None)
        if inspect.isfunction(obj):
            src += inspect.getsource(obj)
    return re.search(rf"(\.|[\"']){re.escape(member)}\b", src) is not None


def _exempt(name: str) -> bool:
    obj = API[name]
    return inspect.isclass(obj) and issubclass(obj, BaseException)


def coverage() -> dict[str, str]:
    """API name -> how it is fuzzed ("N examples" of a test that declares it, or "invariants")."""
    out = {}
    for name in sorted(API):
        if _exempt(name):
            continue
        key = "Field" if name == "fc.Field" else name
        if key in _fuzz.BUDGET:
            out[name] = f"{_fuzz.BUDGET[key]} examples"
        elif _exercised(name):
            out[name] = "invariants"
        else:
            out[name] = ""
    return out


def test_every_public_entry_point_is_fuzzed():
    cov = coverage()
    missing = [n for n, how in cov.items() if not how]
    assert not missing, ("public entry points without a fuzz test or an invariant that exercises them "
                         f"(add them to tests/test_fuzz_*.py or tests/_invariants.py): {missing}")
    assert len(cov) > 240


def test_every_result_class_has_invariants():
    missing = [c.__name__ for c in RESULTS if _checker(c) is None]
    assert not missing, f"result classes without a checker in tests/_invariants.py: {missing}"


def test_every_plugin_option_and_command_word_is_drawn():
    from pytest_fieldcheck.options import _OPTIONS

    flags = {"--" + k.replace("_", "-") for k in _OPTIONS}
    assert flags == set(test_fuzz_inputs.OPTION_VALUES), flags ^ set(test_fuzz_inputs.OPTION_VALUES)
    from fieldcheck.cli import build_parser

    words = set()
    stack = [build_parser()]
    while stack:
        p = stack.pop()
        for a in p._actions:
            words |= {o for o in a.option_strings if o.startswith("--")}
            if getattr(a, "choices", None) and hasattr(a.choices, "items"):
                for w, sub in a.choices.items():
                    words.add(w)
                    stack.append(sub)
    assert words <= set(test_fuzz_inputs.CLI_WORDS), words - set(test_fuzz_inputs.CLI_WORDS)


def test_ci_budget_is_bounded():
    """The CI profile draws a fixed number of examples per test (docs/fuzzing.md has the counts)."""
    if _fuzz.PROFILE != "fuzz-ci":
        return
    assert all(0 < n <= 60 for n in _fuzz.BUDGET.values()), _fuzz.BUDGET
