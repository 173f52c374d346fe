"""A model's log lines for its owner: one request's (its trace id) or the newest, from CloudWatch Logs.

What is read, and what is shown of it, is decided here, never by the page that asks:
- only the model's owner (or an admin) reads them: a grantee or a stranger gets the plain 404;
- the model's own functions (``/aws/lambda/<function>`` of the version's deployment): every line;
- a shared stage function serves other models too: only its JSON lines whose ``model`` is this one;
- the API's group (``Settings.api_log_group``, when known): only its JSON lines of this model made by the
  caller's own account (an admin's: anyone's).
A search term is a validated trace id; without one, shared groups and the API's are searched for the model's
name first, so a busy neighbour's lines do not crowd out this model's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from chalicelib.core.clock import parse_utc, utc_text
from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.errors import InvalidRequest
from chalicelib.core.jsontext import JsonTextError, loads
from chalicelib.core.pipeline import SHARED_STAGE_PREFIX
from chalicelib.core.ports import Clock, LogEvent, LogReader
from chalicelib.core.records import Account
from chalicelib.core.trace import valid_trace_id
from chalicelib.services.models import ModelService

MAX_SINCE_MIN = 24 * 60
MAX_LIMIT = 500
MAX_LINE_CHARS = 4096
"""A longer line is cut (a traceback, a model's print of its input): the answer stays bounded."""


class LogService:
    def __init__(
        self, models: ModelService, reader: LogReader, clock: Clock, api_group: str | None = None
    ) -> None:
        self.models = models
        self.reader = reader
        self.clock = clock
        self.api_group = api_group

    def lines(
        self,
        caller: Account,
        name: str,
        *,
        version: int | None = None,
        trace: str | None = None,
        since_min: float = 15,
        limit: int = 200,
    ) -> dict[str, Any]:
        self.models.owned_view(caller, name)
        trace_id = _trace(trace)
        if not 0 < since_min <= MAX_SINCE_MIN:
            raise _bad("since", f"since is minutes back, more than 0 and at most {MAX_SINCE_MIN}")
        if not 1 <= limit <= MAX_LIMIT:
            raise _bad("limit", f"limit is 1 to {MAX_LIMIT} lines")
        record = self.models.resolve_version(caller, name, version)
        manifest = ModelConfigFile.model_validate_json(record.manifest) if record.manifest else None
        deployed = manifest.deployment.functions if manifest and manifest.deployment else ()
        now_ms = int(parse_utc(self.clock()).timestamp() * 1000)
        window = {"since_ms": now_ms - int(since_min * 60_000), "until_ms": now_ms, "limit": limit}
        found: list[dict[str, Any]] = []
        for function in deployed:
            group = f"/aws/lambda/{function.function_name}"
            shared = function.function_name.startswith(SHARED_STAGE_PREFIX)
            events = self.reader.read(group, term=trace_id or (name if shared else None), **window)
            lines = (_line(e, function.role, function.function_name) for e in events)
            found += [line for line in lines if not shared or _of(line, model=name)]
        if self.api_group:
            account = None if caller.is_admin else caller.account_id
            events = self.reader.read(self.api_group, term=trace_id or name, **window)
            found += [line for line in map(_api_line, events) if _of(line, model=name, account=account)]
        found.sort(key=lambda line: line["at"])
        return {
            "model": name,
            "version": record.version,
            "trace_id": trace_id,
            "since_min": since_min,
            "lines": [{k: v for k, v in line.items() if k != "fields"} for line in found[-limit:]],
        }


def _trace(trace: str | None) -> str | None:
    if trace is None:
        return None
    found = valid_trace_id(trace.removeprefix("Root=").lower()[:64])
    if found is None:
        raise _bad("trace", "trace is an X-Ray trace id: 1-<8 hex>-<24 hex>")
    return found


def _bad(parameter: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, errors=[{"pointer": f"?{parameter}", "message": message}])


def _fields(message: str) -> dict[str, Any] | None:
    """A structured line's fields; None for any other line (a tenant's print may be hostile JSON: depth
    and size are bounded before it is parsed)."""
    text = message.strip()
    if not text.startswith("{") or len(text) > 64 * 1024:
        return None
    try:
        fields = loads(text)
    except JsonTextError:
        return None
    return fields if isinstance(fields, dict) else None


def _of(line: dict[str, Any], *, model: str, account: str | None = None) -> bool:
    """A structured line of ``model`` (and, given ``account``, made by it)."""
    fields = line["fields"]
    if fields is None or fields.get("model") != model:
        return False
    return account is None or fields.get("account") == account


def _api_line(event: LogEvent) -> dict[str, Any]:
    return _line(event, "api", None)


def _line(event: LogEvent, source: str, function: str | None) -> dict[str, Any]:
    """The answer's line, and (under ``fields``, not answered) what it says, parsed once."""
    fields = _fields(event.message)
    message = event.message.rstrip("\n")
    return {
        "at": utc_text(datetime.fromtimestamp(event.timestamp_ms / 1000, UTC)),
        "source": source,
        "function": function,
        "message": message[:MAX_LINE_CHARS],
        "truncated": len(message) > MAX_LINE_CHARS,
        "level": fields.get("level") if fields else None,
        "trace_id": valid_trace_id(fields.get("trace_id")) if fields else None,
        "fields": fields,
    }
