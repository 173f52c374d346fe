"""Safe extraction of an uploaded bundle (tar, tar.gz or zip) into a private, empty directory.

A bundle comes from anyone holding an upload URL, so every member is treated as hostile: names that could
leave the directory, links, device files, too many members and decompression bombs are refused with a
message naming the member. Sizes in headers are only used to refuse early; the bytes actually produced
are counted while copying and the copy stops at the limit, because headers can lie.

Nothing is decompressed or parsed beyond a budget either: a tar stream is decompressed here, and the
reader tarfile pulls from refuses to go further than the data of the members accepted so far plus
``_HEADER_BUDGET`` (so a pax or GNU long-name header cannot claim gigabytes of memory before any member
is seen, nor a skipped member make us inflate data nobody writes); a zip's central directory is sized
from its end record and refused before ``zipfile`` builds an object per entry.
"""

from __future__ import annotations

import errno
import gzip
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from chalicelib.core.errors import TooLarge, UnsafeBundle

_CHUNK = 1 << 20
_TAR_SLACK = 64 * 1024
"""Bytes the tar stream may have buffered ahead of a member; a ratio estimate must not hinge on them."""
_HEADER_BUDGET = 1024 * 1024
"""Decompressed tar bytes allowed beyond the accepted members' data: headers, pax records, read-ahead."""
_ZIP_ENTRY_BUDGET = 4096
"""Central-directory bytes allowed per member (46 fixed + name + extra + comment)."""


@dataclass(frozen=True)
class BundleLimits:
    max_files: int = 1000
    max_total_bytes: int = 2 * 1024**3
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 4 * 1024 * 1024
    """Ratios are only judged past this many uncompressed bytes: tiny text files compress very well."""


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB" if n >= 1024 * 1024 else f"{n} bytes"


def _unsafe(name: str, reason: str) -> UnsafeBundle:
    return UnsafeBundle(f"bundle member {name!r}: {reason}")


def safe_member_path(name: str) -> str:
    """The member's relative POSIX path ('' for the root itself); refuses anything that could escape."""
    if "\\" in name or "\x00" in name:
        raise _unsafe(name, "backslashes and NUL characters are not allowed in names")
    if name.startswith("/"):
        raise _unsafe(name, "absolute paths are not allowed")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _unsafe(name, "paths with '..' are not allowed")
    return "/".join(parts)


class _Extractor:
    """Shared bookkeeping: member count, bytes produced, archive-wide ratio, writes confined to ``dest``."""

    def __init__(self, archive_size: int, dest: Path, limits: BundleLimits) -> None:
        self.archive_size = max(archive_size, 1)
        self.root = dest.resolve()
        self.limits = limits
        self.members = 0
        self.current = ""
        self.total = 0
        self.written: list[str] = []

    def count(self, name: str) -> None:
        self.current = name
        self.members += 1
        if self.members > self.limits.max_files:
            raise _unsafe(name, f"the bundle has more than {self.limits.max_files} members")

    def target(self, name: str, rel: str) -> Path:
        path = self.root / rel
        parent = path.parent.resolve()
        if not (parent == self.root or parent.is_relative_to(self.root)) or not path.name:
            raise _unsafe(name, "it would be written outside the bundle directory")
        return path

    def make_dir(self, name: str, rel: str) -> None:
        if rel:
            path = self.target(name, rel)
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _unsafe(name, f"cannot create the directory: {exc.strerror or exc}") from None

    def check_total(self, name: str, total: int, what: str) -> None:
        if total > self.limits.max_total_bytes:
            raise _unsafe(
                name,
                f"the bundle's {what} uncompressed size exceeds the {_mb(self.limits.max_total_bytes)} limit",
            )

    def check_ratio(self, name: str, size: int, compressed: int, what: str) -> None:
        limits = self.limits
        if size > limits.ratio_floor_bytes and size > limits.max_ratio * max(compressed, 1):
            raise _unsafe(
                name,
                f"{what} compresses more than {limits.max_ratio:g}:1 ({_mb(size)} from "
                f"{_mb(compressed)}), typical of a decompression bomb",
            )

    def copy(self, name: str, rel: str, source: IO[bytes], compressed: Iterator[int]) -> int:
        """Copy counting real bytes; ``compressed`` yields the member's compressed bytes so far per chunk."""
        path = self.target(name, rel)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            raise _unsafe(name, "it appears twice in the bundle") from None
        except OSError as exc:
            raise _unsafe(name, f"cannot be written: {exc.strerror or exc}") from None
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                self.check_total(name, self.total + size, "actual")
                self.check_ratio(name, size, next(compressed), "the member")
                self.check_ratio(name, self.total + size, self.archive_size, "the bundle")
                try:
                    out.write(chunk)
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    raise TooLarge(
                        f"bundle member {name!r}: the bundle does not fit the deploy worker's disk "
                        f"({_mb(self.total + size)} extracted)"
                    ) from None
        self.total += size
        self.written.append(rel)
        return size


class _TarBudget:
    """The decompressed tar stream, refusing to deliver past ``allowed`` (raised as members are accepted)."""

    def __init__(self, source: IO[bytes] | gzip.GzipFile) -> None:
        self.source = source
        self.pos = 0
        self.allowed = _HEADER_BUDGET

    def read(self, size: int = -1) -> bytes:
        want = self.allowed - self.pos + 1
        data = self.source.read(want if size < 0 else min(size, want))
        self.pos += len(data)
        if self.pos > self.allowed:
            raise UnsafeBundle(
                f"the bundle's headers or skipped data exceed {_mb(_HEADER_BUDGET)} at byte {self.allowed}"
            )
        return data


def _blocks(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _extract_tar(fh: IO[bytes], compressed: bool, ex: _Extractor) -> None:
    stream: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=fh, mode="rb") if compressed else fh
    budget = _TarBudget(stream)
    with tarfile.open(fileobj=budget, mode="r|") as tf:  # type: ignore[call-overload]
        for member in tf:
            name = member.name
            budget.allowed = member.offset_data + _HEADER_BUDGET
            ex.count(name)
            rel = safe_member_path(name)
            if member.issym() or member.islnk():
                raise _unsafe(name, "links are not allowed")
            if member.ischr() or member.isblk() or member.isfifo():
                raise _unsafe(name, "device files and FIFOs are not allowed")
            if member.isdir():
                ex.make_dir(name, rel)
                continue
            if not member.isreg():
                raise _unsafe(name, "only regular files and directories are allowed")
            ex.check_total(name, ex.total + member.size, "declared")
            budget.allowed = member.offset_data + _blocks(member.size) + _HEADER_BUDGET
            source = tf.extractfile(member)
            if source is None:  # pragma: no cover - isreg() members always have data
                raise _unsafe(name, "has no data")
            start = fh.tell()

            def consumed(start: int = start) -> Iterator[int]:
                # gzip reads ahead in blocks, so the raw position is an estimate; allow some slack.
                while True:
                    yield fh.tell() - start + _TAR_SLACK

            ex.copy(name, rel, source, consumed())


def _zip_directory(fh: IO[bytes], limits: BundleLimits) -> None:
    """Refuse a zip whose end record announces more members, or a bigger directory, than allowed."""
    end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]
    if end is None:
        raise zipfile.BadZipFile("no end of central directory record")
    entries = int(end[4])  # _ECD_ENTRIES_TOTAL
    size = int(end[5])  # _ECD_SIZE
    if entries > limits.max_files:
        raise UnsafeBundle(f"the bundle has more than {limits.max_files} members ({entries})")
    if size > max(entries, 1) * _ZIP_ENTRY_BUDGET:
        raise UnsafeBundle(
            f"the zip's central directory is {_mb(size)} for {entries} members, "
            f"over {_ZIP_ENTRY_BUDGET} bytes a member"
        )
    fh.seek(0)


def _extract_zip(fh: IO[bytes], ex: _Extractor) -> None:
    _zip_directory(fh, ex.limits)
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        if len(infos) > ex.limits.max_files:
            ex.members = ex.limits.max_files
            ex.count(infos[ex.limits.max_files].filename)
        if infos:
            ex.check_total(infos[-1].filename, sum(i.file_size for i in infos), "declared")
        for info in infos:
            name = info.filename
            ex.count(name)
            rel = safe_member_path(name)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _unsafe(name, "links are not allowed")
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                raise _unsafe(name, "device files and FIFOs are not allowed")
            if info.flag_bits & 0x1:
                raise _unsafe(name, "encrypted members are not supported")
            if info.is_dir():
                ex.make_dir(name, rel)
                continue
            compressed = min(info.compress_size, ex.archive_size)
            ex.check_ratio(name, info.file_size, compressed, "the member")
            with zf.open(info) as source:

                def declared(compressed: int = compressed) -> Iterator[int]:
                    while True:
                        yield compressed

                size = ex.copy(name, rel, source, declared())
            if size != info.file_size:  # pragma: no cover - zipfile raises on a mismatch first
                raise _unsafe(name, f"holds {size} bytes but its header says {info.file_size}")


def extract_bundle(archive: Path, dest: Path, limits: BundleLimits | None = None) -> list[str]:
    """Extract ``archive`` into ``dest`` (an empty directory the caller made private, e.g. with mkdtemp).

    Returns the relative paths of the files written, in archive order. On ``UnsafeBundle`` ``dest`` may
    hold a partial extraction (never beyond the limits); the caller removes it with the temp dir.
    """
    limits = limits or BundleLimits()
    if not dest.is_dir() or any(dest.iterdir()):
        raise ValueError(f"{dest} must be an empty directory")
    ex = _Extractor(archive.stat().st_size, dest, limits)
    with archive.open("rb") as fh:
        head = fh.read(512)
        fh.seek(0)
        try:
            if head[:2] == b"\x1f\x8b":
                _extract_tar(fh, True, ex)
            elif head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
                _extract_zip(fh, ex)
            elif head[257:262] == b"ustar":
                _extract_tar(fh, False, ex)
            else:
                raise UnsafeBundle("not a tar.gz or zip archive")
        except (
            tarfile.TarError,
            zipfile.BadZipFile,
            gzip.BadGzipFile,
            zlib.error,
            EOFError,
            NotImplementedError,
        ) as exc:
            if ex.current:
                raise _unsafe(ex.current, f"the archive is corrupt here: {exc}") from None
            raise UnsafeBundle(f"the bundle is not a readable tar.gz or zip archive: {exc}") from None
    return ex.written
