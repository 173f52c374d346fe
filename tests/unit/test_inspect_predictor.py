"""Python predictor inspector: the contract is read from predict.py's AST, never by running it."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from chalicelib.core.config import parse_config
from chalicelib.core.errors import ArtifactError
from chalicelib.core.native import NativeContract
from chalicelib.core.protocol import Json, request_wire, response_wire

HEADER = """\
from __future__ import annotations
import dataclasses
import typing
from typing import Any, Dict, List, Literal, Optional, TypedDict, Union
from pydantic import BaseModel
from chalicelib.runtime.predictor import BasePredictor, File, Image, Input
"""

IMAGE = {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"}
FILE = {"type": "string", "contentEncoding": "base64", "contentMediaType": "application/octet-stream"}


def inspect_source(tmp_path: Path, body: str, *, header: bool = True) -> NativeContract:
    source = (HEADER if header else "") + textwrap.dedent(body)
    (tmp_path / "predict.py").write_text(source)
    return inspect_model(tmp_path)


def inspect_model(model_dir: Path) -> NativeContract:
    from chalicelib.inspect import inspect_model as run

    return run(model_dir, parse_config({"name": "m"}))


def schemas(contract: NativeContract) -> tuple[dict[str, Any], dict[str, Any]]:
    assert isinstance(contract.inputs, Json) and isinstance(contract.outputs, Json)
    return contract.inputs.json_schema, contract.outputs.json_schema


def test_every_supported_annotation(tmp_path: Path) -> None:
    contract = inspect_source(
        tmp_path,
        """
        class Result(TypedDict):
            label: str
            scores: dict[str, float]

        class Predictor(BasePredictor):
            def setup(self) -> None:
                self.model = None

            def predict(
                self,
                count: int,
                ratio: float,
                text: str,
                flag: bool,
                mode: Literal["fast", "slow"],
                ids: list[int],
                tags: List[str],
                weights: dict[str, float],
                picture: Image,
                blob: File,
                maybe: Optional[int],
                either: str | None,
                mixed: Union[int, str],
                forward: "typing.List[float]",
                anything: Any,
                /,
                steps: int = Input(10, description="denoising steps", ge=1, le=50),
                prompt: str = Input(default="", min_length=0, max_length=200),
                seeds: list[int] = Input([1, 2], min_length=1, max_length=4),
                *,
                temperature: float = 0.7,
                required_kw: bool,
            ) -> Result:
                return {"label": "x", "scores": {}}
        """,
    )
    assert contract.framework == "python"
    assert contract.task == "predictor"
    assert contract.model_type == "predict.py:Predictor"
    inputs, output = schemas(contract)
    props = inputs["properties"]
    assert props == {
        "count": {"type": "integer"},
        "ratio": {"type": "number"},
        "text": {"type": "string"},
        "flag": {"type": "boolean"},
        "mode": {"type": "string", "enum": ["fast", "slow"]},
        "ids": {"type": "array", "items": {"type": "integer"}},
        "tags": {"type": "array", "items": {"type": "string"}},
        "weights": {"type": "object", "additionalProperties": {"type": "number"}},
        "picture": IMAGE,
        "blob": FILE,
        "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "either": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "mixed": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "forward": {"type": "array", "items": {"type": "number"}},
        "anything": {},
        "steps": {
            "type": "integer",
            "default": 10,
            "description": "denoising steps",
            "minimum": 1,
            "maximum": 50,
        },
        "prompt": {"type": "string", "default": "", "minLength": 0, "maxLength": 200},
        "seeds": {
            "type": "array",
            "items": {"type": "integer"},
            "default": [1, 2],
            "minItems": 1,
            "maxItems": 4,
        },
        "temperature": {"type": "number", "default": 0.7},
        "required_kw": {"type": "boolean"},
    }
    assert inputs["required"] == [
        *("count", "ratio", "text", "flag", "mode", "ids", "tags", "weights", "picture"),
        *("blob", "maybe", "either", "mixed", "forward", "anything", "required_kw"),
    ]
    assert inputs["additionalProperties"] is False
    assert output == {
        "type": "object",
        "title": "Result",
        "properties": {
            "label": {"type": "string"},
            "scores": {"type": "object", "additionalProperties": {"type": "number"}},
        },
        "required": ["label", "scores"],
        "additionalProperties": False,
    }
    # the protocol layer can turn the contract into wire forms
    assert request_wire(contract.inputs).example["count"] == 0
    assert response_wire(contract.outputs).json_schema["properties"]["output"] == output


def test_dataclass_and_pydantic_results(tmp_path: Path) -> None:
    body = """
        @dataclasses.dataclass
        class Box:
            x: int
            y: int = 0

        class Detection(BaseModel):
            boxes: list[Box]
            note: Optional[str] = None

        class Predictor(BasePredictor):
            def predict(self, image: Image) -> Detection:
                ...
        """
    _, output = schemas(inspect_source(tmp_path, body))
    assert output["required"] == ["boxes"]
    box = output["properties"]["boxes"]["items"]
    assert box["title"] == "Box" and box["required"] == ["x"]
    assert output["properties"]["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}


def test_typeddict_total_false_and_inherited_fields(tmp_path: Path) -> None:
    body = """
        class Base(TypedDict):
            a: int

        class Out(Base, total=False):
            b: str

        class Predictor(BasePredictor):
            def predict(self, n: int) -> Out:
                ...
        """
    _, output = schemas(inspect_source(tmp_path, body))
    assert list(output["properties"]) == ["a", "b"]
    assert output["required"] == []


def test_plain_class_with_setup_and_predict(tmp_path: Path) -> None:
    body = """
        class Helper:
            def run(self) -> None: ...

        class Model:
            def setup(self): ...
            async def predict(self, x: float) -> list[float]: ...
        """
    contract = inspect_source(tmp_path, body, header=False)
    assert contract.model_type == "predict.py:Model"
    assert schemas(contract)[1] == {"type": "array", "items": {"type": "number"}}


def test_base_predictor_subclass_is_preferred(tmp_path: Path) -> None:
    body = """
        class Other:
            def setup(self) -> None: ...
            def predict(self, x: int) -> int: ...

        class Real(BasePredictor):
            def predict(self, y: str) -> str: ...
        """
    contract = inspect_source(tmp_path, body)
    assert contract.model_type == "predict.py:Real"
    assert list(schemas(contract)[0]["properties"]) == ["y"]


def test_source_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    body = f"""
        open({str(marker)!r}, "w").write("imported")
        raise SystemExit("predict.py must not be imported")

        class Predictor(BasePredictor):
            def predict(self, x: int) -> int:
                return x
        """
    assert inspect_source(tmp_path, body).task == "predictor"
    assert not marker.exists()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            "class Predictor(BasePredictor):\n    def predict(self, text) -> str: ...\n",
            r"^predict\.py: Predictor\.predict parameter 'text' has no type hint \(annotate",
        ),
        (
            "class Predictor(BasePredictor):\n    def predict(self, text: str): ...\n",
            r"^predict\.py: Predictor\.predict has no return type hint",
        ),
        (
            "class Predictor(BasePredictor):\n    def predict(self, x: set[int]) -> int: ...\n",
            r"parameter 'x': unsupported type annotation 'set\[int\]' \(use int, float",
        ),
        (
            "class Predictor(BasePredictor):\n    def predict(self, x: dict[int, str]) -> int: ...\n",
            r"unsupported type annotation 'dict\[int, str\]' \(JSON object keys are strings",
        ),
        (
            "import numpy as np\nclass Predictor(BasePredictor):\n"
            "    def predict(self, x: int) -> np.ndarray: ...\n",
            r"Predictor\.predict return type: unsupported type annotation 'np\.ndarray'",
        ),
        (
            "class Predictor(BasePredictor):\n    def predict(self, *xs: int) -> int: ...\n",
            r"Predictor\.predict takes \*xs",
        ),
        (
            "N = 3\nclass Predictor(BasePredictor):\n"
            "    def predict(self, x: int = Input(1, ge=N)) -> int: ...\n",
            r"parameter 'x': Input\(ge=\.\.\.\) must be a literal, got 'N'",
        ),
        (
            "class Predictor(BasePredictor):\n    def predict(self, x: int = Input(1, step=2)) -> int: ...\n",
            r"Input\(\) has no argument 'step'",
        ),
        (
            "class Node:\n    child: Node\n"
            "class Predictor(BasePredictor):\n    def predict(self, x: int) -> Node: ...\n",
            r"class Node refers to itself",
        ),
        (
            "class Empty:\n    pass\n"
            "class Predictor(BasePredictor):\n    def predict(self, x: int) -> Empty: ...\n",
            r"class Empty has no annotated fields",
        ),
        ("def predict(x: int) -> int: ...\n", r"^predict\.py: no predictor class found"),
        (
            "class A(BasePredictor):\n    def predict(self) -> int: ...\n"
            "class B(BasePredictor):\n    def predict(self) -> int: ...\n",
            r"several predictor classes \(A, B\)",
        ),
    ],
)
def test_errors(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(ArtifactError, match=problem):
        inspect_source(tmp_path, body)


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "predict.py").write_text("class P:\n    def setup(self):\n        return (\n")
    with pytest.raises(ArtifactError, match=r"^predict\.py: syntax error at line 3: "):
        inspect_model(tmp_path)


def test_defaults_that_are_not_literals_make_a_parameter_optional(tmp_path: Path) -> None:
    body = """
        LIMIT = 5
        class Predictor(BasePredictor):
            def predict(self, k: int = LIMIT, seed: Optional[int] = Input(None)) -> int: ...
        """
    inputs, _ = schemas(inspect_source(tmp_path, body))
    assert inputs["required"] == []
    assert inputs["properties"]["k"] == {"type": "integer"}
    assert inputs["properties"]["seed"]["default"] is None


def test_input_without_default_is_required(tmp_path: Path) -> None:
    body = """
        class Predictor(BasePredictor):
            def predict(self, text: str = Input(description="what to say")) -> str: ...
        """
    inputs, _ = schemas(inspect_source(tmp_path, body))
    assert inputs["required"] == ["text"]
    assert inputs["properties"]["text"] == {"type": "string", "description": "what to say"}
