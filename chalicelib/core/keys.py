"""Object keys are part of the artifact store's contract: every backend refuses the same unsafe ones."""

from __future__ import annotations

from chalicelib.core.errors import ConfigError
from chalicelib.core.files import is_safe_relative_path


def check_key(key: str) -> str:
    """Refuse object keys that are absolute, climb with ``..``, or carry control characters.

    Keys come from model names and upload ids; a key like ``../x`` is harmless in S3 itself but turns into a
    path traversal the moment a key is mirrored onto a filesystem (the local stack, a download directory).
    """
    if (
        not is_safe_relative_path(key)
        or len(key.encode()) > 1024
        or any(ord(c) < 32 or ord(c) == 127 for c in key)
    ):
        raise ConfigError(f"unsafe object key {key!r}", path="key")
    return key


def check_prefix(prefix: str) -> str:
    """A listing's prefix: a safe key, or one followed by ``/`` (``inputs/iris/``); the empty prefix, the
    whole bucket, is refused too: no caller lists everything."""
    check_key(prefix.removesuffix("/"))
    return prefix
