"""The host's part of the shared wheel cache, when the deploy worker runs as a function in the local stack.

The worker resolves a model's wheels from the wheel cache (the bundle bucket's ``wheels/``) first and from
the package index on a miss. On AWS it reaches the index. In a container here it does not (the index is
reached through a re-signing proxy whose CA stays out of images: ENVIRONMENT.md). So the host fills the cache
by the same code path the worker reads it with: the stack shares every wheelhouse the host has resolved when
it starts, and ``modelport wheels DIR`` (which ``modelport demo`` runs for its examples) resolves a model
directory's wheelhouses on the host exactly as the worker's build will ask for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from chalicelib.core.environment import ResolvedEnvironment, resolve_environment
from chalicelib.core.errors import ModelportError
from chalicelib.core.pipeline import stage_environments
from chalicelib.core.ports import Progress
from chalicelib.docker import cache_root
from chalicelib.docker.wheel_cache import ArtifactWheelCache
from chalicelib.docker.wheelhouse import load_wheelhouse


def share_host_wheelhouses(cache: ArtifactWheelCache, progress: Progress, root: Path | None = None) -> int:
    """Store every complete wheelhouse of the host's cache that ``cache`` lacks; how many were stored."""
    wheels = (root if root is not None else cache_root()) / "wheels"
    stored = 0
    for house in sorted(wheels.iterdir()) if wheels.is_dir() else ():
        if house.name.startswith(".") or load_wheelhouse(house) is None or cache.holds(house.name):
            continue
        cache.store(house.name, house)
        stored += 1
    if stored:
        progress(f"wheel cache: {stored} wheelhouses shared from this machine")
    return stored


def model_environments(model_dir: Path) -> list[ResolvedEnvironment]:
    """The environments the worker's build of ``model_dir`` resolves wheels for: the model's (whole and as
    a chain splits it) and, for scikit-learn, the probe's."""
    from chalicelib.services.intake import config_file_for_dir, inspect_dir

    found = inspect_dir(model_dir, None)
    manifest = config_file_for_dir(model_dir, shared_stages=True, inspected=found)
    envs = [manifest.environment, *(e for e in stage_environments(manifest) if e is not None)]
    if manifest.artifact.framework == "sklearn":
        envs.append(resolve_environment(found.config, "sklearn"))
    return envs


def resolve_for_dirs(
    model_dirs: Sequence[Path], *, registry: str, cache: ArtifactWheelCache | None, progress: Progress
) -> dict[Path, str | None]:
    """Resolve on this machine the wheelhouses the images of ``model_dirs`` need (into ``cache`` too);
    per directory None, or why it was skipped (a directory that cannot be inspected is the worker's to
    report)."""
    from chalicelib.oci.builder import OciImageBuilder

    builder = OciImageBuilder(registry, wheel_cache=cache)
    outcome: dict[Path, str | None] = {}
    for model_dir in model_dirs:
        try:
            builder.resolve_wheelhouses(model_environments(model_dir), progress)
            outcome[model_dir] = None
        except ModelportError as exc:
            outcome[model_dir] = str(exc)
            progress(f"{model_dir}: wheels not resolved here: {exc}")
    return outcome
