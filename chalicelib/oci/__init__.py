"""The daemonless image builder: OCI images made from wheels, code and model files with nothing but Python and
the registry HTTP API (no docker engine, no builder binary), so the deploy worker can build inside Lambda.

- ``layers``: deterministic gzip'd tar layers (sorted entries, fixed times, owners and modes);
- ``registry``: a client of the OCI Distribution API (blobs, mounts, manifests, basic and token auth);
- ``builder``: ``OciImageBuilder``, the ``ImageBuilder`` port: base (fetched once, reused by digest) +
  environment layer (wheels unpacked into ``/opt/env``) + runtime-code layer + model layer;
- ``base``: the local debootstrap base put into a registry, for machines no AWS base reaches.
"""

from __future__ import annotations

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST_V2 = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_TYPES = (MANIFEST_V2, OCI_MANIFEST, MANIFEST_LIST_V2, OCI_INDEX)
"""Docker v2 schema 2 media types are what every registry (ECR included) and Lambda take."""
