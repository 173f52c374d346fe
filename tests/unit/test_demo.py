"""``modelport demo``'s pictures: each example with a visualization renders its samples to PNG files."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.services.demo import demo_pictures
from tests.unit.stepkit import EXAMPLES, png_image


@pytest.mark.parametrize(
    ("example", "samples", "size"),
    [
        ("diabetes-lightgbm", ["patients"], (640, 400)),
        ("digits-onnx", ["digit-0", "digit-3", "digit-7"], (640, 360)),
        ("iris-onnx", ["example"], (640, 360)),  # no samples: the protocol's generated example request
    ],
)
def test_examples_with_a_visualization_save_their_pictures(
    tmp_path: Path, example: str, samples: list[str], size: tuple[int, int]
) -> None:
    pictures = demo_pictures(EXAMPLES / example, tmp_path)
    assert [p.sample for p in pictures] == samples
    for picture in pictures:
        assert picture.problem is None and picture.path == tmp_path / example / f"{picture.sample}.png"
        assert png_image(picture.path.read_bytes()).size == size
        assert picture.timings["post_ms"] > 0


def test_an_example_without_a_picture_saves_nothing(tmp_path: Path) -> None:
    assert demo_pictures(EXAMPLES / "sentiment-predictor", tmp_path) == []
    assert not (tmp_path / "sentiment-predictor").exists()
