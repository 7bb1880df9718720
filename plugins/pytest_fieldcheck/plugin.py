"""pytest-fieldcheck: the hooks that turn claims into reports.

Registered through the ``pytest11`` entry point ``fieldcheck = pytest_fieldcheck.plugin``. This
module only wires pytest's hooks to the parts, one module per concern:

    options     the --fc-* options and ini keys, validated into an Options
    session     per-session state (models, fields, claims) and the settings it changes
    fixtures    fc_model, field, fc_seed, fc_config and the fieldcheck marker
    expectations  the fc_xfail_on marker (a strict xfail on some models only)
    collection  which tests are claims; their ClaimResults, outcomes and errors
    outputs     the run report (correction, baseline comparison) and the files written
    terminal    the summary printed at the end
    timing      fixture setup times, counted per claim file in the report and the summary
    baselines   saved runs and the comparison rules

Nothing heavy is imported at start-up: torch, transformer_lens and the model load only when a
test requests ``fc_model`` or ``field``.
"""
from __future__ import annotations

import json

import pytest

from . import collection, expectations, outputs, session, terminal, timing
from .fixtures import fc_config, fc_model, fc_seed, fc_session_seed, field  # noqa: F401  (fixtures of the plugin)
from .options import add_options, resolve_device  # noqa: F401  (resolve_device: public helper)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    session.configure(config)
    expectations.register(config)


def pytest_collection_modifyitems(session, config, items) -> None:
    expectations.apply(items, config)


def pytest_generate_tests(metafunc) -> None:
    from .fixtures import parametrize_models

    parametrize_models(metafunc)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    with collection.claim_scope(item):
        return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item):
    with collection.claim_scope(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    collection.attach_results(item, call, report)
    timing.attach(item, call, report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    return (yield from timing.fixture_setup(fixturedef, request))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    from .session import get_state, is_controller

    config = session.config
    state = get_state(config)
    if state is None:
        return
    if not is_controller(config):
        config.workeroutput["fieldcheck_models"] = json.dumps(
            {"infos": state.model_infos, "times": state.load_times, "released": state.released},
            sort_keys=True, default=str)
        return
    if not state.claims and not (state.opts.report_json or state.opts.report_html or
                                 state.opts.save or state.baseline is not None):
        return
    state.report = outputs.build(state)
    failing = bool(state.report["summary"]["failed_after_correction"])
    comp = state.report.get("comparison")
    if comp and comp["regressions"]:
        failing = True
    outputs.write_outputs(state)
    if state.write_errors:
        failing = True
    if failing and session.exitstatus in (0, pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    from .session import get_state, is_controller

    state = get_state(config)
    if state is None or state.report is None or not is_controller(config):
        return
    terminal.write_summary(terminalreporter, state)


def pytest_unconfigure(config) -> None:
    from .session import get_state

    state = get_state(config)
    if state is not None:
        state.restore()
