"""``runtime: onnx``: a scikit-learn model converted at deploy time, proven equivalent, served without it.

Through the public doors only: intake (``config_file_for_dir``, what ``modelport manifest`` and the deploy
worker run), the image's model directory (``prepare_model_dir``) and the runtime that serves it (``load``),
and the deployment plan on the in-memory twins.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import onnx
import pytest
import skops.io as sio
from sklearn.datasets import load_diabetes, load_iris
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import NearestCentroid
from sklearn.preprocessing import PowerTransformer
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeRegressor

from chalicelib.core.config_file import CONVERTED_DIR, ContainerAssociation, ModelConfigFile, Tolerance
from chalicelib.core.errors import ConfigError, ConversionError
from chalicelib.core.native import NativeContract
from chalicelib.core.openapi import openapi_document
from chalicelib.core.ports import Progress
from chalicelib.core.probe import ProbeRequest
from chalicelib.core.protocol import Tensors
from chalicelib.core.wire import invocation_event
from chalicelib.inspect.convert import to_onnx
from chalicelib.inspect.equivalence import check, rows_for
from chalicelib.memory.stores import MemoryImageBuilder
from chalicelib.runtime.handler import load
from chalicelib.runtime.layout import prepare_model_dir
from chalicelib.runtime.loaders import ConvertedModel, OnnxModel, SklearnModel
from chalicelib.services.intake import config_file_for_dir, inspect_dir
from tests.unit.test_deployments import Killed, World

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "iris-skops-onnx"
SKLEARN_FREE = {"scikit-learn", "scipy", "skops", "joblib"}


def copy_example(tmp_path: Path, name: str = "iris-skops-onnx", *, runtime: str = "onnx") -> Path:
    """The example (its files, not a converted graph left in it) with ``runtime:`` as given."""
    dest = tmp_path / f"{name}-{runtime}"
    shutil.copytree(ROOT / "examples" / name, dest, ignore=shutil.ignore_patterns(".*"))
    config = dest / "modelport.yaml"
    config.write_text(config.read_text().replace("runtime: onnx", f"runtime: {runtime}"))
    return dest


def model_dir(tmp_path: Path, estimator: Any, config: str, name: str = "m") -> Path:
    src = tmp_path / name
    src.mkdir(parents=True)
    sio.dump(estimator, src / "model.skops")
    (src / "modelport.yaml").write_text(f"name: {name}\nruntime: onnx\n{config}")
    return src


def packages(manifest: ModelConfigFile) -> set[str]:
    return {p.split("==")[0] for p in manifest.environment.packages}


def answer(model: Path, body: str, content_type: str = "text/csv") -> dict[str, Any]:
    runtime = load(model, warm=False)
    response = runtime.handle(invocation_event(body, content_type, "application/json"))
    assert response["status"] == 200, response["body"]
    doc: dict[str, Any] = json.loads(response["body"])
    jsonschema.validate(doc, runtime.protocol.response.json_schema)
    return doc


# --------------------------------------------------------------------------- an equivalent conversion


def test_the_converted_model_ships_onnx_and_an_environment_without_scikit_learn(tmp_path: Path) -> None:
    src = copy_example(tmp_path)
    manifest = config_file_for_dir(src)
    conversion = manifest.conversion
    assert conversion is not None
    assert (manifest.artifact.framework, [f.path for f in manifest.artifact.files]) == (
        "onnx",
        ["model.onnx"],
    )
    assert [f.path for f in conversion.source.files] == ["model.skops"]
    assert conversion.converter.startswith("skl2onnx ")
    assert conversion.outputs == {"label": "label", "probabilities": "probabilities"}
    proof = conversion.equivalence
    assert proof.sample_rows == 6  # the protocol's example and the five flowers of samples/flowers.csv
    assert proof.generated_rows == 256 and proof.tolerance == Tolerance()
    assert 0 < proof.max_abs_diff < 1e-5 and proof.max_at.startswith("probabilities[")
    assert "StandardScaler" in proof.ranges
    assert packages(manifest) == {"awslambdaric", "numpy", "onnxruntime"}
    image = prepare_model_dir(src, manifest, tmp_path / "image")
    assert sorted(p.name for p in image.iterdir()) == ["model-config.json", "model.onnx"]
    again = config_file_for_dir(src)
    assert again == manifest and again.digest == manifest.digest  # the same inputs, the same file


def test_it_shares_the_environment_of_an_onnx_tabular_model(tmp_path: Path) -> None:
    onnx_model = tmp_path / "iris-onnx"
    shutil.copytree(ROOT / "examples" / "iris-onnx", onnx_model)
    config = onnx_model / "modelport.yaml"
    config.write_text(
        config.read_text().replace("    - bar_chart: {title: Iris species probabilities}\n", "")
    )
    converted = config_file_for_dir(copy_example(tmp_path)).environment
    assert converted == config_file_for_dir(onnx_model).environment  # one fingerprint, one image


def test_the_protocol_is_the_native_deployments(tmp_path: Path) -> None:
    native = config_file_for_dir(copy_example(tmp_path, runtime="native"))
    converted = config_file_for_dir(copy_example(tmp_path))
    assert native.conversion is None and "scikit-learn" in packages(native)
    assert converted.native == native.native
    assert converted.protocol == native.protocol  # request/response schemas, content types, OIP metadata
    assert converted.steps == native.steps
    assert openapi_document(converted) == openapi_document(native)


def test_it_answers_like_the_native_deployment(tmp_path: Path) -> None:
    src_native, src_onnx = copy_example(tmp_path, runtime="native"), copy_example(tmp_path)
    native = prepare_model_dir(src_native, config_file_for_dir(src_native), tmp_path / "native")
    converted = prepare_model_dir(src_onnx, config_file_for_dir(src_onnx), tmp_path / "onnx")
    csv = (EXAMPLE / "samples" / "flowers.csv").read_text()
    records = json.dumps({"records": [{"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0,
                                       "petal_width": 2.5}]})  # fmt: skip
    for body, content_type in ((csv, "text/csv"), (records, "application/json")):
        want, got = answer(native, body, content_type), answer(converted, body, content_type)
        assert [[p["label"] for p in row] for row in got["predictions"]] == [
            [p["label"] for p in row] for row in want["predictions"]
        ]
        scores = [[p["score"] for p in row] for row in got["predictions"]]
        np.testing.assert_allclose(
            scores, [[p["score"] for p in row] for row in want["predictions"]], atol=1e-4
        )


def _native_and_converted(
    tmp_path: Path, estimator: Any, config: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw outputs of the estimator and of the served graph, on the same rows."""
    src = model_dir(tmp_path, estimator, config)
    manifest = config_file_for_dir(src)
    assert manifest.conversion is not None and not packages(manifest) & SKLEARN_FREE
    image = prepare_model_dir(src, manifest, tmp_path / "image")
    model = load(image, warm=False).model
    assert isinstance(model, ConvertedModel)
    x = load_iris().data[::10] if manifest.native.n_features == 4 else load_diabetes().data[::10]
    native = SklearnModel(estimator, manifest).predict({"input": x})
    return native, model.predict({"input": x})


def test_a_regressor_answers_the_native_shape_and_type(tmp_path: Path) -> None:
    data = load_diabetes()
    native, got = _native_and_converted(tmp_path, LinearRegression().fit(data.data, data.target), "")
    assert got["prediction"].shape == native["prediction"].shape == (len(data.data[::10]),)  # not [N, 1]
    assert got["prediction"].dtype == np.float64
    np.testing.assert_allclose(got["prediction"], native["prediction"], rtol=1e-4)


def test_integer_classes_and_a_transformer(tmp_path: Path) -> None:
    iris = load_iris()
    native, got = _native_and_converted(tmp_path, GaussianNB().fit(iris.data, iris.target), "")
    assert got["label"].dtype == np.int64 and np.array_equal(got["label"], native["label"])
    assert got["probabilities"].dtype == np.float64
    np.testing.assert_allclose(got["probabilities"], native["probabilities"], atol=1e-4)
    native, got = _native_and_converted(tmp_path / "pca", PCA(n_components=2).fit(iris.data), "")
    assert got["output"].shape == native["output"].shape == (15, 2)
    np.testing.assert_allclose(got["output"], native["output"], atol=1e-4)


# --------------------------------------------------------------------------- refusals


def test_an_estimator_skl2onnx_cannot_convert_is_refused_by_name(tmp_path: Path) -> None:
    iris = load_iris()
    src = model_dir(tmp_path, NearestCentroid().fit(iris.data, iris.target), "")
    with pytest.raises(ConversionError) as err:
        config_file_for_dir(src)
    text = str(err.value)
    assert "skl2onnx" in text and "cannot convert sklearn.neighbors.NearestCentroid (model.skops)" in text
    assert "Unable to find a shape calculator" in text  # skl2onnx's own words
    assert "runtime: native" in text and "\n" not in text
    assert not (src / CONVERTED_DIR / "model.onnx").exists()


def test_a_classifier_without_probabilities_answers_its_labels(tmp_path: Path) -> None:
    iris = load_iris()
    native, got = _native_and_converted(tmp_path, LinearSVC().fit(iris.data, iris.target), "")
    assert set(got) == set(native) == {"label"}  # the graph's scores are not an output of the estimator
    assert np.array_equal(got["label"], native["label"])


def test_an_estimator_failing_on_the_checking_rows_is_refused_not_crashed(tmp_path: Path) -> None:
    # No statistics to draw from: the rows span [-3, 3] (widened), where Box-Cox takes positives only.
    src = model_dir(tmp_path, PowerTransformer(method="box-cox").fit(load_iris().data), "")
    with pytest.raises(ConversionError) as err:
        config_file_for_dir(src)
    assert str(err.value).startswith(
        "the estimator fails on the 257 rows that check the conversion: ValueError: The Box-Cox "
        "transformation can only be applied to strictly positive data"
    )


class RecordingSandbox:
    """A sandbox that must not be used: what needs code to open is refused before any probe."""

    def __init__(self) -> None:
        self.requests: list[ProbeRequest] = []

    def probe(self, request: ProbeRequest) -> NativeContract:
        self.requests.append(request)
        raise AssertionError("the probe ran")


def test_pickles_and_trusted_types_are_refused_before_any_probe(tmp_path: Path) -> None:
    import joblib

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    joblib.dump(sio.load(EXAMPLE / "model.skops"), pickled / "model.joblib")
    (pickled / "modelport.yaml").write_text("name: p\nruntime: onnx\nallow_pickle: true\n")
    sandbox = RecordingSandbox()
    with pytest.raises(
        ConfigError, match=r"runtime: onnx cannot convert model\.joblib: it is a pickle"
    ) as err:
        inspect_dir(pickled, sandbox)
    assert "only ever opened in the sandbox" in str(err.value) and "skops.io.dump" in str(err.value)

    data = load_diabetes()
    tree = model_dir(
        tmp_path, DecisionTreeRegressor(max_depth=3).fit(data.data, data.target), "", name="tree"
    )
    for trusted in ("", "trusted_types: [sklearn.tree._tree.Tree]\n"):
        (tree / "modelport.yaml").write_text(f"name: tree\nruntime: onnx\n{trusted}")
        with pytest.raises(ConfigError) as err:
            inspect_dir(tree, sandbox)
        assert str(err.value).startswith(
            "runtime: onnx cannot convert model.skops: it holds types skops does not trust by default "
            "(sklearn.tree._tree.Tree), so it is only ever opened in the sandbox"
        )
        assert "not yet trees" in str(err.value)
    assert sandbox.requests == []


@pytest.mark.parametrize(("example", "framework"), [("iris-onnx", "onnx"), ("diabetes-lightgbm", "lightgbm")])
def test_a_detected_framework_runtime_onnx_means_nothing_for_is_refused(
    tmp_path: Path, example: str, framework: str
) -> None:
    src = tmp_path / example
    shutil.copytree(ROOT / "examples" / example, src)
    config = src / "modelport.yaml"
    config.write_text(config.read_text().replace(f"framework: {framework}\n", "runtime: onnx\n"))
    with pytest.raises(ConfigError, match=rf"runtime: onnx .*\(the model is {framework}\)"):
        inspect_dir(src)


# --------------------------------------------------------------------------- equivalence failures


def _tampered(tmp_path: Path, change: Any) -> str:
    """Check a graph ``change`` edited against the estimator it was made from: the error's text."""
    src = copy_example(tmp_path, runtime="native")
    manifest = config_file_for_dir(src)
    estimator = sio.load(src / "model.skops")
    data, sources = to_onnx(estimator, manifest, "model.skops")
    graph = onnx.load_from_string(data)
    (node,) = [n for n in graph.graph.node if n.op_type == "LinearClassifier"]
    change({a.name: a for a in node.attribute})
    path = tmp_path / "tampered.onnx"
    onnx.save(graph, str(path))
    assert isinstance(manifest.native.outputs, Tensors)
    converted = ConvertedModel(OnnxModel(path, manifest, 1769), manifest.native.outputs, sources)
    rows = rows_for(src, manifest, estimator, 4)
    with pytest.raises(ConversionError) as err:
        check(SklearnModel(estimator, manifest), converted, rows, "input", Tolerance())
    return str(err.value)


def test_a_tampered_weight_fails_with_the_largest_difference(tmp_path: Path) -> None:
    def nudge(attributes: dict[str, Any]) -> None:
        attributes["coefficients"].floats[0] += 0.5

    text = _tampered(tmp_path, nudge)
    assert "does not answer like the scikit-learn model: the largest absolute difference is" in text
    assert " at probabilities[" in text and "(generated row " in text
    assert "over the tolerance |converted - native| <= 0.0001 + 0.0001 * |native|" in text


def test_swapped_labels_fail_naming_the_row(tmp_path: Path) -> None:
    def swap(attributes: dict[str, Any]) -> None:
        labels = attributes["classlabels_strings"].strings
        labels[0], labels[1] = labels[1], labels[0]

    text = _tampered(tmp_path, swap)
    assert (
        "label differs at label[0] (the protocol's example row 1): native 'setosa', converted 'versicolor'"
        in text
    )
    assert "the largest numeric difference is" in text  # the probabilities still agree


def test_a_conversion_outside_the_tolerance_fails_the_deployment(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.service.conversion_tolerance = Tolerance(atol=0, rtol=0)  # float32 never equals float64 exactly
    reason = world.failed(world.upload(bundle(), "iris-skops-onnx"))
    assert reason.startswith(
        "the converted ONNX graph does not answer like the scikit-learn model: "
        "the largest absolute difference is "
    )
    assert " at probabilities[" in reason and "<= 0 + 0 * |native|" in reason
    assert world.images.calls == []  # nothing built, nothing deployed
    assert world.c.models.get_version("iris-skops-onnx", 1).manifest is None


def bundle() -> bytes:
    """The example as ``modelport deploy`` bundles it: without hidden files (a converted graph left here)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path in sorted(EXAMPLE.rglob("*")):
            rel = path.relative_to(EXAMPLE)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                tf.add(path, arcname=rel.as_posix())
    return buf.getvalue()


class LayoutBuilder:
    """The memory builder, staging the image's model directory first as the real builders do."""

    def __init__(self, inner: MemoryImageBuilder, out: Path) -> None:
        self.inner, self.out = inner, out
        self.staged: list[list[str]] = []

    def build(self, manifest: ModelConfigFile, bundle_dir: Path, progress: Progress) -> ContainerAssociation:
        dest = prepare_model_dir(bundle_dir, manifest, self.out / f"attempt-{len(self.staged)}")
        self.staged.append(sorted(p.name for p in dest.iterdir()))
        return self.inner.build(manifest, bundle_dir, progress)


def test_an_equivalent_conversion_deploys_and_a_resumed_attempt_makes_the_graph_again(tmp_path: Path) -> None:
    world = World(tmp_path)
    builder = LayoutBuilder(world.images, tmp_path / "images")
    world.service.images = builder
    world.images.fail_with = Killed()  # type: ignore[assignment]  # the handler dies building the image
    event = world.upload(bundle(), "iris-skops-onnx")
    with pytest.raises(Killed):
        world.deploy(event)
    world.images.fail_with = None
    world.clock.advance(world.service.lease_s + 1)
    dep = world.deploy(event)  # a fresh extraction of the bundle: no converted graph in it
    assert dep.state == "READY" and dep.attempts == 2, dep.reason
    assert builder.staged == [["model-config.json", "model.onnx"]] * 2
    version = world.c.models.get_version("iris-skops-onnx", 1)
    assert version.manifest is not None
    manifest = ModelConfigFile.model_validate_json(version.manifest)
    assert manifest.conversion is not None and not packages(manifest) & SKLEARN_FREE
    assert manifest.container is not None and manifest.deployment is not None
