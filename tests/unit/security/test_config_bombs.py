"""modelport.yaml is parsed under budgets: no aliases, bounded nodes and depth, a size cap, short errors.

Each case fails the way a user sees it, with a one-line message that quotes at most a short excerpt.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.core.config import MAX_CONFIG_BYTES, parse_config, parse_config_yaml
from chalicelib.core.errors import ConfigError
from tests.support import modelport_manifest
from tests.unit.test_deployments import World, bundle

ROOT = Path(__file__).resolve().parents[3]
NAME = "iris-onnx"


def alias_bomb(name: str = NAME) -> str:
    """Nine levels of nine aliases, the last as a step's parameters: 9**9 (387 million) strings from
    ~380 bytes, which main rendered into the error message (90 s, 5.6 GB, SIGABRT)."""
    lines = [f"name: {name}", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, level in zip("abcdefg", "bcdefgh", strict=True):
        lines.append(f"{level}: &{level} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("processing: {pre: [{tabular: [" + ",".join(["*h"] * 9) + "]}]}")
    return "\n".join(lines) + "\n"


ALIASES = (
    "modelport.yaml: YAML anchors (&) and aliases (*) are not allowed at line 2, column 4 (write the value "
    "out in full; modelport.yaml refuses aliases so a small file cannot expand into a huge one)"
)


def deploy(tmp_path: Path, config: str | bytes) -> str:
    world = World(tmp_path)
    data = config.encode() if isinstance(config, str) else config
    return world.failed(world.upload(bundle({"modelport.yaml": data})))


def test_the_alias_bomb_fails_the_deployment_naming_the_place(tmp_path: Path) -> None:
    assert len(alias_bomb()) < 400
    assert deploy(tmp_path, alias_bomb()) == ALIASES


def test_the_alias_bomb_is_refused_in_bounded_memory_and_milliseconds() -> None:
    """In a process that may map at most 1 GB (the bomb took 5.6 GB), measured inside it."""
    limit = 1024 * 1024 * 1024
    script = (
        "import sys, time\n"
        "from chalicelib.core.config import parse_config_yaml\n"
        "from chalicelib.core.errors import ConfigError\n"
        "text = sys.stdin.read()\n"
        "started = time.perf_counter()\n"
        "try:\n"
        "    parse_config_yaml(text)\n"
        "except ConfigError as exc:\n"
        "    print(f'{time.perf_counter() - started:.4f}', exc)\n"
    )

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-c", script],
        input=alias_bomb(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        preexec_fn=cap,  # a resource limit for this child only
    )
    assert result.returncode == 0, result.stderr[-2000:]
    elapsed, message = result.stdout.strip().split(" ", 1)
    assert message == ALIASES
    assert float(elapsed) < 1.0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"name: &n {NAME}\n", "YAML anchors (&) and aliases (*) are not allowed at line 1, column 7"),
        (f"name: {NAME}\nlabels: &l [a]\ndescription: *l\n", "are not allowed at line 2, column 9"),
        (f"name: {NAME}\nx: {{<<: *m}}\n", "are not allowed at line 2, column 9"),
        (
            f"name: {NAME}\nx: " + "[" * 100 + "]" * 100 + "\n",
            "YAML nested more than 32 levels deep at line 2",
        ),
        (
            f"name: {NAME}\n" + "".join(" " * i + f"k{i}:\n" for i in range(60)),
            "YAML nested more than 32 levels deep at line 33",
        ),
        (f"name: {NAME}\nlabels: [" + ",".join(["a"] * 20_000) + "]\n", "more than 10000 YAML values"),
        (
            f"name: {NAME}\nx: 1" + "1" * 5000 + "\n",
            "a value cannot be read: Exceeds the limit (4300 digits)",
        ),
    ],
    ids=["anchor", "alias", "merge-key", "deep-flow", "deep-block", "many-nodes", "huge-int"],
)
def test_yaml_budgets(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_yaml(text)
    assert problem in str(err.value)
    assert str(err.value).startswith("modelport.yaml: ")


HUGE = "z" * 200_000


@pytest.mark.parametrize(
    ("text", "start"),
    [
        (f"name: {HUGE}\n", "modelport.yaml: name: 'zzzz"),
        (f"name: {NAME}\n? {HUGE}\n: 1\n", "modelport.yaml: unknown key 'zzzz"),
        (
            f"name: {NAME}\nenvironment: {{memory_mb: {'9' * 4000}}}\n",
            "modelport.yaml: environment.memory_mb: 9999",
        ),
        (
            f"name: {NAME}\nenvironment: {{packages: ['{HUGE}']}}\n",
            "modelport.yaml: environment.packages: 'zzzz",
        ),
        (
            f"name: {NAME}\nprocessing: {{pre: [{HUGE}]}}\n",
            "modelport.yaml: processing.pre[0]: unknown step 'zzzz",
        ),
        (
            f"name: {NAME}\nprocessing: {{pre: [{{tabular: {HUGE}}}]}}\n",
            "modelport.yaml: processing.pre[0]: param",
        ),
        (
            f"name: {NAME}\nprocessing:\n  pre:\n    - a: 1\n      ? {HUGE}\n      : 2\n",
            "modelport.yaml: processing.pre[0]: a step",
        ),
        (
            f"name: {NAME}\nenvironment: {{base_image: '{HUGE}'}}\n",
            "modelport.yaml: environment.base_image: 'zzz",
        ),
        (
            f"name: {NAME}\nlabels: [{HUGE[:90_000]}, {HUGE[:90_000]}]\n",
            "modelport.yaml: labels: labels repeat zzzz",
        ),
    ],
    ids=["slug", "key", "int", "requirement", "step", "params", "step-form", "image", "labels"],
)
def test_no_message_embeds_an_unbounded_value(tmp_path: Path, text: str, start: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_yaml(text)
    message = str(err.value)
    assert message.startswith(start), message[:300]
    assert len(message) < 400 and "z" * 100 not in message and "9" * 100 not in message
    assert "…" in message or "..." in message


def test_a_thousand_errors_are_summarized() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"name": NAME, **{f"k{i}": 1 for i in range(1000)}})
    assert str(err.value).endswith("; and 990 more problems")
    assert len(str(err.value)) < 2000


def test_the_size_limit_comes_before_parsing(tmp_path: Path) -> None:
    big = f"name: {NAME}\n# " + "x" * MAX_CONFIG_BYTES + "\n"
    with pytest.raises(ConfigError, match=r"^modelport.yaml is larger than 256 KiB$"):
        parse_config_yaml(big)
    assert deploy(tmp_path, big) == "modelport.yaml is larger than 256 KiB"


def test_modelport_manifest_on_the_alias_bomb_exits_2_at_once(tmp_path: Path) -> None:
    bomb, plain = tmp_path / "bomb", tmp_path / "plain"
    for directory, text in ((bomb, alias_bomb()), (plain, "name: Not A Slug\n")):
        directory.mkdir()
        (directory / "modelport.yaml").write_text(text)
    result, elapsed = modelport_manifest(bomb)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr == f"error: {ALIASES.replace('modelport.yaml', str(bomb / 'modelport.yaml'), 1)}\n"
    # Under a second once the interpreter is up: no slower than the CLI refusing a one-line mistake.
    baseline, baseline_elapsed = modelport_manifest(plain)
    assert baseline.returncode == 2
    assert elapsed < 1.0 or elapsed - baseline_elapsed < 0.5
