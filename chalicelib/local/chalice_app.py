"""Where the Chalice app (``app.py``) lives and how the local stack loads it: beside ``chalicelib``, not in
it (Chalice's layout). Its own module so the stack and the API process both import it without a cycle."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""Where ``app.py`` (the Chalice app) lives, next to ``chalicelib``."""


def load_app() -> Any:
    """The module ``app.py``: the Chalice app and its event handlers."""
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    return importlib.import_module("app")
