"""The API-key authorizer.

A missing header is refused by API Gateway itself (401). A key that does not verify is let through
with the reason in the context and refused by the view with our JSON 401 body, which API Gateway's
authorizer deny (403, its own body) could not give; either way no view logic runs for it.

API Gateway keeps each answer for ``REVOCATION_WINDOW_S`` (``ttl_seconds``; its default is 300 s), which is
what bounds how long a revoked key keeps working; the policy allows every route (``*``) because one cached
answer serves all of them.
"""

from __future__ import annotations

from chalice.app import AuthRequest, AuthResponse, Blueprint

from chalicelib.api.deps import services
from chalicelib.core.errors import Unauthorized, Unavailable
from chalicelib.settings import REVOCATION_WINDOW_S

blueprint = Blueprint(__name__)
AUTHORIZER = "authorizer"
"""Its name (and its function's, ``modelport-<stage>-authorizer``): not ``api_key``, which Chalice's swagger
takes for API Gateway's own API keys (``x-api-key``) and would replace this authorizer with."""


@blueprint.authorizer(ttl_seconds=REVOCATION_WINDOW_S, name=AUTHORIZER)
def api_key(auth_request: AuthRequest) -> AuthResponse:
    try:
        account = services().accounts.authenticate(auth_request.token)
    except Unauthorized as exc:
        return AuthResponse(routes=["*"], principal_id="anonymous", context={"error": exc.message})
    except Unavailable as exc:  # the key store did not answer: the view says 503, not "invalid key"
        return AuthResponse(routes=["*"], principal_id="anonymous", context={"unavailable": exc.message})
    return AuthResponse(
        routes=["*"], principal_id=account.account_id, context={"account": account.model_dump_json()}
    )
