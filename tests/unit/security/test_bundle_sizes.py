"""Bundle extraction stops at its limits while streaming, and nothing is parsed into memory past a budget."""

from __future__ import annotations

import io
import tarfile
import tempfile
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from chalicelib.core.errors import UnsafeBundle
from chalicelib.services.bundles import BundleLimits, extract_bundle
from chalicelib.wiring import deployment_service
from tests.unit.test_deployments import World, bundle

MB = 1024 * 1024
T = TypeVar("T")


def on_disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def peak_of(fn: Callable[[], T]) -> tuple[T, int]:
    tracemalloc.start()
    try:
        return fn(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def refusal(archive: Path, dest: Path, limits: BundleLimits | None = None) -> str:
    with pytest.raises(UnsafeBundle) as err:
        extract_bundle(archive, dest, limits)
    return str(err.value)


def tar_gz(
    path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT
) -> Path:
    with tarfile.open(path, "w:gz", format=fmt) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member, io.BytesIO(b""))
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tf.addfile(info, io.BytesIO(member[1]))
    return path


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=tmp_path))


def test_a_tar_gz_bomb_stops_at_the_total_limit(tmp_path: Path, dest: Path) -> None:
    """Ten 3 MB members of zeros with the ratio check out of the way: the running total stops the copy."""
    archive = tar_gz(tmp_path / "b.tar.gz", [(f"f{i}", bytes(3 * MB)) for i in range(10)])
    limit = 8 * MB
    message = refusal(archive, dest, BundleLimits(max_total_bytes=limit, max_ratio=1e9))
    assert message == "bundle member 'f2': the bundle's declared uncompressed size exceeds the 8 MB limit"
    assert on_disk(dest) <= limit


def test_a_zip_whose_headers_lie_stops_at_the_total_limit(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "b.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(10):
            zf.writestr(f"f{i}", bytes(3 * MB))
    raw = bytearray(archive.read_bytes())  # every header claims 1 KB: only the stream tells the truth
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.find(sig)
        while at >= 0:
            raw[at + offset : at + offset + 4] = (1024).to_bytes(4, "little")
            at = raw.find(sig, at + 4)
    archive.write_bytes(bytes(raw))
    limit = 8 * MB
    message = refusal(archive, dest, BundleLimits(max_total_bytes=limit, max_ratio=1e9))
    assert message.startswith("bundle member 'f0': ")
    assert on_disk(dest) <= limit


def test_the_default_ratio_stops_a_bomb_early(tmp_path: Path, dest: Path) -> None:
    archive = tar_gz(tmp_path / "b.tar.gz", [("weights.bin", bytes(200 * MB))])
    assert archive.stat().st_size < 300 * 1024
    message = refusal(archive, dest)
    assert message.startswith("bundle member 'weights.bin': the member compresses more than 200:1")
    assert on_disk(dest) <= 32 * MB  # 200:1 of what was read so far, one chunk at a time


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path: Path, dest: Path) -> None:
    info = tarfile.TarInfo("model.onnx")
    info.pax_headers = {"comment": "x" * (64 * MB)}
    archive = tar_gz(tmp_path / "pax.tar.gz", [info])
    message, peak = peak_of(lambda: refusal(archive, dest))
    assert message == "the bundle's headers or skipped data exceed 1 MB at byte 1048576"
    assert peak < 8 * MB  # tarfile held the 64 MB header (and a copy) before


def test_a_huge_gnu_long_name_is_refused_before_it_is_read(tmp_path: Path, dest: Path) -> None:
    archive = tar_gz(tmp_path / "long.tar.gz", [tarfile.TarInfo("a" * (32 * MB))], fmt=tarfile.GNU_FORMAT)
    message, peak = peak_of(lambda: refusal(archive, dest))
    assert message == "the bundle's headers or skipped data exceed 1 MB at byte 1048576"
    assert peak < 8 * MB


def test_a_zip_with_too_many_entries_is_refused_from_its_end_record(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(20_000):
            zf.writestr(f"f{i}", b"")
    message, peak = peak_of(lambda: refusal(archive, dest))
    assert message == "the bundle has more than 1000 members (20000)"
    assert peak < 1 * MB  # zipfile built 20,000 ZipInfo objects first
    assert not any(dest.iterdir())


def test_a_bomb_fails_the_deployment_naming_the_member(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.service = deployment_service(
        world.c, scratch=world.scratch, limits=BundleLimits(max_total_bytes=4 * MB, max_ratio=1e9)
    )
    reason = world.failed(world.upload(bundle({"weights.bin": bytes(16 * MB)})))
    assert (
        reason
        == "bundle member 'weights.bin': the bundle's declared uncompressed size exceeds the 4 MB limit"
    )
