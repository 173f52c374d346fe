"""A small Amazon States Language interpreter for the local edge's StartSyncExecution.

moto's interpreter costs 75-110 ms per one-Task execution (it parses the definition and records a history
each time), which would make the chained mode many times slower than the fused one locally. This module
runs the subset of ASL that ``chalicelib.core.pipeline`` generates, calling Lambda functions in process:

- ``Task`` with ``Resource`` ``arn:aws:states:::lambda:invoke`` (``Parameters``: ``FunctionName``,
  ``Payload``, ``Qualifier``) or a bare Lambda function ARN; ``TimeoutSeconds``; ``ResultSelector``;
- ``Pass`` (``Result``, ``Parameters``), ``Choice`` (``Variable`` with the string, numeric and boolean
  comparators, their ``...Path`` forms, ``Is*`` tests, ``And``/``Or``/``Not``, ``Default``), ``Succeed``,
  ``Fail`` (``Error``/``Cause`` or their ``...Path`` forms);
- ``InputPath``/``OutputPath``/``ResultPath`` and ``Parameters`` with ``.$`` keys (JSONPath: ``$``,
  ``.name``, ``['name']``, ``[index]``; ``$$.`` the context object), ``Retry`` (``ErrorEquals``,
  ``IntervalSeconds``, ``MaxAttempts``, ``BackoffRate``, ``MaxDelaySeconds``), ``Catch``.

Anything else (Map, Parallel, Wait, intrinsic functions, JSONata, wildcards in paths, ``.sync`` or
``.waitForTaskToken`` integrations, ...) makes ``compile_machine`` raise ``Unsupported``, and the edge
runs the execution on moto instead. Errors are named as Step Functions names them for its Lambda
integration: ``Lambda.<code>`` for an API error (``Lambda.ServiceException``, ...), the function's
``errorType`` for a function error (``States.TaskFailed`` when it has none), ``States.Timeout`` for a
Task's own ``TimeoutSeconds``, ``States.Runtime`` for a path that finds nothing (not caught by
``States.ALL``), ``States.NoChoiceMatched``.

Nothing here imports boto3 or chalice.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.core.clock import utc_now
from chalicelib.local.awslambda.models import EmulatorInvocation, LambdaError

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
_LAMBDA_ARN = re.compile(
    r"arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+(?::[A-Za-z0-9$_-]+)?"
)
_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\['([^'\\]*)'\]|\[\"([^\"\\]*)\"\]|\[(\d+)\]")
_UNCATCHABLE = frozenset({"States.Runtime", "States.DataLimitExceeded"})

Invoke = Callable[[str, str | None, bytes], EmulatorInvocation]
"""(function name or ARN, qualifier, payload) -> the invocation; raises ``LambdaError`` for API errors."""


class Unsupported(ValueError):
    """The definition uses something outside this interpreter's subset: run it elsewhere."""


class _Expired(Exception):
    """The whole execution ran out of time: not a state's error, so no Catch takes it."""


class StatesError(Exception):
    """A state's failure, named as Step Functions names it."""

    def __init__(self, error: str, cause: str) -> None:
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


# --------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Path:
    """A JSONPath of the subset: ``$`` or ``$$`` then names and indexes."""

    text: str
    context: bool
    steps: tuple[str | int, ...]

    def get(self, doc: Any, ctx: Any) -> Any:
        value = ctx if self.context else doc
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(value, list) or step >= len(value):
                    raise _missing(self.text)
            elif not isinstance(value, dict) or step not in value:
                raise _missing(self.text)
            value = value[step]
        return value

    def found(self, doc: Any, ctx: Any) -> bool:
        try:
            self.get(doc, ctx)
        except StatesError:
            return False
        return True

    def put(self, doc: Any, result: Any) -> Any:
        """``doc`` with ``result`` at this path (a ResultPath); only the containers on the path are copied."""
        if not self.steps:
            return result
        return _put(doc, self.steps, result, self.text)


def _missing(text: str) -> StatesError:
    return StatesError("States.Runtime", f"The JSONPath '{text}' could not be found in the input")


def _put(doc: Any, steps: tuple[str | int, ...], result: Any, text: str) -> Any:
    step, rest = steps[0], steps[1:]
    if isinstance(step, int):
        raise Unsupported(f"ResultPath {text!r} indexes an array")
    if not isinstance(doc, dict):
        raise StatesError(
            "States.Runtime", f"Unable to apply ResultPath '{text}': the target is not a JSON object"
        )
    copy = dict(doc)
    copy[step] = result if not rest else _put(doc.get(step, {}), rest, result, text)
    return copy


def parse_path(text: object, *, reference: bool = False) -> Path:
    """A path of the subset, or ``Unsupported`` (wildcards, filters, recursive descent, ...)."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise Unsupported(f"not a JSONPath: {text!r}")
    context = text.startswith("$$")
    if context and reference:
        raise Unsupported(f"a ResultPath cannot point into the context object: {text!r}")
    pos, steps = (2 if context else 1), []
    while pos < len(text):
        match = _SEGMENT.match(text, pos)
        if match is None:
            raise Unsupported(f"JSONPath {text!r} is outside the supported subset")
        name = next((g for g in match.groups()[:3] if g is not None), None)
        steps.append(name if name is not None else int(match.group(4)))
        pos = match.end()
    return Path(text, context, tuple(steps))


def _optional_path(state: Mapping[str, Any], key: str, *, reference: bool = False) -> Path | None:
    """``None`` is a ``null`` field: InputPath/OutputPath give ``{}``, ResultPath drops the result."""
    if key not in state:
        return parse_path("$")
    if state[key] is None:
        return None
    return parse_path(state[key], reference=reference)


# --------------------------------------------------------------------------- templates (Parameters)


@dataclass(frozen=True)
class Template:
    """A ``Parameters``/``ResultSelector`` value: literals with ``.$`` keys resolved from paths."""

    value: Any

    def render(self, doc: Any, ctx: Any) -> Any:
        return _render(self.value, doc, ctx)


def _compile_template(value: Any) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key.endswith(".$"):
                if not isinstance(item, str) or not item.startswith("$"):
                    raise Unsupported(f"{key}: intrinsic functions are outside the supported subset")
                out[key] = parse_path(item)
            else:
                out[key] = _compile_template(item)
        return out
    if isinstance(value, list):
        return [_compile_template(item) for item in value]
    return value


def _render(value: Any, doc: Any, ctx: Any) -> Any:
    if isinstance(value, dict):
        return {
            (key[:-2] if isinstance(item, Path) else key): (
                item.get(doc, ctx) if isinstance(item, Path) else _render(item, doc, ctx)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_render(item, doc, ctx) for item in value]
    return value


# --------------------------------------------------------------------------- states


@dataclass(frozen=True)
class Retrier:
    errors: frozenset[str]
    interval_s: float = 1.0
    max_attempts: int = 3
    backoff: float = 2.0
    max_delay_s: float | None = None

    def delay(self, attempt: int) -> float:
        wait = self.interval_s * self.backoff**attempt
        return min(wait, self.max_delay_s) if self.max_delay_s is not None else wait


@dataclass(frozen=True)
class Catcher:
    errors: frozenset[str]
    next: str
    result_path: Path | None


@dataclass(frozen=True)
class State:
    name: str
    type: str
    next: str | None = None
    input_path: Path | None = None
    output_path: Path | None = None
    result_path: Path | None = None
    parameters: Template | None = None
    result_selector: Template | None = None
    result: Any = None
    resource: str = ""
    timeout_s: float | None = None
    retry: tuple[Retrier, ...] = ()
    catch: tuple[Catcher, ...] = ()
    choices: tuple[tuple[Rule, str], ...] = ()
    default: str | None = None
    error: str | Path | None = None
    cause: str | Path | None = None


@dataclass(frozen=True)
class Machine:
    start_at: str
    states: Mapping[str, State]
    timeout_s: float | None = None


COMMON = {"Type", "Comment", "Next", "End", "InputPath", "OutputPath"}
ALLOWED = {
    "Task": COMMON
    | {"Resource", "Parameters", "ResultPath", "ResultSelector", "Retry", "Catch", "TimeoutSeconds"},
    "Pass": COMMON | {"Result", "ResultPath", "Parameters"},
    "Choice": {"Type", "Comment", "InputPath", "OutputPath", "Choices", "Default"},
    "Succeed": {"Type", "Comment", "InputPath", "OutputPath"},
    "Fail": {"Type", "Comment", "Error", "Cause", "ErrorPath", "CausePath"},
}
INVOKE_PARAMETERS = {"FunctionName", "Payload", "Qualifier"}


def compile_machine(definition: Mapping[str, Any] | str) -> Machine:
    """The definition checked against the subset and prepared to run; ``Unsupported`` when outside it."""
    doc = json.loads(definition) if isinstance(definition, str) else definition
    if not isinstance(doc, dict):
        raise Unsupported("the definition is not a JSON object")
    extra = set(doc) - {"Comment", "StartAt", "States", "TimeoutSeconds", "Version", "QueryLanguage"}
    if extra or doc.get("QueryLanguage", "JSONPath") != "JSONPath":
        raise Unsupported(f"top-level fields outside the subset: {sorted(extra) or doc.get('QueryLanguage')}")
    states_doc = doc.get("States")
    if not isinstance(states_doc, dict) or doc.get("StartAt") not in states_doc:
        raise Unsupported("StartAt does not name a state")
    states = {name: _compile_state(name, body) for name, body in states_doc.items()}
    for state in states.values():
        targets = [state.next, state.default, *(c.next for c in state.catch), *(n for _, n in state.choices)]
        for target in targets:
            if target is not None and target not in states:
                raise Unsupported(f"state {state.name!r} goes to {target!r}, which is not a state")
    timeout = doc.get("TimeoutSeconds")
    return Machine(doc["StartAt"], states, float(timeout) if timeout is not None else None)


def _compile_state(name: str, body: Any) -> State:
    if not isinstance(body, dict):
        raise Unsupported(f"state {name!r} is not an object")
    kind = str(body.get("Type"))
    if kind not in ALLOWED:
        raise Unsupported(f"state {name!r}: the state type {kind} is outside the subset")
    if set(body) - ALLOWED[kind]:
        raise Unsupported(f"state {name!r}: {kind} with {sorted(set(body) - ALLOWED[kind])}")
    if kind in ("Task", "Pass") and not (body.get("End") is True) ^ ("Next" in body):
        raise Unsupported(f"state {name!r} needs exactly one of Next and End")
    common: dict[str, Any] = {
        "name": name,
        "type": kind,
        "next": body.get("Next"),
        "input_path": _optional_path(body, "InputPath"),
        "output_path": _optional_path(body, "OutputPath"),
    }
    if kind == "Task":
        return State(**common, **_task_fields(name, body))
    if kind == "Pass":
        return State(
            **common,
            result_path=_optional_path(body, "ResultPath", reference=True),
            parameters=Template(_compile_template(body["Parameters"])) if "Parameters" in body else None,
            result=body.get("Result", _NO_RESULT),
        )
    if kind == "Choice":
        choices = body.get("Choices")
        if not isinstance(choices, list) or not choices:
            raise Unsupported(f"Choice {name!r} has no Choices")
        compiled = []
        for choice in choices:
            if not isinstance(choice, dict) or not isinstance(choice.get("Next"), str):
                raise Unsupported(f"a rule of Choice {name!r} has no Next")
            compiled.append((_compile_rule({k: v for k, v in choice.items() if k != "Next"}), choice["Next"]))
        return State(**common, choices=tuple(compiled), default=body.get("Default"))
    if kind == "Fail":
        return State(
            name=name,
            type=kind,
            error=parse_path(body["ErrorPath"]) if "ErrorPath" in body else body.get("Error"),
            cause=parse_path(body["CausePath"]) if "CausePath" in body else body.get("Cause"),
        )
    return State(**common)


_NO_RESULT = object()


def _task_fields(name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    resource = body.get("Resource")
    parameters = body.get("Parameters")
    if resource == LAMBDA_INVOKE:
        if not isinstance(parameters, dict):
            raise Unsupported(f"Task {name!r}: lambda:invoke without Parameters")
        keys = {key.removesuffix(".$") for key in parameters}
        if "FunctionName" not in keys or keys - INVOKE_PARAMETERS:
            raise Unsupported(f"Task {name!r}: lambda:invoke Parameters {sorted(keys)}")
    elif not isinstance(resource, str) or _LAMBDA_ARN.fullmatch(resource) is None:
        raise Unsupported(f"Task {name!r}: resource {resource!r} is outside the subset")
    timeout = body.get("TimeoutSeconds")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise Unsupported(f"Task {name!r}: TimeoutSeconds {timeout!r}")
    return {
        "resource": resource,
        "parameters": Template(_compile_template(parameters)) if parameters is not None else None,
        "result_selector": (
            Template(_compile_template(body["ResultSelector"])) if "ResultSelector" in body else None
        ),
        "result_path": _optional_path(body, "ResultPath", reference=True),
        "timeout_s": float(timeout) if timeout is not None else None,
        "retry": tuple(_retrier(name, r) for r in body.get("Retry", [])),
        "catch": tuple(_catcher(name, c) for c in body.get("Catch", [])),
    }


def _errors(name: str, doc: Any) -> frozenset[str]:
    if not isinstance(doc, dict) or not isinstance(doc.get("ErrorEquals"), list) or not doc["ErrorEquals"]:
        raise Unsupported(f"state {name!r}: a Retry/Catch without ErrorEquals")
    return frozenset(str(e) for e in doc["ErrorEquals"])


def _retrier(name: str, doc: Any) -> Retrier:
    errors = _errors(name, doc)
    if set(doc) - {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds"}:
        raise Unsupported(f"state {name!r}: Retry fields {sorted(doc)}")
    max_delay = doc.get("MaxDelaySeconds")
    return Retrier(
        errors,
        float(doc.get("IntervalSeconds", 1)),
        int(doc.get("MaxAttempts", 3)),
        float(doc.get("BackoffRate", 2.0)),
        float(max_delay) if max_delay is not None else None,
    )


def _catcher(name: str, doc: Any) -> Catcher:
    errors = _errors(name, doc)
    if set(doc) - {"ErrorEquals", "Next", "ResultPath"} or not isinstance(doc.get("Next"), str):
        raise Unsupported(f"state {name!r}: Catch fields {sorted(doc)}")
    return Catcher(errors, doc["Next"], _optional_path(doc, "ResultPath", reference=True))


def _matches(errors: frozenset[str], error: str) -> bool:
    if error in errors:
        return True
    if "States.ALL" in errors and error not in _UNCATCHABLE:
        return True
    return "States.TaskFailed" in errors and error not in _UNCATCHABLE and error != "States.Timeout"


# --------------------------------------------------------------------------- Choice rules


@dataclass(frozen=True)
class Rule:
    op: str
    variable: Path | None = None
    operand: Any = None
    rules: tuple[Rule, ...] = field(default=())

    def test(self, doc: Any, ctx: Any) -> bool:
        if self.op == "And":
            return all(rule.test(doc, ctx) for rule in self.rules)
        if self.op == "Or":
            return any(rule.test(doc, ctx) for rule in self.rules)
        if self.op == "Not":
            return not self.rules[0].test(doc, ctx)
        assert self.variable is not None
        if self.op == "IsPresent":
            return self.variable.found(doc, ctx) is bool(self.operand)
        if self.op in _IS and not self.variable.found(doc, ctx):
            return False  # a type test of nothing is false, not a runtime error
        value = self.variable.get(doc, ctx)
        name, operand = self.op, self.operand
        if name.endswith("Path"):
            name, operand = name[:-4], operand.get(doc, ctx)
        return _compare(name, value, operand)


_IS: dict[str, Callable[[Any], bool]] = {
    "IsNull": lambda v: v is None,
    "IsNumeric": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "IsString": lambda v: isinstance(v, str),
    "IsBoolean": lambda v: isinstance(v, bool),
}
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: bool(a == b),
    "LessThan": lambda a, b: bool(a < b),
    "GreaterThan": lambda a, b: bool(a > b),
    "LessThanEquals": lambda a, b: bool(a <= b),
    "GreaterThanEquals": lambda a, b: bool(a >= b),
}
COMPARATORS = frozenset(
    [f"{kind}{order}" for kind in ("String", "Numeric") for order in _ORDER]
    + ["BooleanEquals", "StringMatches"]
)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(name: str, value: Any, operand: Any) -> bool:
    if name in _IS:
        return _IS[name](value) is bool(operand)
    if name == "BooleanEquals":
        return isinstance(value, bool) and isinstance(operand, bool) and value is operand
    if name == "StringMatches":
        return isinstance(value, str) and _wildcard(str(operand)).fullmatch(value) is not None
    kind, order = ("String", name[6:]) if name.startswith("String") else ("Numeric", name[7:])
    if kind == "String":
        ok = isinstance(value, str) and isinstance(operand, str)
    else:
        ok = _number(value) and _number(operand)
    return ok and _ORDER[order](value, operand)


def _wildcard(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\\\\|\\\*|\*)", pattern)
    out = "".join(
        ".*"
        if p == "*"
        else re.escape("*")
        if p == "\\*"
        else re.escape("\\")
        if p == "\\\\"
        else re.escape(p)
        for p in parts
    )
    return re.compile(out, re.DOTALL)


def _compile_rule(doc: Mapping[str, Any]) -> Rule:
    for op in ("And", "Or"):
        if op in doc:
            if set(doc) != {op} or not isinstance(doc[op], list) or not doc[op]:
                raise Unsupported(f"a Choice rule {op} is malformed")
            return Rule(op, rules=tuple(_compile_rule(r) for r in doc[op]))
    if "Not" in doc:
        if set(doc) != {"Not"} or not isinstance(doc["Not"], dict):
            raise Unsupported("a Choice rule Not is malformed")
        return Rule("Not", rules=(_compile_rule(doc["Not"]),))
    ops = set(doc) - {"Variable"}
    if "Variable" not in doc or len(ops) != 1:
        raise Unsupported(f"a Choice rule with {sorted(doc)} is outside the subset")
    (op,) = ops
    operand = doc[op]
    if op in ("IsPresent", *_IS):
        if not isinstance(operand, bool):
            raise Unsupported(f"{op} takes a boolean")
    elif op.endswith("Path") and op[:-4] in COMPARATORS:
        operand = parse_path(operand)
    elif op in COMPARATORS:
        wanted: type | tuple[type, ...] = (
            str if op.startswith("String") else bool if op.startswith("Boolean") else (int, float)
        )
        if not isinstance(operand, wanted) or (wanted == (int, float) and isinstance(operand, bool)):
            raise Unsupported(f"{op} with {operand!r}")
    else:
        raise Unsupported(f"the Choice comparator {op} is outside the subset")
    return Rule(op, parse_path(doc["Variable"]), operand)


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Outcome:
    """An execution's end, as StartSyncExecution reports it."""

    status: str  # SUCCEEDED | FAILED | TIMED_OUT
    output: str | None = None
    error: str | None = None
    cause: str | None = None


def run(
    machine: Machine,
    input_doc: Any,
    invoke: Invoke,
    *,
    context: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Run ``machine`` on ``input_doc``; ``timeout_s`` (or the definition's TimeoutSeconds, the smaller)
    bounds the whole execution."""
    limits = [t for t in (timeout_s, machine.timeout_s) if t is not None]
    deadline = clock() + min(limits) if limits else None
    ctx: dict[str, Any] = {"Execution": {"Input": input_doc}, **(context or {})}
    ctx["Execution"] = {"Input": input_doc, **ctx["Execution"]}
    doc, name = input_doc, machine.start_at
    try:
        while True:
            if deadline is not None and clock() >= deadline:
                raise _Expired
            state = machine.states[name]
            ctx["State"] = {"Name": name, "EnteredTime": utc_now(), "RetryCount": 0}
            if state.type == "Fail":
                return Outcome(
                    "FAILED", error=_text(state.error, doc, ctx), cause=_text(state.cause, doc, ctx)
                )
            effective = state.input_path.get(doc, ctx) if state.input_path is not None else {}
            following: str | None
            if state.type == "Succeed":
                return Outcome("SUCCEEDED", _dump(_output(state, effective, ctx)))
            if state.type == "Choice":
                following = next((n for rule, n in state.choices if rule.test(effective, ctx)), state.default)
                if following is None:
                    raise StatesError("States.NoChoiceMatched", f"No Choice Rule matched in state {name!r}")
                doc, name = _output(state, effective, ctx), following
                continue
            if state.type == "Pass":
                result = state.result
                if result is _NO_RESULT:
                    result = state.parameters.render(effective, ctx) if state.parameters else effective
                doc = _output(state, _merge(state, doc, result), ctx)
            else:
                try:
                    result = _task(state, effective, ctx, invoke, deadline, sleep, clock)
                except StatesError as exc:
                    catcher = next((c for c in state.catch if _matches(c.errors, exc.error)), None)
                    if catcher is None:
                        raise
                    caught = {"Error": exc.error, "Cause": exc.cause}
                    doc = catcher.result_path.put(doc, caught) if catcher.result_path is not None else doc
                    name = catcher.next
                    continue
                doc = _output(state, _merge(state, doc, result), ctx)
            if state.next is None:
                return Outcome("SUCCEEDED", _dump(doc))
            name = state.next
    except _Expired:
        return Outcome("TIMED_OUT", error="States.Timeout", cause="the execution timed out")
    except StatesError as exc:
        return Outcome("FAILED", error=exc.error, cause=exc.cause)


def _text(value: str | Path | None, doc: Any, ctx: Any) -> str | None:
    if isinstance(value, Path):
        found = value.get(doc, ctx)
        return found if isinstance(found, str) else _dump(found)
    return value


def _dump(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _merge(state: State, raw_input: Any, result: Any) -> Any:
    return state.result_path.put(raw_input, result) if state.result_path is not None else raw_input


def _output(state: State, doc: Any, ctx: Any) -> Any:
    return state.output_path.get(doc, ctx) if state.output_path is not None else {}


def _task(
    state: State,
    effective: Any,
    ctx: dict[str, Any],
    invoke: Invoke,
    deadline: float | None,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> Any:
    arguments = state.parameters.render(effective, ctx) if state.parameters is not None else effective
    attempts = [0] * len(state.retry)
    while True:
        try:
            result = _call_lambda(state, arguments, invoke)
            if state.result_selector is not None:
                result = state.result_selector.render(result, ctx)
            return result
        except StatesError as exc:
            index = next((i for i, r in enumerate(state.retry) if _matches(r.errors, exc.error)), None)
            if index is None or attempts[index] >= state.retry[index].max_attempts:
                raise
            pause = state.retry[index].delay(attempts[index])
            if deadline is not None and clock() + pause >= deadline:
                raise _Expired from None
            attempts[index] += 1
            ctx["State"]["RetryCount"] += 1
            sleep(pause)


def _call_lambda(state: State, arguments: Any, invoke: Invoke) -> Any:
    integration = state.resource == LAMBDA_INVOKE
    if integration:
        function = arguments.get("FunctionName")
        qualifier = arguments.get("Qualifier")
        payload = _payload(arguments["Payload"]) if "Payload" in arguments else b"{}"
        if not isinstance(function, str) or not (qualifier is None or isinstance(qualifier, str)):
            raise StatesError("States.Runtime", f"FunctionName {function!r} / Qualifier {qualifier!r}")
    else:
        function, qualifier, payload = state.resource, None, _dump(arguments).encode()
    try:
        answer = _with_timeout(lambda: invoke(function, qualifier, payload), state.timeout_s)
    except LambdaError as exc:
        code = exc.code if exc.status < 500 or exc.code.endswith("Exception") else "ServiceException"
        raise StatesError(
            f"Lambda.{code}",
            f"{exc.message} (Service: AWSLambda; Status Code: {exc.status}; Error Code: {exc.code})",
        ) from None
    if answer.function_error:
        cause = answer.payload.decode(errors="replace")
        try:
            error = json.loads(answer.payload).get("errorType") or "States.TaskFailed"
        except (ValueError, AttributeError):
            error = "States.TaskFailed"
        raise StatesError(str(error), cause)
    body = _parsed(answer.payload)
    if not integration:
        return body
    return {"ExecutedVersion": answer.executed_version, "Payload": body, "StatusCode": answer.status}


def _payload(value: Any) -> bytes:
    """As Step Functions sends ``Payload``: a string that is JSON goes as it is, anything else as JSON."""
    if isinstance(value, str):
        try:
            json.loads(value)
            return value.encode()
        except ValueError:
            pass
    return _dump({} if value is None else value).encode()


def _parsed(payload: bytes) -> Any:
    text = payload.decode(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _with_timeout(call: Callable[[], EmulatorInvocation], timeout_s: float | None) -> EmulatorInvocation:
    """``call()``; with a timeout, run on a thread and abandon it (as Step Functions abandons the Lambda)."""
    if timeout_s is None:
        return call()
    box: list[EmulatorInvocation | BaseException] = []

    def target() -> None:
        try:
            box.append(call())
        except BaseException as exc:  # handed to the caller's thread
            box.append(exc)

    worker = threading.Thread(target=target, name="asl-task", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not box:
        raise StatesError("States.Timeout", f"the Task did not finish within {timeout_s:g} seconds")
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]
