"""``--fc-ray [ADDRESS]``: the claims run as Ray tasks, and the driver's report is a serial run's.

The driver (this pytest process) collects the claims as usual, then, instead of running them,
plans one task per model of ``--fc-models`` / ``--fc-baseline-model`` (one task without them),
each split into ``--fc-ray-shards`` shards of whole claim files, and submits them to a Ray
cluster: the one at ADDRESS, or a local one it starts and stops. Each task asks for
``--fc-ray-cpus`` CPUs and ``--fc-ray-gpus`` GPUs (default: one where the cluster has GPUs and
the device is not the CPU) and runs :func:`pytest_fieldcheck.worker.run_task`. As tasks finish,
the driver replays their test reports through pytest's own hooks (as xdist does), so the
terminal, the JSON and HTML reports, the grid, the correction and the gate's paired tests are
computed from the same claim entries as in a serial run.

Faults: Ray reruns a task whose worker died (``--fc-ray-retries``, default 3); a task that keeps
failing, returns other tests than planned, or ran other code (the hashes of fieldcheck's source
and the claim files differ) makes each of its claims an error naming the task and its error, so
the run exits non-zero and the report never silently lacks a claim.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

import pytest

from .collection import PROPERTY
from .common import model_param, uses_our_fixture
from .session import FieldcheckPlugin
from .shards import file_weights, plugin_sources, suite_files
from .worker import WorkerLost, run_task, task_env, worker_args

#: object store of a local cluster: results are small JSON payloads
LOCAL_OBJECT_STORE = 256 * 2**20
_CLAIM_FIXTURES = ("fc_model", "field", "fc_seed", "fc_config")


def check_ray_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise pytest.UsageError("--fc-ray needs the ray package: pip install 'fieldcheck[ray]' "
                                "(or pip install ray==2.60.0)")


class RayDriver:
    """Registered as ``fieldcheck-ray`` when ``--fc-ray`` is given (never inside a task)."""

    def __init__(self, state: FieldcheckPlugin):
        self.state = state
        self.failures: list[str] = []
        self.timing: dict = {}

    # --- the plan ---------------------------------------------------------------------------
    def plan(self, items) -> list[dict]:
        """Tasks ``{name, model, ids, files}``: per model (claims without a model parameter go
        with the first model), per shard of whole files."""
        from fieldcheck.reports.shards import plan

        st, o = self.state, self.state.opts
        specs = st.specs or [None]
        groups: dict = {s: [] for s in specs}
        for it in items:
            spec = model_param(it)[0]
            groups[spec if spec in groups else specs[0]].append(it)
        tasks = []
        for spec, its in groups.items():
            if not its:
                continue
            files = suite_files(its)
            n = min(o.ray_shards, len(files))
            parts = plan(file_weights({f: c for f, (_, c) in files.items()}, o.shard_durations), n)
            label = st.labels.get(spec, "claims") if spec is not None else "claims"
            for k, part in enumerate(parts, 1):
                ids = [it.nodeid for it in its if it.nodeid.split("::", 1)[0] in set(part)]
                if ids:
                    tasks.append({"name": label if n == 1 else f"{label} {k}/{n}", "model": spec,
                                  "ids": ids, "files": sorted(part)})
        return tasks

    # --- the run ----------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session) -> bool:
        config = session.config
        if session.testsfailed and not config.option.continue_on_collection_errors:
            raise session.Interrupted(f"{session.testsfailed} error(s) during collection")
        if config.option.collectonly:
            return True
        tasks = self.plan(session.items)
        if not tasks:
            return True
        import ray

        address = self.state.opts.ray
        t0 = time.perf_counter()
        own = not ray.is_initialized()
        if own:
            kw = dict(include_dashboard=False, log_to_driver=False, namespace="fieldcheck")
            if address == "local":
                ray.init(address="local", num_cpus=os.cpu_count() or 1,   # a new cluster, never one found
                         object_store_memory=LOCAL_OBJECT_STORE, **kw)
            else:
                ray.init(address=address, **kw)
        self.timing = {"address": address, "connect_s": round(time.perf_counter() - t0, 3),
                       "nodes": len([n for n in ray.nodes() if n.get("Alive")]), "tasks": []}
        try:
            self._run(ray, session, tasks)
        finally:
            if own:
                ray.shutdown()
            self.state.extra_timing["ray"] = self.timing
        return True

    def _resources(self, ray) -> dict:
        o = self.state.opts
        gpus = o.ray_gpus
        if gpus is None:
            has = float(ray.cluster_resources().get("GPU", 0) or 0) > 0
            gpus = 1.0 if has and o.device.lower() != "cpu" else 0.0
        return {"num_cpus": o.ray_cpus, "num_gpus": gpus}

    def _run(self, ray, session, tasks: list[dict]) -> None:
        config = session.config
        by_id = {it.nodeid: it for it in session.items}
        inv = config.invocation_params
        args, env = worker_args(list(inv.args)), task_env()
        if not any(str(a).split("=", 1)[0] == "--rootdir" for a in args):
            args.append(f"--rootdir={config.rootpath}")   # the same node ids as the driver's
        remote = ray.remote(run_task)
        res = self._resources(ray)
        pending, submitted = {}, {}
        for t in tasks:
            t.update(cwd=str(inv.dir), args=args, env=env)
            ref = remote.options(name=f"fieldcheck:{t['name']}", max_retries=self.state.opts.ray_retries,
                                 retry_exceptions=[WorkerLost], **res).remote(t)
            pending[ref] = t
            submitted[t["name"]] = time.time()
        try:
            self._gather(ray, session, pending, submitted, by_id)
        except BaseException:   # interrupted (Ctrl-C, a failing hook): stop what still runs
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
            raise

    def _gather(self, ray, session, pending: dict, submitted: dict, by_id: dict) -> None:
        """Replay each task's reports as it finishes; fail the tasks that cannot be used."""
        from fieldcheck.reports.shards import code_identity

        root = Path(session.config.rootpath)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                t = pending.pop(ref)
                try:
                    payload = ray.get(ref)
                except Exception as e:  # retries exhausted, or an error that is not retried
                    self._fail(session, t, by_id, f"{type(e).__name__}: {_first_lines(e)}")
                    continue
                got = time.time()
                want = code_identity([root / f for f in t["files"]], root, plugin_sources())
                if payload.get("code") != want:
                    what = [k for k in want if (payload.get("code") or {}).get(k) != want[k]]
                    self._fail(session, t, by_id, f"node {payload.get('node')} ran other code than the "
                                                  f"driver ({', '.join(what)} differ)")
                    continue
                self._absorb(payload)
                seen = self._replay(session, payload)
                lost = [i for i in t["ids"] if i not in seen]
                if lost:
                    why = (f"no result from node {payload.get('node')} (pytest exit code "
                           f"{payload.get('pytest_exit')}): {payload.get('output_tail', '')[-800:]}")
                    self._fail(session, {**t, "ids": lost}, by_id, why)
                sent = submitted[t["name"]]
                self.timing["tasks"].append({
                    "name": t["name"], "model": t["model"], "claims": len(t["ids"]),
                    "node": payload.get("node"), "wall_s": round(got - sent, 3),
                    # submission to the start of the last attempt: Ray's scheduling, a worker's
                    # start, any wait for a free CPU/GPU, and the attempts that died
                    "dispatch_s": round(float(payload.get("started_at", sent)) - sent, 3),
                    "return_s": round(got - float(payload.get("finished_at", got)), 3),
                    "task_s": payload.get("task_s"), "session_s": payload.get("session_s")})

    def _absorb(self, payload: dict) -> None:
        st, m = self.state, payload.get("models") or {}
        st.model_infos.update(m.get("infos") or {})
        for k, v in (m.get("times") or {}).items():
            st.load_times.setdefault(k, v)
        st.released.extend(m.get("released") or [])

    def _replay(self, session, payload: dict) -> set:
        """Feed the task's reports to this session's hooks; the ids that got a final report."""
        config, seen, started = session.config, set(), set()
        for data in payload.get("reports") or []:
            rep = config.hook.pytest_report_from_serializable(config=config, data=data)
            if rep is None:
                continue
            if isinstance(rep, pytest.CollectReport):
                config.hook.pytest_collectreport(report=rep)
                continue
            if rep.nodeid not in started:
                started.add(rep.nodeid)
                config.hook.pytest_runtest_logstart(nodeid=rep.nodeid, location=rep.location)
            config.hook.pytest_runtest_logreport(report=rep)
            if rep.when == "call" or (rep.when == "setup" and not rep.passed):
                seen.add(rep.nodeid)
            if rep.when == "teardown":
                config.hook.pytest_runtest_logfinish(nodeid=rep.nodeid, location=rep.location)
        return seen

    def _fail(self, session, task: dict, by_id: dict, why: str) -> None:
        """Every claim of a failed task becomes an error naming the task (never a silent gap)."""
        config = session.config
        msg = f"Ray task {task['name']!r} failed: {why}"
        self.failures.append(msg)
        for nid in task["ids"]:
            item = by_id.get(nid)
            loc = item.location if item is not None else (nid.split("::")[0], None, nid)
            props = []
            if item is not None and (uses_our_fixture(item, _CLAIM_FIXTURES)
                                     or item.get_closest_marker("fieldcheck") is not None):
                spec, base = model_param(item)
                p = {"results": [], "kind": "error", "when": "setup", "marker": {}}
                if spec is not None:
                    p.update(model=spec, base_id=base)
                props = [(PROPERTY, json.dumps(p, sort_keys=True))]
            rep = pytest.TestReport(nid, loc, keywords={}, outcome="failed", longrepr=msg,
                                    when="setup", sections=[], duration=0.0, user_properties=props)
            config.hook.pytest_runtest_logstart(nodeid=nid, location=loc)
            config.hook.pytest_runtest_logreport(report=rep)
            config.hook.pytest_runtest_logfinish(nodeid=nid, location=loc)

    def terminal_lines(self) -> list[str]:
        t = self.timing
        tasks = t.get("tasks") or []
        if not t:
            return []
        lines = [f"fieldcheck ray: {len(tasks)} task(s) on {t.get('address')} ({t.get('nodes')} node(s), "
                 f"connected in {t.get('connect_s')} s)"]
        for x in sorted(tasks, key=lambda x: x["name"]):
            start = float(x["task_s"] or 0) - float(x["session_s"] or 0)
            lines.append(f"  {x['name']}: {x['claims']} test(s) on {x['node']} in {x['wall_s']} s (dispatch "
                         f"{x['dispatch_s']} s, pytest start {start:.1f} s, claims {x['session_s']} s)")
        return lines


def _first_lines(e: BaseException, n: int = 12) -> str:
    text = str(e).strip().splitlines()
    return "\n".join(text[-n:]) if text else repr(e)


def get_driver(config) -> Optional[RayDriver]:
    return config.pluginmanager.get_plugin("fieldcheck-ray")
