"""Bearer-token checks: writes need the token when one is configured, reads when told to.

The token is compared in constant time (hmac.compare_digest) and never logged or echoed.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from grace_selection.api.errors import ApiError

# auto_error=False: a missing header reaches our check, which answers in ErrorResponse form.
_bearer = HTTPBearer(auto_error=False, description="GRACE_TOKEN of the service")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class TokenGuard:
    def __init__(self, token: SecretStr | None, reads_require_token: bool) -> None:
        self._token = None if token is None else token.get_secret_value().encode()
        self._reads = reads_require_token

    def allows_read(self, authorization: str | None) -> bool:
        """Whether a raw Authorization header may read (the fast path's check; no error)."""
        if self._token is None or not self._reads:
            return True
        scheme, _, value = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), self._token)

    def check(self, credentials: HTTPAuthorizationCredentials | None, *, write: bool) -> None:
        if self._token is None or (not write and not self._reads):
            return
        if credentials is None or credentials.scheme.lower() != "bearer":
            what = "writes" if write else "reads"
            raise ApiError(
                401,
                "unauthorized",
                f"{what} need 'Authorization: Bearer <token>' with the service's GRACE_TOKEN",
                field="Authorization",
                headers=_CHALLENGE,
            )
        if not hmac.compare_digest(credentials.credentials.encode(), self._token):
            raise ApiError(
                401,
                "unauthorized",
                "the bearer token does not match GRACE_TOKEN; check the token you configured",
                field="Authorization",
                headers=_CHALLENGE,
            )


# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in the thread
# pool, a hop that costs more than the check itself on the hot read path.
async def require_write(request: Request, credentials: Credentials) -> None:
    guard: TokenGuard = request.app.state.guard
    guard.check(credentials, write=True)


async def require_read(request: Request, credentials: Credentials) -> None:
    guard: TokenGuard = request.app.state.guard
    guard.check(credentials, write=False)


WRITE = [Depends(require_write)]
READ = [Depends(require_read)]
