"""S3 event notifications as they arrive through SQS: the bucket -> queue -> deployment handler path."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import unquote_plus

log = logging.getLogger(__name__)

S3Object = tuple[str, str, str, int]
"""(bucket, key, etag, size) of one created object."""


def s3_records(sqs_body: str) -> list[S3Object]:
    """The objects an S3 notification names; [] for test events and anything malformed.

    A body that cannot be parsed is logged and dropped rather than raised: raising would send the same
    poison message back to the queue until it expires.
    """
    try:
        doc: Any = json.loads(sqs_body)
    except ValueError:
        log.warning("dropping an SQS message that is not JSON: %.200r", sqs_body)
        return []
    if not isinstance(doc, dict):
        log.warning("dropping an SQS message that is not an S3 notification: %.200r", sqs_body)
        return []
    if doc.get("Event") == "s3:TestEvent":
        return []
    found: list[S3Object] = []
    for record in doc.get("Records") or ():
        try:
            if not str(record.get("eventName", "ObjectCreated:")).startswith("ObjectCreated:"):
                continue
            s3 = record["s3"]
            obj = s3["object"]
            found.append(
                (
                    str(s3["bucket"]["name"]),
                    unquote_plus(str(obj["key"])),
                    str(obj.get("eTag", "")).strip('"'),
                    int(obj.get("size", 0)),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            log.warning("skipping a malformed S3 record: %.200r", record)
    return found
