"""The font list model containers copy into ``MPLCONFIGDIR`` instead of building it at each cold start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.runtime.steps.drawing import FONT_LIST
from tests.support import ROOT

pytestmark = pytest.mark.unit

sys.path.insert(0, str(ROOT / "scripts"))
import mpl_fontlist  # noqa: E402


def test_the_committed_font_list_is_what_the_pinned_matplotlib_builds() -> None:
    """Fails after a matplotlib bump until ``scripts/mpl_fontlist.py`` is run again (and its file named
    for the new font-list version)."""
    assert mpl_fontlist.target() == FONT_LIST
    assert FONT_LIST.read_text() == mpl_fontlist.bundled_font_list()
    entries = json.loads(FONT_LIST.read_text())["ttflist"]
    assert any(e["name"] == "DejaVu Sans" for e in entries)
    assert not any(Path(e["fname"]).is_absolute() for e in entries)  # fits any install's data path


PROBE = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
from chalicelib.runtime.steps.drawing import prepare_matplotlib
prepare_matplotlib()
from matplotlib import font_manager
from matplotlib.figure import Figure
print("font", font_manager.findfont("DejaVu Sans"))
print("doc", len(Figure.set.__doc__ or ""))
"""


def test_a_new_environment_reads_the_seeded_list_instead_of_parsing_every_font(tmp_path: Path) -> None:
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "generated new fontManager" not in out, out  # what matplotlib logs when it builds one
    assert (tmp_path / "mpl" / "fontlist-v3.11.0.json").read_text() == FONT_LIST.read_text()
    font = next(line for line in out.splitlines() if line.startswith("font "))
    assert font.endswith("mpl-data/fonts/ttf/DejaVuSans.ttf"), out
    assert "doc " in out  # Artist docstrings are not built: only the fixed text before the property list
    assert int(out.rsplit("doc ", 1)[1].split()[0]) < 1000, out


def test_without_the_seed_matplotlib_builds_its_list_as_before(tmp_path: Path) -> None:
    """The control: the log line the test above looks for is what an unseeded start prints."""
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl"), "PYTHONPATH": str(ROOT)}
    code = PROBE.replace("prepare_matplotlib()", "pass")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "generated new fontManager" in out.stdout + out.stderr
    assert int(out.stdout.rsplit("doc ", 1)[1].split()[0]) > 1000  # and the list of its properties
