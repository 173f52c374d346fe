"""Resolve an environment's packages to wheels on the host, for an offline install inside the image build.

``pip download --only-binary=:all:`` for the image's python (``--python-version``, ``--implementation cp``,
``--abi cpXY``) and every manylinux platform tag its glibc can load (a wheel tagged ``manylinux_2_28``
needs glibc 2.28 or newer at run time). The wheels are cached per (packages, python, architecture, glibc)
in ``<cache>/wheels/<key>/`` and reused without the network; the image build installs them with
``pip install --no-index``. This is what Chalice does when it packages for Lambda, and it keeps the
host's package-index access (proxies, certificates) out of the images.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from chalicelib.core.files import sha256_file
from chalicelib.core.ports import Progress, WheelCache
from chalicelib.docker import WheelResolutionError, cache_root

# manylinux2014 is manylinux_2_17; older aliases name older glibcs. pip does not expand the new-style tags
# to the older ones by itself, so every tag the glibc can load is listed.
_LEGACY_ALIASES = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
_MIN_GLIBC_MINOR = {"x86_64": 5, "aarch64": 17}
WHEEL_ARCH = {"x86_64": "x86_64", "arm64": "aarch64"}
REQUIREMENTS = "requirements.txt"
INDEX = "wheelhouse.json"
_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


@dataclass(frozen=True)
class WheelFile:
    name: str
    sha256: str


@dataclass(frozen=True)
class Wheelhouse:
    """A directory of wheels plus ``requirements.txt`` pinning every one of them (``name==version``)."""

    dir: Path
    wheels: tuple[WheelFile, ...]
    requirements: tuple[str, ...]
    reused: bool = False

    @property
    def size_bytes(self) -> int:
        return sum((self.dir / w.name).stat().st_size for w in self.wheels)


def parse_glibc(version: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)\.(\d+)", version.strip())
    if match is None:
        raise ValueError(f"not a glibc version: {version!r}")
    return int(match.group(1)), int(match.group(2))


def platform_tags(architecture: str, glibc: tuple[int, int]) -> tuple[str, ...]:
    """Every manylinux tag a system with this glibc can load, newest first."""
    arch = WHEEL_ARCH.get(architecture, architecture)
    major, ceiling = glibc
    if major != 2:
        raise ValueError(f"unsupported glibc {major}.{ceiling}")
    tags: list[str] = []
    for minor in range(ceiling, _MIN_GLIBC_MINOR.get(arch, 17) - 1, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        alias = _LEGACY_ALIASES.get((2, minor))
        if alias and (arch == "x86_64" or alias == "manylinux2014"):
            tags.append(f"{alias}_{arch}")
    return tuple(tags)


def wheelhouse_key(
    packages: tuple[str, ...], *, python: str, architecture: str, glibc: tuple[int, int]
) -> str:
    canonical = json.dumps(
        {
            "packages": sorted(packages),
            "python": python,
            "architecture": architecture,
            "glibc": f"{glibc[0]}.{glibc[1]}",
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def resolve_wheels(
    packages: tuple[str, ...],
    *,
    python: str,
    architecture: str,
    progress: Progress,
    cache_dir: Path | None = None,
    glibc: tuple[int, int] = (2, 36),
    wheel_cache: WheelCache | None = None,
    relaxable: Collection[str] = (),
) -> Wheelhouse:
    """The wheels of ``packages`` and their dependencies for the image: from the disk cache, else the shared
    ``wheel_cache``, else the package index (and then kept in both).

    A ``name==version`` of ``relaxable`` (Modelport's default pins, never a user's) with no wheel for the
    platform is taken at the newest version that has one (``name<=version``), and said so; any other
    requirement without a wheel is a ``WheelResolutionError`` naming it and the platform."""
    root = (cache_dir if cache_dir is not None else cache_root()) / "wheels"
    key = wheelhouse_key(packages, python=python, architecture=architecture, glibc=glibc)
    target = root / key
    cached = load_wheelhouse(target)
    if cached is not None:
        progress(f"wheelhouse {key[:12]}: {len(cached.wheels)} wheels (cached)")
        return cached
    if target.exists():  # an incomplete or damaged wheelhouse: make it again
        shutil.rmtree(target)
    root.mkdir(parents=True, exist_ok=True)
    if wheel_cache is not None:
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            shared = load_wheelhouse(staging) if wheel_cache.fetch(key, staging) else None
            if shared is not None:
                (staging / REQUIREMENTS).write_text("".join(f"{pin}\n" for pin in shared.requirements))
                house = _publish(staging, target)
                progress(f"wheelhouse {key[:12]}: {len(house.wheels)} wheels (from the shared wheel cache)")
                return house
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        wanted = list(packages)
        relaxed: dict[str, str] = {}
        while True:
            try:
                _download(
                    tuple(wanted), staging, python=python, architecture=architecture, glibc=glibc,
                    progress=progress,
                )  # fmt: skip
                break
            except WheelResolutionError as exc:
                loose = _relaxed(exc.requirement, relaxable, wanted)
                if loose is None:
                    raise
                wanted[wanted.index(str(exc.requirement))] = relaxed[str(exc.requirement)] = loose
                progress(f"{exc.message}: taking the newest version that has one ({loose})")
                for leftover in staging.iterdir():  # a fresh resolution: nothing of the failed one stays
                    leftover.unlink()
        _index(staging, packages, relaxed)
        house = _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"wheelhouse {key[:12]}: {len(house.wheels)} wheels, {house.size_bytes / 1e6:.0f} MB")
    if wheel_cache is not None:
        try:
            wheel_cache.store(key, target)
        except Exception as exc:  # a cache that cannot keep it costs the next build time, not this one
            progress(f"wheelhouse {key[:12]}: not kept in the shared cache ({type(exc).__name__}: {exc})")
    return house


def _relaxed(requirement: str | None, relaxable: Collection[str], wanted: list[str]) -> str | None:
    """``name<=version`` for a relaxable ``name==version`` still asked for as such, else None."""
    if requirement is None or requirement not in relaxable or requirement not in wanted:
        return None
    name, sep, version = requirement.partition("==")
    return f"{name}<={version}" if sep and version and "," not in version else None


def _publish(staging: Path, target: Path) -> Wheelhouse:
    """Move the complete wheelhouse in ``staging`` to ``target`` (or take the one another process put
    there first)."""
    try:
        staging.rename(target)
    except OSError:
        found = load_wheelhouse(target)
        if found is None:
            raise
        return found
    house = load_wheelhouse(target)
    if house is None:
        raise WheelResolutionError(f"the wheelhouse in {target} is incomplete")
    return Wheelhouse(dir=target, wheels=house.wheels, requirements=house.requirements)


def resolved_fingerprint(
    requested_fingerprint: str, wheels: tuple[WheelFile, ...], *, base_image: str = "", recipe: str = ""
) -> str:
    """The environment image's identity: what was asked for, the base it runs on (its image id), the exact
    wheels and how the image is made from them (the Dockerfile without its labels)."""
    h = hashlib.sha256()
    h.update(f"{requested_fingerprint}\n{base_image}\n".encode())
    h.update(hashlib.sha256(recipe.encode()).hexdigest().encode() + b"\n")
    for wheel in sorted(wheels, key=lambda w: w.name):
        h.update(f"{wheel.name}\0{wheel.sha256}\n".encode())
    return "sha256:" + h.hexdigest()


def _download(
    packages: tuple[str, ...],
    dest: Path,
    *,
    python: str,
    architecture: str,
    glibc: tuple[int, int],
    progress: Progress,
) -> None:
    tags = platform_tags(architecture, glibc)
    abi = "cp" + python.replace(".", "")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--only-binary=:all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
        *[arg for tag in tags for arg in ("--platform", tag)],
        "--progress-bar",
        "off",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        "--",
        *packages,
    ]
    platform = f"CPython {python} {tags[0]} (glibc <= {glibc[0]}.{glibc[1]})"
    progress(f"resolving {len(packages)} packages for {platform}")
    env = {**os.environ, "PIP_NO_INPUT": "1"}
    output: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            output.append(line)
            if line.startswith("Collecting "):
                progress(line)
    if proc.returncode != 0:
        raise _pip_error(output, platform, proc.returncode)


def _pip_error(output: list[str], platform: str, returncode: int) -> WheelResolutionError:
    text = "\n".join(output)
    missing = re.search(r"No matching distribution found for (\S+)", text)
    if missing:
        requirement = missing.group(1)
        versions = re.search(
            r"satisfies the requirement " + re.escape(requirement) + r".*?\(from versions: ([^)]*)\)", text
        )
        have = [v.strip() for v in versions.group(1).split(",")] if versions else []
        have = [v for v in have if v and v != "none"]
        hint = (
            f"the newest version with such a wheel is {have[-1]}"
            if have
            else "the package has no wheel for this platform (or does not exist): drop it or pick another"
        )
        found = WheelResolutionError(f"no wheel of {requirement} for {platform}", hint=hint)
        found.requirement = requirement
        return found
    conflict = re.search(r"ResolutionImpossible|conflicting dependencies", text)
    errors = [line.removeprefix("ERROR: ") for line in output if line.startswith("ERROR:")]
    detail = errors[-1] if errors else (output[-1] if output else f"exit {returncode}")
    if conflict:
        return WheelResolutionError(f"the packages conflict for {platform}: {detail}")
    return WheelResolutionError(f"pip download for {platform} failed: {detail}")


def _index(directory: Path, packages: tuple[str, ...], relaxed: dict[str, str] | None = None) -> Wheelhouse:
    wheels: list[WheelFile] = []
    pins: list[str] = []
    for path in sorted(directory.iterdir()):
        if path.suffix != ".whl":
            raise WheelResolutionError(f"pip left a file that is not a wheel: {path.name}")
        match = _WHEEL_NAME.match(path.name)
        if match is None:
            raise WheelResolutionError(f"not a wheel file name: {path.name}")
        wheels.append(WheelFile(name=path.name, sha256=sha256_file(path)))
        pins.append(f"{match.group('name')}=={match.group('version')}")
    (directory / REQUIREMENTS).write_text("".join(f"{pin}\n" for pin in pins), encoding="utf-8")
    index = {
        "packages": list(packages),
        "requirements": pins,
        "relaxed": relaxed or {},
        "wheels": [{"name": w.name, "sha256": w.sha256} for w in wheels],
    }
    (directory / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return Wheelhouse(dir=directory, wheels=tuple(wheels), requirements=tuple(pins))


def load_wheelhouse(directory: Path) -> Wheelhouse | None:
    """A complete cached wheelhouse (its index is written last), or None."""
    try:
        index = json.loads((directory / INDEX).read_text(encoding="utf-8"))
        wheels = tuple(WheelFile(name=w["name"], sha256=w["sha256"]) for w in index["wheels"])
        requirements = tuple(index["requirements"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all((directory / w.name).is_file() for w in wheels):
        return None
    return Wheelhouse(dir=directory, wheels=wheels, requirements=requirements, reused=True)
