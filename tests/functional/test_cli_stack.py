"""``modelport up/down/deploy/invoke/logs`` as a user runs them: real processes, one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.local.stack import StackState, pid_alive

pytestmark = [pytest.mark.functional, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    env["MODELPORT_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "chalicelib.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env, check=False,
    )  # fmt: skip


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "home"
    state = StackState.read(tmp_path / "home")
    if state is not None and pid_alive(state.pid):  # a failed test must not leave a stack behind
        run(tmp_path / "home", "down")


def test_without_a_stack_the_client_commands_say_how_to_get_one(home: Path) -> None:
    for args in (
        ("invoke", "iris-onnx", "--json", "{}"),
        ("logs", "iris-onnx"),
        ("deploy", "examples/iris-onnx"),
    ):
        done = run(home, *args)
        assert done.returncode == 2, done
        assert done.stderr.strip().splitlines() == [
            "error: no Modelport API to talk to (run `modelport up` for the local stack, or set "
            "MODELPORT_API_URL and MODELPORT_API_KEY)"
        ]
    assert run(home, "down").stdout.strip() == "no local stack is running"


def test_up_deploy_invoke_logs_down(home: Path, tmp_path: Path) -> None:
    ports = ["--edge-port", str(free_port()), "--api-port", str(free_port()), "--launcher", "process"]
    up = run(home, "up", *ports)
    assert up.returncode == 0, up.stderr
    state = StackState.read(home)
    assert state is not None and state.ready and pid_alive(state.pid)
    assert state.api_url in up.stdout and state.admin_key in up.stdout and "process environments" in up.stdout
    assert (home / "stack.json").stat().st_mode & 0o077 == 0  # it holds the admin key
    again = run(home, "up", *ports)
    assert again.returncode == 0 and "already running" in again.stdout and f"pid {state.pid}" in again.stdout

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "modelport.yaml").write_text("name: broken\nenviroment: {}\n", encoding="utf-8")
    done = run(home, "deploy", str(broken))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {broken}/modelport.yaml: unknown key 'enviroment': did you mean 'environment'?"
    )

    echo = tmp_path / "echo"
    echo.mkdir()
    from tests.functional.local_stack import ECHO_CONFIG, ECHO_PREDICT

    (echo / "predict.py").write_text(ECHO_PREDICT, encoding="utf-8")
    (echo / "modelport.yaml").write_text(ECHO_CONFIG, encoding="utf-8")
    deployed = run(home, "deploy", str(echo), timeout=600)
    assert deployed.returncode == 0, deployed.stderr
    assert "echo v1 READY" in deployed.stdout and "modelport-echo:1 (fused)" in deployed.stdout
    assert "echo v1: IMAGE_BUILT" in deployed.stderr

    answer = run(home, "invoke", "echo", "--json", json.dumps({"output": [1.5, 2.5]}))
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"output": [1.5, 2.5]}
    assert answer.stderr.startswith("200 application/json in ") and "model " in answer.stderr
    refused = run(home, "invoke", "echo", "--json", json.dumps({"output": "no"}))
    assert refused.returncode == 2 and refused.stderr.startswith("error: request does not match")
    missing = run(home, "invoke", "nope", "--json", "{}")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1

    logs = run(home, "logs", "echo")
    assert logs.returncode == 0 and "modelport-echo  REPORT RequestId:" in logs.stdout

    down = run(home, "down")
    assert down.stdout.strip() == "stopped the local stack"
    assert not pid_alive(state.pid) and StackState.read(home) is None


def test_up_says_which_port_is_taken(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(
            home, "up", "--edge-port", str(port), "--api-port", str(free_port()), "--launcher", "process"
        )
    assert done.returncode == 2
    assert f"error: port {port} for the AWS endpoint is taken" in done.stderr
    assert StackState.read(home) is None
