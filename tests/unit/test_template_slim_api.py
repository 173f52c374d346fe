"""The API function ships without numpy, onnx, scikit-learn or skops (requirements.txt is slim): app.py and
the routes it serves must work when those packages cannot be imported at all. A fresh interpreter with a
meta-path finder that refuses them imports app.py and exercises representative routes."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT

BLOCKED = ("numpy", "onnx", "onnxruntime", "sklearn", "skops", "scipy", "lightgbm")

SCRIPT = r"""
import importlib.abc, json, sys

BLOCKED = set(sys.argv[1].split(","))
asked = []

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            asked.append(name)
            raise ImportError(f"{name} is not in the API function's package")
        return None

sys.meta_path.insert(0, Refuse())

from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.settings import Settings
from tests.support import ADMIN_KEY, Api, new_account

wiring.override(wiring.memory_container(Settings(admin_key=ADMIN_KEY)))
statuses = {}
with Client(app) as client:
    anonymous, admin = Api(client, None), Api(client, ADMIN_KEY)
    statuses["health"] = anonymous.call("GET", "/v1/health").status_code
    statuses["openapi"] = anonymous.call("GET", "/openapi.json").status_code
    statuses["schema"] = anonymous.call("GET", "/v1/schemas/model-config").status_code
    statuses["unauthorized"] = anonymous.call("GET", "/v1/models").status_code
    alice, _ = new_account(admin, "alice")
    statuses["me"] = alice.call("GET", "/v1/accounts/me").status_code
    statuses["upload"] = alice.call("POST", "/v1/models/iris/versions", {"size_bytes": 1000}).status_code
    statuses["models"] = alice.call("GET", "/v1/models").status_code
    statuses["missing"] = alice.call("POST", "/v1/models/nope/invoke", {"instances": [[1]]}).status_code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"statuses": statuses, "asked": asked, "loaded": loaded}))
"""


def test_the_api_runs_without_the_model_libraries() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(BLOCKED)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [] and report["asked"] == [], report
    assert report["statuses"] == {
        "health": 200,
        "openapi": 200,
        "schema": 200,
        "unauthorized": 401,
        "me": 200,
        "upload": 201,
        "models": 200,
        "missing": 404,
    }
