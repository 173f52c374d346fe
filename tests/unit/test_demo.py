"""``modelport demo``'s requests: each example's samples its protocol takes, else its example request.

The demo's deploy-and-invoke run is tested against the running local stack in
tests/functional/test_local_stack.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.demo import samples_of
from chalicelib.services.intake import config_file_for_dir
from tests.unit.stepkit import EXAMPLES


@pytest.mark.parametrize(
    ("example", "samples", "media"),
    [
        ("diabetes-lightgbm", ["patients"], "text/csv"),
        ("digits-onnx", ["digit-0", "digit-3", "digit-7"], "image/png"),
        ("iris-onnx", ["example"], "application/json"),
    ],
)
def test_each_example_sends_its_samples(example: str, samples: list[str], media: str) -> None:
    found = samples_of(EXAMPLES / example, config_file_for_dir(EXAMPLES / example))
    assert [s.name for s in found] == samples
    assert {s.content_type for s in found} == {media}


def test_without_samples_the_protocols_example_is_sent(tmp_path: Path) -> None:
    manifest = config_file_for_dir(EXAMPLES / "iris-onnx")
    (sample,) = samples_of(EXAMPLES / "iris-onnx", manifest)
    assert json.loads(sample.body) == manifest.protocol.request.example


def test_samples_the_protocol_does_not_take_are_left_out(tmp_path: Path) -> None:
    model = tmp_path / "digits"
    model.mkdir()
    for path in (EXAMPLES / "digits-onnx").iterdir():
        if path.is_file():
            (model / path.name).write_bytes(path.read_bytes())
    (model / "samples").mkdir()
    (model / "samples" / "notes.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (model / "samples" / "seven.png").write_bytes(
        (EXAMPLES / "digits-onnx" / "samples" / "digit-7.png").read_bytes()
    )
    found = samples_of(model, config_file_for_dir(model))
    assert [(s.name, s.content_type) for s in found] == [("seven", "image/png")]
