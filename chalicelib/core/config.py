"""Configuration parameters: ``modelport.yaml`` beside the artifact, or the same document as an API body."""

from __future__ import annotations

import difflib
import re
import reprlib
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from chalicelib.core.errors import ConfigError
from chalicelib.core.files import is_safe_relative_path
from chalicelib.core.native import Framework
from chalicelib.core.protocol import Text
from chalicelib.core.steps import BUILTIN_STEPS, Stage, Step, UserStep

CONFIG_FILE = "modelport.yaml"
MAX_CONFIG_BYTES = 256 * 1024
"""``modelport.yaml`` (or the same document as an API body) is refused past this, before parsing."""
MAX_REPR = 80
"""No message quotes more than this many characters of a user's value."""
MAX_ERRORS = 10

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$")
RESERVED_PREFIXES = ("steps-", "probe-", "deploy-")
"""Model names the platform's own functions are named after (``modelport-steps-<digest>-pre``,
``modelport-probe-<fingerprint>``, ``modelport-deploy-worker``): no model is created under them."""


def reserved_name(name: str) -> bool:
    return name.startswith(RESERVED_PREFIXES)


USER_STEP = re.compile(r"^(?P<path>[A-Za-z0-9_./-]+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")
_VERSION = r"[A-Za-z0-9.*+!_-]+"
_SPEC = rf"(?:==|>=|<=|~=|!=|<|>)\s*{_VERSION}"
REQUIREMENT = re.compile(
    rf"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:\[[A-Za-z0-9._,-]+\])?"
    rf"(?:\s*{_SPEC}(?:\s*,\s*{_SPEC})*)?$"
)
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._\-/:]*(?:@sha256:[a-f0-9]{64})?$")


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = MAX_REPR
_REPR.maxlevel = 3


def short(value: object, limit: int = MAX_REPR) -> str:
    """``repr(value)``, cut to ``limit`` characters with an ellipsis: messages never embed unbounded input."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int past Python's digit limit for str()
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut(text: str, limit: int = MAX_REPR) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def safe_relative_path(value: str, what: str) -> str:
    """Refuse paths that could leave the model directory (absolute, ``..``, backslashes, NUL)."""
    if not is_safe_relative_path(value):
        raise PydanticCustomError(
            "unsafe_path",
            "{what} {value} must be a relative path inside the model directory",
            {"what": what, "value": short(value)},
        )
    return value


_STEP_JSON_SCHEMA: dict[str, Any] = {
    "description": "a built-in step name, {name: {params}}, or 'path/file.py:function' user code",
    "anyOf": [
        {"type": "string", "enum": sorted(BUILTIN_STEPS)},
        {"type": "string", "pattern": USER_STEP.pattern},
        *[
            {
                "type": "object",
                "properties": {name: cls.params_model.model_json_schema()},
                "required": [name],
                "additionalProperties": False,
            }
            for name, cls in sorted(BUILTIN_STEPS.items())
        ],
    ],
}


class StepRef(Strict):
    """One processing step as written in the config: a built-in with parameters, or user code."""

    step: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"step": data, "params": {}}
        if isinstance(data, dict) and "step" not in data:
            if len(data) != 1:
                raise PydanticCustomError(
                    "step_form",
                    "a step is a name or a mapping with exactly one key (the step's name), got keys {keys}",
                    {"keys": _cut(", ".join(short(k, 40) for k in list(data)[:5]))},
                )
            ((name, params),) = data.items()
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise PydanticCustomError(
                    "step_form",
                    "parameters of step {name} must be a mapping, got {got}",
                    {"name": _cut(str(name), 40), "got": short(params)},
                )
            return {"step": name, "params": params}
        return data

    @model_validator(mode="after")
    def _validate(self) -> StepRef:
        if USER_STEP.fullmatch(self.step):
            safe_relative_path(self.step.split(":", 1)[0], "user step file")
            if self.params:
                raise PydanticCustomError(
                    "step_params", "user step {step} takes no parameters", {"step": self.step}
                )
            return self
        cls = BUILTIN_STEPS.get(self.step)
        if cls is None:
            close = difflib.get_close_matches(self.step, list(BUILTIN_STEPS), n=1)
            hint = (
                f"did you mean {short(close[0])}?"
                if close
                else "built-in steps: " + ", ".join(sorted(BUILTIN_STEPS))
            )
            raise PydanticCustomError(
                "unknown_step",
                "unknown step {step}: {hint} (user code is written 'path/file.py:function')",
                {"step": short(self.step), "hint": hint},
            )
        try:
            params = cls.params_model.model_validate(self.params)
        except ValidationError as exc:
            raise PydanticCustomError(
                "step_params",
                "step {step}: {problem}",
                {"step": self.step, "problem": describe_errors(exc, cls.params_model)},
            ) from None
        normalized = params.model_dump(mode="json", exclude_unset=True)
        object.__setattr__(self, "params", normalized)
        return self

    @model_serializer
    def _dump(self) -> str | dict[str, Any]:
        return {self.step: self.params} if self.params else self.step

    @property
    def is_user_code(self) -> bool:
        return USER_STEP.fullmatch(self.step) is not None

    def bind(self, stage: Stage) -> Step:
        if self.is_user_code:
            return UserStep(self.step, stage)
        cls = BUILTIN_STEPS[self.step]
        step = cls(cls.params_model.model_validate(self.params))
        return step


StepField = Annotated[StepRef, WithJsonSchema(_STEP_JSON_SCHEMA)]


class Processing(Strict):
    pre: tuple[StepField, ...] = Field(default=(), description="steps from the request to the model")
    post: tuple[StepField, ...] = Field(default=(), description="steps from the model to the response")

    @model_validator(mode="after")
    def _stages(self) -> Processing:
        for stage in ("pre", "post"):
            for i, ref in enumerate(getattr(self, stage)):
                cls = BUILTIN_STEPS.get(ref.step)
                if cls is not None and cls.stage != stage:
                    raise PydanticCustomError(
                        "step_stage",
                        "{stage}[{i}]: {step} is a {other} step; move it under {other}:",
                        {"stage": stage, "i": i, "step": ref.step, "other": cls.stage},
                    )
        return self


class Environment(Strict):
    """The runtime environment of the model's container-image Lambda."""

    python: Literal["3.11", "3.12", "3.13"] = Field(
        default="3.11", description="a Python version AWS Lambda runs"
    )
    architecture: Literal["x86_64", "arm64"] = "x86_64"
    memory_mb: int = Field(default=1024, ge=128, le=10240, description="Lambda memory, MB")
    timeout_s: int = Field(
        default=25, ge=1, le=900,
        description="Lambda timeout, seconds; a synchronous call that may run longer than API Gateway's "
        "29 s is answered as a job (202 + Location) once that deadline nears",
    )  # fmt: skip
    provisioned_concurrency: int = Field(
        default=0, ge=0, le=100,
        description="execution environments kept initialized for the model's function (Lambda provisioned "
        "concurrency, billed while configured): a burst up to this many never waits for a cold start; 0: "
        "on demand",
    )  # fmt: skip
    packages: tuple[str, ...] = Field(default=(), description="extra pip requirements, e.g. 'scipy>=1.11'")
    base_image: str | None = Field(
        default=None, description="base image; default: the AWS Lambda Python image"
    )

    @field_validator("python", mode="before")
    @classmethod
    def _python_as_text(cls, value: Any) -> Any:
        # YAML reads `python: 3.12` as a float; accept it as the version it spells.
        return repr(value) if isinstance(value, float) else value

    @field_validator("packages")
    @classmethod
    def _requirements(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for req in value:
            if len(req) > 200 or not REQUIREMENT.fullmatch(req):
                raise PydanticCustomError(
                    "requirement",
                    "{req} is not a package requirement like 'name' or 'name==1.2' "
                    "(no URLs, options or markers)",
                    {"req": short(req)},
                )
        return value

    @field_validator("base_image")
    @classmethod
    def _image_ref(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 255 or not IMAGE_REF.fullmatch(value)):
            raise PydanticCustomError(
                "image_ref", "{value} is not an image reference", {"value": short(value)}
            )
        return value


# skops' trusted_types: constructing a listed type runs its code in the probe, so only classes of the model
# libraries may be listed. Config validation never imports anything (core is pure, and importing is itself
# running code), so the rule is by name: an allowlisted top-level module, no test/FFI/build sub-module, and
# a CapWords last segment (a class; a lowercase name such as numpy.load is a function). numpy's lowercase
# scalar classes (numpy.float64, numpy.dtype) are trusted by skops already and need no listing.
TRUSTED_MODULES = ("sklearn", "numpy", "scipy", "lightgbm", "xgboost")
TRUSTED_EXTRA = ("collections.OrderedDict",)
_DENIED_SEGMENTS = frozenset(
    {"testing", "tests", "conftest", "ctypeslib", "f2py", "distutils", "_pytesttester"}
)
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")
_CLASS_NAME = re.compile(r"^_*[A-Z][A-Za-z0-9_]*$")
MAX_TRUSTED_TYPES = 50
TRUSTED_TYPES_RULE = (
    "trusted_types may name only classes (CapWords names) of scikit-learn, numpy, scipy, LightGBM or "
    "XGBoost (or collections.OrderedDict), never builtins or functions"
)


def refused_trusted_type(name: str) -> str | None:
    """Why ``name`` may not be trusted, or None when it may (see ``TRUSTED_MODULES``)."""
    if name in TRUSTED_EXTRA:
        return None
    if len(name) > 200 or not _DOTTED.fullmatch(name):
        return "not a dotted module.Class name"
    parts = name.split(".")
    if parts[0] not in TRUSTED_MODULES:
        return f"{parts[0]} is not a model library"
    if _DENIED_SEGMENTS.intersection(parts[1:-1]):
        return "test, FFI and build modules are not model code"
    if not _CLASS_NAME.fullmatch(parts[-1]):
        return f"{parts[-1]} is lowercase, so a function, not a class"
    return None


Runtime = Literal["native", "onnx"]
CONVERTIBLE: tuple[Framework, ...] = ("sklearn",)
"""The frameworks ``runtime: onnx`` converts (skl2onnx); XGBoost and LightGBM would take onnxmltools."""


def runtime_refusal(framework: Framework, runtime: Runtime) -> str | None:
    """Why ``runtime`` cannot serve a model of ``framework``, or None when it can. Checked on the
    configured framework when the config is read and on the detected one when the model is inspected."""
    if runtime == "native" or framework in CONVERTIBLE:
        return None
    if framework == "onnx":
        return (
            "runtime: onnx converts a scikit-learn model to ONNX; this model is ONNX already: remove runtime:"
        )
    if framework in ("xgboost", "lightgbm"):
        return (
            f"runtime: onnx is not supported for {framework} models yet (scikit-learn only): remove "
            "runtime: to serve the model with its own library"
        )
    return (
        "runtime: onnx converts a scikit-learn model; a Python predictor runs its own code: remove runtime:"
    )


class ModelConfig(Strict):
    """The configuration parameters of one model (``modelport.yaml``)."""

    name: str = Field(description="lowercase slug: letters, digits and '-', at most 48 characters")
    description: Text = Field(default="", max_length=1000)
    framework: Framework | None = Field(default=None, description="default: detected")
    runtime: Runtime = Field(
        default="native",
        description="native: the framework's own library serves the model; onnx (scikit-learn only): the "
        "estimator is converted to ONNX at deploy time (skl2onnx), proven to answer the same on the samples "
        "and on generated rows, and served by onnxruntime from an image without scikit-learn or scipy",
    )
    artifacts: tuple[str, ...] | None = Field(
        default=None, description="model files relative to the directory; default: detected"
    )
    environment: Environment = Field(default_factory=Environment)
    processing: Processing = Field(default_factory=Processing)
    labels: tuple[Text, ...] | None = Field(
        default=None, description="class names, in the model's class order"
    )
    allow_pickle: bool = Field(
        default=False,
        description="allow joblib/pickle artifacts; they are only ever opened in isolation",
    )
    trusted_types: tuple[str, ...] = Field(
        default=(), description="types a .skops file may load beyond skops' defaults"
    )
    pipeline: Literal["auto", "chained", "fused"] = Field(
        default="auto", description="run pre/model/post as one function or a state machine"
    )

    @model_validator(mode="after")
    def _runtime_fits(self) -> ModelConfig:
        why = runtime_refusal(self.framework, self.runtime) if self.framework is not None else None
        if why is not None:
            raise PydanticCustomError("runtime", "{why}", {"why": why})
        return self

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.fullmatch(value):
            suggestion = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")[:48].strip("-")
            hint = f"e.g. {suggestion!r}" if suggestion and SLUG.fullmatch(suggestion) else ""
            raise PydanticCustomError(
                "slug",
                "{value} is not a slug: use 1-48 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit{hint}",
                {"value": short(value), "hint": f" ({hint})" if hint else ""},
            )
        return value

    @field_validator("artifacts")
    @classmethod
    def _artifacts(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            if not value:
                raise PydanticCustomError("artifacts", "artifacts must list at least one file", {})
            for path in value:
                safe_relative_path(path, "artifact")
        return value

    @field_validator("trusted_types")
    @classmethod
    def _trusted_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > MAX_TRUSTED_TYPES:
            raise PydanticCustomError("trusted_types", "at most {n} trusted_types", {"n": MAX_TRUSTED_TYPES})
        for name in value:
            why = refused_trusted_type(name)
            if why is not None:
                shown = repr(name) if len(name) <= 120 else repr(name[:117]) + "..."
                raise PydanticCustomError(
                    "trusted_type",
                    "{name} is refused: {why}; " + TRUSTED_TYPES_RULE,
                    {"name": shown, "why": why},
                )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            if not value:
                raise PydanticCustomError("labels", "labels must not be empty", {})
            dupes = sorted(v for v, n in Counter(value).items() if n > 1)  # linear: labels may be many
            if dupes:
                raise PydanticCustomError(
                    "labels",
                    "labels repeat {dupes}",
                    {"dupes": _cut(", ".join(_cut(d, 40) for d in dupes[:5]))},
                )
        return value


# --------------------------------------------------------------------------- parsing and errors


def _loc_text(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("StepRef", "function-after[_validate(), StepRef]"):
            continue
        else:
            text += ("." if text else "") + _cut(str(part), 40)
    return text


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed where an unknown key was found, for a 'did you mean' suggestion."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def describe_errors(exc: ValidationError, model: type[BaseModel]) -> str:
    """Turn pydantic's report into one line a person can act on."""
    lines = []
    errors = exc.errors(include_url=False)
    for err in errors[:MAX_ERRORS]:
        loc = tuple(err["loc"])
        where = _loc_text(loc)
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            known = _fields_at(model, loc[:-1])
            close = difflib.get_close_matches(key[:64], known, n=1, cutoff=0.6)
            scope = f" in {_loc_text(loc[:-1])}" if loc[:-1] else ""
            msg = f"unknown key {short(key, 40)}{scope}"
            if close:
                msg += f": did you mean {close[0]!r}?"
            elif known:
                msg += " (valid keys: " + ", ".join(known) + ")"
            lines.append(msg)
            continue
        msg = err["msg"]
        ctx = err.get("ctx", {})
        if err["type"] in ("greater_than_equal", "greater_than"):
            msg = f"{short(err['input'])} is too small (at least {ctx.get('ge', ctx.get('gt'))})"
        elif err["type"] in ("less_than_equal", "less_than"):
            msg = f"{short(err['input'])} is too large (at most {ctx.get('le', ctx.get('lt'))})"
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        lines.append(_cut(f"{where}: {msg}" if where else msg, 400))
    if len(errors) > MAX_ERRORS:
        lines.append(f"and {len(errors) - MAX_ERRORS} more problems")
    return "; ".join(lines)


def parse_config(data: Any, *, source: str = CONFIG_FILE) -> ModelConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys (name, framework, ...)")
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_errors(exc, ModelConfig)}") from None


def parse_config_yaml(text: str, *, source: str = CONFIG_FILE) -> ModelConfig:
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    from chalicelib.core.yamltext import load_bounded  # PyYAML: not imported where only JSON is read

    return parse_config(load_bounded(text, source=source), source=source)


def dump_config_yaml(config: ModelConfig) -> str:
    import yaml

    data = config.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
