"""Where the server listens, and over what: loopback by default, public only with a token or
--insecure, HTTPS with --tls-cert and --tls-key."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pericles.cli.serve import RefusedExposure, check_exposure, is_loopback
from pericles.settings import Settings
from pericles.tokens import TokenSet, load_tokens
from tests.helpers import run_serve, running_server, wait_for_status

TOKEN = "tls-secret-0123456789abcdef"


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_public_bind_without_a_token_is_refused(host: str) -> None:
    result = run_serve("--host", host)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"handler-serve: refusing to listen on {host} without a token")
    assert "Uvicorn running" not in result.stderr + result.stdout
    assert "Started server process" not in result.stderr + result.stdout


@pytest.mark.parametrize("host", ["192.0.2.1", "example.com", "", "::"])
def test_exposure_check_refuses_public_hosts(host: str) -> None:
    with pytest.raises(RefusedExposure, match="without a token"):
        check_exposure(Settings(host=host), TokenSet([]))
    assert "--insecure" in str(check_exposure(Settings(host=host, insecure=True), TokenSet([])))


def test_exposure_check_passes_loopback_quietly() -> None:
    assert check_exposure(Settings(host="127.0.0.1"), TokenSet([])) is None
    tokens = load_tokens(TOKEN, None)
    assert check_exposure(Settings(host="::1"), tokens) is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_insecure_allows_a_public_bind_and_says_so() -> None:
    with running_server("--host", "0.0.0.0", "--insecure") as server, server.client() as client:
        assert client.get("/payloads").status_code == 200
        assert "WARNING pericles.cli: --insecure: listening on 0.0.0.0 with no token" in (
            server.log()
        )


def test_a_public_bind_with_a_token_starts(tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        running_server("--host", "0.0.0.0", "--token", TOKEN, headers=headers) as server,
        server.client() as client,
    ):
        assert client.get("/payloads").status_code == 200
        assert "without TLS" in server.log()  # tokens in clear text deserve a warning


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pericles-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_round_trip(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    args = ("--tls-cert", str(cert), "--tls-key", str(key), "--token", TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with running_server(*args, verify=trust, headers=headers) as server:
        assert server.url.startswith("https://")
        with server.client() as client:
            record = client.post("/payloads", json={"cmd": "/bin/echo", "params": ["hi"]}).json()
            assert wait_for_status(client, record["id"])["status"] == "finished"
            assert client.get(f"/payloads/{record['id']}/output").text == "hi\n"
        # A client that does not trust the certificate gets nowhere.
        with server.client(verify=True) as untrusting, pytest.raises(Exception, match="CERT"):
            untrusting.get("/healthz")


def test_tls_needs_both_cert_and_key(tmp_path: Path) -> None:
    cert, _ = _self_signed(tmp_path)
    result = run_serve("--tls-cert", str(cert))
    assert result.returncode == 2
    assert "--tls-cert and --tls-key go together" in result.stderr
