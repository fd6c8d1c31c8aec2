"""Quick paths of the client and the CLI: records and specs without pydantic, TLS
certificates on demand, typer's options without pydantic.

Each quick path must give what the pydantic path gives, or hand the value to it: these
tests compare the two on real records and on values that must take the slow way.
"""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import TypeAdapter, ValidationError
from typer._coercion import build_runtime_param

from pericles.cli.main import app
from pericles.cli.options import _Plain
from pericles.client import (
    Client,
    ProblemError,
    ServerUnreachable,
    SpecNotValid,
    _core,
    _records,
    _tls,
)
from pericles.model import Payload, PayloadSpec
from tests.helpers import Server

_PYDANTIC = TypeAdapter(Payload)
_ID = "0123456789abcdef" * 2


def _slow(data: dict[str, Any]) -> Payload:
    return _PYDANTIC.validate_python({k: v for k, v in data.items() if k in _records.FIELDS})


def test_every_record_field_has_a_reader() -> None:
    assert set(_records.KINDS) == _records.FIELDS


def test_real_records_are_read_as_pydantic_reads_them(server: Server) -> None:
    with server.client() as http:
        bodies = [
            {"cmd": "/bin/true"},
            {"cmd": "/bin/sh", "params": ["-c", "echo hi; exit 3"], "env": {"A": "1"}},
            {
                "cmd": "/bin/sleep",
                "params": ["0"],
                "labels": {"k": "v"},
                "timeout": 5,
                "kill_grace": 1.5,
                "limits": {"max_open_files": 64},
                "callbacks": [{"url": "http://127.0.0.1:9/cb"}],
                "priority": 3,
                "keep_descendants": True,
                "secret_env": {"S": "x"},
            },
            {"cmd": "/nonexistent/command"},
        ]
        created = [http.post("/payloads", json=body).json() for body in bodies]
        for record in created:
            http.get(f"/payloads/{record['id']}", params={"wait": 10})
        records = created + [http.get(f"/payloads/{r['id']}").json() for r in created]
    for data in records:
        quick = _records.direct(data)
        assert quick is not None, data
        assert quick == _slow(data)
        assert [type(getattr(quick, f)) for f in _records.FIELDS] == [
            type(getattr(_slow(data), f)) for f in _records.FIELDS
        ]


@pytest.mark.parametrize(
    "changed",
    [
        {"id": "not-an-id"},
        {"id": _ID + "\n"},
        {"exit_code": "3"},
        {"exit_code": True},
        {"stdout_bytes": None},
        {"timeout": 2**60},
        {"created_at": "2026-12-02 01:02:03"},
        {"created_at": 1764637323},
        {"env": {"A": 1}},
        {"params": ["a", 2]},
        {"labels": []},
    ],
)
def test_other_values_go_to_pydantic(changed: dict[str, Any]) -> None:
    data = {"status": "pending", "cmd": "c", "params": [], "id": _ID, **changed}
    assert _records.direct(data) is None
    try:
        expected: Payload | type[ValidationError] = _slow(data)
    except ValidationError:
        expected = ValidationError
    if expected is ValidationError:
        with pytest.raises(ValidationError):
            _records.payload(data)
    else:
        assert _records.payload(data) == expected


def test_a_record_without_its_seed_fields_is_refused_as_before() -> None:
    with pytest.raises(ValidationError):
        _records.payload({"status": "pending", "cmd": "c", "id": _ID})


@pytest.mark.parametrize(
    ("cmd", "params"),
    [
        ("/bin/true", []),
        ("/bin/echo", ["a", "", "é", "\udcff"]),
        ("", []),
        ("a\x00b", []),
        ("/bin/echo", ["a\x00"]),
        ("/bin/echo", [1]),
        ("/bin/echo", ("a", "b")),
    ],
)
def test_plain_specs_are_checked_as_the_model_checks_them(cmd: str, params: Any) -> None:
    try:
        expected: Any = _records.spec_body(
            PayloadSpec.model_validate({"cmd": cmd, "params": list(params)})
        )
    except ValidationError:
        expected = SpecNotValid
    quick = _records.plain_body(cmd, params, {})
    assert quick is None or quick == expected
    if expected is SpecNotValid:
        with pytest.raises(SpecNotValid):
            _core.body_of(cmd, params, {})
    else:
        assert _core.body_of(cmd, params, {}) == expected


def test_specs_with_options_take_the_model() -> None:
    assert _records.plain_body("/bin/true", [], {"timeout": 1}) is None
    assert _core.body_of("/bin/true", [], {"timeout": 1}) == {
        "cmd": "/bin/true",
        "timeout": 1.0,
        "params": [],
    }
    with pytest.raises(SpecNotValid):
        _core.body_of("/bin/true", [], {"timeout": 0})


# -- TLS -----------------------------------------------------------------------------------


class _TLSServer(http.server.ThreadingHTTPServer):
    """Answers 501 to everything over TLS; a refused handshake closes its socket."""

    context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            with self.context.wrap_socket(request, server_side=True) as tls:
                super().finish_request(tls, client_address)
        except ssl.SSLError:
            pass  # the client refused our certificate


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An https server on a free port with a self-signed certificate for 127.0.0.1."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    httpd = _TLSServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    httpd.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    httpd.context.load_cert_chain(cert, key)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", cert
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_certificates_are_loaded_at_the_first_handshake_only() -> None:
    context = _tls.tls_context()
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert context.cert_store_stats()["x509_ca"] == 0
    context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="example.org")
    assert context.cert_store_stats()["x509_ca"] > 0


def test_https_is_still_verified(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_server
    with Client(url) as client, pytest.raises(ServerUnreachable, match="CERTIFICATE_VERIFY"):
        client.get(_ID)
    # Trusted through SSL_CERT_FILE, as httpx's own context trusts it: the handshake
    # succeeds and the stub server answers 501 for the GET.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with Client(url) as client, pytest.raises(ProblemError) as answered:
        client.get(_ID)
    assert answered.value.status == 501


# -- typer's options -----------------------------------------------------------------------


def _coerced(coercer: Any, value: Any, param: Any, ctx: Any) -> Any:
    try:
        result = coercer.coerce(value, param=param, ctx=ctx)
    except typer.BadParameter as exc:
        return ("refused", exc.format_message())
    return (type(result), result)


@pytest.mark.parametrize("command", ["run", "ls", "logs", "rm"])
def test_options_are_coerced_as_typer_coerces_them(command: str) -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    cmd = group.commands[command]
    ctx = typer.Context(cmd)
    values = [None, "", "x", "5", "\udcff", 20, 0, -1, 2.5, True, ("a", "b"), ["a"], ("a", 1)]
    for param in [*group.params, *cmd.params]:
        assert isinstance(param, typer.core.TyperArgument | typer.core.TyperOption)
        descriptor = param.type_descriptor
        for value in values:
            ours = _coerced(_Plain(descriptor), value, param, ctx)
            assert ours == _coerced(build_runtime_param(descriptor), value, param, ctx), (
                param.name,
                value,
            )
