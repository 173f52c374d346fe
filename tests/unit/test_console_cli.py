"""``modelport console``: the console's URL for the running local stack, its key in the fragment; a browser
opened unless ``--no-browser``; without a stack, the one-line error the other client commands give."""

from __future__ import annotations

import os
import webbrowser
from pathlib import Path

import pytest
from click.testing import CliRunner

from chalicelib.cli import cli
from chalicelib.client import console_url
from chalicelib.local.stack import StackState

KEY = "mp_abc123_secret"


@pytest.fixture
def stack_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("MODELPORT_API_URL", "MODELPORT_API_KEY", "MODELPORT_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODELPORT_HOME", str(tmp_path))
    return tmp_path


def _running(home: Path) -> None:
    StackState(
        pid=os.getpid(), api_url="http://127.0.0.1:8123", endpoint_url="http://127.0.0.1:4566",
        admin_key=KEY, launcher="process", launcher_note="", registry=None, started_at="", log_file="",
        ready=True,
    ).write(home)  # fmt: skip


def test_it_prints_the_url_with_the_key_in_the_fragment(stack_home: Path) -> None:
    _running(stack_home)
    done = CliRunner().invoke(cli, ["console", "--no-browser"])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == f"http://127.0.0.1:8123/console/#key={KEY}"
    done = CliRunner().invoke(cli, ["console", "--no-browser", "--model", "iris-onnx"])
    assert done.output.strip() == f"http://127.0.0.1:8123/console/#key={KEY}&model=iris-onnx"


def test_it_opens_a_browser_unless_told_not_to(stack_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _running(stack_home)
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    assert CliRunner().invoke(cli, ["console"]).exit_code == 0
    assert opened == [f"http://127.0.0.1:8123/console/#key={KEY}"]
    assert CliRunner().invoke(cli, ["console", "--no-browser"]).exit_code == 0
    assert len(opened) == 1


def test_the_environment_names_another_api(stack_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPORT_API_URL", "https://api.example.test/dev/")
    monkeypatch.setenv("MODELPORT_API_KEY", "mp_other")
    done = CliRunner().invoke(cli, ["console", "--no-browser"])
    assert done.output.strip() == "https://api.example.test/dev/console/#key=mp_other"


def test_without_a_stack_it_says_how_to_get_one(stack_home: Path) -> None:
    done = CliRunner().invoke(cli, ["console", "--no-browser"])
    assert done.exit_code == 2
    assert "error: no Modelport API to talk to" in done.output and "modelport up" in done.output


def test_fragment_values_are_encoded() -> None:
    assert (
        console_url("http://h:1", "mp_a+b&c", model="x y") == "http://h:1/console/#key=mp_a%2Bb%26c&model=x+y"
    )
