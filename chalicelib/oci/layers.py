"""Deterministic layers: the same entries give the same bytes, so the same digest, on any machine.

Entries are sorted by path; every entry has mtime 0 (1970), uid/gid 0, no user or group names, mode 0755 for
directories and executables and 0644 for other files; gzip writes no name and mtime 0. Nothing of the host
(paths, owners, times) reaches the layer. ``diff_id`` is the sha256 of the tar, ``digest`` of the gzip.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from chalicelib.core.errors import ArtifactError


@dataclass(frozen=True)
class Layer:
    path: Path
    digest: str
    diff_id: str
    size: int


@dataclass(frozen=True)
class Entry:
    """One file system entry of a layer: a directory, a file (from a path or bytes) or a symbolic link."""

    path: str
    source: Path | bytes | None = None
    link: str | None = None
    executable: bool = False

    @property
    def is_dir(self) -> bool:
        return self.source is None and self.link is None


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes what passes through to ``target``."""

    def __init__(self, target: IO[bytes] | gzip.GzipFile) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha.update(data)
        self.count += len(data)
        self.target.write(data)
        return len(data)


def _key(entry: Entry) -> tuple[str, ...]:
    return PurePosixPath(entry.path).parts


def _check(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or any(p in ("..", ".", "") for p in parts):
        raise ArtifactError(f"{path!r} is not a relative path inside the image")
    return "/".join(parts)


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """``entries`` plus every parent directory they lack, one entry per path (the last one wins)."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        path = _check(entry.path)
        parts = PurePosixPath(path).parts
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in by_path:
                by_path[parent] = Entry(parent)
        by_path[path] = Entry(path, entry.source, entry.link, entry.executable)
    return sorted(by_path.values(), key=_key)


def write_layer(entries: Iterable[Entry], dest: Path, *, level: int = 6) -> Layer:
    """Write the layer of ``entries`` (parents added, sorted) to ``dest`` as a gzip'd tar."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as raw:
        compressed = _Hashing(raw)
        with gzip.GzipFile(filename="", fileobj=compressed, mode="wb", compresslevel=level, mtime=0) as gz:
            plain = _Hashing(gz)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for entry in with_parents(entries):
                    _add(tar, entry)
    return Layer(
        path=dest,
        digest="sha256:" + compressed.sha.hexdigest(),
        diff_id="sha256:" + plain.sha.hexdigest(),
        size=compressed.count,
    )


def _info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add(tar: tarfile.TarFile, entry: Entry) -> None:
    if entry.is_dir:
        tar.addfile(_info(entry.path, tarfile.DIRTYPE, 0o755))
    elif entry.link is not None:
        info = _info(entry.path, tarfile.SYMTYPE, 0o777)
        info.linkname = entry.link
        tar.addfile(info)
    elif isinstance(entry.source, bytes):
        mode = 0o755 if entry.executable else 0o644
        tar.addfile(_info(entry.path, tarfile.REGTYPE, mode, len(entry.source)), io.BytesIO(entry.source))
    else:
        assert entry.source is not None
        source = entry.source
        executable = entry.executable or os.access(source, os.X_OK)
        with source.open("rb") as fh:
            info = _info(entry.path, tarfile.REGTYPE, 0o755 if executable else 0o644, source.stat().st_size)
            tar.addfile(info, fh)


def tree_entries(root: Path, prefix: str) -> list[Entry]:
    """Directories, files and links under ``root`` as entries under ``prefix`` (links kept as links)."""
    found = [Entry(prefix)]
    for path in sorted(root.rglob("*")):
        rel = f"{prefix}/{path.relative_to(root).as_posix()}"
        if path.is_symlink():
            found.append(Entry(rel, link=os.readlink(path)))
        elif path.is_dir():
            found.append(Entry(rel))
        elif path.is_file():
            found.append(Entry(rel, source=path))
    return found
