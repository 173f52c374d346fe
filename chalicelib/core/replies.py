"""Where a message-driven invocation may answer (``reply_to``), checked before anything runs.

Only SQS queues named ``modelport-replies*`` (by URL or ARN; never the platform's own queues) and
EventBridge buses named ``modelport-*`` (or the ``default`` bus) are targets: the API's role may send
nowhere else, so naming the rule here gives a clear error instead of an AccessDenied after the model ran."""

from __future__ import annotations

import re

from chalicelib.core.errors import InvalidRequest

SOURCE = "modelport"
COMPLETED = "Modelport Invocation Completed"
MAX_REASON = 1000
"""Characters of a dead letter's reason kept (an SQS message attribute holds it too)."""
SQS_ARN = re.compile(
    r"arn:aws[a-z-]*:sqs:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<name>modelport-replies[\w-]{0,60})"
)
SQS_URL = re.compile(r"https?://[^/\s]{1,200}/(?P<account>\d{12})/(?P<name>modelport-replies[\w-]{0,60})")
BUS_ARN = re.compile(
    r"arn:aws[a-z-]*:events:[a-z0-9-]+:\d{12}:event-bus/(?P<name>default|modelport-[\w.-]{1,200})"
)


def check_target(target: str) -> str:
    """``target`` when it is a reply queue or bus this platform may send to; InvalidRequest if not."""
    if SQS_ARN.fullmatch(target) or SQS_URL.fullmatch(target) or BUS_ARN.fullmatch(target):
        return target
    raise InvalidRequest(
        f"reply_to {target[:200]!r} is not a modelport-replies* SQS queue (URL or ARN) or an EventBridge bus",
        hint="name a queue modelport-replies-<something>, or a bus's ARN (default or modelport-*)",
    )
