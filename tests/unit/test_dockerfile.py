"""The Dockerfiles are data: golden files for both images, and no user string can change an instruction.

The fuzz test puts newlines, quotes, ``$``, backslashes, NULs and arbitrary unicode into every field of the
model config file a user controls, renders both Dockerfiles, and checks with a model of Docker's own lexer
(the ``parseWords`` and double-quote rules of moby's Dockerfile parser) that the instruction list is the one
a benign manifest gives and that every value decodes back to exactly the string that went in. A string that
cannot be represented (a newline in a name) must be refused with a ``ConfigError``, never rendered.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.errors import ConfigError
from chalicelib.docker.builder import RUNTIME_PACKAGES, DockerImageBuilder
from chalicelib.docker.dockerfile import (
    Dockerfile,
    check_image,
    environment_dockerfile,
    environment_labels,
    model_dockerfile,
    model_labels,
    quote,
)
from tests.unit.test_manifest import iris_manifest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ROOT = Path(__file__).resolve().parents[2]
FINGERPRINT = "sha256:" + "ab" * 32
ENV_TAG = "modelport/env:abababababababab"
BASE = "modelport/base:py3.11-bookworm"


# --------------------------------------------------------------------------- a model of Docker's lexer


def docker_lines(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, split as Docker's parser splits a Dockerfile."""
    assert "\r" not in text and text.splitlines() == text.split("\n")[:-1], "only \\n may break lines"
    instructions = []
    for line in text.split("\n"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert not line.rstrip().endswith("\\"), f"continuation line: {line!r}"
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest))
    return instructions


def docker_words(rest: str) -> list[str]:
    """moby's ``parseWords`` with escape token ``\\``: words split on unquoted whitespace."""
    words: list[str] = []
    word, quote_char, phase, blank_ok, i = "", "", "space", False, 0
    while True:
        ch = rest[i] if i < len(rest) else None
        if phase == "space":
            if ch is None:
                break
            if ch.isspace():
                i += 1
                continue
            phase = "word"
        if ch is None:
            if blank_ok or word:
                words.append(word)
            break
        if phase == "word":
            if ch.isspace():
                phase = "space"
                if blank_ok or word:
                    words.append(word)
                word, blank_ok = "", False
                i += 1
                continue
            if ch in "'\"":
                quote_char, blank_ok, phase = ch, True, "quote"
            if ch == "\\":
                if i + 1 == len(rest):
                    i += 1
                    continue
                word += ch
                i += 1
                ch = rest[i]
            word += ch
            i += 1
            continue
        if ch == quote_char:
            phase = "word"
        if ch == "\\" and quote_char != "'":
            if i + 1 == len(rest):
                phase = "word"
                i += 1
                continue
            word += ch
            i += 1
            ch = rest[i]
        word += ch
        i += 1
    return words


def docker_double_quoted(word: str) -> str:
    """The value of one ``"..."`` word as Docker's shell lexer reads it; fails on anything it would expand."""
    assert len(word) >= 2 and word[0] == '"' and word[-1] == '"', f"not one double-quoted word: {word!r}"
    body, out, i = word[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        assert ch != '"', f"an unescaped quote ends the word early: {word!r}"
        assert ch != "$", f"an unescaped $ would expand: {word!r}"
        if ch == "\\" and i + 1 < len(body) and body[i + 1] in '"$\\':
            out.append(body[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def docker_pairs(rest: str) -> dict[str, str]:
    """``key="value" ...`` of an ENV or LABEL instruction, decoded."""
    pairs = {}
    for word in docker_words(rest):
        key, sep, value = word.partition("=")
        assert sep and key and '"' not in key, f"not key=value: {word!r}"
        assert key not in pairs
        pairs[key] = docker_double_quoted(value)
    return pairs


def docker_exec_form(rest: str) -> list[str]:
    flags = []
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
    argv = json.loads(rest)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


# --------------------------------------------------------------------------- golden files

GOLDEN_ENV_LABELS = {
    "dev.modelport.environment": FINGERPRINT,
    "dev.modelport.python": "3.11",
}
GOLDEN_MODEL_LABELS = {
    "dev.modelport.model": "iris",
    "dev.modelport.version": "2",
    "dev.modelport.config-digest": "sha256:" + "cd" * 32,
    "org.opencontainers.image.description": 'Iris "setosa" & co: costs $5 \\ each',
}


def _golden(name: str, text: str) -> None:
    path = FIXTURES / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; UPDATE_GOLDEN=1 rewrites it"


def test_the_environment_dockerfile_matches_its_golden_file() -> None:
    _golden(
        "environment.Dockerfile", environment_dockerfile(base_image=BASE, labels=GOLDEN_ENV_LABELS).render()
    )


def test_the_model_dockerfile_matches_its_golden_file() -> None:
    _golden(
        "model.Dockerfile", model_dockerfile(environment_image=ENV_TAG, labels=GOLDEN_MODEL_LABELS).render()
    )


def test_the_environment_image_installs_offline_and_ships_only_the_venv() -> None:
    instructions = docker_lines(environment_dockerfile(base_image=BASE, labels=GOLDEN_ENV_LABELS).render())
    froms = [rest for kw, rest in instructions if kw == "FROM"]
    assert froms == [f"{BASE} AS build", BASE]
    final = instructions[[kw for kw, _ in instructions].index("FROM", 1) :]
    assert [docker_exec_form(rest) for kw, rest in final if kw == "COPY"] == [["/opt/env", "/opt/env"]]
    assert "--from=build" in next(rest for kw, rest in final if kw == "COPY")
    assert not any(kw == "RUN" for kw, _ in final), "nothing runs in the final stage"
    install = next(docker_exec_form(r) for kw, r in instructions if kw == "RUN" and "install" in r)
    assert "--no-index" in install and "--find-links" in install
    env = docker_pairs(next(rest for kw, rest in final if kw == "ENV"))
    assert env["HOME"] == "/tmp" and env["MPLCONFIGDIR"] == "/tmp/matplotlib"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONPATH"] == "/var/task"
    assert env["MODELPORT_MODEL_DIR"] == "/var/task/model"
    assert env["PATH"].startswith("/opt/env/bin:")
    assert instructions[-1] == ("USER", "1000:1000")


def test_the_model_dockerfile_puts_the_model_in_the_last_layer() -> None:
    instructions = docker_lines(
        model_dockerfile(environment_image=ENV_TAG, labels=GOLDEN_MODEL_LABELS).render()
    )
    assert [kw for kw, _ in instructions] == ["FROM", "COPY", "COPY", "LABEL", "ENTRYPOINT", "CMD"]
    copies = [docker_exec_form(rest) for kw, rest in instructions if kw == "COPY"]
    assert copies == [["code/", "/var/task/chalicelib/"], ["model/", "/var/task/model/"]]
    assert docker_pairs(instructions[3][1]) == GOLDEN_MODEL_LABELS
    assert docker_exec_form(instructions[4][1]) == ["/opt/env/bin/python", "-m", "awslambdaric"]
    assert docker_exec_form(instructions[5][1]) == ["chalicelib.runtime.handler.handler"]


def test_model_labels_carry_identity_and_config_digest() -> None:
    manifest = iris_manifest(description="two\nlines\tand  spaces")
    labels = model_labels(manifest, environment_image=ENV_TAG)
    assert labels["dev.modelport.model"] == "iris"
    assert labels["dev.modelport.version"] == "2"
    assert labels["dev.modelport.config-digest"] == manifest.digest
    assert labels["dev.modelport.fingerprint"] == manifest.environment.fingerprint
    assert labels["org.opencontainers.image.description"] == "two lines and spaces"


def test_the_runtime_packages_are_the_versions_of_requirements_txt() -> None:
    pins = {
        line.split("==")[0].lower(): line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for requirement in RUNTIME_PACKAGES:
        assert pins[requirement.split("==")[0].lower()] == requirement


def test_the_user_pin_of_a_runtime_package_wins() -> None:
    manifest = iris_manifest(environment={"packages": ["pydantic==2.12.0"]})
    packages = DockerImageBuilder.packages(manifest)
    assert "pydantic==2.12.0" in packages and "pydantic==2.13.4" not in packages
    assert not any(p.lower().startswith("pyyaml") for p in packages)  # the runtime reads JSON only


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "value",
    ["a\nb", "a\rb", "nul\x00", "tab\x0bv", "sep\u2028x", "nel\x85", "esc\x1b[1m"],
)
def test_control_characters_are_refused_not_escaped(value: str) -> None:
    with pytest.raises(ConfigError, match="control character"):
        quote(value)
    with pytest.raises(ConfigError):
        Dockerfile().label({"dev.modelport.x": value})
    with pytest.raises(ConfigError):
        Dockerfile().run(["echo", value])


@pytest.mark.parametrize(
    "value",
    ['say "hi"', "$HOME", "${PATH}", "back\\slash", "end\\", "\\$x", "ünïcødé ✓ 模型", "a=b c", "'q'"],
)
def test_quoted_values_decode_to_themselves(value: str) -> None:
    rendered = Dockerfile().label({"dev.x": value}).env({"X": value}).render()
    (label, env) = docker_lines(rendered)
    assert docker_pairs(label[1]) == {"dev.x": value}
    assert docker_pairs(env[1]) == {"X": value}


@pytest.mark.parametrize(
    "reference",
    [
        "public.ecr.aws/lambda/python:3.11",
        "127.0.0.1:5000/modelport-iris:v1",
        "modelport/env:0123456789abcdef",
        "python@sha256:" + "a" * 64,
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/modelport-x:v3",
    ],
)
def test_image_references_that_are_accepted(reference: str) -> None:
    assert check_image(reference) == reference


@pytest.mark.parametrize(
    "reference",
    [
        "",
        "UPPER/case",
        "a b",
        "x:tag\nRUN id",
        "x:$TAG",
        "x:${T}",
        "-x",
        "x:" + "t" * 129,
        "x@sha256:zz",
        'x"',
    ],
)
def test_image_references_that_are_refused(reference: str) -> None:
    with pytest.raises(ConfigError, match="image reference"):
        Dockerfile().from_(reference)


@pytest.mark.parametrize("path", ["a b", "$HOME/x", "../up", "x\ny", 'q"', "a\\b", ""])
def test_paths_that_are_refused(path: str) -> None:
    with pytest.raises(ConfigError, match="path"):
        Dockerfile().copy([path], "/dest/")


@pytest.mark.parametrize("key", ["1X", "A-B", "A B", "A=B", "X\n"])
def test_env_keys_must_be_identifiers(key: str) -> None:
    with pytest.raises(ConfigError):
        Dockerfile().env({key: "v"})


def test_user_ids_must_be_numbers() -> None:
    with pytest.raises(ConfigError):
        Dockerfile().user(-1, 0)
    with pytest.raises(ConfigError):
        Dockerfile().user("root", 0)  # type: ignore[arg-type]
    assert Dockerfile().user(1000, 1000).instructions[-1].render() == "USER 1000:1000"


# --------------------------------------------------------------------------- the fuzz test

NASTY = ["\n", "\r", '"', "'", "$", "${HOME}", "$(id)", "`id`", "\\", "\\\n", "\x00", "\u2028", " ", "=", "#"]
nasty_text = st.lists(
    st.one_of(st.sampled_from(NASTY), st.text(min_size=0, max_size=8)), min_size=0, max_size=6
).map("".join)
slug_or_nasty = st.one_of(st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9]\Z"), nasty_text)
image_or_nasty = st.one_of(
    st.sampled_from(["public.ecr.aws/lambda/python:3.11", "modelport/base:py3.11-bookworm"]), nasty_text
)
package_or_nasty = st.one_of(st.sampled_from(["scipy", "requests==2.32.3", "Pillow>=10"]), nasty_text)


def _fuzzed(
    name: str, description: str, labels: list[str], packages: list[str], base: str, title: str
) -> ModelConfigFile:
    m = iris_manifest()
    post = tuple(
        ref.model_copy(update={"params": {**ref.params, "title": title}}) if ref.step == "bar_chart" else ref
        for ref in m.processing.post
    )
    return m.model_copy(
        update={
            "name": name,
            "description": description,
            "labels": tuple(labels),
            "environment": m.environment.model_copy(update={"packages": tuple(packages), "base_image": base}),
            "processing": m.processing.model_copy(update={"post": post}),
        }
    )


def _render_both(manifest: ModelConfigFile) -> tuple[list[tuple[str, str]], list[tuple[str, str]], Any]:
    env_labels = environment_labels(
        manifest.environment,
        fingerprint=FINGERPRINT,
        base_image=manifest.environment.base_image,
        packages=DockerImageBuilder.packages(manifest),
    )
    labels = model_labels(manifest, environment_image=ENV_TAG)
    env = environment_dockerfile(base_image=manifest.environment.base_image, labels=env_labels).render()
    model = model_dockerfile(environment_image=ENV_TAG, labels=labels).render()
    return docker_lines(env), docker_lines(model), (env_labels, labels)


REFERENCE = _render_both(iris_manifest().model_copy(update={"description": "benign"}))


@pytest.mark.slow  # 300 examples
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=slug_or_nasty,
    description=nasty_text,
    labels=st.lists(nasty_text, max_size=3),
    packages=st.lists(package_or_nasty, max_size=3),
    base=image_or_nasty,
    title=nasty_text,
)
def test_no_user_string_changes_the_instructions(
    name: str, description: str, labels: list[str], packages: list[str], base: str, title: str
) -> None:
    manifest = _fuzzed(name, description, labels, packages, base, title)
    try:
        env, model, (env_labels, labels_) = _render_both(manifest)
    except ConfigError:
        return  # refused: fine, as long as nothing broken was rendered
    for got, want in ((env, REFERENCE[0]), (model, REFERENCE[1])):
        assert [kw for kw, _ in got] == [kw for kw, _ in want]
        for (kw, rest), (_, ref_rest) in zip(got, want, strict=True):
            if kw in ("ENV", "LABEL"):
                assert len(docker_pairs(rest)) == len(docker_pairs(ref_rest))
            elif kw in ("RUN", "COPY", "ENTRYPOINT", "CMD"):
                docker_exec_form(rest)
            elif kw == "FROM":
                check_image(rest.split(" AS ")[0])
    assert docker_pairs(next(r for k, r in env if k == "LABEL")) == env_labels
    assert docker_pairs(next(r for k, r in model if k == "LABEL")) == labels_
    assert docker_lines(environment_dockerfile(base_image=base, labels=env_labels).render())[0][1] == (
        f"{base} AS build"
    )


@given(description=nasty_text)
def test_a_description_never_blocks_a_build(description: str) -> None:
    manifest = iris_manifest().model_copy(update={"description": description})
    labels = model_labels(manifest, environment_image=ENV_TAG)
    rendered = model_dockerfile(environment_image=ENV_TAG, labels=labels).render()
    assert docker_pairs(docker_lines(rendered)[3][1]) == labels
