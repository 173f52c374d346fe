"""A local Python base image made from Debian, for machines no registry can give the AWS base to.

``debootstrap --variant=minbase`` of the Debian release whose ``python3`` is the wanted version (bookworm:
3.11, trixie: 3.13), from the mirror apt is configured with, trimmed of docs, man pages, locales and caches,
then ``docker import``-ed with a PATH. Idempotent: an existing tag is kept unless ``force``; the downloaded
packages are cached in ``<cache>/debootstrap/<release>``. The labels record the python and glibc versions,
which the wheelhouse needs (wheels must match the image's python and may not need a newer glibc).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib.core.ports import Progress
from chalicelib.docker import BaseImageError, ImageError, _first_line, cache_root, docker_client

BASE_REPOSITORY = "modelport/base"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class DebianRelease:
    codename: str
    python: str
    glibc: str


RELEASES: dict[str, DebianRelease] = {
    "3.11": DebianRelease("bookworm", "3.11", "2.36"),
    "3.13": DebianRelease("trixie", "3.13", "2.41"),
}

# What the trimmed image does not need at run time (paths relative to the root file system).
TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/i18n",
    "usr/share/lintian",
    "usr/share/linda",
    "usr/share/bug",
    "usr/share/common-licenses",
    "var/cache/apt",
    "var/cache/debconf",
    "var/cache/ldconfig",
    "var/lib/apt/lists",
    "var/log",
)

# Removed outright (globs relative to the root): what only installs Debian packages or runs Perl (apt,
# dpkg and its database, debconf's perl; ~18 MB), since a built image never installs packages, and
# Python's own test suite, pydoc's topic index and IDLE, which no model imports.
REMOVE = (
    "usr/bin/perl*",
    "usr/lib/*/perl-base",
    "usr/lib/*/perl",
    "usr/share/perl*",
    "usr/bin/apt*",
    "usr/lib/apt",
    "usr/lib/*/libapt-*",
    "etc/apt",
    "var/lib/apt",
    "usr/bin/dpkg*",
    "usr/share/dpkg",
    "var/lib/dpkg",
    "usr/lib/python3*/test",
    "usr/lib/python3*/pydoc_data",
    "usr/lib/python3*/idlelib",
    "usr/lib/python3*/turtledemo",
)

# Debian architecture names of the engines' (and Lambda's) architectures.
DEBIAN_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def debian_release(python: str) -> DebianRelease:
    release = RELEASES.get(python)
    if release is None:
        raise BaseImageError(
            f"no Debian release ships python {python}, so no local base image can be made for it",
            hint="use python 3.11 (bookworm) or 3.13 (trixie), or an AWS base with --base-image",
        )
    return release


BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "libgomp1")
"""libgomp1: the OpenMP runtime LightGBM's (and XGBoost's) wheels link against; the AWS base has it."""
BASE_REVISION = 3
"""Part of the tag: a machine holding a base made by an older recipe makes the new one."""


def base_image_tag(python: str) -> str:
    return f"{BASE_REPOSITORY}:py{python}-{debian_release(python).codename}-r{BASE_REVISION}"


def apt_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive apt uses (one-line ``.list`` or deb822 ``.sources``), else deb.debian.org."""
    candidates: list[str] = []
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            candidates += _deb822_uris(text)
        else:
            for line in text.splitlines():
                fields = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
                if len(fields) >= 3 and fields[0] == "deb":
                    candidates.append(fields[1])
    for uri in candidates:
        if re.match(r"^https?://", uri) and _is_debian_archive(uri):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _deb822_uris(text: str) -> list[str]:
    uris: list[str] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
            continue
        uris += fields.get("uris", "").split()
    return uris


def _is_debian_archive(uri: str) -> bool:
    # The main archive (any mirror or snapshot of it), not debian-security or a third-party repository.
    return re.search(r"/debian(/|$)", uri) is not None and "security" not in uri


def image_exists(client: Any, tag: str) -> bool:
    import docker  # type: ignore[import-untyped]

    try:
        client.api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def build_base_image(
    python: str = "3.11",
    *,
    progress: Progress,
    client: Any = None,
    force: bool = False,
    mirror: str | None = None,
) -> str:
    """Make ``modelport/base:py<python>-<release>`` unless it exists; returns the tag."""
    release = debian_release(python)
    tag = base_image_tag(python)
    client = client if client is not None else docker_client()
    if not force and image_exists(client, tag):
        progress(f"base image {tag} exists (--force rebuilds it)")
        return tag
    if os.geteuid() != 0:
        raise BaseImageError(
            "building the base image needs root (debootstrap installs packages into a chroot)",
            hint="run `sudo modelport base-image build`, or pass an existing base with --base-image",
        )
    if shutil.which("debootstrap") is None:
        raise BaseImageError(
            "debootstrap is not installed", hint="apt-get install -y debootstrap (Debian/Ubuntu)"
        )
    arch = DEBIAN_ARCH.get(platform.machine())
    if arch is None:
        raise BaseImageError(f"no Debian architecture for this machine ({platform.machine()})")
    mirror = mirror or apt_mirror()
    debs = cache_root() / "debootstrap" / f"{release.codename}-{arch}"
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelport-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"debootstrap {release.codename} ({arch}) from {mirror}")
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(BASE_PACKAGES),
                f"--arch={arch}",
                f"--cache-dir={debs}",
                release.codename,
                str(rootfs),
                mirror,
            ],
            progress,
            what=f"debootstrap of {release.codename}",
        )
        version = _chroot_python_version(rootfs)
        if version.rsplit(".", 1)[0] != python:
            raise BaseImageError(f"{release.codename}'s python3 is {version}, not {python}")
        _trim(rootfs)
        tarball = Path(tmp) / "rootfs.tar"
        progress(f"packing the root file system ({_du_mb(rootfs):.0f} MB)")
        _run(
            [
                "tar",
                "--numeric-owner",
                "--xattrs",
                "-C",
                str(rootfs),
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-cf",
                str(tarball),
                ".",
            ],
            progress,
            what="packing the root file system",
        )
        repository, _, name = tag.partition(":")
        changes = [
            f"ENV PATH={PATH}",
            "ENV LANG=C.UTF-8",
            'CMD ["python3"]',
            f"LABEL dev.modelport.base.release={release.codename}",
            f"LABEL dev.modelport.base.python={version}",
            f"LABEL dev.modelport.base.glibc={release.glibc}",
        ]
        progress(f"docker import -> {tag}")
        try:
            client.api.import_image_from_file(str(tarball), repository=repository, tag=name, changes=changes)
        except Exception as exc:  # docker.errors.APIError and transport errors: report, don't trace
            raise ImageError(f"docker import of {tag} failed: {_first_line(exc)}") from None
    size = client.api.inspect_image(tag)["Size"] / 1e6
    progress(f"built {tag} (python {version}, {size:.0f} MB)")
    return tag


_QUIET = ("I: Retrieving", "I: Validating", "I: Extracting", "I: Unpacking", "I: Configuring")


def _run(cmd: list[str], progress: Progress, *, what: str) -> None:
    tail: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-9:], line]
            if line.startswith(_QUIET):
                continue  # one line per package: too many to show
            if line:
                progress(line)
    if proc.returncode != 0:
        last = " | ".join(t for t in tail if t)[-600:]
        raise BaseImageError(f"{what} failed (exit {proc.returncode}): {last}")


def _chroot_python_version(rootfs: Path) -> str:
    result = subprocess.run(
        ["chroot", str(rootfs), "python3", "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BaseImageError(f"python3 does not run in the new root: {_first_line(result.stderr)}")
    return result.stdout.strip()


def _trim(rootfs: Path) -> None:
    for rel in TRIM:
        target = rootfs / rel
        if target.is_dir() and not target.is_symlink():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    for gconv in rootfs.glob("usr/lib/*/gconv"):  # iconv modules: python has its own codecs
        shutil.rmtree(gconv)
    for pattern in REMOVE:
        for path in sorted(rootfs.glob(pattern), reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _du_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            full = Path(root) / name
            if not full.is_symlink():
                total += full.stat().st_size
    return total / 1e6
