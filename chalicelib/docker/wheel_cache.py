"""The shared wheel cache (the ``WheelCache`` port) on an ``ArtifactStore``: S3 on AWS and in the local stack.

A wheelhouse ``KEY`` is kept as ``PREFIX/KEY/<wheel>`` objects plus ``PREFIX/KEY/wheelhouse.json`` written
last, so a reader that finds the index finds every wheel it names. What comes back is checked before it is
used: the index is bounded and parsed strictly, a wheel name is a plain file name, and every wheel must have
the size and sha256 its index gives — a damaged or half-written entry is a miss, never a build input.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from chalicelib.core.errors import NotFound, TooLarge
from chalicelib.core.files import sha256_file
from chalicelib.core.ports import ArtifactStore
from chalicelib.docker.wheelhouse import INDEX

MAX_INDEX_BYTES = 1024 * 1024
MAX_WHEEL_BYTES = 2 * 1024**3
MAX_WHEELS = 500
_KEY = re.compile(r"^[0-9a-f]{16,64}$")
_WHEEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.whl$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactWheelCache:
    """Wheelhouses under ``prefix`` of ``artifacts`` (the bundle bucket's ``wheels/``)."""

    def __init__(self, artifacts: ArtifactStore, prefix: str = "wheels/") -> None:
        self.artifacts = artifacts
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"

    def fetch(self, key: str, dest: Path) -> bool:
        """On False, ``dest`` may hold a part of the entry: the caller discards it."""
        if not _KEY.fullmatch(key):
            return False
        part = dest / f".{INDEX}.part"
        try:
            self.artifacts.download(self._key(key, INDEX), part, max_bytes=MAX_INDEX_BYTES)
            wheels = _wheels_of(part.read_bytes())
            if wheels is None:
                return False
            for name, sha256 in wheels:
                target = dest / name
                self.artifacts.download(self._key(key, name), target, max_bytes=MAX_WHEEL_BYTES)
                if sha256_file(target) != sha256:
                    return False
        except (NotFound, TooLarge):
            return False
        part.replace(dest / INDEX)  # last, as in the cache: the wheelhouse is complete
        return True

    def store(self, key: str, source: Path) -> None:
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a wheelhouse key: {key!r}")
        index = (source / INDEX).read_bytes()
        wheels = _wheels_of(index)
        if wheels is None:
            raise ValueError(f"{source / INDEX} is not a wheelhouse index")
        for name, _ in wheels:
            path = source / name
            try:
                if self.artifacts.head(self._key(key, name)).size_bytes == path.stat().st_size:
                    continue
            except NotFound:
                pass
            self.artifacts.upload(self._key(key, name), path)
        self.artifacts.put(self._key(key, INDEX), index)

    def holds(self, key: str) -> bool:
        """Whether a complete-looking entry (its index) is there; ``fetch`` still checks every wheel."""
        try:
            self.artifacts.head(self._key(key, INDEX))
        except NotFound:
            return False
        return True

    def _key(self, key: str, name: str) -> str:
        return f"{self.prefix}{key}/{name}"


def _wheels_of(index: bytes) -> list[tuple[str, str]] | None:
    """(file name, sha256) of each wheel an index lists; None when it is not a well-formed index."""
    try:
        doc: Any = json.loads(index)
        entries = doc["wheels"]
        if not isinstance(entries, list) or len(entries) > MAX_WHEELS:
            return None
        found = [(str(w["name"]), str(w["sha256"])) for w in entries]
        if not isinstance(doc.get("requirements"), list):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    if any(not _WHEEL.fullmatch(name) or not _SHA256.fullmatch(digest) for name, digest in found):
        return None
    if len({name for name, _ in found}) != len(found):
        return None
    return found
