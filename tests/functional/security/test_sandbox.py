"""Hostile pickles in the docker sandbox (the in-process half is tests/unit/security/test_sandbox.py): tenant
code gets no network, no host environment, no host /proc, no writable place but its scratch, and nothing of
it survives the probe.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.security.test_sandbox import FIXED_REASON, World, _cli, _pickle_dir, hostile_pickle


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.fixture
def canary_env(monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("MODELPORT_CANARY", value)
    monkeypatch.setenv("MODELPORT_ADMIN_KEY", value)
    return value


def _host_processes_with(marker: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "cmdline").read_bytes():
                    found.append(proc.name)
            except OSError:
                continue
    return [pid for pid in found if int(pid) != os.getpid()]


def _probe_containers(engine: Any) -> list[Any]:
    return list(engine.containers.list(all=True, filters={"label": "dev.modelport.probe"}))


SPY = """
import os, socket, sys
obs = {}
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=3).close()
    obs["network"] = "connected"
except OSError:
    obs["network"] = "none"
obs["environ"] = "leak" if CANARY in repr(dict(os.environ)) else "clean"
leaks = []
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            if CANARY.encode() in open(f"/proc/{entry}/environ", "rb").read():
                leaks.append(entry)
        except OSError:
            pass
obs["proc_environ"] = "leak" if leaks else "clean"
host_cmdline = f"/proc/{HOST_PID}/cmdline"
obs["host_pid_visible"] = str(os.path.exists(host_cmdline) and b"pytest" in open(host_cmdline, "rb").read())
for label, path in (("root", "/spy"), ("probe", "/probe/spy"), ("code", "/var/task/spy"),
                    ("host", HOST_FILE), ("tmp", "/tmp/spy")):
    try:
        with open(path, "w") as fh:
            fh.write("written")
        obs["write_" + label] = "written"
    except OSError:
        obs["write_" + label] = "denied"
obs["uid"] = str(os.getuid())
obs["cap_eff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)", MARKER])
    os._exit(0)
os.waitpid(pid, 0)
import numpy as np
from sklearn.dummy import DummyClassifier
est = DummyClassifier().fit(np.zeros((2, len(obs))), [0, 1])
est.feature_names_in_ = np.array([f"{k}:{v}" for k, v in sorted(obs.items())], dtype=object)
result = est
"""


@pytest.mark.docker
def test_a_hostile_pickle_gets_nothing_and_leaves_nothing(
    tmp_path: Path, engine: Any, docker_sandbox: Any, listener: int, canary_env: str
) -> None:
    host_file = tmp_path / "written-by-the-pickle"
    marker = f"modelport-sleeper-{uuid.uuid4().hex}"
    code = (
        f"PORT = {listener}\nCANARY = {canary_env!r}\nHOST_PID = {os.getpid()}\n"
        f"HOST_FILE = {str(host_file)!r}\nMARKER = {marker!r}\n" + SPY
    )
    world = World(tmp_path, docker_sandbox)
    dep = world.deploy("spy", hostile_pickle(code))
    assert dep.state == "READY", dep.reason
    names = world.manifest(dep).native.feature_names
    assert names is not None
    seen = dict(name.split(":", 1) for name in names)
    assert seen == {
        "network": "none",
        "environ": "clean",
        "proc_environ": "clean",
        "host_pid_visible": "False",
        "write_root": "denied",
        "write_probe": "denied",
        "write_code": "denied",
        "write_host": "denied",
        "write_tmp": "written",
        "uid": "1000",
        "cap_eff": "0000000000000000",
    }
    assert not host_file.exists()  # the canary: nothing ran in this process
    assert _probe_containers(engine) == []
    assert _host_processes_with(marker) == []


NOISY = """
import os, sys
sys.stderr.write("MODELPORT_ADMIN_KEY=" + os.environ.get("MODELPORT_ADMIN_KEY", "unset") + "\\n")
print("stdout is not the channel either")
try:
    open(HOST_FILE, "w").write("ran")
except OSError:
    pass
"""


@pytest.mark.docker
def test_a_failing_probe_reports_a_fixed_reason_and_logs_only_a_sanitized_excerpt(
    tmp_path: Path, engine: Any, docker_sandbox: Any, canary_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    host_file = tmp_path / "written-by-the-pickle"
    code = (
        f"HOST_FILE = {str(host_file)!r}\n"
        + NOISY
        + f"raise RuntimeError('MODELPORT_ADMIN_KEY={canary_env} leaked: ' + 'x' * 50)\n"
    )
    world = World(tmp_path, docker_sandbox)
    with caplog.at_level(logging.WARNING, logger="chalicelib.core.probe"):
        dep = world.deploy("noisy", hostile_pickle(code))
    assert dep.state == "FAILED"
    assert dep.reason is not None
    assert FIXED_REASON.match(dep.reason), dep.reason
    assert "could not be loaded" in dep.reason
    for leaked in (canary_env, "RuntimeError", "stdout", "MODELPORT_ADMIN_KEY", "xxxx"):
        assert leaked not in dep.reason
    (record,) = [r for r in caplog.records if r.name == "chalicelib.core.probe"]
    logged = record.getMessage()
    assert "RuntimeError" in logged  # the owner's excerpt: the failure's kind ...
    assert canary_env not in logged  # ... but never an environment value
    excerpt = logged.split("): ", 1)[1]
    assert len(excerpt) <= 300 and excerpt.isascii()
    assert not host_file.exists()
    assert _probe_containers(engine) == []


@pytest.mark.docker
def test_cli_inspects_a_pickle_in_the_docker_sandbox(
    tmp_path: Path, engine: Any, docker_sandbox: Any
) -> None:
    result = _cli("inspect", str(_pickle_dir(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "type:      sklearn.linear_model.LogisticRegression" in result.stdout
    assert "format: pickle" in result.stdout
    assert _probe_containers(engine) == []
