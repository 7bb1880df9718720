"""``--fc-ray``: a two-model gate run as Ray tasks gives the serial run's report, also when a worker
is killed in the middle (Ray reruns its task); a task that keeps failing makes its claims errors
that name it, on a real ``ray start --head`` cluster joined by address. Tiny models saved to
folders; every cluster is stopped by the test that started it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _gate_helpers import MODEL_CLAIMS, run, same_report, tiny_folders
from pytest_fieldcheck.worker import worker_args

pytest_plugins = "pytester"
ray = pytest.importorskip("ray", reason="--fc-ray needs ray: pip install 'fieldcheck[ray]'")


def test_worker_args_drop_what_only_the_driver_does():
    args = ["claims/", "--fc-ray", "--fc-report-json", "r.json", "--fc-report-html=r.html", "-n2",
            "--fc-models", "a,b", "--fc-compare", "--fc-seed", "3", "--fc-ray=ray://h:1", "-k", "x",
            "--fc-shard", "1/2", "--junitxml", "j.xml", "--fc-ray", "127.0.0.1:6379", "-q"]
    assert worker_args(args) == ["claims/", "--fc-models", "a,b", "--fc-seed", "3", "-k", "x", "-q"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_folders(tmp_path_factory.mktemp("models"))


@pytest.fixture
def gate(pytester, models, monkeypatch):
    pytester.makepyfile(**MODEL_CLAIMS)
    monkeypatch.setenv("FIELDCHECK_TEST_MARKER", str(pytester.path / "killed-once"))
    return ("--fc-model", models["pert"], "--fc-baseline-model", models["base"])


@pytest.mark.slow
def test_gate_on_a_local_cluster_equals_the_serial_run_despite_a_killed_worker(pytester, gate, monkeypatch):
    res, serial = run(pytester, *gate, report="serial.json")
    assert res.ret == 1 and serial["comparison"]["regressions"]
    # one task per model, in parallel; test_dies kills the Ray worker running it, once
    monkeypatch.setenv("FIELDCHECK_TEST_KILL", "once")
    res, dist = run(pytester, *gate, "--fc-report-html", "r.html", "--fc-ray", report="ray.json")
    out = res.stdout.str()
    assert (pytester.path / "killed-once").exists(), out          # a worker really died
    assert same_report(dist, serial) == [], out
    assert res.ret == 1 and "fieldcheck ray: 2 task(s) on local" in out
    res.assert_outcomes(passed=9, failed=2)
    tasks = dist["timing"]["ray"]["tasks"]
    assert sorted(t["name"] for t in tasks) == ["baseline", "candidate"]
    assert "Claims x models" in (pytester.path / "r.html").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    """A real Ray head node on this machine (``ray start --head --block``), stopped at the end."""
    port = _free_port()
    ray_cli = str(Path(sys.executable).with_name("ray"))
    log = open(tmp_path / "ray-head.log", "w")
    proc = subprocess.Popen([ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--num-cpus=2", "--object-store-memory=200000000", "--include-dashboard=false",
                             "--disable-usage-stats", "--block"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while "Ray runtime started" not in (tmp_path / "ray-head.log").read_text():
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "ray-head.log").read_text()
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)      # --block: the head stops its own processes
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.slow
def test_a_task_that_keeps_failing_is_named_on_a_cluster_joined_by_address(pytester, gate, head, monkeypatch):
    monkeypatch.setenv("FIELDCHECK_TEST_KILL", "always")
    res, dist = run(pytester, *gate, "--fc-ray-shards", "2", "--fc-ray-retries", "1",
                    f"--fc-ray={head}", report="ray.json")
    out = res.stdout.str()
    assert res.ret == 1 and f"on {head}" in out, out
    # test_dies' file is one task per model: both fail after their retry, named in the report
    bad = {c["id"]: c for c in dist["claims"] if c["outcome"] == "error"}
    assert sorted(i.split("::")[1] for i in bad) == ["test_dies[baseline]", "test_dies[candidate]",
                                                    "test_early_end[baseline]", "test_early_end[candidate]"]
    assert all("Ray task 'baseline " in c["error"] or "Ray task 'candidate " in c["error"] for c in bad.values())
    assert "fieldcheck: Ray task" in out
    # the other file's claims are there, equal to a serial run of them
    monkeypatch.delenv("FIELDCHECK_TEST_KILL")
    _, serial = run(pytester, *gate, "test_mlp.py", report="serial.json")
    got = {c["id"]: c for c in dist["claims"] if c["id"].startswith("test_mlp.py")}
    assert got == {c["id"]: c for c in serial["claims"]}
    assert dist["summary"]["claims"] == len(serial["claims"]) + 4
