"""YAML for ``modelport.yaml``: a SafeLoader with bounds, apart from ``core/config.py`` so that what reads
only JSON (the model container's runtime, the API) never imports PyYAML."""

from __future__ import annotations

from typing import Any

import yaml

from chalicelib.core.errors import ConfigError

MAX_YAML_NODES = 10_000
MAX_YAML_DEPTH = 32


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark: yaml.Mark | None, hint: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark
        self.hint = hint


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases and bounds node count and depth.

    A config file has no use for aliases, and they are how a few hundred bytes expand into gigabytes
    ("billion laughs"), so they are refused outright rather than counted after expansion.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                "YAML anchors (&) and aliases (*) are not allowed",
                event.start_mark,
                "write the value out in full; modelport.yaml refuses aliases so a small file cannot "
                "expand into a huge one",
            )
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise _Refused(
                f"more than {MAX_YAML_NODES} YAML values", event.start_mark, "a config file is small"
            )
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _Refused(
                f"YAML nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark, "flatten it"
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_bounded(text: str, *, source: str) -> Any:
    """The one YAML document of ``text``, as plain data; anything else is a ConfigError naming where."""
    loader = _ConfigLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{source}: {_cut(problem, 200)}{where}", hint=getattr(exc, "hint", None)) from None
    except (ValueError, OverflowError) as exc:  # e.g. an int past Python's digit limit, a bad date
        raise ConfigError(f"{source}: a value cannot be read: {_cut(str(exc).split(';')[0], 120)}") from None
    finally:
        loader.dispose()


class _Dumper(yaml.SafeDumper):
    """Writes short lists of scalars (shapes, labels) on one line: ``shape: [N, 4]``."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = len(data) <= 16 and all(
        isinstance(v, (int, float)) or (isinstance(v, str) and len(v) <= 40) for v in data
    )
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_readable(data: Any) -> str:
    """YAML for people to read (the config file's ``to_yaml``)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
