"""Bearer-token authentication: who may call what.

With no token configured every route is open, as in the seed. With tokens, each protected
route needs `Authorization: Bearer <secret>`: GET (and HEAD) need a `read` or `run` token,
anything else a `run` token. The header is the only place a token is read from: a token in
a query string would end up in access logs, proxies' logs and browser history.

A token limited to named actions (`actions = [...]` in the tokens file) reaches only the
routes marked `for_limited_tokens` (which show it only its actions and their payloads) and
the routes of one payload that one of its actions made: any other payload is a 404 to it,
as if it did not exist, and any other route a 403.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pericles.api.deps import service_of
from pericles.api.problems import Problem, problem_doc
from pericles.errors import PayloadNotFound
from pericles.tokens import Scope, Token, TokenSet

F = TypeVar("F", bound=Callable[..., Any])
_LIMITED_OK = "__pericles_for_limited_tokens__"

_SAFE_METHODS = frozenset({"GET", "HEAD"})

# auto_error=False: a missing header is ours to answer, as a problem body. The scheme also
# puts `bearerAuth` into the OpenAPI document of every route that depends on it.
_bearer = HTTPBearer(auto_error=False, scheme_name="bearerAuth")

#: The answers a protected route adds, for the OpenAPI document.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: problem_doc("No token, or an unknown one; see WWW-Authenticate"),
    403: problem_doc("The token's scope does not allow this (a read token on a run route)"),
}


def _tokens(request: Request) -> TokenSet:
    tokens: TokenSet = request.app.state.tokens
    return tokens


def _challenge(error: str | None = None) -> dict[str, str]:
    # RFC 6750 section 3: the challenge names the realm and, for a bad token, the error.
    value = 'Bearer realm="pericles"'
    if error:
        value += f', error="{error}"'
    return {"WWW-Authenticate": value}


def check_token(
    tokens: TokenSet, credentials: HTTPAuthorizationCredentials | None, needed: Scope
) -> Token:
    """The token `credentials` present, if its scope allows `needed`; raises `Problem` (401, 403).

    The one check of a presented token: the REST routes and the MCP endpoint both call it.
    """
    if credentials is None:
        raise Problem(401, "unauthorized", "a bearer token is required", _challenge())
    token = tokens.match(credentials.credentials)
    if token is None:
        raise Problem(401, "unauthorized", "the token is not valid", _challenge("invalid_token"))
    if not token.scope.allows(needed):
        raise Problem(
            403,
            "forbidden",
            f"token {token.name!r} has scope {token.scope.value}; this needs {needed.value}",
            _challenge("insufficient_scope"),
        )
    return token


async def authenticate(request: Request, needed: Scope) -> Token | None:
    """`check_token` for a request outside FastAPI's dependencies (a mounted ASGI app).

    None when authentication is off; the token is kept on `request.state` as `authorize` does.
    """
    tokens = _tokens(request)
    if not tokens:
        return None
    token = check_token(tokens, await _bearer(request), needed)
    request.state.token = token
    return token


def request_token(request: Request) -> Token | None:
    """The token that authorized `request`; None when authentication is off."""
    token: Token | None = getattr(request.state, "token", None)
    return token


# The dependencies are `async def` although they never await: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hop per request that costs more than the check.
async def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Token | None:
    """The caller's token, checked against the scope the request's method needs.

    None when authentication is off. The token is kept on `request.state` for handlers
    that record who asked (see `caller`).
    """
    tokens = _tokens(request)
    if not tokens:
        return None
    return await _authorized(request, tokens, credentials)


async def authorize_request(request: Request) -> Token | None:
    """`authorize` for a route outside FastAPI's dependencies (`api/hot.py`): the same check."""
    tokens = _tokens(request)
    if not tokens:
        return None
    return await _authorized(request, tokens, await _bearer(request))


async def _authorized(
    request: Request, tokens: TokenSet, credentials: HTTPAuthorizationCredentials | None
) -> Token:
    needed = Scope.READ if request.method in _SAFE_METHODS else Scope.RUN
    token = check_token(tokens, credentials, needed)
    request.state.token = token
    if token.actions is not None:
        await _within_actions(request, token)
    return token


def for_limited_tokens(endpoint: F) -> F:
    """Mark a route that serves tokens limited to actions, showing them only what is theirs."""
    setattr(endpoint, _LIMITED_OK, True)
    return endpoint


async def _within_actions(request: Request, token: Token) -> None:
    payload_id = request.path_params.get("payload_id")
    if payload_id is not None:
        record = await service_of(request).get(payload_id)
        if not token.sees(record.action):
            raise PayloadNotFound(payload_id)
        return
    if not getattr(request.scope.get("endpoint"), _LIMITED_OK, False):
        allowed = ", ".join(sorted(token.actions or ())) or "none"
        raise Problem(
            403,
            "forbidden",
            f"token {token.name!r} may only run its actions ({allowed}) and see their payloads",
        )


async def caller(request: Request) -> str | None:
    """The name of the token that authorized this request; None when auth is off."""
    token = request_token(request)
    return token.name if token is not None else None


CallerDep = Annotated[str | None, Depends(caller)]


async def caller_token(request: Request) -> Token | None:
    """The token that authorized this request; None when auth is off."""
    found: Token | None = getattr(request.state, "token", None)
    return found


TokenDep = Annotated[Token | None, Depends(caller_token)]
