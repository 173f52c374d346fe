"""The chained pipeline's stages in process: for every example, pre -> model -> post composed through
JSON (as Step Functions carries the documents) answers exactly what the fused function answers."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chalicelib.core.config import Processing
from chalicelib.core.pipeline import shared_config_text, stages_of
from chalicelib.runtime.handler import ROLE_ENV, Runtime, SharedStage, load
from chalicelib.runtime.intermediate import (
    IntermediateError,
    decode_invocation,
    decode_value,
    encode_invocation,
    encode_value,
)
from chalicelib.runtime.layout import prepare_model_dir
from chalicelib.runtime.loaders import ModelLoadError
from chalicelib.runtime.steps.base import Geometry, StepCall
from chalicelib.services.intake import config_file_for_dir

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "modelport.yaml").is_file())


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            src = EXAMPLES / name
            cache[name] = prepare_model_dir(
                src, config_file_for_dir(src), tmp_path_factory.mktemp(name) / name
            )
        return cache[name]

    yield get


def _events(rt: Runtime, src: Path) -> list[dict[str, Any]]:
    """The protocol's example, every sample file, each in every content type the model answers, and
    requests the first stage refuses (400, 415, 406)."""
    protocol = rt.protocol
    bodies: list[dict[str, Any]] = [
        {"body": json.dumps(protocol.request.example), "content_type": "application/json"}
    ]
    for sample in sorted((src / "samples").glob("*")) if (src / "samples").is_dir() else []:
        data = sample.read_bytes()
        if sample.suffix == ".png":
            b64 = base64.b64encode(data).decode()
            bodies.append({"body": b64, "body_encoding": "base64", "content_type": "image/png"})
            bodies.append({"body": json.dumps({"image": b64}), "content_type": "application/json"})
        elif sample.suffix == ".csv":
            bodies.append({"body": data.decode(), "content_type": "text/csv"})
    events = [{**b, "accept": accept} for b in bodies for accept in protocol.response.content_types]
    events += [
        {"body": "{}", "content_type": "application/json"},
        {"body": "[1, 2", "content_type": "application/json"},
        {"body": "x", "content_type": "application/x-unknown"},
        {"body": json.dumps(protocol.request.example), "accept": "application/x-unknown"},
    ]
    return events


def _chained(stages: list[Runtime], event: dict[str, Any]) -> dict[str, Any]:
    """Each stage's answer goes through JSON to the next, as the state machine carries it; an answer of
    400 or more ends the chain (the state machine's Choice)."""
    doc: Any = event
    for rt in stages:
        doc = json.loads(json.dumps(rt.handle(doc), allow_nan=False))
        if doc["status"] >= 400:
            break
    assert "kind" not in doc, "the chain's answer is a response, not an intermediate document"
    return dict(doc)


@pytest.mark.parametrize("name", NAMES)
def test_the_composed_stages_answer_exactly_what_the_fused_function_answers(
    model_dirs: Callable[[str], Path], name: str, caplog: pytest.LogCaptureFixture
) -> None:
    directory = model_dirs(name)
    fused = load(directory, role="fused")
    roles = stages_of(fused.manifest)
    with caplog.at_level(logging.WARNING, logger="modelport.runtime"):
        stages = [load(directory, role=role) for role in roles]
    assert not caplog.records, "every stage's warm-up answers 200"
    assert [s.role for s in stages] == roles
    assert all(s.model is None for s in stages if s.role != "model")  # pre and post never open it
    events = _events(fused, EXAMPLES / name)
    statuses = set()
    for event in events:
        want = fused.handle(event)
        got = _chained(stages, event)
        statuses.add(want["status"])
        for key in ("status", "content_type", "body_encoding", "body"):
            assert got[key] == want[key], (name, event, key)
        assert list(got["timings"]) == list(want["timings"]), (name, event)
    assert {200, 400, 406, 415} <= statuses, statuses
    # the first call of each was cold: init_ms came once from fused, summed over the chain's stages
    assert "init_ms" not in fused.handle(events[0])["timings"]


def test_a_stage_takes_only_the_document_meant_for_it(model_dirs: Callable[[str], Path]) -> None:
    directory = model_dirs("iris-onnx")
    pre, model, post = (load(directory, role=r, warm=False) for r in ("pre", "model", "post"))
    event = {"body": json.dumps({"rows": [[5.1, 3.5, 1.4, 0.2]]}), "content_type": "application/json"}
    for stage, doc in ((model, event), (post, pre.handle(event)), (model, {"kind": "other"})):
        answer = stage.handle(doc)
        assert answer["status"] == 500
        body = json.loads(answer["body"])
        assert body["code"] == "PipelineError" and body["stage"] == stage.role, body
    handed = pre.handle(event)
    assert (handed["status"], handed["next"]) == (200, "model")
    to_post = model.handle(handed)
    assert post.handle(to_post)["status"] == 200
    corrupt = [
        (model, {**handed, "value": {"input": {"$tensor": {"dtype": "float32"}}}}),  # no shape
        (model, {**handed, "value": {"$tensor": {"dtype": "float32", "shape": [1], "data": "%%"}}}),
        (model, {**handed, "timings": {"pre_ms": "soon"}}),
        (post, {**to_post, "invocation": {"image_png": base64.b64encode(b"not a png").decode()}}),
        (post, {**to_post, "value": {"$unknown": 1}}),
    ]
    for stage, doc in corrupt:
        answer = stage.handle(doc)
        assert (answer["status"], json.loads(answer["body"])["code"]) == (500, "PipelineError"), doc


def test_the_role_comes_from_the_environment_at_load(
    model_dirs: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = model_dirs("sentiment-predictor")
    monkeypatch.setenv(ROLE_ENV, "model")
    assert load(directory, warm=False).role == "model"
    monkeypatch.delenv(ROLE_ENV)
    assert load(directory, warm=False).role == "fused"
    monkeypatch.setenv(ROLE_ENV, "post")  # no post steps: no post stage
    with pytest.raises(ModelLoadError, match="no post stage"):
        load(directory, warm=False)
    monkeypatch.setenv(ROLE_ENV, "postprocess")
    with pytest.raises(ModelLoadError, match="MODELPORT_ROLE"):
        load(directory, warm=False)


def test_values_cross_stages_with_their_types_and_bytes() -> None:
    zipmap = [{0: np.float32(0.25), 1: np.float32(0.75)}]
    value: dict[str, Any] = {
        "probabilities": np.asarray([[0.1, 0.9]], dtype=np.float32).T,  # not contiguous
        "label": np.asarray(["setosa", "virginica"]),
        "ids": np.arange(6, dtype=">i8").reshape(2, 3),  # big-endian in, same values out
        "zipmap": np.asarray(zipmap + zipmap, dtype=object),
        "flag": np.bool_(True),
        "rows": [("a", 0.5), ("b", float("nan")), ("c", float("-inf"))],
        "bytes": b"\x00\xff",
        "$weird": {"$tensor": 1},
        "nothing": None,
    }
    doc = json.loads(json.dumps(encode_value(value), allow_nan=False))
    back = decode_value(doc)
    assert set(back) == set(value)
    for key in ("probabilities", "label", "ids"):
        assert back[key].dtype == value[key].dtype.newbyteorder("=") and back[key].shape == value[key].shape
        assert np.array_equal(back[key], value[key])
    assert back["probabilities"].flags.writeable
    assert back["zipmap"].dtype == object and back["zipmap"][1] == zipmap[0]
    assert type(next(iter(back["zipmap"][0]))) is int
    assert isinstance(back["zipmap"][0][1], np.float32)
    assert isinstance(back["flag"], np.bool_) and back["flag"]
    assert back["rows"][0] == ("a", 0.5) and np.isnan(back["rows"][1][1]) and back["rows"][2][1] == -np.inf
    assert (back["bytes"], back["$weird"], back["nothing"]) == (b"\x00\xff", {"$tensor": 1}, None)
    with pytest.raises(IntermediateError, match="cannot cross stages"):
        encode_value({"x": object()})


def test_the_request_state_crosses_stages() -> None:
    from PIL import Image

    inv = StepCall(
        table=(("a", "b"), np.asarray([[1.0, 2.0], [3.0, 4.0]])),
        image=Image.new("L", (5, 3), 128),
        geometry=Geometry(5, 3, 8, 8, scale_x=1.6, dst_y=2.0),
    )
    back = decode_invocation(json.loads(json.dumps(encode_invocation(inv, image=True))))
    assert back.table is not None and back.table[0] == ("a", "b")
    assert inv.table is not None and np.array_equal(back.table[1], inv.table[1])
    assert back.geometry == inv.geometry
    assert back.image.mode == "RGB" and back.image.tobytes() == inv.image.convert("RGB").tobytes()
    assert decode_invocation(encode_invocation(inv, image=False)).image is None


@pytest.mark.parametrize(
    "post", [["boxes", {"overlay": {"title": "Shapes"}}], ["boxes"], [{"heatmap": {"output": "mask"}}]]
)
def test_a_detector_with_an_overlay_composes_like_fused(
    tmp_path: Path, post: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Boxes map back through the letterbox geometry and the overlay draws on the request's image: both
    cross from the pre stage to the post stage."""
    from PIL import Image

    from tests.unit.stepkit import detector_dir, encode, scene_png

    src = detector_dir(tmp_path, post)
    directory = prepare_model_dir(src, config_file_for_dir(src), tmp_path / "model")
    fused = load(directory)
    with caplog.at_level(logging.WARNING, logger="modelport.runtime"):
        stages = [load(directory, role=role) for role in stages_of(fused.manifest)]
    assert not caplog.records, "every stage's warm-up answers 200"
    transparent = Image.new("RGBA", (40, 90), (255, 0, 0, 0))
    pictures = [scene_png(), scene_png("JPEG"), encode(transparent), encode(Image.new("P", (70, 30)))]
    for picture in pictures:
        for accept in fused.protocol.response.content_types:
            event = {
                "body": base64.b64encode(picture).decode(),
                "body_encoding": "base64",
                "content_type": "image/png" if picture.startswith(b"\x89PNG") else "image/jpeg",
                "accept": accept,
            }
            want, got = fused.handle(event), _chained(stages, event)
            assert want["status"] == 200, want["body"]
            assert {k: got[k] for k in want if k not in ("timings", "runs")} == {
                k: v for k, v in want.items() if k not in ("timings", "runs")
            }
            assert list(got["timings"]) == list(want["timings"])


def test_shared_pre_and_post_functions_serve_every_example_like_fused(
    model_dirs: Callable[[str], Path],
) -> None:
    """One pre and one post function for all models: the Task hands them the model's config with the
    document (as ``state_machine_definition(..., shared=...)`` writes it); the model runs in its own."""
    shared = {role: SharedStage(role, capacity=2) for role in ("pre", "post")}
    for _ in range(2):  # the second round finds some configs evicted (capacity 2 < 4 models with steps)
        for name in NAMES:
            directory = model_dirs(name)
            fused = load(directory)
            config = shared_config_text(fused.manifest)
            roles = stages_of(fused.manifest)
            model = load(directory, role="model")
            for event in _events(fused, EXAMPLES / name):
                want = fused.handle(event)
                doc: Any = event
                for role in roles:
                    stage = model if role == "model" else shared[role]
                    given = doc if role == "model" else {"model": config, "input": doc}
                    doc = json.loads(json.dumps(stage.handle(given), allow_nan=False))
                    if doc["status"] >= 400:
                        break
                assert {k: doc[k] for k in want if k not in ("timings", "runs")} == {
                    k: v for k, v in want.items() if k not in ("timings", "runs")
                }, (name, event)
                assert set(doc["timings"]) - {"init_ms"} == set(want["timings"]) - {"init_ms"}
    assert len(shared["post"].cache) == 2


def test_a_shared_stage_refuses_what_it_cannot_run(model_dirs: Callable[[str], Path]) -> None:
    stage = SharedStage("pre")
    event = {"body": "{}", "content_type": "application/json"}
    manifest = load(model_dirs("iris-onnx"), warm=False).manifest
    processing = Processing.model_validate({"pre": ["steps/clean.py:clean"], "post": ["labels"]})
    user = shared_config_text(manifest.model_copy(update={"processing": processing}))
    for given in (event, {"model": "{}", "input": event}, {"model": user, "input": event}):
        answer = stage.handle(given)
        assert answer["status"] == 500 and json.loads(answer["body"])["code"] == "PipelineError"
    with pytest.raises(ModelLoadError, match="pre and post"):
        SharedStage("model")


def test_each_stage_reports_its_run_and_the_first_request_bills_the_init(
    model_dirs: Callable[[str], Path],
) -> None:
    """What Lambda bills, per function: a chain's answer lists every stage's run, the cold ones with the
    init of their environment (only the first request); a shared stage bills its own environment's init."""
    directory = model_dirs("iris-onnx")
    fused = load(directory)
    event = _events(fused, EXAMPLES / "iris-onnx")[0]
    (cold,) = fused.handle(event)["runs"]
    (warm,) = fused.handle(event)["runs"]
    assert cold["role"] == "fused" and cold["init_ms"] == fused.init_ms > 0 and cold["ms"] > 0
    assert "init_ms" not in warm
    stages = [load(directory, role=role) for role in stages_of(fused.manifest)]
    first, second = _chained(stages, event), _chained(stages, event)
    assert [r["role"] for r in first["runs"]] == ["pre", "model", "post"]
    assert all(r["init_ms"] > 0 for r in first["runs"]) and all("init_ms" not in r for r in second["runs"])
    shared = SharedStage("pre", started=time.perf_counter() - 0.5)  # its environment began 500 ms ago
    config = shared_config_text(fused.manifest)
    runs = [shared.handle({"model": config, "input": event})["runs"] for _ in range(2)]
    assert runs[0][0]["init_ms"] >= 500 and "init_ms" not in runs[1][0]


def test_a_provisioned_environment_bills_no_init_with_its_first_request(
    model_dirs: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Provisioned concurrency pays its environments' init by the hour, not per request."""
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "provisioned-concurrency")
    runtime = load(model_dirs("iris-onnx"))
    answer = runtime.handle(_events(runtime, EXAMPLES / "iris-onnx")[0])
    (run,) = answer["runs"]
    assert "init_ms" not in run
    assert answer["timings"]["init_ms"] > 0  # still in Server-Timing: the time, not the bill
