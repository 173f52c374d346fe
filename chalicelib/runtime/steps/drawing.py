"""Visualization steps at runtime: PNG pictures of a result, deterministic and readable.

Every renderer gives the same bytes for the same data: a fixed pixel size and DPI, DejaVu Sans (shipped
with matplotlib) for charts and Pillow's built-in font for drawings on images, no PNG metadata, and no
state carried from one request to the next except caches keyed by everything they depend on.
matplotlib (Agg, object API, no pyplot) and Pillow are imported when a step is bound at init, so a model
without charts never pays for them.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

FONT_LIST = Path(__file__).with_name("mpl-fontlist-v3.11.0.json")
"""matplotlib's font list for its bundled fonts, as the pinned matplotlib (3.11.x, font list 3.11.0) writes
it: font paths are relative to its data directory, so one file fits every install. Made by
``scripts/mpl_fontlist.py``; a unit test checks it is what that matplotlib builds."""
_prepared = False

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "text.parse_math": False,  # labels are user text: "$" must not start mathtext
    "svg.hashsalt": "modelport",
}


def prepare_matplotlib() -> None:
    """Called before the first matplotlib import of a process; saves ~0.2 s of every cold start.

    Without a font list in ``MPLCONFIGDIR`` (a new Lambda environment's /tmp never has one) matplotlib
    parses every bundled font file to build one; the committed list is copied there instead (a version
    matplotlib does not read under that name is ignored by it, and it builds its own). And each Artist
    class built at import formats a docstring of all its properties, which nothing here reads."""
    global _prepared
    if _prepared:
        return
    _prepared = True
    cache = os.environ.get("MPLCONFIGDIR")
    if cache:
        target = Path(cache) / FONT_LIST.name.removeprefix("mpl-")
        if not target.exists():
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(FONT_LIST, target)
            except OSError:  # a read-only MPLCONFIGDIR: matplotlib falls back to a directory of its own
                pass
    import matplotlib.artist

    matplotlib.artist.kwdoc = _no_kwdoc


def _no_kwdoc(artist: Any) -> str:
    return ""


def png_of(image: Any) -> bytes:
    """A Pillow image as PNG bytes: RGB, no metadata, zlib level 3 (2x faster than 6, 15% larger)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def canvas_png(canvas: Any) -> bytes:
    from PIL import Image as PILImage

    canvas.draw()
    return png_of(PILImage.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()))


def short(label: str, limit: int = 32) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "\u2026"
