"""Command-line and ini options of the plugin: the table, reading them (command line, then ini,
then default), validation into an :class:`Options` (a bad value is a usage error, exit 4) and
the ``auto`` device."""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field as dc_field
from typing import Any, Optional

import pytest

DEFAULT_MODEL = "smollm2-135m"

# name: (help, default, ini type)
_OPTIONS: dict[str, tuple[str, Any, str]] = {
    "fc_model": ("model spec for fc_model: a short name (smollm2-135m, tiny-gpt2, tiny-llama), "
                 "a hub name, a folder or a .gguf file", DEFAULT_MODEL, "string"),
    "fc_device": ("cpu, cuda, cuda:N or auto (auto spreads xdist workers over the visible GPUs)",
                  "cpu", "string"),
    "fc_dtype": ("dtype of the model: float32, float16, bfloat16 (default: float32)", None, "string"),
    "fc_seed": ("session seed; every claim's draws are seeded by it and the claim id", 0, "string"),
    "fc_alpha": ("error rate of each claim's decision (default 0.05)", 0.05, "string"),
    "fc_correction": ("multiple-comparison correction of the claims' p-values: bonferroni "
                      "(default: a verdict depends only on its own p and the family size), "
                      "holm, bh or none", "bonferroni", "string"),
    "fc_correction_family": ("which claims are corrected together: file (default: the claims "
                             "of one test file), session or claim", "file", "string"),
    "fc_decide": ("bound: the one-sided confidence bound must clear the bar; point: the estimate",
                  "bound", "string"),
    "fc_report_json": ("write the JSON report to this path", None, "string"),
    "fc_report_html": ("write the self-contained HTML report to this path", None, "string"),
    "fc_save": ("save this run as baseline NAME under .fieldcheck/baselines/", None, "string"),
    "fc_compare": ("compare with a baseline: NAME, latest, or a path to a JSON report", None, "string"),
    "fc_compare_fail": ("fail on regressions: significant, passed, estimate:10%%, estimate:0.05 "
                        "(repeatable)",
                        None, "linelist"),
    "fc_baseline_model": ("run every claim on this model too and compare --fc-model (the "
                          "candidate) with it, paired over the same examples", None, "string"),
    "fc_models": ("comma-separated model specs: run every claim on each, one model at a time "
                  "(a checkpoint sweep; a claims x models grid in the reports)", None, "string"),
    "fc_no_cache": ("do not use or write the converted-model cache", False, "bool"),
    # beyond one process (docs/gating.md "CI shards", docs/scale.md)
    "fc_memory_budget": ("bytes one chunk of a patch sweep, edge scoring or EAP-IG may use, e.g. "
                         "512MiB or 8GB (default 2GiB): lower it when a run is out of memory", None, "string"),
    "fc_shard": ("K/N: run only the K-th of N shards of the claim files (whole files, balanced by "
                 "--fc-shard-durations); merge the shards' JSON reports with fieldcheck report merge",
                 None, "string"),
    "fc_shard_durations": ("a previous run's JSON report: balance the shards by its claims' "
                           "durations (default: by the number of claims per file)", None, "string"),
    "fc_ray": ("run the claims as Ray tasks: one per model of --fc-models/--fc-baseline-model (and "
               "per --fc-ray-shards shard); ADDRESS of a running cluster (auto, HOST:PORT, "
               "ray://HOST:PORT), no value: start a local cluster", None, "string"),
    "fc_ray_shards": ("split each model's claim files into this many Ray tasks (default 1)", 1, "string"),
    "fc_ray_cpus": ("CPUs each Ray task asks for (default 1)", 1, "string"),
    "fc_ray_gpus": ("GPUs each Ray task asks for (default: 1 where the cluster has GPUs and "
                    "--fc-device is not cpu, else 0)", None, "string"),
    "fc_ray_retries": ("times Ray reruns a task whose worker died (default 3)", 3, "string"),
}
# ini only: node-id patterns (fnmatch) of tests that are not claims, e.g. a library's own unit
# tests that call fc.assert_* on purpose: their results are not collected, reported or corrected
_NOT_CLAIMS_HELP = ("node-id patterns (fnmatch, one per line) of tests that are not claims: "
                    "their recorded results are not collected, e.g. tests/*")


def add_options(parser: pytest.Parser) -> None:
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
        elif name == "fc_ray":
            g.addoption(flag, dest=name, nargs="?", const="local", default=None, metavar="ADDRESS",
                        help=help_ + " (write --fc-ray=ADDRESS when a test path follows)")
        else:
            g.addoption(flag, dest=name, default=None, metavar=name[3:].upper(), help=help_)
        parser.addini(name, help_.replace("%%", "%") + f" (command line: {flag})", type=kind,
                      default=[] if kind == "linelist" else None)
    parser.addini("fc_not_claims", _NOT_CLAIMS_HELP, type="linelist", default=[])
    # internal: a Ray task's pytest process runs these claims only (pytest_fieldcheck.worker)
    g.addoption("--fc-task", dest="fc_task", default=None, help=argparse.SUPPRESS)


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
    correction: str = "bonferroni"
    correction_family: str = "file"
    decide: str = "bound"
    report_json: Optional[str] = None
    report_html: Optional[str] = None
    save: Optional[str] = None
    compare: Optional[str] = None
    compare_fail: list = dc_field(default_factory=list)
    no_cache: bool = False
    baseline_model: Optional[str] = None
    models: list = dc_field(default_factory=list)
    memory_budget: Optional[int] = None
    shard: Optional[tuple] = None              # (K, N)
    shard_durations: Optional[str] = None
    ray: Optional[str] = None                  # "local" or a cluster address
    ray_shards: int = 1
    ray_cpus: float = 1.0
    ray_gpus: Optional[float] = None
    ray_retries: int = 3
    task: Optional[str] = None                 # a Ray task's JSON file (inside the task's pytest)

    @property
    def model_specs(self) -> list:
        """The models every claim runs on, in order (empty: only ``model``)."""
        if self.baseline_model:
            return [self.baseline_model, self.model]
        return list(self.models)


def usage_error(msg: str) -> pytest.UsageError:
    """The error a bad option or ini value raises: pytest prints ``msg`` and exits with code 4."""
    return pytest.UsageError(msg)


def read_options(config: pytest.Config) -> Options:
    o = Options()
    o.model = str(_opt(config, "fc_model"))
    o.device = str(_opt(config, "fc_device")).strip()
    dt = _opt(config, "fc_dtype")
    o.dtype = str(dt).strip() if dt is not None else None
    if o.dtype is not None:
        from fieldcheck.models.loading import DTYPE_NAMES  # a name table; torch is not imported here

        if o.dtype.lower().removeprefix("torch.") not in DTYPE_NAMES:
            raise usage_error(f"--fc-dtype {o.dtype!r} is unknown: use float32, bfloat16 or float16")
    try:
        o.seed = int(str(_opt(config, "fc_seed")).strip())
    except ValueError:
        raise usage_error(f"--fc-seed {_opt(config, 'fc_seed')!r} is not an integer: use e.g. --fc-seed 0")
    raw_alpha = _opt(config, "fc_alpha")
    try:
        o.alpha = float(raw_alpha)
    except (TypeError, ValueError):
        o.alpha = float("nan")
    if not (0.0 < o.alpha < 0.5):
        raise usage_error(f"--fc-alpha {raw_alpha!r} must be a number in (0, 0.5), e.g. --fc-alpha 0.05")
    o.correction = str(_opt(config, "fc_correction")).lower()
    if o.correction not in ("bonferroni", "holm", "bh", "none"):
        raise usage_error(f"--fc-correction {o.correction!r} is unknown: use bonferroni, holm, bh "
                     f"or none")
    o.correction_family = str(_opt(config, "fc_correction_family")).lower()
    if o.correction_family not in ("session", "file", "claim"):
        raise usage_error(f"--fc-correction-family {o.correction_family!r} is unknown: use session, "
                     f"file or claim")
    o.decide = str(_opt(config, "fc_decide")).lower()
    if o.decide not in ("bound", "point"):
        raise usage_error(f"--fc-decide {o.decide!r} is unknown: use bound or point")
    dev = o.device.lower()
    if not (dev in ("cpu", "cuda", "auto", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise usage_error(f"--fc-device {o.device!r} is unknown: use cpu, cuda, cuda:N or auto")
    o.report_json = _opt(config, "fc_report_json")
    o.report_html = _opt(config, "fc_report_html")
    o.save = _opt(config, "fc_save")
    o.compare = _opt(config, "fc_compare")
    o.compare_fail = list(_opt(config, "fc_compare_fail") or [])
    nc = _opt(config, "fc_no_cache")
    o.no_cache = nc if isinstance(nc, bool) else str(nc).lower() in ("1", "true", "yes", "on")
    bm = _opt(config, "fc_baseline_model")
    o.baseline_model = str(bm).strip() if bm not in (None, "") else None
    raw_models = _opt(config, "fc_models")
    o.models = [m.strip() for m in str(raw_models).split(",") if m.strip()] if raw_models else []
    if o.baseline_model is not None and o.models:
        raise usage_error("--fc-baseline-model and --fc-models cannot be combined: compare a candidate "
                     "(--fc-model) with a baseline, or sweep a list of models")
    if o.baseline_model is not None and o.baseline_model == o.model:
        raise usage_error(f"--fc-baseline-model {o.baseline_model!r} is the --fc-model itself: pass the "
                     f"candidate with --fc-model and the model you ship with --fc-baseline-model")
    if raw_models is not None and len(o.models) < 2:
        raise usage_error(f"--fc-models {raw_models!r} names {len(o.models)} model(s): give at least two, "
                     f"comma-separated, e.g. --fc-models ckpt-1000,ckpt-2000")
    if len(set(o.models)) != len(o.models):
        raise usage_error(f"--fc-models {raw_models!r} names a model twice: give each once")
    if o.models:
        o.model = o.models[0]
    if o.baseline_model is not None and o.compare is not None:
        raise usage_error("--fc-baseline-model compares with a model in the same run; --fc-compare with "
                     "a saved run: use one of them")
    if o.compare_fail and o.compare is None and o.baseline_model is None:
        o.compare = "latest"
    _read_scale_options(config, o)
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


def _number(config, name: str, kind=int, low=0):
    raw = _opt(config, name)
    flag = "--" + name.replace("_", "-")
    try:
        v = kind(str(raw).strip())
    except ValueError:
        v = None
    if v is None or v < low:
        raise pytest.UsageError(f"{flag} {raw!r} must be a {'whole ' if kind is int else ''}number >= {low}")
    return v


_RAY_ADDRESS = re.compile(r"^(local|auto|ray://\S+|[A-Za-z0-9_.\-\[\]:]+:\d+)$")


def _read_scale_options(config: pytest.Config, o: Options) -> None:
    """--fc-memory-budget, --fc-shard*, --fc-ray*, --fc-task (usage errors name the option)."""
    from fieldcheck.config import parse_bytes
    from fieldcheck.errors import FieldcheckError

    mb = _opt(config, "fc_memory_budget")
    if mb is not None:
        try:
            o.memory_budget = parse_bytes(mb)
        except FieldcheckError as e:
            raise pytest.UsageError(f"--fc-memory-budget: {e}") from None
    sh = _opt(config, "fc_shard")
    if sh is not None:
        from fieldcheck.reports.shards import parse_shard

        try:
            o.shard = parse_shard(sh)
        except FieldcheckError as e:
            raise pytest.UsageError(str(e)) from None
    o.shard_durations = _opt(config, "fc_shard_durations")
    if o.shard_durations is not None and o.shard is None:
        raise pytest.UsageError("--fc-shard-durations balances shards: give --fc-shard K/N too")
    o.task = config.getoption("fc_task", None)
    ray = _opt(config, "fc_ray")
    o.ray = None if ray is None or o.task is not None else str(ray).strip()
    if o.ray is not None and not _RAY_ADDRESS.match(o.ray):
        raise pytest.UsageError(
            f"--fc-ray {o.ray!r} is not a Ray address: use --fc-ray (a local cluster), --fc-ray auto, "
            f"--fc-ray HOST:PORT or --fc-ray ray://HOST:PORT (write --fc-ray=ADDRESS, or put --fc-ray "
            f"after the test paths: a path right after it is read as its address)")
    o.ray_shards = _number(config, "fc_ray_shards", int, 1)
    o.ray_cpus = _number(config, "fc_ray_cpus", float, 0)
    if _opt(config, "fc_ray_gpus") is not None:
        o.ray_gpus = _number(config, "fc_ray_gpus", float, 0)
    o.ray_retries = _number(config, "fc_ray_retries", int, 0)
    if o.ray is not None:
        n = config.getoption("numprocesses", None) if hasattr(config.option, "numprocesses") else None
        if n:
            raise pytest.UsageError("--fc-ray runs claims as Ray tasks: it cannot be combined with "
                                    "xdist's -n (use --fc-ray-shards N to split each model's claims)")
