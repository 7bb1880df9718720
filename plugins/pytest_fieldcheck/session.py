"""Per-session state (models, fields, collected claims, the report) and the process-wide settings
the session changes and restores: fieldcheck.config, the hypothesis profile, environment flags."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from . import baselines, timing
from .collection import collect
from .common import STATE_NAME, is_controller, pinned_model, settings_module, uses_our_fixture
from .options import Options, read_options, resolve_device, usage_error

_VOLATILE_INFO = ("load_seconds", "load_s", "loaded_at", "date", "duration")


def _show_progress(config: pytest.Config) -> bool:
    if config.getoption("verbose", 0) < 0:
        return False
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return False
    try:
        return sys.stderr.isatty()
    except Exception:
        return False


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
        self.durations: dict[str, float] = {}            # claim nodeid -> seconds, setup and teardown included
        self.extra_timing: dict = {}           # more volatile members of the report's timing (ray, shards)
        self.shard_info: Optional[dict] = None  # an xdist run's shard (from its workers)
        self.started = time.time()
        self.report: Optional[dict] = None
        self.baseline: Optional[dict] = None
        self.baseline_path: Optional[Path] = None
        self.rules: list = []
        self.written: list[str] = []
        self.write_errors: list[str] = []
        self.prev_settings = None
        self.prev_profile: Optional[str] = None
        self.specs: list[str] = list(opts.model_specs)   # models every claim runs on (multi-model)
        self.labels: dict[str, str] = model_labels(self.specs, opts.baseline_model)
        self.released: list[str] = []                     # specs loaded, then freed (in order)

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

    def release(self, spec: str) -> None:
        """Drop a model and its Field (with its run cache) so that the next model fits: the
        session keeps no reference, and the memory is returned (``gc``, the CUDA cache)."""
        had = spec in self.models
        self.fields.pop(spec, None)
        self.models.pop(spec, None)
        if not had:
            return
        self.released.append(spec)
        import gc

        # pytest keeps the last failure for post-mortem debugging; its frames hold the claim's
        # locals (the field, hence the model): drop it, the report has been written already
        for name in ("last_type", "last_value", "last_traceback", "last_exc"):
            if hasattr(sys, name):
                try:
                    delattr(sys, name)
                except AttributeError:
                    pass

        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and getattr(torch, "cuda", None) is not None:
            try:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:
                pass

    def spec_of(self, model) -> str:
        """The spec a loaded model came from (the session's model when unknown)."""
        for spec, m in self.models.items():
            if m is model:
                return spec
        return self.opts.model

    # hooks of this session (a method, so nested in-process sessions keep their own state)
    def pytest_sessionstart(self, session) -> None:
        self.started = time.time()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item) -> None:
        """A claim pinned to another model gets that model (loaded once per session) through
        its ``fc_model``/``field`` arguments, or is skipped when it cannot be loaded."""
        spec = pinned_model(item, self)
        if spec is None or not uses_our_fixture(item, ("fc_model", "field")):
            return
        try:
            model = self.load(spec)
        except Exception as e:
            pytest.skip(f"claim pinned to model {spec!r}, which cannot be loaded here "
                        f"(session model {self.opts.model!r}): {type(e).__name__}: {e}")
        # fixtures fill only the names not yet in funcargs
        if uses_our_fixture(item, ("fc_model",)):
            item.funcargs["fc_model"] = model
        if uses_our_fixture(item, ("field",)):
            item.funcargs["field"] = self.field_for(spec)

    def pytest_runtest_logreport(self, report) -> None:
        if is_controller(self.config):
            collect(self, report)
            timing.collect(self.config, report)

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
                self.released.extend(got.get("released", []))
                self.shard_info = self.shard_info or got.get("shard")
            except (TypeError, ValueError):
                pass

    def restore(self) -> None:
        """Put back what configure changed in process-wide state (for nested sessions)."""
        m = settings_module()
        if m is not None and self.prev_settings is not None and hasattr(m, "restore"):
            try:
                m.restore(self.prev_settings)
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


def model_labels(specs: list[str], baseline: Optional[str] = None) -> dict[str, str]:
    """Short, unique test-id labels for the models of a multi-model run: ``baseline`` and
    ``candidate`` for a baseline comparison, else the spec's last path part (``step1000``)."""
    if not specs:
        return {}
    if baseline is not None and len(specs) == 2:
        return {specs[0]: "baseline", specs[1]: "candidate"}
    out: dict[str, str] = {}
    for i, spec in enumerate(specs):
        base = Path(spec.rstrip("/\\")).name or spec
        base = "".join(ch if ch.isalnum() or ch in "._:=+-" else "_" for ch in base) or f"model{i}"
        out[spec] = base if base not in out.values() else f"{base}#{i}"
    return out


def configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fieldcheck(model=None, seed=None, n=None): pin a claim to a model, a seed "
        "or a data size; a claim pinned to a model that cannot be loaded is skipped")
    opts = read_options(config)
    state = FieldcheckPlugin(config, opts)
    from fieldcheck.errors import BaselineError

    try:
        state.rules = [baselines.parse_rule(e) for e in opts.compare_fail]
        if opts.save is not None:
            baselines.check_name(opts.save)
        if opts.compare is not None and is_controller(config):
            state.baseline_path, state.baseline = baselines.load(opts.compare, config.rootpath)
    except BaselineError as e:
        raise usage_error(str(e)) from None
    config.pluginmanager.register(state, STATE_NAME)

    if opts.no_cache:
        os.environ["FIELDCHECK_NO_CACHE"] = "1"
    progress = _show_progress(config)
    if not progress:
        os.environ["FIELDCHECK_NO_PROGRESS"] = "1"
    m = settings_module()
    if m is not None and hasattr(m, "get"):
        state.prev_settings = m.get()
    _set_settings(alpha=opts.alpha, decide=opts.decide, seed=opts.seed, show_progress=progress,
                  memory_budget=opts.memory_budget)
    state.prev_profile = _hypothesis_profile(config)


def _set_settings(**kw) -> None:
    """Push session settings into fieldcheck.config, passing only the names it knows."""
    m = settings_module()
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
        raise usage_error(f"fieldcheck settings {kw}: {e}")


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
