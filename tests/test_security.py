"""Safe to expose: tokens and scopes, bounded input, CORS, and what never leaks a secret."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pericles.tokens import Scope, TokenConfigError, load_tokens
from tests.cluster import WITH_CLUSTER
from tests.helpers import Server, run_serve, start_server, wait_for_status, wait_until

STORES = WITH_CLUSTER

RUN_SECRET = "run-secret-0123456789abcdef"
READ_SECRET = "read-secret-0123456789abcdef"
DEFAULT_SECRET = "default-secret-0123456789abcdef"
ORIGIN = "https://dashboard.example"

TOKENS_TOML = f"""
[[token]]
name = "ci"
secret = "{RUN_SECRET}"
scope = "run"

[[token]]
name = "viewer"
secret = "{READ_SECRET}"
scope = "read"
"""


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with three tokens (one from PERICLES_TOKEN), CORS for one origin, small limits."""
    tokens = tmp_path_factory.mktemp("tokens") / "tokens.toml"
    tokens.write_text(TOKENS_TOML)
    server = start_server(
        "--tokens-file",
        str(tokens),
        "--inherit-env",
        "--cors-origin",
        ORIGIN,
        "--max-params",
        "3",
        "--max-param-length",
        "64",
        "--max-env-bytes",
        "64",
        "--max-body",
        "2048",
        "--max-header-bytes",
        "4096",
        "--header-timeout",
        "1",
        "--keep-alive-timeout",
        "1",
        env={"PERICLES_TOKEN": DEFAULT_SECRET, "PERICLES_MAX_STDIN": "1000"},
        headers=bearer(RUN_SECRET),
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def anonymous(secured: Server) -> Iterator[httpx.Client]:
    with secured.client(headers={}) as client:
        yield client


@pytest.fixture
def runner(secured: Server) -> Iterator[httpx.Client]:
    with secured.client() as client:
        yield client


def assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


# -- authentication and scopes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/payloads"),
        ("POST", "/payloads"),
        ("GET", "/payloads/0123456789abcdef0123456789abcdef/output"),
        ("GET", "/events"),
        ("POST", "/payloads/0123456789abcdef0123456789abcdef/cancel"),
        ("DELETE", "/payloads/0123456789abcdef0123456789abcdef"),
        ("GET", "/metrics"),
    ],
)
def test_no_token_is_401_with_a_bearer_challenge(
    anonymous: httpx.Client, method: str, path: str
) -> None:
    response = anonymous.request(method, path, json={"cmd": "/bin/true"})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer ")


def test_a_wrong_token_is_401_invalid_token(anonymous: httpx.Client) -> None:
    response = anonymous.get("/payloads", headers=bearer(RUN_SECRET + "x"))
    assert_problem(response, 401)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    # Another scheme carrying the right secret is no bearer token either.
    response = anonymous.get("/payloads", headers={"Authorization": f"Basic {RUN_SECRET}"})
    assert_problem(response, 401)


def test_a_token_in_the_query_string_is_not_accepted(anonymous: httpx.Client) -> None:
    for name in ("access_token", "token"):
        assert_problem(anonymous.get("/payloads", params={name: RUN_SECRET}), 401)


def test_a_read_token_reads_but_cannot_run(anonymous: httpx.Client) -> None:
    read = bearer(READ_SECRET)
    assert anonymous.get("/payloads", headers=read).status_code == 200
    assert anonymous.get("/metrics", headers=read).status_code == 200
    response = anonymous.post("/payloads", json={"cmd": "/bin/true"}, headers=read)
    assert_problem(response, 403)
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    response = anonymous.delete("/payloads/0123456789abcdef0123456789abcdef", headers=read)
    assert_problem(response, 403)


def test_health_readiness_and_the_api_description_stay_open(anonymous: httpx.Client) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert anonymous.get(path).status_code == 200, path
    schemes = anonymous.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer"}


def test_records_name_the_token_that_created_them(anonymous: httpx.Client) -> None:
    for secret, name in ((RUN_SECRET, "ci"), (DEFAULT_SECRET, "default")):
        response = anonymous.post("/payloads", json={"cmd": "/bin/true"}, headers=bearer(secret))
        assert response.status_code == 201, response.text
        assert response.json()["created_by"] == name


def test_no_token_leaks_into_a_payload_or_the_log(secured: Server, runner: httpx.Client) -> None:
    """`--inherit-env` passes the server's environment, minus every PERICLES_* variable."""
    with secured.client(headers={}) as misused:  # refused, and its access line is redacted
        assert misused.get("/payloads", params={"access_token": RUN_SECRET}).status_code == 401
    wait_until(lambda: "access_token=[redacted]" in secured.log(), what="the redacted line")
    record = runner.post("/payloads", json={"cmd": "env"}).json()
    record = wait_for_status(runner, record["id"])
    assert record["exit_code"] == 0
    env = runner.get(f"/payloads/{record['id']}/output", params={"stream": "stdout"}).text
    assert "PATH=" in env
    assert "PERICLES_" not in env
    for secret in (RUN_SECRET, READ_SECRET, DEFAULT_SECRET):
        assert secret not in env
        assert secret not in str(runner.get("/payloads").json())
        assert secret not in secured.log()
    assert "GET /payloads" in secured.log()  # the access log is on: it shows paths only


def test_records_of_an_open_server_name_no_creator(client: httpx.Client) -> None:
    response = client.post("/payloads", json={"cmd": "/bin/true"})
    assert "created_by" not in response.json()


# -- input limits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ({"cmd": "/bin/echo", "params": ["a", "b", "c", "d"]}, "params"),
        ({"cmd": "/bin/echo", "params": ["x" * 65]}, "params.0"),
        ({"cmd": "/bin/" + "x" * 64}, "cmd"),
        ({"cmd": "/bin/echo", "env": {"A": "x" * 64}}, "env"),
    ],
)
def test_oversized_specs_are_422_and_store_nothing(
    runner: httpx.Client, spec: dict[str, object], loc: str
) -> None:
    before = len(runner.get("/payloads").json())
    response = runner.post("/payloads", json=spec)
    assert_problem(response, 422)
    assert [e["loc"] for e in response.json()["errors"]] == [loc]
    assert len(runner.get("/payloads").json()) == before


def test_specs_at_the_limits_are_accepted(runner: httpx.Client) -> None:
    spec = {"cmd": "/bin/echo", "params": ["x" * 64, "b", "c"], "env": {"A": "x" * 63}}
    assert runner.post("/payloads", json=spec).status_code == 201


def test_a_body_over_max_body_is_413(runner: httpx.Client) -> None:
    response = runner.post("/payloads", content=b'{"cmd": "' + b"x" * 4096 + b'"}')
    assert_problem(response, 413)


def _raw(server: Server, request: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(request)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes; the socket's timeout is the deadline."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_headers_over_max_header_bytes_are_431(secured: Server) -> None:
    request = (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Big: " + b"a" * 5000 + b"\r\n\r\n"
    )
    with _raw(secured, request) as sock:
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"application/problem+json" in answer
    assert b"/problems/headers-too-large" in answer


def test_many_small_headers_add_up_to_431(secured: Server) -> None:
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 40) for i in range(200))
    with _raw(secured, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n") as sock:
        assert _read_all(sock).startswith(b"HTTP/1.1 431 ")


def test_headers_just_under_the_limit_are_served(secured: Server) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Big: "
    request += b"a" * 3900 + b"\r\n\r\n"
    with _raw(secured, request) as sock:
        assert _read_all(sock).startswith(b"HTTP/1.1 200 ")


def test_a_connection_that_never_sends_its_head_is_closed(secured: Server) -> None:
    # --header-timeout 1: the server hangs up well within the socket's 10 s deadline.
    with _raw(secured, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n") as sock:
        assert _read_all(sock) == b""
    with _raw(secured, b"") as sock:
        assert _read_all(sock) == b""


def test_an_idle_keep_alive_connection_is_closed(secured: Server) -> None:
    with _raw(secured, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") as sock:
        answer = _read_all(sock)  # the response, then the close after --keep-alive-timeout
    assert answer.startswith(b"HTTP/1.1 200 ")


# -- CORS ---------------------------------------------------------------------------------


def _preflight(client: httpx.Client, origin: str) -> httpx.Response:
    return client.options(
        "/payloads",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_cors_preflight_from_an_allowed_origin(anonymous: httpx.Client) -> None:
    response = _preflight(anonymous, ORIGIN)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert "POST" in response.headers["access-control-allow-methods"]


def test_cors_refuses_other_origins(anonymous: httpx.Client) -> None:
    response = _preflight(anonymous, "https://evil.example")
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_cors_is_off_by_default(client: httpx.Client) -> None:
    response = _preflight(client, ORIGIN)
    assert "access-control-allow-origin" not in response.headers
    response = client.get("/payloads", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('tokens = "x"', "unknown keys tokens"),
        ('token = "x"', "expected one or more [[token]] tables"),
        ('[[token]]\nname = "a"\nsecret = "0123456789abcdefg"', "must all be strings"),
        ('[[token]]\nname = "a"\nsecret = "short"\nscope = "run"', "at least 16"),
        ('[[token]]\nname = "a"\nsecret = "0123456789abcdefg"\nscope = "admin"', "scope must"),
        ("[[token", "not valid TOML"),
        (TOKENS_TOML.replace('"viewer"', '"ci"'), "token names must be unique: ci"),
        (TOKENS_TOML.replace(READ_SECRET, RUN_SECRET), "two tokens share one secret"),
    ],
)
def test_bad_tokens_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(TokenConfigError, match=re.escape(message)):
        load_tokens(None, path)


def test_a_bad_tokens_file_stops_the_server(tmp_path: Path) -> None:
    result = run_serve("--tokens-file", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert result.stderr.startswith("handler-serve: cannot read the tokens file")


def test_token_matching() -> None:
    tokens = load_tokens(DEFAULT_SECRET, None)
    token = tokens.match(DEFAULT_SECRET)
    assert token is not None
    assert (token.name, token.scope) == ("default", Scope.RUN)
    assert tokens.match(DEFAULT_SECRET[:-1]) is None
    assert DEFAULT_SECRET not in repr(token)
    assert not load_tokens(None, None)
