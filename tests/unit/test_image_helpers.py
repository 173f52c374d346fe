"""The image builder's pure parts: platform tags, the wheel cache, pip errors, apt mirrors, registry config.

No network and no engine: pip is replaced by a script that writes wheels (or fails the way pip fails).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from chalicelib.core.ports import Progress
from chalicelib.docker import BaseImageError, WheelResolutionError, cache_root
from chalicelib.docker.baseimage import apt_mirror, base_image_tag, debian_release
from chalicelib.docker.registry import registry_config
from chalicelib.docker.wheelhouse import (
    WheelFile,
    platform_tags,
    resolve_wheels,
    resolved_fingerprint,
    wheelhouse_key,
)


def test_platform_tags_stop_at_the_glibc_of_the_base() -> None:
    bookworm = platform_tags("x86_64", (2, 36))
    assert bookworm[0] == "manylinux_2_36_x86_64"
    assert {
        "manylinux_2_28_x86_64",
        "manylinux2014_x86_64",
        "manylinux_2_17_x86_64",
        "manylinux1_x86_64",
    } <= set(bookworm)
    lambda311 = platform_tags("x86_64", (2, 26))
    assert lambda311[0] == "manylinux_2_26_x86_64"
    assert "manylinux_2_28_x86_64" not in lambda311 and "manylinux_2_27_x86_64" not in lambda311
    arm = platform_tags("arm64", (2, 34))
    assert arm[0] == "manylinux_2_34_aarch64" and arm[-1] == "manylinux2014_aarch64"
    assert all(t.endswith("_aarch64") for t in arm)


def test_the_wheelhouse_key_covers_packages_python_architecture_and_glibc() -> None:
    base = {"python": "3.11", "architecture": "x86_64", "glibc": (2, 36)}
    key = wheelhouse_key(("a==1", "b"), **base)  # type: ignore[arg-type]
    assert key == wheelhouse_key(("b", "a==1"), **base)  # type: ignore[arg-type]
    for change in ({"python": "3.13"}, {"architecture": "arm64"}, {"glibc": (2, 26)}):
        assert wheelhouse_key(("a==1", "b"), **{**base, **change}) != key  # type: ignore[arg-type]


def test_the_resolved_fingerprint_covers_the_exact_wheels_and_the_base() -> None:
    wheels = (WheelFile("a-1-py3-none-any.whl", "1" * 64), WheelFile("b-2-py3-none-any.whl", "2" * 64))
    fp = resolved_fingerprint("sha256:req", wheels, base_image="sha256:base")
    assert fp.startswith("sha256:") and len(fp) == 71
    assert fp == resolved_fingerprint("sha256:req", wheels[::-1], base_image="sha256:base")
    assert fp != resolved_fingerprint("sha256:req", (wheels[0],), base_image="sha256:base")
    assert fp != resolved_fingerprint("sha256:req", wheels, base_image="sha256:other")
    other = (wheels[0], WheelFile(wheels[1].name, "3" * 64))
    assert fp != resolved_fingerprint("sha256:req", other, base_image="sha256:base")


FAKE_PIP = r"""import os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_PIP_LOG"], "a") as log:
    log.write(" ".join(args) + "\n")
dest = args[args.index("--dest") + 1]
packages = args[args.index("--") + 1:]
if "missing==9" in packages:
    print("ERROR: Could not find a version that satisfies the requirement missing==9 "
          "(from versions: 1.0, 2.0)")
    print("ERROR: No matching distribution found for missing==9")
    sys.exit(1)
numpy = "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
if args[args.index("--platform") + 1] == "manylinux_2_26_x86_64":  # Amazon Linux 2: no numpy 2.4 wheel
    if "numpy==2.4.6" in packages:
        print("ERROR: Could not find a version that satisfies the requirement numpy==2.4.6 "
              "(from versions: 2.2.5, 2.2.6)")
        print("ERROR: No matching distribution found for numpy==2.4.6")
        sys.exit(1)
    numpy = "numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
print("Collecting numpy==2.4.6")
for name in (numpy, "tzdata-2026.6-py2.py3-none-any.whl"):
    with open(os.path.join(dest, name), "wb") as fh:
        fh.write(name.encode())
"""


@pytest.fixture
def fake_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``sys.executable -m pip`` replaced by a script; returns the log of its calls."""
    script = tmp_path / "python"
    script.write_text(FAKE_PIP)
    wrapper = tmp_path / "fake-python"
    wrapper.write_text(f'#!/bin/sh\nshift 2\nexec {sys.executable} {script} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))
    log = tmp_path / "pip.log"
    monkeypatch.setenv("FAKE_PIP_LOG", str(log))
    return log


def test_wheels_are_downloaded_once_then_reused_from_the_cache(fake_pip: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    progress: Progress = lines.append
    kwargs = {
        "python": "3.11",
        "architecture": "x86_64",
        "cache_dir": tmp_path / "cache",
        "progress": progress,
    }
    first = resolve_wheels(("numpy==2.4.6",), **kwargs)  # type: ignore[arg-type]
    assert not first.reused
    assert [w.name.split("-")[0] for w in first.wheels] == ["numpy", "tzdata"]
    assert first.requirements == ("numpy==2.4.6", "tzdata==2026.6")
    assert (first.dir / "requirements.txt").read_text() == "numpy==2.4.6\ntzdata==2026.6\n"
    assert first.dir.parent == tmp_path / "cache" / "wheels"
    call = fake_pip.read_text().splitlines()
    assert len(call) == 1
    args = call[0].split()
    assert "--only-binary=:all:" in args and args[args.index("--python-version") + 1] == "3.11"
    assert args[args.index("--abi") + 1] == "cp311" and "manylinux_2_36_x86_64" in args
    again = resolve_wheels(("numpy==2.4.6",), **kwargs)  # type: ignore[arg-type]
    assert again.reused and again.wheels == first.wheels and again.dir == first.dir
    assert len(fake_pip.read_text().splitlines()) == 1, "no second pip call"
    assert any("cached" in line for line in lines)


def test_a_damaged_cache_entry_is_made_again(fake_pip: Path, tmp_path: Path) -> None:
    kwargs = {"python": "3.11", "architecture": "x86_64", "cache_dir": tmp_path, "progress": lambda _: None}
    house = resolve_wheels(("numpy==2.4.6",), **kwargs)  # type: ignore[arg-type]
    (house.dir / house.wheels[0].name).unlink()
    again = resolve_wheels(("numpy==2.4.6",), **kwargs)  # type: ignore[arg-type]
    assert not again.reused and (again.dir / again.wheels[0].name).is_file()


def test_no_wheel_for_the_platform_is_one_line_naming_package_and_platform(
    fake_pip: Path, tmp_path: Path
) -> None:
    with pytest.raises(WheelResolutionError) as caught:
        resolve_wheels(
            ("missing==9",),
            python="3.11",
            architecture="x86_64",
            cache_dir=tmp_path,
            progress=lambda _: None,
            glibc=(2, 26),
        )
    message = str(caught.value)
    assert "\n" not in message
    assert "no wheel of missing==9 for CPython 3.11 manylinux_2_26_x86_64 (glibc <= 2.26)" in message
    assert "newest version with such a wheel is 2.0" in message
    assert list((tmp_path / "wheels").iterdir()) == [], "no half-made wheelhouse is left"


def test_the_cache_root_follows_modelport_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELPORT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("MODELPORT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x" / "modelport"


# --------------------------------------------------------------------------- base image


def test_debian_releases_by_python() -> None:
    assert base_image_tag("3.11") == "modelport/base:py3.11-bookworm-r3"
    assert base_image_tag("3.13") == "modelport/base:py3.13-trixie-r3"
    assert debian_release("3.11").glibc == "2.36"
    with pytest.raises(BaseImageError, match=r"no Debian release ships python 3\.12") as caught:
        debian_release("3.12")
    assert "3.11" in str(caught.value) and "3.13" in str(caught.value)


def test_the_base_keeps_python_and_its_libraries_but_not_the_package_tools(tmp_path: Path) -> None:
    from chalicelib.docker.baseimage import _trim

    keep = [
        "usr/bin/python3.11",
        "usr/lib/python3.11/json/__init__.py",
        "usr/lib/x86_64-linux-gnu/libssl.so.3",
        "etc/ssl/certs/ca-certificates.crt",
        "usr/share/zoneinfo/UTC",
        "usr/share/python-wheels/pip.whl",
    ]
    gone = ["usr/bin/perl", "usr/bin/perl5.36.0", "usr/lib/x86_64-linux-gnu/perl-base/strict.pm",
            "usr/bin/apt-get", "usr/lib/apt/methods/http", "usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0",
            "var/lib/dpkg/status", "usr/bin/dpkg", "usr/lib/python3.11/test/regrtest.py",
            "usr/lib/python3.11/pydoc_data/topics.py", "usr/share/doc/python3/README"]  # fmt: skip
    for rel in keep + gone:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    _trim(tmp_path)
    assert [rel for rel in keep if not (tmp_path / rel).exists()] == []
    assert [rel for rel in gone if (tmp_path / rel).exists()] == []


def test_the_mirror_comes_from_apts_sources(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    assert apt_mirror(apt) == "http://deb.debian.org/debian"
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    (apt / "sources.list.d" / "other.sources.disabled").write_text("Types: deb\nURIs: http://nope/debian\n")
    assert apt_mirror(apt) == "http://mirror.example/debian"
    (apt / "sources.list").write_text(
        "# comment\ndeb [signed-by=/k.gpg arch=amd64] http://ftp.de.debian.org/debian bookworm main\n"
    )
    assert apt_mirror(apt) == "http://ftp.de.debian.org/debian"


def test_the_base_image_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.docker import baseimage

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(baseimage, "image_exists", lambda client, tag: False)
    with pytest.raises(BaseImageError, match="needs root"):
        baseimage.build_base_image("3.11", progress=lambda _: None, client=object())


# --------------------------------------------------------------------------- registry


def test_the_registry_config_is_loopback_filesystem_no_auth(tmp_path: Path) -> None:
    config = registry_config(5001, tmp_path)
    assert config["http"]["addr"] == "127.0.0.1:5001"  # type: ignore[index]
    assert config["storage"]["filesystem"] == {"rootdirectory": str(tmp_path)}  # type: ignore[index]
    assert config["storage"]["delete"] == {"enabled": True}  # type: ignore[index]
    assert "auth" not in config
    json.dumps(config)  # written as JSON, which YAML reads


def test_the_resolved_fingerprint_covers_how_the_image_is_made() -> None:
    wheels = (WheelFile("a-1-py3-none-any.whl", "1" * 64),)
    assert resolved_fingerprint("sha256:r", wheels, recipe="FROM x\nRUN a") != resolved_fingerprint(
        "sha256:r", wheels, recipe="FROM x\nRUN b"
    )


def test_onnxruntimes_c_api_library_and_tools_are_trimmed_unless_an_add_on_may_load_them() -> None:
    from chalicelib.docker.dockerfile import (
        TRIM_ONNXRUNTIME_CAPI,
        TRIM_ONNXRUNTIME_TOOLS,
        TRIM_STUBS,
        TRIM_TESTS,
        site_trims,
    )

    always = [TRIM_TESTS, TRIM_STUBS]
    assert site_trims({"numpy", "onnxruntime"}) == [*always, TRIM_ONNXRUNTIME_CAPI, *TRIM_ONNXRUNTIME_TOOLS]
    assert site_trims({"numpy", "onnxruntime", "onnxruntime-extensions"}) == always
    assert site_trims({"numpy", "scikit-learn"}) == always


def test_the_aws_base_images_glibc_is_known_without_running_them(tmp_path: Path) -> None:
    from chalicelib.docker.builder import DockerImageBuilder

    builder = DockerImageBuilder(client=object(), cache_dir=tmp_path)
    info = {"Id": "sha256:" + "0" * 64, "Config": {"Labels": None}}
    assert builder._base_runtime("public.ecr.aws/lambda/python:3.11", info) == ("3.11", (2, 26))
    assert builder._base_runtime("public.ecr.aws/lambda/python:3.13", info) == ("3.13", (2, 34))
    labelled = {
        "Id": "x",
        "Config": {"Labels": {"dev.modelport.base.python": "3.11.2", "dev.modelport.base.glibc": "2.36"}},
    }
    assert builder._base_runtime("modelport/base:py3.11-bookworm", labelled) == ("3.11.2", (2, 36))


def test_a_default_pin_without_a_wheel_takes_the_newest_version_that_has_one(
    fake_pip: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    house = resolve_wheels(
        ("numpy==2.4.6",), python="3.11", architecture="x86_64", cache_dir=tmp_path,
        progress=lines.append, glibc=(2, 26), relaxable={"numpy==2.4.6"},
    )  # fmt: skip
    assert house.requirements == ("numpy==2.2.6", "tzdata==2026.6")
    said = [line for line in lines if "taking the newest" in line]
    assert said == [
        "no wheel of numpy==2.4.6 for CPython 3.11 manylinux_2_26_x86_64 (glibc <= 2.26): "
        "taking the newest version that has one (numpy<=2.4.6)"
    ]
    index = json.loads((house.dir / "wheelhouse.json").read_text())
    assert index["relaxed"] == {"numpy==2.4.6": "numpy<=2.4.6"}
    calls = fake_pip.read_text().splitlines()
    assert len(calls) == 2 and calls[1].endswith("-- numpy<=2.4.6")


def test_a_users_pin_without_a_wheel_is_an_error_naming_package_platform_and_the_newest_that_fits(
    fake_pip: Path, tmp_path: Path
) -> None:
    with pytest.raises(WheelResolutionError) as caught:
        resolve_wheels(
            ("numpy==2.4.6",), python="3.11", architecture="x86_64", cache_dir=tmp_path,
            progress=lambda _: None, glibc=(2, 26), relaxable={"numpy==2.4.7"},
        )  # fmt: skip
    assert str(caught.value) == (
        "no wheel of numpy==2.4.6 for CPython 3.11 manylinux_2_26_x86_64 (glibc <= 2.26) "
        "(the newest version with such a wheel is 2.2.6)"
    )
    assert len(fake_pip.read_text().splitlines()) == 1
