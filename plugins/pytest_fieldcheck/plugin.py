"""pytest-fieldcheck: the hooks that turn claims into reports.

Registered through the ``pytest11`` entry point ``fieldcheck = pytest_fieldcheck.plugin``. This
module only wires pytest's hooks to the parts, one module per concern, each importing only the
ones listed before it:

    options     the --fc-* options and ini keys, validated into an Options
    baselines   saved runs and the comparison rules
    common      what the others share: the state's lookup, the controller test, an item's
                marker, model parameter and fixtures (imports no other part)
    timing      fixture setup times, counted per claim file in the report and the summary
    fixtures    fc_model, field, fc_seed, fc_config and the fieldcheck marker
    expectations  the fc_xfail_on marker (a strict xfail on some models only)
    collection  which tests are claims; their ClaimResults, outcomes and errors
    session     per-session state (models, fields, claims) and the settings it changes
    shards      --fc-shard K/N: this process runs one shard of the claim files
    worker      --fc-ray, inside a task: the Ray task and the pytest process it starts
    distributed --fc-ray, the driver: tasks planned, submitted, their reports replayed
    outputs     the run report (correction, baseline comparison) and the files written
    terminal    the summary printed at the end

Nothing heavy is imported at start-up: torch, transformer_lens and the model load only when a
test requests ``fc_model`` or ``field``.
"""
from __future__ import annotations

import json

import pytest

from . import collection, expectations, outputs, session, terminal, timing
from .common import get_state, is_controller
from .distributed import RayDriver, check_ray_installed, get_driver
from .shards import ShardSelector, get_selector
from .worker import TaskRecorder
from .fixtures import fc_config, fc_model, fc_seed, fc_session_seed, field, parametrize_models  # noqa: F401  (fixtures of the plugin)
from .options import add_options, resolve_device  # noqa: F401  (resolve_device: public helper)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    session.configure(config)
    expectations.register(config)
    opts = get_state(config).opts
    if opts.task is not None:
        config.pluginmanager.register(TaskRecorder(config, get_state(config)), "fieldcheck-task")
        return
    if opts.shard is not None:
        config.pluginmanager.register(ShardSelector(get_state(config)), "fieldcheck-shard")
    if opts.ray is not None:
        check_ray_installed()
        config.pluginmanager.register(RayDriver(get_state(config)), "fieldcheck-ray")


def pytest_collection_modifyitems(session, config, items) -> None:
    expectations.apply(items, config)


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
    timing.attach(item, call, report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    return (yield from timing.fixture_setup(fixturedef, request))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    config = session.config
    state = get_state(config)
    if state is None:
        return
    shard = get_selector(config)
    if not is_controller(config):
        config.workeroutput["fieldcheck_models"] = json.dumps(
            {"infos": state.model_infos, "times": state.load_times, "released": state.released,
             "shard": shard.info if shard is not None else None}, sort_keys=True, default=str)
        return
    if state.opts.task is not None:   # a Ray task's pytest: the driver builds the report
        return
    shard_info = (shard.info or state.shard_info) if shard is not None else None
    if shard is not None and not (shard_info or {}).get("files") and \
            session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK   # a shard that got no files is a success
    if not state.claims and not (state.opts.report_json or state.opts.report_html or
                                 state.opts.save or state.baseline is not None or shard is not None):
        return
    state.report = outputs.build(state)
    if shard is not None:
        state.report["shard"] = shard_info
    failing = bool(state.report["summary"]["failed_after_correction"]) and not (
        shard is not None and shard.provisional())
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
    for part in (get_driver(config), get_selector(config)):
        for line in (part.terminal_lines() if part is not None else []):
            terminalreporter.write_line(line)
    for msg in (get_driver(config).failures if get_driver(config) is not None else []):
        terminalreporter.write_line(f"fieldcheck: {msg.splitlines()[0]}", red=True, bold=True)


def pytest_unconfigure(config) -> None:
    state = get_state(config)
    if state is not None:
        state.restore()
