"""Services built from the current container, once per container.

Building them reads no secret: the deploy handlers use the same services and never need the admin key.
The accounts service reads it when it first verifies a key (the authorizer), see ``AccountService``.
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass

from chalicelib import wiring
from chalicelib.services.accounts import AccountService
from chalicelib.services.batch import BatchService
from chalicelib.services.batch_runs import BatchRuns
from chalicelib.services.deployments import DeploymentService
from chalicelib.services.invoke import InvokeService
from chalicelib.services.jobs import JobService
from chalicelib.services.logs import LogService
from chalicelib.services.messages import InvocationMessages
from chalicelib.services.models import ModelService
from chalicelib.services.payloads import Payloads
from chalicelib.services.usage import UsageRecorder, UsageService


@dataclass(frozen=True)
class Services:
    container: wiring.Container
    accounts: AccountService
    models: ModelService
    deployments: DeploymentService
    invoke: InvokeService
    jobs: JobService
    batches: BatchRuns
    """What became of each model's batch inputs (the data bucket's ``outputs/``)."""
    messages: InvocationMessages | None
    """None: this container has no outbox (so no invocations queue)."""
    usage: UsageService
    recorder: UsageRecorder
    """Counts every invocation of this process (buffered; ``flush`` writes what it holds)."""
    logs: LogService | None = None
    """None: this container reads no logs back."""


_lock = threading.Lock()
_built: Services | None = None


def services() -> Services:
    global _built
    current = wiring.container()
    with _lock:
        if _built is None or _built.container is not current:
            if _built is None:
                atexit.register(_flush_usage)  # once: whatever the process still holds, when it ends
            else:
                _built.recorder.flush()  # the container is replaced (tests, the local stack)
            _built = _build(current)
        return _built


def _flush_usage() -> None:
    built = _built
    if built is not None:
        built.recorder.flush()


def _build(c: wiring.Container) -> Services:
    # On AWS, API Gateway keeps the authorizer's answer for REVOCATION_WINDOW_S, so the authorizer reads
    # the store (a second cache would add its age to the window); locally nothing caches in front of it.
    accounts = AccountService(
        c.accounts,
        c.clock,
        cache_s=c.settings.cache_ttl_s if c.settings.stage == "local" else 0.0,
        admin_key=c.admin_key,
        admin_key_ttl_s=c.settings.secret_ttl_s,
    )
    models = ModelService(
        c.models,
        c.accounts,
        c.artifacts,
        c.clock,
        max_bundle_bytes=c.settings.max_bundle_bytes,
        upload_expires_s=c.settings.upload_expires_s,
        functions=c.functions,
    )
    payloads = Payloads(c.data, c.settings.data_bucket)
    recorder = UsageRecorder(c.usage, c.clock)
    jobs = JobService(
        InvokeService(models, c.invoker, cache_s=c.settings.cache_ttl_s, payloads=payloads, usage=recorder),
        c.jobs,
        c.accounts,
        c.data,
        c.job_queue,
        c.clock,
        allow_loopback_webhooks=c.settings.stage == "local",
        outbox=c.outbox,
        sync_wait_s=c.settings.sync_wait_s,
    )
    jobs.batch = BatchService(jobs.invoke, c.models, c.accounts, c.data)
    return Services(
        container=c,
        accounts=accounts,
        models=models,
        deployments=wiring.deployment_service(c),
        invoke=jobs.invoke,
        jobs=jobs,
        batches=BatchRuns(models, c.data),
        messages=InvocationMessages(jobs, accounts, c.outbox) if c.outbox is not None else None,
        usage=UsageService(c.usage, c.clock, recorder),
        recorder=recorder,
        logs=LogService(models, c.logs, c.clock, c.settings.api_log_group) if c.logs is not None else None,
    )
