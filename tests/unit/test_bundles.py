"""Bundle extraction refuses hostile archives and never writes outside its directory."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chalicelib.core.errors import UnsafeBundle
from chalicelib.services.bundles import BundleLimits, extract_bundle

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "iris-onnx"


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Path, Path, Callable[[], None]]]:
    """(work dir for archives, private dest, check that nothing appeared outside dest)."""
    work = tmp_path / "work"
    work.mkdir()
    dest = Path(tempfile.mkdtemp(dir=tmp_path))
    outside = tmp_path.parent
    before = set(os.listdir(outside))
    tmp_before = _tree(tmp_path)

    def untouched() -> None:
        assert set(os.listdir(outside)) == before
        after = _tree(tmp_path) - tmp_before
        assert all(p.startswith(dest.name + "/") or p.startswith("work/") for p in after), after

    yield work, dest, untouched


def _refused(archive: Path, dest: Path, limits: BundleLimits | None = None) -> str:
    with pytest.raises(UnsafeBundle) as err:
        extract_bundle(archive, dest, limits or BundleLimits())
    return str(err.value)


def test_a_valid_bundle_is_extracted(box: tuple[Path, Path, Callable[[], None]]) -> None:
    work, dest, untouched = box
    archive = work / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(EXAMPLE, arcname=".")
    names = extract_bundle(archive, dest, BundleLimits())
    assert sorted(names) == ["batch/flowers.csv", "model.onnx", "modelport.yaml"]
    assert (dest / "model.onnx").read_bytes() == (EXAMPLE / "model.onnx").read_bytes()
    untouched()


def test_a_zip_with_directories_is_extracted_and_detected_by_content(
    box: tuple[Path, Path, Callable[[], None]],
) -> None:
    work, dest, untouched = box
    archive = work / "bundle.tar.gz"  # the name lies: detection reads the magic bytes
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("steps/", "")
        zf.writestr("steps/pre.py", "def f(x):\n    return x\n")
        zf.write(EXAMPLE / "modelport.yaml", "modelport.yaml")
    assert extract_bundle(archive, dest, BundleLimits()) == ["steps/pre.py", "modelport.yaml"]
    assert (dest / "steps" / "pre.py").is_file()
    untouched()


def test_a_plain_tar_is_accepted(box: tuple[Path, Path, Callable[[], None]]) -> None:
    work, dest, _ = box
    archive = _tar(work / "b.tar", [_file("./a/b.txt", b"hello")], mode="w")
    assert extract_bundle(archive, dest, BundleLimits()) == ["a/b.txt"]


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_file("../evil"), "'..'"),
        (_file("a/../../evil"), "'..'"),
        (_file("/abs/evil"), "absolute paths"),
        (_file("a\\..\\evil"), "backslashes"),
        (_special("passwd", tarfile.SYMTYPE, "/etc/passwd"), "links are not allowed"),
        (_special("inside", tarfile.SYMTYPE, "modelport.yaml"), "links are not allowed"),
        (_special("hard", tarfile.LNKTYPE, "modelport.yaml"), "links are not allowed"),
        (_special("tty", tarfile.CHRTYPE), "device files"),
        (_special("disk", tarfile.BLKTYPE), "device files"),
        (_special("pipe", tarfile.FIFOTYPE), "FIFOs"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "backslash", "symlink-out", "symlink-in", "hardlink",
         "chardev", "blockdev", "fifo"],
)  # fmt: skip
def test_hostile_tar_members_are_refused_by_name(
    box: tuple[Path, Path, Callable[[], None]], member: tuple[tarfile.TarInfo, bytes | None], reason: str
) -> None:
    work, dest, untouched = box
    archive = _tar(work / "b.tar.gz", [_file("modelport.yaml", b"name: x\n"), member])
    message = _refused(archive, dest)
    assert repr(member[0].name) in message
    assert reason in message
    untouched()


def test_hostile_zip_members_are_refused(box: tuple[Path, Path, Callable[[], None]]) -> None:
    work, dest, untouched = box
    for i, (name, reason) in enumerate([("../evil", "'..'"), ("/abs", "absolute")]):
        archive = work / f"b{i}.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(zipfile.ZipInfo(name), b"boom")
        message = _refused(archive, dest)
        assert repr(name) in message and reason in message
    link = zipfile.ZipInfo("passwd")
    link.external_attr = (0o120777 << 16) | 0x20
    with zipfile.ZipFile(work / "link.zip", "w") as zf:
        zf.writestr(link, "/etc/passwd")
    assert "'passwd': links are not allowed" in _refused(work / "link.zip", dest)
    untouched()


def test_too_many_members(box: tuple[Path, Path, Callable[[], None]]) -> None:
    work, dest, _ = box
    archive = _tar(work / "many.tar.gz", [_file(f"f{i}") for i in range(1001)])
    assert "more than 1000 members" in _refused(archive, dest)
    with zipfile.ZipFile(work / "many.zip", "w") as zf:
        for i in range(11):
            zf.writestr(f"f{i}", b"x")
    assert "the bundle has more than 10 members (11)" in _refused(
        work / "many.zip", Path(tempfile.mkdtemp(dir=work)), BundleLimits(max_files=10)
    )


def test_a_zero_filled_member_is_a_bomb(box: tuple[Path, Path, Callable[[], None]]) -> None:
    work, dest, untouched = box
    zeros = bytes(50 * 1024 * 1024)
    archive = _tar(work / "bomb.tar.gz", [_file("weights.bin", zeros)])
    assert archive.stat().st_size < 200 * 1024
    message = _refused(archive, dest)
    assert "'weights.bin'" in message and "decompression bomb" in message
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) < 50 * 1024 * 1024
    with zipfile.ZipFile(work / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("weights.bin", zeros)
    zip_dest = Path(tempfile.mkdtemp(dir=work))
    assert "decompression bomb" in _refused(work / "bomb.zip", zip_dest)
    assert not any(zip_dest.iterdir())  # refused from the header, before any byte was written
    untouched()


def test_the_uncompressed_total_is_capped(box: tuple[Path, Path, Callable[[], None]]) -> None:
    work, dest, _ = box
    data = os.urandom(300 * 1024)
    archive = _tar(work / "big.tar.gz", [_file("a", data), _file("b", data)])
    message = _refused(archive, dest, BundleLimits(max_total_bytes=500 * 1024))
    assert "'b'" in message and "exceeds the 512000 bytes limit" in message
    with zipfile.ZipFile(work / "big.zip", "w") as zf:
        zf.writestr("a", data)
        zf.writestr("b", data)
    assert "declared uncompressed size exceeds" in _refused(
        work / "big.zip", Path(tempfile.mkdtemp(dir=work)), BundleLimits(max_total_bytes=500 * 1024)
    )


def _patch_zip_size(archive: Path, name: bytes, size: int) -> None:
    """Make the local header and the central directory claim ``size`` uncompressed bytes for ``name``."""
    raw = bytearray(archive.read_bytes())
    local = raw.find(b"PK\x03\x04")
    assert raw[local + 30 : local + 30 + len(name)] == name
    struct.pack_into("<I", raw, local + 22, size)
    central = raw.find(b"PK\x01\x02")
    assert raw[central + 46 : central + 46 + len(name)] == name
    struct.pack_into("<I", raw, central + 24, size)
    archive.write_bytes(bytes(raw))


def test_a_zip_header_that_understates_the_size_does_not_let_more_through(
    box: tuple[Path, Path, Callable[[], None]],
) -> None:
    work, dest, untouched = box
    archive = work / "liar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.bin", bytes(3 * 1024 * 1024))
    _patch_zip_size(archive, b"model.bin", 1000)
    message = _refused(archive, dest, BundleLimits(max_total_bytes=2000))
    assert "'model.bin'" in message
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) <= 2000
    untouched()


def test_duplicates_and_garbage(box: tuple[Path, Path, Callable[[], None]]) -> None:
    work, dest, untouched = box
    archive = _tar(work / "dup.tar.gz", [_file("a", b"1"), _file("./a", b"2")])
    assert "'./a': it appears twice" in _refused(archive, dest)
    (work / "junk.tar.gz").write_bytes(b"this is not an archive at all" * 40)
    assert _refused(work / "junk.tar.gz", Path(tempfile.mkdtemp(dir=work))) == "not a tar.gz or zip archive"
    (work / "trunc.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 20)
    assert "not a readable" in _refused(work / "trunc.tar.gz", Path(tempfile.mkdtemp(dir=work)))
    untouched()


def test_dest_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(ValueError, match="empty"):
        extract_bundle(tmp_path / "x", tmp_path, BundleLimits())


def test_real_bytes_are_counted_and_the_copy_stops_at_the_limit(tmp_path: Path) -> None:
    """Whatever a header declared, the copy itself refuses the first chunk past the limit."""
    from chalicelib.services.bundles import _Extractor

    ex = _Extractor(10**9, tmp_path, BundleLimits(max_total_bytes=3 * 1024 * 1024))
    with pytest.raises(UnsafeBundle, match="'m': the bundle's actual uncompressed size exceeds the 3 MB"):
        ex.copy("m", "m", io.BytesIO(os.urandom(5 * 1024 * 1024)), iter(lambda: 10**9, None))
    assert (tmp_path / "m").stat().st_size <= 3 * 1024 * 1024
