"""FastAPI dependencies: one database transaction per request, the caller, their scopes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from kaon.db.engine import session_scope
from kaon.platform.auth import Principal, authenticate, require
from kaon.platform.errors import AuthError


def get_db() -> Iterator[Session]:
    """The request's transaction: committed before the response is sent, or rolled back."""
    with session_scope() as session:
        yield session


# scope="function": the commit happens before the response goes out, so a failed commit
# is the request's error, never a 200 for something that was not saved
DB = Annotated[Session, Depends(get_db, scope="function")]

bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                    description="An API key: `Authorization: Bearer kaon_…`")


def get_principal(db: DB, credentials: Annotated[HTTPAuthorizationCredentials | None,
                                                 Depends(bearer)]) -> Principal:
    if credentials is None:
        raise AuthError("No API key was sent.",
                        hint="Send 'Authorization: Bearer kaon_…' with a key of this workspace.")
    return authenticate(db, credentials.credentials)


Caller = Annotated[Principal, Depends(get_principal)]


def needs(scope: str) -> Callable[[Principal], Principal]:
    """A dependency: the caller, who must hold ``scope`` (else 403)."""

    def dependency(principal: Caller) -> Principal:
        require(principal, scope)
        return principal

    dependency.__name__ = f"needs_{scope}"
    return dependency


Reader = Annotated[Principal, Depends(needs("read"))]
Admin = Annotated[Principal, Depends(needs("admin"))]
Trainer = Annotated[Principal, Depends(needs("train"))]
Deployer = Annotated[Principal, Depends(needs("deploy"))]
