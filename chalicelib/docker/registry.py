"""A local OCI registry on 127.0.0.1: Debian's ``docker-registry`` (distribution 2.8) with a config of ours.

Its packaged config turns on htpasswd auth; ours listens on loopback only, stores blobs on the filesystem,
has no auth and allows deletes. The engine treats 127.0.0.0/8 as an insecure registry by default, so
``docker push 127.0.0.1:5000/...`` works with no engine set-up. Start and stop are idempotent: a PID file
per port, and a registry already answering on the port is reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from chalicelib.docker import ImageError

BINARY = "docker-registry"


def default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "modelport" / "registry"


def registry_config(port: int, storage: Path, htpasswd: Path | None = None) -> dict[str, object]:
    """``htpasswd`` (bcrypt entries) turns on basic auth, as a registry a team shares would have it."""
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": f"127.0.0.1:{port}",
            "secret": secrets.token_hex(16),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "modelport", "path": str(htpasswd)}}
    return config


def answers(port: int, timeout: float = 1.0) -> bool:
    """True when a registry (the distribution API header) answers ``/v2/`` on the port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=timeout) as response:
            return "Docker-Distribution-Api-Version" in response.headers or response.status == 200
    except urllib.error.HTTPError as err:
        return "Docker-Distribution-Api-Version" in err.headers
    except OSError:
        return False


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_file(data_dir: Path, port: int) -> Path:
    return data_dir / f"registry-{port}.pid"


def _running_pid(data_dir: Path, port: int) -> int | None:
    try:
        pid = int(_pid_file(data_dir, port).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if BINARY.encode() in cmdline else None


def start_registry(
    port: int = 5000, data_dir: Path | None = None, *, wait_s: float = 15.0, htpasswd: Path | None = None
) -> str:
    """Start (or find) the registry on 127.0.0.1:``port``; returns ``127.0.0.1:port``."""
    data_dir = data_dir if data_dir is not None else default_data_dir()
    address = f"127.0.0.1:{port}"
    if answers(port):
        return address
    if _port_open(port):
        raise ImageError(f"port {port} is taken by something that is not a registry", hint="use --port")
    binary = shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if Path(f"/usr/bin/{BINARY}").exists() else None)
    if binary is None:
        raise ImageError(
            "the docker-registry program is not installed", hint="apt-get install -y docker-registry"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / f"config-{port}.yml"
    config.write_text(json.dumps(registry_config(port, data_dir / "storage", htpasswd), indent=2) + "\n")
    log = data_dir / f"registry-{port}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [binary, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the CLI that started it
        )
    _pid_file(data_dir, port).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if answers(port, timeout=0.5):
            return address
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            _pid_file(data_dir, port).unlink(missing_ok=True)
            raise ImageError(f"docker-registry exited with {proc.returncode}: {tail[0]}", hint=f"see {log}")
        time.sleep(0.1)
    raise ImageError(f"docker-registry did not answer on {address} within {wait_s:.0f} s", hint=f"see {log}")


def stop_registry(port: int = 5000, data_dir: Path | None = None, *, wait_s: float = 10.0) -> bool:
    """Stop the registry this module started on ``port``; False when none was running."""
    data_dir = data_dir if data_dir is not None else default_data_dir()
    pid = _running_pid(data_dir, port)
    _pid = _pid_file(data_dir, port)
    if pid is None:
        _pid.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    _pid.unlink(missing_ok=True)
    return True


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (a child not yet reaped: reaped here) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own child, not yet reaped) counts as gone.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (OSError, IndexError):
        return False
    if status == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True
