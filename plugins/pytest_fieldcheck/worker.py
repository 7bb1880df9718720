"""The worker side of ``--fc-ray``: what one Ray task runs, and the pytest process it starts.

:func:`run_task` is the Ray task. It starts ``python -m pytest`` with the driver's own arguments
(the options only the driver uses removed) plus ``--fc-task FILE``, in the driver's folder, and
returns what that process recorded: every test report, serialized as xdist does
(``pytest_report_to_serializable``), the models it loaded, and the identity of the code it ran.
The driver replays the reports, so its terminal, JSON, HTML, grid and gate are a serial run's.

Faults: the pytest process dies with the Ray worker that started it (:func:`die_with_parent`); a
pytest process killed by a signal raises :class:`WorkerLost`, which Ray retries like a dead
worker; a task that cannot run (missing folder, a pytest usage error, other collected tests)
raises :class:`TaskError`, which is not retried and is reported by the task's name.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import pytest

from .session import FieldcheckPlugin
from .shards import plugin_sources

#: environment variables passed from the driver to every task (by prefix)
ENV_PREFIXES = ("FIELDCHECK", "HF_", "TRANSFORMERS_", "PYTEST_ADDOPTS", "PYTHONHASHSEED", "CI")


class WorkerLost(RuntimeError):
    """The task's pytest process was killed (a lost worker, the OOM killer): Ray retries it."""


class TaskError(RuntimeError):
    """The task cannot run or returned no results: not retried, reported by name."""


def die_with_parent() -> None:
    """In the task's pytest process: be killed when the Ray worker that started it dies
    (Linux ``PR_SET_PDEATHSIG``; elsewhere a no-op), and exit now if it is already gone."""
    parent = os.environ.get("FIELDCHECK_RAY_PARENT")
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        return
    if parent and str(os.getppid()) != parent:
        os._exit(137)


def run_task(task: dict) -> dict:
    """Run one task's claims (``task``: name, cwd, args, ids, files, env) in a pytest process and
    return its payload (reports, models, code identity, timings, node)."""
    t0, started_at = time.perf_counter(), time.time()
    cwd = Path(task["cwd"])
    host = socket.gethostname()
    if not cwd.is_dir():
        raise TaskError(f"the folder {cwd} does not exist on node {host}: every Ray node needs the "
                        f"claims and fieldcheck at the same path (a shared filesystem or one image)")
    with tempfile.TemporaryDirectory(prefix="fieldcheck-task-") as tmp:
        spec = Path(tmp) / "task.json"
        out = Path(tmp) / "out.json"
        spec.write_text(json.dumps({"name": task["name"], "ids": task["ids"], "files": task["files"],
                                    "out": str(out)}))
        env = dict(os.environ)
        env.update(task.get("env") or {})
        env["FIELDCHECK_NO_PROGRESS"] = "1"
        env["FIELDCHECK_RAY_TASK"] = task["name"]
        env["FIELDCHECK_RAY_PARENT"] = str(os.getpid())
        # "--fc-task=PATH" in one word: pytest takes a separate path word into its rootdir search
        cmd = [sys.executable, "-m", "pytest", *task["args"], f"--fc-task={spec}"]
        proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        text, _ = proc.communicate()
        tail = (text or b"").decode(errors="replace")[-3000:]
        if proc.returncode < 0:
            raise WorkerLost(f"the pytest process of task {task['name']!r} on {host} was killed by "
                             f"signal {-proc.returncode}")
        if not out.is_file():
            raise TaskError(f"the pytest process of task {task['name']!r} on {host} exited with code "
                            f"{proc.returncode} without results:\n{tail}")
        payload = json.loads(out.read_text())
    payload.update(node=host, pytest_exit=proc.returncode, task_s=round(time.perf_counter() - t0, 4),
                   started_at=started_at, finished_at=time.time(),
                   output_tail=tail if proc.returncode not in (0, 1) else "")
    return payload


def worker_args(args: list[str]) -> list[str]:
    """The driver's command-line arguments without the options that only the driver uses
    (reports, saves and comparisons, shards, Ray, xdist, JUnit XML)."""
    with_value = {"--fc-report-json", "--fc-report-html", "--fc-save", "--fc-compare-fail", "--fc-shard",
                  "--fc-shard-durations", "--fc-ray-shards", "--fc-ray-cpus", "--fc-ray-gpus",
                  "--fc-ray-retries", "--junitxml", "--junit-xml", "-n", "--numprocesses", "--dist",
                  "--maxprocesses", "--fc-task"}
    optional_value = {"--fc-ray", "--fc-compare"}
    out, i = [], 0
    while i < len(args):
        a = str(args[i])
        name = a.split("=", 1)[0]
        if name in with_value or name in optional_value:
            if "=" not in a and (name in with_value or (i + 1 < len(args) and not str(args[i + 1]).startswith("-"))):
                i += 1
            i += 1
            continue
        if a.startswith("-n") and a[2:].isdigit():   # -n2
            i += 1
            continue
        out.append(a)
        i += 1
    return out


def task_env() -> dict:
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


class TaskRecorder:
    """Inside a task's pytest process (``--fc-task FILE``): keep only the task's tests, record
    every report, and write the payload at the end. Registered as ``fieldcheck-task``."""

    def __init__(self, config: pytest.Config, state: FieldcheckPlugin):
        self.config = config
        self.state = state
        self.task = json.loads(Path(state.opts.task).read_text())
        die_with_parent()
        self.found: list[str] = []
        self.reports: list[dict] = []
        self.t0 = time.perf_counter()

    def pytest_sessionstart(self, session) -> None:
        self.t0 = time.perf_counter()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items) -> None:
        want = set(self.task["ids"])
        keep = [it for it in items if it.nodeid in want]
        drop = [it for it in items if it.nodeid not in want]
        if drop:
            config.hook.pytest_deselected(items=drop)
        items[:] = keep
        self.found = [it.nodeid for it in keep]

    def _record(self, report) -> None:
        self.reports.append(self.config.hook.pytest_report_to_serializable(config=self.config, report=report))

    def pytest_runtest_logreport(self, report) -> None:
        self._record(report)

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            self._record(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus) -> None:
        from fieldcheck.reports.schema import atomic_write_text
        from fieldcheck.reports.shards import code_identity

        st = self.state
        root = Path(self.config.rootpath)
        payload = {
            "name": self.task["name"], "found": self.found,
            "missing": sorted(set(self.task["ids"]) - set(self.found)),
            "reports": self.reports, "session_s": round(time.perf_counter() - self.t0, 4),
            "models": {"infos": st.model_infos, "times": st.load_times, "released": st.released},
            "code": code_identity([root / f for f in self.task["files"]], root, plugin_sources()),
        }
        atomic_write_text(self.task["out"], json.dumps(payload, default=str))


def get_recorder(config) -> Optional[TaskRecorder]:
    return config.pluginmanager.get_plugin("fieldcheck-task")
