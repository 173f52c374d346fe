"""modelport.yaml: what is accepted, and the one-line errors for what is not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.core.config import (
    ModelConfig,
    dump_config_yaml,
    parse_config,
    parse_config_yaml,
)
from chalicelib.core.errors import ConfigError

IRIS = """
name: iris
framework: onnx
environment: {python: 3.12, memory_mb: 512, timeout_s: 10, packages: ["scipy>=1.11"]}
processing:
  pre:
    - tabular: {features: [a, b, c, d]}
  post:
    - labels
    - bar_chart: {title: Iris}
labels: [setosa, versicolor, virginica]
"""


def test_a_full_config_parses_with_typed_steps() -> None:
    config = parse_config_yaml(IRIS)
    assert config.environment.python == "3.12"  # YAML's float 3.12 read as the version
    assert config.processing.pre[0].step == "tabular"
    assert config.processing.pre[0].params == {"features": ["a", "b", "c", "d"]}
    assert [s.step for s in config.processing.post] == ["labels", "bar_chart"]
    assert config.allow_pickle is False


def test_defaults_fill_the_environment() -> None:
    config = parse_config({"name": "m"})
    env = config.environment
    assert (env.python, env.architecture, env.memory_mb, env.timeout_s) == (
        "3.11",
        "x86_64",
        1024,
        25,
    )


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("name: iris\nframwork: onnx\n", "unknown key 'framwork': did you mean 'framework'?"),
        (
            "name: iris\nenvironment: {memroy_mb: 512}\n",
            "unknown key 'memroy_mb' in environment: did you mean 'memory_mb'?",
        ),
        (
            "name: iris\nenvironment: {memory_mb: 64}\n",
            "environment.memory_mb: 64 is too small (at least 128)",
        ),
        (
            "name: iris\nenvironment: {memory_mb: 20000}\n",
            "environment.memory_mb: 20000 is too large (at most 10240)",
        ),
        (
            "name: iris\nenvironment: {timeout_s: 0}\n",
            "environment.timeout_s: 0 is too small (at least 1)",
        ),
        (
            "name: iris\nenvironment: {timeout_s: 901}\n",
            "environment.timeout_s: 901 is too large (at most 900)",
        ),
        ("name: Iris Model\n", "name: 'Iris Model' is not a slug"),
        ("name: Iris Model\n", "(e.g. 'iris-model')"),
        ("name: iris\nframework: pytorch\n", "framework: Input should be 'onnx', 'sklearn'"),
        (
            "name: iris\nenvironment: {python: '3.9'}\n",
            "environment.python: Input should be '3.11', '3.12' or '3.13'",
        ),
        ("name: iris\nenvironment: {architecture: arm}\n", "environment.architecture"),
        (
            "name: iris\nprocessing: {pre: [tabulr]}\n",
            "processing.pre[0]: unknown step 'tabulr': did you mean 'tabular'?",
        ),
        (
            "name: iris\nprocessing: {pre: [{image: {size: 8}}]}\n",
            "processing.pre[0]: step image: size: Input should be a valid",
        ),
        (
            "name: iris\nprocessing: {post: [{bar_chart: {topk: 3}}]}\n",
            "step bar_chart: unknown key 'topk': did you mean 'top_k'?",
        ),
        (
            "name: iris\nprocessing: {pre: [{image: {size: [8, 8], mode: L, mean: [0.5, 0.5, 0.5]}}]}\n",
            "mean needs 1 value(s) for mode L",
        ),
        (
            "name: iris\nprocessing: {pre: [labels]}\n",
            "pre[0]: labels is a post step; move it under post:",
        ),
        (
            "name: iris\nprocessing: {pre: ['../evil.py:run']}\n",
            "user step file '../evil.py' must be a relative path",
        ),
        (
            "name: iris\nartifacts: [/etc/passwd]\n",
            "artifact '/etc/passwd' must be a relative path",
        ),
        (
            "name: iris\nartifacts: [a/../../b.onnx]\n",
            "must be a relative path inside the model directory",
        ),
        (
            "name: iris\nenvironment: {packages: ['numpy --index-url http://evil']}\n",
            "is not a package requirement",
        ),
        ("name: iris\nlabels: [a, a]\n", "labels repeat a"),
        ("name: iris\nallow_pickle: maybe\n", "allow_pickle: Input should be a valid boolean"),
        ("- just\n- a list\n", "expected a mapping of keys"),
        ("name: [unclosed\n", "at line 2"),
        ("framework: onnx\n", "name: Field required"),
        ('name: iris\ndescription: "a\\x85b"\n', "description: contains the control character U+0085"),
        ('name: iris\nenvironment: {base_image: "python:3.11\\n"}\n', "is not an image reference"),
        ('name: iris\nenvironment: {packages: ["numpy\\n"]}\n', "is not a package requirement"),
        ('name: "iris\\n"\n', "is not a slug"),
        ('name: iris\nlabels: ["a\\u2028b"]\n', "labels[0]: contains the control character U+2028"),
        ("name: iris\nruntime: tflite\n", "runtime: Input should be 'native' or 'onnx'"),
        ("name: iris\nframework: onnx\nruntime: onnx\n", "this model is ONNX already: remove runtime:"),
        ("name: iris\nframework: xgboost\nruntime: onnx\n", "not supported for xgboost models yet"),
        ("name: iris\nframework: lightgbm\nruntime: onnx\n", "not supported for lightgbm models yet"),
        ("name: iris\nframework: python\nruntime: onnx\n", "a Python predictor runs its own code"),
    ],
)
def test_bad_config_is_one_clear_line(yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_yaml(yaml_text)
    text = str(err.value)
    assert message in text
    assert "\n" not in text
    assert text.startswith("modelport.yaml: ")


def test_runtime_is_native_unless_onnx_is_asked_for_a_scikit_learn_model() -> None:
    assert parse_config({"name": "m"}).runtime == "native"
    assert parse_config({"name": "m", "framework": "sklearn", "runtime": "onnx"}).runtime == "onnx"
    # The framework is detected later: the check is repeated on the detected one (test_onnx_runtime.py).
    assert parse_config({"name": "m", "runtime": "onnx"}).runtime == "onnx"
    assert "runtime" not in dump_config_yaml(parse_config({"name": "m"}))  # the default is not written


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_yaml("name: iris\nenvironment: {memory_mb: 1, timeout_s: 0}\n")
    assert "memory_mb" in str(err.value) and "timeout_s" in str(err.value)


def test_user_steps_are_kept_as_references() -> None:
    config = parse_config_yaml("name: m\nprocessing: {pre: ['steps/clean.py:clean'], post: [labels]}\n")
    assert config.processing.pre[0].is_user_code
    assert config.processing.pre[0].step == "steps/clean.py:clean"


# --------------------------------------------------------------------------- round trips

printable = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))
slugs = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
words = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
pre_steps = st.one_of(
    st.just("tabular"),
    st.builds(lambda f: {"tabular": {"features": f}}, st.lists(words, min_size=1, max_size=4)),
    st.builds(
        lambda h, w, mode, layout: {"image": {"size": [h, w], "mode": mode, "layout": layout}},
        st.integers(1, 512),
        st.integers(1, 512),
        st.sampled_from(["RGB", "L"]),
        st.sampled_from(["NCHW", "NHWC", "flat"]),
    ),
    st.builds(lambda p, f: f"{p}.py:{f}", words, st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)),
)
post_steps = st.one_of(
    st.sampled_from(["labels", "top_k", "bar_chart"]),
    st.builds(lambda k: {"top_k": {"top_k": k}}, st.integers(1, 20)),
    st.builds(lambda t: {"bar_chart": {"title": t}}, st.text(printable, max_size=30)),
)
configs = st.fixed_dictionaries(
    {"name": slugs},
    optional={
        "description": st.text(printable, max_size=60),
        "framework": st.sampled_from(["onnx", "sklearn", "xgboost", "lightgbm", "python"]),
        "environment": st.fixed_dictionaries(
            {},
            optional={
                "python": st.sampled_from(["3.11", "3.12", "3.13"]),
                "architecture": st.sampled_from(["x86_64", "arm64"]),
                "memory_mb": st.integers(128, 10240),
                "timeout_s": st.integers(1, 900),
                "packages": st.lists(st.sampled_from(["scipy", "pandas>=2", "rich==13.7.1"]), max_size=3),
            },
        ),
        "processing": st.fixed_dictionaries(
            {},
            optional={
                "pre": st.lists(pre_steps, max_size=2),
                "post": st.lists(post_steps, max_size=2),
            },
        ),
        "labels": st.lists(words, min_size=1, max_size=5, unique=True),
        "allow_pickle": st.booleans(),
        "pipeline": st.sampled_from(["auto", "chained", "fused"]),
    },
)


@settings(max_examples=150, deadline=None)
@given(configs)
def test_config_files_round_trip(data: dict[str, object]) -> None:
    config = parse_config(data)
    text = dump_config_yaml(config)
    again = parse_config_yaml(text)
    assert again == config
    assert dump_config_yaml(again) == text


def test_config_schema_is_the_models() -> None:
    schema = ModelConfig.model_json_schema()
    assert set(schema["properties"]) >= {"name", "framework", "environment", "processing", "labels"}
