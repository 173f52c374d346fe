"""The runtime environment of a model's container: which packages, and the fingerprint that shares images.

Two models whose environments have the same fingerprint run on the same environment image. The package
set here is the *requested* one (pinned defaults plus the user's extras); the image builder resolves it to
wheels and records their digests beside it.
"""

from __future__ import annotations

import hashlib
import json
import re

from pydantic import Field

from chalicelib.core.config import Environment as EnvironmentConfig
from chalicelib.core.config import ModelConfig, Processing
from chalicelib.core.native import Framework
from chalicelib.core.protocol import Frozen
from chalicelib.core.steps import BUILTIN_STEPS

# Versions the runtime is tested with; every one ships manylinux wheels for CPython 3.11-3.13 on glibc 2.28+
# (Debian bookworm, Amazon Linux 2023). Where one has none (Amazon Linux 2, the Lambda base of 3.11, has glibc
# 2.26), the image builders take the newest version that has one and say so (docker.builder.DEFAULT_PINS).
PINS: dict[str, str] = {
    "awslambdaric": "4.2.2",
    "numpy": "2.4.6",
    "onnxruntime": "1.32.0",
    "scikit-learn": "1.9.1",
    "skops": "0.16.0",
    "joblib": "1.6.0",
    "xgboost-cpu": "3.2.0",  # import xgboost; without the CUDA runtime xgboost's wheel pulls in (~300 MB)
    "lightgbm": "4.7.0",
    "pillow": "13.0.0",
    "matplotlib": "3.11.2",
}

FRAMEWORK_PACKAGES: dict[Framework, tuple[str, ...]] = {
    "onnx": ("onnxruntime",),
    "sklearn": ("scikit-learn", "skops"),
    "xgboost": ("xgboost-cpu",),
    "lightgbm": ("lightgbm",),
    "python": (),
}
PICKLE_PACKAGES = ("joblib",)
ALWAYS = ("awslambdaric", "numpy")

AWS_BASE_IMAGE = "public.ecr.aws/lambda/python:{python}"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def canonical_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    assert match is not None, requirement  # config validation guarantees a name
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


class ResolvedEnvironment(Frozen):
    """The environment section of the model config file."""

    python: str
    architecture: str
    memory_mb: int
    timeout_s: int
    provisioned_concurrency: int = Field(
        default=0, description="environments kept initialized (Lambda provisioned concurrency); 0: on demand"
    )
    base_image: str
    packages: tuple[str, ...] = Field(description="pip requirements, sorted by name")
    fingerprint: str = Field(description="sha256 of base image, python, architecture and packages")


def required_packages(config: ModelConfig, framework: Framework) -> tuple[str, ...]:
    """Pinned runtime packages for the framework and steps, then the user's extras (which win)."""
    names: list[str] = [*ALWAYS, *FRAMEWORK_PACKAGES[framework]]
    if config.allow_pickle and framework == "sklearn":
        names += PICKLE_PACKAGES
    for ref in (*config.processing.pre, *config.processing.post):
        step = BUILTIN_STEPS.get(ref.step)
        if step is not None:
            names += step.packages
    chosen = {name: f"{name}=={PINS[name]}" for name in names}
    for extra in config.environment.packages:
        chosen[canonical_name(extra)] = extra
    return tuple(chosen[name] for name in sorted(chosen))


def fingerprint(*, base_image: str, python: str, architecture: str, packages: tuple[str, ...]) -> str:
    canonical = json.dumps(
        {
            "base_image": base_image,
            "python": python,
            "architecture": architecture,
            "packages": sorted(packages),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def resolve_environment(config: ModelConfig, framework: Framework) -> ResolvedEnvironment:
    env: EnvironmentConfig = config.environment
    base = env.base_image or AWS_BASE_IMAGE.format(python=env.python)
    packages = required_packages(config, framework)
    return ResolvedEnvironment(
        python=env.python,
        architecture=env.architecture,
        memory_mb=env.memory_mb,
        timeout_s=env.timeout_s,
        provisioned_concurrency=env.provisioned_concurrency,
        base_image=base,
        packages=packages,
        fingerprint=fingerprint(
            base_image=base, python=env.python, architecture=env.architecture, packages=packages
        ),
    )


def split_environment(
    env: ResolvedEnvironment, processing: Processing
) -> tuple[ResolvedEnvironment, ResolvedEnvironment]:
    """(the model's environment, the steps' environment) of a chained pipeline with shared stages.

    The model's is ``env`` without what only the built-in steps brought (pillow, matplotlib at their
    pinned versions: a user who asked for another version keeps it); the steps' is ``ALWAYS`` plus the
    steps' packages. Each gets its own fingerprint, so every model with the same steps shares one."""
    step_names = {
        name
        for ref in (*processing.pre, *processing.post)
        if (step := BUILTIN_STEPS.get(ref.step)) is not None
        for name in step.packages
    }
    pinned = {f"{name}=={PINS[name]}" for name in step_names - set(ALWAYS)}
    model = tuple(p for p in env.packages if p not in pinned)
    by_name = {canonical_name(p): p for p in env.packages}
    steps = tuple(sorted({by_name.get(n, f"{n}=={PINS[n]}") for n in (*ALWAYS, *step_names)}))

    def with_packages(packages: tuple[str, ...]) -> ResolvedEnvironment:
        return env.model_copy(
            update={
                "packages": packages,
                "fingerprint": fingerprint(
                    base_image=env.base_image, python=env.python, architecture=env.architecture,
                    packages=packages,
                ),
            }
        )  # fmt: skip

    return with_packages(model), with_packages(steps)
