"""The Lambda adapter of the ``FunctionManager`` port: a model version's functions from its image.

The same calls run against AWS, moto and the local emulator (only the client's ``endpoint_url`` differs):
create or update the function (code, then configuration, waiting for ``LastUpdateStatus: Successful``
before each next call, because Lambda refuses an update while another is in progress), wait for
``State: Active``, publish a version, and - on promotion - point the ``live`` alias at it.

Publishing is guarded by the ``RevisionId`` and ``CodeSha256`` read after the wait, and the configuration
read then must be the one this deploy asked for: when a deploy of another version of the same model
interleaves, the guard fails and the whole step is redone instead of publishing someone else's code.

Chained mode (docs/pipelines.md) deploys one function per stage the same way, each with
``MODELPORT_ROLE`` set, then creates or updates the version's own EXPRESS state machine
``modelport-<name>-v<N>`` over the published (qualified) version ARNs. One state machine per version
means a published machine never changes under running executions, and promoting a version needs
nothing of Step Functions: the control plane invokes the default version's ``state_machine_arn``.

Tracing (docs/observability.md): every function is made with X-Ray active tracing, every state machine
with tracing enabled and its execution log (level ``ERROR``, no execution data) going to one shared
CloudWatch Logs group (the template's ``StatesLogGroup``); a redeploy brings older functions and machines
to this configuration.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws.outage import translates_outages
from chalicelib.core.config_file import DeployedFunction, DeployedFunctions, ModelConfigFile
from chalicelib.core.errors import FunctionFailed
from chalicelib.core.pipeline import (
    SHARED_STAGE_MEMORY_MB,
    SHARED_STAGE_PREFIX,
    SHARED_STAGE_TIMEOUT_S,
    Role,
    definition_text,
    recorded_plan,
    stages_of,
    state_machine_definition,
)
from chalicelib.core.ports import Progress

LIVE_ALIAS = "live"
TRACING_MODE = "Active"
"""Lambda's X-Ray tracing mode for every function this manager makes."""
STATES_LOG_GROUP = "/aws/vendedlogs/states/modelport"
"""The shared execution log of the state machines when no log group ARN is given (the template's
``StatesLogGroup``; the ``/aws/vendedlogs/`` prefix keeps CloudWatch Logs' resource policy small)."""
STATES_LOG_LEVEL = "ERROR"
"""Express machines log to CloudWatch Logs only: failed executions, without their data (the requests),
which X-Ray's trace of every sampled execution complements."""
_LOG_GROUP_ARN = re.compile(r"arn:[a-z-]+:logs:[a-z0-9-]+:[0-9]{12}:log-group:[A-Za-z0-9_./#-]{1,512}:\*")
RETRYABLE = frozenset(
    {
        "ResourceConflictException",  # an update is in progress
        "TooManyRequestsException",
        "ThrottlingException",
        "ServiceException",
        "ResourceNotReadyException",
    }
)


@dataclass(frozen=True)
class FunctionSpec:
    """What one function of a deployment must be."""

    role: Literal["fused", "pre", "model", "post"]
    name: str
    image_uri: str
    memory_mb: int
    timeout_s: int
    architecture: str
    environment: dict[str, str]
    description: str
    provisioned: int = 0
    """Environments kept initialized for the published version (provisioned concurrency); 0: none."""


def function_name(model_name: str, role: str = "fused") -> str:
    return f"modelport-{model_name}" if role == "fused" else f"modelport-{model_name}-{role}"


def state_machine_name(model_name: str, version: int) -> str:
    return f"modelport-{model_name}-v{version}"


def shared_function_name(steps_image: str, architecture: str, role: Role) -> str:
    """The shared stage function of a steps image: every model whose steps run in it uses this one."""
    digest = hashlib.sha256(f"{steps_image}\0{architecture}".encode()).hexdigest()[:16]
    return f"{SHARED_STAGE_PREFIX}{digest}-{role}"


def function_specs(manifest: ModelConfigFile) -> list[FunctionSpec]:
    """The functions of ``manifest``'s deployment, as its recorded pipeline plan says: one fused function
    running the whole chain, or (chained) one per stage, all from the same image, each told its stage by
    ``MODELPORT_ROLE``. Where the plan puts pre and post on the shared steps image, they are the shared
    stage functions of the container's ``steps_image`` (same spec for every model, so deploying one model
    never changes them for another)."""
    if manifest.container is None:
        raise FunctionFailed(
            f"{manifest.name} v{manifest.version} has no image yet: build it before deploying"
        )
    plan = recorded_plan(manifest)
    mode, steps_image = plan.mode, manifest.container.steps_image if plan.shared_steps else None
    if plan.shared_steps and steps_image is None:
        raise FunctionFailed(
            f"{manifest.name} v{manifest.version} runs pre and post on a shared steps image, but its image "
            "has none: build it again"
        )
    env = manifest.environment
    base = {"MODELPORT_MODEL": manifest.name, "MODELPORT_VERSION": str(manifest.version)}
    roles: list[Literal["fused"] | Role] = ["fused"] if mode == "fused" else list(stages_of(manifest))
    specs = []
    for role in roles:
        if steps_image is not None and role in ("pre", "post"):
            specs.append(
                FunctionSpec(
                    role=role,
                    name=shared_function_name(steps_image, env.architecture, role),
                    image_uri=steps_image,
                    memory_mb=SHARED_STAGE_MEMORY_MB,
                    timeout_s=SHARED_STAGE_TIMEOUT_S,
                    architecture=env.architecture,
                    environment={"MODELPORT_ROLE": role, "MODELPORT_SHARED_STAGE": "1"},
                    description=f"Modelport shared {role} stage",
                )
            )
            continue
        specs.append(
            FunctionSpec(
                role=role,
                name=function_name(manifest.name, role),
                image_uri=manifest.container.image_uri,
                memory_mb=env.memory_mb,
                timeout_s=env.timeout_s,
                architecture=env.architecture,
                environment=base if role == "fused" else {**base, "MODELPORT_ROLE": role},
                description=f"Modelport {manifest.name} v{manifest.version}"
                + ("" if role == "fused" else f" ({role} stage)"),
                provisioned=env.provisioned_concurrency if role in ("fused", "model") else 0,
            )
        )
    return specs


@translates_outages
class LambdaFunctionManager:
    """``lambda_client`` is a boto3 Lambda client; ``role_arn`` the execution role of model functions.

    ``sfn_client`` (a boto3 Step Functions client) is needed by chained deployments only;
    ``states_role_arn`` is the role their state machines run as (allowed ``lambda:InvokeFunction`` on the
    model functions); without it the functions' role is used, which must then trust
    ``states.amazonaws.com`` too. ``states_log_group_arn`` is the CloudWatch Logs group the machines'
    execution logs go to (``arn:...:log-group:NAME:*``, as Step Functions takes it); without it,
    ``STATES_LOG_GROUP`` in the functions' account and region. What it deploys is what the config file's
    pipeline plan says (and, for shared stages, the container's steps image): it decides nothing.
    ``wait_s`` bounds each wait (for Active, for an update to finish, for a conflicting call to clear);
    ``sleep`` is injected so tests need not wait.
    """

    def __init__(
        self,
        lambda_client: Any,
        role_arn: str,
        *,
        sfn_client: Any | None = None,
        states_role_arn: str | None = None,
        states_log_group_arn: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        wait_s: float = 300.0,
        attempts: int = 5,
    ) -> None:
        self.client = lambda_client
        self.role_arn = role_arn
        self.sfn = sfn_client
        self.states_role_arn = states_role_arn or role_arn
        if states_log_group_arn is not None and not _LOG_GROUP_ARN.fullmatch(states_log_group_arn):
            raise FunctionFailed(
                f"{states_log_group_arn[:200]!r} is not a CloudWatch Logs group ARN ending in ':*'"
            )
        self.states_log_group_arn = states_log_group_arn
        self.sleep = sleep
        self.wait_s = wait_s
        self.attempts = attempts

    # ----------------------------------------------------------------------- the port

    def deploy(self, manifest: ModelConfigFile, progress: Progress) -> DeployedFunctions:
        mode = recorded_plan(manifest).mode
        if mode == "chained" and self.sfn is None:
            raise FunctionFailed(
                f"{manifest.name} runs chained, but this function manager has no Step Functions client"
            )
        specs = function_specs(manifest)
        functions = tuple(self._deploy(spec, progress) for spec in specs)
        if mode == "fused":
            return DeployedFunctions(mode="fused", functions=functions)
        arn = self._state_machine(manifest, functions, progress)
        return DeployedFunctions(mode="chained", functions=functions, state_machine_arn=arn)

    def promote(self, deployment: DeployedFunctions) -> None:
        """Point each function's ``live`` alias at this deployment's published version (shared stage
        functions have no alias: each machine names the version it was deployed with)."""
        for function in deployment.functions:
            if function.function_name.startswith(SHARED_STAGE_PREFIX):
                continue  # it serves many models; their machines name its versions
            if not function.version:
                raise FunctionFailed(f"{function.function_name} has no published version to promote")
            self._point_alias(function.function_name, function.version)

    def retire(self, deployment: DeployedFunctions) -> None:
        """Delete what only this deployment uses: its state machine and its own functions' published
        versions (shared stage functions serve other models and stay). Idempotent: what is gone is skipped;
        a version an alias still names is kept (it is some model's live version)."""
        if deployment.state_machine_arn and self.sfn is not None:
            with contextlib.suppress(ClientError):
                self._call(
                    self.sfn.delete_state_machine,
                    {"StateMachineDoesNotExist"},
                    stateMachineArn=deployment.state_machine_arn,
                )
        for function in deployment.functions:
            if function.function_name.startswith(SHARED_STAGE_PREFIX) or not function.version:
                continue
            with contextlib.suppress(ClientError):
                self._call(
                    self.client.delete_function,
                    {"ResourceNotFoundException", "ResourceConflictException"},
                    FunctionName=function.function_name,
                    Qualifier=function.version,
                )

    # ----------------------------------------------------------------------- the state machine

    def _state_machine(
        self, manifest: ModelConfigFile, functions: tuple[DeployedFunction, ...], progress: Progress
    ) -> str:
        """Create the version's EXPRESS state machine over the published versions, or bring an existing
        one (a redeploy of the same version) to this definition; its ARN. (A machine's type cannot be
        updated, and moto describes every machine as STANDARD, so the type is not checked on update.)"""
        arns: dict[Role, str] = {
            f.role: f"{f.function_arn}:{f.version}" for f in functions if f.role != "fused"
        }
        sfn = self.sfn
        assert sfn is not None  # deploy checked
        shared = [
            f.role for f in functions if f.function_name.startswith(SHARED_STAGE_PREFIX) and f.role != "fused"
        ]
        definition = definition_text(state_machine_definition(manifest, arns, shared=shared))
        name = state_machine_name(manifest.name, manifest.version)
        parts = functions[0].function_arn.split(":")  # arn:PARTITION:lambda:REGION:ACCOUNT:function:NAME
        partition, region, account = parts[1], parts[3], parts[4]
        arn = f"arn:{partition}:states:{region}:{account}:stateMachine:{name}"
        wanted = {
            "definition": definition,
            "roleArn": self.states_role_arn,
            "loggingConfiguration": self._logging(partition, region, account),
            "tracingConfiguration": {"enabled": True},
        }
        try:
            current = self._call(
                sfn.describe_state_machine, {"StateMachineDoesNotExist"}, stateMachineArn=arn
            )
        except ClientError:
            progress(f"creating state machine {name}")
            try:
                created = self._call(
                    sfn.create_state_machine,
                    {"StateMachineAlreadyExists"},
                    name=name,
                    type="EXPRESS",
                    tags=[{"key": "modelport:model", "value": manifest.name}],
                    **wanted,
                )
                return str(created["stateMachineArn"])
            except ClientError:  # created meanwhile (with another definition, maybe): update it
                current = self._call(sfn.describe_state_machine, set(), stateMachineArn=arn)
        if not _machine_matches(current, wanted):
            progress(f"updating state machine {name}")
            self._call(sfn.update_state_machine, set(), stateMachineArn=arn, **wanted)
        return arn

    def _logging(self, partition: str, region: str, account: str) -> dict[str, Any]:
        """The machines' ``loggingConfiguration``: the shared log group, failed executions, no data."""
        group = self.states_log_group_arn or (
            f"arn:{partition}:logs:{region}:{account}:log-group:{STATES_LOG_GROUP}:*"
        )
        return {
            "level": STATES_LOG_LEVEL,
            "includeExecutionData": False,
            "destinations": [{"cloudWatchLogsLogGroup": {"logGroupArn": group}}],
        }

    # ----------------------------------------------------------------------- one function

    def _deploy(self, spec: FunctionSpec, progress: Progress) -> DeployedFunction:
        for _ in range(self.attempts):
            current = self._get(spec.name)
            if current is None:
                progress(f"creating function {spec.name} from {spec.image_uri}")
                try:
                    self._call(
                        self.client.create_function, {"ResourceConflictException"}, **self._create_args(spec)
                    )
                except ClientError:  # created meanwhile: update it instead
                    continue
            else:
                _check_owner(spec, current)
                self._update(spec, current, progress)
            got = self._wait_ready(spec.name, progress)
            if not _matches(got, spec):
                progress(f"{spec.name} was changed by another deploy meanwhile; again")
                continue
            config = got["Configuration"]
            try:
                published = self._call(
                    self.client.publish_version,
                    {"PreconditionFailedException", "InvalidParameterValueException"},
                    FunctionName=spec.name,
                    Description=spec.description,
                    **{k: config[k] for k in ("RevisionId", "CodeSha256") if config.get(k)},  # moto: none
                )
            except ClientError as exc:
                if _code(exc) == "InvalidParameterValueException" and "CodeSHA256" not in str(exc):
                    raise _failed(exc) from None
                progress(f"{spec.name} changed before its version was published; again")
                continue
            version = str(published["Version"])
            if spec.provisioned:
                self._provision(spec.name, version, spec.provisioned, progress)
            progress(f"function {spec.name} version {version} is active")
            return DeployedFunction(
                role=spec.role,
                function_name=spec.name,
                function_arn=_unqualified(config["FunctionArn"]),
                version=version,
            )
        raise FunctionFailed(f"could not deploy {spec.name}: it kept changing under concurrent deploys")

    def _provision(self, name: str, version: str, count: int, progress: Progress) -> None:
        """Provisioned concurrency on the new version, before any alias points at it: the version goes
        live with ``count`` environments initialized (Lambda allocates them in the background)."""
        progress(f"initializing {count} environment(s) of {name} version {version} (provisioned concurrency)")
        self._call(
            self.client.put_provisioned_concurrency_config,
            set(),
            FunctionName=name,
            Qualifier=version,
            ProvisionedConcurrentExecutions=count,
        )
        deadline, pause = time.monotonic() + self.wait_s, 0.25
        while True:
            got = self._call(
                self.client.get_provisioned_concurrency_config, set(), FunctionName=name, Qualifier=version
            )
            status = got.get("Status")
            if status == "READY":
                return
            if status == "FAILED":
                raise FunctionFailed(
                    f"{name} version {version}: provisioned concurrency failed: {got.get('StatusReason', '')}"
                )
            if time.monotonic() > deadline:
                raise FunctionFailed(
                    f"{name} version {version}: {got.get('AvailableProvisionedConcurrentExecutions', 0)} of "
                    f"{count} provisioned environments were ready after {self.wait_s:.0f} s"
                )
            self.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _create_args(self, spec: FunctionSpec) -> dict[str, Any]:
        return {
            "FunctionName": spec.name,
            "Role": self.role_arn,
            "PackageType": "Image",
            "Code": {"ImageUri": spec.image_uri},
            "Description": spec.description,
            "MemorySize": spec.memory_mb,
            "Timeout": spec.timeout_s,
            "Architectures": [spec.architecture],
            "Environment": {"Variables": spec.environment},
            "TracingConfig": {"Mode": TRACING_MODE},
            "Publish": False,
            "Tags": {"modelport:model": _owner_tag(spec)},
        }

    def _update(self, spec: FunctionSpec, current: dict[str, Any], progress: Progress) -> None:
        config = current["Configuration"]
        if current.get("Code", {}).get("ImageUri") != spec.image_uri or config.get("Architectures") != [
            spec.architecture
        ]:
            self._wait_ready(spec.name, progress)
            progress(f"updating {spec.name} to {spec.image_uri}")
            self._call(
                self.client.update_function_code,
                set(),
                FunctionName=spec.name,
                ImageUri=spec.image_uri,
                Architectures=[spec.architecture],
            )
        if not _config_matches(config, spec) or _tracing(config) != TRACING_MODE:
            self._wait_ready(spec.name, progress)
            progress(f"configuring {spec.name}: {spec.memory_mb} MB, {spec.timeout_s} s")
            self._call(
                self.client.update_function_configuration,
                set(),
                FunctionName=spec.name,
                Role=self.role_arn,
                Description=spec.description,
                MemorySize=spec.memory_mb,
                Timeout=spec.timeout_s,
                Environment={"Variables": spec.environment},
                TracingConfig={"Mode": TRACING_MODE},
            )

    def _point_alias(self, name: str, version: str) -> None:
        names = {"FunctionName": name, "Name": LIVE_ALIAS}
        try:
            alias = self._call(self.client.get_alias, {"ResourceNotFoundException"}, **names)
        except ClientError:
            try:
                self._call(
                    self.client.create_alias, {"ResourceConflictException"}, **names, FunctionVersion=version
                )
                return
            except ClientError:  # created meanwhile: move it
                alias = {}
        if alias.get("FunctionVersion") != version:
            self._call(self.client.update_alias, set(), **names, FunctionVersion=version)

    # ----------------------------------------------------------------------- calls and waits

    def _get(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(
                self._call(self.client.get_function, {"ResourceNotFoundException"}, FunctionName=name)
            )
        except ClientError:
            return None

    def _wait_ready(self, name: str, progress: Progress) -> dict[str, Any]:
        """Poll until the function is Active with its last update Successful; FunctionFailed if it failed."""
        deadline = time.monotonic() + self.wait_s
        pause, said = 0.25, False
        while True:
            got = self._get(name)
            if got is None:
                raise FunctionFailed(f"function {name} disappeared while it was being deployed")
            config = got["Configuration"]
            state, update = config.get("State", "Active"), config.get("LastUpdateStatus", "Successful")
            if state == "Active" and update == "Successful":
                return got
            if state == "Failed" or update == "Failed":
                reason = (
                    config.get("StateReason") or config.get("LastUpdateStatusReason") or "no reason given"
                )
                raise FunctionFailed(f"function {name} failed: {reason}")
            if time.monotonic() >= deadline:
                raise FunctionFailed(f"function {name} is still {state}/{update} after {self.wait_s:g} s")
            if not said:
                progress(f"waiting for {name} ({state}, last update {update})")
                said = True
            self.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _call(self, method: Callable[..., Any], expected: set[str], **kwargs: Any) -> Any:
        """``method(**kwargs)``, retried with backoff while Lambda says "busy" (an update in progress,
        throttling) or, on AWS, while a new role has not reached Lambda yet. A ClientError whose code is
        ``expected`` is raised for the caller to handle; any other failure is a FunctionFailed."""
        deadline = time.monotonic() + self.wait_s
        pause = 0.5
        while True:
            try:
                return method(**kwargs)
            except ClientError as exc:
                code = _code(exc)
                if code in expected:
                    raise
                retry = code in RETRYABLE or (  # a new role that has not reached Lambda or Step Functions
                    code in ("InvalidParameterValueException", "AccessDeniedException")
                    and ("cannot be assumed" in str(exc) or "not authorized to assume" in str(exc))
                )
                if not retry or time.monotonic() + pause > deadline:
                    raise _failed(exc) from None
            except BotoCoreError as exc:
                raise FunctionFailed(f"could not reach {_service(method)}: {exc}") from None
            self.sleep(pause)
            pause = min(pause * 2, 8.0)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _service(method: Callable[..., Any]) -> str:
    """``Lambda`` or ``Step Functions``: whom a failed call was for."""
    meta = getattr(getattr(method, "__self__", None), "meta", None)
    name = str(meta.service_model.service_name) if meta is not None else "lambda"
    return "Step Functions" if name == "stepfunctions" else "Lambda"


def _failed(exc: ClientError) -> FunctionFailed:
    error = exc.response.get("Error", {})
    operation = getattr(exc, "operation_name", "a Lambda call")
    return FunctionFailed(f"{operation} failed: {error.get('Code')}: {error.get('Message')}")


def _unqualified(arn: str) -> str:
    """``arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`` without the qualifier."""
    return ":".join(arn.split(":")[:7])


def _config_matches(config: dict[str, Any], spec: FunctionSpec) -> bool:
    return (
        config.get("MemorySize") == spec.memory_mb
        and config.get("Timeout") == spec.timeout_s
        and (config.get("Environment") or {}).get("Variables", {}) == spec.environment
        and config.get("Description", "") == spec.description
    )


def _tracing(config: dict[str, Any]) -> str | None:
    """The function's X-Ray mode (``Active``, ``PassThrough``); not part of ``_matches``: no deploy of another
    version makes it other than ``Active``, and an emulator that ignores it on update must not loop."""
    mode = (config.get("TracingConfig") or {}).get("Mode")
    return mode if isinstance(mode, str) else None


def _machine_matches(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """The described state machine has the definition, role, tracing and logging this deploy wants."""

    def logging_of(doc: dict[str, Any]) -> tuple[Any, ...]:
        config = doc.get("loggingConfiguration") or {}
        groups = sorted(
            str((d.get("cloudWatchLogsLogGroup") or {}).get("logGroupArn"))
            for d in config.get("destinations") or []
        )
        return config.get("level"), bool(config.get("includeExecutionData")), tuple(groups)

    return (
        current.get("definition") == wanted["definition"]
        and current.get("roleArn") == wanted["roleArn"]
        and bool((current.get("tracingConfiguration") or {}).get("enabled"))
        == wanted["tracingConfiguration"]["enabled"]
        and logging_of(current) == logging_of(wanted)
    )


def _owner_tag(spec: FunctionSpec) -> str:
    return spec.environment.get("MODELPORT_MODEL", "shared")


def _check_owner(spec: FunctionSpec, current: dict[str, Any]) -> None:
    """A function of this name that was not made for this model (another platform function, or one made
    by hand) is never taken over: its ``modelport:model`` tag must name the model (or ``shared``)."""
    tag = (current.get("Tags") or {}).get("modelport:model")
    if tag != _owner_tag(spec):
        raise FunctionFailed(
            f"function {spec.name} exists and is not {_owner_tag(spec)!r}'s (tagged {str(tag)[:60]!r}): "
            "it is left as it is",
            hint="choose another model name, or delete that function if it is a stale copy",
        )


def _matches(got: dict[str, Any], spec: FunctionSpec) -> bool:
    """The function is what ``spec`` asked for (no other deploy changed it since)."""
    return got.get("Code", {}).get("ImageUri") == spec.image_uri and _config_matches(
        got["Configuration"], spec
    )
