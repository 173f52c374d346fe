"""The pictures of ``modelport demo``: each example's visualization, rendered by the real runtime.

For a model directory whose response carries a figure, the model config file is made, the model laid out
as in its image and loaded in process, and every request in ``samples/`` (PNG/JPEG/WebP images, CSV,
JSON) sent with ``Accept: image/png``; each answer is saved as ``<out>/<model>/<sample>.png``. A model
without samples gets its protocol's generated example request.
"""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from chalicelib.core.protocol import Figure
from chalicelib.runtime.handler import load
from chalicelib.runtime.layout import prepare_model_dir
from chalicelib.services.intake import manifest_for_dir

SAMPLE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".csv": "text/csv",
    ".json": "application/json",
}
MAX_SAMPLE_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class DemoPicture:
    """One rendered picture, or why a sample gave none."""

    sample: str
    path: Path | None
    timings: dict[str, float]
    problem: str | None = None


def demo_pictures(model_dir: Path, out_dir: Path) -> list[DemoPicture]:
    """Render ``model_dir``'s visualization for each of its samples into ``out_dir/<name>/``;
    ``[]`` when its response has no picture."""
    manifest = manifest_for_dir(model_dir)
    if not isinstance(manifest.protocol.response_value, Figure):
        return []
    offered = manifest.protocol.request.content_types
    samples = sorted(
        p
        for p in (model_dir / "samples").glob("*")
        if p.is_file() and SAMPLE_TYPES.get(p.suffix.lower()) in offered
    )
    events: list[tuple[str, dict[str, object]]] = []
    for path in samples:
        if path.stat().st_size > MAX_SAMPLE_BYTES:
            continue
        media = SAMPLE_TYPES[path.suffix.lower()]
        data = path.read_bytes()
        event: dict[str, object]
        if media.startswith("image/"):
            event = {"body": base64.b64encode(data).decode(), "body_encoding": "base64"}
        else:
            event = {"body": data.decode("utf-8"), "body_encoding": "utf8"}
        events.append((path.stem, {**event, "content_type": media}))
    if not events:
        example = json.dumps(manifest.protocol.request.example)
        events.append(("example", {"body": example, "content_type": "application/json"}))
    target = out_dir / manifest.name
    target.mkdir(parents=True, exist_ok=True)
    pictures = []
    with tempfile.TemporaryDirectory(prefix="modelport-demo-") as tmp:
        runtime = load(prepare_model_dir(model_dir, manifest, Path(tmp) / "model"), warm=False)
        for stem, event in events:
            response = runtime.handle({**event, "accept": "image/png"})
            timings = dict(response["timings"])
            if response["status"] != 200 or response["content_type"] != "image/png":
                problem = f"{response['status']}: {str(response['body'])[:300]}"
                pictures.append(DemoPicture(stem, None, timings, problem))
                continue
            path = target / f"{stem}.png"
            path.write_bytes(base64.b64decode(response["body"]))
            pictures.append(DemoPicture(stem, path, timings))
    return pictures
