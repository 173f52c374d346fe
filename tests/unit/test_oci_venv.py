"""The daemonless builder's venv from wheels: where each part of a wheel goes, and what a hostile wheel gets.

A wheel comes from the package index or the shared wheel cache, and an environment's packages are a
tenant's choice: unpacking is bounded (files, bytes as written) and stays inside the environment.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from chalicelib.docker import WheelResolutionError
from chalicelib.oci import venv
from chalicelib.oci.venv import install_wheels

SITE = "opt/env/lib/python3.11/site-packages"


def wheel(path: Path, members: dict[str, bytes], *, mode: int = 0o644) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return path


def install(tmp_path: Path, *wheels: Path) -> Path:
    root = tmp_path / "root"
    install_wheels(list(wheels), root, python="3.11", python_home="/usr/bin", version="3.11.2")
    return root


def test_a_wheel_is_laid_out_as_pip_lays_it_out(tmp_path: Path) -> None:
    made = wheel(
        tmp_path / "demo-1.0-py3-none-any.whl",
        {
            "demo/__init__.py": b"VALUE = 1\n",
            "demo/tests/test_x.py": b"",
            "demo-1.0.data/scripts/demo-tool": b"#!/bin/sh\n",
            "demo-1.0.data/data/share/demo.txt": b"shared",
            "demo-1.0.data/headers/demo.h": b"",
        },
    )
    root = install(tmp_path, made)
    env = root / "opt/env"
    assert (root / SITE / "demo/__init__.py").read_bytes() == b"VALUE = 1\n"
    assert not (root / SITE / "demo/tests").exists()
    assert (env / "bin/demo-tool").stat().st_mode & 0o111
    assert (env / "share/demo.txt").read_bytes() == b"shared"
    assert not list(env.rglob("demo.h"))
    assert (env / "bin/python").readlink() == Path("/usr/bin/python3.11")
    assert "home = /usr/bin" in (env / "pyvenv.cfg").read_text()


@pytest.mark.parametrize("name", ["../escape.py", "/abs/escape.py", "demo/../../escape.py", "demo\\..\\x.py"])
def test_a_path_outside_the_environment_is_refused(tmp_path: Path, name: str) -> None:
    made = wheel(tmp_path / "evil-1.0-py3-none-any.whl", {name: b"x"})
    with pytest.raises(WheelResolutionError, match="outside the environment"):
        install(tmp_path, made)
    assert not list(tmp_path.rglob("escape.py"))


def test_an_environment_that_unpacks_past_its_budget_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(venv, "MAX_ENVIRONMENT_BYTES", 1024 * 1024)
    first = wheel(tmp_path / "a-1.0-py3-none-any.whl", {"a/blob": b"\0" * 700_000})  # compresses to ~1 KB
    second = wheel(tmp_path / "b-1.0-py3-none-any.whl", {"b/blob": b"\0" * 700_000})
    assert first.stat().st_size < 10_000
    install(tmp_path, first)  # one fits
    with pytest.raises(WheelResolutionError, match="unpacks to more than"):
        install(tmp_path / "again", first, second)  # the two together do not


def test_too_many_files_are_refused_before_any_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(venv, "MAX_WHEEL_MEMBERS", 3)
    made = wheel(tmp_path / "many-1.0-py3-none-any.whl", {f"many/{i}.py": b"" for i in range(4)})
    with pytest.raises(WheelResolutionError, match="more than 3 files"):
        install(tmp_path, made)
    assert not (tmp_path / "root" / SITE / "many").exists()


def test_a_file_that_is_not_a_zip_is_not_a_wheel(tmp_path: Path) -> None:
    fake = tmp_path / "fake-1.0-py3-none-any.whl"
    fake.write_bytes(b"not a zip")
    with pytest.raises(WheelResolutionError, match="is not a wheel"):
        install(tmp_path, fake)
