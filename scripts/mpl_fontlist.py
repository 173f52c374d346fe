"""Writes ``chalicelib/runtime/steps/mpl-fontlist-v<version>.json``: matplotlib's font list of its own
bundled fonts, which model containers copy into ``MPLCONFIGDIR`` at init instead of building it
(``runtime.steps.drawing.prepare_matplotlib``). Run it with the pinned matplotlib after a version bump:

    .venv/bin/python scripts/mpl_fontlist.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bundled_font_list() -> str:
    """The JSON matplotlib writes for a machine with no system fonts (a model image has none)."""
    import matplotlib
    from matplotlib import font_manager

    manager = font_manager.FontManager()
    data = Path(matplotlib.get_data_path())
    for kind in ("ttflist", "afmlist"):
        entries = [e for e in getattr(manager, kind) if Path(e.fname).is_relative_to(data)]
        entries.sort(key=lambda e: Path(e.fname).relative_to(data).as_posix())
        setattr(manager, kind, entries)
    return json.dumps(manager, cls=font_manager._JSONEncoder, indent=2) + "\n"


def target() -> Path:
    from matplotlib import font_manager

    return ROOT / "chalicelib/runtime/steps" / f"mpl-fontlist-v{font_manager.FontManager.__version__}.json"


if __name__ == "__main__":
    path = target()
    path.write_text(bundled_font_list())
    print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
