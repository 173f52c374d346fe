"""The local debootstrap base put into a registry without building anything: read from the docker engine's
``docker save`` stream (a tar of layer tars and a config), each layer gzip'd deterministically and pushed with
the registry client. Machines no AWS base reaches build on it (``OciImageBuilder`` falls back to it)."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from chalicelib.core.ports import Progress
from chalicelib.docker import BaseImageError, PushError, _first_line, docker_client
from chalicelib.docker.baseimage import base_image_tag, image_exists
from chalicelib.oci import CONFIG_V1, LAYER_GZIP, MANIFEST_V2
from chalicelib.oci.registry import RegistryClient


def ensure_local_base(
    registry: str,
    python: str,
    progress: Progress,
    *,
    client: Any = None,
    username: str | None = None,
    password: str | None = None,
) -> str:
    """``registry/modelport/base:<tag>``, pushed from the engine's local base when the registry lacks it."""
    tag = base_image_tag(python)
    repository, _, version = tag.partition(":")
    reference = f"{registry}/{tag}"
    target = RegistryClient(registry, username=username, password=password)
    try:
        target.get_manifest(repository, version)
        return reference
    except PushError:
        pass
    engine = client if client is not None else docker_client()
    if not image_exists(engine, tag):
        raise BaseImageError(f"the docker engine has no {tag} to put into {registry}",
                             hint="make it first: modelport base-image build")  # fmt: skip
    progress(f"putting {tag} into {registry}")
    with tempfile.TemporaryDirectory(prefix="modelport-base-") as tmp:
        saved = Path(tmp) / "saved.tar"
        try:
            with saved.open("wb") as out:
                for chunk in engine.api.get_image(tag):
                    out.write(chunk)
        except Exception as exc:  # the engine's transport errors
            raise BaseImageError(f"docker save {tag} failed: {_first_line(exc)}") from None
        push_saved_image(saved, target, repository, version, Path(tmp))
    return reference


def push_saved_image(saved: Path, target: RegistryClient, repository: str, tag: str, work: Path) -> str:
    """Push a ``docker save`` archive (one image) as ``repository:tag``; returns the manifest digest."""
    with tarfile.open(saved) as archive:
        index = json.load(_member(archive, "manifest.json"))[0]
        config = _member(archive, index["Config"]).read()
        descriptors = []
        for name in index["Layers"]:
            plain = _member(archive, name)
            layer = work / "layer.tar.gz"
            with (
                layer.open("wb") as raw,
                gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz,
            ):
                shutil.copyfileobj(plain, gz, 1024 * 1024)
            digest = "sha256:" + _sha256(layer)
            if not target.blob_exists(repository, digest):
                target.push_blob(repository, digest, layer)
            descriptors.append({"mediaType": LAYER_GZIP, "size": layer.stat().st_size, "digest": digest})
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    path = work / "config.json"
    path.write_bytes(config)
    if not target.blob_exists(repository, config_digest):
        target.push_blob(repository, config_digest, path)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": config_digest},
        "layers": descriptors,
    }
    return target.put_manifest(repository, tag, json.dumps(manifest, indent=3).encode(), MANIFEST_V2)


def _member(archive: tarfile.TarFile, name: str) -> Any:
    found = archive.extractfile(name)
    if found is None:
        raise BaseImageError(f"the saved image has no {name}")
    return found


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            sha.update(chunk)
    return sha.hexdigest()
