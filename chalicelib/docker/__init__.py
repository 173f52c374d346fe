"""The image builder: wheelhouse, Dockerfiles as data, base images, build and push through the docker SDK.

Nothing here imports the docker SDK at module level (the CLI stays fast); the modules that talk to an engine
take a ``docker.DockerClient`` (or make one with ``docker.from_env()``) when called.

The images:

- **base** (``modelport/base:py3.11-bookworm-r3``): Debian minbase + python3 + libgomp1, made by
  ``debootstrap`` and ``docker import`` when no registry can give the AWS Lambda base (``baseimage.py``).
- **environment** (``modelport/env:<resolved fingerprint>``): base + ``/opt/env``, a venv installed offline
  from a wheelhouse resolved on the host (``wheelhouse.py``); one per environment, shared by every model.
- **model** (``modelport/<name>:v<version>``): environment + runtime code (one layer) + the model
  directory (the last layer), so a new model file changes exactly one layer (``dockerfile.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chalicelib.core.errors import ModelportError


class ImageError(ModelportError):
    """Building, importing or pushing an image failed in a way the user can act on."""

    code = "ImageError"


class EngineUnavailable(ImageError):
    """No docker engine answers."""

    http_status = 503
    code = "EngineUnavailable"


class BaseImageError(ImageError):
    """The base image cannot be made or used (no Debian release for the python, not root, ...)."""

    code = "BaseImageError"


class WheelResolutionError(ImageError):
    """pip found no wheel of a package for the image's python, platform and glibc."""

    code = "WheelResolutionError"
    requirement: str | None = None
    """The requirement pip found no wheel of, when it said which."""


class BuildError(ImageError):
    """``docker build`` failed; the message names the step and ends with its last log lines."""

    code = "BuildError"


class PushError(ImageError):
    """The registry refused the image or could not be reached."""

    code = "PushError"


def cache_root() -> Path:
    """Where downloads are kept between builds: ``$MODELPORT_CACHE``, else ``~/.cache/modelport``."""
    configured = os.environ.get("MODELPORT_CACHE")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "modelport"


def docker_client() -> Any:
    """A client for the engine in the environment (``DOCKER_HOST`` or the default socket)."""
    import docker  # type: ignore[import-untyped]

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(
            f"no docker engine answers ({_first_line(exc)})",
            hint="start dockerd (as root: dockerd --bridge=none --iptables=false &) or set DOCKER_HOST",
        ) from None
    return client


def _first_line(error: object) -> str:
    """One line of an error: a docker APIError's explanation (the engine's words), else its text."""
    text = str(getattr(error, "explanation", None) or error).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(error).__name__
