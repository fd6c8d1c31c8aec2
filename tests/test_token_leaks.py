"""A token secret never reaches a log line or a problem body, whatever part of a request
carried it: the server knows its tokens (by hash) and finds them anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from pericles.tokens import load_tokens
from tests.helpers import Server, start_server, wait_for_status

STORES = ("memory",)
# Characters a URL must escape, so that it also travels percent-encoded.
SECRET = "tok-0123456789/abc def+xyz"
OTHER = "other-token-0123456789abcdef"


@pytest.fixture(scope="module", params=["plain", "json"])
def secured(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tokens = tmp_path_factory.mktemp("tokens") / "tokens.toml"
    tokens.write_text(
        f'[[token]]\nname = "ci"\nsecret = "{SECRET}"\nscope = "run"\n'
        f'[[token]]\nname = "ro"\nsecret = "{OTHER}"\nscope = "read"\n'
    )
    policy = tmp_path_factory.mktemp("policy") / "policy.toml"
    policy.write_text('[[rule]]\ncmd = "/bin/echo"\nparams = [{values = ["hi"]}]\n')
    server = start_server(
        "--tokens-file",
        str(tokens),
        "--log-format",
        request.param,
        "--log-level",
        "debug",
        "--policy",
        str(policy),
        "--allow",
        "/bin/true",
        headers={"Authorization": f"Bearer {SECRET}"},
    )
    try:
        yield server
    finally:
        server.stop()


def _answers(client: httpx.Client, secret: str) -> list[httpx.Response]:
    encoded = quote(secret, safe="")
    return [
        client.get(f"/payloads?q={encoded}"),
        client.get(f"/payloads?q={quote(secret)}"),
        client.get(f"/payloads?{encoded}"),
        client.get(f"/payloads/{encoded}"),
        client.get(f"/payloads/{encoded}/output"),
        client.get(f"/nothing/{encoded}/here"),
        client.get("/payloads", headers={"X-Api-Key": secret}),
        client.get("/payloads", headers={"Host": f"{OTHER}.example"}),
        client.post("/payloads", json={"cmd": "/bin/echo", "params": [secret]}),
        client.post("/payloads", json={"cmd": secret}),
        client.post("/payloads", json={"cmd": "/bin/true"}, headers={"Origin": secret}),
        client.post("/payloads", json={"cmd": "/bin/true", "labels": {"k": secret}}),
        client.delete(f"/payloads/{encoded}"),
    ]


@pytest.mark.parametrize("secret", [SECRET, OTHER])
def test_no_log_line_or_problem_holds_a_token(secured: Server, secret: str) -> None:
    with secured.client() as client:
        answers = _answers(client, secret)
        created = [r.json()["id"] for r in answers if r.status_code == 201]
        for payload_id in created:
            wait_for_status(client, payload_id)
    assert [r.status_code for r in answers if r.status_code >= 500] == []
    problems = [r for r in answers if r.headers.get("content-type") == "application/problem+json"]
    assert len(problems) >= 8
    for response in problems:
        assert secret not in response.text
        assert secret not in json.dumps(response.json())
    log = secured.log()
    assert "/payloads" in log
    for form in (secret, quote(secret, safe=""), quote(secret), secret.replace(" ", "+")):
        assert form not in log
    assert "[redacted]" in log


def test_redaction_finds_every_token_by_hash(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(f'[[token]]\nname = "ro"\nsecret = "{OTHER}"\nscope = "read"\n')
    tokens = load_tokens(SECRET, path)
    text = f"a{SECRET}b {OTHER}{OTHER} {SECRET[:-1]}"
    assert tokens.redact(text) == f"a[redacted]b [redacted][redacted] {SECRET[:-1]}"
    assert tokens.redact(quote(SECRET)) == "[redacted]"
    assert tokens.redact("nothing here") == "nothing here"
