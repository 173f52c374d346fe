"""Two file facts several layers need alike: whether a relative path stays inside its directory, and a
file's sha256. One definition each, so the intake, the image builders and the runtime agree on both."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

BLOCK = 1 << 20
"""Bytes read at a time: a large artifact is hashed without being held in memory."""


def is_safe_relative_path(rel: str) -> bool:
    """``rel`` names something inside a directory on any system: relative, ``/``-separated, no empty,
    ``.`` or ``..`` segment, no backslash and no NUL."""
    return not (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or "\x00" in rel
        or any(part in ("", ".", "..") for part in rel.split("/"))
    )


def sha256_file(path: Path, *, copy_to: BinaryIO | None = None) -> str:
    """The hex sha256 of ``path``'s bytes; ``copy_to`` is written the same bytes (one read for both)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            h.update(block)
            if copy_to is not None:
                copy_to.write(block)
    return h.hexdigest()
