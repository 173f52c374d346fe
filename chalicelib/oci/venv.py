"""A virtual environment made from wheels alone, with no code run: what ``pip install --no-index`` of the
wheelhouse into ``/opt/env`` gives, written as files.

A wheel is a zip: its files go to ``site-packages``, its ``<name>.data/{purelib,platlib}`` there too,
``data`` to the prefix, ``scripts`` to ``bin`` (headers are dropped). ``pyvenv.cfg`` and ``bin/python``
(a link to the base's interpreter) make it a venv. Console-script launchers are not written: the runtime
starts with ``python -m awslambdaric``. What no model imports (test suites, stubs, build and authoring
tools) is left out as the docker recipe does (``site_trims``). Where this interpreter is the target's
version, every module is compiled to an unchecked-hash ``.pyc`` (valid whatever the file times; the root
is read-only at run time); otherwise modules compile at import into nowhere (the container's root is
read-only): slower first imports.
"""

from __future__ import annotations

import compileall
import py_compile
import re
import sys
import zipfile
from pathlib import Path, PurePosixPath

from chalicelib.docker import WheelResolutionError
from chalicelib.docker.dockerfile import site_trims

VENV = "opt/env"
MAX_WHEEL_MEMBERS = 200_000
MAX_ENVIRONMENT_BYTES = 6 * 1024**3
"""What all wheels of an environment may unpack to: under Lambda's 10 GB image limit and the worker's 10 GB
/tmp, which also holds the wheels and the layer. Counted as written, not as the zip declares (a bomb lies)."""
_DATA = re.compile(r"^[^/]+\.data/(purelib|platlib|scripts|data|headers)/(.+)$")


def install_wheels(wheels: list[Path], root: Path, *, python: str, python_home: str, version: str) -> Path:
    """Unpack ``wheels`` into ``root/opt/env`` for CPython ``python`` (``X.Y``); returns the venv dir."""
    venv = root / VENV
    site = venv / "lib" / f"python{python}" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    (venv / "bin").mkdir(exist_ok=True)
    installed: set[str] = set()
    budget = MAX_ENVIRONMENT_BYTES
    for wheel in sorted(wheels, key=lambda p: p.name):
        installed.add(wheel.name.split("-", 1)[0].lower().replace("_", "-"))
        budget -= _unpack(wheel, venv, site, budget)
    _trim(site, site_trims(installed))
    (venv / "pyvenv.cfg").write_text(
        f"home = {python_home}\ninclude-system-site-packages = false\nversion = {version}\n", encoding="utf-8"
    )
    for name in ("python", "python3", f"python{python}"):
        link = venv / "bin" / name
        link.unlink(missing_ok=True)
        link.symlink_to(f"{python_home}/python{python}")
    if python == f"{sys.version_info[0]}.{sys.version_info[1]}":
        compileall.compile_dir(
            site,
            quiet=2,
            ddir=f"/{VENV}/lib/python{python}/site-packages",
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            workers=1,
        )
    return venv


def _unpack(wheel: Path, venv: Path, site: Path, budget: int) -> int:
    """Unpack one wheel; the bytes written, never more than ``budget``."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise WheelResolutionError(f"{wheel.name} is not a wheel: {exc}") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_WHEEL_MEMBERS:
            raise WheelResolutionError(f"{wheel.name} has more than {MAX_WHEEL_MEMBERS} files")
        too_big = WheelResolutionError(
            f"{wheel.name} unpacks to more than the environment's {MAX_ENVIRONMENT_BYTES // 1024**3} GB"
        )
        if sum(m.file_size for m in members) > budget:
            raise too_big
        written = 0
        for member in members:
            if member.is_dir():
                continue
            name = member.filename
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or "\\" in name:
                raise WheelResolutionError(f"{wheel.name} holds a path outside the environment: {name[:80]}")
            data = _DATA.match(name)
            if data is None:
                target = site / name
            elif data.group(1) in ("purelib", "platlib"):
                target = site / data.group(2)
            elif data.group(1) == "scripts":
                target = venv / "bin" / data.group(2)
            elif data.group(1) == "data":
                target = venv / data.group(2)
            else:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, target.open("wb") as out:
                while chunk := src.read(1024 * 1024):
                    written += len(chunk)
                    if written > budget:
                        raise too_big
                    out.write(chunk)
            if (member.external_attr >> 16) & 0o111 or (data is not None and data.group(1) == "scripts"):
                target.chmod(0o755)
    return written


def _trim(site: Path, globs: list[str]) -> None:
    """What the docker recipe trims too (``docker.dockerfile.site_trims``), the same way."""
    import shutil

    for pattern in globs:
        for path in sorted(site.glob(pattern), reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
