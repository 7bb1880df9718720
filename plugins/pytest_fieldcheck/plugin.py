"""pytest-fieldcheck: fixtures, options, markers and the hooks that turn claims into reports.

Registered through the ``pytest11`` entry point ``fieldcheck = pytest_fieldcheck.plugin``.
Nothing heavy is imported at start-up: torch, transformer_lens and the model load only when a
test requests ``fc_model`` or ``field``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field as dc_field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import pytest

from fieldcheck.claim.result import ClaimResult, set_sink

DEFAULT_MODEL = "smollm2-135m"
_PROPERTY = "fieldcheck"          # user_properties key holding one claim's JSON payload
_FIXTURES = ("fc_model", "field", "fc_seed", "fc_config")
_VOLATILE_INFO = ("load_seconds", "load_s", "loaded_at", "date", "duration")

# name: (help, default, ini type)
_OPTIONS: dict[str, tuple[str, Any, str]] = {
    "fc_model": ("model spec for fc_model: a short name (smollm2-135m, tiny-gpt2, tiny-llama), "
                 "a hub name, a folder or a .gguf file", DEFAULT_MODEL, "string"),
    "fc_device": ("cpu, cuda, cuda:N or auto (auto spreads xdist workers over the visible GPUs)",
                  "cpu", "string"),
    "fc_dtype": ("dtype of the model: float32, float16, bfloat16 (default: float32)", None, "string"),
    "fc_seed": ("session seed; every claim's draws are seeded by it and the claim id", 0, "string"),
    "fc_alpha": ("error rate of each claim's decision (default 0.05)", 0.05, "string"),
    "fc_correction": ("multiple-comparison correction over all claims of the run: holm, bh or none",
                      "holm", "string"),
    "fc_decide": ("bound: the one-sided confidence bound must clear the bar; point: the estimate",
                  "bound", "string"),
    "fc_report_json": ("write the JSON report to this path", None, "string"),
    "fc_report_html": ("write the self-contained HTML report to this path", None, "string"),
    "fc_save": ("save this run as baseline NAME under .fieldcheck/baselines/", None, "string"),
    "fc_compare": ("compare with a baseline: NAME, latest, or a path to a JSON report", None, "string"),
    "fc_compare_fail": ("fail on regressions: passed, estimate:10%%, estimate:0.05 (repeatable)",
                        None, "linelist"),
    "fc_no_cache": ("do not use or write the converted-model cache", False, "bool"),
}
# ini only: node-id patterns (fnmatch) of tests that are not claims, e.g. a library's own unit
# tests that call fc.assert_* on purpose: their results are not collected, reported or corrected
_NOT_CLAIMS_HELP = ("node-id patterns (fnmatch, one per line) of tests that are not claims: "
                    "their recorded results are not collected, e.g. tests/*")


# --- options --------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("fieldcheck", "fieldcheck claims")
    for name, (help_, default, kind) in _OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if name == "fc_compare":
            g.addoption(flag, dest=name, nargs="?", const="latest", default=None,
                        metavar="NAME|PATH", help=help_ + " (no value: latest; write --fc-compare=NAME "
                        "when a test path follows)")
        elif name == "fc_compare_fail":
            g.addoption(flag, dest=name, action="append", default=None, metavar="EXPR", help=help_)
        elif name == "fc_no_cache":
            g.addoption(flag, dest=name, action="store_true", default=None, help=help_)
        else:
            g.addoption(flag, dest=name, default=None, metavar=name[3:].upper(), help=help_)
        parser.addini(name, help_.replace("%%", "%") + f" (command line: {flag})", type=kind,
                      default=[] if kind == "linelist" else None)
    parser.addini("fc_not_claims", _NOT_CLAIMS_HELP, type="linelist", default=[])


def _opt(config: pytest.Config, name: str) -> Any:
    """The command-line value, else the ini value, else the default."""
    v = config.getoption(name, None)
    if v is None:
        try:
            v = config.getini(name)
        except (ValueError, KeyError):
            v = None
        if v in ("", []):
            v = None
    if v is None:
        v = _OPTIONS[name][1]
    return v


@dataclass
class Options:
    model: str = DEFAULT_MODEL
    device: str = "cpu"
    dtype: Optional[str] = None
    seed: int = 0
    alpha: float = 0.05
    correction: str = "holm"
    decide: str = "bound"
    report_json: Optional[str] = None
    report_html: Optional[str] = None
    save: Optional[str] = None
    compare: Optional[str] = None
    compare_fail: list = dc_field(default_factory=list)
    no_cache: bool = False


def _usage(msg: str) -> pytest.UsageError:
    return pytest.UsageError(msg)


def read_options(config: pytest.Config) -> Options:
    o = Options()
    o.model = str(_opt(config, "fc_model"))
    o.device = str(_opt(config, "fc_device")).strip()
    dt = _opt(config, "fc_dtype")
    o.dtype = str(dt).strip() if dt is not None else None
    if o.dtype is not None:
        from fieldcheck.models.loading import _DTYPE_NAMES  # a name table; torch is not imported here

        if o.dtype.lower().removeprefix("torch.") not in _DTYPE_NAMES:
            raise _usage(f"--fc-dtype {o.dtype!r} is unknown: use float32, bfloat16 or float16")
    try:
        o.seed = int(str(_opt(config, "fc_seed")).strip())
    except ValueError:
        raise _usage(f"--fc-seed {_opt(config, 'fc_seed')!r} is not an integer: use e.g. --fc-seed 0")
    raw_alpha = _opt(config, "fc_alpha")
    try:
        o.alpha = float(raw_alpha)
    except (TypeError, ValueError):
        o.alpha = float("nan")
    if not (0.0 < o.alpha < 0.5):
        raise _usage(f"--fc-alpha {raw_alpha!r} must be a number in (0, 0.5), e.g. --fc-alpha 0.05")
    o.correction = str(_opt(config, "fc_correction")).lower()
    if o.correction not in ("holm", "bh", "none"):
        raise _usage(f"--fc-correction {o.correction!r} is unknown: use holm, bh or none")
    o.decide = str(_opt(config, "fc_decide")).lower()
    if o.decide not in ("bound", "point"):
        raise _usage(f"--fc-decide {o.decide!r} is unknown: use bound or point")
    dev = o.device.lower()
    if not (dev in ("cpu", "cuda", "auto", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise _usage(f"--fc-device {o.device!r} is unknown: use cpu, cuda, cuda:N or auto")
    o.report_json = _opt(config, "fc_report_json")
    o.report_html = _opt(config, "fc_report_html")
    o.save = _opt(config, "fc_save")
    o.compare = _opt(config, "fc_compare")
    o.compare_fail = list(_opt(config, "fc_compare_fail") or [])
    nc = _opt(config, "fc_no_cache")
    o.no_cache = nc if isinstance(nc, bool) else str(nc).lower() in ("1", "true", "yes", "on")
    if o.compare_fail and o.compare is None:
        o.compare = "latest"
    return o


def resolve_device(device: str) -> str:
    """``auto``: the xdist worker gwN gets cuda:(N mod #GPUs); no GPU -> cpu."""
    if device.lower() != "auto":
        return device
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        n = 0
    if n == 0:
        return "cpu"
    wid = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    try:
        idx = int(wid.lstrip("gw"))
    except ValueError:
        idx = 0
    return f"cuda:{idx % n}"


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def _show_progress(config: pytest.Config) -> bool:
    if config.getoption("verbose", 0) < 0:
        return False
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return False
    try:
        return sys.stderr.isatty()
    except Exception:
        return False


# --- state ----------------------------------------------------------------------------------
class FieldcheckPlugin:
    """Per-session state, registered as ``fieldcheck-state``."""

    def __init__(self, config: pytest.Config, opts: Options):
        self.config = config
        self.opts = opts
        self.device = resolve_device(opts.device)
        self.models: dict[str, Any] = {}       # spec -> model (or the exception loading it raised)
        self.fields: dict[str, Any] = {}       # spec -> Field
        self.model_infos: dict[str, dict] = {}
        self.load_times: dict[str, dict] = {}
        self.claims: dict[str, dict] = {}      # nodeid -> claim entry (controller)
        self.durations: dict[str, float] = {}
        self.started = time.time()
        self.report: Optional[dict] = None
        self.baseline: Optional[dict] = None
        self.baseline_path: Optional[Path] = None
        self.rules: list = []
        self.written: list[str] = []
        self.write_errors: list[str] = []
        self.prev_settings = None
        self.prev_profile: Optional[str] = None

    # models
    def load(self, spec: str):
        if spec in self.models:
            m = self.models[spec]
            if isinstance(m, BaseException):
                raise m
            return m
        import fieldcheck

        kw: dict[str, Any] = {"device": self.device}
        if self.opts.dtype:
            kw["dtype"] = self.opts.dtype
        try:
            model = fieldcheck.load_model(spec, **kw)
        except BaseException as e:
            self.models[spec] = e
            raise
        self.models[spec] = model
        try:
            from fieldcheck.models.loading import model_info

            info = dict(model_info(model))
        except Exception:
            info = {}
        info.setdefault("spec", spec)
        # timings go to the report's "timing" member, so equal runs give equal reports
        for k in [k for k in info if k in _VOLATILE_INFO or k.endswith("_seconds")]:
            self.load_times.setdefault(spec, {})[k] = info.pop(k)
        self.model_infos[spec] = info
        return model

    # hooks of this session (a method, so nested in-process sessions keep their own state)
    def pytest_sessionstart(self, session) -> None:
        self.started = time.time()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item) -> None:
        """A claim pinned to another model gets that model (loaded once per session) through
        its ``fc_model``/``field`` arguments, or is skipped when it cannot be loaded."""
        spec = _pinned(item, self)
        if spec is None or not _uses(item, ("fc_model", "field")):
            return
        try:
            model = self.load(spec)
        except Exception as e:
            pytest.skip(f"claim pinned to model {spec!r}, which cannot be loaded here "
                        f"(session model {self.opts.model!r}): {type(e).__name__}: {e}")
        # fixtures fill only the names not yet in funcargs
        if _uses(item, ("fc_model",)):
            item.funcargs["fc_model"] = model
        if _uses(item, ("field",)):
            item.funcargs["field"] = self.field_for(spec)

    def pytest_runtest_logreport(self, report) -> None:
        if _is_controller(self.config):
            _collect(self, report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        """xdist controller: gather the model metadata each worker loaded."""
        out = getattr(node, "workeroutput", None) or {}
        if "fieldcheck_models" in out:
            try:
                got = json.loads(out["fieldcheck_models"])
                self.model_infos.update(got.get("infos", {}))
                for k, v in got.get("times", {}).items():
                    self.load_times.setdefault(k, v)
            except (TypeError, ValueError):
                pass

    def restore(self) -> None:
        """Put back what configure changed in process-wide state (for nested sessions)."""
        m = _settings_module()
        if m is not None and self.prev_settings is not None and hasattr(m, "_current"):
            try:
                m._current.set(self.prev_settings)
            except Exception:
                pass
        if self.prev_profile:
            try:
                from hypothesis import settings

                settings.load_profile(self.prev_profile)
            except Exception:
                pass

    def field_for(self, spec: str):
        if spec not in self.fields:
            import fieldcheck

            self.fields[spec] = fieldcheck.Field(self.load(spec))
        return self.fields[spec]


def _state(config: pytest.Config) -> FieldcheckPlugin:
    return config.pluginmanager.get_plugin("fieldcheck-state")


# --- configure ------------------------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fieldcheck(model=None, seed=None, n=None): pin a claim to a model, a seed "
        "or a data size; a claim pinned to a model that cannot be loaded is skipped")
    opts = read_options(config)
    state = FieldcheckPlugin(config, opts)
    from fieldcheck.errors import BaselineError

    from . import baselines

    try:
        state.rules = [baselines.parse_rule(e) for e in opts.compare_fail]
        if opts.save is not None:
            baselines.check_name(opts.save)
        if opts.compare is not None and _is_controller(config):
            state.baseline_path, state.baseline = baselines.load(opts.compare, config.rootpath)
    except BaselineError as e:
        raise _usage(str(e)) from None
    config.pluginmanager.register(state, "fieldcheck-state")

    if opts.no_cache:
        os.environ["FIELDCHECK_NO_CACHE"] = "1"
    progress = _show_progress(config)
    if not progress:
        os.environ["FIELDCHECK_NO_PROGRESS"] = "1"
    m = _settings_module()
    if m is not None and hasattr(m, "get"):
        state.prev_settings = m.get()
    _set_settings(alpha=opts.alpha, decide=opts.decide, seed=opts.seed, show_progress=progress)
    state.prev_profile = _hypothesis_profile(config)


def _settings_module():
    try:
        from fieldcheck import config as fc_config
    except ImportError:
        return None
    return fc_config


def _set_settings(**kw) -> None:
    """Push session settings into fieldcheck.config, passing only the names it knows."""
    m = _settings_module()
    if m is None or not hasattr(m, "set"):
        return
    known = None
    try:
        from dataclasses import fields as dfields

        known = {f.name for f in dfields(m.Settings)}
    except Exception:
        pass
    kw = {k: v for k, v in kw.items() if known is None or k in known}
    try:
        m.set(**kw)
    except Exception as e:  # a bad value here was validated already; do not crash start-up
        raise _usage(f"fieldcheck settings {kw}: {e}")


def _hypothesis_profile(config: pytest.Config) -> Optional[str]:
    """Register ``fieldcheck-ci`` (derandomized, no database) and ``fieldcheck`` (database under
    .fieldcheck/hypothesis); load the first when CI=true, the second otherwise, unless the
    user chose a profile with --hypothesis-profile."""
    try:
        from hypothesis import HealthCheck, settings
        from hypothesis.database import DirectoryBasedExampleDatabase
    except ImportError:
        return None
    try:
        prev = settings.get_current_profile_name()
    except Exception:
        prev = None
    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                           HealthCheck.function_scoped_fixture])
    settings.register_profile("fieldcheck-ci", derandomize=True, database=None,
                              print_blob=False, **common)
    db = Path(config.rootpath) / ".fieldcheck" / "hypothesis"
    settings.register_profile("fieldcheck", database=DirectoryBasedExampleDatabase(str(db)), **common)
    if config.getoption("hypothesis_profile", None):
        return None
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    settings.load_profile("fieldcheck-ci" if ci else "fieldcheck")
    return prev


# --- fixtures -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FcConfig:
    """What a claim can read about the session: ``fc_config.model``, ``.seed``, ``.n``..."""

    model: str
    device: str
    dtype: Optional[str]
    seed: int
    alpha: float
    correction: str
    decide: str
    n: Optional[int] = None
    claim_id: Optional[str] = None


def _marker(item) -> dict:
    m = item.get_closest_marker("fieldcheck") if hasattr(item, "get_closest_marker") else None
    if m is None:
        return {}
    kw = dict(m.kwargs)
    if m.args and "model" not in kw:
        kw["model"] = m.args[0]
    return kw


@pytest.fixture(scope="session")
def fc_model(request: pytest.FixtureRequest):
    """The session's model (``--fc-model``), loaded once per session (once per xdist worker)."""
    state = _state(request.config)
    try:
        return state.load(state.opts.model)
    except Exception as e:
        pytest.fail(f"fieldcheck could not load the model {state.opts.model!r} "
                    f"(--fc-model): {type(e).__name__}: {e}", pytrace=False)


@pytest.fixture(scope="session")
def field(request: pytest.FixtureRequest, fc_model):
    """``fieldcheck.Field(fc_model)``, built once per session."""
    state = _state(request.config)
    return state.field_for(state.opts.model)


@pytest.fixture
def fc_seed(request: pytest.FixtureRequest) -> int:
    """The claim's seed: the marker's ``seed=`` or ``--fc-seed``."""
    seed = _marker(request.node).get("seed")
    return int(seed) if seed is not None else _state(request.config).opts.seed


@pytest.fixture
def fc_config(request: pytest.FixtureRequest) -> FcConfig:
    state = _state(request.config)
    mk = _marker(request.node)
    o = state.opts
    return FcConfig(model=mk.get("model") or o.model, device=state.device, dtype=o.dtype,
                    seed=int(mk["seed"]) if mk.get("seed") is not None else o.seed,
                    alpha=o.alpha, correction=o.correction, decide=o.decide,
                    n=int(mk["n"]) if mk.get("n") is not None else None,
                    claim_id=request.node.nodeid)


# --- running one claim ----------------------------------------------------------------------
_RESULTS = pytest.StashKey[list]()
_EXC = pytest.StashKey[Optional[str]]()


def _results(item) -> list:
    return item.stash.setdefault(_RESULTS, [])


def _pinned(item, state: FieldcheckPlugin) -> Optional[str]:
    spec = _marker(item).get("model")
    return str(spec) if spec is not None and str(spec) != state.opts.model else None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    with _claim_scope(item):
        return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item):
    with _claim_scope(item):
        return (yield)


class _claim_scope:
    """Route recorded ClaimResults to the item and mark the running claim in fieldcheck.config."""

    def __init__(self, item):
        self.item = item
        self.ctx = None
        self.prev_sink = None

    def __enter__(self):
        results = _results(self.item)
        from fieldcheck import claim_result

        self.prev_sink = claim_result._sink

        def sink(r: ClaimResult) -> None:
            try:
                r.claim_id = self.item.nodeid
            except Exception:
                pass
            results.append(r)

        set_sink(None if _not_a_claim(self.item) else sink)
        m = _settings_module()
        if m is not None and hasattr(m, "override"):
            kw = {"claim_id": self.item.nodeid}
            seed = _marker(self.item).get("seed")
            if seed is not None:
                kw["seed"] = int(seed)
            try:
                self.ctx = m.override(**kw)
                self.ctx.__enter__()
            except Exception:
                self.ctx = None
        return self

    def __exit__(self, *exc):
        set_sink(self.prev_sink)
        if self.ctx is not None:
            self.ctx.__exit__(*exc)
        return False


def _uses(item, names) -> bool:
    """Whether the item requests one of our fixtures by these names (not a parameter or a
    fixture of its own that happens to be called ``field``)."""
    info = getattr(item, "_fixtureinfo", None)
    for n in names:
        if n not in getattr(item, "fixturenames", ()):
            continue
        defs = (getattr(info, "name2fixturedefs", {}) or {}).get(n) if info is not None else None
        if not defs:
            continue
        func = getattr(defs[-1], "func", None)
        if getattr(func, "__module__", None) == __name__:
            return True
    return False


def _not_a_claim(item) -> bool:
    from fnmatch import fnmatchcase

    try:
        pats = item.config.getini("fc_not_claims") or []
    except (ValueError, KeyError):
        pats = []
    nid = item.nodeid
    return any(fnmatchcase(nid, p) or (p.endswith("/") and nid.startswith(p)) for p in pats)


def _is_claim(item) -> bool:
    if _not_a_claim(item):
        return False
    if item.stash.get(_RESULTS, None):
        return True
    if item.get_closest_marker("fieldcheck") is not None:
        return True
    return _uses(item, _FIXTURES)


def _falsifying_example(text: str) -> Optional[str]:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        s = line[1:].strip() if line.startswith("E ") else line.strip()
        if s.startswith(("Falsifying example:", "Failing test case:")):
            out = [s]
            for nxt in lines[i + 1:]:
                if not nxt.startswith("E ") and not nxt.startswith("  "):
                    break
                body = nxt[1:] if nxt.startswith("E ") else nxt
                if not body.strip():
                    break
                if body.strip().startswith(("Explanation:", "Traceback", "You can reproduce")):
                    break
                out.append(body.rstrip()[3:] if body.startswith("   ") else body.rstrip())
                if body.strip() == ")":
                    break
            return "\n".join(out)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.when == "call" and call.excinfo is not None:
        ei = call.excinfo
        skipped = ei.errisinstance(pytest.skip.Exception) or hasattr(report, "wasxfail")
        if not skipped and not ei.errisinstance(AssertionError):
            item.stash[_EXC] = "error"
    final = (call.when == "call") or (call.when == "setup" and report.outcome != "passed") or (
        call.when == "teardown" and report.outcome == "failed")
    if not final or not _is_claim(item):
        return report
    results = [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in _results(item)]
    for r in results:
        r["claim_id"] = item.nodeid
    payload = {"results": results, "kind": item.stash.get(_EXC, None), "when": call.when,
               "marker": {k: v for k, v in _marker(item).items() if isinstance(v, (str, int, float))}}
    # replace any earlier payload (teardown reports share the item's list)
    props = [p for p in item.user_properties if not (isinstance(p, tuple) and p and
                                                      str(p[0]).startswith(_PROPERTY))]
    props.append((_PROPERTY, json.dumps(payload, sort_keys=True)))
    for i, r in enumerate(_results(item)):
        try:
            props.append((f"{_PROPERTY}[{i}]", r.summary()))
        except Exception:
            pass
    item.user_properties[:] = props
    report.user_properties = list(props)
    return report


# --- collecting on the controller -----------------------------------------------------------
def _payload(report) -> Optional[dict]:
    for p in getattr(report, "user_properties", ()) or ():
        if isinstance(p, (tuple, list)) and len(p) == 2 and p[0] == _PROPERTY:
            try:
                return json.loads(p[1])
            except (TypeError, ValueError):
                return None
    return None


def _error_text(report) -> Optional[str]:
    lr = report.longrepr
    if lr is None:
        return None
    if isinstance(lr, tuple) and len(lr) == 3:   # skip: (path, line, reason)
        return str(lr[2])
    crash = getattr(lr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message)
    text = getattr(report, "longreprtext", "") or str(lr)
    return text.strip().splitlines()[-1] if text.strip() else None


def _collect(state: "FieldcheckPlugin", report) -> None:
    payload = _payload(report)
    nid = report.nodeid
    entry = state.claims.get(nid)
    if payload is None and entry is None:
        return
    state.durations[nid] = state.durations.get(nid, 0.0) + float(getattr(report, "duration", 0.0) or 0.0)
    if entry is None:
        entry = state.claims[nid] = {"id": nid, "outcome": "passed", "results": [], "error": None,
                                     "falsifying_example": None, "marker": {}}
    if payload is not None and (payload.get("when") == report.when):
        entry["results"] = payload.get("results", [])
        entry["marker"] = payload.get("marker", {})
    wasxfail = hasattr(report, "wasxfail")
    if report.when == "setup":
        if report.failed:
            entry["outcome"] = "error"
        elif report.skipped:
            entry["outcome"] = "xfailed" if wasxfail else "skipped"
    elif report.when == "call":
        if report.passed:
            entry["outcome"] = "xpassed" if wasxfail else "passed"
        elif report.skipped:
            entry["outcome"] = "xfailed" if wasxfail else "skipped"
        else:
            entry["outcome"] = "error" if (payload or {}).get("kind") == "error" else "failed"
    elif report.when == "teardown" and report.failed and entry["outcome"] in ("passed", "xpassed"):
        entry["outcome"] = "error"
    if report.failed or report.skipped:
        msg = _error_text(report)
        if msg and (entry["error"] is None or report.when != "teardown"):
            entry["error"] = msg
        ex = _falsifying_example(getattr(report, "longreprtext", "") or "")
        if ex:
            entry["falsifying_example"] = ex
            if entry["error"] and ex not in entry["error"]:
                entry["error"] = entry["error"] + "\n" + ex


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    config = session.config
    state = _state(config)
    if state is None:
        return
    if not _is_controller(config):
        config.workeroutput["fieldcheck_models"] = json.dumps(
            {"infos": state.model_infos, "times": state.load_times}, sort_keys=True, default=str)
        return
    if not state.claims and not (state.opts.report_json or state.opts.report_html or
                                 state.opts.save or state.baseline is not None):
        return
    state.report = build(state)
    failing = bool(state.report["summary"]["failed_after_correction"])
    comp = state.report.get("comparison")
    if comp and comp["regressions"]:
        failing = True
    _write_outputs(state)
    if state.write_errors:
        failing = True
    if failing and session.exitstatus in (0, pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def build(state: FieldcheckPlugin) -> dict:
    from fieldcheck import reports

    o = state.opts
    model = state.model_infos.get(o.model) or {"spec": o.model, "loaded": False}
    others = {k: v for k, v in sorted(state.model_infos.items()) if k != o.model}
    run = reports.run_metadata(cwd=str(state.config.rootpath), model=model,
                               other_models=others or None, device=o.device, dtype=o.dtype,
                               seed=o.seed, alpha=o.alpha, correction=o.correction,
                               decide=o.decide)
    now = time.time()
    timing = {
        "started": datetime.fromtimestamp(state.started, timezone.utc).isoformat(timespec="seconds"),
        "finished": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(now - state.started, 3),
        "claims": {k: round(v, 4) for k, v in sorted(state.durations.items())},
        "models": {k: v for k, v in sorted(state.load_times.items())},
    }
    report = reports.build_report(state.claims.values(), run, timing=timing,
                                  correction=o.correction, alpha=o.alpha)
    if state.baseline is not None:
        from . import baselines

        report["comparison"] = baselines.compare(report, state.baseline, state.rules,
                                                 path=str(state.baseline_path))
    return report


def _write_outputs(state: FieldcheckPlugin) -> None:
    from fieldcheck import reports

    from . import baselines

    o = state.opts
    jobs = []
    if o.report_json:
        jobs.append(("JSON report", lambda: reports.write_json(Path(o.report_json), state.report)))
    if o.report_html:
        jobs.append(("HTML report", lambda: reports.write_html(Path(o.report_html), state.report)))
    if o.save:
        jobs.append(("baseline", lambda: baselines.save(state.report, o.save, state.config.rootpath)))
    for what, job in jobs:
        try:
            state.written.append(f"{what}: {job()}")
        except Exception as e:  # a report that cannot be written must not pass silently
            state.write_errors.append(f"{what} not written: {type(e).__name__}: {e}")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    state = _state(config)
    if state is None or state.report is None or not _is_controller(config):
        return
    from fieldcheck import reports

    tr = terminalreporter
    rep = state.report
    if rep["claims"]:
        tr.write_sep("=", "fieldcheck claims")
        tr.write_line(reports.format_table(rep, width=getattr(tr, "_tw", None) and tr._tw.fullwidth))
        o = state.opts
        tr.write_line(f"alpha={o.alpha} correction={o.correction} decide={o.decide} seed={o.seed} "
                      f"model={o.model}")
    after = rep["summary"]["failed_after_correction"]
    if after:
        tr.write_line(f"fieldcheck: {len(after)} claim(s) passed on their own but FAIL after the "
                      f"{state.opts.correction} correction over {_n_p(rep)} p-values "
                      f"(alpha={state.opts.alpha}):", red=True, bold=True)
        for cid in after:
            tr.write_line(f"  {cid}", red=True)
    comp = rep.get("comparison")
    if comp:
        tr.write_line(f"compared with baseline {comp['baseline']['path']}"
                      + (f" (missing now: {', '.join(comp['missing'])})" if comp["missing"] else ""))
        if comp["regressions"]:
            tr.write_line(f"fieldcheck: {len(comp['regressions'])} regression(s) against the "
                          f"baseline ({', '.join(comp['rules'])}):", red=True, bold=True)
            for r in comp["regressions"]:
                tr.write_line(f"  {r}", red=True)
    for w in state.written:
        tr.write_line(f"fieldcheck {w}")
    for e in state.write_errors:
        tr.write_line(f"fieldcheck: {e}", red=True, bold=True)


def _n_p(rep: dict) -> int:
    return sum(1 for c in rep["claims"] for r in c["results"]
               if isinstance(r.get("p_value"), (int, float)) and not isinstance(r.get("p_value"), bool))


def pytest_unconfigure(config) -> None:
    state = _state(config)
    if state is not None:
        state.restore()
