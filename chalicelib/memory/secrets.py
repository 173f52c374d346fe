"""The in-memory twin of a secret source; also the local stack's plain ``MODELPORT_ADMIN_KEY``."""

from __future__ import annotations

from chalicelib.core.errors import ConfigError


class MemorySecret:
    """A value that tests may change (a rotation) or remove (None: missing); ``reads`` counts reads."""

    def __init__(self, value: str | None, name: str = "memory secret") -> None:
        self.value = value
        self.name = name
        self.reads = 0

    def read(self) -> str:
        self.reads += 1
        if self.value is None:
            raise ConfigError(
                f"secret {self.name} does not exist", hint="create it, or fix the setting that names it"
            )
        if not self.value.strip():
            raise ConfigError(f"secret {self.name} holds no text", hint="store the key as a plain string")
        return self.value.strip()
