"""Where Modelport's time goes under bench/peers.py's load: CPU per request, by process.

Starts the same local stack as ``bench/peers.py`` (iris fused with ``tabular`` + ``labels``, provisioned
environments), drives it with wrk (one connection, then eight) and reads each process's CPU time from
``/proc`` before and after: the stack's process (edge, Lambda emulator, Runtime API servers, moto), the API
process (the Chalice app: authorizer, validation, signed invoke) and the model's containers (awslambdaric
and the runtime). Two cores serve all of them, so their sum bounds the requests per second.

    python bench/peers_profile.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # bench/peers.py, beside this script

HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> dict[int, tuple[str, float]]:
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[int(proc.name)] = (cmd, (int(stat[11]) + int(stat[12])) / HZ)
    return found


def kind(cmd: str, pid: int) -> str:
    if pid == os.getpid():
        return "stack process (edge, emulator, Runtime API, moto)"
    if "chalicelib.local.api" in cmd:
        return "API process (Chalice app)"
    if "awslambdaric" in cmd:
        return "model containers (awslambdaric + runtime)"
    if "dockerd" in cmd or "containerd" in cmd:
        return "docker engine"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelport-profile-") as tmp:
        work = Path(tmp)
        script = work / "peer.lua"
        script.write_text(peers.WRK_SCRIPT)
        with peers.modelport(work) as server:
            peers.wrk(server, 1, 3, script)  # warm-up
            for connections in (1, 8):
                before = cpu_seconds()
                run = peers.wrk(server, connections, args.seconds, script)
                after = cpu_seconds()
                spent: dict[str, float] = {}
                for pid, (cmd, seconds) in after.items():
                    used = seconds - before.get(pid, (cmd, 0.0))[1]
                    if used > 0:
                        spent[kind(cmd, pid)] = spent.get(kind(cmd, pid), 0.0) + used
                print(
                    f"c{connections}: {run['rps']:,.0f} req/s, p50 {run['p50']:.2f} ms, "
                    f"p99 {run['p99']:.2f} ms, {int(run['errors'])} errors; CPU per request:"
                )
                for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
                    print(f"  {name:52s} {seconds * 1000 / run['requests']:.3f} ms")


if __name__ == "__main__":
    main()
