"""The example models in examples/: valid configs, artifacts that really predict, a reproducible script."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from chalicelib.core.config import CONFIG_FILE, ModelConfig, parse_config_yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCRIPT = EXAMPLES / "make_examples.py"
NAMES = (
    "breast-cancer-xgboost", "iris-onnx", "iris-skops", "iris-skops-onnx", "digits-onnx",
    "diabetes-lightgbm", "sentiment-predictor",
)  # fmt: skip
MAX_FILE_BYTES = 200 * 1024


def _files(root: Path) -> list[Path]:
    """The files of an example as written by the script: not what intake writes under hidden folders
    (``runtime: onnx`` leaves its converted graph in ``.modelport/``)."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("make_examples", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_examples", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


mk = _load_script()


def _config(name: str) -> ModelConfig:
    path = EXAMPLES / name / CONFIG_FILE
    return parse_config_yaml(path.read_text(encoding="utf-8"), source=str(path))


@pytest.mark.parametrize("name", NAMES)
def test_config_parses_and_lists_real_files(name: str) -> None:
    config = _config(name)
    assert config.name == name
    assert config.artifacts, "examples name their artifacts explicitly"
    for artifact in config.artifacts:
        assert (EXAMPLES / name / artifact).is_file()


def test_examples_are_small() -> None:
    files = [p for n in NAMES for p in _files(EXAMPLES / n)]
    assert files
    too_big = {str(p.relative_to(EXAMPLES)): p.stat().st_size for p in files}
    assert {k: v for k, v in too_big.items() if v > MAX_FILE_BYTES} == {}


@pytest.mark.parametrize(
    ("name", "dataset", "floor"),
    [
        ("iris-onnx", "iris", mk.IRIS_ACCURACY_FLOOR),
        ("digits-onnx", "digits", mk.DIGITS_ACCURACY_FLOOR),
    ],
)
def test_onnx_classifier_accuracy(name: str, dataset: str, floor: float) -> None:
    split = mk.dataset(dataset)
    labels, probabilities = mk.run_onnx(EXAMPLES / name / "model.onnx", mk.model_input(dataset, split.x_test))
    assert probabilities.shape == (len(split.y_test), len(_config(name).labels or ()))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(labels, probabilities.argmax(axis=1))
    assert np.mean(labels == split.y_test) >= floor


def test_skops_pipeline_loads_with_default_trust_and_predicts() -> None:
    import skops.io as sio

    path = EXAMPLES / "iris-skops" / "model.skops"
    assert sio.get_untrusted_types(file=path) == []
    model = sio.load(path)
    assert tuple(model.classes_) == _config("iris-skops").labels
    split = mk.dataset("iris")
    predicted = model.predict(split.x_test)
    assert np.mean(predicted == np.asarray(mk.IRIS_LABELS)[split.y_test]) >= mk.IRIS_ACCURACY_FLOOR


def test_the_onnx_runtime_example_is_the_skops_model_with_runtime_onnx() -> None:
    native, converted = _config("iris-skops"), _config("iris-skops-onnx")
    assert (converted.framework, converted.runtime, native.runtime) == ("sklearn", "onnx", "native")
    model = (EXAMPLES / "iris-skops-onnx" / "model.skops").read_bytes()
    assert model == (EXAMPLES / "iris-skops" / "model.skops").read_bytes()
    assert converted.processing.pre == native.processing.pre
    assert [ref.step for ref in converted.processing.post] == ["labels"]  # no matplotlib in its image
    rows = (EXAMPLES / "iris-skops-onnx" / "samples" / "flowers.csv").read_text().splitlines()
    assert rows[0].split(",") == list(mk.IRIS_FEATURES) and len(rows) == 1 + mk.IRIS_SAMPLE_ROWS


@pytest.mark.parametrize(
    "resample",
    [Image.Resampling.BOX, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC],
    ids=lambda r: r.name,
)
def test_digit_samples_classify_through_the_image_step(resample: Image.Resampling) -> None:
    example = EXAMPLES / "digits-onnx"
    (step,) = _config("digits-onnx").processing.pre
    params = step.params
    assert step.step == "image" and params["mode"] == "L" and params["layout"] == "flat"
    pngs = sorted((example / "samples").glob("digit-*.png"))
    assert len(pngs) == 3
    rows = []
    for png in pngs:
        with Image.open(png) as img:
            assert img.format == "PNG" and img.size == (64, 64)
            assert np.asarray(img.convert("L")).mean() > 128, "dark ink on white paper"
        rows.append(
            mk.decode_image(
                png.read_bytes(),
                size=tuple(params["size"]),
                invert=params["invert"],
                scale=params["scale"],
                resample=resample,
            )
        )
    predicted, _ = mk.run_onnx(example / "model.onnx", np.vstack(rows))
    truth = np.asarray([int(p.stem.removeprefix("digit-")) for p in pngs])
    assert np.sum(predicted == truth) >= 2
    assert mk.check_digit_samples(example, resample) == np.sum(predicted == truth)


def test_lightgbm_text_model_reloads_and_predicts() -> None:
    import lightgbm as lgb
    from sklearn.metrics import r2_score

    booster = lgb.Booster(model_file=str(EXAMPLES / "diabetes-lightgbm" / "model.txt"))
    assert tuple(booster.feature_name()) == mk.DIABETES_FEATURES
    split = mk.dataset("diabetes")
    assert r2_score(split.y_test, booster.predict(split.x_test)) >= mk.DIABETES_R2_FLOOR


@pytest.fixture(scope="module")
def sentiment() -> Any:
    mk.ensure_repo_on_path()
    module = mk.load_python_module(EXAMPLES / "sentiment-predictor" / "predict.py", "sentiment_ex")
    predictor = module.Predictor()
    predictor.setup()
    return predictor


def test_sentiment_predictor_labels_obvious_text(sentiment: Any) -> None:
    result = mk.call_predict(sentiment, text="What a wonderful day, I love it!")
    assert set(result) == {"label", "score", "probability", "words"}
    assert result["label"] == "positive"
    assert result["score"] > 0 and result["probability"] > 0.5
    assert result["words"] == ["wonderful", "love"]
    assert mk.call_predict(sentiment, text="Awful. I hate it.")["label"] == "negative"
    assert mk.call_predict(sentiment, text="This is not good.")["words"] == ["not good"]


def test_sentiment_threshold_moves_the_decision(sentiment: Any) -> None:
    text = "It is fine."  # score 0.5
    assert mk.call_predict(sentiment, text=text)["label"] == "positive"
    assert mk.call_predict(sentiment, text=text, threshold=1.0)["label"] == "negative"
    long_text = " ".join(["terrible"] * 200)  # within max_length 2000, score -600
    assert mk.call_predict(sentiment, text=long_text)["probability"] == 0.0  # no overflow


# --------------------------------------------------------------------------- reproducibility


def _onnx_equivalent(a: bytes, b: bytes) -> None:
    """Same graph and names; weights equal to float32 rounding (BLAS may differ across CPUs)."""
    import onnx
    from onnx import numpy_helper

    def split(data: bytes) -> tuple[bytes, list[np.ndarray]]:
        model = onnx.load_from_string(data)
        # skl2onnx lists the opset imports in an order that varies from one process to the next
        opsets = sorted((o.domain, o.version) for o in model.opset_import)
        del model.opset_import[:]
        for domain, version in opsets:
            model.opset_import.add(domain=domain, version=version)
        weights = []
        for init in model.graph.initializer:
            weights.append(numpy_helper.to_array(init).astype(np.float64).ravel())
            init.ClearField("raw_data")
            init.ClearField("float_data")
            init.ClearField("double_data")
        for node in model.graph.node:
            for attr in node.attribute:
                weights.append(np.asarray([*attr.floats, attr.f], dtype=np.float64))
                attr.ClearField("floats")
                attr.ClearField("f")
        return model.SerializeToString(), weights

    (graph_a, weights_a), (graph_b, weights_b) = split(a), split(b)
    assert graph_a == graph_b, "the ONNX graphs differ beyond their weights"
    assert len(weights_a) == len(weights_b)
    for wa, wb in zip(weights_a, weights_b, strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-6)


def _xgboost_equivalent(a: Path, b: Path) -> None:
    import xgboost as xgb

    ba, bb = xgb.Booster(model_file=str(a)), xgb.Booster(model_file=str(b))
    assert ba.feature_names == bb.feature_names and ba.num_boosted_rounds() == bb.num_boosted_rounds()
    x = mk.dataset("breast_cancer").x_test.astype(np.float32)
    np.testing.assert_allclose(ba.inplace_predict(x), bb.inplace_predict(x), rtol=1e-5, atol=1e-6)


def _lightgbm_equivalent(a: Path, b: Path) -> None:
    import lightgbm as lgb

    ba, bb = lgb.Booster(model_file=str(a)), lgb.Booster(model_file=str(b))
    assert ba.feature_name() == bb.feature_name() and ba.num_trees() == bb.num_trees()
    x = mk.dataset("diabetes").x_test
    np.testing.assert_allclose(ba.predict(x), bb.predict(x), rtol=1e-6)


def _skops_equivalent(a: Path, b: Path) -> None:
    import skops.io as sio

    x = mk.dataset("iris").x_test
    pa, pb = sio.load(a).predict_proba(x), sio.load(b).predict_proba(x)
    np.testing.assert_allclose(pa, pb, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_script_reproduces_the_committed_files(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert [line.split()[0] for line in run.stdout.splitlines()] == list(NAMES)

    made = sorted(p.relative_to(tmp_path) for p in _files(tmp_path))
    committed = sorted(p.relative_to(EXAMPLES) for n in NAMES for p in _files(EXAMPLES / n))
    assert made == committed
    for rel in made:
        new, old = (tmp_path / rel).read_bytes(), (EXAMPLES / rel).read_bytes()
        if new == old:
            continue
        # Byte-stable on one machine; another CPU's BLAS may round the fitted weights differently.
        if rel.suffix == ".onnx":
            _onnx_equivalent(new, old)
        elif rel.suffix == ".skops":
            _skops_equivalent(tmp_path / rel, EXAMPLES / rel)
        elif rel.name == "model.json":
            _xgboost_equivalent(tmp_path / rel, EXAMPLES / rel)
        elif rel.name == "model.txt":
            _lightgbm_equivalent(tmp_path / rel, EXAMPLES / rel)
        else:
            pytest.fail(f"{rel} differs from the committed file")
        warnings.warn(f"{rel}: not byte-identical, numerically equivalent", stacklevel=1)
