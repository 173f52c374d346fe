"""Build the example models in ``examples/`` from data that ships with scikit-learn (no downloads).

    python3 examples/make_examples.py [--out examples]

Every example directory gets its model file(s) and a ``modelport.yaml``. The script is deterministic
(fixed seeds, fixed train/test split, byte-stable files) and idempotent: it overwrites what it wrote
before. After writing each artifact it loads it back the way a deployment would and checks that it
really predicts: the held-out metric printed per example is computed from the file on disk.

The helpers (``dataset``, ``model_input``, ``decode_image``, ``run_onnx``, ``call_predict``) are also
used by ``tests/unit/test_examples.py``, which rebuilds the same held-out data.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import shutil
import sys
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SEED = 0
TEST_SIZE = 0.25
ONNX_OPSET = {"": 17, "ai.onnx.ml": 3}

IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
IRIS_LABELS = ("setosa", "versicolor", "virginica")
DIABETES_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")

# The digits model takes load_digits pixels / 16 (0..1, 1 = ink) as float32[batch, 64]. The `image`
# pre step gets there from a picture of dark ink on white: grayscale, resize to 8x8, invert
# (255 - p), multiply by 1/255.
DIGIT_SIZE = (8, 8)  # [height, width], as the image step's `size`
DIGIT_INK_MAX = 16.0  # load_digits pixels are 0..16, 16 = ink
DIGIT_SCALE = 1 / 255
DIGIT_RESAMPLE = Image.Resampling.BOX
# Samples must classify correctly under each of these, whichever one the runtime's step uses.
DIGIT_CHECK_FILTERS = (
    Image.Resampling.BOX,
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
    Image.Resampling.LANCZOS,
)
DIGIT_SAMPLE_LABELS = (0, 3, 7)
DIGIT_SAMPLE_PX = 64

IRIS_ACCURACY_FLOOR = 0.9
DIGITS_ACCURACY_FLOOR = 0.9
DIABETES_R2_FLOOR = 0.25
CANCER_ACCURACY_FLOOR = 0.9
CANCER_SAMPLE_ROWS = 5
IRIS_SAMPLE_ROWS = 5
DIABETES_SAMPLE_ROWS = 40

# A toy lexicon for the Python-predictor example: no sentiment data ships with scikit-learn, so the
# weights are written by hand (roughly: 1 mild, 2 clear, 3 strong), not learned.
POSITIVE_WORDS = {
    "amazing": 3.0,
    "awesome": 3.0,
    "beautiful": 2.0,
    "best": 2.5,
    "brilliant": 3.0,
    "delightful": 2.5,
    "enjoy": 1.5,
    "enjoyed": 1.5,
    "excellent": 3.0,
    "fantastic": 3.0,
    "fine": 0.5,
    "good": 1.5,
    "great": 2.0,
    "happy": 2.0,
    "helpful": 1.5,
    "like": 1.0,
    "love": 2.5,
    "nice": 1.5,
    "perfect": 3.0,
    "recommend": 2.0,
    "wonderful": 3.0,
}
NEGATIVE_WORDS = {
    "angry": -2.0,
    "annoying": -2.0,
    "awful": -3.0,
    "bad": -1.5,
    "boring": -2.0,
    "broken": -2.0,
    "disappointed": -2.5,
    "disappointing": -2.5,
    "hate": -3.0,
    "horrible": -3.0,
    "poor": -1.5,
    "refund": -1.5,
    "sad": -1.5,
    "slow": -1.0,
    "terrible": -3.0,
    "ugly": -2.0,
    "useless": -2.5,
    "waste": -2.5,
    "worse": -2.0,
    "worst": -3.0,
}
NEGATORS = ("never", "no", "not", "nothing", "without")  # and any word ending in n't
NEGATION_WINDOW = 3  # a negator flips sentiment words in the next 3 tokens (not past punctuation)
SENTIMENT_CHECKS = (
    ("I love this, it is absolutely wonderful.", "positive"),
    ("Great service and a really helpful team.", "positive"),
    ("Not bad at all, I would recommend it.", "positive"),
    ("The best purchase I made this year.", "positive"),
    ("Nice design and it works fine.", "positive"),
    ("This is the worst product I have ever bought.", "negative"),
    ("Terrible support, a complete waste of money.", "negative"),
    ("It arrived broken and I want a refund.", "negative"),
    ("I didn't enjoy it, boring and slow.", "negative"),
    ("Not good, quite disappointing.", "negative"),
)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Split:
    """A deterministic train/test split of one scikit-learn dataset."""

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def dataset(name: str) -> Split:
    """The fixed split of ``iris``, ``digits`` (pixels 0..16), ``diabetes`` (unscaled units) or
    ``breast_cancer``."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris
    from sklearn.model_selection import train_test_split

    if name == "breast_cancer":
        data = load_breast_cancer()
    elif name == "iris":
        data = load_iris()
    elif name == "digits":
        data = load_digits()
    elif name == "diabetes":
        data = load_diabetes(scaled=False)
    else:
        raise ValueError(f"unknown dataset {name!r}")
    x = np.asarray(data.data, dtype=np.float64)
    y = np.asarray(data.target)
    stratify = None if name == "diabetes" else y
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SEED, stratify=stratify
    )
    return Split(x_train, x_test, y_train, y_test)


def model_input(name: str, x: np.ndarray) -> np.ndarray:
    """Rows of ``dataset(name)`` as the served model takes them."""
    if name == "digits":
        return (x / DIGIT_INK_MAX).astype(np.float32)
    if name == "iris":
        return x.astype(np.float32)
    return x


# --------------------------------------------------------------------------- runtime mirrors


def run_onnx(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) from an exported classifier, on the CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], {"input": x})
    return np.asarray(labels), np.asarray(probabilities)


def decode_image(
    data: bytes,
    *,
    size: tuple[int, int] = DIGIT_SIZE,
    invert: bool = True,
    scale: float = DIGIT_SCALE,
    resample: Image.Resampling = DIGIT_RESAMPLE,
) -> np.ndarray:
    """What the ``image`` pre step makes of a PNG with mode L, layout flat: float32[1, h*w]."""
    height, width = size
    with Image.open(io.BytesIO(data)) as img:
        gray = img.convert("L").resize((width, height), resample=resample)
    pixels = np.asarray(gray, dtype=np.float32)
    if invert:
        pixels = 255.0 - pixels
    return (pixels * np.float32(scale)).reshape(1, height * width)


def render_digit(pixels: np.ndarray, px: int = DIGIT_SAMPLE_PX) -> bytes:
    """A load_digits row (0..16, 16 = ink) as a px x px PNG of dark ink on white."""
    ink = np.rint(pixels.reshape(DIGIT_SIZE) * (255.0 / DIGIT_INK_MAX))
    img = Image.fromarray((255 - ink).astype(np.uint8)).resize((px, px), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def call_predict(predictor: Any, **inputs: Any) -> Any:
    """Call ``predictor.predict`` as the container does: missing inputs take their Input default."""
    from chalicelib.runtime.predictor import InputSpec

    kwargs = {}
    for name, param in inspect.signature(predictor.predict).parameters.items():
        if name in inputs:
            kwargs[name] = inputs[name]
        elif isinstance(param.default, InputSpec) and param.default.default is not ...:
            kwargs[name] = param.default.default
        elif not isinstance(param.default, InputSpec) and param.default is not param.empty:
            kwargs[name] = param.default
        else:
            raise TypeError(f"missing required input {name!r}")
    return predictor.predict(**kwargs)


def load_python_module(path: Path, name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- helpers


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1024:.1f} KB"


def _to_onnx(model: Any, classifier: Any, n_features: int, name: str) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model,
        name=name,  # the graph name; skl2onnx picks a random one otherwise
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=ONNX_OPSET,
    )
    return onx.SerializeToString()


def _check_onnx_classifier(
    path: Path, model: Any, x: np.ndarray, y: np.ndarray, floor: float
) -> tuple[float, float]:
    """Accuracy of the ONNX file on held-out rows, checked against the scikit-learn model."""
    labels, probabilities = run_onnx(path, x)
    ours = float(np.mean(labels == y))
    theirs = float(model.score(x, y))
    assert abs(ours - theirs) <= 1 / len(y) + 1e-9, f"{path}: onnx {ours} != sklearn {theirs}"
    np.testing.assert_allclose(probabilities, model.predict_proba(x), atol=1e-4)
    assert ours >= floor, f"{path}: accuracy {ours:.3f} below {floor}"
    return ours, theirs


def _normalize_skops(data: bytes) -> bytes:
    """Make a .skops zip byte-stable: skops numbers objects and array files by id() and stamps
    entries with the current time. Renumber them in document order (keeping shared references
    shared) and use a fixed timestamp."""
    src = zipfile.ZipFile(io.BytesIO(data))
    infos = src.infolist()
    files = [i.filename for i in infos if i.filename != "schema.json"]
    renamed = {name: f"{n}.npy" for n, name in enumerate(files)}
    ids: dict[int, int] = {}
    seen: set[str] = set()

    def renumber(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("__id__"), int):
                node["__id__"] = ids.setdefault(node["__id__"], len(ids) + 1)  # 0 means "none"
            if node.get("file") in renamed:
                seen.add(node["file"])
                node["file"] = renamed[node["file"]]
            for value in node.values():
                renumber(value)
        elif isinstance(node, list):
            for value in node:
                renumber(value)

    schema = json.loads(src.read("schema.json"))
    renumber(schema)
    assert seen == set(renamed), f"skops schema does not refer to {sorted(set(renamed) - seen)}"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in infos:
            if info.filename == "schema.json":
                name, content = info.filename, json.dumps(schema, indent=2).encode()
            else:
                name, content = renamed[info.filename], src.read(info)
            fixed = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = info.compress_type
            fixed.external_attr = info.external_attr
            dst.writestr(fixed, content)
    return out.getvalue()


# --------------------------------------------------------------------------- examples

IRIS_ONNX_YAML = """\
# Generated by examples/make_examples.py; edit the script, not this file.
name: iris-onnx
description: >-
  Iris species from four flower measurements in cm (scikit-learn StandardScaler +
  LogisticRegression on the iris data set, exported to ONNX).
framework: onnx
artifacts: [model.onnx]
labels: [setosa, versicolor, virginica]
environment:
  memory_mb: 512
  timeout_s: 10
processing:
  pre:
    - tabular: {features: [sepal_length, sepal_width, petal_length, petal_width]}
  post:
    - labels
    - bar_chart: {title: Iris species probabilities}
"""

IRIS_SKOPS_YAML = """\
# Generated by examples/make_examples.py; edit the script, not this file.
name: iris-skops
description: >-
  Iris species from four flower measurements in cm (scikit-learn StandardScaler +
  LogisticRegression saved with skops).
framework: sklearn
artifacts: [model.skops]
labels: [setosa, versicolor, virginica]
environment:
  memory_mb: 512
  timeout_s: 10
processing:
  pre:
    # The pipeline was fitted on a plain array, so the file holds no feature names: name them here.
    - tabular: {features: [sepal_length, sepal_width, petal_length, petal_width]}
  post:
    - labels
    - bar_chart: {title: Iris species probabilities}
"""

IRIS_SKOPS_ONNX_YAML = """\
# Generated by examples/make_examples.py; edit the script, not this file.
name: iris-skops-onnx
description: >-
  Iris species from four flower measurements in cm: the iris-skops model (scikit-learn
  StandardScaler + LogisticRegression saved with skops), converted to ONNX when it is deployed
  and served by onnxruntime, with no scikit-learn in its image.
framework: sklearn
# Converted at deploy time (skl2onnx) and checked against the estimator on samples/ and on
# generated rows; the requests and answers are those of runtime: native.
runtime: onnx
artifacts: [model.skops]
labels: [setosa, versicolor, virginica]
environment:
  memory_mb: 512
  timeout_s: 10
processing:
  pre:
    # The pipeline was fitted on a plain array, so the file holds no feature names: name them here.
    - tabular: {features: [sepal_length, sepal_width, petal_length, petal_width]}
  post:
    # No chart: matplotlib would be a third of the image (it is an ONNX tabular image without it).
    - labels
"""

DIGITS_YAML = f"""\
# Generated by examples/make_examples.py; edit the script, not this file.
name: digits-onnx
description: >-
  Handwritten digit 0-9 from a picture of dark ink on white paper, the digit filling the
  frame (scikit-learn MLPClassifier on the 8x8 digits data set, exported to ONNX).
framework: onnx
artifacts: [model.onnx]
labels: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
processing:
  pre:
    # The model was trained on load_digits pixels / 16: values 0..1 with 1 = ink, float32[1, 64].
    # The image step decodes the picture, converts it to grayscale (L), resizes it to 8x8, inverts
    # it (255 - p, so dark ink becomes high values), multiplies by scale = 1/255 (0..255 -> 0..1)
    # and lays it out flat. Try the pictures in samples/.
    - image: {{size: [8, 8], mode: L, layout: flat, invert: true, scale: {DIGIT_SCALE!r}}}
  post:
    - top_k: {{top_k: 3}}
    # The three best digits as a bar chart: ask for Accept: image/png to get the picture alone.
    - bar_chart: {{title: Digit probabilities (top 3)}}
"""

DIABETES_YAML = """\
# Generated by examples/make_examples.py; edit the script, not this file.
name: diabetes-lightgbm
description: >-
  Diabetes progression one year after baseline (a score of about 25-350) from ten baseline
  values in their natural units: age (years), sex (1 or 2), bmi, bp (mean blood pressure) and
  six blood serum measurements s1-s6 (LightGBM regressor on scikit-learn's diabetes data set).
framework: lightgbm
artifacts: [model.txt]
processing:
  pre:
    # The feature names (age, sex, bmi, bp, s1..s6) come from the model file.
    - tabular
  post:
    # One {prediction} per row, rounded; then the batch's predictions against body mass index.
    # Try samples/patients.csv (40 held-out patients) with Accept: image/png.
    - regression: {decimals: 1}
    - scatter:
        feature: bmi
        title: Predicted progression by body mass index
        y_label: predicted progression (1 year)
"""

CANCER_YAML = """\
# Generated by examples/make_examples.py; edit the script, not this file.
name: breast-cancer-xgboost
description: >-
  Whether a breast mass is malignant or benign from 30 measurements of its cell nuclei in a
  digitized image (XGBoost binary classifier on scikit-learn's Wisconsin breast cancer data set,
  saved in XGBoost's JSON format).
framework: xgboost
artifacts: [model.json]
labels: [malignant, benign]
processing:
  pre:
    # The 30 feature names (mean_radius ... worst_fractal_dimension) come from the model file.
    - tabular
  post:
    # P(benign) per row as both labels with their scores; then a bar chart of the first row.
    - labels
    - bar_chart: {title: Malignant or benign}
"""

SENTIMENT_YAML = """\
# Generated by examples/make_examples.py; edit the script, not this file.
name: sentiment-predictor
description: >-
  Toy English sentiment from a hand-written lexicon of about 40 words with simple negation: a demo
  of the Python predictor contract, not a trained model.
framework: python
artifacts: [predict.py, weights.json]
environment:
  memory_mb: 256
  timeout_s: 10
# No chart: predict() returns a label, a score and the words it matched, not per-word weights to draw.
"""


def _number_text(value: float) -> str:
    return np.format_float_positional(float(value), trim="-")


def diabetes_sample(split: Split, rows: int = DIABETES_SAMPLE_ROWS) -> str:
    """The first held-out patients as CSV with a header row."""
    lines = [",".join(DIABETES_FEATURES)]
    lines += [",".join(_number_text(v) for v in row) for row in split.x_test[:rows]]
    return "\n".join(lines) + "\n"


def iris_batch() -> str:
    """All 150 flowers of the iris data set as CSV with a header row: the demo's event-driven batch input."""
    from sklearn.datasets import load_iris

    lines = [",".join(IRIS_FEATURES)]
    lines += [",".join(_number_text(v) for v in row) for row in load_iris().data]
    return "\n".join(lines) + "\n"


def make_iris_onnx(out: Path) -> str:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    d = dataset("iris")
    x_train, x_test = model_input("iris", d.x_train), model_input("iris", d.x_test)
    clf = LogisticRegression(max_iter=1000, random_state=SEED)
    model = Pipeline([("scale", StandardScaler()), ("clf", clf)]).fit(x_train, d.y_train)
    path = out / "model.onnx"
    _write(path, _to_onnx(model, clf, len(IRIS_FEATURES), "iris_onnx"))
    _write(out / "modelport.yaml", IRIS_ONNX_YAML)
    _write(out / "batch" / "flowers.csv", iris_batch())
    acc, ref = _check_onnx_classifier(path, model, x_test, d.y_test, IRIS_ACCURACY_FLOOR)
    return f"accuracy {acc:.3f} on {len(d.y_test)} held-out (sklearn {ref:.3f}), {_size(path)}"


def iris_skops_model() -> Any:
    """The iris-skops pipeline, fitted on a numpy array (pandas is not a dependency), with the species
    names as classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    d = dataset("iris")
    names = np.asarray(IRIS_LABELS)
    model = Pipeline(
        [("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=1000, random_state=SEED))]
    ).fit(d.x_train, names[d.y_train])
    assert tuple(model.classes_) == IRIS_LABELS
    return model


def make_iris_skops(out: Path) -> str:
    import skops.io as sio

    d = dataset("iris")
    names = np.asarray(IRIS_LABELS)
    model = iris_skops_model()
    path = out / "model.skops"
    _write(path, _normalize_skops(sio.dumps(model)))
    _write(out / "modelport.yaml", IRIS_SKOPS_YAML)

    untrusted = sio.get_untrusted_types(file=path)
    assert untrusted == [], f"{path}: skops would not load these by default: {untrusted}"
    loaded = sio.load(path)
    y_true = names[d.y_test]
    assert np.array_equal(loaded.predict(d.x_test), model.predict(d.x_test))
    np.testing.assert_allclose(loaded.predict_proba(d.x_test), model.predict_proba(d.x_test))
    acc = float(np.mean(loaded.predict(d.x_test) == y_true))
    assert acc >= IRIS_ACCURACY_FLOOR, f"{path}: accuracy {acc:.3f} below {IRIS_ACCURACY_FLOOR}"
    return f"accuracy {acc:.3f} on {len(y_true)} held-out, {_size(path)}"


def iris_sample(split: Split, rows: int = IRIS_SAMPLE_ROWS) -> str:
    """The first held-out flowers as CSV with a header row."""
    lines = [",".join(IRIS_FEATURES)]
    lines += [",".join(_number_text(v) for v in row) for row in split.x_test[:rows]]
    return "\n".join(lines) + "\n"


def make_iris_skops_onnx(out: Path) -> str:
    """iris-skops's model with runtime: onnx. Checked here as a deployment checks it: the conversion and its
    equivalence proof run on a copy of the directory (so no converted graph is left in ``out``)."""
    import tempfile

    import skops.io as sio

    d = dataset("iris")
    path = out / "model.skops"
    _write(path, _normalize_skops(sio.dumps(iris_skops_model())))
    _write(out / "modelport.yaml", IRIS_SKOPS_ONNX_YAML)
    _write(out / "samples" / "flowers.csv", iris_sample(d))

    ensure_repo_on_path()
    from chalicelib.services.intake import config_file_for_dir

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / out.name
        shutil.copytree(out, copy, ignore=shutil.ignore_patterns(".*"))
        manifest = config_file_for_dir(copy)
        conversion = manifest.conversion
        assert conversion is not None and manifest.artifact.framework == "onnx"
        packages = {p.split("==")[0] for p in manifest.environment.packages}
        assert not packages & {"scikit-learn", "scipy", "skops"}, packages
        labels, _ = run_onnx(copy / ".modelport" / "converted" / "model.onnx", model_input("iris", d.x_test))
    acc = float(np.mean(labels == np.asarray(IRIS_LABELS)[d.y_test]))
    assert acc >= IRIS_ACCURACY_FLOOR, f"{out}: converted accuracy {acc:.3f} below {IRIS_ACCURACY_FLOOR}"
    proof = conversion.equivalence
    return (
        f"converted accuracy {acc:.3f} on {len(d.y_test)} held-out, max |onnx - sklearn| "
        f"{proof.max_abs_diff:.2g} on {proof.sample_rows + proof.generated_rows} rows, {_size(path)}"
    )


def _pick_digit_samples(path: Path, split: Split) -> dict[int, np.ndarray]:
    """For each sample label, the first held-out digit whose PNG round trip classifies correctly
    under every resize filter in DIGIT_CHECK_FILTERS."""
    chosen = {}
    for label in DIGIT_SAMPLE_LABELS:
        for row in split.x_test[split.y_test == label]:
            png = render_digit(row)
            x = np.vstack([decode_image(png, resample=f) for f in DIGIT_CHECK_FILTERS])
            predicted, _ = run_onnx(path, x)
            if np.all(predicted == label):
                chosen[label] = row
                break
        else:
            raise AssertionError(f"no held-out {label} survives the PNG round trip")
    return chosen


def make_digits_onnx(out: Path) -> str:
    from sklearn.neural_network import MLPClassifier

    d = dataset("digits")
    x_train, x_test = model_input("digits", d.x_train), model_input("digits", d.x_test)
    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=SEED)
    model.fit(x_train, d.y_train)
    assert model.n_iter_ < model.max_iter, "the MLP did not converge"
    path = out / "model.onnx"
    _write(path, _to_onnx(model, model, DIGIT_SIZE[0] * DIGIT_SIZE[1], "digits_onnx"))
    _write(out / "modelport.yaml", DIGITS_YAML)
    acc, ref = _check_onnx_classifier(path, model, x_test, d.y_test, DIGITS_ACCURACY_FLOOR)

    samples = out / "samples"
    if samples.exists():
        shutil.rmtree(samples)
    for label, row in _pick_digit_samples(path, d).items():
        _write(samples / f"digit-{label}.png", render_digit(row))
    right = check_digit_samples(out)
    assert right >= 2, f"only {right} of {len(DIGIT_SAMPLE_LABELS)} sample pictures classify right"
    return (
        f"accuracy {acc:.3f} on {len(d.y_test)} held-out (sklearn {ref:.3f}), "
        f"samples {right}/{len(DIGIT_SAMPLE_LABELS)} right, {_size(path)}"
    )


def check_digit_samples(example: Path, resample: Image.Resampling = DIGIT_RESAMPLE) -> int:
    """How many samples/digit-<label>.png the model labels right through the image step's decoding."""
    pngs = sorted((example / "samples").glob("digit-*.png"))
    x = np.vstack([decode_image(p.read_bytes(), resample=resample) for p in pngs])
    predicted, _ = run_onnx(example / "model.onnx", x)
    truth = [int(p.stem.removeprefix("digit-")) for p in pngs]
    return int(np.sum(predicted == np.asarray(truth)))


def make_diabetes_lightgbm(out: Path) -> str:
    import lightgbm as lgb
    from sklearn.metrics import r2_score

    d = dataset("diabetes")
    model = lgb.LGBMRegressor(
        n_estimators=100,
        num_leaves=15,
        learning_rate=0.03,
        random_state=SEED,
        deterministic=True,
        force_col_wise=True,  # no timing-based row/column choice
        n_jobs=1,
        verbose=-1,
    )
    model.fit(d.x_train, d.y_train, feature_name=list(DIABETES_FEATURES))
    path = out / "model.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.booster_.save_model(str(path))
    _write(out / "modelport.yaml", DIABETES_YAML)
    _write(out / "samples" / "patients.csv", diabetes_sample(d))

    header = path.read_text(encoding="utf-8").split("\n\n", 1)[0].splitlines()
    expected = "feature_names=" + " ".join(DIABETES_FEATURES)
    assert expected in header, f"{path}: no line {expected!r}"
    reloaded = lgb.Booster(model_file=str(path)).predict(d.x_test)
    np.testing.assert_allclose(reloaded, model.booster_.predict(d.x_test), rtol=1e-12)
    r2 = float(r2_score(d.y_test, reloaded))
    assert r2 >= DIABETES_R2_FLOOR, f"{path}: R² {r2:.3f} below {DIABETES_R2_FLOOR}"
    return f"R² {r2:.3f} on {len(d.y_test)} held-out, {_size(path)}"


def cancer_features() -> tuple[str, ...]:
    """scikit-learn's feature names of the breast cancer data, in snake case ("mean radius" ->
    "mean_radius"): names a request can spell as JSON keys and CSV headers alike."""
    from sklearn.datasets import load_breast_cancer

    return tuple(str(n).replace(" ", "_") for n in load_breast_cancer().feature_names)


def make_breast_cancer_xgboost(out: Path) -> str:
    import xgboost as xgb

    d = dataset("breast_cancer")
    names = list(cancer_features())
    params = {
        "objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "seed": SEED, "nthread": 1,
        "tree_method": "exact",  # no sketching, no randomness: the same trees on every machine
    }  # fmt: skip
    train = xgb.DMatrix(d.x_train, label=d.y_train, feature_names=names)
    booster = xgb.train(params, train, num_boost_round=30)
    path = out / "model.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(path))
    _write(out / "modelport.yaml", CANCER_YAML)
    lines = [",".join(names)] + [
        ",".join(_number_text(v) for v in row) for row in d.x_test[:CANCER_SAMPLE_ROWS]
    ]
    _write(out / "samples" / "tumours.csv", "\n".join(lines) + "\n")

    reloaded = xgb.Booster(model_file=str(path))
    assert reloaded.feature_names == names, f"{path}: feature names not kept"
    p = reloaded.inplace_predict(d.x_test.astype(np.float32))
    acc = float(np.mean((p >= 0.5).astype(int) == d.y_test))
    assert acc >= CANCER_ACCURACY_FLOOR, f"{path}: accuracy {acc:.3f} below {CANCER_ACCURACY_FLOOR}"
    return f"accuracy {acc:.3f} on {len(d.y_test)} held-out, {_size(path)}"


def sentiment_weights() -> dict[str, Any]:
    return {
        "note": "toy hand-written lexicon from examples/make_examples.py, not learned from data",
        "negators": list(NEGATORS),
        "negation_window": NEGATION_WINDOW,
        "weights": dict(sorted({**POSITIVE_WORDS, **NEGATIVE_WORDS}.items())),
    }


def make_sentiment_predictor(out: Path) -> str:
    source = HERE / "sentiment-predictor" / "predict.py"
    target = out / "predict.py"
    if source.resolve() != target.resolve():
        _write(target, source.read_bytes())
    _write(out / "weights.json", json.dumps(sentiment_weights(), indent=2) + "\n")
    _write(out / "modelport.yaml", SENTIMENT_YAML)

    ensure_repo_on_path()
    predictor = load_python_module(target, "sentiment_predict").Predictor()
    predictor.setup()
    right = sum(call_predict(predictor, text=text)["label"] == label for text, label in SENTIMENT_CHECKS)
    assert right == len(SENTIMENT_CHECKS), f"{right}/{len(SENTIMENT_CHECKS)} sanity sentences right"
    return f"{right}/{len(SENTIMENT_CHECKS)} hand-written sanity sentences right (toy lexicon)"


EXAMPLES: dict[str, Callable[[Path], str]] = {
    "breast-cancer-xgboost": make_breast_cancer_xgboost,
    "iris-onnx": make_iris_onnx,
    "iris-skops": make_iris_skops,
    "iris-skops-onnx": make_iris_skops_onnx,
    "digits-onnx": make_digits_onnx,
    "diabetes-lightgbm": make_diabetes_lightgbm,
    "sentiment-predictor": make_sentiment_predictor,
}


def ensure_repo_on_path() -> None:
    """predict.py and the config check import chalicelib, which lives beside examples/."""
    if (ROOT / "chalicelib").is_dir() and str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def validate_config(example: Path) -> None:
    from chalicelib.core.config import CONFIG_FILE, parse_config_yaml

    path = example / CONFIG_FILE
    config = parse_config_yaml(path.read_text(encoding="utf-8"), source=str(path))
    assert config.name == example.name, f"{path}: name {config.name!r} != {example.name!r}"
    for artifact in config.artifacts or ():
        assert (example / artifact).is_file(), f"{path}: artifact {artifact} is missing"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    ensure_repo_on_path()
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)  # e.g. sklearn/lightgbm misuse
        for name, make in EXAMPLES.items():
            example = args.out / name
            summary = make(example)
            validate_config(example)
            print(f"{name:<20} {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
