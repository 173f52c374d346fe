"""Event-driven batch: an object under ``inputs/<model>/`` of the data bucket, inferred row by row (CSV, JSON
Lines) or as one request (an image), its results under ``outputs/<model>/``.

``inputs/iris-onnx/day-1.csv`` gives ``outputs/iris-onnx/day-1.jsonl``: one line per input row, in order,
``{"row": i, "result": ...}`` or ``{"row": i, "error": "..."}`` (a bad row never loses the others), and
``outputs/iris-onnx/day-1.summary.json`` beside it, written last with the input's ETag: a repeated event for
the same object finds it and writes nothing. The rows run as the model's owner (whoever may write under
``inputs/`` is trusted with the data bucket, as with the bundle bucket). Sizes are bounded before parsing.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from chalicelib.core.config import SLUG
from chalicelib.core.cost import usd
from chalicelib.core.errors import ConfigError, ModelportError, NotFound, TooLarge, Unavailable
from chalicelib.core.jsontext import JsonTextError, loads
from chalicelib.core.keys import check_key
from chalicelib.core.ports import AccountStore, ArtifactStore, ModelStore
from chalicelib.services.events import s3_records
from chalicelib.services.invoke import InvokeService

log = logging.getLogger("modelport.batch")

INPUTS, OUTPUTS = "inputs/", "outputs/"
MAX_INPUT_BYTES = 256 * 1024 * 1024
MAX_ROWS = 1_000_000
MAX_LINE_BYTES = 1024 * 1024
IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
KINDS = {".csv": "text/csv", ".jsonl": "application/json", ".ndjson": "application/json", **IMAGES}


def output_keys(key: str) -> tuple[str, str, str] | None:
    """(model, results key, summary key) of an input key; None for a key that is not a batch input."""
    try:
        check_key(key)
    except ConfigError:
        return None  # no summary could be written beside it either
    path = PurePosixPath(key)
    parts = path.parts
    if len(parts) < 3 or parts[0] != INPUTS.rstrip("/") or not SLUG.fullmatch(parts[1]):
        return None
    if path.suffix.lower() not in KINDS or ".." in parts:
        return None
    stem = "/".join(parts[2:])[: -len(path.suffix)]
    base = f"{OUTPUTS}{parts[1]}/{stem}"
    return parts[1], f"{base}.jsonl", f"{base}.summary.json"


class BatchService:
    def __init__(
        self, invoke: InvokeService, models: ModelStore, accounts: AccountStore, data: ArtifactStore
    ) -> None:
        self.invoke = invoke
        self.models = models
        self.accounts = accounts
        self.data = data

    def handle_message(self, body: str) -> list[dict[str, Any]]:
        """An S3 notification of the data bucket: each input it names, inferred; the summaries."""
        return [s for s in (self.handle_object(key, etag) for _, key, etag, _ in s3_records(body)) if s]

    def handle_object(self, key: str, etag: str) -> dict[str, Any] | None:
        found = output_keys(key)
        if found is None:
            log.warning("ignoring %.200r: not inputs/<model>/<name>.(csv|jsonl|png|jpg|webp)", key)
            return None
        model, results_key, summary_key = found
        done = self._summary(summary_key)
        if done is not None and done.get("etag") == etag:
            return None  # this very object was done already: a repeated event
        began = time.monotonic()
        ok = failed = 0
        spent = [0, 0]  # Lambda's billed ms and pico-dollars of the rows' invocations
        with tempfile.TemporaryDirectory() as tmp:
            results = Path(tmp) / "results.jsonl"  # rows go to disk as they come, not into memory
            try:
                owner = self.accounts.get_account(self.models.get_model(model).owner)
                with results.open("w", encoding="utf-8") as out:
                    for i, (body, content_type, problem) in enumerate(self._requests(key)):
                        if i >= MAX_ROWS:
                            raise TooLarge(f"{key} has more than {MAX_ROWS} rows")
                        line: dict[str, Any] = {"row": i}
                        if problem is None:
                            problem = self._infer(owner, model, body, content_type, line, spent)
                        if problem is not None:
                            line["error"] = problem
                            failed += 1
                        else:
                            ok += 1
                        out.write(json.dumps(line, separators=(",", ":")) + "\n")
                error = None
            except Unavailable:
                raise  # the queue redelivers; nothing was written
            except ModelportError as exc:
                error = str(exc)
            if error is None:
                self.data.upload(results_key, results)
        summary = {
            "input": key, "etag": etag, "model": model, "output": results_key if error is None else None,
            "rows": ok + failed, "succeeded": ok, "failed": failed, "error": error,
            "seconds": round(time.monotonic() - began, 3),
            "cost": {"billed_ms": spent[0], "usd": usd(spent[1]), "pico_usd": spent[1]},
        }  # fmt: skip
        self.data.put(summary_key, json.dumps(summary, indent=2).encode())
        return summary

    def _infer(
        self,
        owner: Any,
        model: str,
        body: bytes,
        content_type: str,
        line: dict[str, Any],
        spent: list[int],
    ) -> str | None:
        try:
            result = self.invoke.invoke(owner, model, None, body=body, content_type=content_type, accept=None)
        except Unavailable:
            raise
        except ModelportError as exc:
            return str(exc)
        if result.bill is not None:
            spent[0] += result.bill.billed_ms
            spent[1] += result.bill.cost_pp
        if result.status >= 400:
            return _message(result.body)
        if result.content_type.startswith("application/json"):
            try:
                line["result"] = loads(result.body)
            except JsonTextError as exc:
                return f"the model's answer is not JSON it can be read as: {exc.message}"
        else:
            line["result"] = {"content_type": result.content_type, "bytes": len(result.body)}
        return None

    def _requests(self, key: str) -> Iterator[tuple[bytes, str, str | None]]:
        """(request body, content type, the row's own problem or None) per row of the input."""
        suffix = PurePosixPath(key).suffix.lower()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "input"
            self.data.download(key, path, max_bytes=MAX_INPUT_BYTES)
            if suffix in IMAGES:
                yield path.read_bytes(), IMAGES[suffix], None
                return
            with path.open("rb") as raw:
                if suffix == ".csv":
                    yield from _csv_rows(raw)
                else:
                    yield from _json_lines(raw)

    def _summary(self, key: str) -> dict[str, Any] | None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "summary"
            try:
                self.data.download(key, path, max_bytes=64 * 1024)
            except (NotFound, TooLarge):
                return None
            try:
                doc = json.loads(path.read_bytes())
            except ValueError:
                return None
        return doc if isinstance(doc, dict) else None


def _csv_rows(raw: Any) -> Iterator[tuple[bytes, str, str | None]]:
    text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
    header_line = text.readline()
    if not header_line.strip():
        return
    header = next(csv.reader([header_line]))
    for line in text:
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:
            yield b"", "text/csv", f"a row of {len(line)} characters, over {MAX_LINE_BYTES}"
            continue
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        out.write(line if line.endswith("\n") else line + "\n")
        yield out.getvalue().encode(), "text/csv", None


def _json_lines(raw: Any) -> Iterator[tuple[bytes, str, str | None]]:
    for line in raw:
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:
            yield b"", "application/json", f"a line of {len(line)} bytes, over {MAX_LINE_BYTES}"
            continue
        yield line.strip(), "application/json", None


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:300].decode("utf-8", errors="replace")
    return str(doc.get("message", doc))[:500] if isinstance(doc, dict) else str(doc)[:500]
