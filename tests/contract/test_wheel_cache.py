"""The shared wheel cache's contract, on the in-memory artifact store and on S3 (a moto server).

The deploy worker trusts what it fetches from here as build input, so the contract is as much about what is
refused (a damaged wheel, a half-written entry, a hostile index) as about the round trip. ``resolve_wheels``
is the cache's one reader and writer: it is exercised here with a fake package index (no pip run).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.aws.s3 import S3ArtifactStore
from chalicelib.core.ports import ArtifactStore
from chalicelib.docker import wheelhouse
from chalicelib.docker.wheel_cache import ArtifactWheelCache
from chalicelib.docker.wheelhouse import INDEX, resolve_wheels, wheelhouse_key
from chalicelib.memory.stores import MemoryArtifactStore

KEY = "0123456789abcdef01234567"
WHEELS = {
    "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl": b"numpy wheel bytes" * 1000,
    "PyYAML-6.0.3-cp311-cp311-manylinux_2_17_x86_64.whl": b"yaml wheel bytes",
}


@pytest.fixture(params=["memory", pytest.param("s3", marks=pytest.mark.functional)])
def artifacts(request: pytest.FixtureRequest) -> Iterator[ArtifactStore]:
    if request.param == "memory":
        yield MemoryArtifactStore()
        return
    infra = request.getfixturevalue("infra")
    yield S3ArtifactStore(infra.settings.bundle_bucket, infra.client("s3"))


def wheelhouse_dir(root: Path, wheels: dict[str, bytes] = WHEELS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in wheels.items():
        (root / name).write_bytes(data)
    index = {
        "packages": ["numpy==2.4.6", "PyYAML==6.0.3"],
        "requirements": ["numpy==2.4.6", "PyYAML==6.0.3"],
        "wheels": [{"name": n, "sha256": hashlib.sha256(d).hexdigest()} for n, d in sorted(wheels.items())],
    }
    (root / INDEX).write_text(json.dumps(index))
    return root


def test_a_stored_wheelhouse_is_fetched_whole(artifacts: ArtifactStore, tmp_path: Path) -> None:
    cache = ArtifactWheelCache(artifacts, "wheels/")
    dest = tmp_path / "dest"
    dest.mkdir()
    assert not cache.fetch(KEY, dest)
    assert not cache.holds(KEY)

    cache.store(KEY, wheelhouse_dir(tmp_path / "src"))
    cache.store(KEY, wheelhouse_dir(tmp_path / "src"))  # idempotent
    assert cache.holds(KEY)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert cache.fetch(KEY, fresh)
    assert {p.name for p in fresh.iterdir()} == {*WHEELS, INDEX}
    for name, data in WHEELS.items():
        assert (fresh / name).read_bytes() == data
    assert (fresh / INDEX).read_bytes() == (tmp_path / "src" / INDEX).read_bytes()


def test_a_damaged_wheel_or_a_missing_one_is_a_miss(artifacts: ArtifactStore, tmp_path: Path) -> None:
    cache = ArtifactWheelCache(artifacts, "wheels/")
    cache.store(KEY, wheelhouse_dir(tmp_path / "src"))
    name = next(iter(WHEELS))
    artifacts.put(f"wheels/{KEY}/{name}", b"not the wheel the index names")
    dest = tmp_path / "dest"
    dest.mkdir()
    assert not cache.fetch(KEY, dest)
    assert not (dest / INDEX).exists()  # a reader never sees a complete-looking wheelhouse

    half = "fedcba9876543210fedcba98"
    artifacts.put(f"wheels/{half}/{INDEX}", (tmp_path / "src" / INDEX).read_bytes())  # the wheels never came
    other = tmp_path / "other"
    other.mkdir()
    assert not cache.fetch(half, other)


TWICE = {"name": "a-1-py3-none-any.whl", "sha256": "0" * 64}


@pytest.mark.parametrize(
    "index",
    [
        b"not json",
        json.dumps({"wheels": [{"name": "../../etc/evil.whl", "sha256": "0" * 64}], "requirements": []}),
        json.dumps({"wheels": [{"name": "a-1-py3-none-any.whl", "sha256": "short"}], "requirements": []}),
        json.dumps({"wheels": [TWICE, TWICE], "requirements": []}),
        json.dumps(
            {"wheels": [{"name": f"a{i}-1-py3-none-any.whl", "sha256": "0" * 64} for i in range(501)]}
        ),
    ],
)
def test_a_hostile_index_is_a_miss_and_writes_nothing_outside(
    artifacts: ArtifactStore, tmp_path: Path, index: str | bytes
) -> None:
    artifacts.put(f"wheels/{KEY}/{INDEX}", index.encode() if isinstance(index, str) else index)
    dest = tmp_path / "a" / "dest"
    dest.mkdir(parents=True)
    assert not ArtifactWheelCache(artifacts, "wheels/").fetch(KEY, dest)
    assert not (dest / INDEX).exists()
    assert not (tmp_path / "etc").exists()


def test_an_oversized_index_is_not_read(artifacts: ArtifactStore, tmp_path: Path) -> None:
    artifacts.put(f"wheels/{KEY}/{INDEX}", b" " * (1024 * 1024 + 1))
    assert not ArtifactWheelCache(artifacts).fetch(KEY, tmp_path)


def test_keys_that_are_not_wheelhouse_keys_are_refused(artifacts: ArtifactStore, tmp_path: Path) -> None:
    cache = ArtifactWheelCache(artifacts)
    assert not cache.fetch("../uploads/x", tmp_path)
    with pytest.raises(ValueError):
        cache.store("../uploads/x", wheelhouse_dir(tmp_path / "src"))


# --------------------------------------------------------------------------- resolve_wheels on the cache


class FakeIndex:
    """Stands in for ``pip download``: counts its calls and writes the wheels it was told to."""

    def __init__(self, wheels: dict[str, bytes]) -> None:
        self.wheels = wheels
        self.calls = 0

    def __call__(self, packages: tuple[str, ...], dest: Path, **_: object) -> None:
        self.calls += 1
        for name, data in self.wheels.items():
            (dest / name).write_bytes(data)


def test_resolve_reads_the_shared_cache_first_and_fills_it_on_a_miss(
    artifacts: ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = FakeIndex(WHEELS)
    monkeypatch.setattr(wheelhouse, "_download", index)
    cache = ArtifactWheelCache(artifacts, "wheels/")
    packages = ("numpy==2.4.6", "PyYAML==6.0.3")
    key = wheelhouse_key(packages, python="3.11", architecture="x86_64", glibc=(2, 36))
    lines: list[str] = []

    first = resolve_wheels(
        packages, python="3.11", architecture="x86_64", progress=lines.append,
        cache_dir=tmp_path / "machine-a", wheel_cache=cache,
    )  # fmt: skip
    assert index.calls == 1 and cache.holds(key)

    second = resolve_wheels(
        packages, python="3.11", architecture="x86_64", progress=lines.append,
        cache_dir=tmp_path / "machine-b", wheel_cache=cache,
    )  # fmt: skip
    assert index.calls == 1  # machine b never reached the index
    assert "from the shared wheel cache" in lines[-1]
    assert second.wheels == first.wheels and second.requirements == first.requirements
    assert (second.dir / "requirements.txt").read_text() == (first.dir / "requirements.txt").read_text()
    assert not [p for p in second.dir.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_cache_that_cannot_keep_a_wheelhouse_does_not_fail_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Refusing(MemoryArtifactStore):
        def upload(self, key: str, source: Path) -> object:
            raise PermissionError("AccessDenied")

    monkeypatch.setattr(wheelhouse, "_download", FakeIndex(WHEELS))
    lines: list[str] = []
    house = resolve_wheels(
        ("numpy==2.4.6",), python="3.11", architecture="x86_64", progress=lines.append,
        cache_dir=tmp_path, wheel_cache=ArtifactWheelCache(Refusing()),
    )  # fmt: skip
    assert len(house.wheels) == 2
    assert "not kept in the shared cache (PermissionError: AccessDenied)" in lines[-1]
