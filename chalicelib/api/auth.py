"""The API-key authorizer.

A missing header is refused by API Gateway itself (401). A key that does not verify is let through
with the reason in the context and refused by the view with our JSON 401 body, which API Gateway's
authorizer deny (403, its own body) could not give; either way no view logic runs for it.
"""

from __future__ import annotations

from chalice.app import AuthRequest, AuthResponse, Blueprint

from chalicelib.api.deps import services
from chalicelib.core.errors import Unauthorized

blueprint = Blueprint(__name__)


@blueprint.authorizer()
def api_key(auth_request: AuthRequest) -> AuthResponse:
    try:
        account = services().accounts.authenticate(auth_request.token)
    except Unauthorized as exc:
        return AuthResponse(routes=["*"], principal_id="anonymous", context={"error": exc.message})
    except Exception as exc:  # the key store did not answer: the view says 503, not "invalid key"
        from chalicelib.aws import outage

        unavailable = outage(exc)
        if unavailable is None:
            raise
        return AuthResponse(
            routes=["*"], principal_id="anonymous", context={"unavailable": unavailable.message}
        )
    return AuthResponse(
        routes=["*"], principal_id=account.account_id, context={"account": account.model_dump_json()}
    )
