"""pytest-fieldcheck: the hooks that turn claims into reports.

Registered through the ``pytest11`` entry point ``fieldcheck = pytest_fieldcheck.plugin``. This
module only wires pytest's hooks to the parts, one module per concern, each importing only the
ones listed before it:

    options     the --fc-* options and ini keys, validated into an Options
    baselines   saved runs and the comparison rules
    common      what the others share: the state's lookup, the controller test, an item's
                marker, model parameter and fixtures (imports no other part)
    fixtures    fc_model, field, fc_seed, fc_config and the fieldcheck marker
    collection  which tests are claims; their ClaimResults, outcomes and errors
    session     per-session state (models, fields, claims) and the settings it changes
    outputs     the run report (correction, baseline comparison) and the files written
    terminal    the summary printed at the end

Nothing heavy is imported at start-up: torch, transformer_lens and the model load only when a
test requests ``fc_model`` or ``field``.
"""
from __future__ import annotations

import json

import pytest

from . import collection, outputs, session, terminal
from .common import get_state, is_controller
from .fixtures import fc_config, fc_model, fc_seed, fc_session_seed, field, parametrize_models  # noqa: F401  (fixtures of the plugin)
from .options import add_options, resolve_device  # noqa: F401  (resolve_device: public helper)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    session.configure(config)


def pytest_generate_tests(metafunc) -> None:
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
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus) -> None:
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
    state = get_state(config)
    if state is None or state.report is None or not is_controller(config):
        return
    terminal.write_summary(terminalreporter, state)


def pytest_unconfigure(config) -> None:
    state = get_state(config)
    if state is not None:
        state.restore()
