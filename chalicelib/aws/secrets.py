"""Where the bootstrap admin key lives on AWS: a Secrets Manager secret or an SSM SecureString parameter.

Only the function that verifies keys (the authorizer) reads it, through its role; no function gets it in
its environment. Errors are the domain's: a secret that is missing, empty, not encrypted or not readable by
the role is a ``ConfigError`` (the deployment is wrong), a service that does not answer ``Unavailable``.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws.outage import outage, translates_outages
from chalicelib.core.errors import ConfigError, Unavailable

_MISSING = {"ResourceNotFoundException", "ParameterNotFound", "ParameterVersionNotFound"}
_DENIED = {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException"}


def _translated(exc: ClientError | BotoCoreError, what: str) -> ConfigError | Unavailable:
    down = outage(exc)
    if down is not None:
        return down
    if not isinstance(exc, ClientError):
        return Unavailable(f"{what} cannot be read ({type(exc).__name__})", hint="try again")
    code = str(exc.response.get("Error", {}).get("Code", "?"))
    if code in _MISSING:
        return ConfigError(f"{what} does not exist", hint="create it, or fix the setting that names it")
    if code in _DENIED:
        return ConfigError(f"{what} may not be read by this function's role ({code})")
    if code.startswith(("Throttling", "TooManyRequests")):
        return Unavailable(f"{what} cannot be read now ({code})", hint="try again in a moment")
    return ConfigError(f"{what} cannot be read ({code})")


def _value(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} holds no text", hint="store the key as a plain string")
    return value.strip()


@translates_outages
class SecretsManagerSecret:
    """``GetSecretValue`` of one secret (name or ARN), its ``SecretString``."""

    def __init__(self, client: Any, secret_id: str) -> None:
        self.client = client
        self.secret_id = secret_id

    def read(self) -> str:
        what = f"secret {self.secret_id[:200]}"
        try:
            response = self.client.get_secret_value(SecretId=self.secret_id)
        except (ClientError, BotoCoreError) as exc:
            raise _translated(exc, what) from exc
        return _value(response.get("SecretString"), what)


@translates_outages
class SsmSecureString:
    """``GetParameter`` of one SecureString parameter, decrypted; a plain String is refused."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    def read(self) -> str:
        what = f"parameter {self.name[:200]}"
        try:
            response = self.client.get_parameter(Name=self.name, WithDecryption=True)
        except (ClientError, BotoCoreError) as exc:
            raise _translated(exc, what) from exc
        parameter = response.get("Parameter", {})
        if parameter.get("Type") != "SecureString":
            raise ConfigError(
                f"{what} is a {parameter.get('Type')}, not a SecureString",
                hint="store the admin key encrypted: --type SecureString",
            )
        return _value(parameter.get("Value"), what)
